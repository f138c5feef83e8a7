//! Bounded, panic-free HTTP/1.x and MySQL protocol parsing over captured
//! socket payloads.
//!
//! This crate is the protocol layer of the masdeepflow eBPF agent. The agent
//! captures, for every `read`/`write`-family syscall on a TCP connection, the
//! first *N* bytes of the payload plus the syscall's real length. This crate
//! turns that per-connection, per-direction stream into HTTP exchanges
//! ([`Http1Connection`]) or MySQL commands with their responses
//! ([`mysql::MysqlConnection`], see the [`mysql`] module), both driven the
//! same way ([`ConnectionParser`]) and sharing the per-connection stream
//! mechanics (captured prefixes, the pending-request queue with its counted
//! runs of lost requests, the bounded output). It does no I/O, no async,
//! keeps no global state, never panics on any input and never grows memory
//! without bound.
//!
//! # Layers
//!
//! * [`http1`]: stateless detection ([`http1::looks_like_request`],
//!   [`http1::looks_like_response`]) and head parsing
//!   ([`http1::parse_request_head`], [`http1::parse_response_head`]).
//! * [`Http1Connection`]: the streaming state machine, fed with
//!   [`Http1Connection::on_data`] / [`Http1Connection::on_close`], emitting
//!   [`Exchange`]s through [`Http1Connection::drain`].
//! * [`chunked`]: a counting `Transfer-Encoding: chunked` decoder.
//!
//! # Measured quantities
//!
//! Each [`Exchange`] pairs a request with its response (responses are
//! matched to requests in FIFO order, as HTTP/1.1 requires):
//!
//! * **latency** ([`Exchange::latency_ns`]) = timestamp of the syscall
//!   carrying the *first byte of the request* to that of the *first byte of
//!   the final response head* (`1xx` interim responses such as
//!   `100 Continue` are counted in `interim_responses` and
//!   `response_bytes` but do not end the latency);
//! * `response_end_ts_ns` = timestamp of the syscall carrying the last
//!   response byte seen;
//! * `request_bytes` / `response_bytes` = bytes on the wire, head plus body
//!   as framed (`Content-Length`, or chunk-size lines + data + trailer),
//!   including bytes past the capture limit (syscall total length minus
//!   captured length), so sizes are right even for bodies never captured;
//! * method, target (≤ [`limits::MAX_TARGET_LEN`] bytes, flagged when cut),
//!   `Host` (≤ [`limits::MAX_HOST_LEN`]), request version, final status.
//!
//! Timestamps are whatever the caller passes as `ts_ns` (one per syscall);
//! they are only compared, never read from a clock.
//!
//! # Framing rules
//!
//! Request bodies: `Transfer-Encoding: chunked`, else `Content-Length`, else
//! none. Response bodies: none for `HEAD` requests, `1xx`, `204` and `304`;
//! else chunked, else `Content-Length`, else until the connection closes.
//! `101 Switching Protocols` and a `2xx` answer to `CONNECT` end HTTP
//! parsing on the connection ([`ConnectionState::Tunnel`]).
//!
//! # Capture limits and resynchronisation
//!
//! Bytes past the capture are counted through the current framing. When
//! that is impossible (a head longer than the capture, chunk framing inside
//! uncaptured bytes, uncaptured bytes past the end of a message), the
//! direction falls back to *resync*: whole syscalls are counted into the
//! open message until a syscall **starts** with a parseable head, which ends
//! it. A chunked body in resync also ends at a fully captured syscall ending
//! in `0\r\n\r\n`. Such exchanges have `approximate = true`. A head cut
//! by the capture still yields method, target (flagged truncated) and the
//! headers of its complete lines.
//!
//! [`Http1Connection::mid_stream`] starts in that mode, for connections
//! that were already open when observation began; otherwise the first bytes
//! of each direction must be HTTP or the connection is given up.
//!
//! # Lost syscalls
//!
//! When the capture pipeline drops syscalls it can still say how many
//! started a message and how many bytes they held:
//! [`Http1Connection::on_lost`]. A lost request start queues a lost request
//! that consumes one response; a lost response start consumes the request
//! it answered; lost bytes inside a body are counted through its framing.
//! Every exchange is then either emitted, paired with its own response, or
//! counted in [`ConnectionStats::lost_exchanges`], once
//! ([`Http1Connection::abandon`] counts what waits on a connection whose end
//! was lost). A response answering a lost request ends at the next head,
//! since it may have answered a `HEAD`.
//!
//! # Bounds
//!
//! See [`limits`]: heads ≤ 16 KiB and ≤ 64 header lines (else the connection
//! is given up), ≤ 32 pending (pipelined) requests stored and ≤ 66 entries
//! in their queue with runs of unseen or lost ones (else given up), ≤ 64
//! undrained exchanges, ≤ 4 responses waiting for a late request. One connection holds
//! at most two partial head buffers plus those queues of bounded records
//! (a few hundred KiB in the very worst case, a few hundred bytes typically).
//! Non-HTTP bytes at a message boundary, or a malformed head, make the
//! connection [`ConnectionState::GaveUp`]: nothing is emitted for those
//! bytes; requests already parsed and still waiting are reported once with
//! [`ExchangeError::ParserGaveUp`], and the connection's buffers are freed.
//!
//! # Example
//!
//! ```
//! use masdeepflow_proto::{Direction, Http1Connection};
//! let mut c = Http1Connection::new();
//! let req = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
//! let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nhello";
//! c.on_data(Direction::ClientToServer, req, req.len() as u64, 1_000);
//! // the write carried the head and 5000 body bytes; only 5 were captured
//! let total = (resp.len() - 5 + 5000) as u64;
//! c.on_data(Direction::ServerToClient, resp, total, 3_500);
//! let ex: Vec<_> = c.drain().collect();
//! assert_eq!(ex[0].status, Some(200));
//! assert_eq!(ex[0].latency_ns(), Some(2_500));
//! assert_eq!(ex[0].response_bytes, total);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod chunked;
mod connection;
mod exchange;
pub mod http1;
pub mod limits;
pub mod mysql;
mod stream;

