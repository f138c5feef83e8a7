//! Protocol detection and the loss rule, on a syscall's first bytes: what
//! the agent (or the kernel program, which can mirror these few checks)
//! needs before a connection has a parser.

use super::command::Command;
use super::connection::plausible_command_start;

/// The first server syscall of a MySQL connection: a greeting (sequence
/// id 0, protocol version 10, a version string starting with a digit).
/// Needs about 40 bytes (a greeting is at least 49).
pub fn looks_like_greeting(first: &[u8]) -> bool {
    if first.len() < 6 || first[3] != 0 || first[4] != 10 {
        return false;
    }
    let rest = &first[5..];
    let version = &rest[..memchr::memchr(0, rest).unwrap_or(rest.len())];
    version.len() <= 64 && version.first().is_some_and(u8::is_ascii_digit) && version.iter().all(|b| b.is_ascii_graphic())
}

/// A client syscall that starts with a command: a packet header with
/// sequence id 0 and a known command of a plausible length (for a
/// connection already open when observation began; see
/// [`super::MysqlConnection::mid_stream`]).
pub fn looks_like_command(first: &[u8], total_len: u64) -> bool {
    plausible_command_start(first, total_len)
}

/// Whether the first bytes of a syscall of `total_len` bytes are a packet
/// header with sequence id `seq` that fits the syscall: the syscall is the
/// header alone (what mysqld reads first), or holds the whole packet, or
/// (commands only) is a long packet's first write of at least 16 KiB. The
/// fit keeps out a packet body read apart from its header (mysqld's second
/// read), whose first bytes can look like a header: COM_STMT_EXECUTE's
/// statement id, a handshake response's capability flags.
fn fits_header(first: &[u8], total_len: u64, seq: u8, long_writes: bool) -> bool {
    if first.len() < 4 || first[3] != seq || first[..3] == [0, 0, 0] {
        return false;
    }
    let len = u64::from(u32::from_le_bytes([first[0], first[1], first[2], 0]));
    total_len == 4 || len + 4 <= total_len || (long_writes && total_len >= 16 * 1024)
}

/// The `starts` rule of [`super::MysqlConnection::on_lost`] for a lost
/// client syscall of `total_len` bytes: its first bytes begin a command,
/// i.e. a packet (or, on a compressed connection, a frame) with sequence
/// id 0 that fits the syscall (see the private `fits_header`: a header
/// alone, or the whole packet, or a long command's first write). A body
/// of 16 KiB or more read apart whose 4th byte is 0 (COM_STMT_SEND_LONG_DATA)
/// is taken for a start: its command is then counted lost twice.
pub fn starts_command(first: &[u8], total_len: u64) -> bool {
    fits_header(first, total_len, 0, true)
}

/// The same for a lost server syscall: its first bytes begin a response,
/// i.e. a packet with sequence id 1 that fits (on a compressed connection
/// the frame's sequence id goes on from the command's, so this is an
/// approximation there; a syscall whose first byte is only inside a
/// response, counted by mistake, makes the parser count the response's
/// command lost).
pub fn starts_response(first: &[u8], total_len: u64) -> bool {
    fits_header(first, total_len, 1, false)
}

/// Name of a command byte (`COM_*`, `COM_0xNN`).
pub fn command_name(byte: u8) -> &'static str {
    Command(byte).name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_and_commands() {
        let mut g = vec![0x40, 0, 0, 0, 10];
        g.extend_from_slice(b"8.0.36\0");
        assert!(looks_like_greeting(&g));
        assert!(!looks_like_greeting(b"HTTP/1.1 200 OK\r\n"));
        assert!(!looks_like_greeting(&[0x10, 0, 0, 0, 10, b'D', b'A', 0]));
        assert!(looks_like_command(b"\x09\0\0\0\x03SELECT 1", 13));
        assert!(!looks_like_command(b"\x09\0\0\x01\x03SELECT 1", 13));
        assert!(!looks_like_command(b"GET / HTTP/1.1\r\n", 16));
        assert!(starts_command(b"\x05\0\0\0\x19", 9));
        assert!(starts_command(b"\x05\0\0\0", 4), "a header read alone");
        // COM_STMT_EXECUTE's body read apart: not a start
        assert!(!starts_command(b"\x17\x05\0\0\0\0\x01\0\0\0", 20));
        assert!(starts_command(b"\xa1\x86\x01\0\x03SELECT", 16 * 1024), "a long statement's first write");
        assert!(starts_response(b"\x07\0\0\x01\0", 11));
        assert!(!starts_response(b"\x07\0\0\x01\0", 9));
        assert_eq!(command_name(0x16), "COM_STMT_PREPARE");
    }
}
