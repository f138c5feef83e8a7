//! End-to-end tests of the pod watcher over real HTTP.
//!
//! **These are replays of recorded real kube-apiserver responses, not a real
//! cluster.** There is no kube-apiserver on the build machine, so each test
//! starts a small HTTP/1.1 server on 127.0.0.1 (`tests/common/mod.rs`) that
//! answers the watcher's requests with the JSON files in `tests/fixtures/`:
//! a `PodList` (as returned by `GET /api/v1/pods?fieldSelector=...`) and
//! newline-delimited watch events (`ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK`, `ERROR` 410) streamed in a chunked body, the way the
//! apiserver streams `?watch=true`. The fixtures keep the shape of real
//! apiserver output (managedFields, ownerReferences, conditions, init and
//! ephemeral container statuses, `lastState.terminated`); names, uids and ids
//! were rewritten, and the `cri-o://` coredns pod sits on the same node as
//! `containerd://` pods so that one list covers both prefixes.
//!
//! The kube client is real (`kube::Client` from a `kube::Config` pointing at
//! `http://127.0.0.1:<port>`), nothing inside kube is mocked, and the
//! configuration never reads KUBECONFIG or a service account. Tests run on a
//! current-thread runtime, like the agent's.

mod common;

use std::time::{Duration, Instant};

use common::{FakeApiServer, NODE, Reply, fixture, status_json, wait_until, watch_stream};
use masdeepflow_k8s::{PodIndex, spawn_watcher};

const NGINX: &str = "5be1ecc7935f1dd85635d4feedaf660594030253cc97c9e9ca3819ffeac36b65";
const NGINX_PREVIOUS: &str = "2dbd2d74e9d2ea528e031810bbcfdca501eb9f1e735c4eddfc06ff583606975a";
const SIDECAR: &str = "6c8b4535ccc87f19061c4646189e33d78f01c8b63dc4e3cb2f630b1796ee93b6";
const INIT: &str = "bb54068aea85faa7e487530083366be9962390af822e4c71ef1aca7033c83e66";
const EPHEMERAL: &str = "9ed2bc355f7520eb18a7dc84d23f01eca1a0c0a2613e28cb4cb788570063a7fa";
const EPHEMERAL_2: &str = "e801b3029289a1d1c1ce7f4df4a880883515816a4d9f9f51bdcb2e799444bd55";
const COREDNS: &str = "8a32e516d7415be524a7fcec482ad2918f2b6ef2a7f4cb8e2e232b361436b20b";
const JOB: &str = "72c369fd11734117eff3db61eabffdcadd46d679ca2ed2964cae6b2eeabd7d55";
const WORKER: &str = "87eba76e7f3164534045ba922e7770fb58bbd14ad732bbf5ba6f11cc56989e6e";

const WEB_UID: &str = "3f1c2a9e-8b1d-4c57-9a43-1e2f7d6c5b40";
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

async fn synced(index: &PodIndex) {
    tokio::time::timeout(SYNC_TIMEOUT, index.synced()).await.expect("index synced in time");
}

fn assert_list_request(r: &common::Recorded) {
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/api/v1/pods");
    assert!(r.raw_query.contains(&format!("fieldSelector=spec.nodeName%3D{NODE}")), "raw query: {}", r.raw_query);
    assert_eq!(r.param("fieldSelector"), Some(format!("spec.nodeName={NODE}").as_str()));
    assert!(!r.is_watch(), "list must not be a watch: {}", r.target);
}

fn assert_watch_request(r: &common::Recorded, rv: &str) {
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/api/v1/pods");
    assert!(r.is_watch(), "expected a watch: {}", r.target);
    assert_eq!(r.param("resourceVersion"), Some(rv), "watch target: {}", r.target);
    assert_eq!(r.param("fieldSelector"), Some(format!("spec.nodeName={NODE}").as_str()));
    assert!(r.param("timeoutSeconds").is_some(), "watch target: {}", r.target);
}