pub use connection::{Config, ConnectionState, ConnectionStats, GiveUpReason, Http1Connection};
pub use exchange::{Direction, Exchange, ExchangeError};

/// What the agent drives per connection, whatever the protocol: one
/// call per captured syscall, per run of lost syscalls, at the end, and a
/// drain of finished exchanges after each. [`Http1Connection`] and
/// [`mysql::MysqlConnection`] implement it the same way (see their
/// methods of the same names).
pub trait ConnectionParser {
    /// The unit of output.
    type Exchange;
    /// One syscall: the captured prefix of its bytes and its real length.
    fn on_data(&mut self, dir: Direction, captured: &[u8], total_len: u64, ts_ns: u64);
    /// Syscalls the capture pipeline lost before the next `on_data`:
    /// `starts` of them began a message, `bytes` their total length.
    fn on_lost(&mut self, dir: Direction, starts: u64, bytes: u64, ts_ns: u64);
    /// The connection closed.
    fn on_close(&mut self, ts_ns: u64);
    /// The connection's end was lost: what waits is counted lost.
    fn abandon(&mut self);
    /// Finished exchanges, oldest first.
    fn drain(&mut self) -> impl Iterator<Item = Self::Exchange> + '_;
    /// Exchanges counted lost so far.
    fn lost_exchanges(&self) -> u64;
    /// Nothing more will come out but what is still to be drained.
    fn is_finished(&self) -> bool;
}

impl ConnectionParser for Http1Connection {
    type Exchange = Exchange;
    fn on_data(&mut self, dir: Direction, captured: &[u8], total_len: u64, ts_ns: u64) {
        Http1Connection::on_data(self, dir, captured, total_len, ts_ns)
    }
    fn on_lost(&mut self, dir: Direction, starts: u64, bytes: u64, ts_ns: u64) {
        Http1Connection::on_lost(self, dir, starts, bytes, ts_ns)
    }
    fn on_close(&mut self, ts_ns: u64) {
        Http1Connection::on_close(self, ts_ns)
    }
    fn abandon(&mut self) {
        Http1Connection::abandon(self)
    }
    fn drain(&mut self) -> impl Iterator<Item = Exchange> + '_ {
        Http1Connection::drain(self)
    }
    fn lost_exchanges(&self) -> u64 {
        self.stats().lost_exchanges
    }
    fn is_finished(&self) -> bool {
        Http1Connection::is_finished(self)
    }
}

impl ConnectionParser for mysql::MysqlConnection {
    type Exchange = mysql::MysqlExchange;
    fn on_data(&mut self, dir: Direction, captured: &[u8], total_len: u64, ts_ns: u64) {
        mysql::MysqlConnection::on_data(self, dir, captured, total_len, ts_ns)
    }
    fn on_lost(&mut self, dir: Direction, starts: u64, bytes: u64, ts_ns: u64) {
        mysql::MysqlConnection::on_lost(self, dir, starts, bytes, ts_ns)
    }
    fn on_close(&mut self, ts_ns: u64) {
        mysql::MysqlConnection::on_close(self, ts_ns)
    }
    fn abandon(&mut self) {
        mysql::MysqlConnection::abandon(self)
    }
    fn drain(&mut self) -> impl Iterator<Item = mysql::MysqlExchange> + '_ {
        mysql::MysqlConnection::drain(self)
    }
    /// Lost exchanges, and commands that could not be read (never
    /// reported: a lost syscall held the body of a command whose header was
    /// read apart, as mysqld reads): each command is reported or counted.
    fn lost_exchanges(&self) -> u64 {
        let s = self.stats();
        s.lost_exchanges.saturating_add(s.unreadable_commands)
    }
    fn is_finished(&self) -> bool {
        mysql::MysqlConnection::is_finished(self)
    }
}
