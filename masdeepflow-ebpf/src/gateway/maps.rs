//! The gateway's maps (layouts in `masdeepflow_common::gateway`).
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, SockHash},
};
use masdeepflow_common::{
    gateway::{
        BackendSlot, COUNTERS_LEN, GatewayConfig, MAX_BACKENDS, MAX_REVERSE, MAX_SERVICES, MAX_SLOTS, Reverse, ServiceKey, ServiceStats,
        ServiceValue,
    },
    proxy::{AccelKey, MAX_ACCEL_SOCKETS, MAX_PROXY_SOCKETS, PROXY_COUNTERS_LEN, PROXY_SIDES, ProxySide},
};

/// `BPF_F_NO_PREALLOC`: entries are allocated on insert and freed after an
/// RCU grace period, so a program never reads a value being reused.
const NO_PREALLOC: u32 = 1;

/// Written by the gateway before load.
#[unsafe(no_mangle)]
pub static GW_CONFIG: GatewayConfig = GatewayConfig { events: 0, set_retval: 0, process_info: 0, fetch_add: 0 };

/// One setting of `GW_CONFIG`, read so the compiler cannot fold it.
#[inline(always)]
pub fn config() -> GatewayConfig {
    // SAFETY: reading a global the loader initialised.
    unsafe { core::ptr::read_volatile(&raw const GW_CONFIG) }
}

#[map]
pub static GW_SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(MAX_SERVICES, NO_PREALLOC);

#[map]
pub static GW_SLOTS: Array<BackendSlot> = Array::with_max_entries(MAX_SLOTS, 0);

#[map]
pub static GW_ROTATION: Array<u64> = Array::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static GW_REVERSE: HashMap<u64, Reverse> = HashMap::with_max_entries(MAX_REVERSE, NO_PREALLOC);

#[map]
pub static GW_SERVICE_STATS: PerCpuArray<ServiceStats> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static GW_BACKEND_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static GW_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Connection records; the gateway sizes it (small when events are off).
#[map]
pub static GW_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Adds one to `GW_COUNTERS[index]` (this CPU's).
#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = GW_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a pointer into the map, this CPU's slot.
        unsafe { *c += 1 };
    }
}

/// Proxy sockets by socket cookie; `gw_proxy_verdict` is attached to it.
#[map]
pub static GW_PROXY_SOCKS: SockHash<u64> = SockHash::with_max_entries(MAX_PROXY_SOCKETS, 0);

/// Proxy socket cookie -> index in `GW_PROXY_SIDES`.
#[map]
pub static GW_PROXY_PEERS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_PROXY_SOCKETS, NO_PREALLOC);

/// One entry per proxy socket; user space maps it to move the `held` gate.
#[map]
pub static GW_PROXY_SIDES: Array<ProxySide> = Array::with_max_entries(PROXY_SIDES, BPF_F_MMAPABLE);

/// Counters of the proxy and accelerator programs (`PC_*`).
#[map]
pub static GW_PROXY_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROXY_COUNTERS_LEN, 0);

/// Both ends of accelerated local connections; `gw_accel_msg` (and, where
/// the kernel needs it, `gw_accel_verdict`) are attached to it.
#[map]
pub static GW_ACCEL_SOCKS: SockHash<AccelKey> = SockHash::with_max_entries(MAX_ACCEL_SOCKETS, 0);

/// Accelerated sockets that sent through TCP once and stay on it; removed
/// when the socket closes.
#[map]
pub static GW_ACCEL_VIA_TCP: HashMap<AccelKey, u32> = HashMap::with_max_entries(MAX_ACCEL_SOCKETS, NO_PREALLOC);

/// `[0]`: `ACCEL_ON` or `ACCEL_DRAINING`.
#[map]
pub static GW_ACCEL_CTL: Array<u32> = Array::with_max_entries(1, 0);

/// Adds one to `GW_PROXY_COUNTERS[index]` (this CPU's).
#[inline(always)]
pub fn proxy_count(index: u32) {
    if let Some(c) = GW_PROXY_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a pointer into the map, this CPU's slot.
        unsafe { *c += 1 };
    }
}

/// `*p += n` as one atomic instruction (BPF_XADD), shared with user space.
///
/// # Safety
/// `p` must point into a live map value.
#[inline(always)]
pub unsafe fn atomic_add(p: *mut u64, n: u64) {
    // SAFETY: as the caller promised.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, n) };
}
