//! The running syscall's number and first arguments, for the hooks that
//! need its buffer (payload capture) or its fd (the syscall traffic
//! hooks). Two ways, chosen at load time (`OFFSETS.has_task_pt_regs`):
//!
//! - 5.15+: the task's saved registers (`bpf_task_pt_regs`), read with
//!   plain loads through their BTF pointer: nothing to record beforehand.
//! - before 5.15: the entry tracepoints of the socket I/O syscalls record
//!   each call's arguments per thread ([`SYSCALL_ARGS`]); a hook that reads
//!   them from inside a socket function checks that the recorded fd is the
//!   socket it runs for, so an entry left by another syscall is never
//!   taken for this one. Entries are overwritten by the thread's next
//!   call, removed at its syscall exit where that is hooked and when the
//!   thread exits, and the map is an LRU: bounded either way.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};

use crate::{
    kernel::{offset, sock_of_fd, syscall_regs},
    syscall_abi::{REGS_ARGS, load_syscall_nr},
};

/// A syscall's number and its first four arguments.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    pub nr: u64,
    pub args: [u64; 4],
}

/// Calls in progress by thread (`pid_tgid`), before 5.15.
#[map]
pub static SYSCALL_ARGS: LruHashMap<u64, Call> = LruHashMap::with_max_entries(16384, 0);

/// `syscalls:sys_enter_{read,readv,recvfrom,recvmsg,write,writev,sendto,sendmsg}`:
/// `int __syscall_nr` at 8, the arguments at 16, 24, 32, 40.
#[tracepoint]
pub fn sys_enter_io(ctx: TracePointContext) -> u32 {
    if let Ok(call) = read_entry(&ctx) {
        // By reference: by value copies the record again on the stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = SYSCALL_ARGS.insert(bpf_get_current_pid_tgid(), &call, 0);
    }
    0
}

#[inline(always)]
fn read_entry(ctx: &TracePointContext) -> Result<Call, i64> {
    // SAFETY: documented record layout.
    unsafe {
        Ok(Call { nr: ctx.read_at::<i32>(8)? as u64, args: [ctx.read_at(16)?, ctx.read_at(24)?, ctx.read_at(32)?, ctx.read_at(40)?] })
    }
}

/// Whether calls are found from the saved registers (else from
/// [`SYSCALL_ARGS`]).
#[inline(always)]
fn from_registers() -> bool {
    offset!(has_task_pt_regs) != 0
}

/// A `u64` in the task's saved registers: a plain load, which the verifier
/// allows through the BTF pointer `bpf_task_pt_regs` returns.
#[inline(always)]
fn reg(regs: u64, off: u32) -> u64 {
    // SAFETY: `regs` is the current task's `struct pt_regs *` (BTF typed);
    // `off` is a field of it (see `syscall_abi`).
    unsafe { core::ptr::read_volatile((regs + off as u64) as *const u64) }
}

/// The running syscall, as seen from a hook inside it or at its exit.
#[inline(always)]
pub fn current() -> Option<Call> {
    if from_registers() {
        let regs = syscall_regs();
        return Some(Call {
            nr: load_syscall_nr(regs),
            args: [reg(regs, REGS_ARGS[0]), reg(regs, REGS_ARGS[1]), reg(regs, REGS_ARGS[2]), reg(regs, REGS_ARGS[3])],
        });
    }
    // SAFETY: the value is copied out of the map.
    unsafe { SYSCALL_ARGS.get(bpf_get_current_pid_tgid()) }.copied()
}

/// The running syscall, when it is the one moving bytes on socket `sk`:
/// recorded entries are checked against the socket (a hook in a socket
/// function may run in a syscall whose entry was not recorded).
#[inline(always)]
pub fn current_on(sk: u64) -> Option<Call> {
    let call = current()?;
    if !from_registers() && sock_of_fd(call.args[0]).ok()? != sk {
        return None;
    }
    Some(call)
}

/// Forgets the thread's recorded call (its syscall exit, or its exit).
#[inline(always)]
pub fn forget() {
    if !from_registers() {
        let _ = SYSCALL_ARGS.remove(bpf_get_current_pid_tgid());
    }
}
