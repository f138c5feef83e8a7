//! The L4 proxy (`[[proxy]]`), end to end, once per data path (`sockmap`
//! and `userspace`) so they are proven equivalent: checksummed bulk both
//! ways at once with a half-close, bytes the backend sends before the
//! proxy joined the sockets (early data), nginx with curl and wrk, resets
//! both ways, refused backends, a backend killed mid-stream, a slow reader,
//! and the drain on SIGTERM. The test's own threads are client and backend
//! where exact bytes and timing must be controlled; nginx, curl and wrk are
//! the real ones. Addresses are 127.0.0.1 only.
//!
//! The tests run one at a time (`serial`), and every wait is bounded: each
//! accept, read and write, each child process (a dead backend fails the
//! test at once, with its stderr), each phase of a load.
mod gateway_support;
mod support;

use std::{
    io::{BufRead as _, BufReader, ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    thread,
    time::{Duration, Instant},
};

use gateway_support::{Gateway, free_port};
use serde_json::Value;
use support::servers::{BIG, Nginx, SMALL};

const DATAPATHS: [&str; 2] = ["sockmap", "userspace"];

/// A socket read or write that moves nothing for this long fails the test.
const STALL: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time: each moves gigabytes, opens
/// thousands of connections or times a drain, and on a 2-core machine two
/// at once starve each other's peers (cargo runs a file's tests in parallel
/// threads). Held for a whole test; a test that failed (poisoned the lock)
/// does not fail the next one.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A child process (a backend, a server, a client script) whose stdout is
/// read line by line and stderr kept, as they come; killed and reaped when
/// dropped (also when a test fails). Every wait on it is bounded, and one
/// that finds it dead fails at once with its status and stderr.
struct Proc {
    what: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr piped (stdin as `cmd` says).
    fn spawn(what: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (mut err, kept) = (child.stderr.take().unwrap(), stderr.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                kept.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(&buf[..n]);
            }
        });
        Proc { what: what.to_string(), child, lines, stderr }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().expect("stdin piped")
    }

    /// Fails at once when the process has exited.
    fn alive(&mut self, doing: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}) while {doing}; its stderr: {}", self.what, self.stderr());
        }
    }

    /// The next line it prints, within `limit`.
    fn line(&mut self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!("{} printed no line within {limit:?}; its stderr: {}", self.what, self.stderr()),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.wait(Duration::from_secs(5));
                panic!("{} closed its output ({status}); its stderr: {}", self.what, self.stderr())
            }
        }
    }

    /// Its exit status, within `limit` (killed and the test failed beyond).
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {limit:?}; its stderr: {}", self.what, self.stderr());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end within `limit` (killed and the test failed
/// beyond); its output, bytes as they came.
fn run_bounded(what: &str, cmd: &mut Command, limit: Duration) -> Output {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
            panic!(
                "{what} did not finish within {limit:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    // It exited and has no children of its own: its pipes are closed.
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// Waits (bounded) for `fd` to be readable (poll(2)); false on timeout.
fn readable_within(fd: &impl AsRawFd, limit: Duration) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one pollfd of ours.
        match unsafe { libc::poll(&raw mut p, 1, left) } {
            1.. => return true,
            0 => return false,
            _ if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted => {}
            _ => panic!("poll: {}", std::io::Error::last_os_error()),
        }
    }
}

/// The next connection on `l`, within `limit`, with STALL timeouts.
fn accept_within(l: &TcpListener, limit: Duration, what: &str) -> TcpStream {
    assert!(readable_within(l, limit), "{what}: no connection within {limit:?}");
    let (s, _) = l.accept().unwrap_or_else(|e| panic!("{what}: accept: {e}"));
    stall_limits(&s);
    s
}

fn stall_limits(s: &TcpStream) {
    s.set_read_timeout(Some(STALL)).unwrap();
    s.set_write_timeout(Some(STALL)).unwrap();
}

