//! Counters the kernel keeps in the per-CPU array `COUNTERS`.

/// Index of the loss counter for a record of `kind` (ring buffer full).
pub const fn lost_index(kind: u32) -> u32 {
    kind
}
/// A socket could not be tracked: `SOCKETS` was full.
pub const SOCKETS_FULL: u32 = 16;
/// A connect could not be tracked: `CONNECTING` was full.
pub const CONNECTING_FULL: u32 = 17;
/// Number of slots in `COUNTERS`.
pub const COUNTERS_LEN: u32 = 32;
