//! Reading the current task and kernel structs at offsets the agent took
//! from the running kernel's BTF (see `masdeepflow_common::config`).
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
    bpf_probe_read_kernel,
};
use masdeepflow_common::{ProcessInfo, config::KernelConfig};

/// Written by the agent before load.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelConfig = KernelConfig {
    task_mm: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_exit_code: 0,
    task_files: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    sock_sk_err: 0,
    exit_group_dead: 0,
    close_on_state: 0,
    capture_bytes: 0,
    comm_filter_len: 0,
    mysql_capture_bytes: 0,
    adopt_mysql: 0,
    skc_family: 0,
    skc_state: 0,
    skc_num: 0,
    skc_dport: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    sk_protocol: 0,
    has_task_pt_regs: 0,
    comm_filter: [[0; 16]; masdeepflow_common::config::COMM_FILTER_MAX],
};

/// One offset from `OFFSETS`, read so the compiler cannot fold the zero.
macro_rules! offset {
    ($field:ident) => {{
        // SAFETY: reading a global the loader initialised.
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const $crate::kernel::OFFSETS.$field) };
        v
    }};
}
pub(crate) use offset;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read_at<T>(base: u64, off: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.map_err(i64::from)
}

/// The current `struct task_struct *`.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: a helper with no preconditions.
    unsafe { bpf_get_current_task() }
}

/// The process running now (only meaningful in process context).
#[inline(always)]
pub fn current_process() -> ProcessInfo {
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = current_task();
    let parent: u64 = read_at(task, offset!(task_real_parent)).unwrap_or(0);
    let ppid: u32 = if parent == 0 { 0 } else { read_at(parent, offset!(task_tgid)).unwrap_or(0) };
    ProcessInfo {
        // SAFETY: a helper with no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        ppid,
        uid: bpf_get_current_uid_gid() as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// The pid and tid of the current task, the rest of its record left zero.
#[inline(always)]
pub fn current_ids() -> ProcessInfo {
    let pid_tgid = bpf_get_current_pid_tgid();
    ProcessInfo { pid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32, ..ProcessInfo::default() }
}

/// Whether processes are filtered by `comm` in the kernel (`--comm`).
#[inline(always)]
pub fn comm_filtered() -> bool {
    offset!(comm_filter_len) != 0
}

/// Whether a process with this `comm` is reported (`--comm` in the kernel).
#[inline(always)]
pub fn comm_wanted(comm: &[u8; 16]) -> bool {
    let n = offset!(comm_filter_len);
    if n == 0 {
        return true;
    }
    let want = comm_words(comm);
    for i in 0..masdeepflow_common::config::COMM_FILTER_MAX {
        if (i as u32) < n {
            // SAFETY: reading a global the loader initialised.
            let name = unsafe { core::ptr::read_volatile(&raw const OFFSETS.comm_filter[i]) };
            if comm_words(&name) == want {
                return true;
            }
        }
    }
    false
}

#[inline(always)]
fn comm_words(c: &[u8; 16]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&c[..8]);
    b.copy_from_slice(&c[8..]);
    (u64::from_ne_bytes(a), u64::from_ne_bytes(b))
}

/// The `struct sock *` behind file descriptor `fd` of the current task
/// (task->files->fdt->fd[fd]->private_data->sk). For an fd that is not a
/// socket this is some other pointer, which no map holds.
#[inline(always)]
pub fn sock_of_fd(fd: u64) -> Result<u64, i64> {
    let files: u64 = read_at(current_task(), offset!(task_files))?;
    let fdt: u64 = read_at(files, offset!(files_fdt))?;
    let max_fds: u32 = read_at(fdt, offset!(fdt_max_fds))?;
    if fd >= max_fds as u64 {
        return Err(0);
    }
    let fd_array: u64 = read_at(fdt, offset!(fdt_fd))?;
    let file: u64 = read_at(fd_array + fd * 8, 0)?;
    let socket: u64 = read_at(file, offset!(file_private_data))?;
    read_at(socket, offset!(socket_sk))
}

/// The current task's saved user registers (`struct pt_regs *`), where the
/// running syscall's arguments are.
#[inline(always)]
pub fn syscall_regs() -> u64 {
    // SAFETY: helpers on the current task; the result is only read through
    // bpf_probe_read_kernel.
    unsafe { aya_ebpf::helpers::bpf_task_pt_regs(aya_ebpf::helpers::bpf_get_current_task_btf()) as u64 }
}