#[tokio::test]
async fn list_then_watch_requests_and_enrichment() {
    let server = FakeApiServer::start();
    server.push_list(Reply::ok(fixture("podlist.json")));
    let (_feed, stream) = watch_stream();
    server.push_watch(stream);

    let index = PodIndex::new();
    let handle = spawn_watcher(server.watch_config(Duration::from_secs(60)), index.clone());
    synced(&index).await;

    // 1. What the client asked for.
    let reqs = server.wait_requests(2).await;
    assert_list_request(&reqs[0]);
    assert_watch_request(&reqs[1], "184467");
    assert_eq!(reqs[1].param("allowWatchBookmarks"), Some("true"));
    // The list is served from the apiserver's watch cache (resourceVersion=0),
    // not a quorum read from etcd: one agent per node must stay cheap.
    assert_eq!(reqs[0].param("resourceVersion"), Some("0"));
    assert_eq!(reqs[0].param("resourceVersionMatch"), Some("NotOlderThan"));

    // 2. Enrichment of every kind of container.
    let nginx = index.lookup(NGINX).expect("nginx container");
    assert_eq!(nginx.namespace, "shop");
    assert_eq!(nginx.pod, "web-7d9c6b5f4-x2k8l");
    assert_eq!(nginx.pod_uid, WEB_UID);
    assert_eq!(nginx.container, "nginx");
    assert_eq!(nginx.node, NODE);
    assert_eq!(nginx.labels.get("app.kubernetes.io/name").map(String::as_str), Some("web"));
    assert_eq!(nginx.labels.get("pod-template-hash").map(String::as_str), Some("7d9c6b5f4"));
    assert_eq!(nginx.labels.len(), 3);

    let sidecar = index.lookup(SIDECAR).expect("second container");
    assert_eq!((sidecar.pod.as_str(), sidecar.container.as_str()), ("web-7d9c6b5f4-x2k8l", "metrics-sidecar"));

    let init = index.lookup(INIT).expect("init container");
    assert_eq!((init.pod_uid.as_str(), init.container.as_str()), (WEB_UID, "init-config"));

    let eph = index.lookup(EPHEMERAL).expect("ephemeral container");
    assert_eq!((eph.pod_uid.as_str(), eph.container.as_str()), (WEB_UID, "debugger-k7q2p"));

    // Previous instance of a restarted container (lastState.terminated).
    assert_eq!(index.lookup(NGINX_PREVIOUS).expect("previous nginx").container, "nginx");

    let dns = index.lookup(COREDNS).expect("cri-o container");
    assert_eq!(dns.namespace, "kube-system");
    assert_eq!(dns.pod, "coredns-668d6bf9bc-tq5vn");
    assert_eq!(dns.pod_uid, "c2a5e8f1-47d3-4b9a-b6e2-9f0d1a3c7e58");
    assert_eq!(dns.container, "coredns");
    assert_eq!(dns.labels.get("k8s-app").map(String::as_str), Some("kube-dns"));

    // Prefixed ids resolve too; unknown ids do not.
    assert_eq!(index.lookup(&format!("containerd://{NGINX}")), Some(nginx));
    assert_eq!(index.lookup(&format!("cri-o://{COREDNS}")), Some(dns));
    assert_eq!(index.lookup(JOB), None);
    assert_eq!(index.lookup("0000000000000000000000000000000000000000000000000000000000000000"), None);
    assert_eq!(index.lookup(""), None);

    let stats = index.stats();
    assert_eq!(stats.pods, 2);
    assert_eq!(stats.containers, 6);
    assert!(stats.synced && stats.last_sync_ok);
    assert_eq!(index.len(), 2);
    handle.abort();
}

#[tokio::test]
async fn modified_added_deleted_with_grace_and_bookmark() {
    let grace = Duration::from_millis(300);
    let server = FakeApiServer::start();
    server.push_list(Reply::ok(fixture("podlist.json")));
    let (feed, stream) = watch_stream();
    server.push_watch(stream);
    let (_feed2, stream2) = watch_stream();
    server.push_watch(stream2);

    let index = PodIndex::new();
    let handle = spawn_watcher(server.watch_config(grace), index.clone());
    synced(&index).await;
    server.wait_requests(2).await;
    assert_eq!(index.lookup(EPHEMERAL_2), None);

    // MODIFIED: a second ephemeral container appears in the status.
    feed.send_fixture("watch_modified_web.json");
    wait_until(&index, 10, "MODIFIED applied", |i| i.lookup(EPHEMERAL_2).is_some()).await;
    let eph2 = index.lookup(EPHEMERAL_2).unwrap();
    assert_eq!((eph2.pod_uid.as_str(), eph2.container.as_str()), (WEB_UID, "debugger-m3x9z"));
    assert!(index.lookup(EPHEMERAL).is_some(), "earlier ephemeral container still indexed");

    // ADDED: a new pod.
    feed.send_fixture("watch_added_job.json");
    wait_until(&index, 10, "ADDED applied", |i| i.lookup(JOB).is_some()).await;
    let job = index.lookup(JOB).unwrap();
    assert_eq!((job.namespace.as_str(), job.pod.as_str(), job.container.as_str()), ("batch", "report-29121840-8kz5w", "report"));
    assert_eq!(job.labels.get("job-name").map(String::as_str), Some("report-29121840"));

    // DELETED: still resolvable within the grace period, gone after it.
    let before_delete = Instant::now();
    feed.send_fixture("watch_deleted_coredns.json");
    wait_until(&index, 10, "DELETED applied", |i| i.stats().deleted_pending == 1).await;
    assert_eq!(index.lookup(COREDNS).expect("resolvable during grace").pod, "coredns-668d6bf9bc-tq5vn");
    wait_until(&index, 10, "grace period over", |i| i.lookup(COREDNS).is_none()).await;
    assert!(before_delete.elapsed() >= grace, "removed before the grace period: {:?}", before_delete.elapsed());
    // The watcher's periodic purge then frees it.
    wait_until(&index, 10, "purged", |i| i.len() == 2).await;
    assert_eq!(index.stats().deleted_pending, 0);
    assert!(index.lookup(NGINX).is_some() && index.lookup(JOB).is_some());

    // BOOKMARK moves the resourceVersion; when the server ends the watch
    // (timeoutSeconds elapsed), the watcher rewatches from it without relisting.
    feed.send_fixture("watch_bookmark.json");
    drop(feed);
    let reqs = server.wait_requests(3).await;
    assert_watch_request(&reqs[2], "184500");
    assert_eq!(index.stats().lists, 1, "a normal watch end must not relist");
    handle.abort();
}

