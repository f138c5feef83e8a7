//! Real HTTP through a VIP: two nginx backends, curl and wrk as clients in
//! a test cgroup.
mod gateway_support;
mod support;

use gateway_support::{Gateway, TestCgroup, service};
use support::servers::{Nginx, SMALL};

#[test]
fn curl_and_wrk_through_the_vip() {
    let cg = TestCgroup::new("nginx");
    let n1 = Nginx::start();
    let n2 = Nginx::start();
    let backends = [format!("127.0.0.1:{}", n1.port), format!("127.0.0.1:{}", n2.port)];
    let mut gw = Gateway::start(&service("web", "127.0.0.195:80", "tcp", "", &backends, &cg.path), &["--stats-interval", "300ms"]);

    for _ in 0..10 {
        let out = cg
            .command(
                "curl",
                &["-sS", "--max-time", "5", "-w", "\n%{http_code} %{remote_ip}:%{remote_port}", "http://127.0.0.195/small.txt"],
            )
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, format!("{}\n200 127.0.0.195:80", String::from_utf8_lossy(SMALL)));
    }
    let from = gw.events.len();
    let stats = gw.expect_after(from, "stats after curl", |e| e["type"] == "gateway_stats" && e["services"][0]["connections"] == 10);
    for b in stats["services"][0]["backends"].as_array().unwrap() {
        assert_eq!(b["connections"], 5, "{stats}");
    }

    // wrk, a new connection per request, for two seconds: no errors.
    let out = cg
        .command("wrk", &["-t1", "-c8", "-d2s", "-H", "Connection: close", "http://127.0.0.195/small.txt"])
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Socket errors") && !text.contains("Non-2xx"), "{text}");
    let requests: u64 =
        text.lines().find_map(|l| l.trim().split_once(" requests in ")).map(|(n, _)| n.trim().parse().unwrap()).expect("wrk's count");
    assert!(requests > 100, "{text}");
    let from = gw.events.len();
    let stats = gw.expect_after(from, "stats after wrk", |e| {
        e["type"] == "gateway_stats" && e["services"][0]["connections"].as_u64().unwrap() >= 10 + requests
    });
    let per: Vec<u64> = stats["services"][0]["backends"].as_array().unwrap().iter().map(|b| b["connections"].as_u64().unwrap()).collect();
    assert!(per[0].abs_diff(per[1]) <= 1, "exact round robin over concurrent connects: {per:?}");
    gw.stop();
}