/// A client connection to the proxy (bounded connect, STALL timeouts).
fn client(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap_or_else(|e| panic!("connecting to the proxy: {e}"));
    stall_limits(&c);
    c
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

/// A byte stream of xorshift64 words (8 bytes a step, cheap enough that
/// the test's own CPU stays small next to the data path's): position
/// dependent, so a lost, repeated or reordered chunk shows at its first
/// byte.
struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    fn new(seed: u64) -> Pattern {
        Pattern { state: seed, word: [0; 8], used: 8 }
    }

    fn step(&mut self) -> [u8; 8] {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state.to_le_bytes()
    }

    /// The next `buf.len()` bytes of the stream.
    fn fill(&mut self, buf: &mut [u8]) {
        let head = buf.len().min(8 - self.used);
        buf[..head].copy_from_slice(&self.word[self.used..self.used + head]);
        self.used += head;
        let mut words = buf[head..].chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.step());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            self.word = self.step();
            tail.copy_from_slice(&self.word[..tail.len()]);
            self.used = tail.len();
        }
    }
}

/// What a reader must get: the pattern of each (seed, length) part, one
/// after the other, then EOF; checked as the bytes come.
struct Expect {
    parts: Vec<(u64, u64)>,
    part: usize,
    left: u64,
    pattern: Pattern,
    want: Vec<u8>,
    got: u64,
    /// Offset of the first byte that differs (or comes after the end).
    first_wrong: Option<u64>,
}

impl Expect {
    fn new(parts: &[(u64, u64)]) -> Expect {
        let (seed, left) = parts[0];
        Expect { parts: parts.to_vec(), part: 0, left, pattern: Pattern::new(seed), want: vec![0; 1 << 16], got: 0, first_wrong: None }
    }

    fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }

    fn check(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left == 0 {
                self.part += 1;
                match self.parts.get(self.part) {
                    Some(&(seed, len)) => (self.pattern, self.left) = (Pattern::new(seed), len),
                    None => {
                        self.first_wrong.get_or_insert(self.got);
                        self.got += data.len() as u64;
                        return;
                    }
                }
                continue;
            }
            let k = data.len().min(self.want.len()).min(self.left as usize);
            self.pattern.fill(&mut self.want[..k]);
            if self.first_wrong.is_none() && data[..k] != self.want[..k] {
                let at = data[..k].iter().zip(&self.want[..k]).position(|(a, b)| a != b).unwrap();
                self.first_wrong = Some(self.got + at as u64);
            }
            (self.got, self.left, data) = (self.got + k as u64, self.left - k as u64, &data[k..]);
        }
    }

    /// Every byte, in order, nothing more.
    fn assert_complete(&self, what: &str) {
        assert!(
            self.got == self.total() && self.first_wrong.is_none(),
            "{what}: {} of {} bytes, the first wrong one at {:?}",
            self.got,
            self.total(),
            self.first_wrong
        );
    }
}

/// The check itself: the stream read in chunks of any size passes; a lost,
/// repeated, swapped or extra chunk is caught at its first byte.
#[test]
fn the_pattern_check_catches_lost_repeated_and_swapped_chunks() {
    let parts = [(2, 300_001), (3, 70_000)];
    let mut stream = vec![0u8; 370_001];
    let mut p = Pattern::new(2);
    p.fill(&mut stream[..1]);
    p.fill(&mut stream[1..300_001]);
    Pattern::new(3).fill(&mut stream[300_001..]);
    let feed = |data: &[u8]| {
        let mut e = Expect::new(&parts);
        for (i, c) in data.chunks(4093).enumerate() {
            let (a, b) = c.split_at(c.len().min(i % 9));
            e.check(a);
            e.check(b);
        }
        e
    };
    let ok = feed(&stream);
    ok.assert_complete("the stream as sent");
    let mut lost = stream.clone();
    lost.drain(100_000..100_010);
    assert_eq!(feed(&lost).first_wrong, Some(100_000));
    let mut repeated = stream.clone();
    repeated.splice(200_000..200_000, stream[199_000..200_000].iter().copied());
    assert_eq!(feed(&repeated).first_wrong, Some(200_000));
    let mut swapped = stream.clone();
    swapped[..4096].copy_from_slice(&stream[4096..8192]);
    swapped[4096..8192].copy_from_slice(&stream[..4096]);
    assert_eq!(feed(&swapped).first_wrong, Some(0));
    let mut extra = stream.clone();
    extra.push(0);
    assert_eq!(feed(&extra).first_wrong, Some(370_001));
}

/// Sends `len` pattern bytes; fails the test past `deadline` (or when a
/// write moves nothing for STALL).
fn send_pattern(s: &mut TcpStream, seed: u64, len: u64, deadline: Instant, what: &str) {
    let mut p = Pattern::new(seed);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        assert!(Instant::now() < deadline, "{what}: {} of {len} bytes sent by the deadline", len - left);
        let k = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..k]);
        s.write_all(&buf[..k]).unwrap_or_else(|e| panic!("{what}: sending after {} of {len} bytes: {e}", len - left));
        left -= k as u64;
    }
}

