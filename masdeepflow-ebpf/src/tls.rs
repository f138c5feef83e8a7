//! TLS plaintext from OpenSSL's `SSL_write`, `SSL_read`, `SSL_write_ex`
//! and `SSL_read_ex` (see docs/tls.md). No return probes: an entry uprobe
//! notes the call per thread, and plain uprobes on each of the function's
//! return instructions (offsets from `masdeepflow-tls`) take its result.
//!
//! - Entry: [`TLS_CALLS`]`[pid_tgid]` = (kind, SSL pointer, buffer, count
//!   pointer, stack pointer). A call made while one is open on the thread
//!   at a higher stack address (nested) keeps the outer one; any other
//!   overwrites it (a call left by `longjmp`).
//! - Inside the call, the socket syscalls the library makes reach the
//!   traffic hooks, which find the open call ([`in_call`]): they count the
//!   bytes but never parse them (ciphertext), and bind (pid, SSL pointer)
//!   to the socket in [`TLS_CONNS`].
//! - A return instruction with the entry's stack pointer (equal at entry
//!   and at `ret`, on x86_64 and aarch64) ends the call: with a positive
//!   count (`_ex`: result 1, count read through the saved `size_t *`) the
//!   plaintext is captured as a syscall's payload would be, on the socket
//!   bound to the SSL object (so reads served from the library's buffer,
//!   with no syscall, are seen too).
//!
//! Handshake functions (`SSL_do_handshake`, `SSL_connect`, `SSL_accept`)
//! open a call of kind [`KIND_HANDSHAKE`] so that the handshake's
//! syscalls already bind the socket and are not parsed.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap},
    programs::ProbeContext,
};
use masdeepflow_common::{
    payload::{PROTO_UNKNOWN, TLS_OPENSSL},
    stats::{TLS_CALLS_FULL, TLS_NO_CONNECTION},
    tcp::SockState,
    tls::{KIND_HANDSHAKE, KIND_READ, KIND_READ_EX, KIND_WRITE, KIND_WRITE_EX, TlsCall, TlsConn, TlsConnKey},
};

use crate::{
    maps::{SOCKETS, count},
    payload::capture_plaintext,
    syscall_abi::{UPROBE_RET, UPROBE_SP},
};

/// Calls in progress, by `pid_tgid`: removed at their return and when the
/// thread exits; a full map is counted (`TLS_CALLS_FULL`).
#[map]
pub static TLS_CALLS: HashMap<u64, TlsCall> = HashMap::with_max_entries(16384, 0);

/// SSL objects to connections, bound by the socket syscalls made inside
/// their calls. An LRU: bindings of freed SSL objects are evicted; the
/// agent also removes those of exited processes.
#[map]
pub static TLS_CONNS: LruHashMap<TlsConnKey, TlsConn> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn reg(ctx: &ProbeContext, off: usize) -> u64 {
    // SAFETY: the uprobe context is the task's `struct pt_regs`; `off` is a
    // field of it (see `syscall_abi`).
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(off) as *const u64) }
}

#[uprobe]
pub fn ssl_write_entry(ctx: ProbeContext) -> u32 {
    enter(&ctx, KIND_WRITE);
    0
}

#[uprobe]
pub fn ssl_read_entry(ctx: ProbeContext) -> u32 {
    enter(&ctx, KIND_READ);
    0
}

#[uprobe]
pub fn ssl_write_ex_entry(ctx: ProbeContext) -> u32 {
    enter(&ctx, KIND_WRITE_EX);
    0
}

#[uprobe]
pub fn ssl_read_ex_entry(ctx: ProbeContext) -> u32 {
    enter(&ctx, KIND_READ_EX);
    0
}

#[uprobe]
pub fn ssl_handshake_entry(ctx: ProbeContext) -> u32 {
    enter(&ctx, KIND_HANDSHAKE);
    0
}

