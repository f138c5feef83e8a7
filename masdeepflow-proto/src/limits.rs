//! Hard bounds on everything the parser stores.
//!
//! Every buffer and queue in this crate is capped by one of these
//! constants; input that would exceed a cap is either truncated (with a flag
//! telling so) or makes the parser give up on the connection.

/// Largest request/response head (start line + header lines + the blank
/// line) that is buffered or parsed, in bytes. A head that does not end
/// within this many bytes is an error ([`crate::http1::ParseError::HeadTooLarge`]).
pub const MAX_HEAD_SIZE: usize = 16 * 1024;

/// Largest number of header lines in one head; more is an error
/// ([`crate::http1::ParseError::TooManyHeaders`]).
pub const MAX_HEADERS: usize = 64;

/// Bytes of the request target kept; longer targets are cut and flagged
/// (`target_truncated`).
pub const MAX_TARGET_LEN: usize = 2048;

/// Bytes of the `Host` header value kept; longer values are cut silently.
pub const MAX_HOST_LEN: usize = 256;

/// Longest accepted method token; longer is an error
/// ([`crate::http1::ParseError::InvalidMethod`]).
pub const MAX_METHOD_LEN: usize = 32;

/// Longest chunk-size line (size + extensions) or trailer line in a chunked
/// body; trailer section as a whole is bounded by [`MAX_HEAD_SIZE`].
pub const MAX_CHUNK_LINE: usize = 4096;

/// Requests waiting for their response in one connection (pipelining depth).
/// Requests beyond this are not stored: a placeholder keeps the
/// request/response pairing right and `ConnectionStats::pending_overflow`
/// counts them.
pub const MAX_PENDING_REQUESTS: usize = 32;

/// Entries in one connection's pending queue: stored requests, and runs of
/// unseen or lost ones (each run one entry). More makes the parser give the
/// connection up (`GiveUpReason::TooManyPending`).
pub const MAX_PENDING_ENTRIES: usize = 2 * MAX_PENDING_REQUESTS + 2;

/// Responses seen before any request they could answer (cross-direction
/// reordering by the capture pipeline) kept while waiting for their request.
pub const MAX_UNPAIRED_RESPONSES: usize = 4;

/// Completed exchanges held until [`crate::Http1Connection::drain`]; more are
/// dropped and counted in `ConnectionStats::dropped_exchanges`. Draining after
/// every `on_data`/`on_close` call never loses any.
pub const MAX_OUTPUT: usize = 64;

/// Default number of syscalls per direction skipped while looking for a
/// first message boundary in mid-stream mode before giving up.
pub const DEFAULT_MAX_SYNC_SKIPS: u32 = 256;

// ---- MySQL -----------------------------------------------------------------

/// Default bytes of SQL kept per statement (`MysqlConfig::sql_bytes`).
pub const MYSQL_DEFAULT_SQL_BYTES: usize = 4096;

/// Largest `MysqlConfig::sql_bytes` accepted (larger values are clamped).
pub const MYSQL_MAX_SQL_BYTES: usize = 64 * 1024;

/// Bytes of a COM_QUERY kept beyond `sql_bytes` to read past MySQL 8 query
/// attributes; a statement whose attributes are longer is reported without
/// its text (`statement_truncated`).
pub const MYSQL_QUERY_ATTRIBUTES_BYTES: usize = 4096;

/// Bytes of an ERR packet's message kept.
pub const MYSQL_MAX_ERROR_MESSAGE: usize = 512;

/// Default prepared statements remembered per connection; the oldest is
/// evicted first (`MysqlStats::statements_evicted`).
pub const MYSQL_MAX_PREPARED: usize = 128;

/// Default bytes of prepared SQL and fingerprints held per connection
/// (each statement also costs 64 bytes of bookkeeping in this count).
pub const MYSQL_MAX_PREPARED_BYTES: usize = 256 * 1024;

/// Bytes kept of the client's handshake response.
pub const MYSQL_HELLO_BYTES: usize = 1024;
