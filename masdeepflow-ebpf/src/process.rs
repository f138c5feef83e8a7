//! Process exec and exit: `sched:sched_process_exec`, `sched:sched_process_exit`.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf},
    macros::tracepoint,
    programs::TracePointContext,
};
use masdeepflow_common::{
    EventHeader, EventKind,
    process::{ARGS_MAX, ExecRecord, ExitRecord},
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
    }
    entry.submit(wakeup_flags());
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
