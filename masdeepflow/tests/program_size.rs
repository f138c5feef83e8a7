//! Deterministic guard of the kernel side's per-event work: the number of
//! instructions the verifier processes for each program (`verified_insns`,
//! reported by the kernel since 5.16) must stay within the bound documented
//! in `loader::VERIFIED_BOUNDS` and docs/benchmarks.md. `masdeepflow check`
//! loads every tracepoint program without attaching it and prints each
//! count against its bound.
mod support;

use std::process::Command;

#[test]
fn every_program_stays_within_its_verified_instruction_bound() {
    let out = Command::new(support::AGENT).arg("check").output().expect("running masdeepflow check");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut programs = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("program ")) {
        // program NAME: N instructions verified (bound B)
        let (name, rest) = line["program ".len()..].split_once(": ").unwrap_or_else(|| panic!("odd line {line:?}"));
        let count: u32 = rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count in {line:?}"));
        let bound: u32 = rest
            .rsplit_once("(bound ")
            .and_then(|(_, b)| b.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("program {name} has no documented bound: {line:?}"));
        assert!(count > 0, "{line}");
        assert!(count <= bound, "program {name} grew past its bound: {count} > {bound} verified instructions");
        programs.push(name.to_string());
    }
    for name in [
        "sched_process_exec",
        "sched_process_exit",
        "inet_sock_set_state",
        "tcp_destroy_sock",
        "sock_send_length",
        "sock_recv_length",
        "sys_exit_sent",
        "sys_exit_received",
    ] {
        assert!(programs.iter().any(|p| p == name), "check did not report {name}:\n{text}");
    }
}
