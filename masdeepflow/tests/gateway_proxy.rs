//! The L4 proxy (`[[proxy]]`), end to end, once per data path (`sockmap`
//! and `userspace`) so they are proven equivalent: checksummed bulk both
//! ways at once with a half-close, bytes the backend sends before the
//! proxy joined the sockets (early data), nginx with curl and wrk, resets
//! both ways, refused backends, a backend killed mid-stream, a slow reader,
//! and the drain on SIGTERM. The test's own threads are client and backend
//! where exact bytes and timing must be controlled; nginx, curl and wrk are
//! the real ones. Addresses are 127.0.0.1 only.
mod gateway_support;
mod support;

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use gateway_support::{Gateway, free_port};
use serde_json::Value;
use support::servers::{BIG, Nginx, SMALL};

const DATAPATHS: [&str; 2] = ["sockmap", "userspace"];

/// A child process killed and reaped when dropped (also when a test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proxy(name: &str, listen: u16, backends: &[String], datapath: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{b}\" }}")).collect();
    format!(
        "[[proxy]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{listen}\"\nbackends = [ {} ]\ndatapath = \"{datapath}\"\nconnect_timeout = \"1s\"\n",
        list.join(", ")
    )
}

fn start(config: &str, args: &[&str], datapath: &str) -> Gateway {
    let mut gw = Gateway::start(config, args);
    let s = gw.expect("proxy_start", |v| v["type"] == "proxy_start");
    assert_eq!(s["datapath"], datapath, "{s}");
    gw
}

/// xorshift bytes: position-dependent, so a lost, repeated or reordered
/// chunk changes the digest.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

/// FNV-1a over a stream.
#[derive(Clone, Copy)]
struct Digest(u64, u64);

impl Digest {
    fn new() -> Digest {
        Digest(0xcbf29ce484222325, 0)
    }
    fn update(&mut self, buf: &[u8]) {
        for &b in buf {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100000001b3);
        }
        self.1 += buf.len() as u64;
    }
}

fn expected(seed: u64, len: u64) -> Digest {
    let mut p = Pattern(seed);
    let mut d = Digest::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..k]);
        d.update(&buf[..k]);
        left -= k as u64;
    }
    d
}

fn send_pattern(s: &mut TcpStream, seed: u64, len: u64) -> std::io::Result<()> {
    let mut p = Pattern(seed);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..k]);
        s.write_all(&buf[..k])?;
        left -= k as u64;
    }
    Ok(())
}

fn read_digest(s: &mut TcpStream) -> std::io::Result<Digest> {
    let mut d = Digest::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(d);
        }
        d.update(&buf[..n]);
    }
}

fn connection(gw: &mut Gateway, from: usize) -> Value {
    gw.expect_after(from, "gateway_connection", |v| v["type"] == "gateway_connection")
}

/// Backend: sends `down` bytes at once (before the proxy can have joined
/// the sockets: early data), reads the client's bytes to EOF at the same
/// time, then sends `after` more bytes after the client's half-close, then
/// closes. Returns what it read.
fn half_close_backend(l: TcpListener, down: u64, after: u64) -> thread::JoinHandle<Digest> {
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut r = s.try_clone().unwrap();
        let reader = thread::spawn(move || read_digest(&mut r).unwrap());
        send_pattern(&mut s, 2, down).unwrap();
        let got = reader.join().unwrap();
        // The client has shut down its side; keep streaming.
        send_pattern(&mut s, 3, after).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        got
    })
}

