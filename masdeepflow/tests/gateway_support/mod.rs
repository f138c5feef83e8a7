//! Running `masdeepflow gateway` as a user would, against cgroups the test
//! creates and runs its clients in, with real backends (Python servers that
//! answer with their id, nginx) and real clients (Python, curl, wrk).
//! VIPs are in 127.0.0.0/8 only (IPv6 only inside a test-made netns).
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_masdeepflow");
pub const WAIT: Duration = Duration::from_secs(20);

pub fn require_root() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test loads eBPF programs and must run as root (CI runs `cargo xtask test` as root)");
    }
}

/// A free loopback port for TCP and UDP (bound then released).
pub fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The cgroup2 mount (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split(' ').next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(left.split(' ').nth(4)?))
        })
        .expect("a cgroup2 mount")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A cgroup2 directory made by the test, removed (its processes killed
/// first) when dropped.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(tag: &str) -> TestCgroup {
        require_root();
        let path = cgroup2_root().join(format!("mdf-gw-{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// A child cgroup `name` (removed with this one).
    pub fn child(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir(&p).unwrap();
        p
    }

    /// `program args..` started inside this cgroup.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("echo $$ > \"$0\" && exec \"$@\"").arg(self.path.join("cgroup.procs")).arg(program).args(args);
        c
    }

    /// Runs a client helper mode inside the cgroup; its JSON lines.
    pub fn client(&self, args: &[&str]) -> Vec<Value> {
        client_lines(self.command("/usr/bin/python3", &[&helper("gw_client.py")]).args(args))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    for _ in 0..50 {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: killing processes this test put in its own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn helper(name: &str) -> String {
    format!("{}/tests/helpers/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn client_lines(cmd: &mut Command) -> Vec<Value> {
    let out = cmd.stderr(Stdio::inherit()).output().expect("python3 (apt-get install python3)");
    assert!(out.status.success(), "client failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Counts of `key` over lines.
pub fn count_by(lines: &[Value], key: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        let k = l.get(key).map_or_else(|| format!("{l}"), |v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
        *m.entry(k).or_default() += 1;
    }
    m
}

/// A backend answering with its id, on TCP and UDP.
pub struct Echo {
    child: Child,
    pub id: String,
    pub port: u16,
    pub host: String,
}

impl Echo {
    pub fn start(id: &str, port: u16) -> Echo {
        Echo::start_with(id, "127.0.0.1", port, None)
    }

    /// Started through `wrap` (e.g. `ip netns exec NS`), on `host`.
    pub fn start_with(id: &str, host: &str, port: u16, wrap: Option<&[&str]>) -> Echo {
        let mut cmd = match wrap {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg("/usr/bin/python3");
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        let mut child = cmd.arg(helper("gw_echo.py")).args([id, host, &port.to_string()]).stdout(Stdio::piped()).spawn().expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "backend {id} did not start");
        Echo { child, id: id.to_string(), port, host: host.to_string() }
    }

    pub fn address(&self) -> String {
        if self.host.contains(':') { format!("[{}]:{}", self.host, self.port) } else { format!("{}:{}", self.host, self.port) }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running gateway and its output lines.
pub struct Gateway {
    pub child: Child,
    lines: Receiver<String>,
    pub events: Vec<Value>,
    pub config: PathBuf,
    /// Its stderr, read as it comes (a full pipe would block the gateway's
    /// next log line, and the gateway with it); the last `STDERR_KEPT` bytes.
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Disconnected once the stderr pipe has been read to its end.
    stderr_done: Receiver<()>,
}

/// How much of a gateway's stderr is kept for failure messages.
const STDERR_KEPT: usize = 256 * 1024;

/// Reads `from` to its end in a thread, keeping the last `STDERR_KEPT` bytes.
fn drain_stderr(mut from: impl std::io::Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, Receiver<()>) {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let k = kept.clone();
    let (done, done_rx) = channel::<()>();
    std::thread::spawn(move || {
        let _done = done;
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            let mut v = k.lock().unwrap_or_else(PoisonError::into_inner);
            v.extend_from_slice(&buf[..n]);
            if v.len() > STDERR_KEPT {
                let cut = v.len() - STDERR_KEPT;
                v.drain(..cut);
            }
        }
    });
    (kept, done_rx)
}

pub fn config_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mdf-gw-{tag}-{}-{}.toml", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)))
}

impl Gateway {
    /// Writes `config` and starts the gateway on it; waits for gateway_start.
    pub fn start(config: &str, args: &[&str]) -> Gateway {
        Gateway::start_env(config, args, &[])
    }

    pub fn start_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let path = config_path("config");
        std::fs::write(&path, config).unwrap();
        let mut all = vec!["--config", path.to_str().unwrap()];
        all.extend_from_slice(args);
        Gateway::spawn(&all, env, path.clone())
    }

    /// Started with exactly `args` (e.g. Kubernetes only, no file).
    pub fn start_args(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Gateway::spawn(args, env, config_path("unused"))
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], path: PathBuf) -> Gateway {
        require_root();
        let mut child = Command::new(BIN)
            .arg("gateway")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway");
        let stdout = child.stdout.take().unwrap();
        let (stderr, stderr_done) = drain_stderr(child.stderr.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut g = Gateway { child, lines, events: Vec::new(), config: path, stderr, stderr_done };
        match g.take(Duration::from_secs(30)) {
            Some(v) if v["type"] == "gateway_start" => {}
            other => {
                let _ = g.child.kill();
                let _ = g.child.wait();
                panic!("the gateway did not start ({other:?}): {}", g.stderr_text());
            }
        }
        g
    }

    /// What the gateway wrote to stderr so far (its last 256 KiB).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// The next output line within `timeout` (recorded in `events`), or
    /// None when none came or the gateway's output ended.
    pub fn next_line(&mut self, timeout: Duration) -> Option<Value> {
        self.take(timeout)
    }

    fn take(&mut self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                self.events.push(v.clone());
                Some(v)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits (bounded) for a line matching `pred` that came after the first
    /// `from` lines.
    pub fn expect_after(&mut self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.events[from..].iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.take(left) {
                Some(v) if pred(&v) => return v,
                Some(_) => {}
                None => break,
            }
        }
        panic!("no {what} within {WAIT:?}; lines: {:#?}", &self.events[from.min(self.events.len())..]);
    }

    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_after(0, what, pred)
    }

    /// The next gateway_stats line written after now.
    pub fn next_stats(&mut self) -> Value {
        let from = self.events.len();
        self.expect_after(from, "gateway_stats", |v| v["type"] == "gateway_stats")
    }

    /// Rewrites the config file (picked up by the file watcher), then
    /// sends SIGHUP so that the reload does not wait for the poll.
    pub fn reload(&mut self, config: &str) {
        self.write_config(config);
        self.signal(libc::SIGHUP);
    }

    /// Replaces the config file at once (a new file renamed over it, as
    /// editors and Kubernetes ConfigMaps do).
    pub fn write_config(&self, config: &str) {
        let tmp = self.config.with_extension("new");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGINT (or another signal), the rest of the output, the exit status.
    pub fn stop_with(mut self, sig: i32) -> (Vec<Value>, ExitStatus, String) {
        self.signal(sig);
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str(&line) {
                        self.events.push(v);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("the gateway did not exit within {WAIT:?} of signal {sig}");
                }
            }
        }
        let status = self.child.wait().unwrap();
        // Its stdout ended: its stderr has been written too; the drain
        // thread reads what is left in the pipe (bounded wait).
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        (std::mem::take(&mut self.events), status, self.stderr_text())
    }

    pub fn stop(self) -> Vec<Value> {
        let (events, status, err) = self.stop_with(libc::SIGINT);
        assert!(status.success(), "gateway exited with {status}: {err}");
        events
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A client helper kept running (for `loop` and `hold`), in a cgroup.
pub struct LongClient {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl LongClient {
    pub fn start(cgroup: &TestCgroup, args: &[&str]) -> LongClient {
        let mut child = cgroup
            .command("/usr/bin/python3", &[&helper("gw_client.py")])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LongClient { stdin: child.stdin.take(), child, lines }
    }

    pub fn line(&self) -> Value {
        let l = self.lines.recv_timeout(WAIT).expect("client printed nothing in time");
        serde_json::from_str(&l).unwrap()
    }

    /// A line to the client's stdin (hold: go on).
    pub fn poke(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (loop: stop) and returns the last line.
    pub fn finish(mut self) -> Value {
        drop(self.stdin.take());
        let v = self.line();
        let _ = self.child.wait();
        v
    }
}

impl Drop for LongClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What bpftool shows attached to `cgroup` (one line per program).
pub fn bpftool_attached(cgroup: &Path) -> Vec<String> {
    let out = Command::new("bpftool").args(["cgroup", "show"]).arg(cgroup).output().expect("bpftool (apt-get install bpftool)");
    String::from_utf8_lossy(&out.stdout).lines().skip(1).filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// Loaded programs and maps whose names start with `gw_`/`GW_` (the
/// gateway's), from bpftool.
pub fn bpftool_gateway_objects() -> (Vec<String>, Vec<String>) {
    let names = |what: &str| -> Vec<String> {
        let out = Command::new("bpftool").args([what, "list", "--json"]).output().expect("bpftool");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .filter(|n| n.starts_with("gw_") || n.starts_with("GW_"))
            .map(str::to_string)
            .collect()
    };
    (names("prog"), names("map"))
}

/// A `[[service]]` table.
pub fn service(name: &str, vip: &str, protocol: &str, extra: &str, backends: &[String], scope: &Path) -> String {
    let b: Vec<String> = backends.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
    format!(
        "[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nprotocol = \"{protocol}\"\n{extra}\nbackends = [ {} ]\nscope = \"{}\"\n\n",
        b.join(", "),
        scope.display()
    )
}
