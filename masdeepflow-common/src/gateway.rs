//! The gateway's kernel maps and records (`masdeepflow-gateway-ebpf`), shared
//! with its user side and its pure planner (`masdeepflow-gateway`).
//!
//! Addresses are four `u32` words in network byte order, as the kernel's
//! `bpf_sock_addr.user_ip6` holds them; an IPv4 address is in the first word
//! and the other three are zero. Ports are in host byte order.
//!
//! Maps:
//! - `GW_SERVICES` (hash, no prealloc): [`ServiceKey`] -> [`ServiceValue`].
//!   A value names a range of `GW_SLOTS`; a new backend set is written to a
//!   free range first, then the service value is replaced in one update.
//! - `GW_SLOTS` (array of [`BackendSlot`]): the rotation of every service,
//!   already expanded (weights) or built (Maglev table) in user space.
//! - `GW_ROTATION` (array of `u64`, by service id): round-robin counters.
//! - `GW_REVERSE` (hash, no prealloc, by socket cookie): [`Reverse`], what
//!   a translated socket's peer address must be shown as; deleted by the
//!   `sock_release` program when the socket is closed.
//! - `GW_SERVICE_STATS`, `GW_BACKEND_STATS` (per-CPU arrays by id),
//!   `GW_COUNTERS` (per-CPU array, indexes below), `GW_EVENTS` (ring buffer
//!   of [`ConnectionRecord`], only when connection events are asked for).

use crate::COMM_LEN;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Most services, backends (ids of the per-service and per-backend stats)
/// and rotation slots (half of them at most in use while a new rotation is
/// written beside the old one).
pub const MAX_SERVICES: u32 = 4096;
pub const MAX_BACKENDS: u32 = 16384;
pub const MAX_SLOTS: u32 = 262_144;
/// Translated sockets whose peer address is shown as the VIP at once.
pub const MAX_REVERSE: u32 = 65536;
/// Services whose VIP one unconnected UDP socket can talk to at once.
pub const REVERSE_PAIRS: usize = 4;

/// `ServiceValue::algorithm`.
pub const ALG_ROUND_ROBIN: u32 = 1;
pub const ALG_RANDOM: u32 = 2;
pub const ALG_MAGLEV: u32 = 3;

/// `ServiceValue::hash_key`: what identifies a client for Maglev.
pub const KEY_CGROUP: u32 = 1;
pub const KEY_PROCESS: u32 = 2;
pub const KEY_NETNS: u32 = 3;

/// Indexes of `GW_COUNTERS`.
pub const C_TRANSLATED: u32 = 0;
/// A connect or send to a VIP whose service had no backend up: refused.
pub const C_NO_BACKEND: u32 = 1;
/// A translated socket whose reverse entry could not be stored
/// (`GW_REVERSE` full): its peer address shows the backend.
pub const C_REVERSE_FULL: u32 = 2;
/// Connection records dropped because `GW_EVENTS` was full.
pub const C_EVENTS_LOST: u32 = 3;
/// getpeername/recvmsg results shown as the VIP.
pub const C_REVERSED: u32 = 4;
/// A rotation slot read back empty (a bug or a torn update): not translated.
pub const C_BAD_SLOT: u32 = 5;
/// A connect to a VIP from outside the service's scope: not translated.
pub const C_OUT_OF_SCOPE: u32 = 6;
pub const COUNTERS_LEN: u32 = 8;

/// Key of `GW_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: [u32; 4],
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
}

/// Value of `GW_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index in the per-service maps.
    pub service_id: u32,
    /// The rotation: `GW_SLOTS[slot_base .. slot_base + slot_count]`. An
    /// empty rotation (no backend up) refuses connects (ECONNREFUSED).
    pub slot_base: u32,
    pub slot_count: u32,
    pub algorithm: u32,
    pub hash_key: u32,
    /// Bumped whenever the rotation changes, so that an unconnected UDP
    /// socket picks a backend again.
    pub generation: u32,
    /// Only sockets under this cgroup (id and level in the cgroup2 tree)
    /// are translated; 0: every socket the programs see.
    pub scope_cgroup_id: u64,
    pub scope_level: u32,
    pub _pad: u32,
    /// Mixed into the Maglev client hash (stable per VIP).
    pub hash_seed: u64,
}

