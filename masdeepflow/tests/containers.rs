//! End to end: real containers started with runc (kubelet-style cgroup
//! paths) and pod metadata from a replay of recorded kube-apiserver
//! responses. No kube-apiserver can run here: `helpers/kube_replay.py`
//! serves a recorded PodList and holds a watch open; it is a replay, not a
//! cluster.
mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};
use support::{Agent, Peer, servers::free_port};

/// The recorded pod `shop/web-7d9c6b5f4-x2k8l` has container `nginx` with this id.
const CONTAINER_ID: &str = "5be1ecc7935f1dd85635d4feedaf660594030253cc97c9e9ca3819ffeac36b65";
const POD_UID: &str = "3f1c2a9e-8b1d-4c57-9a43-1e2f7d6c5b40";

fn podlist() -> String {
    format!("{}/../masdeepflow-k8s/tests/fixtures/podlist.json", env!("CARGO_MANIFEST_DIR"))
}

/// A runc bundle with a busybox-static root file system, in the kubelet's
/// cgroupfs layout, sharing the host's network namespace.
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn new() -> Bundle {
        let dir = std::env::temp_dir().join(format!("masdeepflow-runc-{}-{}", std::process::id(), free_port()));
        let bin = dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox (apt-get install busybox-static)");
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        for applet in ["sh", "true", "nc", "printf", "sleep"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let out = Command::new("runc").arg("spec").current_dir(&dir).output().expect("runc (apt-get install runc)");
        assert!(out.status.success());
        Bundle { dir }
    }

    /// Runs `script` in a new container to completion.
    fn run(&self, name: &str, script: &str) {
        let path = self.dir.join("config.json");
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["/bin/sh", "-c", script]);
        config["root"]["readonly"] = json!(true);
        config["linux"]["cgroupsPath"] = json!(format!("/kubepods/burstable/pod{POD_UID}/{CONTAINER_ID}"));
        let namespaces: Vec<Value> =
            config["linux"]["namespaces"].as_array().unwrap().iter().filter(|n| n["type"] != "network").cloned().collect();
        config["linux"]["namespaces"] = json!(namespaces);
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        let id = format!("{name}-{}", std::process::id());
        let status = Command::new("runc").args(["run", &id]).current_dir(&self.dir).status().unwrap();
        assert!(status.success(), "container {id} failed: {status}");
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kubeconfig(port: u16) -> PathBuf {
    let path = std::env::temp_dir().join(format!("masdeepflow-kubeconfig-{}-{port}", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: replay\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: agent\n  user: {{}}\ncontexts:\n- name: replay\n  context:\n    cluster: replay\n    user: agent\ncurrent-context: replay\n"
        ),
    )
    .unwrap();
    path
}

fn in_container(e: &Value) -> bool {
    e["container"] == json!({"id": CONTAINER_ID, "runtime": "unknown"})
}

#[test]
fn container_and_pod_context_with_api_server_down_then_up() {
    let bundle = Bundle::new();
    let api_port = free_port();
    let config = kubeconfig(api_port);
    let kube_env = [("KUBECONFIG", config.to_str().unwrap())];
    let mut agent = Agent::start_with_env(&["--events", "exec,exit,tcp", "--node-name", "node-a"], &kube_env);
    // A second agent keeps only the pods of namespace `shop`.
    let mut shop_only = Agent::start_with_env(&["--events", "exec", "--node-name", "node-a", "--namespace", "shop"], &kube_env);

    // API server down: events flow, with the container id only.
    let server = Peer::python(&["server", "ipv4", "3", "5"]);
    let tcp_port = server.line();
    bundle.run("before", &format!("/bin/true marker-before; printf abc | /bin/nc 127.0.0.1 {tcp_port}; /bin/sh -c 'exit 4'; true"));
    server.wait();
    let exec = agent.expect("exec in the container", |e| e["type"] == "process_exec" && e["args"] == json!(["/bin/true", "marker-before"]));
    assert!(in_container(&exec), "{exec}");
    assert_eq!(exec.get("k8s"), None, "no pod metadata while the API server is down");
    let exit = agent.expect("exit 4 in the container", |e| e["type"] == "process_exit" && e["exit_code"] == 4 && in_container(e));
    assert_eq!(exit["process"]["comm"], "sh");
    let port: u64 = tcp_port.trim().parse().expect("the server prints its port");
    let connect = agent.expect("connect from the container", |e| e["type"] == "tcp_connect" && e["dst"]["port"] == port);
    assert!(in_container(&connect), "{connect}");
    let close = agent.expect("close in the container", |e| e["type"] == "tcp_close" && e["role"] == "client" && e["dst"]["port"] == port);
    assert!(in_container(&close), "{close}");
    assert_eq!((close["bytes_sent"].as_u64(), close["bytes_received"].as_u64()), (Some(3), Some(5)));

    // API server up (a replay): the agent lists this node's pods, then watches.
    let api = Peer::script("kube_replay.py", &[&api_port.to_string(), &podlist()]);
    // Two agents: each lists once, then watches from the list's version.
    let requests: Vec<String> = (0..4).map(|_| api.line()).collect();
    let (watches, lists): (Vec<&String>, Vec<&String>) = requests.iter().partition(|r| r.contains("watch=true") || r.contains("watch=1"));
    assert_eq!((lists.len(), watches.len()), (2, 2), "{requests:?}");
    for r in &requests {
        assert!(r.starts_with("/api/v1/pods?"), "{r}");
        assert!(r.contains("fieldSelector=spec.nodeName%3Dnode-a"), "{r}");
    }
    for w in &watches {
        assert!(w.contains("resourceVersion=184467"), "{w}");
    }

    bundle.run("after", "/bin/true marker-after");
    let exec = agent
        .expect("exec after the API server came up", |e| e["type"] == "process_exec" && e["args"] == json!(["/bin/true", "marker-after"]));
    assert!(in_container(&exec), "{exec}");
    assert_eq!(
        exec["k8s"],
        json!({
            "namespace": "shop",
            "pod": "web-7d9c6b5f4-x2k8l",
            "pod_uid": POD_UID,
            "container": "nginx",
            "node": "node-a",
            "labels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "shop", "pod-template-hash": "7d9c6b5f4"}
        })
    );
    shop_only.expect("marker-after in namespace shop", |e| e["args"] == json!(["/bin/true", "marker-after"]));
    let filtered = shop_only.stop();
    let execs: Vec<&Value> = filtered.iter().filter(|e| e["type"] == "process_exec").collect();
    assert!(!execs.is_empty());
    assert!(execs.iter().all(|e| e["k8s"]["namespace"] == "shop"), "--namespace shop let through: {execs:?}");
    assert!(!execs.iter().any(|e| e["args"] == json!(["/bin/true", "marker-before"])), "marker-before had no pod yet");

    let events = agent.stop();
    // Host processes carry no container: runc itself, started by this test.
    let runc = events
        .iter()
        .find(|e| e["type"] == "process_exec" && e["process"]["ppid"] == std::process::id() && e["args"][0] == "runc")
        .expect("the exec of runc by this test");
    assert_eq!(runc.get("container"), None, "{runc}");
    assert_eq!(runc.get("k8s"), None, "{runc}");
    drop(api);
    let _ = std::fs::remove_file(config);
}