/// Reads to EOF, checking the bytes against `parts`; fails the test past
/// `deadline` (or when a read waits STALL for nothing).
fn read_expect(s: &mut TcpStream, parts: &[(u64, u64)], deadline: Instant, what: &str) -> Expect {
    let mut e = Expect::new(parts);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        assert!(Instant::now() < deadline, "{what}: {} bytes read by the deadline, no EOF", e.got);
        let n = s.read(&mut buf).unwrap_or_else(|e2| panic!("{what}: reading after {} bytes: {e2}", e.got));
        if n == 0 {
            return e;
        }
        e.check(&buf[..n]);
    }
}

fn connection(gw: &mut Gateway, from: usize) -> Value {
    gw.expect_after(from, "gateway_connection", |v| v["type"] == "gateway_connection")
}

/// Backend: sends `down` bytes at once (before the proxy can have joined
/// the sockets: early data), reads the client's bytes to EOF at the same
/// time, then sends `after` more bytes after the client's half-close, then
/// closes. Returns what it read, checked against the client's `up` bytes
/// of pattern 1.
fn half_close_backend(l: TcpListener, up: u64, down: u64, after: u64, deadline: Instant) -> thread::JoinHandle<Expect> {
    thread::spawn(move || {
        let mut s = accept_within(&l, Duration::from_secs(20), "backend");
        let mut r = s.try_clone().unwrap();
        let reader = thread::spawn(move || read_expect(&mut r, &[(1, up)], deadline, "backend reading"));
        send_pattern(&mut s, 2, down, deadline, "backend");
        let got = reader.join().expect("the backend's reader");
        // The client has shut down its side; keep streaming.
        send_pattern(&mut s, 3, after, deadline, "backend after the half-close");
        s.shutdown(Shutdown::Write).unwrap();
        got
    })
}

