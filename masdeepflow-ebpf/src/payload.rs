//! Payload capture for parsed protocols, called from the traffic hooks
//! (`sock_send_length`/`sock_recv_length`, or their fallbacks) in the
//! process that moved the bytes. The user buffer is found from the
//! syscall's saved registers (`bpf_task_pt_regs`, 5.15+) or, before 5.15,
//! from its arguments recorded at its entry (see `syscall_call`).
//!
//! A connection's first payload decides ([`detect::decide`]): if it starts
//! like HTTP/1.x every later send/receive is captured (up to
//! `capture_bytes` of each), if it is a MySQL server greeting likewise (up
//! to `mysql_capture_bytes`); else nothing more is looked at. Syscalls
//! without a user buffer (sendfile, splice, io_uring) are reported with
//! their length and no bytes.
//!
//! Cost per captured syscall is what the traced program pays, so the path
//! is short: registers are read with plain loads through the task's BTF
//! pointer (no helper calls; 5.15+), the bytes are copied from the program's
//! buffer straight into a ring buffer reservation (no per-CPU staging
//! copy), the process of a request is taken from the connection's owner
//! when the same process moves it, and the agent is woken only when it
//! sleeps ([`wakeup_flags`]).
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated,
};
use masdeepflow_common::{
    EventHeader, EventKind, ProcessInfo,
    payload::{
        CAPTURE_CLASSES, DIR_RECEIVED, DIR_SENT, PROTO_HTTP, PROTO_MYSQL, PROTO_MYSQL_MIDSTREAM, PROTO_OTHER, PayloadHeader, PayloadLoss,
        PayloadRecord, TLS_NONE,
    },
    stats::lost_index,
    tcp::{ROLE_CLIENT, SockState},
};

use crate::{
    detect::{self, First},
    kernel::{comm_filtered, comm_wanted, current_ids, current_process, offset},
    maps::{EVENTS, atomic_add, count, wakeup_flags},
    syscall_abi::{
        MSGHDR_IOV, SYS_PREAD64, SYS_PWRITE64, SYS_READ, SYS_READV, SYS_RECVFROM, SYS_RECVMSG, SYS_SENDMSG, SYS_SENDTO, SYS_WRITE,
        SYS_WRITEV,
    },
    syscall_call,
};

/// The first user buffer of the running syscall (moving bytes on `sk`)
/// and its length.
#[inline(always)]
pub fn user_buffer(sk: u64) -> Option<(u64, u64)> {
    let call = syscall_call::current_on(sk)?;
    let arg1 = call.args[1];
    let iov = match call.nr {
        SYS_READ | SYS_WRITE | SYS_PREAD64 | SYS_PWRITE64 | SYS_SENDTO | SYS_RECVFROM => return Some((arg1, u64::MAX)),
        SYS_READV | SYS_WRITEV => arg1,
        SYS_SENDMSG | SYS_RECVMSG => {
            // SAFETY: user memory read with the fault-tolerant helper.
            unsafe { bpf_probe_read_user((arg1 + MSGHDR_IOV) as *const u64) }.ok()?
        }
        _ => return None,
    };
    // SAFETY: as above; one read for the iovec's base and length.
    let first: [u64; 2] = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
    Some((first[0], first[1]))
}

/// The first (up to eight) bytes of a user buffer.
#[inline(always)]
pub fn first_bytes(buf: u64, len: u64) -> First {
    let mut first = First { bytes: [0u8; 8], n: 0 };
    let n = if len < 8 { len } else { 8 };
    if read_first(&mut first.bytes, buf, n) {
        first.n = n as usize;
    }
    first
}

/// Copies `n` (1 to 8) bytes of user memory at `src` to `dst`: a function
/// of its own for the reason [`read_user`] is (6.1's verifier lost the
/// bound of an inlined `n`).
#[inline(never)]
fn read_first(dst: &mut [u8; 8], src: u64, n: u64) -> bool {
    // SAFETY: reading a local (opaque to the optimiser).
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n > 8 {
        return false;
    }
    // SAFETY: `dst` has room for 8 bytes; user memory is read with the
    // fault-tolerant helper.
    unsafe { generated::bpf_probe_read_user(dst.as_mut_ptr().cast(), n as u32, src as *const core::ffi::c_void) == 0 }
}

/// Takes the connection's unreported payload losses (zeroing them with
/// atomic subtractions, so losses counted meanwhile on another CPU stay).
///
/// # Safety
/// `loss` must point into a live `SOCKETS` value.
#[inline(always)]
unsafe fn take_loss(loss: *mut PayloadLoss) -> PayloadLoss {
    // SAFETY: as the caller promised.
    unsafe {
        let taken = core::ptr::read_volatile(loss);
        if !taken.is_empty() {
            atomic_add(&raw mut (*loss).sent_starts, taken.sent_starts.wrapping_neg());
            atomic_add(&raw mut (*loss).received_starts, taken.received_starts.wrapping_neg());
            atomic_add(&raw mut (*loss).sent_bytes, taken.sent_bytes.wrapping_neg());
            atomic_add(&raw mut (*loss).received_bytes, taken.received_bytes.wrapping_neg());
        }
        taken
    }
}

