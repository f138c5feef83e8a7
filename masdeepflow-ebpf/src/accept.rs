//! Accepted connections: `syscalls:sys_exit_accept` and `sys_exit_accept4`,
//! in the accepting process. The returned fd is resolved to its
//! `struct sock` (task->files->fdt->fd[fd]->private_data->sk) and, when that
//! socket was seen established, it gets its owner and a `tcp_accept` is sent.
//!
//! Record: `long ret` at 16.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use masdeepflow_common::EventKind;

use crate::{
    kernel::{current_process, sock_of_fd},
    maps::SOCKETS,
    tcp_state::emit,
};

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = try_accept(&ctx);
    0
}

#[inline(always)]
fn try_accept(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: documented record layout.
    let fd: i64 = unsafe { ctx.read_at(16)? };
    if fd < 0 {
        return Ok(());
    }
    let sk = sock_of_fd(fd as u64)?;
    let Some(state) = SOCKETS.get_ptr_mut(sk) else {
        return Ok(());
    };
    let owner = current_process();
    // SAFETY: `state` points into the map; concurrent writers only add to
    // the byte counters.
    let copy = unsafe {
        (*state).owner = owner;
        (*state).has_owner = 1;
        *state
    };
    // SAFETY: a helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(EventKind::TcpAccept, now, copy.endpoints, copy.role, 1, owner, 0, 0, 0, 0, copy.id);
    Ok(())
}
