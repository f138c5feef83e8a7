//! Running the built agent as a user would, and waiting for its events.
#![allow(dead_code)]

pub mod manifests;
pub mod mariadb;
pub mod servers;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const AGENT: &str = env!("CARGO_BIN_EXE_masdeepflow");
/// Longest wait for any one expected event.
pub const WAIT: Duration = Duration::from_secs(20);

/// These tests load eBPF programs: they need root and fail (never skip)
/// without it.
pub fn require_root() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test loads eBPF programs and must run as root (CI runs `cargo xtask test` as root)");
    }
}

pub struct Agent {
    child: Child,
    lines: Receiver<String>,
    pub events: Vec<Value>,
}

impl Agent {
    /// Starts the agent and waits for its `agent_start` line.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_with_env(args, &[])
    }

    /// Starts the agent with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(AGENT);
        cmd.args(args).envs(env.iter().copied());
        Agent::start_command(cmd)
    }

    /// Starts the agent with a command of the caller's (another binary, or
    /// one run through chroot or runc); the command's pid must become the
    /// agent's (exec, no fork), since stopping it signals that pid.
    pub fn start_command(mut cmd: Command) -> Agent {
        require_root();
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot start the agent");
        let lines = stdout_lines(&mut child);
        let mut agent = Agent { child, lines, events: Vec::new() };
        let first = agent.lines.recv_timeout(Duration::from_secs(30));
        match first {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("first line is not JSON ({e}): {line}"));
                assert_eq!(v["type"], "agent_start", "first line must be agent_start: {line}");
                agent.events.push(v);
            }
            Err(_) => {
                let _ = agent.child.kill();
                let mut err = String::new();
                let _ = agent.child.stderr.take().map(|mut s| s.read_to_string(&mut err));
                panic!("the agent did not start: {err}");
            }
        }
        agent
    }

    /// Starts the agent with `--output none` (nothing on stdout) and waits
    /// until it serves `http://127.0.0.1:<metrics_port>/metrics`, which it
    /// does once its programs are attached.
    pub fn start_serving(args: &[&str], metrics_port: u16) -> Agent {
        require_root();
        let mut child =
            Command::new(AGENT).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot start the agent");
        let lines = stdout_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while metrics(metrics_port, false).is_none() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
                panic!("the agent exited ({status}) before serving metrics: {err}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent did not serve metrics on {metrics_port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Agent { child, lines, events: Vec::new() }
    }

    fn take(&mut self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
                self.events.push(v.clone());
                Some(v)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits (bounded) for an event matching `pred`, seen before or now.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.events.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(v) = self.take(left) {
                if pred(&v) {
                    return v;
                }
            } else {
                break;
            }
        }
        panic!("no {what} within {WAIT:?}; {} events seen", self.events.len());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads events until `done(all events so far)` holds (bounded).
    pub fn wait_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.events) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                panic!("{what}: not reached within {timeout:?}; {} events seen", self.events.len());
            };
            if self.take(left).is_none() {
                panic!("{what}: not reached within {timeout:?}; {} events seen", self.events.len());
            }
            // Read what is already there before checking again, so that
            // checking stays cheap with many events.
            while !self.events.len().is_multiple_of(1024) && self.take(Duration::from_millis(50)).is_some() {}
        }
    }

    /// Sends `signal` (0: none, it was sent already), reads the rest of the
    /// output and waits for exit (bounded).
    pub fn stop_with(mut self, signal: i32) -> (Vec<Value>, ExitStatus, String) {
        if signal != 0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, signal) };
        }
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.events.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("the agent did not exit within {WAIT:?} of signal {signal}");
                }
            }
        }
        let status = self.child.wait().expect("wait");
        let mut err = String::new();
        let _ = self.child.stderr.take().map(|mut s| s.read_to_string(&mut err));
        (std::mem::take(&mut self.events), status, err)
    }

    pub fn stop(self) -> Vec<Value> {
        let (events, status, err) = self.stop_with(libc::SIGINT);
        assert!(status.success(), "agent exited with {status}: {err}");
        events
    }
}

/// An agent a failed test did not stop is killed (with `--output none` it
/// never writes to stdout, so it would not notice the test is gone; kill -9
/// detaches its programs, which are attached by link).
impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /metrics` from the agent on 127.0.0.1:`port` (Prometheus text
/// format, or OpenMetrics), with curl; None if it does not answer 200.
pub fn metrics(port: u16, openmetrics: bool) -> Option<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-f", "--max-time", "10"]);
    if openmetrics {
        cmd.args(["-H", "Accept: application/openmetrics-text; version=1.0.0"]);
    }
    let out = cmd.arg(format!("http://127.0.0.1:{port}/metrics")).output().expect("curl (apt-get install curl)");
    out.status.success().then(|| String::from_utf8(out.stdout).expect("UTF-8 metrics"))
}

/// The value of the sample `name{labels}` (labels exactly as written) in
/// a Prometheus text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' '))).map(|v| v.trim().parse().expect("a number"))
}

/// Events of `type` from process `pid`.
pub fn of(events: &[Value], ty: &str, pid: u32) -> Vec<Value> {
    events.iter().filter(|e| e["type"] == ty && e["process"]["pid"] == pid).cloned().collect()
}

/// A helper process whose stdout lines we read one by one (killed when
/// dropped, if still running).
pub struct Peer {
    pub child: Child,
    lines: Receiver<String>,
}

impl Peer {
    pub fn python(args: &[&str]) -> Peer {
        Peer::script("tcp_peer.py", args)
    }

    /// Runs `tests/helpers/<name>` with python3.
    pub fn script(name: &str, args: &[&str]) -> Peer {
        let script = format!("{}/tests/helpers/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start python3 (apt-get install python3)");
        let lines = stdout_lines(&mut child);
        Peer { child, lines }
    }

    pub fn line(&self) -> String {
        self.lines.recv_timeout(WAIT).expect("peer printed nothing in time")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(mut self) {
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "peer failed: {status}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child's stdout, line by line, read on a thread of its own.
fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let stdout: ChildStdout = child.stdout.take().expect("stdout");
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