/// Counts a record the ring buffer could not take into the connection's
/// losses, for its next record or its close to report.
///
/// # Safety
/// As [`take_loss`].
#[inline(always)]
unsafe fn count_lost(loss: *mut PayloadLoss, sent: bool, start: bool, len: u64) {
    // SAFETY: as the caller promised.
    unsafe {
        let (starts, bytes) = if sent {
            (&raw mut (*loss).sent_starts, &raw mut (*loss).sent_bytes)
        } else {
            (&raw mut (*loss).received_starts, &raw mut (*loss).received_bytes)
        };
        atomic_add(starts, start as u64);
        atomic_add(bytes, len);
    }
}

/// Copies `n` (1 to `N`) bytes of user memory at `src` into `dst`. A
/// function of its own so that the bound is checked right before the
/// helper call: inlined, the compiler reloads `n` from the stack after the
/// check, and older verifiers (6.1) then lose the bound and refuse the
/// program.
#[inline(never)]
fn read_user<const N: usize>(dst: *mut [u8; N], src: u64, n: u64) -> bool {
    // Opaque to the optimiser, which would otherwise drop the check below
    // as implied by the caller's.
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n > N as u64 {
        return false;
    }
    // SAFETY: `dst` has room for `N` bytes; user memory is read with the
    // fault-tolerant helper.
    unsafe { generated::bpf_probe_read_user(dst.cast(), n as u32, src as *const core::ffi::c_void) == 0 }
}

/// What a capture writes besides the bytes.
struct Capture {
    process: ProcessInfo,
    has_process: u32,
    sent: bool,
    len: u32,
    protocol: u32,
    /// `PayloadHeader::tls`.
    tls: u32,
}

