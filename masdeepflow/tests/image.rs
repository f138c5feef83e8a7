//! The container image (`cargo xtask image`, which `cargo xtask test` runs
//! first), run the way the DaemonSet runs it: the image the DaemonSet names
//! is unpacked from its OCI layout and started with runc with the
//! DaemonSet's command, arguments and environment, its capabilities only
//! (all others dropped), the host's PID namespace, its read-only host
//! mounts, a read-only root and no privilege escalation, in a network
//! namespace of its own (the pod's; `hostNetwork` is false). Events of a
//! host process and of another runc container must flow, the container's
//! with its id and pod.
//!
//! Stand-ins, since no cluster runs here: the API server is
//! `helpers/kube_replay.py` replaying a recorded PodList (not a
//! kube-apiserver), listening on 127.0.0.1 inside the agent's network
//! namespace, and a kubeconfig mounted at /kubeconfig (`KUBECONFIG`) takes
//! the place of the service account token the kubelet would mount.
mod support;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, channel},
};

use serde_json::{Value, json};
use support::{
    Agent, WAIT,
    manifests::{manifests, one, repo_root},
    servers::free_port,
};

/// The recorded pod `shop/web-7d9c6b5f4-x2k8l` (podlist.json) has container `nginx` with this id.
const CONTAINER_ID: &str = "5be1ecc7935f1dd85635d4feedaf660594030253cc97c9e9ca3819ffeac36b65";
const POD_UID: &str = "3f1c2a9e-8b1d-4c57-9a43-1e2f7d6c5b40";
const NODE: &str = "node-a";
/// The cluster CA of the test's kubeconfig: a self-signed P-256
/// certificate made for this test (`openssl req -x509`, 100 years). The
/// replay serves plain HTTP, so it is never used to verify anything; it is
/// there because a cluster's kubeconfig (and the in-cluster service
/// account) always carries one, and the image has no system CA store to
/// fall back on.
const TEST_CA_PEM_BASE64: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJuekNDQVVXZ0F3SUJBZ0lVWUtvVjlwZTcxWml1Zm5mQkxxSXRhbDNUdXhrd0NnWUlLb1pJemowRUF3SXcKSkRFaU1DQUdBMVVFQXd3WmJXRnpaR1ZsY0dac2IzY3RhVzFoWjJVdGRHVnpkQzFqWVRBZ0Z3MHlOakV5TURJdwpNVEE0TlRGYUdBOHlNVEkyTVRFd09EQXhNRGcxTVZvd0pERWlNQ0FHQTFVRUF3d1piV0Z6WkdWbGNHWnNiM2N0CmFXMWhaMlV0ZEdWemRDMWpZVEJaTUJNR0J5cUdTTTQ5QWdFR0NDcUdTTTQ5QXdFSEEwSUFCSEVvQ1ZBZkRYSEYKS1JyaXluMGZ4aEUyc3B4MC9MelBGNlkvb0RFWlhkeFI2eTFHUGNaSnN4QktxaHVjU3UyYmE1S3d2Y05PdjNjSApDV1RtbkFmKzMycWpVekJSTUIwR0ExVWREZ1FXQkJUMnVMS1l6OU5nMXZoZXl5QmpDQXhNaXY1S1hqQWZCZ05WCkhTTUVHREFXZ0JUMnVMS1l6OU5nMXZoZXl5QmpDQXhNaXY1S1hqQVBCZ05WSFJNQkFmOEVCVEFEQVFIL01Bb0cKQ0NxR1NNNDlCQU1DQTBnQU1FVUNJUUNZS2tOeVR6UXVaM0VacHpLTGtySkdBRURqeU9Xc3BDUFZMZlZVcVg2eApHQUlnVzd1aC9SeGw0dW1ybDJiRnl1TjNhWUtPUVhFWXRBU2JpUFFRNXhBcWdtMD0KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("masdeepflow-image-{what}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `image` copied out of containers-storage as an OCI layout and its layers
/// unpacked in order into `rootfs`; returns the image's config.
fn unpack(image: &str, work: &Path, rootfs: &Path) -> Value {
    let layout = work.join("oci");
    run(Command::new("buildah").args(["push", "--quiet", image]).arg(format!("oci:{}", layout.display())));
    let read =
        |p: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap() };
    let blob = |digest: &Value| layout.join("blobs/sha256").join(digest.as_str().unwrap().trim_start_matches("sha256:"));
    let index = read(layout.join("index.json"));
    let manifest = read(blob(&index["manifests"][0]["digest"]));
    std::fs::create_dir_all(rootfs).unwrap();
    for layer in manifest["layers"].as_array().expect("layers") {
        run(Command::new("tar").arg("-xf").arg(blob(&layer["digest"])).arg("-C").arg(rootfs));
    }
    read(blob(&manifest["config"]["digest"]))
}

/// Every file (not folder) under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A network namespace of the test's (the pod's), deleted when dropped.
struct NetNs(String);

