//! End to end: HTTP/1.x exchanges between real servers (nginx, Python
//! http.server) and real clients (curl, raw sockets), seen from both sides.
mod support;

use std::process::Command;

use serde_json::Value;
use support::{
    Agent, Peer,
    servers::{BIG, Nginx, SMALL, SlowPython},
};

/// The tests of this file run one at a time: `agent_stats` counts every
/// connection the kernel captured, whatever `--port` keeps, so another
/// test's connections would show in the counters a test checks.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn http_events<'a>(events: &'a [Value], role: &str, port: u16) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == "http" && e["role"] == role && e["dst"]["port"] == port).collect()
}

/// Runs curl on `urls` over one connection; returns per URL
/// (status, header bytes, body bytes) and curl's pid.
fn curl(args: &[&str], urls: &[String]) -> (Vec<(u16, u64, u64)>, u32) {
    let child = Command::new("curl")
        .args(["-s", "-w", "%{http_code} %{size_header} %{size_download} %{num_connects}\\n"])
        .args(args)
        .args(urls.iter().flat_map(|u| ["-o", "/dev/null", u.as_str()]))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl (apt-get install curl)");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<(u16, u64, u64)> = text
        .lines()
        .map(|l| {
            let f: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            (f[0] as u16, f[1], f[2])
        })
        .collect();
    let connects: u64 = text.lines().map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(connects, 1, "curl must reuse one keep-alive connection");
    (rows, pid)
}

#[test]
fn nginx_and_curl_keep_alive_static_files_sendfile_and_404() {
    let _serial = serial();
    nginx_and_curl(&["--traffic-source", "auto"]);
}

/// The same through the syscall fallback (kernels before 6.3), forced.
#[test]
fn nginx_and_curl_through_the_syscall_fallback() {
    let _serial = serial();
    nginx_and_curl(&["--traffic-source", "syscalls"]);
}

/// The same with syscall buffers and fds found from the syscalls' recorded
/// entries, as on kernels without `bpf_task_pt_regs` (before 5.15), forced:
/// through the syscall traffic hooks, and through the sock tracepoints
/// (where the recorded fd must name the hook's socket).
#[test]
fn nginx_and_curl_from_recorded_syscall_entries() {
    let _serial = serial();
    nginx_and_curl(&["--traffic-source", "syscalls", "--record-syscall-entries"]);
    nginx_and_curl(&["--traffic-source", "sock", "--record-syscall-entries"]);
}

fn nginx_and_curl(source: &[&str]) {
    let nginx = Nginx::start();
    let port = nginx.port;
    let mut args = vec!["--events", "http", "--port"];
    let port_arg = port.to_string();
    args.push(&port_arg);
    args.extend_from_slice(source);
    let mut agent = Agent::start(&args);
    let paths = ["/small.txt", "/big.bin", "/missing", "/small.txt?x=1&y=%20"];
    let urls: Vec<String> = paths.iter().map(|p| format!("http://127.0.0.1:{port}{p}")).collect();
    let (rows, curl_pid) = curl(&[], &urls);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![200, 200, 404, 200]);
    assert_eq!(rows[0].2, SMALL.len() as u64);
    assert_eq!(rows[1].2, BIG as u64);

    for (i, _) in paths.iter().enumerate() {
        agent.expect("client exchange", |e| {
            e["type"] == "http" && e["role"] == "client" && e["path"] == paths[i] && e["dst"]["port"] == port
        });
        agent.expect("server exchange", |e| {
            e["type"] == "http" && e["role"] == "server" && e["path"] == paths[i] && e["dst"]["port"] == port
        });
    }
    let events = agent.stop();
    let client = http_events(&events, "client", port);
    let server = http_events(&events, "server", port);
    assert_eq!(client.len(), 4, "{client:?}");
    assert_eq!(server.len(), 4, "{server:?}");
    let client_port = &client[0]["src"]["port"];
    for i in 0..4 {
        let (c, s) = (client[i], server[i]);
        assert_eq!(c["path"], paths[i]);
        assert_eq!(s["path"], paths[i]);
        assert_eq!(c["method"], "GET");
        assert_eq!(c["host"], format!("127.0.0.1:{port}"));
        assert_eq!(c["status"], rows[i].0);
        assert_eq!(s["status"], rows[i].0);
        assert_eq!(c["response_bytes"], rows[i].1 + rows[i].2, "client response bytes of {}", paths[i]);
        assert_eq!(s["response_bytes"], rows[i].1 + rows[i].2, "server response bytes of {}", paths[i]);
        assert_eq!(c["request_bytes"], s["request_bytes"]);
        assert_eq!(c["version"], "1.1");
        assert_eq!(c["error"], Value::Null);
        assert_eq!(c["process"]["pid"], curl_pid);
        assert_eq!(s["process"]["comm"], "nginx");
        assert_eq!(&c["src"]["port"], client_port, "keep-alive: one connection");
        assert!(c["latency_ns"].as_u64().unwrap() > 0);
    }
}