#[inline(always)]
fn enter(ctx: &ProbeContext, kind: u32) {
    let id = bpf_get_current_pid_tgid();
    let sp = reg(ctx, UPROBE_SP);
    // SAFETY: the value is copied out of the map.
    if let Some(open) = unsafe { TLS_CALLS.get(id) } {
        // Nested in an open call (deeper on the stack): the outer one stays.
        if sp < open.sp {
            return;
        }
    }
    let ex = kind == KIND_WRITE_EX || kind == KIND_READ_EX;
    let call = TlsCall {
        kind,
        _pad: 0,
        ssl: ctx.arg::<u64>(0).unwrap_or(0),
        buf: if kind == KIND_HANDSHAKE { 0 } else { ctx.arg::<u64>(1).unwrap_or(0) },
        count_ptr: if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 },
        sp,
    };
    if TLS_CALLS.insert(id, call, 0).is_err() {
        count(TLS_CALLS_FULL);
    }
}

/// On each return instruction of the probed functions.
#[uprobe]
pub fn ssl_return(ctx: ProbeContext) -> u32 {
    leave(&ctx);
    0
}

#[inline(always)]
fn leave(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out of the map.
    let Some(call) = (unsafe { TLS_CALLS.get(pid_tgid) }).copied() else { return };
    // Another call's return (a nested one, or this function called from
    // inside the open call).
    if call.sp != reg(ctx, UPROBE_SP) {
        return;
    }
    let _ = TLS_CALLS.remove(pid_tgid);
    let result = reg(ctx, UPROBE_RET) as u32 as i32;
    let count_bytes = match call.kind {
        KIND_WRITE | KIND_READ if result > 0 => result as u64,
        KIND_WRITE_EX | KIND_READ_EX if result == 1 => {
            // SAFETY: user memory read with the fault-tolerant helper.
            match unsafe { bpf_probe_read_user(call.count_ptr as *const u64) } {
                Ok(n) => n,
                Err(_) => return,
            }
        }
        _ => return,
    };
    if count_bytes == 0 {
        return;
    }
    let key = TlsConnKey { pid: (pid_tgid >> 32) as u32, _pad: 0, ssl: call.ssl };
    let Some(conn) = TLS_CONNS.get_ptr_mut(key) else {
        count(TLS_NO_CONNECTION);
        return;
    };
    // SAFETY: `conn` points at the live map value.
    let (sk, conn_id) = unsafe { ((*conn).sk, (*conn).conn_id) };
    let Some(state) = SOCKETS.get_ptr_mut(sk) else {
        count(TLS_NO_CONNECTION);
        return;
    };
    // SAFETY: `state` points at the live map value.
    if unsafe { (*state).id } != conn_id {
        count(TLS_NO_CONNECTION);
        return;
    }
    let sent = call.kind == KIND_WRITE || call.kind == KIND_WRITE_EX;
    // SAFETY: both point at live map values.
    unsafe { capture_plaintext(state, &raw mut (*conn).protocol, sent, count_bytes, call.buf, TLS_OPENSSL) };
}

/// The TLS call open on this thread, if any: called by the traffic hooks
/// for a syscall moving bytes on `sk` (the socket `state`). Binds the call's
/// SSL object to the socket; true when the bytes are the library's
/// (ciphertext: never parsed).
#[inline(always)]
pub fn in_call(sk: u64, state: *const SockState) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is read in place, once.
    let Some(call) = (unsafe { TLS_CALLS.get(pid_tgid) }) else { return false };
    let key = TlsConnKey { pid: (pid_tgid >> 32) as u32, _pad: 0, ssl: call.ssl };
    // SAFETY: `state` points at the live map value.
    let conn_id = unsafe { (*state).id };
    let bound = match TLS_CONNS.get_ptr(key) {
        // SAFETY: points at the live map value.
        Some(conn) => unsafe { (*conn).sk == sk && (*conn).conn_id == conn_id },
        None => false,
    };
    if !bound {
        let conn = TlsConn { sk, conn_id, protocol: PROTO_UNKNOWN, _pad: 0 };
        let _ = TLS_CONNS.insert(key, conn, 0);
    }
    true
}

/// The exiting thread's open call goes with it.
#[inline(always)]
pub fn forget_thread() {
    let _ = TLS_CALLS.remove(bpf_get_current_pid_tgid());
}
