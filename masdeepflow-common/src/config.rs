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
    /// turns HTTP detection off.
    pub capture_bytes: u32,
    /// Number of names in `comm_filter` in use; 0 reports every process.
    pub comm_filter_len: u32,
    /// Payload bytes to copy per send/receive of a MySQL connection
    /// (`payload::MYSQL_CAPTURE_BYTES`); 0 turns MySQL detection off.
    pub mysql_capture_bytes: u32,
    /// 1: adopt connections opened before the agent started when they are
    /// seen to speak MySQL (needs the `sock_common` offsets below).
    pub adopt_mysql: u32,
    /// `struct sock_common` (at the start of `struct sock`): family, state,
    /// local port (host order), peer port (network order), IPv4 peer and
    /// local addresses, IPv6 peer and local addresses; `struct sock`'s
    /// `sk_type` and `sk_protocol`.
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_protocol: u32,
    /// 1 when `bpf_task_pt_regs` exists (5.15+): syscall arguments are read
    /// from the saved registers; 0: from their recorded entries.
    pub has_task_pt_regs: u32,
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
