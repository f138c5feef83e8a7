//! The socket-address hooks, each a few lines around one translation core
//! (as Cilium's `bpf_sock.c`), so IPv4, IPv6 and UDP differ only at the
//! edges:
//! - `connect4/6` (TCP and connected UDP) and `sendmsg4/6` (unconnected UDP)
//!   rewrite a destination that is a VIP into a backend chosen by the
//!   service's rotation, and remember the pair by socket cookie;
//! - `getpeername4/6` (5.8+) and `recvmsg4/6` show that backend as the VIP
//!   again, so applications never see the translation.
//!
//! A v4-mapped address on an IPv6 socket is looked up as the IPv4 address.
//!
//! Context fields are `struct bpf_sock_addr` (uapi): `user_ip4`,
//! `user_ip6[4]` (network order), `user_port` (network order in the low 16
//! bits), `protocol`. Only 4-byte loads and stores are used on them.

// Map keys and values are passed by reference: by value, clippy's choice,
// copies them again on the 512-byte stack (gw_sendmsg4 then overflows it).
#![allow(clippy::needless_borrows_for_generic_args)]
use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_prandom_u32,
            bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_set_retval,
        },
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use masdeepflow_common::gateway::{
    ALG_MAGLEV, ALG_RANDOM, BackendSlot, C_BAD_SLOT, C_EVENTS_LOST, C_NO_BACKEND, C_OUT_OF_SCOPE, C_REVERSE_FULL, C_REVERSED, C_TRANSLATED,
    ConnectionRecord, FAMILY_V4, FAMILY_V6, KEY_NETNS, KEY_PROCESS, PROTO_TCP, PROTO_UDP, REVERSE_PAIRS, Reverse, ReversePair, ServiceKey,
    ServiceValue, maglev_index,
};

use crate::maps::{GW_BACKEND_STATS, GW_EVENTS, GW_REVERSE, GW_ROTATION, GW_SERVICE_STATS, GW_SERVICES, GW_SLOTS, config, count};

/// Verdicts of a socket-address program.
const ALLOW: i32 = 1;
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

const VIA_CONNECT: u8 = 1;
const VIA_SENDMSG: u8 = 2;