#[tokio::test]
async fn gone_event_in_watch_stream_relists() {
    let server = FakeApiServer::start();
    server.push_list(Reply::ok(fixture("podlist.json")));
    server.push_list(Reply::ok(fixture("podlist_relist.json")));
    let (feed, stream) = watch_stream();
    server.push_watch(stream);
    let (_feed2, stream2) = watch_stream();
    server.push_watch(stream2);

    let index = PodIndex::new();
    let handle = spawn_watcher(server.watch_config(Duration::from_secs(60)), index.clone());
    synced(&index).await;
    server.wait_requests(2).await;
    assert_eq!(index.lookup(WORKER), None);

    // The apiserver reports an expired resourceVersion inside the stream.
    feed.send_fixture("watch_error_gone.json");
    let reqs = server.wait_requests(4).await;
    assert_list_request(&reqs[0]);
    assert_watch_request(&reqs[1], "184467");
    assert_list_request(&reqs[2]);
    assert_watch_request(&reqs[3], "190012");

    wait_until(&index, 10, "relist applied", |i| i.lookup(WORKER).is_some()).await;
    let w = index.lookup(&format!("docker://{WORKER}")).unwrap();
    assert_eq!((w.namespace.as_str(), w.pod.as_str(), w.container.as_str()), ("legacy", "legacy-worker-0", "worker"));
    // coredns is absent from the relist: treated as deleted, kept for the grace period.
    assert!(index.lookup(COREDNS).is_some());
    let stats = index.stats();
    assert_eq!((stats.lists, stats.pods, stats.deleted_pending), (2, 3, 1));
    assert!(stats.last_sync_ok);
    handle.abort();
}

#[tokio::test]
async fn gone_status_on_watch_request_relists() {
    let server = FakeApiServer::start();
    server.push_list(Reply::ok(fixture("podlist.json")));
    server.push_list(Reply::ok(fixture("podlist_relist.json")));
    // Older apiservers answer the watch request itself with 410 Gone.
    server.push_watch(Reply::Json { status: 410, body: fixture("status_gone.json") });
    let (_feed, stream) = watch_stream();
    server.push_watch(stream);

    let index = PodIndex::new();
    let handle = spawn_watcher(server.watch_config(Duration::from_secs(60)), index.clone());
    let reqs = server.wait_requests(4).await;
    assert_list_request(&reqs[0]);
    assert_watch_request(&reqs[1], "184467");
    assert_list_request(&reqs[2]);
    assert_watch_request(&reqs[3], "190012");
    wait_until(&index, 10, "relist applied", |i| i.lookup(WORKER).is_some()).await;
    assert_eq!(index.stats().lists, 2);
    handle.abort();
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let server = FakeApiServer::start();
    server.push_list(Reply::Json { status: 500, body: status_json(500, "InternalError", "etcdserver: request timed out") });
    server.push_list(Reply::ok(fixture("podlist.json")));
    server.push_watch(Reply::Json { status: 500, body: status_json(500, "InternalError", "etcdserver: leader changed") });
    let (feed, stream) = watch_stream();
    server.push_watch(stream);

    let index = PodIndex::new();
    let handle = spawn_watcher(server.watch_config(Duration::from_secs(60)), index.clone());
    let reqs = server.wait_requests(4).await;
    // A watch is healthy once it delivers an event (or stays open 5 s).
    feed.send_fixture("watch_bookmark.json");
    assert_list_request(&reqs[0]);
    assert_list_request(&reqs[1]);
    assert_watch_request(&reqs[2], "184467");
    // A failed watch is retried from the same resourceVersion, without a relist.
    assert_watch_request(&reqs[3], "184467");
    wait_until(&index, 10, "recovered", |i| i.last_sync_ok()).await;
    assert!(index.lookup(NGINX).is_some());
    assert_eq!(index.stats().lists, 1);
    assert!(!handle.is_finished());
    handle.abort();
}
