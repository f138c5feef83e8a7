//! The L4 proxy's data path (`datapath = "sockmap"`): a stream verdict
//! program on `GW_PROXY_SOCKS` that hands every segment received on a proxy
//! socket to its peer socket's send side (`bpf_sk_redirect_hash`, egress),
//! counting bytes per socket. The `held` gate (see
//! `masdeepflow_common::proxy`) keeps segments in the socket's own queue
//! while user space joins the pair, so no byte is lost or reordered.
//!
//! Runs from the socket's `sk_data_ready` (softirq or the reader's
//! context) for each segment taken off the TCP receive queue; never blocks.
use aya_ebpf::{
    EbpfContext as _,
    bindings::sk_action::{SK_DROP, SK_PASS},
    helpers::generated::bpf_get_socket_cookie,
    macros::stream_verdict,
    programs::SkBuffContext,
};
use masdeepflow_common::proxy::{PC_HELD, PC_NO_PEER, PC_REDIRECTED, PC_UNKNOWN};

use crate::maps::{GW_PROXY_PEERS, GW_PROXY_SIDES, GW_PROXY_SOCKS, atomic_add, proxy_count};

#[stream_verdict]
pub fn gw_proxy_verdict(ctx: SkBuffContext) -> u32 {
    let len = ctx.len();
    if len == 0 {
        // A bare FIN: TCP has already taken it into account (the socket
        // reads EOF); there is nothing to move, and redirecting an empty
        // segment would break the peer's send path.
        return SK_DROP;
    }
    // SAFETY: the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: a copy of a plain u32 value.
    let Some(index) = (unsafe { GW_PROXY_PEERS.get(cookie) }).copied() else {
        proxy_count(PC_UNKNOWN);
        return SK_PASS;
    };
    let Some(side) = GW_PROXY_SIDES.get_ptr_mut(index) else {
        proxy_count(PC_UNKNOWN);
        return SK_PASS;
    };
    // SAFETY: `side` points into the array map; fields are read and added
    // to with single instructions (user space adds to `held` atomically).
    unsafe {
        if core::ptr::read_volatile(&raw const (*side).held) != 0 {
            atomic_add(&raw mut (*side).held, len as u64);
            proxy_count(PC_HELD);
            return SK_PASS;
        }
        let peer = core::ptr::read_volatile(&raw const (*side).peer);
        let verdict = GW_PROXY_SOCKS.redirect_skb(&ctx, peer, 0) as u32;
        if verdict == SK_PASS {
            atomic_add(&raw mut (*side).bytes, len as u64);
            proxy_count(PC_REDIRECTED);
        } else {
            atomic_add(&raw mut (*side).dropped, len as u64);
            proxy_count(PC_NO_PEER);
        }
        verdict
    }
}