impl NetNs {
    fn new() -> NetNs {
        let name = format!("mdf-image-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs(name);
        run(Command::new("ip").args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]));
        ns
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The replayed API server inside the pod's network namespace; prints each
/// request line.
struct Api {
    child: Child,
    lines: Receiver<String>,
}

impl Api {
    fn start(ns: &NetNs, port: u16) -> Api {
        let script = repo_root().join("masdeepflow/tests/helpers/kube_replay.py");
        let podlist = repo_root().join("masdeepflow-k8s/tests/fixtures/podlist.json");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.0, "/usr/bin/python3"])
            .arg(script)
            .arg(port.to_string())
            .arg(podlist)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Api { child, lines }
    }

    fn request(&self) -> Option<String> {
        self.lines.recv_timeout(WAIT).ok()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this process's bounding set holds capability `name` (of those
/// the DaemonSet adds).
fn in_bounding_set(name: &str) -> bool {
    let bit = match name {
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("the test does not know {other}"),
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).expect("CapBnd in /proc/self/status").trim();
    u64::from_str_radix(hex, 16).unwrap() & (1 << bit) != 0
}

/// `runc spec`'s defaults in `bundle`, as JSON.
fn default_spec(bundle: &Path) -> Value {
    run(Command::new("runc").arg("spec").current_dir(bundle));
    serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap()
}

/// The agent's runc bundle, configured from the DaemonSet's pod spec.
fn agent_config(bundle: &Path, pod: &Value, netns: &str, kubeconfig: &Path) -> Value {
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let mut config = default_spec(bundle);

    // Command, arguments and environment, $(VAR) expanded as the kubelet does.
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_array().unwrap() {
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("spec.nodeName") => NODE.to_string(),
            Some(other) => panic!("the test does not know the downward API field {other}"),
            None => e["value"].as_str().unwrap().to_string(),
        };
        env.push((e["name"].as_str().unwrap().to_string(), value));
    }
    let expand = |s: &str| env.iter().fold(s.to_string(), |s, (k, v)| s.replace(&format!("$({k})"), v));
    let argv: Vec<String> =
        c["command"].as_array().unwrap().iter().chain(c["args"].as_array().unwrap()).map(|a| expand(a.as_str().unwrap())).collect();
    let mut process_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    process_env.push("KUBECONFIG=/kubeconfig".into());
    config["process"]["args"] = json!(argv);
    config["process"]["env"] = json!(process_env);
    config["process"]["terminal"] = json!(false);
    config["process"]["user"] = json!({"uid": sc["runAsUser"].as_u64().expect("runAsUser"), "gid": 0});
    config["process"]["noNewPrivileges"] = json!(sc["allowPrivilegeEscalation"] == false);

    // Capabilities: drop ALL, add the DaemonSet's (those this machine's
    // root has: a capability outside our bounding set cannot be granted).
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let wanted: Vec<String> =
        sc["capabilities"]["add"].as_array().unwrap().iter().map(|c| format!("CAP_{}", c.as_str().unwrap())).collect();
    let (caps, missing): (Vec<String>, Vec<String>) = wanted.into_iter().partition(|c| in_bounding_set(c));
    if !missing.is_empty() {
        eprintln!("image test: this machine's root lacks {missing:?}; the agent container runs without it");
    }
    assert!(missing.iter().all(|c| c == "CAP_SYS_RESOURCE"), "only CAP_SYS_RESOURCE may be missing here (PLATFORM.md): {missing:?}");
    config["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []});
    config["root"]["readonly"] = json!(sc["readOnlyRootFilesystem"] == true);

    // hostPID: no PID namespace; the pod's network namespace.
    assert_eq!(pod["hostPID"], true);
    assert_ne!(pod["hostNetwork"], true);
    let namespaces: Vec<Value> = config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "pid")
        .map(|n| if n["type"] == "network" { json!({"type": "network", "path": netns}) } else { n.clone() })
        .collect();
    config["linux"]["namespaces"] = json!(namespaces);

    // The DaemonSet's host mounts, read-only as it says, then the kubeconfig.
    let mounts = config["mounts"].as_array_mut().unwrap();
    for m in c["volumeMounts"].as_array().unwrap() {
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == m["name"]).expect("the mount's volume");
        let host = volume["hostPath"]["path"].as_str().expect("a hostPath volume");
        let mut options = vec!["rbind", "nosuid", "nodev"];
        if m["readOnly"] == true {
            options.push("ro");
        }
        mounts.push(json!({"destination": m["mountPath"], "type": "bind", "source": host, "options": options}));
    }
    mounts.push(json!({"destination": "/kubeconfig", "type": "bind", "source": kubeconfig, "options": ["bind", "ro"]}));
    config
}

