//! MySQL connections opened before the agent started: the traffic hooks
//! call [`adopt`] for a socket `SOCKETS` does not hold. An established
//! TCP socket whose syscall starts with a MySQL command (the client's
//! write of a whole command packet, or mysqld's read of a command's 4-byte
//! header, confirmed by the next read starting with a known command byte)
//! is tracked from then on, marked `adopted`: its payloads are captured
//! (on the server side from the confirming body on, so its first command
//! is not reported) and parsed from the middle; it has no `tcp_close` or
//! `flow` events, whose counts would start at adoption.
//!
//! Cost, on sockets no map holds: one kernel read (the family) for
//! non-inet sockets, a few more and one user-memory read for TCP sockets
//! opened before the agent started. Not used by the syscall-exit fallback,
//! whose `struct sock` comes from an fd that may not be a socket.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use masdeepflow_common::{
    payload::{PROTO_MYSQL_MIDSTREAM, PayloadLoss, mysql_command_head},
    tcp::{AF_INET, AF_INET6, Endpoints, IPPROTO_TCP, ROLE_CLIENT, ROLE_SERVER, SockState},
};

use crate::{
    detect::{is_mysql_command_start, packet_len},
    kernel::{current_process, offset, read_at},
    maps::{SOCK_SCRATCH, SOCKETS},
    payload::{first_bytes, user_buffer},
};

const TCP_ESTABLISHED: u8 = 1;

/// Tracks `sk` if it is an established TCP socket whose syscall (`sent`,
/// `len` bytes) starts with a MySQL command; returns its new entry.
#[inline(always)]
pub fn adopt(sk: u64, sent: bool, len: u32) -> Option<*mut SockState> {
    if offset!(adopt_mysql) == 0 {
        return None;
    }
    let family: u16 = read_at(sk, offset!(skc_family)).ok()?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let protocol: u16 = read_at(sk, offset!(sk_protocol)).ok()?;
    let state: u8 = read_at(sk, offset!(skc_state)).ok()?;
    if protocol != IPPROTO_TCP || state != TCP_ESTABLISHED {
        return None;
    }
    let (buf, buf_len) = user_buffer(sk)?;
    let first = first_bytes(buf, buf_len.min(len as u64));
    let kind = if is_mysql_command_start(&first, len as u64) {
        // a whole command: written by the client (or read whole)
        PROTO_MYSQL_MIDSTREAM
    } else if !sent && len == 4 && first.n == 4 && first.bytes[3] == 0 && packet_len(&first) != 0 {
        // mysqld reads a command's header alone; its body decides
        mysql_command_head(packet_len(&first))
    } else {
        return None;
    };
    // The side that sends commands is the client.
    let client = sent;
    let endpoints = endpoints(sk, family)?;
    let scratch = SOCK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU scratch slot is ours for this program run.
    unsafe {
        let now = bpf_ktime_get_ns();
        (*scratch).id = now;
        (*scratch).established_ns = now;
        (*scratch).bytes_sent = 0;
        (*scratch).bytes_received = 0;
        (*scratch).endpoints = endpoints;
        (*scratch).role = if client { ROLE_CLIENT } else { ROLE_SERVER };
        (*scratch).has_owner = 1;
        (*scratch).owner = current_process();
        (*scratch).protocol = kind;
        (*scratch).adopted = 1;
        (*scratch).payload_loss = PayloadLoss::NONE;
        // BPF_NOEXIST: a socket tracked meanwhile on another CPU wins. The
        // entry goes by reference: a copy would not fit the BPF stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        SOCKETS.insert(sk, &*scratch, 1).ok()?;
    }
    // A lone header is not captured: its body decides (the parser, from
    // the middle, starts at the next command).
    if kind != PROTO_MYSQL_MIDSTREAM {
        return None;
    }
    SOCKETS.get_ptr_mut(sk)
}

/// The socket's endpoints, as `sock:inet_sock_set_state` gives them (`s*`
/// this socket, ports in host order).
#[inline(always)]
fn endpoints(sk: u64, family: u16) -> Option<Endpoints> {
    let dport: u16 = read_at(sk, offset!(skc_dport)).ok()?;
    let mut e = Endpoints {
        family,
        sport: read_at(sk, offset!(skc_num)).ok()?,
        dport: u16::from_be(dport),
        _pad: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        let s: [u8; 4] = read_at(sk, offset!(skc_rcv_saddr)).ok()?;
        let d: [u8; 4] = read_at(sk, offset!(skc_daddr)).ok()?;
        e.saddr[..4].copy_from_slice(&s);
        e.daddr[..4].copy_from_slice(&d);
    } else {
        e.saddr = read_at(sk, offset!(skc_v6_rcv_saddr)).ok()?;
        e.daddr = read_at(sk, offset!(skc_v6_daddr)).ok()?;
    }
    Some(e)
}
