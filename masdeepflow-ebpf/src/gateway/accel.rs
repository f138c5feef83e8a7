//! Same-host socket acceleration (`[accelerate]`):
//! - `gw_accel_sockops` (sock_ops, on the scope's cgroup): when a TCP
//!   connection to a local address (loopback, or the socket's own address)
//!   is established, its socket joins `GW_ACCEL_SOCKS` under the key
//!   (local, remote); on close its `GW_ACCEL_VIA_TCP` mark is removed;
//! - `gw_accel_msg` (sk_msg, on `GW_ACCEL_SOCKS`): a send whose peer socket
//!   is in the map goes straight to the peer's receive queue
//!   (`bpf_msg_redirect_hash` with `BPF_F_INGRESS`); otherwise it goes
//!   through TCP, and the socket is marked to stay on TCP, so that a later
//!   send never overtakes bytes still in the loopback path;
//! - `gw_accel_verdict` (stream verdict, SK_PASS): attached only on kernels
//!   where sockhash members without a verdict program lose FIONREAD and
//!   epoll wake-ups for bytes that arrive through TCP (the 2026 regression):
//!   with it, those bytes join the socket's message queue like redirected
//!   ones, where readiness and FIONREAD see them.
//!
//! Context fields (`bpf_sock_ops`, `sk_msg_md`): addresses in network
//! order, `local_port` in host order, `remote_port` in network order in the
//! upper half on little-endian (`htonl(port)`).
use aya_ebpf::{
    bindings::{
        BPF_F_INGRESS, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, sk_action::SK_PASS,
    },
    macros::{sk_msg, sock_ops, stream_verdict},
    programs::{SkBuffContext, SkMsgContext, SockOpsContext},
};
use masdeepflow_common::{
    gateway::{FAMILY_V4, FAMILY_V6},
    proxy::{ACCEL_DRAINING, AccelKey, PC_ACCEL_FULL, PC_ACCEL_JOINED, PC_ACCEL_MARK_FULL, PC_ACCEL_REDIRECTED, PC_ACCEL_VIA_TCP},
};

use crate::maps::{GW_ACCEL_CTL, GW_ACCEL_SOCKS, GW_ACCEL_VIA_TCP, proxy_count};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const TCP_CLOSE: u32 = 7;
/// `::ffff:0:0/96`'s third word in network order.
const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
const V6_LOOPBACK: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];

/// The raw fields both context types carry.
struct Tuple {
    family: u32,
    local4: u32,
    remote4: u32,
    local6: [u32; 4],
    remote6: [u32; 4],
    local_port: u32,
    remote_port: u32,
}

/// The connection's key, or None for a family other than IPv4/IPv6.
#[inline(always)]
fn key_of(t: &Tuple) -> Option<AccelKey> {
    let port = |local: u32, remote: u32| (local as u16, u32::from_be(remote) as u16);
    let (local_port, remote_port) = port(t.local_port, t.remote_port);
    match t.family {
        AF_INET => {
            Some(AccelKey { local: [t.local4, 0, 0, 0], remote: [t.remote4, 0, 0, 0], local_port, remote_port, family: FAMILY_V4 as u32 })
        }
        AF_INET6 => {
            let mapped = |a: &[u32; 4]| a[0] == 0 && a[1] == 0 && a[2] == V4_MAPPED;
            if mapped(&t.local6) && mapped(&t.remote6) {
                return Some(AccelKey {
                    local: [t.local6[3], 0, 0, 0],
                    remote: [t.remote6[3], 0, 0, 0],
                    local_port,
                    remote_port,
                    family: FAMILY_V4 as u32,
                });
            }
            Some(AccelKey { local: t.local6, remote: t.remote6, local_port, remote_port, family: FAMILY_V6 as u32 })
        }
        _ => None,
    }
}

/// A connection between two sockets of this host: to a loopback address,
/// or to the socket's own address.
#[inline(always)]
fn is_local(k: &AccelKey) -> bool {
    if k.family == FAMILY_V4 as u32 {
        k.remote[0].to_ne_bytes()[0] == 127 || k.remote[0] == k.local[0]
    } else {
        k.remote == V6_LOOPBACK || k.remote == k.local
    }
}