#[test]
fn bulk_both_ways_half_close_and_early_data() {
    const UP: u64 = 1 << 30;
    const DOWN: u64 = 1 << 30;
    const AFTER: u64 = 8 << 20;
    for datapath in DATAPATHS {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = l.local_addr().unwrap().to_string();
        let port = free_port();
        let mut gw = start(&proxy("bulk", port, std::slice::from_ref(&backend), datapath), &[], datapath);
        let b = half_close_backend(l, DOWN, AFTER);
        let t0 = Instant::now();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut r = c.try_clone().unwrap();
        let reader = thread::spawn(move || read_digest(&mut r).unwrap());
        send_pattern(&mut c, 1, UP).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let down = reader.join().unwrap();
        let up = b.join().unwrap();
        eprintln!("{datapath}: 1 GiB each way at once in {:?}", t0.elapsed());
        let want_up = expected(1, UP);
        assert_eq!((up.0, up.1), (want_up.0, want_up.1), "{datapath}: client to backend");
        // The backend's bytes before and after the half-close, in order.
        let mut want_down = Digest::new();
        for (seed, len) in [(2, DOWN), (3, AFTER)] {
            let mut p = Pattern(seed);
            let mut buf = vec![0u8; 1 << 16];
            let mut left = len;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                p.fill(&mut buf[..k]);
                want_down.update(&buf[..k]);
                left -= k as u64;
            }
        }
        assert_eq!((down.0, down.1), (want_down.0, want_down.1), "{datapath}: backend to client");
        let e = connection(&mut gw, 0);
        assert_eq!(e["proxy"], "bulk");
        assert_eq!(e["backend"], backend.as_str());
        assert_eq!(e["datapath"], datapath);
        assert_eq!(e["end"], "closed", "{e}");
        assert_eq!(e["closed_by"], "client", "{e}");
        assert_eq!(e["bytes_to_backend"], UP, "{e}");
        assert_eq!(e["bytes_to_client"], DOWN + AFTER, "{e}");
        assert_eq!(e["client"], c.local_addr().unwrap().to_string());
        gw.stop();
    }
}

#[test]
fn nginx_with_curl_and_wrk() {
    for datapath in DATAPATHS {
        let n1 = Nginx::start();
        let n2 = Nginx::start();
        let backends = [format!("127.0.0.1:{}", n1.port), format!("127.0.0.1:{}", n2.port)];
        let port = free_port();
        let gw = start(&proxy("web", port, &backends, datapath), &[], datapath);
        let out = Command::new("curl").args(["-sS", "--max-time", "10"]).arg(format!("http://127.0.0.1:{port}/big.bin")).output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, vec![b'b'; BIG], "{datapath}: /big.bin through the proxy");
        let out =
            Command::new("curl").args(["-sS", "--max-time", "10"]).arg(format!("http://127.0.0.1:{port}/small.txt")).output().unwrap();
        assert_eq!(out.stdout, SMALL, "{datapath}");
        // wrk, keep-alive, then a new connection per request: no errors.
        for extra in [&[][..], &["-H", "Connection: close"][..]] {
            let out = Command::new("wrk")
                .args(["-t1", "-c16", "-d2s"])
                .args(extra)
                .arg(format!("http://127.0.0.1:{port}/small.txt"))
                .output()
                .expect("wrk (apt-get install wrk)");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            assert!(!text.contains("Socket errors") && !text.contains("Non-2xx"), "{datapath} {extra:?}: {text}");
            let requests: u64 = text
                .lines()
                .find_map(|l| l.trim().split_once(" requests in "))
                .map(|(n, _)| n.trim().parse().unwrap())
                .expect("wrk's count");
            assert!(requests > 100, "{text}");
        }
        let events = gw.stop();
        let conns: Vec<&Value> = events.iter().filter(|v| v["type"] == "gateway_connection").collect();
        assert!(conns.len() > 100, "{datapath}: {} connection lines", conns.len());
        let bad: Vec<&&Value> = conns.iter().filter(|v| v["end"] != "closed" && v["end"] != "reset").collect();
        assert!(bad.is_empty(), "{datapath}: {bad:?}");
        let per = |b: &str| conns.iter().filter(|v| v["backend"] == b).count();
        assert!(per(&backends[0]).abs_diff(per(&backends[1])) <= 1, "{datapath}: round robin");
        // The first curl: exactly the file plus nginx's headers went back.
        let first = conns[0];
        assert_eq!(first["datapath"], datapath);
        assert!(first["bytes_to_client"].as_u64().unwrap() > BIG as u64, "{first}");
    }
}

