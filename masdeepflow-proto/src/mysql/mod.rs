//! MySQL / MariaDB client-server protocol over captured socket payloads.
//!
//! The stages, each in its own module with its own tests:
//!
//! * [`framing`](self) (`framing.rs`, `compress.rs`): bytes into packets:
//!   4-byte headers, continuation packets for payloads over 16 MiB (joined,
//!   with exact sizes), headers and bodies split across syscalls, several
//!   packets per syscall, bodies past the capture skipped by length; the
//!   compressed protocol's 7-byte frames with zlib bodies, inflated in
//!   bounded steps.
//! * [`handshake`]: the connection phase: greeting, handshake response
//!   (user, schema, capabilities), SSLRequest, the auth exchange.
//! * [`Command`] (`command.rs`): command names, which commands get no
//!   response, statement text (MySQL 8 query attributes skipped),
//!   statement ids.
//! * `response.rs`: each command's response shape (OK, ERR, EOF, text and
//!   binary result sets, multiple results, prepare answers, LOCAL INFILE,
//!   cursors).
//! * [`MysqlConnection`] (`connection.rs`): the stitcher pairing commands
//!   with responses into [`MysqlExchange`]s, tracking the prepared
//!   statements (`statements.rs`), the current schema and user.
//! * [`fingerprint()`]: statement normalization, a pure function.
//!
//! # Exactness
//!
//! Sizes are exact: `request_bytes` / `response_bytes` count packet headers
//! and bytes past the capture. Rows are counted from packet headers, so
//! they are exact as long as every packet header of the response was
//! captured; when one was not (the kernel copied only a prefix of a large
//! write), the parser loses the framing, the exchange is reported with
//! `approximate: true` and `rows: None`, and the server side is resynchronised at the
//! next response, once the client has sent its next command.
//!
//! Responses are paired with commands in order. A command whose response
//! is still being read when the next command arrives marks the client as
//! pipelining. For clients that do not pipeline (every synchronous client
//! library) every command is reported with its own response or counted
//! lost once, whatever the capture and the losses; for pipelining clients
//! this holds while both sides stay in sync, and a lost command that gets no
//! response (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT) may then
//! shift the pairing.
//!
//! # Capture limits, lost syscalls, resynchronisation
//!
//! Bytes past a syscall's capture are skipped by packet length, so sizes,
//! statement lengths and framing stay exact as long as the packet headers
//! were captured. When a header falls in uncaptured or lost bytes the
//! direction loses its framing: the message in progress is reported with
//! what was read of it (`approximate: true`), the client side resumes at the
//! next syscall that starts with a plausible command (a packet header with
//! sequence id 0, a known command of a plausible length, or exactly one
//! packet; on a compressed connection any frame with sequence id 0), the
//! server side at the first syscall starting like a response once the
//! client has sent its next command. A few bytes (a header split across two
//! syscalls) are held to be looked at with the next syscall.
//!
//! [`MysqlConnection::on_lost`] takes, per direction, the number of lost
//! syscalls that began a command (client: first bytes a packet or frame
//! header with sequence id 0 that fits the syscall, see
//! [`detect::starts_command`]) or a response (server,
//! [`detect::starts_response`]) and their total size. A lost
//! command is queued as a lost run; the responses to it are absorbed until
//! the next command seen, where the run is counted in
//! [`MysqlStats::lost_exchanges`]; a lost response start counts its command
//! lost. Lost bytes inside a packet are skipped by length. A loss during the
//! connection phase continues as on a connection seen from the middle.
//! Commands whose first byte the capture did not hold (a lost body read
//! apart from its header, as mysqld reads) are counted in
//! [`MysqlStats::unreadable_commands`]; the two counts together are what
//! `ConnectionParser::lost_exchanges` reports. The property tests check
//! that, with the syscalls each side really makes dropped anywhere (the
//! connection phase included), every command is reported with its own
//! response or counted once.
//!
//! When a response's last bytes were lost, `response_end_ts_ns` is the
//! timestamp given to `on_lost` (that of the next delivered syscall).
//! Responses are paired in order; a response arriving before any command it
//! could answer (cross-direction reordering by the capture pipeline) is
//! counted in [`MysqlStats::orphan_responses`], not held back.
//!
//! # Bounds
//!
//! Per connection: the command prefix kept is at most `sql_bytes` +
//! [`crate::limits::MYSQL_QUERY_ATTRIBUTES_BYTES`], a server packet's at
//! most about 1.1 KiB (64 bytes inside result sets); at most
//! [`crate::limits::MAX_PENDING_REQUESTS`] stored commands and
//! [`crate::limits::MAX_PENDING_ENTRIES`] queue entries (past that the
//! connection is given up with its commands counted), [`crate::limits::MAX_OUTPUT`]
//! undrained exchanges, the prepared-statement table (by default 128
//! statements and 256 KiB, oldest evicted); a compressed connection adds
//! one inflate state (about 43 KiB) and a 16 KiB buffer per direction.

mod command;
mod compress;
mod connection;
pub mod detect;
mod exchange;
pub mod fingerprint;
mod framing;
pub mod handshake;
mod response;
mod statements;
mod wire;

pub use command::Command;
pub use connection::{MysqlConfig, MysqlConnection, MysqlState, MysqlStats};
pub use exchange::{MysqlError, MysqlExchange, ResponseKind};
pub use fingerprint::fingerprint;
pub use statements::Prepared;
