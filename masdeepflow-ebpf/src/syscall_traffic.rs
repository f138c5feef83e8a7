//! Bytes moved by established sockets on kernels without
//! `sock:sock_send_length`/`sock_recv_length` (before 6.3): the exits of
//! the socket I/O syscalls, `syscalls:sys_exit_{read,readv,recvfrom,
//! recvmsg}` and `sys_exit_{write,writev,sendto,sendmsg,sendfile64}`. The
//! fd comes from the syscall's saved registers and is resolved to its
//! `struct sock`; only tracked TCP sockets are counted. Costlier than the
//! sock tracepoints (every read/write on the host is looked at), so the
//! agent uses it only when those are missing, or when asked to.
//!
//! Record: `long ret` at 16.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    kernel::{read_at, sock_of_fd, syscall_regs},
    syscall_abi::{MSG_PEEK, REGS_DI, REGS_DX, REGS_ORIG_AX, REGS_R10, SYS_RECVFROM, SYS_RECVMSG},
    traffic::count_and_capture,
};

#[tracepoint]
pub fn sys_exit_sent(ctx: TracePointContext) -> u32 {
    let _ = try_syscall(&ctx, true);
    0
}

#[tracepoint]
pub fn sys_exit_received(ctx: TracePointContext) -> u32 {
    let _ = try_syscall(&ctx, false);
    0
}

#[inline(always)]
fn try_syscall(ctx: &TracePointContext, sent: bool) -> Result<(), i64> {
    // SAFETY: documented record layout.
    let ret: i64 = unsafe { ctx.read_at(16)? };
    if ret <= 0 {
        return Ok(());
    }
    let regs = syscall_regs();
    if !sent {
        // Peeked bytes are read again later: not counted.
        let nr: u64 = read_at(regs, REGS_ORIG_AX)?;
        let flags: u64 = match nr {
            SYS_RECVFROM => read_at(regs, REGS_R10)?,
            SYS_RECVMSG => read_at(regs, REGS_DX)?,
            _ => 0,
        };
        if flags & MSG_PEEK != 0 {
            return Ok(());
        }
    }
    let fd: u64 = read_at(regs, REGS_DI)?;
    let sk = sock_of_fd(fd)?;
    // (an fd that may not be a socket: no adoption)
    count_and_capture(sk, sent, ret as u32, false);
    Ok(())
}