/// Reserves a record with room for `N` bytes, copies `n` of them from
/// `buf` into it and sends it. False when the ring buffer is full.
#[inline(always)]
fn emit<const N: usize>(state: *mut SockState, c: &Capture, buf: u64, n: u64) -> bool {
    let Some(mut entry) = EVENTS.reserve::<PayloadRecord<N>>(0) else {
        return false;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: a reserved slot of the right size, every header field written
    // before submit; `state` is the live map value (only its counters change
    // under us, atomically).
    unsafe {
        let captured = if n != 0 && read_user::<N>(&raw mut (*rec).data, buf, n) { n } else { 0 };
        (*rec).header = PayloadHeader {
            header: EventHeader {
                kind: EventKind::Payload as u32,
                has_process: c.has_process,
                ts_ns: bpf_ktime_get_ns(),
                process: c.process,
            },
            endpoints: (*state).endpoints,
            conn_id: (*state).id,
            total_len: c.len as u64,
            captured_len: captured as u32,
            direction: if c.sent { DIR_SENT } else { DIR_RECEIVED },
            role: (*state).role,
            protocol: c.protocol,
            loss: take_loss(&raw mut (*state).payload_loss),
            tls: c.tls,
            _pad: 0,
        };
    }
    entry.submit(wakeup_flags());
    true
}

/// The process of a request's bytes: the connection's owner as recorded at
/// connect or accept when the same thread moves them (the common case:
/// one helper call), else the owner's process with the current thread's
/// id, name and cgroup, else the current task read whole.
///
/// # Safety
/// `state` points at a live `SOCKETS` value.
#[inline(always)]
unsafe fn request_process(state: *const SockState) -> ProcessInfo {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // SAFETY: as the caller promised.
    let (has_owner, owner) = unsafe { ((*state).has_owner, (*state).owner) };
    if has_owner == 0 || owner.pid != pid {
        return current_process();
    }
    if owner.tid == tid {
        return owner;
    }
    ProcessInfo {
        // SAFETY: a helper with no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tid,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        ..owner
    }
}

/// Whose bytes these are: whether they are request bytes (sent by the
/// connection's client or received by its server), whether the whole task
/// is looked at (exchanges take their process from request bytes; others
/// only for the `--comm` filter), and the process to report. None when
/// `--comm` filters it out.
///
/// # Safety
/// `state` points at a live `SOCKETS` value.
#[inline(always)]
unsafe fn side(state: *const SockState, sent: bool) -> Option<(bool, bool, ProcessInfo)> {
    // SAFETY: as the caller promised.
    let client = unsafe { (*state).role } == ROLE_CLIENT;
    let request = sent == client;
    let whole = request || comm_filtered();
    // SAFETY: as the caller promised.
    let process = if whole { unsafe { request_process(state) } } else { current_ids() };
    if whole && !comm_wanted(&process.comm) {
        return None;
    }
    Some((request, whole, process))
}

/// Payload bytes copied per syscall of a connection speaking `protocol`
/// (0: not captured).
#[inline(always)]
fn capture_limit(protocol: u32) -> u64 {
    if protocol == PROTO_HTTP { offset!(capture_bytes) as u64 } else { offset!(mysql_capture_bytes) as u64 }
}

/// Whether payloads are captured at all (http or mysql on).
#[inline(always)]
pub fn capturing() -> bool {
    offset!(capture_bytes) != 0 || offset!(mysql_capture_bytes) != 0
}

/// The parsers the agent runs (their families are on).
#[inline(always)]
fn wanted() -> detect::Wanted {
    detect::Wanted { http: offset!(capture_bytes) != 0, mysql: offset!(mysql_capture_bytes) != 0 }
}

#[inline(always)]
pub fn capture(sk: u64, state: *mut SockState, sent: bool, len: u32) {
    let wanted = wanted();
    if !wanted.http && !wanted.mysql {
        return;
    }
    // SAFETY: `state` points at the live map value of this socket.
    let mut protocol = unsafe { (*state).protocol };
    if protocol == PROTO_OTHER {
        return;
    }
    // SAFETY: as above.
    let Some((request, whole, process)) = (unsafe { side(state, sent) }) else { return };
    let buffer = user_buffer(sk);
    if protocol != PROTO_HTTP && protocol != PROTO_MYSQL && protocol != PROTO_MYSQL_MIDSTREAM {
        let Some((buf, buf_len)) = buffer else { return };
        let first = first_bytes(buf, buf_len.min(len as u64));
        protocol = detect::decide(protocol, &first, len as u64, wanted);
        // SAFETY: a plain store of a u32 in the live map value.
        unsafe { (*state).protocol = protocol };
        if !detect::is_captured(protocol) {
            return;
        }
    }
    let limit = capture_limit(protocol);
    let c = Capture { process, has_process: whole as u32, sent, len, protocol: detect::reported(protocol), tls: TLS_NONE };
    let (buf, mut n) = match buffer {
        Some((buf, buf_len)) => (buf, (len as u64).min(buf_len).min(limit).min(CAPTURE_CLASSES[3] as u64)),
        None => (0, 0),
    };
    if buf == 0 {
        n = 0;
    }
    send(state, &c, buf, n, request);
}

/// Emits one record of `n` bytes at `buf` in the smallest class that holds
/// them; when the ring buffer is full, counts it lost on the connection.
#[inline(always)]
fn send(state: *mut SockState, c: &Capture, buf: u64, n: u64, request: bool) {
    let sent_ok = if n <= CAPTURE_CLASSES[0] as u64 {
        emit::<{ CAPTURE_CLASSES[0] }>(state, c, buf, n)
    } else if n <= CAPTURE_CLASSES[1] as u64 {
        emit::<{ CAPTURE_CLASSES[1] }>(state, c, buf, n)
    } else if n <= CAPTURE_CLASSES[2] as u64 {
        emit::<{ CAPTURE_CLASSES[2] }>(state, c, buf, n)
    } else {
        emit::<{ CAPTURE_CLASSES[3] }>(state, c, buf, n)
    };
    if sent_ok {
        return;
    }
    count(lost_index(EventKind::Payload as u32));
    let first = if n == 0 { First { bytes: [0; 8], n: 0 } } else { first_bytes(buf, n) };
    let start = detect::starts_message(c.protocol, &first, c.len as u64, request);
    // SAFETY: `state` points at the live map value of this socket.
    unsafe { count_lost(&raw mut (*state).payload_loss, c.sent, start, c.len as u64) };
}

/// Plaintext a TLS library call returned (`count` bytes at `buf`, sent or
/// received by the owner of the socket `state`): decided and captured as
/// a syscall's payload would be, with the connection's plaintext protocol
/// kept in `*protocol` (the socket's own `protocol` is for its ciphertext,
/// which is never parsed). `tls` is the library (`PayloadHeader::tls`).
///
/// # Safety
/// `state` points at a live `SOCKETS` value, `protocol` at a live map value.
#[inline(always)]
pub unsafe fn capture_plaintext(state: *mut SockState, protocol: *mut u32, sent: bool, count: u64, buf: u64, tls: u32) {
    let wanted = wanted();
    if !wanted.http && !wanted.mysql {
        return;
    }
    let len = if count > u32::MAX as u64 { u32::MAX } else { count as u32 };
    // SAFETY: as the caller promised.
    let mut proto = unsafe { *protocol };
    if proto == PROTO_OTHER {
        return;
    }
    if proto != PROTO_HTTP && proto != PROTO_MYSQL && proto != PROTO_MYSQL_MIDSTREAM {
        let first = first_bytes(buf, count);
        proto = detect::decide(proto, &first, count, wanted);
        // SAFETY: as the caller promised.
        unsafe { *protocol = proto };
        if !detect::is_captured(proto) {
            return;
        }
    }
    // SAFETY: as the caller promised.
    let Some((request, whole, process)) = (unsafe { side(state, sent) }) else { return };
    let n = count.min(capture_limit(proto)).min(CAPTURE_CLASSES[3] as u64);
    let c = Capture { process, has_process: whole as u32, sent, len, protocol: detect::reported(proto), tls };
    send(state, &c, buf, n, request);
}
