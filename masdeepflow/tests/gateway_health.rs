//! Health checks: a backend that stops answering is out of rotation within
//! interval x unhealthy_after, back after healthy_after successes; checks
//! go to the backends directly (never counted as VIP connections); with
//! every backend down, connect() fails at once with ECONNREFUSED.
mod gateway_support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use gateway_support::{Echo, Gateway, TestCgroup, count_by, free_port, service};

const HEALTH: &str = "health = { kind = \"tcp\", interval = \"200ms\", timeout = \"100ms\", unhealthy_after = 2, healthy_after = 2 }";

#[test]
fn health_timeline_and_all_down_refuses_at_once() {
    let cg = TestCgroup::new("health");
    let (pa, pb) = (free_port(), free_port());
    let mut a = Echo::start("a", pa);
    let mut b = Echo::start("b", pb);
    let config = service("web", "127.0.0.120:80", "tcp", HEALTH, &[a.address(), b.address()], &cg.path);
    let mut gw = Gateway::start(&config, &["--stats-interval", "1s"]);
    let lines = cg.client(&["tcp", "127.0.0.120", "80", "100"]);
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("a".into(), 50), ("b".into(), 50)]));

    // b stops answering: out within 2 x 200 ms (plus scheduling slack).
    let from = gw.events.len();
    b.kill();
    let killed = Instant::now();
    let down = gw.expect_after(from, "b down", |e| e["type"] == "backend_health" && e["state"] == "down");
    let took = killed.elapsed();
    eprintln!("health: b down after {took:?}");
    assert!(took <= Duration::from_millis(400 + 250), "b out of rotation after {took:?}");
    assert_eq!(down["backend"], b.address());
    assert_eq!(
        (down["service"].as_str(), down["check"].as_str(), down["in_rotation"].as_u64()),
        (Some("web"), Some("ECONNREFUSED"), Some(1))
    );
    let lines = cg.client(&["tcp", "127.0.0.120", "80", "50"]);
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("a".into(), 50)]));

    // b is back: in again after two successful checks.
    let from = gw.events.len();
    let _b = Echo::start("b", pb);
    let back = Instant::now();
    let up = gw.expect_after(from, "b up", |e| e["type"] == "backend_health" && e["state"] == "up");
    let took = back.elapsed();
    eprintln!("health: b up after {took:?}");
    assert!(took <= Duration::from_millis(400 + 250), "b back after {took:?}");
    assert_eq!((up["backend"].as_str(), up["in_rotation"].as_u64()), (Some(b.address().as_str()), Some(2)));
    let lines = cg.client(&["tcp", "127.0.0.120", "80", "50"]);
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("a".into(), 25), ("b".into(), 25)]));

    // Everything down: refused at once, never a hang.
    let from = gw.events.len();
    a.kill();
    drop(_b);
    gw.expect_after(from, "a down", |e| e["type"] == "backend_health" && e["state"] == "down" && e["in_rotation"] == 1);
    gw.expect_after(from, "all down", |e| e["type"] == "backend_health" && e["state"] == "down" && e["in_rotation"] == 0);
    let lines = cg.client(&["tcp", "127.0.0.120", "80", "20"]);
    for l in &lines {
        assert_eq!(l["error"], libc::ECONNREFUSED, "{l}");
        assert!(l["ms"].as_f64().unwrap() < 50.0, "a refused connect must not wait: {l}");
    }

    // Health checks went to the backends directly: only the clients'
    // connects were translated, and the refused ones are counted.
    let stats = gw.next_stats();
    assert_eq!(stats["services"][0]["connections"], 200, "{stats}");
    assert_eq!(stats["services"][0]["refused_no_backend"], 20, "{stats}");
    gw.stop();
}
