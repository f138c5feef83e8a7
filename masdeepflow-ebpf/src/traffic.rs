//! Bytes moved by established sockets: `sock:sock_send_length` and
//! `sock:sock_recv_length` (6.3+), fired after each socket send/receive in
//! the calling process. Counted into the socket's `SOCKETS` entry, which the
//! agent reads for `flow` records and which `tcp_close` reports in full.
//!
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{
    adopt::adopt,
    maps::{SOCKETS, atomic_add},
    payload::capture,
    syscall_abi::MSG_PEEK,
    tls,
};
use masdeepflow_common::payload::{PROTO_OTHER, PROTO_UNKNOWN};

/// `sock_send_length(struct sock *sk, int ret, int flags)`, attached raw:
/// the arguments themselves, no trace record built and no helper calls to
/// read them.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> u32 {
    on_socket_io(&ctx, true);
    0
}

/// `sock_recv_length(struct sock *sk, int ret, int flags)`, as above.
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_length(ctx: RawTracePointContext) -> u32 {
    on_socket_io(&ctx, false);
    0
}

#[inline(always)]
fn on_socket_io(ctx: &RawTracePointContext, sent: bool) {
    let sk: u64 = ctx.arg(0);
    // `int`s, passed zero-extended.
    let ret = ctx.arg::<u64>(1) as u32 as i32;
    let flags = ctx.arg::<u64>(2) as u32 as u64;
    // Peeked bytes are read again later: not counted. Other protocols are
    // not in `SOCKETS`.
    if ret > 0 && (sent || flags & MSG_PEEK == 0) {
        count_and_capture(sk, sent, ret as u32, true);
    }
}

/// Adds `len` bytes to a tracked socket's counters and captures the
/// payload of parsed protocols. Shared with the fallbacks. `adoptable`:
/// `sk` is surely a socket, so one opened before the agent started may be
/// adopted (see `adopt.rs`).
#[inline(always)]
pub fn count_and_capture(sk: u64, sent: bool, len: u32, adoptable: bool) {
    let state = match SOCKETS.get_ptr_mut(sk) {
        Some(state) => state,
        None if adoptable => match adopt(sk, sent, len) {
            Some(state) => state,
            None => return,
        },
        None => return,
    };
    // SAFETY: `state` points into the map value; the counters are only ever
    // changed atomically.
    unsafe {
        let counter = if sent { &raw mut (*state).bytes_sent } else { &raw mut (*state).bytes_received };
        atomic_add(counter, len as u64);
    }
    // Without payload capture, nothing more to do: no TLS lookup either.
    if !crate::payload::capturing() {
        return;
    }
    // Inside a TLS library call: ciphertext, never parsed; the call's
    // plaintext is captured at its return (see `tls`).
    if tls::in_call(sk, state) {
        // SAFETY: a plain store of a u32 in the live map value.
        unsafe {
            if (*state).protocol == PROTO_UNKNOWN {
                (*state).protocol = PROTO_OTHER;
            }
        }
        return;
    }
    capture(sk, state, sent, len);
}
