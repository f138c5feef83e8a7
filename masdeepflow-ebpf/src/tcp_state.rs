//! TCP connection life cycle from `sock:inet_sock_set_state`:
//! connect (SYN sent -> established / failed), passive open
//! (SYN received -> established); and close, when the socket is destroyed
//! (`tcp:tcp_destroy_sock`) or, on kernels without it, enters TCP_CLOSE.
//!
//! Record (stable since 4.16): `skaddr` at 8, `oldstate` 16, `newstate` 20,
//! `sport` 24, `dport` 26, `family` 28, `protocol` 30, `saddr` 32,
//! `daddr` 36, `saddr_v6` 40, `daddr_v6` 56.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use masdeepflow_common::{
    EventHeader, EventKind, ProcessInfo,
    payload::{PROTO_HTTP, PayloadLoss},
    stats::{CONNECTING_FULL, HTTP_REQUESTS_LOST_AT_CLOSE, MYSQL_COMMANDS_LOST_AT_CLOSE, SOCKETS_FULL, lost_index},
    tcp::{AF_INET, AF_INET6, Endpoints, IPPROTO_TCP, PendingConnect, ROLE_CLIENT, ROLE_SERVER, TcpRecord},
};

use crate::{
    kernel::{comm_wanted, current_process, offset, read_at},
    maps::{CONNECTING, EVENTS, SOCK_SCRATCH, SOCKETS, count, count_n, wakeup_flags},
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

#[inline(always)]
fn try_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets of the documented record layout.
    let (protocol, sk, old, new) =
        unsafe { (ctx.read_at::<u16>(30)?, ctx.read_at::<u64>(8)?, ctx.read_at::<i32>(16)?, ctx.read_at::<i32>(20)?) };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    // SAFETY: a helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            // In the connecting process: remember who connects.
            let pending = PendingConnect { syn_sent_ns: now, owner: current_process() };
            if CONNECTING.insert(sk, pending, 0).is_err() {
                count(CONNECTING_FULL);
            }
        }
        (TCP_SYN_SENT, TCP_ESTABLISHED) => {
            let endpoints = read_endpoints(ctx)?;
            // SAFETY: the value is copied out before the entry is removed.
            let pending = unsafe { CONNECTING.get(sk) }.copied();
            let _ = CONNECTING.remove(sk);
            let (has_owner, owner) = match pending {
                Some(p) => (1, p.owner),
                None => (0, ProcessInfo::default()),
            };
            track(sk, now, &endpoints, ROLE_CLIENT, has_owner, &owner);
            if let Some(p) = pending {
                emit(EventKind::TcpConnect, now, endpoints, ROLE_CLIENT, 1, p.owner, 0, now - p.syn_sent_ns, 0, 0, now);
            }
        }
        (TCP_SYN_SENT, TCP_CLOSE) => {
            // SAFETY: copied out before removal.
            let pending = unsafe { CONNECTING.get(sk) }.copied();
            let _ = CONNECTING.remove(sk);
            if let Some(p) = pending {
                let endpoints = read_endpoints(ctx)?;
                let err: i32 = read_at(sk, offset!(sock_sk_err)).unwrap_or(0);
                emit(EventKind::TcpConnect, now, endpoints, ROLE_CLIENT, 1, p.owner, err.unsigned_abs(), now - p.syn_sent_ns, 0, 0, 0);
            }
        }
        (TCP_SYN_RECV, TCP_ESTABLISHED) => {
            let endpoints = read_endpoints(ctx)?;
            track(sk, now, &endpoints, ROLE_SERVER, 0, &ProcessInfo::default());
        }
        (_, TCP_CLOSE) if offset!(close_on_state) != 0 => report_close(sk, now),
        _ => {}
    }
    Ok(())
}

/// `tcp_destroy_sock(struct sock *sk)` (5.x+): the socket is gone, so
/// every byte its owner sent or read has been counted. Record: `skaddr` at 8.
#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    // SAFETY: documented record layout.
    if let Ok(sk) = unsafe { ctx.read_at::<u64>(8) } {
        // SAFETY: a helper with no preconditions.
        report_close(sk, unsafe { bpf_ktime_get_ns() });
    }
    0
}

