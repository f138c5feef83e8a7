//! Starting and stopping: wrong configurations exit 2 with nothing
//! attached; SIGTERM and kill -9 both leave no program, link or map behind
//! (bpftool); state is bounded and returns to its baseline after 10,000
//! connections; the default scope (the root cgroup) in one short run.
mod gateway_support;

use std::{path::Path, process::Command};

use gateway_support::{BIN, Echo, Gateway, LongClient, TestCgroup, bpftool_attached, config_path, free_port, require_root, service};
use serde_json::Value;

fn run_gateway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("gateway").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_and_wrong_configs_exit_2_with_nothing_attached() {
    require_root();
    let cg = TestCgroup::new("check");
    let good = config_path("good");
    std::fs::write(&good, service("web", "127.0.0.150:80", "tcp", "", &["127.0.0.1:18081".into()], &cg.path)).unwrap();
    let (code, stdout, _) = run_gateway(&["--check", good.to_str().unwrap()]);
    assert_eq!((code, stdout.trim()), (0, format!("{}: ok (1 services)", good.display()).as_str()));

    let cases = [
        (
            "vip = \"127.0.0.150:80\"",
            "vip = \"127.0.0.150\"",
            "line 3: vip: \"127.0.0.150\" is not an address with a port (1.2.3.4:80 or [::1]:80)",
        ),
        ("protocol = \"tcp\"", "protocol = \"tcp\"\ncolour = 1", "line 5: unknown field `colour`"),
        ("{ address = \"127.0.0.1:18081\" }", "", "line 6: service \"web\" has no backends"),
    ];
    let text = std::fs::read_to_string(&good).unwrap();
    for (from, to, want) in cases {
        let bad = config_path("bad");
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        for mode in ["--check", "--config"] {
            let (code, stdout, stderr) = run_gateway(&[mode, bad.to_str().unwrap()]);
            assert_eq!(code, 2, "{mode} {to}: {stderr}");
            assert_eq!(stdout, "");
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            assert!(stderr.contains(&format!("{}: {want}", bad.display())), "{stderr}");
        }
        let _ = std::fs::remove_file(bad);
    }
    // Duplicate VIPs, and a scope that does not exist (found when starting).
    let dup = config_path("dup");
    std::fs::write(&dup, format!("{text}{}", text.replace("\"web\"", "\"web2\""))).unwrap();
    let (code, _, stderr) = run_gateway(&["--config", dup.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("line 9: duplicate VIP 127.0.0.150:80 (tcp): service \"web\" has it already"), "{stderr}");
    let missing = config_path("missing");
    std::fs::write(&missing, text.replace(cg.path.to_str().unwrap(), &format!("{}/nope", cg.path.display()))).unwrap();
    let (code, _, stderr) = run_gateway(&["--config", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("service \"web\": scope") && stderr.contains("No such file"), "{stderr}");
    assert_eq!(bpftool_attached(&cg.path), Vec::<String>::new());
    for p in [good, dup, missing] {
        let _ = std::fs::remove_file(p);
    }
}

/// Program ids attached to `cgroup`, and the ids of their maps.
fn attached_ids(cgroup: &Path) -> (Vec<u64>, Vec<u64>) {
    let out = Command::new("bpftool").args(["cgroup", "show"]).arg(cgroup).arg("--json").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    let progs: Vec<u64> = v.as_array().into_iter().flatten().filter_map(|p| p["id"].as_u64()).collect();
    let mut maps = Vec::new();
    for id in &progs {
        let out = Command::new("bpftool").args(["prog", "show", "id", &id.to_string(), "--json"]).output().unwrap();
        let p: Value = serde_json::from_slice(&out.stdout).unwrap();
        maps.extend(p["map_ids"].as_array().into_iter().flatten().filter_map(Value::as_u64));
    }
    maps.sort();
    maps.dedup();
    (progs, maps)
}

fn exists(kind: &str, id: u64) -> bool {
    Command::new("bpftool").args([kind, "show", "id", &id.to_string()]).output().unwrap().status.success()
}

#[test]
fn sigterm_and_kill_9_leave_nothing_behind() {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let cg = TestCgroup::new("stop");
        let a = Echo::start("a", free_port());
        let gw = Gateway::start(&service("web", "127.0.0.151:80", "tcp", "", &[a.address()], &cg.path), &[]);
        let (progs, maps) = attached_ids(&cg.path);
        // connect4/6, sendmsg4/6, recvmsg4/6, getpeername4/6, sock_release.
        assert_eq!(progs.len(), 9, "{:?}", bpftool_attached(&cg.path));
        assert!(maps.len() >= 6, "{maps:?}");
        assert_eq!(cg.client(&["tcp", "127.0.0.151", "80", "1"])[0]["id"], "a");
        let (_, status, stderr) = gw.stop_with(signal);
        if signal == libc::SIGTERM {
            assert!(status.success(), "{status}: {stderr}");
        }
        // The kernel frees a link, its program and maps once the last fd
        // closes (a kill -9 closes them all); give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (!bpftool_attached(&cg.path).is_empty() || progs.iter().any(|p| exists("prog", *p)) || maps.iter().any(|m| exists("map", *m)))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(bpftool_attached(&cg.path), Vec::<String>::new(), "signal {signal}");
        for p in &progs {
            assert!(!exists("prog", *p), "program {p} still loaded after signal {signal}");
        }
        for m in &maps {
            assert!(!exists("map", *m), "map {m} still there after signal {signal}");
        }
        // Untranslated again: the VIP refuses.
        assert_eq!(cg.client(&["tcp", "127.0.0.151", "80", "1"])[0]["error"], libc::ECONNREFUSED);
    }
}

#[test]
fn ten_thousand_connections_leave_the_tables_at_their_baseline() {
    let cg = TestCgroup::new("bounded");
    let a = Echo::start("a", free_port());
    let b = Echo::start("b", free_port());
    let mut gw =
        Gateway::start(&service("web", "127.0.0.152:80", "tcp", "", &[a.address(), b.address()], &cg.path), &["--stats-interval", "200ms"]);
    let baseline = gw.next_stats()["tables"].clone();
    assert_eq!(baseline["reverse"], 0, "{baseline}");

    // 1,000 open at once: one reverse entry each.
    let mut many = LongClient::start(&cg, &["many", "127.0.0.152", "80", "1000"]);
    assert_eq!(many.line()["open"], 1000);
    let from = gw.events.len();
    gw.expect_after(from, "1,000 reverse entries", |v| v["type"] == "gateway_stats" && v["tables"]["reverse"] == 1000);
    many.poke();
    assert_eq!(many.line()["closed"], 1000);

    // 10,000 one after the other.
    let lines = cg.client(&["tcp", "127.0.0.152", "80", "10000"]);
    assert_eq!(lines.iter().filter(|l| l.get("id").is_some()).count(), 10_000);
    let from = gw.events.len();
    let stats = gw.expect_after(from, "tables back to their baseline", |v| {
        v["type"] == "gateway_stats" && v["tables"] == baseline && v["services"][0]["connections"] == 11_000
    });
    assert_eq!(stats["services"][0]["connections"], 11_000);
    assert_eq!(stats["counters"]["reverse_full"], 0);
    gw.stop();
}

#[test]
fn default_scope_is_the_whole_host() {
    // The root cgroup, in a short run that always ends the gateway (the
    // Gateway guard kills it if an assertion fails first).
    let a = Echo::start("a", free_port());
    let config = format!("[[service]]\nname = \"host\"\nvip = \"127.0.0.153:80\"\nbackends = [ {{ address = \"{}\" }} ]\n", a.address());
    let mut gw = Gateway::start(&config, &[]);
    let start = gw.expect("gateway_start", |e| e["type"] == "gateway_start");
    let root = start["cgroup_root"].as_str().unwrap().to_string();
    assert_eq!(start["attached"], serde_json::json!([root]));
    // This test's own process, in whatever cgroup it runs, is translated.
    let mut s = std::net::TcpStream::connect("127.0.0.153:80").expect("connect through the VIP");
    let mut id = [0u8; 1];
    std::io::Read::read_exact(&mut s, &mut id).unwrap();
    assert_eq!(&id, b"a");
    assert_eq!(s.peer_addr().unwrap(), "127.0.0.153:80".parse().unwrap());
    gw.stop();
    assert!(std::net::TcpStream::connect("127.0.0.153:80").is_err());
}
