//! Counters the kernel keeps in the per-CPU array `COUNTERS`.

/// Index of the loss counter for a record of `kind` (ring buffer full).
pub const fn lost_index(kind: u32) -> u32 {
    kind
}
/// A socket could not be tracked: `SOCKETS` was full.
pub const SOCKETS_FULL: u32 = 16;
/// A connect could not be tracked: `CONNECTING` was full.
pub const CONNECTING_FULL: u32 = 17;
/// HTTP requests whose payload records were lost on a connection whose
/// `tcp_close` was lost too (nothing else would report them).
pub const HTTP_REQUESTS_LOST_AT_CLOSE: u32 = 18;
/// The same for MySQL commands.
pub const MYSQL_COMMANDS_LOST_AT_CLOSE: u32 = 19;
/// Number of slots in `COUNTERS`.
pub const COUNTERS_LEN: u32 = 32;