/// Another container, from a busybox-static root in the kubelet's cgroupfs
/// layout for the recorded pod's `nginx` container; runs `script` to its end.
fn run_workload_container(script: &str) {
    let bundle = Scratch::new("workload");
    let bin = bundle.0.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox =
        ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists()).expect("busybox (apt-get install busybox-static)");
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let mut config = default_spec(&bundle.0);
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["/bin/sh", "-c", script]);
    config["root"]["readonly"] = json!(true);
    config["linux"]["cgroupsPath"] = json!(format!("/kubepods/burstable/pod{POD_UID}/{CONTAINER_ID}"));
    std::fs::write(bundle.0.join("config.json"), serde_json::to_string(&config).unwrap()).unwrap();
    let id = format!("mdf-image-workload-{}", std::process::id());
    let status = Command::new("runc").args(["run", &id]).current_dir(&bundle.0).status().expect("runc (apt-get install runc)");
    assert!(status.success(), "workload container failed: {status}");
}

#[test]
fn the_image_run_as_the_daemonset_reports_host_and_container_events() {
    support::require_root();
    let docs = manifests();
    let pod = one(&docs, "DaemonSet")["spec"]["template"]["spec"].clone();
    let image = pod["containers"][0]["image"].as_str().expect("the DaemonSet's image").to_string();
    assert_eq!(image, format!("localhost/masdeepflow:{}", env!("CARGO_PKG_VERSION")), "the DaemonSet runs what `cargo xtask image` builds");

    // The image: the static binary and nothing else.
    let bundle = Scratch::new("agent");
    let rootfs = bundle.0.join("rootfs");
    let image_config = unpack(&image, &bundle.0, &rootfs);
    assert_eq!(files(&rootfs), ["usr/local/bin/masdeepflow"], "the image holds only the agent");
    assert_eq!(image_config["config"]["Entrypoint"], pod["containers"][0]["command"], "the image's entrypoint is the DaemonSet's command");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no image for {other}"),
    };
    assert_eq!(image_config["architecture"], arch);

    let netns = NetNs::new();
    let api_port = free_port();
    let api = Api::start(&netns, api_port);
    let kubeconfig = bundle.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: replay\n  cluster:\n    server: http://127.0.0.1:{api_port}\n    certificate-authority-data: {TEST_CA_PEM_BASE64}\n\
             users:\n- name: agent\n  user: {{}}\ncontexts:\n- name: replay\n  context:\n    cluster: replay\n    user: agent\ncurrent-context: replay\n"
        ),
    )
    .unwrap();
    let config = agent_config(&bundle.0, &pod, &netns.path(), &kubeconfig);
    std::fs::write(bundle.0.join("config.json"), serde_json::to_string(&config).unwrap()).unwrap();

    // runc run forwards SIGINT to the agent and exits with its status.
    let mut runc = Command::new("runc");
    runc.args(["run", &format!("mdf-image-agent-{}", std::process::id())]).current_dir(&bundle.0);
    let mut agent = Agent::start_command(runc);
    let Some(list) = api.request() else {
        let (_, status, stderr) = agent.stop_with(libc::SIGINT);
        panic!("the agent made no request to the API server in time; it exited {status}: {stderr}");
    };
    assert!(list.starts_with("/api/v1/pods?") && list.contains(&format!("fieldSelector=spec.nodeName%3D{NODE}")), "{list}");
    let watch = api.request().expect("a watch after the list");
    assert!(watch.contains("watch=true") && watch.contains("resourceVersion=184467"), "{watch}");

    // A host process: no container.
    let me = std::process::id();
    assert!(Command::new("/bin/echo").arg("image-host-marker").output().unwrap().status.success());
    let host = agent.expect("exec of the host's /bin/echo", |e| {
        e["type"] == "process_exec" && e["process"]["ppid"] == me && e["args"] == json!(["/bin/echo", "image-host-marker"])
    });
    assert_eq!(host.get("container"), None, "{host}");
    assert_eq!(host.get("k8s"), None, "{host}");

    // Another container: its id and pod.
    run_workload_container("/bin/true image-container-marker; /bin/sh -c 'exit 3'; true");
    let exec = agent.expect("exec in the other container", |e| {
        e["type"] == "process_exec" && e["args"] == json!(["/bin/true", "image-container-marker"])
    });
    assert_eq!(exec["container"], json!({"id": CONTAINER_ID, "runtime": "unknown"}), "{exec}");
    assert_eq!(exec["k8s"]["pod"], "web-7d9c6b5f4-x2k8l", "{exec}");
    assert_eq!(exec["k8s"]["namespace"], "shop", "{exec}");
    assert_eq!(exec["k8s"]["node"], NODE, "{exec}");
    let exit = agent.expect("exit 3 in the other container", |e| {
        e["type"] == "process_exit" && e["exit_code"] == 3 && e["container"]["id"] == CONTAINER_ID
    });
    assert_eq!(exit["k8s"]["container"], "nginx", "{exit}");

    let events = agent.stop();
    let stats = events.iter().rev().find(|e| e["type"] == "agent_stats").expect("final agent_stats");
    for (kind, n) in stats["lost"]["kernel_ring_buffer"].as_object().unwrap() {
        assert_eq!(n, 0, "lost {kind}");
    }
}
