//! The programs older kernels get: without `bpf_set_retval` (before 5.18),
//! without atomic fetch-add (before 5.12) and without reading the current
//! process in socket-address programs. The features are turned off on this
//! kernel (MASDEEPFLOW_GATEWAY_DISABLE) so the fallbacks load and run here.
mod gateway_support;

use std::collections::BTreeMap;

use gateway_support::{Echo, Gateway, TestCgroup, count_by, free_port, service};
use serde_json::json;

#[test]
fn fallback_programs_balance_and_refuse_with_eperm() {
    let cg = TestCgroup::new("fallback");
    let a = Echo::start("a", free_port());
    let b = Echo::start("b", free_port());
    let config = format!(
        "{}{}",
        service("web", "127.0.0.190:80", "tcp", "", &[a.address(), b.address()], &cg.path),
        service(
            "none",
            "127.0.0.191:80",
            "tcp",
            "health = { interval = \"100ms\", timeout = \"50ms\", unhealthy_after = 1 }",
            &["127.0.0.1:1".into()],
            &cg.path
        )
    );
    let mut gw =
        Gateway::start_env(&config, &["--events", "connections"], &[("MASDEEPFLOW_GATEWAY_DISABLE", "set_retval,process_info,fetch_add")]);
    assert_eq!(gw.events[0]["features"], json!({"econnrefused": false, "process_info": false, "exact_round_robin": false}));
    // Sequential connects: the read-then-add counter is exact too.
    let lines = cg.client(&["tcp", "127.0.0.190", "80", "100"]);
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("a".into(), 50), ("b".into(), 50)]));
    assert!(lines.iter().all(|l| l["peer"] == json!(["127.0.0.190", 80])));
    let e = gw.expect("a connection event", |e| e["type"] == "gateway_connection");
    assert_eq!(e.get("process"), None, "{e}");
    // No backend up: refused at once, with EPERM where set_retval is missing.
    gw.expect("the dead backend down", |e| e["type"] == "backend_health" && e["state"] == "down");
    let r = cg.client(&["tcp", "127.0.0.191", "80", "1"]);
    assert_eq!(r[0]["error"], libc::EPERM, "{r:?}");
    gw.stop();
}
