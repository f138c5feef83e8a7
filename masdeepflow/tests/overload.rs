//! Overload: with a tiny kernel ring buffer (agent stopped meanwhile), and
//! with a stalled stdout reader, flood execs, connections, HTTP requests
//! and MySQL commands. The traced
//! programs keep running, and per event family reported + counted-lost
//! equals the work generated, exactly (`--comm` is applied in the kernel,
//! so losses are counted for the flood's processes alone; the two tests
//! use different names and may run at once).
mod support;

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Agent, mariadb::MariaDb, require_root, servers::Nginx};

/// A symlink named `name` to `target`: processes started through it get
/// `name` as their command name.
fn named(name: &str, target: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("masdeepflow-overload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(target, &link).unwrap();
    link
}

fn flood_execs(program: &PathBuf, n: usize) {
    for i in 0..n {
        let status = Command::new(program).arg(i.to_string()).status().unwrap();
        assert!(status.success(), "a traced program failed");
    }
}

fn stats(events: &[Value]) -> &Value {
    events.iter().rev().find(|e| e["type"] == "agent_stats").expect("final agent_stats")
}

fn lost(stats: &Value, ty: &str) -> u64 {
    stats["lost"]["kernel_ring_buffer"][ty].as_u64().unwrap_or(0) + stats["lost"]["user_queue"][ty].as_u64().unwrap_or(0)
}

fn count(events: &[Value], ty: &str, comm: &str) -> u64 {
    events.iter().filter(|e| e["type"] == ty && e["process"]["comm"] == comm).count() as u64
}

fn pause(agent: &Agent, signal: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, signal) };
}

