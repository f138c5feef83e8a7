//! Which protocol a connection speaks, decided on its first payload, and
//! which lost syscalls start a message: the rules of `masdeepflow_proto`
//! (`http1::looks_like_*`, `mysql::detect`) cut down to a syscall's first
//! eight bytes. Pure functions over those bytes, so that `payload.rs` only
//! calls them.
use masdeepflow_common::payload::{
    PROTO_HTTP, PROTO_MYSQL, PROTO_MYSQL_COMMAND_HEAD, PROTO_MYSQL_HEAD, PROTO_MYSQL_MIDSTREAM, PROTO_OTHER, PROTO_UNKNOWN, mysql_head,
};

/// The first bytes of a syscall's buffer: `n` (0 to 8) of them were read.
pub struct First {
    pub bytes: [u8; 8],
    pub n: usize,
}

/// How HTTP/1.x messages start: request methods, or a status line.
const HTTP_STARTS: [[u8; 4]; 10] = [*b"GET ", *b"POST", *b"PUT ", *b"HEAD", *b"DELE", *b"OPTI", *b"PATC", *b"CONN", *b"TRAC", *b"HTTP"];

/// Whether the first `min(n, 4)` bytes start an HTTP/1.x message. A first
/// write shorter than four bytes counts when it is the start of one (a
/// request line split across writes).
#[inline(always)]
pub fn is_http_start(first: &First) -> bool {
    if first.n == 0 {
        return false;
    }
    for start in HTTP_STARTS {
        let mut same = true;
        // Indexed, with the bound checked first: what the verifier follows.
        #[allow(clippy::needless_range_loop)]
        for i in 0..4 {
            if i < first.n && first.bytes[i] != start[i] {
                same = false;
            }
        }
        if same {
            return true;
        }
    }
    false
}

/// Payload length of the MySQL packet header at the start of `first`.
#[inline(always)]
pub fn packet_len(first: &First) -> u32 {
    u32::from_le_bytes([first.bytes[0], first.bytes[1], first.bytes[2], 0])
}

/// Smallest and largest payload of a server greeting taken for one.
const GREETING_MIN: u32 = 32;
const GREETING_MAX: u32 = 1024;

/// The body of a server greeting: protocol version 10, then a version
/// string starting with a digit (`5.5.5-10.11.6-MariaDB`, `8.0.36`).
#[inline(always)]
fn is_greeting_body(b0: u8, b1: u8, b2: u8) -> bool {
    b0 == 10 && b1.is_ascii_digit() && (b2.is_ascii_digit() || b2 == b'.')
}

/// A whole server greeting packet (header with sequence id 0, then its
/// body): the first payload of a MySQL connection, sent by the server and
/// received by the client.
#[inline(always)]
pub fn is_mysql_greeting(first: &First) -> bool {
    let len = packet_len(first);
    first.n >= 7
        && first.bytes[3] == 0
        && (GREETING_MIN..=GREETING_MAX).contains(&len)
        && is_greeting_body(first.bytes[4], first.bytes[5], first.bytes[6])
}

/// A syscall that moved exactly a 4-byte MySQL packet header with sequence
/// id 0 and a payload length a greeting can have: what a client that reads
/// headers and bodies apart receives first (mysql-connector-python).
#[inline(always)]
fn is_mysql_greeting_head(first: &First, len: u64) -> bool {
    len == 4 && first.n == 4 && first.bytes[3] == 0 && (GREETING_MIN..=GREETING_MAX).contains(&packet_len(first))
}

/// A command byte clients send (`COM_QUIT` to `COM_RESET_CONNECTION`,
/// MariaDB's `COM_STMT_BULK_EXECUTE`).
#[inline(always)]
fn is_command_byte(b: u8) -> bool {
    (0x01..=0x1f).contains(&b) || b == 0xfa
}