/// One entry of `GW_SLOTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendSlot {
    pub addr: [u32; 4],
    pub port: u16,
    /// 0 marks an unused slot.
    pub family: u8,
    pub _pad: u8,
    /// Index in `GW_BACKEND_STATS`.
    pub backend_id: u32,
}

/// One translation of a socket: its peer `backend` is shown as `vip`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReversePair {
    pub backend: [u32; 4],
    pub vip: [u32; 4],
    pub backend_port: u16,
    pub vip_port: u16,
    /// 0: unused pair.
    pub family: u8,
    pub proto: u8,
    pub _pad: u16,
    pub service_id: u32,
    /// The service's generation when the backend was chosen.
    pub generation: u32,
}

/// Value of `GW_REVERSE`, keyed by socket cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reverse {
    pub pairs: [ReversePair; REVERSE_PAIRS],
    /// Pair to overwrite next when all are in use.
    pub next: u32,
    pub _pad: u32,
}

/// Per-service counters (`GW_SERVICE_STATS`, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub translated: u64,
    pub no_backend: u64,
}

/// A balanced connection (or the first datagram of a UDP socket to a
/// VIP), in `GW_EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    pub cookie: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub service_id: u32,
    pub backend_id: u32,
    pub vip: [u32; 4],
    pub backend: [u32; 4],
    pub vip_port: u16,
    pub backend_port: u16,
    pub family: u8,
    pub proto: u8,
    /// 1: connect(), 2: sendmsg() of an unconnected UDP socket.
    pub via: u8,
    pub _pad: u8,
    pub comm: [u8; COMM_LEN],
    pub _pad2: u32,
}

/// Load-time settings (the global `GW_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayConfig {
    /// 1: write a [`ConnectionRecord`] per translation.
    pub events: u32,
    /// 1: the kernel has `bpf_set_retval` (5.18+), so a refused connect
    /// fails with ECONNREFUSED instead of EPERM.
    pub set_retval: u32,
    /// 1: the kernel lets socket-address programs read the current task's
    /// pid, uid and comm (6.0+), so connection records carry them.
    pub process_info: u32,
    /// 1: the kernel has atomic fetch-add (5.12+), so round robin is exact
    /// under concurrent connects; else the counter is read, then added to.
    pub fetch_add: u32,
}

/// The Maglev client hash: `key` (a cgroup id, tgid or netns cookie) mixed
/// with the service's seed (the splitmix64 finaliser), reduced to a table
/// index. The kernel and the tests use this one function.
pub const fn maglev_index(key: u64, seed: u64, table_size: u32) -> u32 {
    if table_size == 0 {
        return 0;
    }
    (mix64(key ^ seed) % table_size as u64) as u32
}

/// splitmix64's finaliser: every input bit moves every output bit.
pub const fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::BackendSlot {}
    unsafe impl aya::Pod for super::Reverse {}
    unsafe impl aya::Pod for super::ServiceStats {}
    unsafe impl aya::Pod for super::GatewayConfig {}
}

const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 48);
const _: () = assert!(core::mem::size_of::<BackendSlot>() == 24);
const _: () = assert!(core::mem::size_of::<ReversePair>() == 48);
const _: () = assert!(core::mem::size_of::<Reverse>() == 200);
const _: () = assert!(core::mem::size_of::<ConnectionRecord>() == 104);
const _: () = assert!(core::mem::offset_of!(ConnectionRecord, comm) == 84);
const _: () = assert!(core::mem::size_of::<GatewayConfig>() == 16);
