//! Maps shared by the programs. Every map is bounded; per-connection entries
//! are removed when the connection reaches TCP_CLOSE.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use masdeepflow_common::{
    stats::COUNTERS_LEN,
    tcp::{PendingConnect, SockState},
};

/// Default ring buffer size; the agent sets its own at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Loss and overflow counters, see `masdeepflow_common::stats`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Established TCP sockets, by `struct sock` address.
#[map]
pub static SOCKETS: HashMap<u64, SockState> = HashMap::with_max_entries(65536, 0);

/// Where a new `SOCKETS` entry is built (too large for the BPF stack).
#[map]
pub static SOCK_SCRATCH: PerCpuArray<SockState> = PerCpuArray::with_max_entries(1, 0);

/// Connects between SYN sent and established/failed, by `struct sock` address.
#[map]
pub static CONNECTING: HashMap<u64, PendingConnect> = HashMap::with_max_entries(16384, 0);

/// Adds one to counter `index`.
#[inline(always)]
pub fn count(index: u32) {
    count_n(index, 1);
}

/// Adds `n` to counter `index`.
#[inline(always)]
pub fn count_n(index: u32, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from the map.
        unsafe { atomic_add(slot, n) };
    }
}

/// `*counter += n` as one atomic instruction (BPF_ATOMIC | BPF_ADD).
///
/// # Safety
/// `counter` must point at a live map value.
#[inline(always)]
pub unsafe fn atomic_add(counter: *mut u64, n: u64) {
    // SAFETY: as the caller promised.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(counter, n);
    }
}

/// Non-zero while the agent drains the ring buffer on its own timer: records
/// then wake nobody until the ring holds more than this many bytes (a burst
/// between two polls wakes it early). 0 (the initial value) while it sleeps
/// until woken, so that the first record after a quiet spell wakes it.
/// Written by the agent.
#[map]
pub static AGENT_POLLING: Array<u32> = Array::with_max_entries(1, 0);

const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Flags for submitting a high-rate record (payloads): a wake-up only
/// when the agent is not polling.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    match AGENT_POLLING.get(0) {
        Some(&fill) if fill != 0 && EVENTS.query(BPF_RB_AVAIL_DATA) <= u64::from(fill) => BPF_RB_NO_WAKEUP,
        _ => BPF_RB_FORCE_WAKEUP,
    }
}
