//! End to end: real execs and exits seen by the running agent.
mod support;

use std::{os::unix::process::ExitStatusExt as _, process::Command};

use support::{Agent, of};

#[test]
fn exec_reports_exact_argv_parent_and_uid() {
    let mut agent = Agent::start(&["--events", "exec,exit"]);
    let child = Command::new("/bin/echo").args(["hello world", "q\"uote", "new\nline", ""]).output().expect("echo");
    assert!(child.status.success());
    let mut c = Command::new("/bin/echo").arg("second").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    let exec = agent.expect("exec of /bin/echo second", |e| e["type"] == "process_exec" && e["process"]["pid"] == pid);
    assert_eq!(exec["filename"], "/bin/echo");
    assert_eq!(exec["args"], serde_json::json!(["/bin/echo", "second"]));
    assert_eq!(exec["args_truncated"], false);
    assert_eq!(exec["process"]["ppid"], std::process::id());
    assert_eq!(exec["process"]["tid"], pid);
    assert_eq!(exec["process"]["uid"], 0);
    assert_eq!(exec["process"]["comm"], "echo");
    let hostile = agent
        .expect("exec with quotes and newlines", |e| e["type"] == "process_exec" && e["args"].get(1).is_some_and(|a| a == "hello world"));
    assert_eq!(hostile["args"], serde_json::json!(["/bin/echo", "hello world", "q\"uote", "new\nline", ""]));
    let exit = agent.expect("exit of echo", |e| e["type"] == "process_exit" && e["process"]["pid"] == pid);
    assert_eq!(exit["exit_code"], 0);
    assert_eq!(exit["signal"], serde_json::Value::Null);
    assert!(exit["duration_ns"].as_u64().is_some_and(|d| d > 0), "{exit}");
    agent.stop();
}

#[test]
fn exit_codes_and_signals() {
    let mut agent = Agent::start(&["--events", "exec,exit"]);
    let mut three = Command::new("/bin/sh").args(["-c", "exit 3"]).spawn().unwrap();
    let three_pid = three.id();
    assert_eq!(three.wait().unwrap().code(), Some(3));
    let mut sleeper = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let sleeper_pid = sleeper.id();
    agent.expect("exec of sleep", |e| e["type"] == "process_exec" && e["process"]["pid"] == sleeper_pid);
    sleeper.kill().unwrap();
    assert_eq!(sleeper.wait().unwrap().signal(), Some(9));

    let exit = agent.expect("exit 3", |e| e["type"] == "process_exit" && e["process"]["pid"] == three_pid);
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(exit["signal"], serde_json::Value::Null);
    let killed = agent.expect("killed sleep", |e| e["type"] == "process_exit" && e["process"]["pid"] == sleeper_pid);
    assert_eq!(killed["exit_code"], serde_json::Value::Null);
    assert_eq!(killed["signal"], "SIGKILL");
    assert_eq!(killed["process"]["comm"], "sleep");
    assert_eq!(killed["core_dumped"], false);
    agent.stop();
}

#[test]
fn burst_of_300_execs_none_lost() {
    let agent = Agent::start(&["--events", "exec,exit"]);
    let mut pids = Vec::new();
    for i in 0..300 {
        let mut c = Command::new("/bin/true").arg(format!("burst-{i}")).spawn().unwrap();
        pids.push((c.id(), i));
        c.wait().unwrap();
    }
    let events = agent.stop();
    for (pid, i) in &pids {
        let execs = of(&events, "process_exec", *pid);
        assert_eq!(execs.len(), 1, "exec of burst-{i} (pid {pid}) seen {} times", execs.len());
        assert_eq!(execs[0]["args"], serde_json::json!(["/bin/true", format!("burst-{i}")]));
        assert_eq!(of(&events, "process_exit", *pid).len(), 1, "exit of burst-{i}");
    }
    let stats = events.iter().rev().find(|e| e["type"] == "agent_stats").expect("final agent_stats");
    for (k, v) in stats["lost"]["kernel_ring_buffer"].as_object().unwrap() {
        assert_eq!(v, 0, "kernel lost {k}");
    }
    for (k, v) in stats["lost"]["user_queue"].as_object().unwrap() {
        assert_eq!(v, 0, "queue lost {k}");
    }
    assert!(stats["emitted"]["process_exec"].as_u64().unwrap() >= 300);
    // The final stats count exactly what was written before them.
    let written = events.iter().filter(|e| e["type"] == "process_exec").count() as u64;
    assert_eq!(stats["emitted"]["process_exec"], written);
}

