//! End to end: HTTP/1.x exchanges between real servers (nginx, Python
//! http.server) and real clients (curl, raw sockets), seen from both sides.
mod support;

use std::process::Command;

use serde_json::Value;
use support::{
    Agent, Peer,
    servers::{BIG, Nginx, SMALL, SlowPython},
};

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
    nginx_and_curl(&["--traffic-source", "auto"]);
}

/// The same through the syscall fallback (kernels before 6.3), forced.
#[test]
fn nginx_and_curl_through_the_syscall_fallback() {
    nginx_and_curl(&["--traffic-source", "syscalls"]);
}

/// The same with syscall buffers and fds found from the syscalls' recorded
/// entries, as on kernels without `bpf_task_pt_regs` (before 5.15), forced:
/// through the syscall traffic hooks, and through the sock tracepoints
/// (where the recorded fd must name the hook's socket).
#[test]
fn nginx_and_curl_from_recorded_syscall_entries() {
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

#[test]
fn latency_of_a_slow_server_from_both_sides_and_a_50kb_post() {
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
