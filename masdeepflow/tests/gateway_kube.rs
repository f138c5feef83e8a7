//! Kubernetes Services and their EndpointSlices (ready endpoints only) as
//! gateway services, updated as they change. No kube-apiserver can run
//! here: `helpers/kube_services_replay.py` replays recorded list responses
//! (`masdeepflow-k8s/tests/fixtures`) and pushes recorded watch events; it
//! is a replay, not a cluster. The cluster IP is in 127.0.0.0/8.
mod gateway_support;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, channel},
};

use gateway_support::{Echo, Gateway, TestCgroup, WAIT, count_by, free_port, helper};
use serde_json::json;

fn fixture(name: &str) -> String {
    format!("{}/../masdeepflow-k8s/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct Replay {
    child: Child,
    port: u16,
    lines: Receiver<String>,
}

impl Replay {
    fn start() -> Replay {
        let port = free_port();
        let mut child = Command::new("/usr/bin/python3")
            .args([&helper("kube_services_replay.py"), &port.to_string(), &fixture("servicelist.json"), &fixture("endpointslicelist.json")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Replay { child, port, lines }
    }

    /// Waits until both resources are being watched.
    fn wait_watches(&self) {
        let mut seen = Vec::new();
        while !(seen.contains(&"watch services".to_string()) && seen.contains(&"watch endpointslices".to_string())) {
            seen.push(self.lines.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no watches: {seen:?}")));
        }
    }

    /// Sends a recorded watch event on `resource`'s open watches.
    fn push(&self, resource: &str, event_fixture: &str) {
        let body = std::fs::read(fixture(event_fixture)).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "POST /control/{resource} HTTP/1.1\r\nHost: replay\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            .unwrap();
        s.write_all(&body).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.ends_with("\r\n\r\n1"), "the event reached one watch: {reply}");
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn cluster_services_follow_the_api_server() {
    let cg = TestCgroup::new("kube");
    let _pod1 = Echo::start("pod-1", 18171);
    let _pod2 = Echo::start("pod-2", 18172);
    let replay = Replay::start();
    let kubeconfig = std::env::temp_dir().join(format!("mdf-gw-kubeconfig-{}", std::process::id()));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: replay\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: gw\n  user: {{}}\ncontexts:\n- name: replay\n  context:\n    cluster: replay\n    user: gw\ncurrent-context: replay\n",
            replay.port
        ),
    )
    .unwrap();
    let mut gw = Gateway::start_args(
        &["--node-name", "node-a", "--kubernetes-scope", cg.path.to_str().unwrap()],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    assert_eq!(gw.events[0]["services"], json!([]));
    let added = gw.expect("kubernetes services", |e| e["type"] == "service_update" && e["reason"] == "kubernetes");
    assert_eq!(
        added["added"],
        json!([{"name": "shop/web:http", "vip": "127.0.0.170:80", "protocol": "tcp", "algorithm": "round_robin",
                "backends": ["127.0.0.1:18171"], "scope": cg.path.to_str().unwrap(), "source": "kubernetes"}]),
        "the headless service and the endpoint that is not ready are left out"
    );
    let lines = cg.client(&["tcp", "127.0.0.170", "80", "10"]);
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("pod-1".into(), 10)]));
    assert!(lines.iter().all(|l| l["peer"] == json!(["127.0.0.170", 80])));

    // The EndpointSlice changes: the backend follows.
    replay.wait_watches();
    let from = gw.events.len();
    replay.push("endpointslices", "watch_modified_slice.json");
    let u = gw.expect_after(from, "endpoints update", |e| e["type"] == "service_update");
    assert_eq!(
        u["updated"],
        json!([{"name": "shop/web:http", "vip": "127.0.0.170:80", "protocol": "tcp",
                "backends_added": ["127.0.0.1:18172"], "backends_removed": ["127.0.0.1:18171"]}])
    );
    let lines = cg.client(&["tcp", "127.0.0.170", "80", "10"]);
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("pod-2".into(), 10)]));

    // The Service is deleted: no longer translated.
    let from = gw.events.len();
    replay.push("services", "watch_deleted_service.json");
    let u = gw.expect_after(from, "service removal", |e| e["type"] == "service_update");
    assert_eq!(u["removed"][0]["name"], "shop/web:http");
    assert_eq!(cg.client(&["tcp", "127.0.0.170", "80", "1"])[0]["error"], libc::ECONNREFUSED);
    gw.stop();
    let _ = std::fs::remove_file(kubeconfig);
}
