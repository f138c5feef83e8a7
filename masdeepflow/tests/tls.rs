//! End to end: HTTP/1.1 inside TLS, read from OpenSSL 3 (Debian 12's
//! libssl.so.3) by uprobes on the entries and return instructions of
//! `SSL_write`, `SSL_read`, `SSL_write_ex`, `SSL_read_ex`: nginx with a
//! certificate made by `openssl` here, clients curl (`SSL_write`/`SSL_read`)
//! and Python (`urllib`, and `ssl` sockets: the `_ex` functions), seen from
//! both sides with the same exact fields as in the clear, plus the probes'
//! lifecycle (attached per file while a process maps it; nothing left after
//! the agent exits, kill -9 included).
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Agent, servers::free_port};

/// Tests here count the kernel's uprobe links: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const SMALL: &[u8] = b"small file served by nginx over TLS\n";

/// The host's OpenSSL 3 (Debian 12).
const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

struct TlsNginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsNginx {
    /// nginx serving HTTPS with a fresh self-signed certificate; with
    /// `libdir`, it loads the libssl found there (LD_LIBRARY_PATH).
    fn start(libdir: Option<&Path>) -> TlsNginx {
        let dir = std::env::temp_dir().join(format!("masdeepflow-tls-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/small.txt"), SMALL).unwrap();
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)");
        assert!(status.success(), "openssl req failed");
        let port = free_port();
        let conf = format!(
            "daemon off;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n keepalive_requests 100000;\n\
             client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem; root {d}/www; }}\n}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = Command::new("nginx");
        cmd.arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf")).stdout(Stdio::null());
        if let Some(libdir) = libdir {
            cmd.env("LD_LIBRARY_PATH", libdir);
        }
        let mut child = cmd.spawn().expect("nginx (apt-get install nginx)");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {port} within 15 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsNginx { child, port, dir }
    }

    /// Graceful stop (SIGQUIT), waited for; nginx must exit normally.
    fn stop(mut self) {
        self.quit();
    }

    fn quit(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "nginx exited with {status}");
    }
}

impl Drop for TlsNginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Uprobe links of the agent's TLS programs (`ssl_*`) in the kernel.
fn ssl_links() -> usize {
    let out = Command::new("bpftool").args(["-j", "link", "show"]).output().expect("bpftool (apt-get install bpftool)");
    assert!(out.status.success(), "bpftool link show failed");
    let links: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool");
    let progs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let ssl: std::collections::HashSet<u64> =
        progs.iter().filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("ssl_"))).filter_map(|p| p["id"].as_u64()).collect();
    links.iter().filter(|l| l["prog_id"].as_u64().is_some_and(|id| ssl.contains(&id))).count()
}

