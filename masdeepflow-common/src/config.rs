//! Load-time configuration written into the kernel programs' globals.
//!
//! Kernel struct field offsets come from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) so one object runs on many kernels without
//! CO-RE.

/// Offsets (in bytes) of the kernel struct fields the programs read, and
/// the choices the agent made for this kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    pub task_mm: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_exit_code: u32,
    pub task_files: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub sock_sk_err: u32,
    /// Offset of `group_dead` in `sched_process_exit`'s record, or 0 when
    /// the kernel's tracepoint has no such field.
    pub exit_group_dead: u32,
    /// 1 when `tcp:tcp_destroy_sock` is missing: report `tcp_close` when the
    /// socket enters TCP_CLOSE instead of when it is destroyed.
    pub close_on_state: u32,
    /// Payload bytes to copy per send/receive of an HTTP connection; 0
    /// turns payload capture off.
    pub capture_bytes: u32,
    /// Number of names in `comm_filter` in use; 0 reports every process.
    pub comm_filter_len: u32,
    /// Payload records wake the agent once per this many ring buffer bytes
    /// (see [`wakes_agent`]); the agent's drain timer picks up the rest.
    pub wakeup_bytes: u32,
    /// Only processes with one of these command names (NUL padded) are
    /// reported, so that losses are counted for them alone.
    pub comm_filter: [[u8; crate::COMM_LEN]; COMM_FILTER_MAX],
}

/// Most command names the kernel filters on (more: filtered in user space).
pub const COMM_FILTER_MAX: usize = 4;

#[cfg(feature = "user")]
mod user {
    // SAFETY: only u32 fields.
    unsafe impl aya::Pod for super::KernelConfig {}
}

/// Whether a payload record of `size` bytes, written while `waiting` bytes
/// wait in the ring buffer, wakes the agent: when it takes the waiting data
/// across a multiple of `wakeup_bytes` (every record when that is 0).
///
/// Only crossings wake. While the agent drains, the data stays above the
/// first multiple; waking for every record then raised an interrupt (an
/// APIC write, a VM exit under virtualisation) per record. Every multiple
/// counts, not only the first, so a crossing that two CPUs writing at once
/// both missed is made up by the next one.
#[inline(always)]
pub fn wakes_agent(waiting: u64, size: u64, wakeup_bytes: u64) -> bool {
    wakeup_bytes == 0 || waiting / wakeup_bytes != (waiting + size) / wakeup_bytes
}

#[cfg(test)]
mod tests {
    use super::wakes_agent;

    #[test]
    fn only_crossings_wake_the_agent() {
        const T: u64 = 64 * 1024;
        // Below the threshold: no wake-up until a record crosses it.
        assert!(!wakes_agent(0, 1000, T));
        assert!(!wakes_agent(T - 1001, 1000, T));
        assert!(wakes_agent(T - 1000, 1000, T));
        assert!(wakes_agent(T - 10, 1000, T));
        // Above it (the agent is still draining): no wake-up per record...
        assert!(!wakes_agent(T, 1000, T));
        assert!(!wakes_agent(T + 5000, 1000, T));
        // ...but at the next multiple, in case the first crossing was missed.
        assert!(wakes_agent(2 * T - 1, 1000, T));
        // Records per wake-up with the agent asleep: one wake-up per T bytes.
        let (mut waiting, mut wakeups) = (0, 0);
        for _ in 0..100_000 {
            wakeups += wakes_agent(waiting, 1184, T) as u64;
            waiting += 1184;
        }
        assert_eq!(wakeups, waiting / T);
        // No threshold: every record wakes.
        assert!(wakes_agent(0, 1, 0));
    }
}
