//! Payload capture for parsed protocols, called from the traffic hooks
//! (`sock_send_length`/`sock_recv_length`) in the process that moved the
//! bytes. The user buffer is found from the syscall's saved registers
//! (`bpf_task_pt_regs`), so no syscall entry hooks are needed.
//!
//! A connection's first payload decides: if it starts like HTTP/1.x every
//! later send/receive is captured (up to `capture_bytes` of each); else
//! nothing more is looked at. Syscalls without a user buffer (sendfile,
//! splice, io_uring) are reported with their length and no bytes.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf, generated},
    macros::map,
    maps::PerCpuArray,
};
use masdeepflow_common::{
    EventHeader, EventKind,
    payload::{CAPTURE_MAX, DIR_RECEIVED, DIR_SENT, PROTO_HTTP, PROTO_OTHER, PROTO_UNKNOWN, PayloadHeader, PayloadLoss, PayloadRecord},
    stats::lost_index,
    tcp::{ROLE_CLIENT, SockState},
};

use crate::{
    kernel::{comm_filtered, comm_wanted, current_ids, current_process, offset, read_at, syscall_regs},
    maps::{EVENTS, atomic_add, batched_wakeup, count},
    syscall_abi::{
        MSGHDR_IOV, REGS_ARG2, SYS_PREAD64, SYS_PWRITE64, SYS_READ, SYS_READV, SYS_RECVFROM, SYS_RECVMSG, SYS_SENDMSG, SYS_SENDTO,
        SYS_WRITE, SYS_WRITEV, syscall_nr,
    },
};

/// Where a payload record is built before it is copied to the ring buffer.
#[map]
static SCRATCH: PerCpuArray<PayloadRecord> = PerCpuArray::with_max_entries(1, 0);

/// How HTTP/1.x messages start: request methods, or a status line.
const HTTP_STARTS: [[u8; 4]; 10] = [*b"GET ", *b"POST", *b"PUT ", *b"HEAD", *b"DELE", *b"OPTI", *b"PATC", *b"CONN", *b"TRAC", *b"HTTP"];

/// The first user buffer of the running syscall and its length.
#[inline(always)]
fn user_buffer() -> Option<(u64, u64)> {
    let regs = syscall_regs();
    let nr = syscall_nr(regs).ok()?;
    let arg2: u64 = read_at(regs, REGS_ARG2).ok()?;
    let iov = match nr {
        SYS_READ | SYS_WRITE | SYS_PREAD64 | SYS_PWRITE64 | SYS_SENDTO | SYS_RECVFROM => return Some((arg2, u64::MAX)),
        SYS_READV | SYS_WRITEV => arg2,
        SYS_SENDMSG | SYS_RECVMSG => {
            // SAFETY: user memory read with the fault-tolerant helper.
            unsafe { bpf_probe_read_user((arg2 + MSGHDR_IOV) as *const u64) }.ok()?
        }
        _ => return None,
    };
    // SAFETY: as above.
    let (base, len) = unsafe { (bpf_probe_read_user(iov as *const u64).ok()?, bpf_probe_read_user((iov + 8) as *const u64).ok()?) };
    Some((base, len))
}

/// Whether the first bytes of a connection look like HTTP/1.x. A first
/// write shorter than four bytes counts when it is the start of one (a
/// request line split across writes).
#[inline(always)]
fn starts_like_http(buf: u64, len: u64) -> bool {
    if len == 0 {
        return false;
    }
    let mut first = [0u8; 4];
    let n = if len < 4 { len as usize } else { 4 };
    // SAFETY: user memory read with the fault-tolerant helper.
    if unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut first[..n]) }.is_err() {
        return false;
    }
    is_http_start(&first, n)
}