#[test]
fn resets_refusals_and_a_killed_backend() {
    for datapath in DATAPATHS {
        // A backend that resets the connection (SO_LINGER 0) after reading.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let resetter = l.local_addr().unwrap().to_string();
        let refused = format!("127.0.0.1:{}", free_port());
        let port = free_port();
        let mut gw = start(&proxy("rst", port, &[refused.clone(), resetter.clone()], datapath), &[], datapath);
        let b = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            linger_zero(&s);
            drop(s);
        });
        // Round robin starts at the refused backend: it is skipped.
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"hello").unwrap();
        b.join().unwrap();
        let mut buf = [0u8; 16];
        let r = c.read(&mut buf);
        assert!(matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset), "{datapath}: the client sees the reset: {r:?}");
        let e = connection(&mut gw, 0);
        assert_eq!(
            (e["end"].as_str(), e["closed_by"].as_str(), e["backend"].as_str()),
            (Some("reset"), Some("backend"), Some(resetter.as_str())),
            "{e}"
        );
        assert_eq!(e["bytes_to_backend"], 5, "{e}");

        // The client resets: the backend sees ECONNRESET.
        let l = TcpListener::bind(resetter.as_str()).unwrap();
        let from = gw.events.len();
        let b = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).unwrap();
            let mut rest = [0u8; 16];
            s.read(&mut rest).map_err(|e| e.kind())
        });
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"abc").unwrap();
        thread::sleep(Duration::from_millis(200));
        linger_zero(&c);
        drop(c);
        assert_eq!(b.join().unwrap(), Err(ErrorKind::ConnectionReset), "{datapath}: the backend sees the client's reset");
        let e = connection(&mut gw, from);
        assert_eq!((e["end"].as_str(), e["closed_by"].as_str()), (Some("reset"), Some("client")), "{e}");

        // No backend accepts: a clean close, backend_unreachable.
        let from = gw.events.len();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.read(&mut buf).unwrap(), 0, "{datapath}: EOF when no backend accepts");
        let e = connection(&mut gw, from);
        assert_eq!(e["end"], "backend_unreachable", "{e}");
        assert_eq!(e["error"], "ECONNREFUSED", "{e}");

        // A backend process killed with SIGKILL mid-stream: the client's
        // read ends at once (EOF or reset), never hangs.
        let py = "import socket,sys\nl=socket.socket();l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  l.bind(('127.0.0.1',int(sys.argv[1])));l.listen(8);print('ready',flush=True)\n\
                  c,_=l.accept()\nwhile True: c.sendall(b'x'*65536)\n";
        let bport: u16 = resetter.rsplit(':').next().unwrap().parse().unwrap();
        let mut child = Killed(Command::new("python3").args(["-c", py, &bport.to_string()]).stdout(Stdio::piped()).spawn().unwrap());
        let mut line = [0u8; 6];
        child.0.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
        let from = gw.events.len();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        while got < 4 << 20 {
            got += c.read(&mut buf).unwrap();
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let killed = Instant::now();
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{datapath}: reading after the backend died: {e}"),
            }
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "{datapath}: the end reached the client in {:?}", killed.elapsed());
        // The client closes its side too: the connection ends.
        drop(c);
        let e = connection(&mut gw, from);
        assert!(e["end"] == "closed" || e["end"] == "reset", "{e}");
        assert_eq!(e["bytes_to_client"].as_u64().unwrap() as usize, got, "{datapath}: counted what the client got: {e}");
        gw.stop();
    }
}

