//! API server unreachable at start, then up.
//!
//! **The "API server" is a replay of recorded real kube-apiserver responses
//! (`tests/fixtures/`), served by a small HTTP/1.1 server on 127.0.0.1, not a
//! real cluster.** Its socket is bound but not listening at first, so the
//! watcher's connections are refused; then it starts listening.
//!
//! These tests sit in their own test binary because they install a global
//! `log` logger to check that an outage is logged once, not per retry; a
//! lock runs them one at a time.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{FakeApiServer, Reply, fixture, status_json, watch_stream};
use masdeepflow_k8s::{PodIndex, spawn_watcher};

const NGINX: &str = "5be1ecc7935f1dd85635d4feedaf660594030253cc97c9e9ca3819ffeac36b65";

static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("masdeepflow_k8s")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            RECORDS.lock().unwrap().push((r.level(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture;
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn install_logger() {
    // Only the first call succeeds; the logger is the same for all tests.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    RECORDS.lock().unwrap().clear();
}

fn warnings() -> Vec<String> {
    RECORDS.lock().unwrap().iter().filter(|(l, _)| *l == log::Level::Warn).map(|(_, m)| m.clone()).collect()
}

fn debug_failures() -> usize {
    RECORDS.lock().unwrap().iter().filter(|(l, m)| *l == log::Level::Debug && m.contains("failed again")).count()
}

#[tokio::test]
async fn api_server_down_at_start_then_up() {
    let _serial = SERIAL.lock().await;
    install_logger();

    let mut server = FakeApiServer::bound(); // connection refused for now
    server.push_list(Reply::ok(fixture("podlist.json")));
    let (_feed, stream) = watch_stream();
    server.push_watch(stream);

    let index = PodIndex::new();
    let handle = spawn_watcher(server.watch_config(Duration::from_secs(60)), index.clone());

    // Let it fail and retry for a while (this is the scenario's length, not
    // a synchronisation): backoff is 20 ms doubling up to 200 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    while debug_failures() < 3 {
        assert!(Instant::now() < deadline, "watcher did not retry: {:?}", RECORDS.lock().unwrap());
        let started = Instant::now();
        assert_eq!(index.lookup(NGINX), None);
        assert!(started.elapsed() < Duration::from_millis(50), "lookup must not wait on the API server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!handle.is_finished(), "watcher must keep running");
    assert!(!index.is_synced());
    assert!(!index.last_sync_ok());
    assert_eq!(index.len(), 0);
    let w = warnings();
    assert_eq!(w.len(), 1, "one warning for the outage, not one per retry: {w:?}");
    assert!(w[0].contains("failed"), "{w:?}");
    assert!(server.requests().is_empty());

    // The API server comes up: enrichment appears.
    server.listen();
    tokio::time::timeout(Duration::from_secs(10), index.synced()).await.expect("synced after the server came up");
    let meta = index.lookup(NGINX).expect("enriched once the server is up");
    assert_eq!((meta.namespace.as_str(), meta.container.as_str()), ("shop", "nginx"));
    assert!(index.last_sync_ok());
    let w = warnings();
    assert_eq!(w.len(), 2, "outage + recovery: {w:?}");
    assert!(w[1].contains("reachable again"), "{w:?}");

    let reqs = server.wait_requests(2).await;
    assert_eq!(reqs[0].path, "/api/v1/pods");
    assert!(!reqs[0].is_watch());
    assert!(reqs[1].is_watch());
    assert_eq!(reqs[1].param("resourceVersion"), Some("184467"));
    handle.abort();
}

#[tokio::test]
async fn watch_accepted_then_failing_warns_once() {
    let _serial = SERIAL.lock().await;
    install_logger();

    let server = FakeApiServer::start();
    server.push_list(Reply::ok(fixture("podlist.json")));
    // The apiserver accepts each watch and fails it at once (HTTP 200, then an
    // ERROR event that is not 410): still an outage, not a recovery per retry.
    let error_event = format!("{{\"type\":\"ERROR\",\"object\":{}}}\n", status_json(500, "InternalError", "etcdserver: leader changed"));
    for _ in 0..4 {
        server.push_watch(Reply::ok(error_event.clone()));
    }

    let index = PodIndex::new();
    let handle = spawn_watcher(server.watch_config(Duration::from_secs(60)), index.clone());
    let reqs = server.wait_requests(6).await; // list + 4 failing watches + 1 quiet watch
    assert!(!reqs[0].is_watch());
    for r in &reqs[1..6] {
        assert!(r.is_watch());
        assert_eq!(r.param("resourceVersion"), Some("184467"), "retried from the same resourceVersion");
    }
    assert_eq!(index.stats().lists, 1, "a failing watch is not a reason to relist");
    assert!(index.lookup(NGINX).is_some(), "the listed pods stay resolvable");
    assert!(!index.last_sync_ok());
    let w = warnings();
    assert_eq!(w.len(), 1, "one warning, no recovered/failed pair per retry: {w:?}");
    assert!(w[0].contains("watch stream failed"), "{w:?}");
    handle.abort();
}