#[test]
fn pipelined_and_split_requests_against_nginx() {
    let _serial = serial();
    let nginx = Nginx::start();
    let port = nginx.port;
    let mut agent = Agent::start(&["--events", "http", "--port", &port.to_string()]);
    let pipe = Peer::script("raw_http.py", &["pipeline", &port.to_string()]);
    let pipe_port: u64 = pipe.line().parse().unwrap();
    assert_eq!(pipe.line(), "3");
    pipe.wait();
    let split = Peer::script("raw_http.py", &["split", &port.to_string()]);
    let split_port: u64 = split.line().parse().unwrap();
    assert_eq!(split.line(), "HTTP/1.1 200 OK");
    split.wait();
    agent.expect("split request, server side", |e| e["type"] == "http" && e["role"] == "server" && e["src"]["port"] == split_port);
    agent.expect("split request, client side", |e| e["type"] == "http" && e["role"] == "client" && e["src"]["port"] == split_port);
    agent.expect("third pipelined, client side", |e| e["type"] == "http" && e["role"] == "client" && e["path"] == "/missing?p=3");
    let events = agent.stop();
    for role in ["client", "server"] {
        let piped: Vec<&Value> = http_events(&events, role, port).into_iter().filter(|e| e["src"]["port"] == pipe_port).collect();
        let got: Vec<(&str, u64)> = piped.iter().map(|e| (e["path"].as_str().unwrap(), e["status"].as_u64().unwrap())).collect();
        assert_eq!(got, vec![("/small.txt?p=1", 200), ("/small.txt?p=2", 200), ("/missing?p=3", 404)], "{role}");
        assert!(piped.iter().all(|e| e["host"] == "pipe"));
        let split: Vec<&Value> = http_events(&events, role, port).into_iter().filter(|e| e["src"]["port"] == split_port).collect();
        assert_eq!(split.len(), 1, "{role}");
        assert_eq!(split[0]["path"], "/small.txt?split=1");
        assert_eq!(split[0]["host"], "split");
        assert_eq!(split[0]["status"], 200);
        assert_eq!(split[0]["method"], "GET");
    }
}

/// Pipelining past the capture limit: each round's 32 requests (the
/// deepest pipelining a connection is followed to) go out in one write of
/// about 1.5 KB, and the client reads their responses (about 7.5 KB) in
/// reads of at most `read` bytes, which start anywhere in a response.
fn pipelined_bursts(capture: &str, read: &str) -> (Vec<Value>, u64, Vec<(String, u64)>) {
    const ROUNDS: usize = 20;
    const DEPTH: usize = 32;
    let nginx = Nginx::start();
    let port = nginx.port;
    let mut agent = Agent::start(&["--events", "http", "--port", &port.to_string(), "--capture-bytes", capture, "--stats-interval", "1s"]);
    let burst = Peer::script("raw_http.py", &["burst", &port.to_string(), &ROUNDS.to_string(), &DEPTH.to_string(), read]);
    let burst_port: u64 = burst.line().parse().unwrap();
    assert_eq!(burst.line(), (ROUNDS * DEPTH).to_string());
    burst.wait();
    // The connection's close reports what it still holds: wait for the
    // stats that show it freed.
    let after = agent.events.len();
    agent.wait_until("the connection's close", std::time::Duration::from_secs(20), |ev| {
        ev[after..].iter().any(|e| e["type"] == "agent_stats" && e["tables"]["http_connections"] == 0)
    });
    let events = agent.stop();
    let expected = (0..ROUNDS * DEPTH)
        .map(|n| {
            let (r, i) = (n / DEPTH, n % DEPTH);
            if i % 2 == 0 { (format!("/small.txt?r={r}&i={i}"), 200) } else { (format!("/missing?r={r}&i={i}"), 404) }
        })
        .collect();
    (events.into_iter().filter(|e| e["type"] != "http" || e["src"]["port"] == burst_port).collect(), port as u64, expected)
}

fn path_status(e: &Value) -> (String, u64) {
    (e["path"].as_str().unwrap().to_string(), e["status"].as_u64().unwrap_or(0))
}

/// With a capture as large as the reads (`--capture-bytes 16384`), every
/// exchange is reported from both sides, in order, with its own path and
/// status, and nothing is approximate or counted lost.
#[test]
fn pipelined_bursts_are_all_reported_when_the_capture_holds_the_reads() {
    let _serial = serial();
    let (events, port, expected) = pipelined_bursts("16384", "65536");
    for role in ["client", "server"] {
        let got: Vec<(String, u64)> = http_events(&events, role, port as u16)
            .into_iter()
            .inspect(|e| assert_eq!(e["approximate"], false, "{e}"))
            .map(path_status)
            .collect();
        assert_eq!(got.len(), expected.len(), "{role}: exchanges reported");
        assert_eq!(got, expected, "{role}");
    }
    let last = events.iter().rev().find(|e| e["type"] == "agent_stats").expect("final agent_stats");
    assert_eq!(
        last["http"],
        serde_json::json!({"unseen_requests": 0, "orphan_responses": 0, "pending_overflow": 0, "pairing_lost": 0, "gave_up": 0})
    );
    for kind in ["kernel_ring_buffer", "user_queue"] {
        for (k, v) in last["lost"][kind].as_object().unwrap() {
            assert_eq!(v, 0, "{kind} lost {k}");
        }
    }
}