#[test]
fn full_ring_buffer_exact_accounting() {
    const N: usize = 400;
    let program = named("mdf-flood", "/bin/true");
    let agent = Agent::start(&["--events", "exec,exit", "--comm", "mdf-flood", "--ring-buffer-size", "16384"]);
    // The agent does not read while stopped: the kernel must drop and count.
    pause(&agent, libc::SIGSTOP);
    flood_execs(&program, N);
    pause(&agent, libc::SIGCONT);
    let events = agent.stop();
    let s = stats(&events);
    for ty in ["process_exec", "process_exit"] {
        let (seen, lost) = (count(&events, ty, "mdf-flood"), lost(s, ty));
        assert_eq!(seen + lost, N as u64, "{ty}: {seen} reported + {lost} lost");
    }
    assert!(s["lost"]["kernel_ring_buffer"]["process_exec"].as_u64().unwrap() > 0, "the ring buffer never filled: the test proves nothing");

    // Connections: client side owned by `mdf-tcpflood` (the server, nginx, is
    // filtered out in the kernel).
    const C: usize = 300;
    let nginx = Nginx::start();
    let python = named("mdf-tcpflood", "/usr/bin/python3");
    let agent = Agent::start(&["--events", "tcp", "--comm", "mdf-tcpflood", "--ring-buffer-size", "8192"]);
    pause(&agent, libc::SIGSTOP);
    let script = format!("{}/tests/helpers/raw_http.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python).args([&script, "churn", &nginx.port.to_string(), &C.to_string()]).output().unwrap();
    assert!(out.status.success(), "the flood client failed");
    pause(&agent, libc::SIGCONT);
    let events = agent.stop();
    let s = stats(&events);
    let connects = count(&events, "tcp_connect", "mdf-tcpflood");
    let closes =
        events.iter().filter(|e| e["type"] == "tcp_close" && e["role"] == "client" && e["process"]["comm"] == "mdf-tcpflood").count()
            as u64;
    assert_eq!(connects + lost(s, "tcp_connect"), C as u64, "connects: {connects} reported");
    assert_eq!(closes + lost(s, "tcp_close"), C as u64, "closes: {closes} reported");
    assert_eq!(lost(s, "tcp_accept"), 0, "nginx's accepts are filtered before the ring buffer");
    assert!(lost(s, "tcp_connect") + lost(s, "tcp_close") > 0, "the ring buffer never filled");
    drop(nginx);
    http_flood();
}

/// 2,000 keep-alive requests over 4 connections while the agent, with a
/// 16 KiB ring buffer, is stopped and resumed every 20 ms (so losses fall
/// between delivered records of the same connections): client and server
/// side, every exchange is reported with its own response (200 for
/// /small.txt, 404 otherwise) or counted in `lost.kernel_ring_buffer.http`,
/// exactly.
fn http_flood() {
    const N: usize = 2000;
    // A name of its own: the other test's nginx must not be counted.
    let nginx = Nginx::start_as(&named("mdf-nginxflood", "/usr/sbin/nginx"));
    let python = named("mdf-httpflood", "/usr/bin/python3");
    let mut agent = Agent::start(&[
        "--events",
        "http",
        "--comm",
        "mdf-httpflood,mdf-nginxflood",
        "--ring-buffer-size",
        "16384",
        "--stats-interval",
        "1s",
    ]);
    let script = format!("{}/tests/helpers/raw_http.py", env!("CARGO_MANIFEST_DIR"));
    let mut client = Command::new(&python)
        .args([&script, "keepalive", &nginx.port.to_string(), "4", &N.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let toggler = {
        let (flooding, pid) = (flooding.clone(), agent.pid() as i32);
        std::thread::spawn(move || {
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(Duration::from_millis(20));
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut line = String::new();
    BufReader::new(client.stdout.take().unwrap()).read_line(&mut line).unwrap();
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    toggler.join().unwrap();
    pause(&agent, libc::SIGCONT);
    assert_eq!(line.trim(), "done", "the flood client failed");
    // Two stats lines after the flood: the ring buffer has been drained.
    let seen = agent_stats_count(&agent.events);
    agent.wait_until("two agent_stats after the flood", Duration::from_secs(20), |ev| agent_stats_count(ev) >= seen + 2);
    // Now the connections close; their closes carry the last losses.
    drop(client.stdin.take());
    assert!(client.wait().unwrap().success());
    agent.wait_until("every http connection closed", Duration::from_secs(20), |ev| {
        ev.iter().rev().find(|e| e["type"] == "agent_stats").is_some_and(|s| s["tables"]["http_connections"] == 0)
            && agent_stats_count(ev) > seen + 2
    });
    let events = agent.stop();
    let s = stats(&events);
    let mut reported = 0;
    for e in events.iter().filter(|e| e["type"] == "http") {
        let path = e["path"].as_str().unwrap();
        let want = if path.starts_with("/small.txt?n=") { 200 } else { 404 };
        assert_eq!(e["status"], want, "mispaired: {e}");
        assert_eq!(e["error"], Value::Null, "{e}");
        reported += 1;
    }
    let lost_http = lost(s, "http");
    assert_eq!(reported + lost_http, 2 * N as u64, "{reported} exchanges reported + {lost_http} lost, both sides");
    eprintln!("http flood: {reported} exchanges reported, {lost_http} lost, {} payload records lost", lost(s, "payload"));
    assert!(lost_http > 0 && lost(s, "payload") > 0, "the ring buffer never filled: the test proves nothing");
}

fn agent_stats_count(events: &[Value]) -> usize {
    events.iter().filter(|e| e["type"] == "agent_stats").count()
}

#[test]
fn stalled_stdout_exact_accounting_and_bounded_memory() {
    const N: usize = 600;
    const REQUESTS: usize = 600;
    require_root();
    let program = named("mdf-stall", "/bin/true");
    // Client side only: nginx's name would take in the other test's server.
    let nginx = Nginx::start();
    let python = named("mdf-httpstall", "/usr/bin/python3");
    let mut child = Command::new(support::AGENT)
        .args(["--events", "exec,exit,tcp,http", "--comm", "mdf-stall,mdf-httpstall", "--queue-size", "20", "--stats-interval", "3600s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("agent_start"), "{first}");
    // Nobody reads stdout now: the pipe, then the queue, fill up.
    let t0 = Instant::now();
    flood_execs(&program, N);
    let script = format!("{}/tests/helpers/raw_http.py", env!("CARGO_MANIFEST_DIR"));
    let client = Command::new(&python)
        .args([&script, "keepalive", &nginx.port.to_string(), "4", &REQUESTS.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(client.status.success() && client.stdout == b"done\n", "the HTTP client failed");
    assert!(t0.elapsed() < Duration::from_secs(60), "the traced programs were slowed down");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
    assert!(rss_kb < 64 * 1024, "agent RSS {rss_kb} kB while stdout is stalled");
    // Read again, stop, and account.
    let reader = std::thread::spawn(move || {
        out.lines().map_while(Result::ok).map(|l| serde_json::from_str::<Value>(&l).unwrap()).collect::<Vec<_>>()
    });
    // Let the agent take in the last records before the stop signal.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let events = reader.join().unwrap();
    assert!(child.wait().unwrap().success());
    let s = stats(&events);
    for ty in ["process_exec", "process_exit"] {
        // The flood and the HTTP client's own exec.
        let (seen, lost) = (count(&events, ty, "mdf-stall") + count(&events, ty, "mdf-httpstall"), lost(s, ty));
        assert_eq!(seen + lost, N as u64 + 1, "{ty}: {seen} reported + {lost} lost");
    }
    for (ty, work) in [("tcp_connect", 4), ("tcp_close", 4), ("http", REQUESTS as u64)] {
        let (seen, lost) = (count(&events, ty, "mdf-httpstall"), lost(s, ty));
        assert_eq!(seen + lost, work, "{ty}: {seen} reported + {lost} lost");
    }
    for ty in ["process_exec", "http"] {
        assert!(s["lost"]["user_queue"][ty].as_u64().unwrap() > 0, "the queue never dropped {ty}: the test proves nothing");
    }
}

/// 4 `mariadb` CLI sessions of 1,500 queries each against a real MariaDB
/// while the agent, with a 16 KiB ring buffer, is stopped and resumed
/// every 20 ms: client and server side, every command is reported with
/// its own response (`SELECT n FROM seq5000 WHERE n <= k` has exactly `k`
/// rows) or counted in `lost.kernel_ring_buffer.mysql`, exactly.
#[test]
fn mysql_flood_exact_accounting() {
    const CLIENTS: usize = 4;
    const QUERIES: usize = 1500;
    let db = MariaDb::start_as(&named("mdf-mydflood", "/usr/sbin/mariadbd"));
    let cli = named("mdf-myflood", "/usr/bin/mariadb");
    let mut agent = Agent::start(&[
        "--events",
        "mysql",
        "--comm",
        "mdf-myflood,mdf-mydflood",
        "--port",
        &db.port.to_string(),
        "--ring-buffer-size",
        "16384",
        "--stats-interval",
        "1s",
    ]);
    let script: String = (0..QUERIES).map(|i| format!("SELECT n FROM seq5000 WHERE n <= {};\n", i % 7 + 1)).collect();
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let toggler = {
        let (flooding, pid) = (flooding.clone(), agent.pid() as i32);
        std::thread::spawn(move || {
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(Duration::from_millis(20));
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut c = Command::new(&cli)
                .args(["-h127.0.0.1", "-uapp", "-psecret", "--ssl=0", "-N", "shop"])
                .arg(format!("-P{}", db.port))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = c.stdin.take().unwrap();
            let script = script.clone();
            std::thread::spawn(move || {
                use std::io::Write as _;
                stdin.write_all(script.as_bytes()).unwrap();
            });
            c
        })
        .collect();
    for mut c in clients {
        assert!(c.wait().unwrap().success(), "a flood client failed");
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    toggler.join().unwrap();
    pause(&agent, libc::SIGCONT);
    // The closes carry the last losses; then two stats lines with no
    // connection left.
    let seen = agent_stats_count(&agent.events);
    agent.wait_until("every mysql connection closed", Duration::from_secs(30), |ev| {
        ev.iter().rev().find(|e| e["type"] == "agent_stats").is_some_and(|s| s["tables"]["mysql_connections"] == 0)
            && agent_stats_count(ev) > seen + 2
    });
    let events = agent.stop();
    let s = stats(&events);
    let mut reported = 0;
    for e in events.iter().filter(|e| e["type"] == "mysql") {
        assert_eq!(e["error"], Value::Null, "{e}");
        match e["command"].as_str() {
            Some("COM_QUERY") => {
                let k: u64 = e["statement"].as_str().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
                assert_eq!(e["rows"].as_u64(), Some(k), "mispaired: {e}");
            }
            Some("COM_QUIT") => {}
            other => panic!("unexpected command {other:?}: {e}"),
        }
        reported += 1;
    }
    let lost_mysql = lost(s, "mysql");
    let per = |role: &str, cmd: &str| events.iter().filter(|e| e["type"] == "mysql" && e["role"] == role && e["command"] == cmd).count();
    eprintln!(
        "mysql flood: {reported} commands reported (client {} + {} quits, server {} + {} quits), {lost_mysql} lost, {} payload records lost",
        per("client", "COM_QUERY"),
        per("client", "COM_QUIT"),
        per("server", "COM_QUERY"),
        per("server", "COM_QUIT"),
        lost(s, "payload")
    );
    // Each session: its queries and COM_QUIT, both sides.
    let work = 2 * CLIENTS as u64 * (QUERIES as u64 + 1);
    assert_eq!(reported + lost_mysql, work, "{reported} commands reported + {lost_mysql} lost, both sides");
    assert!(lost_mysql > 0 && lost(s, "payload") > 0, "the ring buffer never filled: the test proves nothing");
}
