//! Bytes moved by established sockets: `sock:sock_send_length` and
//! `sock:sock_recv_length` (6.3+), fired after each socket send/receive in
//! the calling process. Counted into the socket's `SOCKETS` entry, which the
//! agent reads for `flow` records and which `tcp_close` reports in full.
//!
//! Record: `sk` at 8, `family` 16, `protocol` 18, `ret` 20, `flags` 24.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use masdeepflow_common::tcp::IPPROTO_TCP;

use crate::{
    maps::{SOCKETS, atomic_add},
    payload::capture,
    syscall_abi::MSG_PEEK,
};

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    let _ = try_count(&ctx, true);
    0
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    let _ = try_count(&ctx, false);
    0
}

#[inline(always)]
fn try_count(ctx: &TracePointContext, sent: bool) -> Result<(), i64> {
    // SAFETY: documented record layout.
    let (protocol, ret, flags) = unsafe { (ctx.read_at::<u16>(18)?, ctx.read_at::<i32>(20)?, ctx.read_at::<i32>(24)?) };
    if protocol != IPPROTO_TCP || ret <= 0 || (!sent && flags as u64 & MSG_PEEK != 0) {
        return Ok(());
    }
    // SAFETY: documented record layout.
    let sk: u64 = unsafe { ctx.read_at(8)? };
    count_and_capture(sk, sent, ret as u32);
    Ok(())
}

/// Adds `len` bytes to a tracked socket's counters and captures the
/// payload of parsed protocols. Shared with the syscall fallback.
#[inline(always)]
pub fn count_and_capture(sk: u64, sent: bool, len: u32) {
    let Some(state) = SOCKETS.get_ptr_mut(sk) else {
        return;
    };
    // SAFETY: `state` points into the map value; the counters are only ever
    // changed atomically.
    unsafe {
        let counter = if sent { &raw mut (*state).bytes_sent } else { &raw mut (*state).bytes_received };
        atomic_add(counter, len as u64);
    }
    capture(state, sent, len);
}
