//! Bytes moved by established sockets on kernels without
//! `sock:sock_send_length`/`sock_recv_length` (before 6.3): the exits of
//! the socket I/O syscalls, `syscalls:sys_exit_{read,readv,recvfrom,
//! recvmsg}` and `sys_exit_{write,writev,sendto,sendmsg,sendfile64}`. The
//! fd comes from the syscall's saved registers, or before 5.15 from its
//! entry (see `syscall_call`), and is resolved to its
//! `struct sock`; only tracked TCP sockets are counted. Costlier than the
//! sock tracepoints (every read/write on the host is looked at), so the
//! agent uses it only when those are missing, or when asked to.
//!
//! Record: `int __syscall_nr` at 8, `long ret` at 16.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    kernel::sock_of_fd,
    syscall_abi::{MSG_PEEK, SYS_RECVFROM, SYS_RECVMSG},
    syscall_call,
    traffic::count_and_capture,
};

#[tracepoint]
pub fn sys_exit_sent(ctx: TracePointContext) -> u32 {
    let _ = try_syscall(&ctx, true);
    syscall_call::forget();
    0
}

#[tracepoint]
pub fn sys_exit_received(ctx: TracePointContext) -> u32 {
    let _ = try_syscall(&ctx, false);
    syscall_call::forget();
    0
}

#[inline(always)]
fn try_syscall(ctx: &TracePointContext, sent: bool) -> Result<(), i64> {
    // SAFETY: documented record layout.
    let ret: i64 = unsafe { ctx.read_at(16)? };
    if ret <= 0 {
        return Ok(());
    }
    let call = syscall_call::current().ok_or(0i64)?;
    // A recorded entry must be this syscall's (`__syscall_nr` at 8).
    // SAFETY: documented record layout.
    if call.nr != unsafe { ctx.read_at::<i32>(8)? } as u64 {
        return Ok(());
    }
    if !sent {
        // Peeked bytes are read again later: not counted.
        let flags = match call.nr {
            SYS_RECVFROM => call.args[3],
            SYS_RECVMSG => call.args[2],
            _ => 0,
        };
        if flags & MSG_PEEK != 0 {
            return Ok(());
        }
    }
    let sk = sock_of_fd(call.args[0])?;
    // (an fd that may not be a socket: no adoption)
    count_and_capture(sk, sent, ret as u32, false);
    Ok(())
}