#[test]
fn hostile_argv_gives_one_valid_json_line() {
    use std::{ffi::OsStr, os::unix::ffi::OsStrExt as _};
    let mut agent = Agent::start(&["--events", "exec"]);
    let hostile = OsStr::from_bytes(b"\xff\xfe\x1b[0m\"quoted\"\nnext\\line\x01");
    let mut c = Command::new("/bin/echo").arg(hostile).arg("}{\"type\":\"fake\"}").stdout(std::process::Stdio::null()).spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    let exec = agent.expect("exec with hostile argv", |e| e["type"] == "process_exec" && e["process"]["pid"] == pid);
    assert_eq!(
        exec["args"],
        serde_json::json!(["/bin/echo", "\u{fffd}\u{fffd}\u{1b}[0m\"quoted\"\nnext\\line\u{1}", "}{\"type\":\"fake\"}"])
    );
    let events = agent.stop();
    assert!(!events.iter().any(|e| e["type"] == "fake"), "argv must not inject events");
}

/// A fresh directory for one test, removed at the end.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mdf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.join("mnt")).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn exec_in(dir: &std::path::Path, program: &str, args: &[&str]) -> u32 {
    let mut c = Command::new(program).args(args).current_dir(dir).spawn().unwrap();
    let pid = c.id();
    assert!(c.wait().unwrap().success());
    pid
}

/// The working directory is walked in the kernel at exec: exact for
/// processes gone long before the agent reads their event, across a mount
/// point, as seen inside a chroot, and cut (innermost part kept) when deep.
#[test]
fn cwd_is_exact_for_short_lived_processes_across_mounts_and_in_a_chroot() {
    let scratch = Scratch::new("cwd");
    let plain = scratch.0.join("a b").join("c\"d");
    std::fs::create_dir_all(&plain).unwrap();
    // A tmpfs mounted below the scratch directory, and a directory in it.
    let mnt = scratch.0.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mount").args(["-t", "tmpfs", "mdf-cwd"]).arg(&mnt).status().unwrap().success());
    let mounted = mnt.join("inside");
    std::fs::create_dir(&mounted).unwrap();
    // A chroot with a static busybox; its shell changes into /work first.
    let root = scratch.0.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("work/here")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    // 70 components: deeper than the kernel walks (48).
    let mut deep = scratch.0.join("deep");
    for i in 0..70 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    // 6 components of 120 bytes: longer than the record's 512 bytes.
    let mut long = scratch.0.join("long");
    for i in 0..6 {
        long.push(format!("{i}{}", "x".repeat(119)));
    }
    std::fs::create_dir_all(&long).unwrap();

    let agent = Agent::start(&["--events", "exec"]);
    let plain_pids: Vec<u32> = (0..50).map(|_| exec_in(&plain, "/bin/true", &[])).collect();
    let mounted_pid = exec_in(&mounted, "/bin/true", &[]);
    let root_pid = exec_in(std::path::Path::new("/"), "/bin/true", &[]);
    let mut chrooted = Command::new("chroot")
        .arg(&root)
        .args(["/bin/busybox", "sh", "-c", "cd /work/here && exec /bin/busybox true mdf-chrooted"])
        .spawn()
        .unwrap();
    assert!(chrooted.wait().unwrap().success());
    let deep_pid = exec_in(&deep, "/bin/true", &[]);
    let long_pid = exec_in(&long, "/bin/true", &[]);
    let events = agent.stop();

    let exec_of = |pid: u32| {
        let execs = of(&events, "process_exec", pid);
        assert_eq!(execs.len(), 1, "exec of pid {pid}");
        execs[0].clone()
    };
    let text = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for pid in &plain_pids {
        let e = exec_of(*pid);
        assert_eq!(e["cwd"], text(&plain), "{e}");
        assert_eq!(e["cwd_truncated"], false);
    }
    assert_eq!(exec_of(mounted_pid)["cwd"], text(&mounted));
    assert_eq!(exec_of(root_pid)["cwd"], "/");
    let chroot_exec = events
        .iter()
        .find(|e| e["type"] == "process_exec" && e["args"] == serde_json::json!(["/bin/busybox", "true", "mdf-chrooted"]))
        .expect("the chrooted exec");
    assert_eq!(chroot_exec["cwd"], "/work/here", "the path as the chrooted process sees it");
    assert_eq!(chroot_exec["cwd_truncated"], false);

    let deep_exec = exec_of(deep_pid);
    assert_eq!(deep_exec["cwd_truncated"], true);
    let innermost: String = (22..70).map(|i| format!("/d{i}")).collect();
    assert_eq!(deep_exec["cwd"], innermost, "the 48 innermost components");
    let long_exec = exec_of(long_pid);
    assert_eq!(long_exec["cwd_truncated"], true);
    let tail: String = (2..6).map(|i| format!("/{i}{}", "x".repeat(119))).collect();
    assert_eq!(long_exec["cwd"], tail, "the innermost components that fit in 512 bytes");
    drop(scratch);
}