/// A syscall of `len` bytes that starts with a whole MySQL command packet
/// (sequence id 0, a command byte, a length the syscall holds, or the
/// first 16 KiB of a long one): what adopts a connection opened before the
/// agent started (`adopt.rs`), as `mysql::detect::looks_like_command` does.
#[inline(always)]
pub fn is_mysql_command_start(first: &First, len: u64) -> bool {
    let plen = packet_len(first) as u64;
    first.n >= 5 && first.bytes[3] == 0 && plen != 0 && is_command_byte(first.bytes[4]) && (plen + 4 <= len || len >= 16 * 1024)
}

/// The protocols the agent parses (the others' families are off).
#[derive(Clone, Copy)]
pub struct Wanted {
    pub http: bool,
    pub mysql: bool,
}

/// The protocol of a connection whose protocol is `current`
/// (`PROTO_UNKNOWN`, or a `PROTO_MYSQL_HEAD` waiting for its body), from
/// the first bytes of its next payload, `len` bytes in all.
#[inline(always)]
pub fn decide(current: u32, first: &First, len: u64, wanted: Wanted) -> u32 {
    if current & 0xff == PROTO_MYSQL_COMMAND_HEAD {
        // The body of an adopted connection's command header: a command.
        let expected = (current >> 8) as u64;
        let body = first.n >= 1 && len <= expected && is_command_byte(first.bytes[0]);
        return if body { PROTO_MYSQL_MIDSTREAM } else { PROTO_OTHER };
    }
    if current & 0xff == PROTO_MYSQL_HEAD {
        // The body of the header seen before: a greeting's.
        let expected = (current >> 8) as u64;
        let body = first.n >= 3 && len <= expected && is_greeting_body(first.bytes[0], first.bytes[1], first.bytes[2]);
        return if body { PROTO_MYSQL } else { PROTO_OTHER };
    }
    if current != PROTO_UNKNOWN {
        return current;
    }
    if wanted.http && is_http_start(first) {
        PROTO_HTTP
    } else if wanted.mysql && is_mysql_greeting(first) {
        PROTO_MYSQL
    } else if wanted.mysql && is_mysql_greeting_head(first, len) {
        mysql_head(packet_len(first))
    } else {
        PROTO_OTHER
    }
}

/// Whether a connection in this state has its payloads captured.
#[inline(always)]
pub fn is_captured(protocol: u32) -> bool {
    let kind = protocol & 0xff;
    kind == PROTO_HTTP
        || kind == PROTO_MYSQL
        || kind == PROTO_MYSQL_HEAD
        || kind == PROTO_MYSQL_MIDSTREAM
        || kind == PROTO_MYSQL_COMMAND_HEAD
}

/// The protocol written in a connection's payload records: a lone header
/// waiting for its body is MySQL's (from the middle on an adopted
/// connection).
#[inline(always)]
pub fn reported(protocol: u32) -> u32 {
    match protocol & 0xff {
        PROTO_HTTP => PROTO_HTTP,
        PROTO_MYSQL_MIDSTREAM | PROTO_MYSQL_COMMAND_HEAD => PROTO_MYSQL_MIDSTREAM,
        _ => PROTO_MYSQL,
    }
}

/// The loss rule: whether a syscall of `len` bytes that the ring buffer
/// could not take started a message. HTTP: a method or a status line.
/// MySQL: a packet header with sequence id 0 from the client (a command;
/// on a compressed connection a frame), with sequence id 1 from the server
/// (a response), that fits the syscall: the header alone (mysqld reads it
/// apart), or the whole packet, or a long command's first write of 16 KiB
/// or more; see `masdeepflow_proto::mysql::detect::{starts_command,
/// starts_response}`, which this mirrors. `request` says the bytes went
/// from client to server.
#[inline(always)]
pub fn starts_message(protocol: u32, first: &First, len: u64, request: bool) -> bool {
    if protocol == PROTO_HTTP {
        return is_http_start(first);
    }
    let seq = if request { 0 } else { 1 };
    let plen = packet_len(first) as u64;
    first.n >= 4 && first.bytes[3] == seq && plen != 0 && (len == 4 || plen + 4 <= len || (request && len >= 16 * 1024))
}