/// Sends `tcp_close` for a tracked socket and forgets it. The record is
/// written straight from the map value (no copy: the BPF stack is small).
#[inline(always)]
fn report_close(sk: u64, now: u64) {
    let Some(state) = SOCKETS.get_ptr(sk) else {
        return;
    };
    // SAFETY: `state` is the live map value until the removal below; other
    // CPUs only add to its counters.
    unsafe {
        let has_owner = (*state).has_owner;
        if comm_wanted(if has_owner != 0 { &(*state).owner.comm } else { &[0xff; 16] }) {
            match EVENTS.reserve::<TcpRecord>(0) {
                Some(mut entry) => {
                    let r = entry.as_mut_ptr();
                    (*r).header =
                        EventHeader { kind: EventKind::TcpClose as u32, has_process: has_owner, ts_ns: now, process: (*state).owner };
                    (*r).endpoints = (*state).endpoints;
                    (*r).role = (*state).role;
                    (*r).error = 0;
                    (*r).duration_ns = now - (*state).established_ns;
                    (*r).bytes_sent = (*state).bytes_sent;
                    (*r).bytes_received = (*state).bytes_received;
                    (*r).conn_id = (*state).id;
                    (*r).payload_loss = (*state).payload_loss;
                    (*r).protocol = (*state).protocol;
                    (*r).adopted = (*state).adopted;
                    entry.submit(wakeup_flags());
                }
                None => {
                    count(lost_index(EventKind::TcpClose as u32));
                    // Requests in lost payloads are reported nowhere else.
                    let loss = &(*state).payload_loss;
                    let requests = if (*state).role == ROLE_CLIENT { loss.sent_starts } else { loss.received_starts };
                    if requests != 0 {
                        count_n(lost_at_close_index((*state).protocol), requests);
                    }
                }
            }
        }
    }
    let _ = SOCKETS.remove(sk);
}

/// The counter of requests lost with the close of a connection speaking
/// `protocol`.
#[inline(always)]
fn lost_at_close_index(protocol: u32) -> u32 {
    if protocol == PROTO_HTTP { HTTP_REQUESTS_LOST_AT_CLOSE } else { MYSQL_COMMANDS_LOST_AT_CLOSE }
}

#[inline(always)]
fn read_endpoints(ctx: &TracePointContext) -> Result<Endpoints, i64> {
    // SAFETY: offsets of the documented record layout.
    unsafe {
        let family = ctx.read_at::<u16>(28)?;
        let mut e =
            Endpoints { family, sport: ctx.read_at::<u16>(24)?, dport: ctx.read_at::<u16>(26)?, _pad: 0, saddr: [0; 16], daddr: [0; 16] };
        if family == AF_INET {
            let s: [u8; 4] = ctx.read_at(32)?;
            let d: [u8; 4] = ctx.read_at(36)?;
            e.saddr[..4].copy_from_slice(&s);
            e.daddr[..4].copy_from_slice(&d);
        } else if family == AF_INET6 {
            e.saddr = ctx.read_at(40)?;
            e.daddr = ctx.read_at(56)?;
        }
        Ok(e)
    }
}

/// Starts tracking an established socket. The entry is built in a
/// per-CPU scratch slot: it is too large for the BPF stack of the callers.
#[inline(always)]
fn track(sk: u64, now: u64, endpoints: &Endpoints, role: u32, has_owner: u32, owner: &ProcessInfo) {
    let Some(state) = SOCK_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot is ours for this program run.
    let inserted = unsafe {
        (*state).id = now;
        (*state).established_ns = now;
        (*state).bytes_sent = 0;
        (*state).bytes_received = 0;
        (*state).endpoints = *endpoints;
        (*state).role = role;
        (*state).has_owner = has_owner;
        (*state).owner = *owner;
        (*state).protocol = 0;
        (*state).adopted = 0;
        (*state).payload_loss = PayloadLoss::NONE;
        // Inserted from the scratch value by reference: no copy on the BPF stack.
        let value = &*state;
        SOCKETS.insert(sk, value, 0)
    };
    if inserted.is_err() {
        count(SOCKETS_FULL);
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn emit(
    kind: EventKind,
    now: u64,
    endpoints: Endpoints,
    role: u32,
    has_owner: u32,
    owner: ProcessInfo,
    error: u32,
    duration_ns: u64,
    bytes_sent: u64,
    bytes_received: u64,
    conn_id: u64,
) {
    // With `--comm`, only owners of that name count (an unknown owner too is
    // not reported).
    if !comm_wanted(if has_owner != 0 { &owner.comm } else { &[0xff; 16] }) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<TcpRecord>(0) else {
        count(lost_index(kind as u32));
        return;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: a reserved slot of the right size, every field written before
    // submit (written in place: the BPF stack is small).
    unsafe {
        (*r).header = EventHeader { kind: kind as u32, has_process: has_owner, ts_ns: now, process: owner };
        (*r).endpoints = endpoints;
        (*r).role = role;
        (*r).error = error;
        (*r).duration_ns = duration_ns;
        (*r).bytes_sent = bytes_sent;
        (*r).bytes_received = bytes_received;
        (*r).conn_id = conn_id;
        (*r).payload_loss = PayloadLoss::NONE;
        (*r).protocol = 0;
        (*r).adopted = 0;
    }
    entry.submit(wakeup_flags());
}
