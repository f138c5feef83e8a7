//! cgroup2 directories: `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir`.
//! Record: `int root` at 8 (0 is the cgroup2 hierarchy), `int level` 12,
//! `u64 id` 16, `__data_loc char[] path` 24. v1 hierarchies are ignored:
//! event cgroup ids are cgroup2 ids.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use masdeepflow_common::{EventHeader, EventKind, ProcessInfo, cgroup::CgroupRecord, stats::lost_index};

use crate::maps::{EVENTS, count, wakeup_flags};

#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    report(&ctx, EventKind::CgroupMkdir);
    0
}

#[tracepoint]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    report(&ctx, EventKind::CgroupRmdir);
    0
}

#[inline(always)]
fn report(ctx: &TracePointContext, kind: EventKind) {
    // SAFETY: documented record layout.
    let Ok(root) = (unsafe { ctx.read_at::<i32>(8) }) else { return };
    if root != 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<CgroupRecord>(0) else {
        count(lost_index(kind as u32));
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is a reserved slot of the right size; every field is
    // written before submit.
    unsafe {
        (*rec).header = EventHeader { kind: kind as u32, has_process: 0, ts_ns: bpf_ktime_get_ns(), process: ProcessInfo::default() };
        (*rec).id = ctx.read_at::<u64>(16).unwrap_or(0);
        (*rec).level = ctx.read_at::<i32>(12).unwrap_or(0) as u32;
        (*rec).path_len = 0;
        let loc: u32 = ctx.read_at(24).unwrap_or(0);
        let path = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        if let Ok(s) = bpf_probe_read_kernel_str_bytes(path, &mut (*rec).path) {
            (*rec).path_len = s.len() as u32;
        }
    }
    entry.submit(wakeup_flags());
}
