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