/// Waits (bounded) until `ssl_links()` satisfies `ok`; returns the count.
fn wait_links(what: &str, secs: u64, ok: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let n = ssl_links();
        if ok(n) {
            return n;
        }
        assert!(Instant::now() < deadline, "{what}: {n} TLS uprobe links after {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the agent's log holds `line`.
fn wait_log(log: &Path, line: &str) {
    wait_log_within(log, line, 10);
}

fn wait_log_within(log: &Path, line: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l.ends_with(line)) {
            return;
        }
        assert!(Instant::now() < deadline, "not in the agent's log within {secs} s: {line}\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// curl over one keep-alive HTTPS connection: per URL (status, request
/// bytes, response header bytes, body bytes), and curl's pid.
fn curl(port: u16, paths: &[&str]) -> (Vec<(u16, u64, u64, u64)>, u32) {
    let child = Command::new("curl")
        .args(["-sk", "--http1.1", "-w", "%{http_code} %{size_request} %{size_header} %{size_download} %{num_connects}\\n"])
        .args(paths.iter().flat_map(|p| ["-o".to_string(), "/dev/null".to_string(), format!("https://127.0.0.1:{port}{p}")]))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl (apt-get install curl)");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<u64>> = text.lines().map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(rows.iter().map(|r| r[4]).sum::<u64>(), 1, "curl must reuse one keep-alive connection");
    (rows.iter().map(|r| (r[0] as u16, r[1], r[2], r[3])).collect(), pid)
}

/// Python: a GET with urllib, then one `SSL_write_ex` of a 20 000-byte
/// POST (more than one TLS record; nginx answers 404) on an `ssl` socket. Prints the GET's
/// status and body length, then the POST's request length, response
/// length and status.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys, urllib.request
port = int(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
r = urllib.request.urlopen(f"https://127.0.0.1:{port}/small.txt", context=ctx)
body = r.read()
print(r.status, len(body))
req = (f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 20000\r\nConnection: close\r\n\r\n").encode() + b"a" * 20000
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
s.sendall(req)
resp = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    resp += d
print(len(req), len(resp), int(resp.split(b" ")[1]))
"#;

fn http(events: &[Value], role: &str, pid: Option<u32>, port: u16, path: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "http" && e["role"] == role && e["dst"]["port"] == port && e["path"] == path)
        .filter(|e| pid.is_none_or(|p| e["process"]["pid"] == p))
        .cloned()
        .collect()
}

fn assert_tls(e: &Value) {
    assert_eq!((e["tls"].as_bool(), e["tls_library"].as_str()), (Some(true), Some("openssl")), "{e}");
    assert_eq!(e["error"], Value::Null, "{e}");
    assert_eq!(e["approximate"], false, "{e}");
}

/// nginx started before the agent; curl and Python started after it:
/// every exchange from both sides, with exact fields.
#[test]
fn nginx_curl_and_python_over_tls_from_both_sides() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let nginx = TlsNginx::start(None);
    let port = nginx.port;
    let port_arg = port.to_string();

    // `check` lists the library, its probed functions and nginx as a user.
    let out = Command::new(support::AGENT).arg("check").output().expect("masdeepflow check");
    let text = String::from_utf8_lossy(&out.stdout);
    let head = format!("tls [covered] {LIBSSL} used by ");
    let line = text.lines().find(|l| l.starts_with(&head)).unwrap_or_else(|| panic!("no `{head}` line in:\n{text}"));
    assert!(line.contains(&format!(" {} (nginx)", nginx.child.id())), "{line}");
    assert!(text.contains("    probed: SSL_write, SSL_read, SSL_write_ex, SSL_read_ex\n"), "{text}");

    let mut agent = Agent::start(&["--events", "http", "--port", &port_arg]);

    // curl: SSL_write / SSL_read, keep-alive.
    let (rows, curl_pid) = curl(port, &["/small.txt", "/missing"]);
    assert_eq!((rows[0].0, rows[0].3, rows[1].0), (200, SMALL.len() as u64, 404));
    for (path, row) in ["/small.txt", "/missing"].iter().zip(&rows) {
        let want = |e: &Value| e["type"] == "http" && e["path"] == *path && e["dst"]["port"] == port;
        agent.expect("curl's client exchange", |e| want(e) && e["role"] == "client" && e["process"]["pid"] == curl_pid);
        agent.expect("nginx's server exchange", |e| want(e) && e["role"] == "server");
        for role in ["client", "server"] {
            let found = http(&agent.events, role, if role == "client" { Some(curl_pid) } else { None }, port, path);
            assert_eq!(found.len(), 1, "{role} {path}: {found:?}");
            let e = &found[0];
            assert_tls(e);
            assert_eq!(e["method"], "GET");
            assert_eq!(e["status"].as_u64(), Some(row.0 as u64), "{e}");
            assert_eq!(e["request_bytes"].as_u64(), Some(row.1), "{role} {path} request bytes: {e}");
            assert_eq!(e["response_bytes"].as_u64(), Some(row.2 + row.3), "{role} {path} response bytes: {e}");
            if role == "server" {
                assert_eq!(e["process"]["comm"], "nginx");
            }
        }
    }

    // Python: urllib, then a 20 000-byte write on an ssl socket (_ex).
    let out = Command::new("python3").args(["-c", PYTHON_CLIENT, &port_arg]).stdout(Stdio::piped()).spawn().expect("python3");
    let py_pid = out.id();
    let out = out.wait_with_output().unwrap();
    assert!(out.status.success(), "python client failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<u64>> = text.lines().map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(lines[0], vec![200, SMALL.len() as u64]);
    let (post_len, post_resp_len, post_status) = (lines[1][0], lines[1][1], lines[1][2]);
    let post_head = format!("POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 20000\r\nConnection: close\r\n\r\n");
    assert_eq!((post_len, post_status), (post_head.len() as u64 + 20000, 404));

    let want = |path: &'static str, role: &'static str| {
        move |e: &Value| e["type"] == "http" && e["path"] == path && e["dst"]["port"] == port && e["role"] == role
    };
    agent.expect("python's GET", |e| want("/small.txt", "client")(e) && e["process"]["pid"] == py_pid);
    agent.expect("python's POST", |e| want("/upload", "client")(e) && e["process"]["pid"] == py_pid);
    agent.expect("nginx's POST", want("/upload", "server"));
    let get_client = http(&agent.events, "client", Some(py_pid), port, "/small.txt");
    assert_eq!(get_client.len(), 1, "{get_client:?}");
    let e = &get_client[0];
    assert_tls(e);
    assert_eq!((e["method"].as_str(), e["status"].as_u64(), e["process"]["comm"].as_str()), (Some("GET"), Some(200), Some("python3")));
    // The server's view of the same exchange: nginx saw two GETs of
    // /small.txt (curl's, Python's); Python's is the one with its bytes.
    let get_server: Vec<Value> =
        http(&agent.events, "server", None, port, "/small.txt").into_iter().filter(|s| s["src"]["port"] == e["src"]["port"]).collect();
    assert_eq!(get_server.len(), 1, "{get_server:?}");
    assert_tls(&get_server[0]);
    for field in ["request_bytes", "response_bytes", "status", "method"] {
        assert_eq!(get_server[0][field], e[field], "{field}: server {} client {e}", get_server[0]);
    }
    assert!(e["response_bytes"].as_u64().unwrap() > SMALL.len() as u64, "{e}");

    for role in ["client", "server"] {
        let found = http(&agent.events, role, if role == "client" { Some(py_pid) } else { None }, port, "/upload");
        assert_eq!(found.len(), 1, "{role} POST: {found:?}");
        let e = &found[0];
        assert_tls(e);
        assert_eq!((e["method"].as_str(), e["status"].as_u64()), (Some("POST"), Some(404)), "{e}");
        assert_eq!(e["response_bytes"].as_u64(), Some(post_resp_len), "{role} POST response bytes: {e}");
        if role == "client" {
            // One SSL_write_ex call of more than 16 KiB, counted whole.
            assert_eq!(e["request_bytes"].as_u64(), Some(post_len), "client POST request bytes: {e}");
        } else {
            // nginx answers the 404 after reading part of the body (and
            // discards the rest after): the exchange counts what it read
            // by then, as in the clear.
            let n = e["request_bytes"].as_u64().unwrap();
            assert!(n > post_len - 20000 && n < post_len, "server POST request bytes: {e}");
        }
    }

    let events = agent.stop();
    // No exchange was made of ciphertext: every http event on this port
    // is a TLS one.
    let on_port: Vec<&Value> = events.iter().filter(|e| e["type"] == "http" && e["dst"]["port"] == port).collect();
    assert_eq!(on_port.len(), 8, "{on_port:?}");
    assert!(on_port.iter().all(|e| e["tls"] == true));
    nginx.stop();
}

/// A server started after the agent, with its own copy of libssl (a file
/// no other process maps): found, attached, seen, and detached when it
/// exits; then nothing is left after the agent exits, by SIGINT or kill -9.
/// Found by listing /proc (`--events http`: no exec events), and from the
/// exec and exit events (with them, /proc is listed only every 10 s).
#[test]
fn a_server_started_after_the_agent_and_the_probes_lifecycle() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    wait_links("no agent running", 10, |n| n == 0);
    late_server("http");
    late_server("exec,exit,http");

    let agent = Agent::start(&["--events", "http"]);
    assert!(ssl_links() > 0);
    let (_, status, _) = agent.stop_with(libc::SIGKILL);
    assert_eq!(status.code(), None, "killed");
    wait_links("after kill -9", 10, |n| n == 0);
}

fn late_server(events: &str) {
    let libdir = std::env::temp_dir().join(format!("masdeepflow-tls-lib-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::copy(LIBSSL, libdir.join("libssl.so.3")).expect("Debian 12's libssl3");

    // The agent's log (its info lines name each file attached and
    // detached) goes to a file the test reads: the readiness signal.
    let log = libdir.join("agent.log");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("exec {} --events {events} 2>{}", support::AGENT, log.display())).env("RUST_LOG", "masdeepflow=info");
    let mut agent = Agent::start_command(cmd);
    // The host's libssl is attached before the agent says it started.
    assert!(ssl_links() > 0, "the host's libssl is not attached");

    let nginx = TlsNginx::start(Some(&libdir));
    let port = nginx.port;
    let copy = std::fs::canonicalize(libdir.join("libssl.so.3")).unwrap();
    // With exec events, found through nginx's exec: /proc is listed again
    // only 10 s after the agent started.
    let within = if events.contains("exec") { 5 } else { 10 };
    wait_log_within(&log, &format!("tls: attached {} (8 probes)", copy.display()), within);

    let (rows, curl_pid) = curl(port, &["/small.txt"]);
    assert_eq!((rows[0].0, rows[0].3), (200, SMALL.len() as u64));
    let want = |e: &Value| e["type"] == "http" && e["path"] == "/small.txt" && e["dst"]["port"] == port;
    let server = agent.expect("nginx's exchange", |e| want(e) && e["role"] == "server");
    let client = agent.expect("curl's exchange", |e| want(e) && e["role"] == "client" && e["process"]["pid"] == curl_pid);
    for e in [&server, &client] {
        assert_tls(e);
        assert_eq!((e["status"].as_u64(), e["request_bytes"].as_u64()), (Some(200), Some(rows[0].1)), "{e}");
        assert_eq!(e["response_bytes"].as_u64(), Some(rows[0].2 + rows[0].3), "{e}");
    }

    // Its last process gone, the copy is detached.
    nginx.stop();
    wait_log(&log, &format!("tls: detached {}", copy.display()));

    let events = agent.stop();
    assert!(events.iter().any(|e| e["type"] == "agent_stats"));
    wait_links("after SIGINT", 10, |n| n == 0);
    let _ = std::fs::remove_dir_all(&libdir);
}