/// SO_LINGER {1, 0} on `s`: its close sends an RST.
fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a linger struct on our socket.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn slow_reader_and_drain_on_sigterm() {
    for datapath in DATAPATHS {
        const TOTAL: u64 = 32 << 20;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = l.local_addr().unwrap().to_string();
        let port = free_port();
        let mut gw = start(&proxy("slow", port, std::slice::from_ref(&backend), datapath), &["--drain-timeout", "2s"], datapath);
        let b = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            send_pattern(&mut s, 7, TOTAL).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            // A second connection that never ends (for the drain).
            let (s2, _) = l.accept().unwrap();
            s2
        });
        // A slow reader with a small receive buffer.
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = c;
        let mut d = Digest::new();
        let mut buf = vec![0u8; 4096];
        let t0 = Instant::now();
        let mut reads = 0u64;
        loop {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            d.update(&buf[..n]);
            reads += 1;
            if reads.is_multiple_of(256) && t0.elapsed() < Duration::from_secs(2) {
                thread::sleep(Duration::from_millis(10));
            }
        }
        let want = expected(7, TOTAL);
        assert_eq!((d.0, d.1), (want.0, want.1), "{datapath}: slow reader got every byte in order");
        drop(c);
        let e = connection(&mut gw, 0);
        assert_eq!((e["end"].as_str(), e["bytes_to_client"].as_u64()), (Some("closed"), Some(TOTAL)), "{e}");

        // Drain: a connection open at SIGTERM is reset after --drain-timeout.
        let mut c2 = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _s2 = b.join().unwrap();
        c2.write_all(b"ping").unwrap();
        thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let (events, status, err) = gw.stop_with(libc::SIGTERM);
        assert!(status.success(), "{err}");
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10), "{datapath}: drained for {waited:?}");
        let e = events.iter().rfind(|v| v["type"] == "gateway_connection").unwrap();
        assert_eq!(
            (e["end"].as_str(), e["closed_by"].as_str(), e["bytes_to_backend"].as_u64()),
            (Some("timeout"), Some("proxy"), Some(4)),
            "{e}"
        );
        c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b4 = [0u8; 4];
        assert!(matches!(c2.read(&mut b4), Err(e) if e.kind() == ErrorKind::ConnectionReset), "{datapath}: reset after the drain");
    }
}

