//! The gateway's maps (layouts in `masdeepflow_common::gateway`).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use masdeepflow_common::gateway::{
    BackendSlot, COUNTERS_LEN, GatewayConfig, MAX_BACKENDS, MAX_REVERSE, MAX_SERVICES, MAX_SLOTS, Reverse, ServiceKey, ServiceStats,
    ServiceValue,
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
