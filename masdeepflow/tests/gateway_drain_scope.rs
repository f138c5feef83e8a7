//! `drain = "reset"` resets open connections to a backend that leaves
//! (sock_diag destroy), `drain = "keep"` leaves them; `scope` limits a
//! service to one cgroup subtree, tested with a real runc container.
mod gateway_support;

use std::{path::Path, process::Command};

use gateway_support::{Echo, Gateway, LongClient, TestCgroup, free_port, service};
use serde_json::{Value, json};

fn drain_case(drain: &str) -> (Value, Vec<Value>) {
    let cg = TestCgroup::new(&format!("drain-{drain}"));
    let a = Echo::start("a", free_port());
    let b = Echo::start("b", free_port());
    let extra = format!("drain = \"{drain}\"");
    let mut gw = Gateway::start(&service("web", "127.0.0.161:80", "tcp", &extra, &[a.address(), b.address()], &cg.path), &[]);
    let mut held = LongClient::start(&cg, &["hold", "127.0.0.161", "80"]);
    let first = held.line();
    assert_eq!(first["peer"], json!(["127.0.0.161", 80]));
    let (gone, stays) = if first["id"] == "a" { (&a, &b) } else { (&b, &a) };
    let from = gw.events.len();
    gw.reload(&service("web", "127.0.0.161:80", "tcp", &extra, &[stays.address()], &cg.path));
    gw.expect_after(from, "service_update", |e| e["type"] == "service_update");
    held.poke();
    let after = held.line();
    let resets = gw.stop().into_iter().filter(|e| e["type"] == "backends_reset").collect::<Vec<_>>();
    if drain == "reset" {
        assert_eq!(resets.len(), 1, "{resets:?}");
        assert_eq!(resets[0]["backend"], gone.address());
    }
    (after, resets)
}

#[test]
fn drain_reset_resets_and_keep_keeps() {
    let (after, resets) = drain_case("reset");
    eprintln!("drain reset: the held client saw {after}");
    assert_eq!((resets[0]["connections"].as_u64(), resets[0]["service"].as_str()), (Some(1), Some("web")), "{resets:?}");
    assert_ne!(after["after"], "ping", "the connection to the removed backend must be reset: {after}");
    let (after, resets) = drain_case("keep");
    assert_eq!(after["after"], "ping", "the connection stays: {after}");
    assert_eq!(resets, Vec::<Value>::new());
}

#[test]
fn scope_limits_a_service_to_a_runc_container() {
    let parent = TestCgroup::new("scope");
    let a = Echo::start("a", free_port());
    let gw = Gateway::start(&service("web", "127.0.0.162:80", "tcp", "", &[a.address()], &parent.path), &[]);

    // A container whose cgroup is under the scope is translated.
    let dir = std::env::temp_dir().join(format!("mdf-gw-runc-{}", std::process::id()));
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox =
        ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists()).expect("busybox (apt-get install busybox-static)");
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "nc"] {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    assert!(Command::new("runc").arg("spec").current_dir(&dir).status().expect("runc (apt-get install runc)").success());
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["/bin/nc", "127.0.0.162", "80"]);
    config["root"]["readonly"] = json!(true);
    let name = parent.path.file_name().unwrap().to_str().unwrap();
    config["linux"]["cgroupsPath"] = json!(format!("/{name}/ctr"));
    let namespaces: Vec<Value> =
        config["linux"]["namespaces"].as_array().unwrap().iter().filter(|n| n["type"] != "network").cloned().collect();
    config["linux"]["namespaces"] = json!(namespaces);
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let id = format!("mdf-gw-scope-{}", std::process::id());
    let out = Command::new("runc").args(["run", &id]).current_dir(&dir).stdin(std::process::Stdio::null()).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "container failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a", "the container reached the backend through the VIP");

    // A process outside the scope (a sibling cgroup) is not translated.
    let outside = TestCgroup::new("outside");
    assert_eq!(outside.client(&["tcp", "127.0.0.162", "80", "1"])[0]["error"], libc::ECONNREFUSED);
    let stats_connections = gw.stop().iter().rev().find(|e| e["type"] == "gateway_stats").unwrap()["services"][0]["connections"].clone();
    assert_eq!(stats_connections, 1);
}