#[test]
fn unfinished_tables_are_refused_with_one_line() {
    let dir = std::env::temp_dir().join(format!("mdf-proxy-reject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.toml");
    std::fs::write(&path, "[accelerate]\nenabled = true\n").unwrap();
    for flag in ["--config", "--check"] {
        let out = Command::new(gateway_support::BIN).args(["gateway", flag]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("[accelerate]") && err.contains("not available"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iperf3_bidir_through_both_data_paths() {
    for datapath in DATAPATHS {
        let sport = free_port();
        let server = Killed(
            Command::new("iperf3")
                .args(["-s", "-B", "127.0.0.1", "-p", &sport.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .expect("iperf3 (apt-get install iperf3)"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", sport)).is_err() {
            assert!(Instant::now() < deadline, "iperf3 server did not listen");
            thread::sleep(Duration::from_millis(20));
        }
        let port = free_port();
        let gw = start(&proxy("iperf", port, &[format!("127.0.0.1:{sport}")], datapath), &[], datapath);
        let out =
            Command::new("iperf3").args(["-c", "127.0.0.1", "-p", &port.to_string(), "--bidir", "-t", "3", "-J"]).output().expect("iperf3");
        drop(server);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{datapath}: iperf3 failed: {text}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let end = &v["end"];
        for (sent, received) in [("sum_sent", "sum_received"), ("sum_sent_bidir_reverse", "sum_received_bidir_reverse")] {
            let (s, r) = (end[sent]["bytes"].as_u64().unwrap(), end[received]["bytes"].as_u64().unwrap());
            // (iperf3's sender and receiver stop counting at slightly
            // different moments; exact bytes are the other tests' job.)
            assert!(r > 10 << 20 && r <= s, "{datapath}: {sent} {s}, {received} {r}");
        }
        let events = gw.stop();
        let conns: Vec<&Value> = events.iter().filter(|v| v["type"] == "gateway_connection").collect();
        assert_eq!(conns.len(), 3, "{datapath}: control and two data connections: {conns:?}");
        for c in &conns {
            // A stream closed with unread bytes at the end of the test is reset.
            assert!(c["end"] == "closed" || c["end"] == "reset", "{datapath}: {c}");
        }
        let up: u64 = conns.iter().map(|c| c["bytes_to_backend"].as_u64().unwrap()).max().unwrap();
        let down: u64 = conns.iter().map(|c| c["bytes_to_client"].as_u64().unwrap()).max().unwrap();
        // The proxy forwarded at least what each receiver counted and at
        // most what each sender wrote: at the end the server closes its
        // streams with the client's last bytes still in flight (in the
        // client's send queue or the proxy's receive queue), and those are
        // reset, never forwarded.
        // Each data stream starts with iperf3's 37-byte cookie from the
        // client, which neither side counts.
        const COOKIE: u64 = 37;
        let bytes = |k: &str| end[k]["bytes"].as_u64().unwrap();
        assert!((bytes("sum_received") + COOKIE..=bytes("sum_sent") + COOKIE).contains(&up), "{datapath}: to backend {up}: {end}");
        assert!(
            (bytes("sum_received_bidir_reverse")..=bytes("sum_sent_bidir_reverse")).contains(&down),
            "{datapath}: to client {down}: {end}"
        );
    }
}

/// Raises this process's soft RLIMIT_NOFILE to the hard one (children
/// inherit it); returns the hard limit.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r), 0);
        r.rlim_cur = r.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const r), 0);
    }
    r.rlim_max
}

/// The gateway's maps that hold per-connection entries (hash maps and
/// sockhashes), found through the process's own descriptors
/// (/proc/PID/fdinfo: map_id), named by bpftool.
fn connection_tables(pid: u32) -> Vec<(u64, String)> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("map_id:")) {
            ids.push(id.trim().parse::<u64>().unwrap());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let mut tables = Vec::new();
    for id in ids {
        let out = Command::new("bpftool").args(["-j", "map", "show", "id", &id.to_string()]).output().expect("bpftool");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if matches!(v["type"].as_str(), Some("hash" | "lru_hash" | "sockhash" | "sockmap")) {
            tables.push((id, v["name"].as_str().unwrap_or("").to_string()));
        }
    }
    assert!(tables.iter().any(|(_, n)| n == "GW_PROXY_SOCKS"), "{tables:?}");
    tables
}

/// Entries of each table, by name.
fn table_entries(tables: &[(u64, String)]) -> std::collections::BTreeMap<String, usize> {
    tables
        .iter()
        .map(|(id, name)| {
            let out = Command::new("bpftool").args(["-j", "map", "dump", "id", &id.to_string()]).output().expect("bpftool");
            assert!(out.status.success(), "bpftool map dump {name}: {}", String::from_utf8_lossy(&out.stderr));
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            (name.clone(), v.as_array().map_or(0, Vec::len))
        })
        .collect()
}

/// A Python echo backend on a selectors (epoll) loop; exits after `n`
/// connections have closed, printing `closed N`; fails if nothing happens
/// for 60 s.
const ECHO_MANY: &str = r#"import selectors,socket,sys,resource
h=resource.getrlimit(resource.RLIMIT_NOFILE)[1];resource.setrlimit(resource.RLIMIT_NOFILE,(h,h))
n=int(sys.argv[2]);l=socket.socket();l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
l.bind(('127.0.0.1',int(sys.argv[1])));l.listen(4096);l.setblocking(False)
sel=selectors.DefaultSelector();sel.register(l,selectors.EVENT_READ);closed=0
print('ready',flush=True)
while closed<n:
 ev=sel.select(timeout=60)
 if not ev: sys.exit('stalled with %d closed'%closed)
 for k,_ in ev:
  if k.fileobj is l:
   while True:
    try: c,_=l.accept()
    except BlockingIOError: break
    c.setblocking(False);sel.register(c,selectors.EVENT_READ)
  else:
   c=k.fileobj
   try: d=c.recv(65536)
   except ConnectionError: d=b''
   if d: c.sendall(d)
   else: sel.unregister(c);c.close();closed+=1
print('closed',closed,flush=True)
"#;

/// Waits (bounded) for `child` to exit; its status.
fn wait_bounded(child: &mut Killed, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the child did not exit within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ten_thousand_concurrent_connections_and_tables_back_to_baseline() {
    // The gateway holds two descriptors per connection, plus its own. Root
    // without CAP_SYS_RESOURCE cannot raise the hard limit: where it is
    // below what 10,000 need, the test runs as many as it allows and says so.
    let hard = raise_nofile();
    let n = 10_000.min((hard.saturating_sub(100) / 2) as usize);
    if n < 10_000 {
        eprintln!("RLIMIT_NOFILE hard limit {hard}: {n} concurrent connections, not 10,000");
    }
    assert!(n >= 9_000, "hard RLIMIT_NOFILE {hard} is too low for this test");
    for datapath in DATAPATHS {
        let bport = free_port();
        let mut echo = Killed(
            Command::new("python3").args(["-c", ECHO_MANY, &bport.to_string(), &n.to_string()]).stdout(Stdio::piped()).spawn().unwrap(),
        );
        let mut line = [0u8; 6];
        echo.0.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
        let port = free_port();
        let mut gw = start(&proxy("many", port, &[format!("127.0.0.1:{bport}")], datapath), &[], datapath);
        let tables = connection_tables(gw.child.id());
        let baseline = table_entries(&tables);
        let t0 = Instant::now();
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            assert!(t0.elapsed() < Duration::from_secs(120), "{datapath}: {i} connections in 120 s");
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(format!("{i:08}").as_bytes()).unwrap();
            clients.push(c);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = [0u8; 8];
            c.read_exact(&mut buf).unwrap_or_else(|e| panic!("{datapath}: connection {i}: {e}"));
            assert_eq!(&buf, format!("{i:08}").as_bytes(), "{datapath}: connection {i}");
        }
        eprintln!("{datapath}: {n} connections open and echoed in {:?}", t0.elapsed());
        let open = table_entries(&tables);
        eprintln!("{datapath}: tables at start {baseline:?}, with every connection open {open:?}");
        let in_map = if datapath == "sockmap" { 2 * n } else { 0 };
        assert_eq!(open["GW_PROXY_SOCKS"], baseline["GW_PROXY_SOCKS"] + in_map, "{datapath}: {open:?}");
        drop(clients);
        let from = gw.events.len();
        let mut ended = 0;
        while ended < n {
            let e = gw.expect_after(from + ended, "gateway_connection", |v| v["type"] == "gateway_connection");
            assert_eq!(
                (e["end"].as_str(), e["bytes_to_backend"].as_u64(), e["bytes_to_client"].as_u64()),
                (Some("closed"), Some(8), Some(8)),
                "{e}"
            );
            ended = gw.events[from..].iter().filter(|v| v["type"] == "gateway_connection").count();
        }
        assert_eq!(ended, n, "{datapath}");
        let status = wait_bounded(&mut echo, Duration::from_secs(30));
        assert!(status.success(), "{datapath}: the echo backend: {status}");
        let mut out = String::new();
        echo.0.stdout.as_mut().unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out.trim(), format!("closed {n}"), "{datapath}");
        // Every table back to where it started (bounded wait: the last
        // closes are processed after their events are written).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = table_entries(&tables);
            if now == baseline {
                break;
            }
            assert!(Instant::now() < deadline, "{datapath}: tables {now:?}, baseline {baseline:?}");
            thread::sleep(Duration::from_millis(100));
        }
        gw.stop();
    }
}

/// Both ends in one Python selectors (epoll) loop, through the proxy: each
/// round one side sends a message and the other must be woken within 5 s,
/// see FIONREAD > 0 when woken and read exactly the message; no socket is
/// reported readable without data; then a half-close each way. Prints
/// `ok ROUNDS UP DOWN` (bytes client to backend and back).
const SELECTOR_READINESS: &str = r#"import selectors,socket,sys,fcntl,termios,array,os
bport,pport=int(sys.argv[1]),int(sys.argv[2])
l=socket.socket();l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);l.bind(('127.0.0.1',bport));l.listen(1)
print('ready',flush=True);sys.stdin.readline()
c=socket.create_connection(('127.0.0.1',pport));b,_=l.accept()
sel=selectors.EpollSelector()
sel.register(c,selectors.EVENT_READ);sel.register(b,selectors.EVENT_READ)
def avail(s):
    a=array.array('i',[0]);fcntl.ioctl(s.fileno(),termios.FIONREAD,a,True);return a[0]
