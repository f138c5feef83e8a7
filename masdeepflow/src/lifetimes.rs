//! Exec times of live processes, for `process_exit.duration_ns`.
use std::collections::HashMap;

/// Bounded map of pid -> exec time (kernel ns).
pub struct ExecTimes {
    by_pid: HashMap<u32, u64>,
    cap: usize,
}

impl ExecTimes {
    pub fn new(cap: usize) -> Self {
        ExecTimes { by_pid: HashMap::new(), cap }
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// Remembers an exec. When full, forgets processes that no longer
    /// exist (their exit was not seen), then, if still full, drops this one.
    pub fn exec(&mut self, pid: u32, ktime_ns: u64) {
        if self.by_pid.len() >= self.cap && !self.by_pid.contains_key(&pid) {
            self.by_pid.retain(|p, _| std::path::Path::new(&format!("/proc/{p}")).exists());
            if self.by_pid.len() >= self.cap {
                return;
            }
        }
        self.by_pid.insert(pid, ktime_ns);
    }

    /// Time since the process's last exec, and forgets it.
    pub fn exit(&mut self, pid: u32, ktime_ns: u64) -> Option<u64> {
        self.by_pid.remove(&pid).map(|t| ktime_ns.saturating_sub(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_exec_and_exit_within_bounds() {
        let mut t = ExecTimes::new(2);
        t.exec(u32::MAX - 1, 100);
        t.exec(u32::MAX - 2, 100);
        // Full of pids that do not exist: they are pruned for the new one.
        t.exec(u32::MAX - 3, 150);
        assert_eq!(t.len(), 1);
        assert_eq!(t.exit(u32::MAX - 3, 400), Some(250));
        assert_eq!(t.exit(u32::MAX - 3, 500), None);
        assert_eq!(t.len(), 0);
    }
}
