//! What the benchmarks read about a process from /proc.

/// CPU seconds (user + system) of `pid`, with those of its waited-for
/// children; None once the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    let ticks = f.get(11)? + f.get(12)? + f.get(13)? + f.get(14)?;
    // SAFETY: sysconf has no preconditions.
    Some(ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// A memory figure of `pid` from /proc/<pid>/status in MB, e.g. `VmRSS`
/// (now) or `VmHWM` (peak).
pub fn memory_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds of every thread of `pid`, from `/proc/<pid>/task/*/schedstat`
/// (time on CPU in nanoseconds: finer than clock ticks); None once gone.
pub fn thread_cpu_seconds(pid: u32) -> Option<f64> {
    let mut ns: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}