/// `::ffff:0:0/96`'s third word in network order.
const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[cgroup_sock_addr(connect4)]
pub fn gw_connect4(ctx: SockAddrContext) -> i32 {
    forward(&ctx, false, VIA_CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn gw_connect6(ctx: SockAddrContext) -> i32 {
    forward(&ctx, true, VIA_CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn gw_sendmsg4(ctx: SockAddrContext) -> i32 {
    forward(&ctx, false, VIA_SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn gw_sendmsg6(ctx: SockAddrContext) -> i32 {
    forward(&ctx, true, VIA_SENDMSG)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn gw_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, false);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn gw_recvmsg6(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, true);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn gw_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, false);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn gw_getpeername6(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, true);
    ALLOW
}

/// The address in the context: four words, port (host order), family as
/// looked up (a v4-mapped address is IPv4), and whether it was mapped.
#[derive(Clone, Copy)]
struct Addr {
    words: [u32; 4],
    port: u16,
    family: u8,
    mapped: bool,
}

#[inline(always)]
fn read_addr(ctx: &SockAddrContext, v6: bool) -> Addr {
    let sa: *const bpf_sock_addr = ctx.sock_addr;
    // SAFETY: 4-byte loads of context fields the verifier rewrites.
    unsafe {
        let port = u16::from_be(core::ptr::read_volatile(&raw const (*sa).user_port) as u16);
        if !v6 {
            let ip = core::ptr::read_volatile(&raw const (*sa).user_ip4);
            return Addr { words: [ip, 0, 0, 0], port, family: FAMILY_V4, mapped: false };
        }
        let w = [
            core::ptr::read_volatile(&raw const (*sa).user_ip6[0]),
            core::ptr::read_volatile(&raw const (*sa).user_ip6[1]),
            core::ptr::read_volatile(&raw const (*sa).user_ip6[2]),
            core::ptr::read_volatile(&raw const (*sa).user_ip6[3]),
        ];
        if w[0] == 0 && w[1] == 0 && w[2] == V4_MAPPED {
            return Addr { words: [w[3], 0, 0, 0], port, family: FAMILY_V4, mapped: true };
        }
        Addr { words: w, port, family: FAMILY_V6, mapped: false }
    }
}

/// Writes `words`/`port` (of the family of `like`) into the context.
#[inline(always)]
fn write_addr(ctx: &SockAddrContext, v6: bool, like: &Addr, words: &[u32; 4], port: u16) {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: 4-byte stores to writable context fields.
    unsafe {
        core::ptr::write_volatile(&raw mut (*sa).user_port, port.to_be() as u32);
        if !v6 {
            core::ptr::write_volatile(&raw mut (*sa).user_ip4, words[0]);
        } else if like.mapped {
            core::ptr::write_volatile(&raw mut (*sa).user_ip6[0], 0);
            core::ptr::write_volatile(&raw mut (*sa).user_ip6[1], 0);
            core::ptr::write_volatile(&raw mut (*sa).user_ip6[2], V4_MAPPED);
            core::ptr::write_volatile(&raw mut (*sa).user_ip6[3], words[0]);
        } else {
            core::ptr::write_volatile(&raw mut (*sa).user_ip6[0], words[0]);
            core::ptr::write_volatile(&raw mut (*sa).user_ip6[1], words[1]);
            core::ptr::write_volatile(&raw mut (*sa).user_ip6[2], words[2]);
            core::ptr::write_volatile(&raw mut (*sa).user_ip6[3], words[3]);
        }
    }
}

#[inline(always)]
fn protocol(ctx: &SockAddrContext) -> u8 {
    // SAFETY: a 4-byte context load.
    unsafe { core::ptr::read_volatile(&raw const (*ctx.sock_addr).protocol) as u8 }
}

/// The translation core of connect and sendmsg.
#[inline(always)]
fn forward(ctx: &SockAddrContext, v6: bool, via: u8) -> i32 {
    let proto = protocol(ctx);
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return ALLOW;
    }
    let dst = read_addr(ctx, v6);
    let key = ServiceKey { addr: dst.words, port: dst.port, proto, family: dst.family };
    // A copy: the map entry may be replaced while we use it.
    let Some(svc) = GW_SERVICES.get_ptr(&key).map(|p| unsafe { *p }) else {
        return ALLOW;
    };
    if svc.scope_cgroup_id != 0 {
        // SAFETY: a helper with no preconditions.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(svc.scope_level as i32) };
        if ancestor != svc.scope_cgroup_id {
            count(C_OUT_OF_SCOPE);
            return ALLOW;
        }
    }
    if svc.slot_count == 0 {
        count(C_NO_BACKEND);
        if let Some(s) = GW_SERVICE_STATS.get_ptr_mut(svc.service_id) {
            // SAFETY: this CPU's slot of the map.
            unsafe { (*s).no_backend += 1 };
        }
        if config().set_retval != 0 {
            // SAFETY: a helper of cgroup programs (5.18+), enabled only there.
            unsafe { bpf_set_retval(-ECONNREFUSED) };
        }
        return REJECT;
    }
    // SAFETY: the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let mut rev = Reverse::default();
    let mut pair_at = 0usize;
    if via == VIA_SENDMSG {
        // An unconnected UDP socket keeps its backend per VIP until the
        // service's rotation changes, as a connected one would.
        if let Some(old) = GW_REVERSE.get_ptr(cookie) {
            // SAFETY: copied out of the map.
            rev = unsafe { *old };
            let mut found = REVERSE_PAIRS;
            for i in 0..REVERSE_PAIRS {
                let p = &rev.pairs[i];
                if p.family == dst.family && p.vip == dst.words && p.vip_port == dst.port && p.proto == proto {
                    found = i;
                }
            }
            if found < REVERSE_PAIRS {
                let p = rev.pairs[found];
                if p.service_id == svc.service_id && p.generation == svc.generation {
                    write_addr(ctx, v6, &dst, &p.backend, p.backend_port);
                    return ALLOW;
                }
                pair_at = found;
            } else {
                pair_at = (rev.next as usize) % REVERSE_PAIRS;
            }
        }
    }
    let index = pick(ctx, &svc);
    let Some(slot) = GW_SLOTS.get(svc.slot_base.wrapping_add(index)).copied() else {
        count(C_BAD_SLOT);
        return ALLOW;
    };
    if slot.family != dst.family {
        count(C_BAD_SLOT);
        return ALLOW;
    }
    write_addr(ctx, v6, &dst, &slot.addr, slot.port);
    if pair_at < REVERSE_PAIRS {
        rev.pairs[pair_at] = ReversePair {
            backend: slot.addr,
            vip: dst.words,
            backend_port: slot.port,
            vip_port: dst.port,
            family: dst.family,
            proto,
            _pad: 0,
            service_id: svc.service_id,
            generation: svc.generation,
        };
        rev.next = (pair_at as u32 + 1) % REVERSE_PAIRS as u32;
    }
    if GW_REVERSE.insert(cookie, &rev, 0).is_err() {
        count(C_REVERSE_FULL);
    }
    count(C_TRANSLATED);
    if let Some(s) = GW_SERVICE_STATS.get_ptr_mut(svc.service_id) {
        // SAFETY: this CPU's slot of the map.
        unsafe { (*s).translated += 1 };
    }
    if let Some(b) = GW_BACKEND_STATS.get_ptr_mut(slot.backend_id) {
        // SAFETY: this CPU's slot of the map.
        unsafe { *b += 1 };
    }
    if config().events != 0 {
        emit(cookie, &svc, &dst, &slot, proto, via);
    }
    ALLOW
}

/// The rotation index for this connect.
#[inline(always)]
fn pick(ctx: &SockAddrContext, svc: &ServiceValue) -> u32 {
    match svc.algorithm {
        ALG_RANDOM => {
            // SAFETY: a helper with no preconditions.
            (unsafe { bpf_get_prandom_u32() }) % svc.slot_count
        }
        ALG_MAGLEV => {
            // SAFETY: helpers of socket-address programs (5.7+).
            let key = match svc.hash_key {
                KEY_PROCESS => bpf_get_current_pid_tgid() >> 32,
                KEY_NETNS => unsafe { bpf_get_netns_cookie(ctx.as_ptr()) },
                _ => unsafe { bpf_get_current_cgroup_id() },
            };
            maglev_index(key, svc.hash_seed, svc.slot_count)
        }
        _ => match GW_ROTATION.get_ptr_mut(svc.service_id) {
            Some(counter) => {
                let n = if config().fetch_add != 0 {
                    // SAFETY: a pointer into the map.
                    unsafe { fetch_add(counter, 1) }
                } else {
                    // Before 5.12: read, then add (two concurrent connects
                    // may read the same value).
                    // SAFETY: a pointer into the map; BPF_XADD without fetch.
                    unsafe {
                        let n = core::ptr::read_volatile(counter);
                        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(counter, 1);
                        n
                    }
                };
                (n % svc.slot_count as u64) as u32
            }
            None => 0,
        },
    }
}

/// `*counter += n`, returning the value before, as one instruction shared
/// by all CPUs (BPF_ATOMIC | BPF_ADD | BPF_FETCH, Linux 5.12+). Written
/// out because LLVM emits it only for `-mcpu=v3`, and the object is built
/// for the generic CPU.
///
/// # Safety
/// `counter` must point at a live map value.
#[inline(always)]
unsafe fn fetch_add(counter: *mut u64, n: u64) -> u64 {
    let mut v = n;
    // SAFETY: as the caller promised; the instruction only touches *counter.
    unsafe {
        core::arch::asm!("{v} = atomic_fetch_add((u64 *)({p} + 0), {v})", p = in(reg) counter, v = inout(reg) v, options(nostack));
    }
    v
}

#[inline(always)]
fn emit(cookie: u64, svc: &ServiceValue, dst: &Addr, slot: &BackendSlot, proto: u8, via: u8) {
    let Some(mut entry) = GW_EVENTS.reserve::<ConnectionRecord>(0) else {
        count(C_EVENTS_LOST);
        return;
    };
    let mut r = ConnectionRecord {
        // SAFETY: helpers with no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cookie,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        service_id: svc.service_id,
        backend_id: slot.backend_id,
        vip: dst.words,
        backend: slot.addr,
        vip_port: dst.port,
        backend_port: slot.port,
        family: if dst.family == FAMILY_V6 { FAMILY_V6 } else { FAMILY_V4 },
        proto,
        via,
        ..ConnectionRecord::default()
    };
    if config().process_info != 0 {
        let pid_tgid = bpf_get_current_pid_tgid();
        r.pid = (pid_tgid >> 32) as u32;
        r.tid = pid_tgid as u32;
        r.uid = bpf_get_current_uid_gid() as u32;
        r.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.write(r);
    entry.submit(0);
}

/// getpeername and recvmsg: a translated socket's backend shown as its VIP.
#[inline(always)]
fn reverse(ctx: &SockAddrContext, v6: bool) {
    // SAFETY: the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(rev) = GW_REVERSE.get_ptr(cookie) else {
        return;
    };
    let peer = read_addr(ctx, v6);
    let proto = protocol(ctx);
    for i in 0..REVERSE_PAIRS {
        // SAFETY: a pointer into the map; pairs are read one at a time.
        let p = unsafe { (*rev).pairs[i] };
        if p.family == peer.family && p.backend == peer.words && p.backend_port == peer.port && p.proto == proto {
            write_addr(ctx, v6, &peer, &p.vip, p.vip_port);
            count(C_REVERSED);
            return;
        }
    }
}
