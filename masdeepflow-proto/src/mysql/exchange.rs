//! The unit of output: one command paired with its response.

use std::borrow::Cow;
use std::sync::Arc;

use super::command::Command;

/// What the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseKind {
    /// OK (also EOF, and COM_STATISTICS' text and COM_FIELD_LIST's
    /// definitions, which are not result sets).
    Ok,
    /// ERR (the last one, when a multi-statement or CALL ended on an error).
    Error,
    /// At least one result set (text or binary protocol).
    Rows,
    /// The answer to COM_STMT_PREPARE.
    Prepared,
}

impl ResponseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseKind::Ok => "ok",
            ResponseKind::Error => "error",
            ResponseKind::Rows => "rows",
            ResponseKind::Prepared => "prepared",
        }
    }
}

/// Why an exchange is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MysqlError {
    /// The connection ended before any response to this command began.
    NoResponse,
    /// The connection ended in the middle of the response.
    ResponseIncomplete,
    /// The client asked for TLS (SSLRequest): reported once with no
    /// command; nothing more is parsed on the connection.
    Tls,
    /// The parser gave up on the connection (not MySQL) while this command
    /// waited for its response.
    ParserGaveUp,
}

impl MysqlError {
    pub fn as_str(self) -> &'static str {
        match self {
            MysqlError::NoResponse => "no_response",
            MysqlError::ResponseIncomplete => "response_incomplete",
            MysqlError::Tls => "tls",
            MysqlError::ParserGaveUp => "parser_gave_up",
        }
    }
}

/// One MySQL command and its response.
///
/// Timestamps are the caller's `ts_ns` of the syscall that carried the
/// byte in question. Byte counts are bytes on the wire: packet headers
/// included, bytes past the capture included, and on a compressed
/// connection the compressed frames (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlExchange {
    /// `None` only for the record of a connection switching to TLS.
    pub command: Option<Command>,
    /// SQL (COM_QUERY, COM_STMT_PREPARE; for COM_STMT_EXECUTE, FETCH,
    /// RESET, CLOSE, SEND_LONG_DATA the prepared statement's SQL) or schema
    /// name (COM_INIT_DB), at most `sql_bytes` bytes. `None` where the
    /// command has none, or the statement was prepared before the parser
    /// saw the connection (or was evicted from its table).
    pub statement: Option<Arc<[u8]>>,
    /// The statement is longer than `statement` (cut at `sql_bytes` or by
    /// the capture).
    pub statement_truncated: bool,
    /// The statement's full length in bytes, when known (also past the
    /// capture and across continuation packets).
    pub statement_len: Option<u64>,
    /// [`super::fingerprint()`] of `statement` (computed once per prepared
    /// statement).
    pub fingerprint: Option<Arc<str>>,
    /// COM_STMT_* commands: the id they name; COM_STMT_PREPARE: the id the
    /// server gave.
    pub statement_id: Option<u32>,
    /// Current schema when the command was sent (handshake, COM_INIT_DB,
    /// successful `USE`, session-state changes); `None` when unknown.
    pub database: Option<Arc<[u8]>>,
    /// User from the handshake (or COM_CHANGE_USER); `None` when unknown.
    pub user: Option<Arc<[u8]>>,
    /// `None` for commands without a response, and when none was seen.
    pub response: Option<ResponseKind>,
    /// Rows returned (text and binary), summed over result sets;
    /// `None` when there was no result set or the count is unknown.
    pub rows: Option<u64>,
    /// Result sets in the response (several for multi-statements and CALL).
    pub result_sets: u32,
    /// Sum of the OK packets' affected rows.
    pub affected_rows: Option<u64>,
    /// Last OK packet's last insert id.
    pub last_insert_id: Option<u64>,
    /// Sum of the warnings of the OK and EOF packets.
    pub warnings: Option<u32>,
    pub error_code: Option<u16>,
    /// SQLSTATE (5 ASCII bytes), when the ERR packet had one.
    pub sql_state: Option<[u8; 5]>,
    /// At most [`crate::limits::MYSQL_MAX_ERROR_MESSAGE`] bytes.
    pub error_message: Option<Vec<u8>>,
    /// COM_STMT_PREPARE answer: parameter and column counts.
    pub params: Option<u16>,
    pub columns: Option<u16>,
    /// Syscall timestamp of the command's first byte.
    pub request_ts_ns: u64,
    /// Syscall timestamp of the response's first byte.
    pub response_ts_ns: Option<u64>,
    /// Syscall timestamp of the response's last byte.
    pub response_end_ts_ns: Option<u64>,
    /// Client bytes of the command (LOCAL INFILE contents and auth data
    /// included).
    pub request_bytes: u64,
    /// Server bytes of the response.
    pub response_bytes: u64,
    /// Packet headers of the response fell in uncaptured or lost bytes, so
    /// the parser could not follow it to its end: counts it could not
    /// establish (`rows`, `warnings`, ...) are `None` or lower bounds,
    /// its end is where the client spoke again.
    pub approximate: bool,
    pub error: Option<MysqlError>,
}

impl MysqlExchange {
    /// First byte of the command to first byte of the response.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response_ts_ns.map(|r| r.saturating_sub(self.request_ts_ns))
    }

    /// First byte of the command to last byte of the response.
    pub fn duration_ns(&self) -> Option<u64> {
        self.response_end_ts_ns.map(|r| r.saturating_sub(self.request_ts_ns))
    }

    /// Command name (`COM_*`, `COM_0xNN`), `None` for the TLS record.
    pub fn command_name(&self) -> Option<&'static str> {
        self.command.map(Command::name)
    }

    /// Statement as text (invalid UTF-8 replaced).
    pub fn statement_lossy(&self) -> Option<Cow<'_, str>> {
        self.statement.as_deref().map(String::from_utf8_lossy)
    }

    /// SQLSTATE as text.
    pub fn sql_state_str(&self) -> Option<Cow<'_, str>> {
        self.sql_state.as_ref().map(|s| String::from_utf8_lossy(s))
    }
}