/// With the default capture (1024 bytes), the client's reads of 1500 bytes
/// hide responses in uncaptured bytes: the connection is counted in
/// `agent_stats.http.pairing_lost` and every exchange reported after that
/// point is `approximate`; the ones before it are exact. Never a wrong
/// pairing reported as exact: each exchange not marked `approximate` has
/// its own request's status (200 for `/small.txt`, 404 for `/missing`).
#[test]
fn pipelined_bursts_past_the_capture_never_pair_wrongly_as_exact() {
    let _serial = serial();
    let (events, port, expected) = pipelined_bursts("1024", "1500");
    let client = http_events(&events, "client", port as u16);
    let exact = client.iter().take_while(|e| e["approximate"] == false).count();
    assert!(exact < client.len(), "the default capture should lose the client's pairing");
    for e in client.iter().filter(|e| e["approximate"] == false) {
        let (path, status) = path_status(e);
        assert_eq!(status, if path.starts_with("/small.txt") { 200 } else { 404 }, "{e}");
    }
    let got: Vec<(String, u64)> = client[..exact].iter().map(|e| path_status(e)).collect();
    assert_eq!(got, expected[..exact], "exact exchanges before the gap");
    let last = events.iter().rev().find(|e| e["type"] == "agent_stats").expect("final agent_stats");
    assert!(last["http"]["pairing_lost"].as_u64().unwrap() >= 1, "{last}");
}

#[test]
fn latency_of_a_slow_server_from_both_sides_and_a_50kb_post() {
    let _serial = serial();
    const DELAY_MS: u64 = 300;
    let server = SlowPython::start(DELAY_MS);
    let port = server.port;
    let mut agent = Agent::start(&["--events", "http", "--port", &port.to_string()]);
    let (rows, curl_pid) = curl(&[], &[format!("http://127.0.0.1:{port}/slow")]);
    assert_eq!(rows[0].0, 200);
    let body = vec![b'p'; 50 * 1024];
    let file = std::env::temp_dir().join(format!("masdeepflow-post-{}", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    let post = Command::new("curl")
        .args(["-s", "-H", "Expect:", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://127.0.0.1:{port}/upload"))
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(String::from_utf8_lossy(&post.stdout), "51200");

    for role in ["client", "server"] {
        let e = agent.expect("slow GET", |e| e["type"] == "http" && e["role"] == role && e["path"] == "/slow");
        let latency = e["latency_ns"].as_u64().unwrap() as f64 / 1e6;
        assert!(
            (latency - DELAY_MS as f64).abs() <= DELAY_MS as f64 * 0.10,
            "{role} latency {latency} ms, expected {DELAY_MS} ms within 10%"
        );
        assert_eq!(e["status"], 200);
        assert_eq!(e["response_bytes"], rows[0].1 + rows[0].2);
        if role == "client" {
            assert_eq!(e["process"]["pid"], curl_pid);
        } else {
            assert_eq!(e["process"]["pid"], server.pid());
        }
    }
    let c = agent.expect("client POST", |e| e["type"] == "http" && e["role"] == "client" && e["method"] == "POST");
    let s = agent.expect("server POST", |e| e["type"] == "http" && e["role"] == "server" && e["method"] == "POST");
    assert_eq!(c["status"], 201);
    assert_eq!(s["status"], 201);
    assert_eq!(c["path"], "/upload");
    assert_eq!(c["request_bytes"], s["request_bytes"]);
    let head = c["request_bytes"].as_u64().unwrap() - 51200;
    assert!((60..400).contains(&head), "request head of {head} bytes");
    assert_eq!(c["response_bytes"], s["response_bytes"]);
    agent.stop();
}

#[test]
fn hostile_request_bytes_give_one_escaped_json_line() {
    let _serial = serial();
    let nginx = Nginx::start();
    let port = nginx.port;
    let mut agent = Agent::start(&["--events", "http", "--port", &port.to_string()]);
    let peer = Peer::script("raw_http.py", &["hostile", &port.to_string()]);
    let client_port: u64 = peer.line().parse().unwrap();
    assert_eq!(peer.line(), "HTTP/1.1 400 Bad Request");
    peer.wait();
    // Every line the agent wrote parsed as JSON (the harness checks); the
    // path comes back exactly, invalid UTF-8 replaced.
    for role in ["client", "server"] {
        let e = agent.expect("the hostile exchange", |e| e["type"] == "http" && e["role"] == role && e["src"]["port"] == client_port);
        assert_eq!(e["path"], "/a\u{1b}[31mred\u{1}\u{7f}\u{fffd}\"q\\", "{role}");
        assert_eq!(e["host"], "h\u{1}");
        assert_eq!(e["status"], 400);
    }
    agent.stop();
}
