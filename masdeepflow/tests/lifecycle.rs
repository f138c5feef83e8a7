//! The agent's behaviour as a program: signals, closed stdout, bad flags,
//! missing privileges, and nothing left attached after exit. One test so
//! that the "nothing attached" checks see no other agent.
mod support;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{AGENT, Agent, require_root};

/// Programs of ours currently loaded in the kernel (by name, as bpftool
/// shows them: at most 15 characters).
fn our_programs() -> usize {
    let out = Command::new("bpftool").args(["prog", "show"]).output().expect("bpftool (apt-get install bpftool)");
    assert!(out.status.success(), "bpftool prog show failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let ours = [
        "sched_process_e",
        "inet_sock_set_s",
        "tcp_destroy_soc",
        "sys_exit_accept",
        "sock_send_lengt",
        "sock_recv_lengt",
        "cgroup_mkdir",
        "cgroup_rmdir",
    ];
    text.lines().filter(|l| ours.iter().any(|n| l.contains(&format!("name {n}")))).count()
}

/// Waits (at most `secs`) until none of our programs is loaded. After the
/// agent exits, the kernel frees its tracepoint links and then their
/// programs after an RCU grace period, so they can stay listed a moment.
fn assert_programs_gone(secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while our_programs() != 0 {
        assert!(Instant::now() < deadline, "programs still loaded {secs} s after {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `proto port` of every listening TCP or bound UDP socket that `pid` holds.
fn listening_sockets(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(String::from))
        .collect();
    let mut found = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).unwrap_or_default();
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f[1], f[3], f[9]);
            let listening = proto.starts_with("udp") || state == "0A";
            if listening && inodes.iter().any(|i| i == inode) {
                found.push(format!("{proto} {local}"));
            }
        }
    }
    found
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn agent_lifecycle() {
    require_root();
    assert_eq!(our_programs(), 0, "programs of ours are loaded before the test");

    // SIGTERM: flush, final stats, exit 0, nothing stays attached.
    let agent = Agent::start(&[]);
    assert_eq!(our_programs(), 9, "the agent's programs are not all loaded");
    let start = agent.events[0].clone();
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(start["probes"].as_array().unwrap().len(), 10, "{start}");
    let (events, status, stderr) = agent.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status {status}: {stderr}");
    assert_eq!(events.last().unwrap()["type"], "agent_stats");
    assert_programs_gone(2, "SIGTERM");

    // SIGINT too.
    let (_, status, stderr) = Agent::start(&["--events", "exec"]).stop_with(libc::SIGINT);
    assert!(status.success(), "{stderr}");
    assert_programs_gone(2, "SIGINT");

    // stdout closed by its reader (`| head -1`): quiet exit 0.
    let mut child = Command::new(AGENT).args(["--events", "exec"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("agent_start"));
    drop(out);
    // Give it something to write.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        Command::new("/bin/true").status().unwrap();
    }
    let status = wait_exit(&mut child);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "closed stdout: {status}, stderr {err:?}");
    assert_eq!(err, "", "closed stdout must be quiet");
    assert_programs_gone(2, "a closed stdout");

    // Unknown flag: usage error, exit 2.
    let out = Command::new(AGENT).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--bogus'"));
    let out = Command::new(AGENT).args(["--flow-interval", "0s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Unprivileged: one line naming what is missing, exit 1, no panic.
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", AGENT])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing privileges: CAP_BPF, CAP_PERFMON"), "{err}");
    assert!(!err.contains("panicked"));
    assert!(out.stdout.is_empty());

    // Least privilege: uid 0 with only CAP_BPF and CAP_PERFMON runs every
    // family; without either, one line names the missing one.
    let mut exact = Command::new("setpriv")
        .args(["--bounding-set=-all,+bpf,+perfmon", "--inh-caps=-all", AGENT, "--events", "exec"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(exact.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("agent_start"), "with CAP_BPF+CAP_PERFMON: {first}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(exact.id() as i32, libc::SIGINT) };
    assert!(wait_exit(&mut exact).success());
    for (keep, missing) in [("+bpf", "CAP_PERFMON"), ("+perfmon", "CAP_BPF")] {
        let out = Command::new("setpriv").args([&format!("--bounding-set=-all,{keep}"), "--inh-caps=-all", AGENT]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(
            err.trim(),
            format!("masdeepflow: error: missing privileges: {missing} (run as root, or grant {missing} or CAP_SYS_ADMIN)")
        );
    }

    // No listening socket of ours while running.
    let agent = Agent::start(&[]);
    assert_eq!(listening_sockets(agent.pid()), Vec::<String>::new(), "the agent listens on a port");
    // kill -9 under load: everything goes with the process, and a new agent starts cleanly.
    let load = std::thread::spawn(|| {
        for _ in 0..200 {
            Command::new("/bin/true").status().unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    let (_, status, _) = agent.stop_with(0);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    load.join().unwrap();
    assert_programs_gone(10, "kill -9");
    let (events, status, err) = Agent::start(&["--events", "exec"]).stop_with(libc::SIGTERM);
    assert!(status.success(), "restart after kill -9: {err}");
    assert_eq!(events.first().unwrap()["type"], "agent_start");
    assert_programs_gone(2, "SIGTERM after a restart");

    // `check` passes on this machine.
    let out = Command::new(AGENT).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("features: exec ok, exit ok, tcp ok, flow ok"), "{text}");
}
