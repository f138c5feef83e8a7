//! Live reconfiguration: 100 reloads that change the backend set under
//! continuous connects with no failed connect; a removed service stops
//! being translated at once; a wrong config keeps the running one; a
//! change of the file alone reloads it.
mod gateway_support;

use std::time::Duration;

use gateway_support::{Echo, Gateway, LongClient, TestCgroup, free_port, service};
use serde_json::json;

#[test]
fn hundred_reloads_under_load_lose_no_connect() {
    let cg = TestCgroup::new("reload");
    let e: Vec<Echo> = ["a", "b", "c"].iter().map(|id| Echo::start(id, free_port())).collect();
    let sets = [vec![e[0].address(), e[1].address()], vec![e[1].address(), e[2].address()]];
    let config = |i: usize| service("web", "127.0.0.130:80", "tcp", "", &sets[i % 2], &cg.path);
    let mut gw = Gateway::start(&config(0), &[]);
    let client = LongClient::start(&cg, &["loop", "127.0.0.130", "80", "120"]);
    for i in 1..=100 {
        let from = gw.events.len();
        gw.reload(&config(i));
        let u = gw.expect_after(from, "service_update", |v| v["type"] == "service_update");
        assert_eq!(u["reason"], "reload");
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = client.finish();
    eprintln!("reloads: {result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert!(result["ok"].as_u64().unwrap() >= 100, "{result}");
    gw.stop();
}

#[test]
fn removal_wrong_configs_and_file_changes() {
    let cg = TestCgroup::new("reload2");
    let a = Echo::start("a", free_port());
    let web = service("web", "127.0.0.131:80", "tcp", "", &[a.address()], &cg.path);
    let api = service("api", "127.0.0.132:80", "tcp", "", &[a.address()], &cg.path);
    let mut gw = Gateway::start(&format!("{web}{api}"), &[]);
    assert_eq!(cg.client(&["tcp", "127.0.0.132", "80", "1"])[0]["id"], "a");

    // A wrong configuration: the running one stays, and the gateway says why.
    let from = gw.events.len();
    gw.reload(&format!("{web}{api}colour = \"red\"\n"));
    let failed = gw.expect_after(from, "reload_failed", |v| v["type"] == "reload_failed");
    let error = failed["error"].as_str().unwrap();
    assert!(error.ends_with("line 17: unknown field `colour`, expected one of `name`, `vip`, `protocol`, `algorithm`, `hash`, `backends`, `health`, `scope`, `drain`"), "{error}");
    assert_eq!(cg.client(&["tcp", "127.0.0.132", "80", "1"])[0]["id"], "a");

    // The file changes (no signal): "api" is removed and stops being
    // translated at once (nothing listens on the VIP itself).
    let from = gw.events.len();
    gw.write_config(&web);
    let u = gw.expect_after(from, "service_update", |v| v["type"] == "service_update");
    assert_eq!(u["removed"][0]["name"], "api", "{u}");
    assert_eq!(u["added"], json!([]));
    let r = cg.client(&["tcp", "127.0.0.132", "80", "1"]);
    assert_eq!(r[0]["error"], libc::ECONNREFUSED, "{r:?}");
    assert_eq!(cg.client(&["tcp", "127.0.0.131", "80", "1"])[0]["id"], "a");
    gw.stop();
}
