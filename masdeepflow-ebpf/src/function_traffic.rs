//! Bytes moved by established sockets from kernel function exits, for
//! kernels without `sock:sock_send_length`/`sock_recv_length` (before 6.3)
//! that allow fexit programs (5.5+ with BTF and trampolines): `tcp_sendmsg`
//! (write, send*, writev), `tcp_sendpage` (sendfile, splice; gone in 6.5)
//! and `tcp_recvmsg`. They fire for TCP only, so they cost less than the
//! syscall exits, which look at every read and write on the host.
//!
//! Arguments and the result are the ctx's u64 slots: the result follows
//! the parameters. `tcp_recvmsg` had a `nonblock` parameter before 5.19
//! (6 parameters), and later lost `addr_len` (4): the agent picks the
//! program for the kernel's count (from BTF).
use aya_ebpf::{macros::fexit, programs::FExitContext};

use crate::{syscall_abi::MSG_PEEK, traffic::count_and_capture};

/// `int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)`
#[fexit(function = "tcp_sendmsg")]
pub fn tcp_sendmsg_exit(ctx: FExitContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let ret: u64 = ctx.arg(3);
    sent_or_received(sk, ret, true);
    0
}

/// `int tcp_sendpage(struct sock *sk, struct page *page, int offset,
/// size_t size, int flags)`
#[fexit(function = "tcp_sendpage")]
pub fn tcp_sendpage_exit(ctx: FExitContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let ret: u64 = ctx.arg(5);
    sent_or_received(sk, ret, true);
    0
}

/// `int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len,
/// [int nonblock,] int flags[, int *addr_len])`: one program per shape
/// (the verifier wants constant ctx offsets), the agent loads the one
/// matching the kernel's BTF.
#[fexit(function = "tcp_recvmsg")]
pub fn tcp_recvmsg_exit_6(ctx: FExitContext) -> u32 {
    received(ctx.arg(0), ctx.arg(4), ctx.arg(6));
    0
}

#[fexit(function = "tcp_recvmsg")]
pub fn tcp_recvmsg_exit_5(ctx: FExitContext) -> u32 {
    received(ctx.arg(0), ctx.arg(3), ctx.arg(5));
    0
}

#[fexit(function = "tcp_recvmsg")]
pub fn tcp_recvmsg_exit_4(ctx: FExitContext) -> u32 {
    received(ctx.arg(0), ctx.arg(3), ctx.arg(4));
    0
}

#[inline(always)]
fn received(sk: u64, flags: u64, ret: u64) {
    // Peeked bytes are read again later: not counted.
    if flags & MSG_PEEK == 0 {
        sent_or_received(sk, ret, false);
    }
}

#[inline(always)]
fn sent_or_received(sk: u64, ret: u64, sent: bool) {
    // The result is a C `int`: only the low 32 bits are defined.
    let n = ret as u32 as i32;
    if n > 0 {
        count_and_capture(sk, sent, n as u32, true);
    }
}