/// Whether the first `n` (1..=4) of `first` start an HTTP/1.x message.
#[inline(always)]
fn is_http_start(first: &[u8; 4], n: usize) -> bool {
    if n == 0 {
        return false;
    }
    for start in HTTP_STARTS {
        let mut same = true;
        for i in 0..4 {
            if i < n && first[i] != start[i] {
                same = false;
            }
        }
        if same {
            return true;
        }
    }
    false
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

/// Puts back losses taken for a record that was then lost, plus that record.
///
/// # Safety
/// As [`take_loss`].
#[inline(always)]
unsafe fn give_back(loss: *mut PayloadLoss, taken: &PayloadLoss, sent: bool, start: bool, len: u64) {
    // SAFETY: as the caller promised.
    unsafe {
        let (starts, bytes) = if sent {
            (&raw mut (*loss).sent_starts, &raw mut (*loss).sent_bytes)
        } else {
            (&raw mut (*loss).received_starts, &raw mut (*loss).received_bytes)
        };
        atomic_add(starts, start as u64);
        atomic_add(bytes, len);
        if !taken.is_empty() {
            atomic_add(&raw mut (*loss).sent_starts, taken.sent_starts);
            atomic_add(&raw mut (*loss).received_starts, taken.received_starts);
            atomic_add(&raw mut (*loss).sent_bytes, taken.sent_bytes);
            atomic_add(&raw mut (*loss).received_bytes, taken.received_bytes);
        }
    }
}

/// Copies `n` (1 to `CAPTURE_MAX`) bytes of user memory at `src` to `dst`,
/// which has room for `CAPTURE_MAX`. A function of its own so that the
/// bound is checked right before the helper call: inlined, the compiler
/// reloads `n` from the stack after the check, and older verifiers (6.1)
/// then lose the bound and refuse the program.
#[inline(never)]
fn read_user(dst: *mut u8, src: u64, n: u64) -> bool {
    // Opaque to the optimiser, which would otherwise drop the check below
    // as implied by the caller's.
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n > CAPTURE_MAX as u64 {
        return false;
    }
    // SAFETY: `dst` has room for `CAPTURE_MAX` bytes; user memory is read
    // with the fault-tolerant helper.
    unsafe { generated::bpf_probe_read_user(dst.cast(), n as u32, src as *const core::ffi::c_void) == 0 }
}

/// Sends the header and the first `captured` data bytes of `rec` to the
/// ring buffer. A function of its own for the reason [`read_user`] is.
#[inline(never)]
fn send_record(rec: *const PayloadRecord, captured: u64, flags: u64) -> bool {
    // SAFETY: reading a local (opaque to the optimiser, see `read_user`).
    let captured = unsafe { core::ptr::read_volatile(&captured) };
    if captured > CAPTURE_MAX as u64 {
        return false;
    }
    let size = core::mem::size_of::<PayloadHeader>() + captured as usize;
    // SAFETY: `rec` is the per-CPU scratch record, `size` within it.
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const u8, size) };
    EVENTS.output::<[u8]>(bytes, flags).is_ok()
}

#[inline(always)]
pub fn capture(state: *mut SockState, sent: bool, len: u32) {
    let limit = offset!(capture_bytes) as u64;
    if limit == 0 {
        return;
    }
    // SAFETY: `state` points at the live map value of this socket.
    let protocol = unsafe { (*state).protocol };
    if protocol == PROTO_OTHER {
        return;
    }
    // SAFETY: as above.
    let client = unsafe { (*state).role } == ROLE_CLIENT;
    // Exchanges take their process from request bytes; the task is read
    // whole only for those (or for the `--comm` filter).
    let whole = sent == client || comm_filtered();
    let process = if whole { current_process() } else { current_ids() };
    if whole && !comm_wanted(&process.comm) {
        return;
    }
    let buffer = user_buffer();
    if protocol == PROTO_UNKNOWN {
        let Some((buf, buf_len)) = buffer else { return };
        let http = starts_like_http(buf, buf_len.min(len as u64));
        // SAFETY: a plain store of a u32 in the live map value.
        unsafe { (*state).protocol = if http { PROTO_HTTP } else { PROTO_OTHER } };
        if !http {
            return;
        }
    }
    let Some(rec) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: the per-CPU scratch slot is ours for this program run;
    // `state` is the live map value (only its loss counters change under us,
    // atomically).
    unsafe {
        (*rec).header = PayloadHeader {
            header: EventHeader { kind: EventKind::Payload as u32, has_process: whole as u32, ts_ns: bpf_ktime_get_ns(), process },
            endpoints: (*state).endpoints,
            conn_id: (*state).id,
            total_len: len as u64,
            captured_len: 0,
            direction: if sent { DIR_SENT } else { DIR_RECEIVED },
            role: (*state).role,
            _pad: 0,
            loss: PayloadLoss::NONE,
        };
        let mut n: u64 = 0;
        if let Some((buf, buf_len)) = buffer {
            n = len as u64;
            if buf_len < n {
                n = buf_len;
            }
            if limit < n {
                n = limit;
            }
            if n > CAPTURE_MAX as u64 {
                n = CAPTURE_MAX as u64;
            }
            if !read_user((&raw mut (*rec).data).cast(), buf, n) {
                n = 0;
            }
        }
        (*rec).header.captured_len = n as u32;
        let loss = &raw mut (*state).payload_loss;
        (*rec).header.loss = take_loss(loss);
        if send_record(rec, n, batched_wakeup(core::mem::size_of::<PayloadHeader>() as u64 + n)) {
            return;
        }
        count(lost_index(EventKind::Payload as u32));
        let first = [(*rec).data[0], (*rec).data[1], (*rec).data[2], (*rec).data[3]];
        let start = is_http_start(&first, if n < 4 { n as usize } else { 4 });
        give_back(loss, &(*rec).header.loss, sent, start, len as u64);
    }
}
