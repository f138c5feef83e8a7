//! The unit of output: one request paired with its response.

use crate::http1::Method;
use std::borrow::Cow;

/// Which way bytes travel on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes written by the client (requests).
    ClientToServer,
    /// Bytes written by the server (responses).
    ServerToClient,
}

/// Why an exchange is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The connection closed before any response to this request began.
    NoResponse,
    /// The connection closed in the middle of the response (before its
    /// Content-Length or last chunk, or inside its head, or after only 1xx
    /// interim responses).
    ResponseIncomplete,
    /// The response started in bytes the capture did not see, so its status
    /// is unknown (byte counts are approximate).
    ResponseHeadNotCaptured,
    /// The parser gave up on the connection (non-HTTP or malformed bytes)
    /// while this request was waiting for its response.
    ParserGaveUp,
}

/// One HTTP/1.x request/response exchange.
///
/// Timestamps are the caller's `ts_ns` of the syscall that carried the byte
/// in question. Byte counts are bytes on the wire (head + body as framed,
/// including chunk-size lines), counting uncaptured bytes from the
/// syscall's total length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub method: Method,
    /// Request target as sent, at most [`crate::limits::MAX_TARGET_LEN`] bytes.
    pub target: Vec<u8>,
    /// The target was longer than the limit or cut by the capture.
    pub target_truncated: bool,
    /// `Host` header, at most [`crate::limits::MAX_HOST_LEN`] bytes.
    pub host: Option<Vec<u8>>,
    /// Request minor version (0 = HTTP/1.0, 1 = HTTP/1.1).
    pub version: u8,
    /// Final (non-1xx) status; `None` when no final response head was seen.
    pub status: Option<u16>,
    /// Syscall timestamp of the request's first byte.
    pub request_ts_ns: u64,
    /// Syscall timestamp of the first byte of the final response head.
    pub response_ts_ns: Option<u64>,
    /// Syscall timestamp of the last response byte seen (end of body).
    pub response_end_ts_ns: Option<u64>,
    /// Request bytes (head + body).
    pub request_bytes: u64,
    /// Response bytes (all interim heads + final head + body).
    pub response_bytes: u64,
    /// Number of 1xx interim responses (e.g. `100 Continue`) before the final one.
    pub interim_responses: u8,
    /// Framing was partly inferred (head or chunked framing cut by the
    /// capture, resynchronised on the next head): byte counts and
    /// `response_end_ts_ns` are best effort.
    pub approximate: bool,
    pub error: Option<ExchangeError>,
}

impl Exchange {
    /// First byte of request to first byte of (final) response.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response_ts_ns.map(|r| r.saturating_sub(self.request_ts_ns))
    }

    /// Target as text (invalid UTF-8 replaced).
    pub fn target_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.target)
    }

    /// Host as text (invalid UTF-8 replaced).
    pub fn host_lossy(&self) -> Option<Cow<'_, str>> {
        self.host.as_deref().map(String::from_utf8_lossy)
    }
}