def fail(m): sys.exit(m)
def receive(dst,n):
    got=bytearray()
    while len(got)<n:
        ev=sel.select(timeout=5)
        if not ev: fail('no wake-up after %d of %d bytes, FIONREAD %d'%(len(got),n,avail(dst)))
        for k,_ in ev:
            if k.fileobj is not dst: fail('readable without data: FIONREAD %d'%avail(k.fileobj))
            a=avail(dst)
            if a<=0: fail('woken with FIONREAD %d after %d of %d bytes'%(a,len(got),n))
            d=dst.recv(a)
            if not 0<len(d)<=a: fail('recv gave %d with FIONREAD %d'%(len(d),a))
            got+=d
    return bytes(got)
sizes=[1,7,100,1448,4096,65536,262144,3]
up=down=0;rounds=64
for i in range(rounds):
    n=sizes[i%len(sizes)];msg=os.urandom(n)
    src,dst=(c,b) if i%2==0 else (b,c)
    src.sendall(msg)
    if receive(dst,n)!=msg: fail('round %d: bytes differ'%i)
    if avail(dst)!=0 or sel.select(timeout=0): fail('round %d: still readable after the message'%i)
    if src is c: up+=n
    else: down+=n
c.shutdown(socket.SHUT_WR)
ev=sel.select(timeout=5)
if [k.fileobj for k,_ in ev]!=[b] or avail(b)!=0 or b.recv(10)!=b'': fail('half-close did not reach the backend as EOF')
sel.unregister(b)
last=os.urandom(5000);b.sendall(last);b.shutdown(socket.SHUT_WR);down+=len(last)
if receive(c,len(last))!=last: fail('bytes after the half-close differ')
ev=sel.select(timeout=5)
if [k.fileobj for k,_ in ev]!=[c] or c.recv(10)!=b'': fail('the backend FIN did not reach the client')
c.close();b.close()
print('ok',rounds,up,down,flush=True)
"#;

