//! Process exec and exit: `sched:sched_process_exec`, `sched:sched_process_exit`.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use masdeepflow_common::{
    EventHeader, EventKind,
    process::{ARGS_MAX, CWD_COMPLETE, CWD_DEPTH, CWD_MAX, CWD_TRUNCATED, ExecRecord, ExitRecord},
    stats::lost_index,
};

use aya_ebpf::helpers::bpf_get_current_comm;

use crate::{
    kernel::{comm_wanted, current_process, current_task, offset, read_at},
    maps::{EVENTS, count, wakeup_flags},
};

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`,
/// fired after a successful exec, in the new program's context. Record:
/// `__data_loc char[] filename` at 8.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    try_exec(&ctx);
    0
}

#[inline(always)]
fn try_exec(ctx: &TracePointContext) {
    if !comm_wanted(&bpf_get_current_comm().unwrap_or([0; 16])) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count(lost_index(EventKind::ProcessExec as u32));
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved ring buffer slot of the right size;
    // every field is written before submit.
    unsafe {
        (*rec).header =
            EventHeader { kind: EventKind::ProcessExec as u32, has_process: 1, ts_ns: bpf_ktime_get_ns(), process: current_process() };
        (*rec).filename_len = 0;
        (*rec).args_len = 0;
        (*rec).args_truncated = 0;
        (*rec)._pad = 0;
        (*rec).cwd_start = CWD_MAX as u32;
        (*rec).cwd_flags = 0;

        let loc: u32 = ctx.read_at(8).unwrap_or(0);
        let name = ctx.as_ptr_u8().add((loc & 0xffff) as usize);
        if let Ok(s) = bpf_probe_read_kernel_str_bytes(name, &mut (*rec).filename) {
            (*rec).filename_len = s.len() as u32;
        }

        let mm: u64 = read_at(current_task(), offset!(task_mm)).unwrap_or(0);
        if mm != 0 {
            let start: u64 = read_at(mm, offset!(mm_arg_start)).unwrap_or(0);
            let end: u64 = read_at(mm, offset!(mm_arg_end)).unwrap_or(0);
            let mut len = end.wrapping_sub(start) as usize;
            if end < start {
                len = 0;
            }
            if len > ARGS_MAX {
                len = ARGS_MAX;
                (*rec).args_truncated = 1;
            }
            if len > 0 && bpf_probe_read_user_buf(start as *const u8, &mut (&mut (*rec).args)[..len]).is_ok() {
                (*rec).args_len = len as u32;
            }
        }
        walk_cwd(rec);
    }
    entry.submit(wakeup_flags());
}

/// Writes the current task's working directory into `rec.cwd`, from its
/// innermost component backwards, up to the task's root (crossing mount
/// points), as `d_path` would but without its locks: a rename racing the
/// walk may show either name, never memory outside the record.
///
/// # Safety
/// `rec` points at a reserved ring buffer slot.
#[inline(always)]
unsafe fn walk_cwd(rec: *mut ExecRecord) {
    const MASK: u32 = CWD_MAX as u32 - 1;
    const _: () = assert!(CWD_MAX.is_power_of_two());
    const _: () = assert!(masdeepflow_common::process::CWD_SLACK >= 256);
    let task_fs = offset!(task_fs);
    if task_fs == 0 {
        return;
    }
    let Ok(fs) = read_at::<u64>(current_task(), task_fs) else { return };
    let (pwd, root, path_mnt, path_dentry) = (offset!(fs_pwd), offset!(fs_root), offset!(path_mnt), offset!(path_dentry));
    let (Ok(root_mnt), Ok(root_dentry), Ok(mut mnt), Ok(mut dentry)) = (
        read_at::<u64>(fs, root + path_mnt),
        read_at::<u64>(fs, root + path_dentry),
        read_at::<u64>(fs, pwd + path_mnt),
        read_at::<u64>(fs, pwd + path_dentry),
    ) else {
        return;
    };
    let (d_parent, d_name, qstr_len, qstr_name) = (offset!(dentry_parent), offset!(dentry_name), offset!(qstr_len), offset!(qstr_name));
    let (mnt_root_at, mount_mnt, mount_parent, mount_mountpoint) =
        (offset!(vfsmount_root), offset!(mount_mnt), offset!(mount_parent), offset!(mount_mountpoint));
    // SAFETY (all writes below): `cwd` has CWD_MAX + CWD_SLACK bytes; every
    // offset is masked below CWD_MAX and every length below 256. The write
    // position and the flags live in the record, not in registers: read
    // back, they are unknown to the verifier, so the states of the walk's
    // branches converge at each step instead of multiplying (48 steps of
    // tracked positions exceed its million instructions).
    let cwd = unsafe { (*rec).cwd.as_mut_ptr() };
    let pos_at = unsafe { &raw mut (*rec).cwd_start };
    let flags_at = unsafe { &raw mut (*rec).cwd_flags };
    unsafe { flags_at.write_volatile(CWD_TRUNCATED) };
    for _ in 0..CWD_DEPTH {
        if dentry == root_dentry && mnt == root_mnt {
            unsafe { flags_at.write_volatile(CWD_COMPLETE) };
            break;
        }
        let Ok(mnt_root) = read_at::<u64>(mnt, mnt_root_at) else { return unreadable(flags_at) };
        if dentry == mnt_root {
            // The top of a mount: go on from where it is mounted.
            let mount = mnt.wrapping_sub(u64::from(mount_mnt));
            let Ok(parent) = read_at::<u64>(mount, mount_parent) else { return unreadable(flags_at) };
            if parent == mount {
                // The namespace's root mount, outside the task's root.
                unsafe { flags_at.write_volatile(CWD_COMPLETE) };
                break;
            }
            let Ok(point) = read_at::<u64>(mount, mount_mountpoint) else { return unreadable(flags_at) };
            dentry = point;
            mnt = parent.wrapping_add(u64::from(mount_mnt));
            continue;
        }
        let Ok(parent) = read_at::<u64>(dentry, d_parent) else { return unreadable(flags_at) };
        if parent == dentry {
            unsafe { flags_at.write_volatile(CWD_COMPLETE) };
            break;
        }
        let (Ok(len), Ok(name)) = (read_at::<u32>(dentry, d_name + qstr_len), read_at::<u64>(dentry, d_name + qstr_name)) else {
            return unreadable(flags_at);
        };
        let pos = unsafe { pos_at.read_volatile() };
        if len == 0 || len > 255 || len + 1 > pos {
            break;
        }
        let pos = pos - (len + 1);
        // SAFETY: see above; the helper tolerates any source address.
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                cwd.add(((pos + 1) & MASK) as usize).cast(),
                len & 0xff,
                name as *const core::ffi::c_void,
            );
            *cwd.add((pos & MASK) as usize) = b'/';
            pos_at.write_volatile(pos);
        }
        dentry = parent;
    }
    let pos = unsafe { pos_at.read_volatile() };
    if pos == CWD_MAX as u32 {
        // The root itself.
        // SAFETY: see above.
        unsafe {
            *cwd.add(CWD_MAX - 1) = b'/';
            pos_at.write_volatile(CWD_MAX as u32 - 1);
        }
    }
}

/// A pointer the walk needed could not be read: no path.
#[inline(always)]
fn unreadable(flags_at: *mut u32) {
    // SAFETY: a field of the reserved record.
    unsafe { flags_at.write_volatile(0) };
}

/// `sched_process_exit(struct task_struct *p, bool group_dead)`, fired in the
/// exiting thread. Reported once per process: when the kernel says the
/// thread group is dead (`group_dead`, 6.16+), else when its leader exits.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

#[inline(always)]
fn try_exit(ctx: &TracePointContext) {
    // The thread's recorded syscall (kernels before 5.15) goes with it.
    crate::syscall_call::forget();
    crate::tls::forget_thread();
    let process = current_process();
    let group_dead_at = offset!(exit_group_dead);
    let last = if group_dead_at != 0 {
        // SAFETY: the agent checked the tracepoint's format for this field.
        unsafe { ctx.read_at::<u8>(group_dead_at as usize) }.unwrap_or(0) != 0
    } else {
        process.pid == process.tid
    };
    if !last || !comm_wanted(&process.comm) {
        return;
    }
    let exit_code: u32 = read_at(current_task(), offset!(task_exit_code)).unwrap_or(0);
    let record = ExitRecord {
        header: EventHeader {
            kind: EventKind::ProcessExit as u32,
            has_process: 1,
            // SAFETY: a helper with no preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            process,
        },
        exit_code,
        _pad: 0,
    };
    if EVENTS.output::<ExitRecord>(&record, wakeup_flags()).is_err() {
        count(lost_index(EventKind::ProcessExit as u32));
    }
}

/// Byte pointer to the tracepoint record.
trait CtxBytes {
    fn as_ptr_u8(&self) -> *const u8;
}

impl CtxBytes for TracePointContext {
    fn as_ptr_u8(&self) -> *const u8 {
        use aya_ebpf::EbpfContext as _;
        self.as_ptr() as *const u8
    }
}