#[test]
fn bulk_both_ways_half_close_and_early_data() {
    let _serial = serial();
    const UP: u64 = 1 << 30;
    const DOWN: u64 = 1 << 30;
    const AFTER: u64 = 8 << 20;
    for datapath in DATAPATHS {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = l.local_addr().unwrap().to_string();
        let port = free_port();
        let mut gw = start(&proxy("bulk", port, std::slice::from_ref(&backend), datapath), &[], datapath);
        let t0 = Instant::now();
        // 1 GiB each way takes seconds here; a cold, loaded machine gets
        // minutes, never unbounded.
        let deadline = t0 + Duration::from_secs(180);
        let b = half_close_backend(l, UP, DOWN, AFTER, deadline);
        let mut c = client(port);
        let mut r = c.try_clone().unwrap();
        // The backend's bytes before and after the half-close, in order.
        let reader = thread::spawn(move || read_expect(&mut r, &[(2, DOWN), (3, AFTER)], deadline, "client reading"));
        send_pattern(&mut c, 1, UP, deadline, "client");
        c.shutdown(Shutdown::Write).unwrap();
        let down = reader.join().expect("the client's reader");
        let up = b.join().expect("the backend");
        eprintln!("{datapath}: 1 GiB each way at once in {:?}", t0.elapsed());
        up.assert_complete(&format!("{datapath}: client to backend"));
        down.assert_complete(&format!("{datapath}: backend to client"));
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

/// Connections opened one after the other reach the backend in that order
/// (iperf3 --bidir, for one, tells its streams apart by it): 100 opened
/// back to back, then each sends its number; the backend reads them in the
/// order it accepted them.
#[test]
fn connections_reach_the_backend_in_the_order_they_were_opened() {
    let _serial = serial();
    const N: usize = 100;
    for datapath in DATAPATHS {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = l.local_addr().unwrap().to_string();
        let port = free_port();
        let gw = start(&proxy("order", port, std::slice::from_ref(&backend), datapath), &[], datapath);
        let b = thread::spawn(move || {
            (0..N)
                .map(|_| {
                    let mut s = accept_within(&l, Duration::from_secs(20), "backend");
                    let mut buf = [0u8; 4];
                    s.read_exact(&mut buf).unwrap_or_else(|e| panic!("{datapath}: backend: a connection's number: {e}"));
                    u32::from_be_bytes(buf)
                })
                .collect::<Vec<u32>>()
        });
        let mut clients: Vec<TcpStream> = (0..N).map(|_| client(port)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(&(i as u32).to_be_bytes()).unwrap();
        }
        let order = b.join().expect("the backend");
        let want: Vec<u32> = (0..N as u32).collect();
        assert!(order == want, "{datapath}: the backend accepted them in the order {order:?}");
        drop(clients);
        gw.stop();
    }
}

/// User plus system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (in parentheses): utime and stime are
    // the 12th and 13th, in clock ticks.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|x| x.parse().unwrap()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64((f[0] + f[1]) as f64 / hz)
}

/// Connections the backend has half-closed (its FIN passed on) while their
/// clients stay open cost the gateway nothing while they wait: no task
/// spins on a socket that has read its end.
#[test]
fn half_closed_connections_cost_no_cpu() {
    let _serial = serial();
    const N: usize = 50;
    for datapath in DATAPATHS {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = l.local_addr().unwrap().to_string();
        let port = free_port();
        let mut gw = start(&proxy("half", port, std::slice::from_ref(&backend), datapath), &[], datapath);
        let mut clients: Vec<TcpStream> = (0..N).map(|_| client(port)).collect();
        for _ in 0..N {
            let s = accept_within(&l, Duration::from_secs(20), "backend");
            s.shutdown(Shutdown::Write).unwrap();
        }
        // Each client reads the backend's FIN: every connection is half closed.
        for (i, c) in clients.iter_mut().enumerate() {
            let mut buf = [0u8; 1];
            assert_eq!(c.read(&mut buf).unwrap_or_else(|e| panic!("{datapath}: client {i}: {e}")), 0, "{datapath}: client {i}");
        }
        let pid = gw.child.id();
        let before = cpu_time(pid);
        let t = Instant::now();
        thread::sleep(Duration::from_secs(2));
        let used = cpu_time(pid) - before;
        assert!(
            used < Duration::from_millis(300),
            "{datapath}: the gateway used {used:?} of CPU in {:?} with {N} half-closed connections",
            t.elapsed()
        );
        gateway_alive(&mut gw, "connections were half closed");
        drop(clients);
        gw.stop();
    }
}

#[test]
fn nginx_with_curl_and_wrk() {
    let _serial = serial();
    for datapath in DATAPATHS {
        let n1 = Nginx::start();
        let n2 = Nginx::start();
        let backends = [format!("127.0.0.1:{}", n1.port), format!("127.0.0.1:{}", n2.port)];
        let port = free_port();
        let gw = start(&proxy("web", port, &backends, datapath), &[], datapath);
        let curl = |path: &str| {
            let out = run_bounded(
                "curl",
                Command::new("curl").args(["-sS", "--max-time", "10"]).arg(format!("http://127.0.0.1:{port}{path}")),
                Duration::from_secs(20),
            );
            assert!(out.status.success(), "{datapath}: curl {path}: {}", String::from_utf8_lossy(&out.stderr));
            out
        };
        let out = curl("/big.bin");
        assert_eq!(out.stdout, vec![b'b'; BIG], "{datapath}: /big.bin through the proxy");
        let out = curl("/small.txt");
        assert_eq!(out.stdout, SMALL, "{datapath}");
        // wrk, keep-alive, then a new connection per request: no errors.
        for extra in [&[][..], &["-H", "Connection: close"][..]] {
            let out = run_bounded(
                "wrk (apt-get install wrk)",
                Command::new("wrk")
                    .args(["-t1", "-c16", "-d2s", "--timeout", "5s"])
                    .args(extra)
                    .arg(format!("http://127.0.0.1:{port}/small.txt")),
                Duration::from_secs(30),
            );
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
    let _serial = serial();
    for datapath in DATAPATHS {
        // A backend that resets the connection (SO_LINGER 0) after reading.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let resetter = l.local_addr().unwrap().to_string();
        let refused = format!("127.0.0.1:{}", free_port());
        let port = free_port();
        let mut gw = start(&proxy("rst", port, &[refused.clone(), resetter.clone()], datapath), &[], datapath);
        let b = thread::spawn(move || {
            let mut s = accept_within(&l, Duration::from_secs(20), "resetting backend");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).expect("resetting backend: the client's 5 bytes");
            linger_zero(&s);
            drop(s);
        });
        // Round robin starts at the refused backend: it is skipped.
        let mut c = client(port);
        c.write_all(b"hello").unwrap();
        b.join().expect("the resetting backend");
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
        let (got3, got3_rx) = channel();
        let b = thread::spawn(move || {
            let mut s = accept_within(&l, Duration::from_secs(20), "backend");
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).expect("backend: the client's 3 bytes");
            let _ = got3.send(());
            let mut rest = [0u8; 16];
            s.read(&mut rest).map_err(|e| e.kind())
        });
        let mut c = client(port);
        c.write_all(b"abc").unwrap();
        // The reset once the 3 bytes have reached the backend.
        got3_rx.recv_timeout(Duration::from_secs(20)).expect("the backend read the client's 3 bytes");
        linger_zero(&c);
        drop(c);
        assert_eq!(b.join().expect("the backend"), Err(ErrorKind::ConnectionReset), "{datapath}: the backend sees the client's reset");
        let e = connection(&mut gw, from);
        assert_eq!((e["end"].as_str(), e["closed_by"].as_str()), (Some("reset"), Some("client")), "{e}");

        // No backend accepts: a clean close, backend_unreachable.
        let from = gw.events.len();
        let mut c = client(port);
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
        let mut child = Proc::spawn("the streaming backend (python3)", Command::new("python3").args(["-c", py, &bport.to_string()]));
        assert_eq!(child.line(Duration::from_secs(20)), "ready");
        let from = gw.events.len();
        let mut c = client(port);
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < 4 << 20 {
            assert!(Instant::now() < deadline, "{datapath}: {got} bytes from the streaming backend in 60 s");
            match c.read(&mut buf) {
                Ok(0) => {
                    child.alive("streaming");
                    panic!("{datapath}: EOF after {got} bytes while the backend streams");
                }
                Ok(n) => got += n,
                Err(e) => {
                    child.alive("streaming");
                    panic!("{datapath}: reading the stream after {got} bytes: {e}");
                }
            }
        }
        child.child.kill().unwrap();
        child.wait(Duration::from_secs(10));
        let killed = Instant::now();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        loop {
            assert!(killed.elapsed() < Duration::from_secs(5), "{datapath}: still reading {:?} after the backend died", killed.elapsed());
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("{datapath}: no EOF or reset 5 s after the backend died")
                }
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
    let _serial = serial();
    for datapath in DATAPATHS {
        const TOTAL: u64 = 32 << 20;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = l.local_addr().unwrap().to_string();
        let port = free_port();
        let mut gw = start(&proxy("slow", port, std::slice::from_ref(&backend), datapath), &["--drain-timeout", "2s"], datapath);
        let deadline = Instant::now() + Duration::from_secs(120);
        let b = thread::spawn(move || {
            let mut s = accept_within(&l, Duration::from_secs(20), "backend");
            send_pattern(&mut s, 7, TOTAL, deadline, "backend");
            s.shutdown(Shutdown::Write).unwrap();
            // A second connection that never ends (for the drain).
            accept_within(&l, deadline.saturating_duration_since(Instant::now()), "backend, second connection")
        });
        // A slow reader.
        let mut c = client(port);
        let mut d = Expect::new(&[(7, TOTAL)]);
        let mut buf = vec![0u8; 4096];
        let t0 = Instant::now();
        let mut reads = 0u64;
        loop {
            assert!(Instant::now() < deadline, "{datapath}: {} of {TOTAL} bytes read by the deadline", d.got);
            let n = c.read(&mut buf).unwrap_or_else(|e| panic!("{datapath}: reading after {} bytes: {e}", d.got));
            if n == 0 {
                break;
            }
            d.check(&buf[..n]);
            reads += 1;
            if reads.is_multiple_of(256) && t0.elapsed() < Duration::from_secs(2) {
                thread::sleep(Duration::from_millis(10));
            }
        }
        d.assert_complete(&format!("{datapath}: the slow reader"));
        drop(c);
        let e = connection(&mut gw, 0);
        assert_eq!((e["end"].as_str(), e["bytes_to_client"].as_u64()), (Some("closed"), Some(TOTAL)), "{e}");

        // Drain: a connection open at SIGTERM is reset after --drain-timeout.
        let mut c2 = client(port);
        let mut s2 = b.join().expect("the backend");
        c2.write_all(b"ping").unwrap();
        let mut ping = [0u8; 4];
        s2.read_exact(&mut ping).expect("the ping through the proxy");
        assert_eq!(&ping, b"ping");
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
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("mdf-proxy-reject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.toml");
    std::fs::write(&path, "[accelerate]\nenabled = true\n").unwrap();
    for flag in ["--config", "--check"] {
        let out = run_bounded(
            "masdeepflow gateway",
            Command::new(gateway_support::BIN).args(["gateway", flag]).arg(&path),
            Duration::from_secs(20),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("[accelerate]") && err.contains("not available"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An iperf3 server on 127.0.0.1:`port`, ready: it has printed that it
/// listens. (Not a test connection: an iperf3 server takes the first
/// connection for a test's control connection, fails that test when the
/// connection closes, then closes and reopens its listener; a real client
/// arriving meanwhile is refused or told the server is busy.)
fn iperf3_server(port: u16) -> Proc {
    let mut server = Proc::spawn(
        "the iperf3 server (apt-get install iperf3)",
        Command::new("iperf3").args(["-s", "-B", "127.0.0.1", "-p", &port.to_string(), "--forceflush"]).stdin(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = server.line(deadline.saturating_duration_since(Instant::now()));
        if line.starts_with("Server listening on") {
            return server;
        }
    }
}

#[test]
fn iperf3_bidir_through_both_data_paths() {
    let _serial = serial();
    for datapath in DATAPATHS {
        let sport = free_port();
        let mut server = iperf3_server(sport);
        let port = free_port();
        let gw = start(&proxy("iperf", port, &[format!("127.0.0.1:{sport}")], datapath), &[], datapath);
        let out = run_bounded(
            "the iperf3 client",
            Command::new("iperf3").args([
                "-c",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--bidir",
                "-t",
                "3",
                "-J",
                "--connect-timeout",
                "10000",
            ]),
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{datapath}: iperf3 failed ({}): {text}\nits stderr: {}\nthe server's stderr: {}\nthe gateway's lines: {:#?}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            server.stderr(),
            gw.events
        );
        server.alive("the client ran");
        let server_err = server.stderr();
        drop(server);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let end = &v["end"];
        for (sent, received) in [("sum_sent", "sum_received"), ("sum_sent_bidir_reverse", "sum_received_bidir_reverse")] {
            let (s, r) = (end[sent]["bytes"].as_u64().unwrap(), end[received]["bytes"].as_u64().unwrap());
            // (iperf3's sender and receiver stop counting at slightly
            // different moments; exact bytes are the other tests' job.)
            // (Bytes moved each way; how many depends on the CPU left.)
            assert!(
                r >= 1 << 20 && r <= s,
                "{datapath}: {sent} {s}, {received} {r}; iperf3 said {text}; the server's stderr: {}",
                server_err
            );
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
/// inherit it); returns the hard limit. (Root here lacks CAP_SYS_RESOURCE:
/// the hard limit itself cannot be raised.)
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r), 0);
        r.rlim_cur = r.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const r), 0, "setrlimit(RLIMIT_NOFILE) to the hard limit");
    }
    r.rlim_max
}

/// Descriptors open in process `pid`.
fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64
}

fn bpftool(args: &[&str]) -> Value {
    let out = run_bounded("bpftool (apt-get install bpftool)", Command::new("bpftool").arg("-j").args(args), Duration::from_secs(30));
    assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
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
        let v = bpftool(&["map", "show", "id", &id.to_string()]);
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
        .map(|(id, name)| (name.clone(), bpftool(&["map", "dump", "id", &id.to_string()]).as_array().map_or(0, Vec::len)))
        .collect()
}

/// A Python echo backend on a selectors (epoll) loop: raises its soft
/// RLIMIT_NOFILE to the hard one and prints `ready SOFT`; exits after `n`
/// connections have closed, printing `closed N`; exits non-zero on any
/// accept error (EMFILE...) or when nothing happens for 60 s.
const ECHO_MANY: &str = r#"import selectors,socket,sys,resource
h=resource.getrlimit(resource.RLIMIT_NOFILE)[1];resource.setrlimit(resource.RLIMIT_NOFILE,(h,h))
n=int(sys.argv[2]);l=socket.socket();l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
l.bind(('127.0.0.1',int(sys.argv[1])));l.listen(4096);l.setblocking(False)
sel=selectors.DefaultSelector();sel.register(l,selectors.EVENT_READ);closed=0;accepted=0
print('ready',resource.getrlimit(resource.RLIMIT_NOFILE)[0],flush=True)
while closed<n:
 ev=sel.select(timeout=60)
 if not ev: sys.exit('stalled: %d accepted, %d closed'%(accepted,closed))
 for k,_ in ev:
  if k.fileobj is l:
   while True:
    try: c,_=l.accept()
    except BlockingIOError: break
    except OSError as e: sys.exit('accept after %d connections: %s'%(accepted,e))
    accepted+=1;c.setblocking(False);sel.register(c,selectors.EVENT_READ)
  else:
   c=k.fileobj
   try: d=c.recv(65536)
   except ConnectionError: d=b''
   if d: c.sendall(d)
   else: sel.unregister(c);c.close();closed+=1
print('closed',closed,flush=True)
"#;

/// Fails at once when the gateway has exited.
fn gateway_alive(gw: &mut Gateway, doing: &str) {
    if let Some(status) = gw.child.try_wait().unwrap() {
        panic!("the gateway exited ({status}) while {doing}; its stderr: {}", gw.stderr_text());
    }
}

#[test]
fn ten_thousand_concurrent_connections_and_tables_back_to_baseline() {
    let _serial = serial();
    // Every phase has a deadline; on a warm machine each takes seconds.
    const PHASE: Duration = Duration::from_secs(120);
    // The gateway holds two descriptors per connection plus its own, this
    // process and the backend one each. Root without CAP_SYS_RESOURCE
    // cannot raise the hard limit: where it is below what 10,000 need, the
    // test runs as many as it allows and says so.
    let hard = raise_nofile();
    for datapath in DATAPATHS {
        let bport = free_port();
        let port = free_port();
        let mut gw = start(&proxy("many", port, &[format!("127.0.0.1:{bport}")], datapath), &[], datapath);
        let gw_files = open_files(gw.child.id());
        let n = 10_000.min(hard.saturating_sub(gw_files + 64) / 2) as usize;
        if n < 10_000 {
            eprintln!("{datapath}: RLIMIT_NOFILE hard limit {hard}, the gateway holds {gw_files}: {n} concurrent connections, not 10,000");
        }
        assert!(n >= 9_000, "hard RLIMIT_NOFILE {hard} is too low for this test");
        let mut echo =
            Proc::spawn("the echo backend (python3)", Command::new("python3").args(["-c", ECHO_MANY, &bport.to_string(), &n.to_string()]));
        let ready = echo.line(Duration::from_secs(20));
        let echo_files: usize =
            ready.strip_prefix("ready ").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("echo backend: {ready}"));
        assert!(echo_files >= n + 32, "the echo backend may open {echo_files} files, {n} connections need more");
        let tables = connection_tables(gw.child.id());
        let baseline = table_entries(&tables);
        let from = gw.events.len();

        // Open n connections, each sending its number.
        let t0 = Instant::now();
        let deadline = t0 + PHASE;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            if i % 500 == 0 {
                echo.alive("connections opened");
                gateway_alive(&mut gw, "connections opened");
                assert!(Instant::now() < deadline, "{datapath}: {i} connections opened in {PHASE:?}");
            }
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{datapath}: connection {i}: {e}; the gateway's stderr: {}", gw.stderr_text()));
            c.set_write_timeout(Some(STALL)).unwrap();
            c.write_all(format!("{i:08}").as_bytes()).unwrap_or_else(|e| panic!("{datapath}: connection {i}: {e}"));
            clients.push(c);
        }
        // Every one echoed: short reads, so that a dead backend or gateway
        // fails the test at once rather than after a long read timeout.
        let deadline = Instant::now() + PHASE;
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut buf = [0u8; 8];
            let mut got = 0;
            while got < 8 {
                match c.read(&mut buf[got..]) {
                    Ok(0) => {
                        echo.alive("echoing");
                        gateway_alive(&mut gw, "echoing");
                        panic!("{datapath}: connection {i} ended after {got} of 8 bytes; the gateway's stderr: {}", gw.stderr_text());
                    }
                    Ok(k) => got += k,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        echo.alive("echoing");
                        gateway_alive(&mut gw, "echoing");
                        assert!(Instant::now() < deadline, "{datapath}: connection {i}: no echo within {PHASE:?}");
                    }
                    Err(e) => panic!("{datapath}: connection {i}: {e}"),
                }
            }
            assert_eq!(&buf, format!("{i:08}").as_bytes(), "{datapath}: connection {i}");
        }
        eprintln!("{datapath}: {n} connections open and echoed in {:?}", t0.elapsed());
        let open = table_entries(&tables);
        eprintln!("{datapath}: tables at start {baseline:?}, with every connection open {open:?}");
        let in_map = if datapath == "sockmap" { 2 * n } else { 0 };
        assert_eq!(open["GW_PROXY_SOCKS"], baseline["GW_PROXY_SOCKS"] + in_map, "{datapath}: {open:?}");

        // Every connection closed: n lines, each closed with 8 bytes each way.
        let t1 = Instant::now();
        drop(clients);
        let deadline = t1 + PHASE;
        // (Counted as lines come: gateway_stats lines come in between.)
        let (mut ended, mut seen) = (0, from);
        loop {
            ended += gw.events[seen..].iter().filter(|v| v["type"] == "gateway_connection").count();
            seen = gw.events.len();
            if ended >= n {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if gw.next_line(left.min(Duration::from_secs(1))).is_none() {
                gateway_alive(&mut gw, "connections closed");
                assert!(Instant::now() < deadline, "{datapath}: {ended} of {n} connection lines within {PHASE:?}");
            }
        }
        let conns: Vec<&Value> = gw.events[from..].iter().filter(|v| v["type"] == "gateway_connection").collect();
        assert_eq!(conns.len(), n, "{datapath}");
        for e in conns {
            assert_eq!(
                (e["end"].as_str(), e["bytes_to_backend"].as_u64(), e["bytes_to_client"].as_u64()),
                (Some("closed"), Some(8), Some(8)),
                "{e}"
            );
        }
        let status = echo.wait(Duration::from_secs(30));
        assert!(status.success(), "{datapath}: the echo backend: {status}: {}", echo.stderr());
        assert_eq!(echo.line(Duration::from_secs(5)), format!("closed {n}"), "{datapath}");
        eprintln!("{datapath}: {n} connections closed and counted in {:?}", t1.elapsed());
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
    let _serial = serial();
    for datapath in DATAPATHS {
        let bport = free_port();
        let port = free_port();
        let mut py = Proc::spawn(
            "the selector script (python3)",
            Command::new("python3").args(["-c", SELECTOR_READINESS, &bport.to_string(), &port.to_string()]).stdin(Stdio::piped()),
        );
        assert_eq!(py.line(Duration::from_secs(20)), "ready");
        let mut gw = start(&proxy("sel", port, &[format!("127.0.0.1:{bport}")], datapath), &[], datapath);
        py.stdin().write_all(b"go\n").unwrap();
        let status = py.wait(Duration::from_secs(60));
        assert!(status.success(), "{datapath}: {}", py.stderr());
        let line = py.line(Duration::from_secs(5));
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
    let _serial = serial();
    let db = support::mariadb::MariaDb::start();
    for datapath in DATAPATHS {
        let port = free_port();
        let mut gw = start(&proxy("db", port, &[format!("127.0.0.1:{}", db.port)], datapath), &[], datapath);
        let from = gw.events.len();
        // The server speaks first (its greeting is early data for the proxy).
        let out = run_bounded(
            "mariadb (apt-get install mariadb-client)",
            Command::new("mariadb")
                .args(["-h127.0.0.1", "-uapp", "-psecret", "--ssl=0", "-N", "-B", "--connect-timeout=10"])
                .arg(format!("-P{port}"))
                .arg("shop")
                .arg("-e")
                .arg("SELECT COUNT(*), SUM(n) FROM seq5000; SELECT pad FROM seq5000 ORDER BY n; INSERT INTO orders (item, qty) VALUES (2, 9); SELECT ROW_COUNT(); CALL two_sets();"),
            Duration::from_secs(60),
        );
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
    let _serial = serial();
    let out = run_bounded("masdeepflow check", Command::new(gateway_support::BIN).arg("check"), Duration::from_secs(60));
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let b = half_close_backend(l, 1 << 20, 1 << 20, 4096, deadline);
    let mut c = client(port);
    let mut r = c.try_clone().unwrap();
    let reader = thread::spawn(move || read_expect(&mut r, &[(2, 1 << 20), (3, 4096)], deadline, "client reading"));
    send_pattern(&mut c, 1, 1 << 20, deadline, "client");
    c.shutdown(Shutdown::Write).unwrap();
    reader.join().expect("the client's reader").assert_complete("backend to client");
    b.join().expect("the backend").assert_complete("client to backend");
    let e = connection(&mut gw, 0);
    assert_eq!((e["datapath"].as_str(), e["end"].as_str()), (Some("sockmap"), Some("closed")), "{e}");
    gw.stop();
}
