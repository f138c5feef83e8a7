//! Socket payload records: the first bytes of each send/receive on a
//! connection that speaks a protocol the agent parses (HTTP/1.x, MySQL).

use crate::{EventHeader, tcp::Endpoints};

/// Most payload bytes `--capture-bytes` may ask to copy per syscall of an
/// HTTP connection.
pub const CAPTURE_MAX: usize = 16 * 1024;

/// Payload bytes copied per syscall of a MySQL connection: MariaDB writes
/// result sets in syscalls of up to 16 KiB, and the parser counts rows
/// exactly only when it sees every packet header; a statement of 16 KiB
/// fits with its packet header, command byte and an empty MySQL 8
/// query-attribute block.
pub const MYSQL_CAPTURE_BYTES: usize = 16 * 1024 + 64;

/// Data this socket's owner sent.
pub const DIR_SENT: u32 = 0;
/// Data this socket's owner received.
pub const DIR_RECEIVED: u32 = 1;

/// `SockState::protocol`: not decided yet (no payload seen).
pub const PROTO_UNKNOWN: u32 = 0;
/// The first payload looked like HTTP/1.x: every later syscall is captured.
pub const PROTO_HTTP: u32 = 1;
/// Something else: nothing is captured.
pub const PROTO_OTHER: u32 = 2;
/// The first payload was a MySQL server greeting (seen from either side):
/// every later syscall is captured.
pub const PROTO_MYSQL: u32 = 3;
/// Not decided yet: the first payload was a lone 4-byte MySQL packet header
/// (sequence id 0) received, as clients that read a packet's header and
/// body apart do with the greeting; the next payload decides between
/// [`PROTO_MYSQL`] and [`PROTO_OTHER`]. Its payload length is kept in the
/// upper 24 bits of `SockState::protocol` (see [`mysql_head`]).
pub const PROTO_MYSQL_HEAD: u32 = 4;

/// `SockState::protocol` for a connection whose first payload was a lone
/// MySQL packet header announcing `payload_len` bytes.
pub const fn mysql_head(payload_len: u32) -> u32 {
    PROTO_MYSQL_HEAD | (payload_len << 8)
}

/// A MySQL connection opened before the agent started, adopted when one
/// of its syscalls started with a command (see `SockState::adopted`):
/// captured, and parsed from the middle.
pub const PROTO_MYSQL_MIDSTREAM: u32 = 5;
/// Adopted on a lone 4-byte packet header with sequence id 0 received (what
/// mysqld reads first): the next payload decides between
/// [`PROTO_MYSQL_MIDSTREAM`] (it starts with a known command byte) and
/// [`PROTO_OTHER`]. The payload length is kept in the upper 24 bits.
pub const PROTO_MYSQL_COMMAND_HEAD: u32 = 6;

/// `SockState::protocol` for an adopted connection whose first payload was
/// a lone command header announcing `payload_len` bytes.
pub const fn mysql_command_head(payload_len: u32) -> u32 {
    PROTO_MYSQL_COMMAND_HEAD | (payload_len << 8)
}

/// Payload records of one connection that the ring buffer could not take,
/// not yet reported: the kernel keeps them in the socket's `SockState` and
/// hands them over (then zeroes them) with the connection's next payload
/// record, or with its `tcp_close`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadLoss {
    /// Lost records, sent by the socket's owner, that start a message: on
    /// HTTP connections a method or `HTTP`, on MySQL connections a packet
    /// with sequence id 0 (client to server) or 1 (server to client), see
    /// `masdeepflow_proto::mysql::detect`.
    pub sent_starts: u64,
    pub received_starts: u64,
    /// Bytes of all lost records, per direction.
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

impl PayloadLoss {
    /// Nothing lost (a `const`, for kernel code that cannot call `default()`
    /// in a constant).
    pub const NONE: PayloadLoss = PayloadLoss { sent_starts: 0, received_starts: 0, sent_bytes: 0, received_bytes: 0 };

    pub fn is_empty(&self) -> bool {
        self.sent_starts == 0 && self.received_starts == 0 && self.sent_bytes == 0 && self.received_bytes == 0
    }
}

/// Fixed part of a payload record; `captured_len` bytes of data follow it.
/// `header.process` is whole (`has_process` 1) only on records of request
/// bytes (sent by a client, received by a server), which is where an
/// exchange takes its process from, or when a `--comm` filter needs it;
/// other records carry the pid and tid only (`has_process` 0), which saves
/// the kernel reading the task on every response.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PayloadHeader {
    pub header: EventHeader,
    pub endpoints: Endpoints,
    /// `SockState::id` of the connection.
    pub conn_id: u64,
    /// Bytes the syscall moved (may exceed what was captured).
    pub total_len: u64,
    pub captured_len: u32,
    pub direction: u32,
    pub role: u32,
    /// `PROTO_HTTP`, `PROTO_MYSQL` or `PROTO_MYSQL_MIDSTREAM`: the parser
    /// the agent runs, and how it starts.
    pub protocol: u32,
    /// Records of this connection lost since the previous one delivered.
    pub loss: PayloadLoss,
    /// `TLS_*`: 0 for bytes a socket syscall moved, else the TLS library
    /// whose call returned these plaintext bytes (`total_len` is the
    /// call's count).
    pub tls: u32,
    pub _pad: u32,
}

/// [`PayloadHeader::tls`]: bytes of a socket syscall (not TLS plaintext).
pub const TLS_NONE: u32 = 0;
/// Plaintext returned by OpenSSL's `SSL_read`/`SSL_write` (and `_ex`).
pub const TLS_OPENSSL: u32 = 1;

/// Ring buffer record as the kernel reserves it: the header and room for
/// `N` bytes, of which `captured_len` are written. The kernel picks the
/// smallest of [`CAPTURE_CLASSES`] that holds what it copies, so that the
/// bytes go from the traced program straight into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PayloadRecord<const N: usize> {
    pub header: PayloadHeader,
    pub data: [u8; N],
}

/// Sizes of the data room of payload records.
pub const CAPTURE_CLASSES: [usize; 4] = [256, 1024, 4096, MYSQL_CAPTURE_BYTES];

const _: () = assert!(core::mem::size_of::<PayloadLoss>() == 32);
const _: () = assert!(core::mem::size_of::<PayloadHeader>() == 56 + 40 + 32 + 32 + 8);