#[inline(always)]
fn sock_ops_tuple(ctx: &SockOpsContext) -> Tuple {
    Tuple {
        family: ctx.family(),
        local4: ctx.local_ip4(),
        remote4: ctx.remote_ip4(),
        local6: ctx.local_ip6(),
        remote6: ctx.remote_ip6(),
        local_port: ctx.local_port(),
        remote_port: ctx.remote_port(),
    }
}

#[sock_ops]
pub fn gw_accel_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_STATE_CB {
        return 1;
    }
    let Some(key) = key_of(&sock_ops_tuple(&ctx)) else { return 1 };
    if op == BPF_SOCK_OPS_STATE_CB {
        if ctx.arg(1) == TCP_CLOSE {
            let _ = GW_ACCEL_VIA_TCP.remove(key);
        }
        return 1;
    }
    if !is_local(&key) {
        return 1;
    }
    // SAFETY: the context of a sock_ops program at an established callback
    // is a full socket, as bpf_sock_hash_update wants.
    match GW_ACCEL_SOCKS.update(key, unsafe { &mut *ctx.ops }, 0) {
        Ok(()) => {
            proxy_count(PC_ACCEL_JOINED);
            // Be called on state changes, to drop the socket's TCP mark when
            // it closes (the sockhash entry goes by itself).
            let flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG;
            let _ = ctx.set_cb_flags(flags as i32);
        }
        Err(_) => proxy_count(PC_ACCEL_FULL),
    }
    1
}

#[inline(always)]
fn msg_tuple(ctx: &SkMsgContext) -> Tuple {
    let m = ctx.msg;
    // SAFETY: 4-byte loads of context fields the verifier rewrites.
    unsafe {
        Tuple {
            family: core::ptr::read_volatile(&raw const (*m).family),
            local4: core::ptr::read_volatile(&raw const (*m).local_ip4),
            remote4: core::ptr::read_volatile(&raw const (*m).remote_ip4),
            local6: [
                core::ptr::read_volatile(&raw const (*m).local_ip6[0]),
                core::ptr::read_volatile(&raw const (*m).local_ip6[1]),
                core::ptr::read_volatile(&raw const (*m).local_ip6[2]),
                core::ptr::read_volatile(&raw const (*m).local_ip6[3]),
            ],
            remote6: [
                core::ptr::read_volatile(&raw const (*m).remote_ip6[0]),
                core::ptr::read_volatile(&raw const (*m).remote_ip6[1]),
                core::ptr::read_volatile(&raw const (*m).remote_ip6[2]),
                core::ptr::read_volatile(&raw const (*m).remote_ip6[3]),
            ],
            local_port: core::ptr::read_volatile(&raw const (*m).local_port),
            remote_port: core::ptr::read_volatile(&raw const (*m).remote_port),
        }
    }
}

#[sk_msg]
pub fn gw_accel_msg(ctx: SkMsgContext) -> u32 {
    let Some(key) = key_of(&msg_tuple(&ctx)) else { return SK_PASS };
    let draining = GW_ACCEL_CTL.get(0).is_some_and(|c| *c == ACCEL_DRAINING);
    // SAFETY: a lookup whose value is not kept.
    if draining || unsafe { GW_ACCEL_VIA_TCP.get(key) }.is_some() {
        proxy_count(PC_ACCEL_VIA_TCP);
        return SK_PASS;
    }
    if GW_ACCEL_SOCKS.redirect_msg(&ctx, key.peer(), BPF_F_INGRESS as u64) as u32 == SK_PASS {
        proxy_count(PC_ACCEL_REDIRECTED);
        return SK_PASS;
    }
    // The peer is not in the map (not yet established, gone, or not
    // accelerated): through TCP, from now on.
    if GW_ACCEL_VIA_TCP.insert(key, 1, 0).is_err() {
        proxy_count(PC_ACCEL_MARK_FULL);
    }
    proxy_count(PC_ACCEL_VIA_TCP);
    SK_PASS
}

#[stream_verdict]
pub fn gw_accel_verdict(_ctx: SkBuffContext) -> u32 {
    SK_PASS
}
