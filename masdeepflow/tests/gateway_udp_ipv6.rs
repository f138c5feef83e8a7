//! UDP (connected and unconnected, sendmsg/recvmsg translated both ways)
//! and IPv6 (inside a network namespace the test creates), plus IPv4
//! through an IPv6 socket (v4-mapped addresses).
mod gateway_support;

use std::{collections::BTreeMap, process::Command};

use gateway_support::{Echo, Gateway, TestCgroup, count_by, free_port, service};
use serde_json::json;

#[test]
fn udp_replies_come_from_the_vip_and_sockets_are_balanced() {
    let cg = TestCgroup::new("udp");
    let a = Echo::start("a", free_port());
    let b = Echo::start("b", free_port());
    let config = service("dns", "127.0.0.110:53", "udp", "", &[a.address(), b.address()], &cg.path);
    let mut gw = Gateway::start(&config, &["--events", "connections"]);

    // Unconnected sockets: sendto() the VIP, recvfrom() shows the VIP.
    let lines = cg.client(&["udp", "127.0.0.110", "53", "100"]);
    for l in &lines {
        assert_eq!(l["source"], json!(["127.0.0.110", 53]), "{l}");
    }
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("a".into(), 50), ("b".into(), 50)]));

    // One unconnected socket keeps its backend (until the service changes).
    let lines = cg.client(&["udp-sticky", "127.0.0.110", "53", "20"]);
    assert_eq!(count_by(&lines, "id").len(), 1, "{lines:?}");
    assert!(lines.iter().all(|l| l["source"] == json!(["127.0.0.110", 53])));

    // Connected sockets: connect() picks, getpeername() and recvfrom() show the VIP.
    let lines = cg.client(&["udp-connected", "127.0.0.110", "53", "100"]);
    for l in &lines {
        assert_eq!(l["source"], json!(["127.0.0.110", 53]), "{l}");
        assert_eq!(l["peer"], json!(["127.0.0.110", 53]), "{l}");
    }
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("a".into(), 50), ("b".into(), 50)]));

    let e = gw.expect("a UDP gateway_connection by sendmsg", |e| e["type"] == "gateway_connection" && e["via"] == "sendmsg");
    assert_eq!((e["protocol"].as_str(), e["service"].as_str()), (Some("udp"), Some("dns")));
    gw.stop();
}

#[test]
fn ipv4_through_an_ipv6_socket() {
    let cg = TestCgroup::new("mapped");
    let a = Echo::start("a", free_port());
    let config = service("web", "127.0.0.111:80", "tcp", "", &[a.address()], &cg.path);
    let gw = Gateway::start(&config, &[]);
    let lines = cg.client(&["tcp", "::ffff:127.0.0.111", "80", "3"]);
    for l in &lines {
        assert_eq!(l["id"], "a", "{l}");
        assert_eq!(l["peer"], json!(["::ffff:127.0.0.111", 80]), "{l}");
    }
    gw.stop();
}

/// A network namespace made by the test, with only `lo` up.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("mdfgw{}", std::process::id());
        let ok = |args: &[&str]| {
            let s = Command::new("ip").args(args).status().expect("ip (apt-get install iproute2)");
            assert!(s.success(), "ip {args:?}");
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(std::process::Stdio::null()).status();
        ok(&["netns", "add", &name]);
        ok(&["-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn ipv6_tcp_and_udp_in_a_test_namespace() {
    let ns = Netns::new();
    let cg = TestCgroup::new("ipv6");
    let wrap = ["ip", "netns", "exec", ns.0.as_str()];
    let a = Echo::start_with("a", "::1", 18601, Some(&wrap));
    let b = Echo::start_with("b", "::1", 18602, Some(&wrap));
    let config = format!(
        "{}{}",
        service("web6", "[fd00::100]:80", "tcp", "", &[a.address(), b.address()], &cg.path),
        service("dns6", "[fd00::100]:53", "udp", "", &[a.address(), b.address()], &cg.path)
    );
    let gw = Gateway::start(&config, &[]);
    let client = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = cg
            .command("ip", &["netns", "exec", &ns.0, "/usr/bin/python3", &gateway_support::helper("gw_client.py")])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let lines = client(&["tcp", "fd00::100", "80", "100"]);
    for l in &lines {
        assert_eq!(l["peer"], json!(["fd00::100", 80]), "{l}");
    }
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("a".into(), 50), ("b".into(), 50)]));
    let lines = client(&["udp", "fd00::100", "53", "10"]);
    for l in &lines {
        assert_eq!(l["source"], json!(["fd00::100", 53]), "{l}");
    }
    assert_eq!(count_by(&lines, "id"), BTreeMap::from([("a".into(), 5), ("b".into(), 5)]));
    gw.stop();
    // Untranslated, the VIP fails inside the namespace (no route), never leaves it.
    let lines = client(&["tcp", "fd00::100", "80", "1"]);
    assert_eq!(lines[0]["error"], libc::ENETUNREACH, "{:?}", lines[0]);
}