#[test]
fn python_selector_sees_epoll_and_fionread_readiness() {
    use std::io::BufRead;
    for datapath in DATAPATHS {
        let bport = free_port();
        let port = free_port();
        let mut py = Killed(
            Command::new("python3")
                .args(["-c", SELECTOR_READINESS, &bport.to_string(), &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = std::io::BufReader::new(py.0.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        let mut gw = start(&proxy("sel", port, &[format!("127.0.0.1:{bport}")], datapath), &[], datapath);
        py.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let status = wait_bounded(&mut py, Duration::from_secs(60));
        let mut err = String::new();
        py.0.stderr.as_mut().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "{datapath}: {err}");
        line.clear();
        out.read_line(&mut line).unwrap();
        let f: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
        assert_eq!(f.len(), 3, "{line}");
        let e = connection(&mut gw, 0);
        assert_eq!((e["end"].as_str(), e["datapath"].as_str()), (Some("closed"), Some(datapath)), "{e}");
        assert_eq!((e["bytes_to_backend"].as_u64(), e["bytes_to_client"].as_u64()), (Some(f[1]), Some(f[2])), "{datapath}: {e}");
        gw.stop();
    }
}

#[test]
fn mariadb_through_the_proxy() {
    let db = support::mariadb::MariaDb::start();
    for datapath in DATAPATHS {
        let port = free_port();
        let mut gw = start(&proxy("db", port, &[format!("127.0.0.1:{}", db.port)], datapath), &[], datapath);
        let from = gw.events.len();
        // The server speaks first (its greeting is early data for the proxy).
        let out = Command::new("mariadb")
            .args(["-h127.0.0.1", "-uapp", "-psecret", "--ssl=0", "-N", "-B"])
            .arg(format!("-P{port}"))
            .arg("shop")
            .arg("-e")
            .arg("SELECT COUNT(*), SUM(n) FROM seq5000; SELECT pad FROM seq5000 ORDER BY n; INSERT INTO orders (item, qty) VALUES (2, 9); SELECT ROW_COUNT(); CALL two_sets();")
            .output()
            .expect("mariadb (apt-get install mariadb-client)");
        assert!(out.status.success(), "{datapath}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut want = String::from("5000\t12502500\n");
        for n in 1..=5000 {
            want.push_str(&format!("row-{n}\n"));
        }
        want.push_str("1\n1\n2\nplum\n");
        assert!(text == want, "{datapath}: {} lines, first {:?}", text.lines().count(), text.lines().take(3).collect::<Vec<_>>());
        let e = connection(&mut gw, from);
        assert_eq!(
            (e["end"].as_str(), e["closed_by"].as_str(), e["datapath"].as_str()),
            (Some("closed"), Some("client"), Some(datapath)),
            "{e}"
        );
        assert!(e["bytes_to_client"].as_u64().unwrap() > 5000 * 8, "{e}");
        gw.stop();
    }
}

/// On this kernel every sockmap scenario above passes, so `auto` must take
/// sockmap, say why at start, and `masdeepflow check` must report the
/// probe's checks and the same choice.
#[test]
fn auto_takes_sockmap_where_the_probe_passes_and_check_says_so() {
    let out = Command::new(gateway_support::BIN).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let probe: Vec<&str> = text.lines().filter(|l| l.contains("gateway proxy")).collect();
    assert!(probe.iter().any(|l| l.contains("gateway proxy sockmap check ok:")), "{text}");
    assert!(!probe.iter().any(|l| l.contains("FAILED")), "{probe:#?}");
    assert!(probe.contains(&"gateway proxy: datapath \"auto\" takes sockmap (every check passed)"), "{probe:#?}");

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap().to_string();
    let port = free_port();
    let mut gw = Gateway::start(&proxy("auto", port, std::slice::from_ref(&backend), "auto"), &[]);
    let s = gw.expect("proxy_start", |v| v["type"] == "proxy_start");
    assert_eq!((s["datapath"].as_str(), s["reason"].as_str()), (Some("sockmap"), Some("auto: the start-up probe passed")), "{s}");
    let b = half_close_backend(l, 1 << 20, 4096);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = c.try_clone().unwrap();
    let reader = thread::spawn(move || read_digest(&mut r).unwrap());
    send_pattern(&mut c, 1, 1 << 20).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(reader.join().unwrap().1, (1 << 20) + 4096);
    let up = b.join().unwrap();
    let want = expected(1, 1 << 20);
    assert_eq!((up.0, up.1), (want.0, want.1));
    let e = connection(&mut gw, 0);
    assert_eq!((e["datapath"].as_str(), e["end"].as_str()), (Some("sockmap"), Some("closed")), "{e}");
    gw.stop();
}
