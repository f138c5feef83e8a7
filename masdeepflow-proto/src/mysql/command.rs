//! Commands (the client's packets with sequence id 0 in the command
//! phase): names, which ones get no response, and the fields the
//! exchange reports (statement text, statement id, schema name), with
//! MySQL 8 query attributes skipped.

use std::fmt;

use super::handshake::caps;
use super::wire::Reader;

/// A command byte, named as the MySQL and MariaDB sources name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Command(pub u8);

impl Command {
    pub const SLEEP: Command = Command(0x00);
    pub const QUIT: Command = Command(0x01);
    pub const INIT_DB: Command = Command(0x02);
    pub const QUERY: Command = Command(0x03);
    pub const FIELD_LIST: Command = Command(0x04);
    pub const STATISTICS: Command = Command(0x09);
    pub const PROCESS_INFO: Command = Command(0x0a);
    pub const PING: Command = Command(0x0e);
    pub const CHANGE_USER: Command = Command(0x11);
    pub const BINLOG_DUMP: Command = Command(0x12);
    pub const STMT_PREPARE: Command = Command(0x16);
    pub const STMT_EXECUTE: Command = Command(0x17);
    pub const STMT_SEND_LONG_DATA: Command = Command(0x18);
    pub const STMT_CLOSE: Command = Command(0x19);
    pub const STMT_RESET: Command = Command(0x1a);
    pub const SET_OPTION: Command = Command(0x1b);
    pub const STMT_FETCH: Command = Command(0x1c);
    pub const BINLOG_DUMP_GTID: Command = Command(0x1e);
    pub const RESET_CONNECTION: Command = Command(0x1f);
    /// MariaDB: array binding.
    pub const STMT_BULK_EXECUTE: Command = Command(0xfa);

    /// `COM_*` name; an unknown byte as `COM_0xNN`.
    pub fn name(self) -> &'static str {
        NAMES.get(usize::from(self.0)).copied().flatten().unwrap_or_else(|| UNKNOWN[usize::from(self.0)])
    }

    /// The server sends nothing back.
    pub fn has_no_response(self) -> bool {
        matches!(self, Command::QUIT | Command::STMT_SEND_LONG_DATA | Command::STMT_CLOSE)
    }

    /// A known command byte.
    pub fn is_known(self) -> bool {
        NAMES.get(usize::from(self.0)).copied().flatten().is_some()
    }

    /// Commands naming a prepared statement by id (its first 4 bytes).
    pub(crate) fn has_statement_id(self) -> bool {
        matches!(
            self,
            Command::STMT_EXECUTE
                | Command::STMT_SEND_LONG_DATA
                | Command::STMT_CLOSE
                | Command::STMT_RESET
                | Command::STMT_FETCH
                | Command::STMT_BULK_EXECUTE
        )
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const NAMES: [Option<&str>; 256] = {
    let mut t: [Option<&str>; 256] = [None; 256];
    let named: [(usize, &str); 35] = [
        (0x00, "COM_SLEEP"),
        (0x01, "COM_QUIT"),
        (0x02, "COM_INIT_DB"),
        (0x03, "COM_QUERY"),
        (0x04, "COM_FIELD_LIST"),
        (0x05, "COM_CREATE_DB"),
        (0x06, "COM_DROP_DB"),
        (0x07, "COM_REFRESH"),
        (0x08, "COM_SHUTDOWN"),
        (0x09, "COM_STATISTICS"),
        (0x0a, "COM_PROCESS_INFO"),
        (0x0b, "COM_CONNECT"),
        (0x0c, "COM_PROCESS_KILL"),
        (0x0d, "COM_DEBUG"),
        (0x0e, "COM_PING"),
        (0x0f, "COM_TIME"),
        (0x10, "COM_DELAYED_INSERT"),
        (0x11, "COM_CHANGE_USER"),
        (0x12, "COM_BINLOG_DUMP"),
        (0x13, "COM_TABLE_DUMP"),
        (0x14, "COM_CONNECT_OUT"),
        (0x15, "COM_REGISTER_SLAVE"),
        (0x16, "COM_STMT_PREPARE"),
        (0x17, "COM_STMT_EXECUTE"),
        (0x18, "COM_STMT_SEND_LONG_DATA"),
        (0x19, "COM_STMT_CLOSE"),
        (0x1a, "COM_STMT_RESET"),
        (0x1b, "COM_SET_OPTION"),
        (0x1c, "COM_STMT_FETCH"),
        (0x1d, "COM_DAEMON"),
        (0x1e, "COM_BINLOG_DUMP_GTID"),
        (0x1f, "COM_RESET_CONNECTION"),
        (0x20, "COM_CLONE"),
        (0x21, "COM_SUBSCRIBE_GROUP_REPLICATION_STREAM"),
        (0xfa, "COM_STMT_BULK_EXECUTE"),
    ];
    let mut i = 0;
    while i < named.len() {
        t[named[i].0] = Some(named[i].1);
        i += 1;
    }
    t
};

const UNKNOWN: [&str; 256] = {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // "COM_0xNN" for every byte, built at compile time.
    const fn build() -> [[u8; 8]; 256] {
        let mut t = [[0u8; 8]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [b'C', b'O', b'M', b'_', b'0', b'x', HEX[i >> 4], HEX[i & 15]];
            i += 1;
        }
        t
    }
    const BYTES: [[u8; 8]; 256] = build();
    let mut t = [""; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match std::str::from_utf8(&BYTES[i]) {
            Ok(s) => s,
            Err(_) => "COM_0x??",
        };
        i += 1;
    }
    t
};

/// Where a command's text (statement or schema name) starts in its
/// payload, and its statement id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommandFields {
    /// Offset of the SQL text (COM_QUERY, COM_STMT_PREPARE) or schema name
    /// (COM_INIT_DB) in the payload; `None` when there is none or when it
    /// could not be located in the captured prefix.
    pub text_at: Option<usize>,
    pub statement_id: Option<u32>,
    /// COM_STMT_EXECUTE asked for a read-only cursor (no rows in its answer).
    pub cursor: bool,
}

/// COM_STMT_EXECUTE flag: open a read-only cursor.
const CURSOR_TYPE_READ_ONLY: u8 = 0x01;

/// Reads what the exchange reports from a command's captured payload
/// prefix. `len` is the whole payload's length.
pub(crate) fn parse_fields(cmd: Command, prefix: &[u8], len: u64, capabilities: Option<u64>) -> CommandFields {
    let mut f = CommandFields { text_at: None, statement_id: None, cursor: false };
    let mut r = Reader::new(prefix);
    if r.u8().is_none() {
        return f;
    }
    match cmd {
        Command::QUERY => {
            let attrs = match capabilities {
                Some(c) => c & caps::QUERY_ATTRIBUTES != 0,
                // Not seen: infer. SQL never starts with a control byte; the
                // attribute block starts with a length-encoded count.
                None => prefix.get(1).is_some_and(|&b| b < 0x20 && !b.is_ascii_whitespace()),
            };
            f.text_at = if attrs { skip_query_attributes(&mut r).map(|_| r.pos()) } else { Some(1) };
        }
        Command::STMT_PREPARE | Command::INIT_DB => f.text_at = Some(1),
        _ if cmd.has_statement_id() => {
            f.statement_id = r.u32();
            if cmd == Command::STMT_EXECUTE || cmd == Command::STMT_BULK_EXECUTE {
                f.cursor = cmd == Command::STMT_EXECUTE && r.u8().is_some_and(|flags| flags & CURSOR_TYPE_READ_ONLY != 0);
            }
        }
        _ => {}
    }
    if f.text_at.is_some_and(|at| at as u64 > len) {
        f.text_at = None;
    }
    f
}

/// Skips COM_QUERY's query attributes (CLIENT_QUERY_ATTRIBUTES):
/// parameter_count, parameter_set_count (always 1), then when there are
/// parameters a NULL bitmap, new_params_bind_flag, per parameter its type
/// (2 bytes) and name (length-encoded string), and the values in the binary
/// protocol's encoding. `None` if the block does not fit in the prefix.
fn skip_query_attributes(r: &mut Reader<'_>) -> Option<()> {
    let count = r.lenenc()?;
    let _sets = r.lenenc()?;
    if count == 0 {
        return Some(());
    }
    let count = usize::try_from(count).ok().filter(|&c| c <= 4096)?;
    let bitmap = r.bytes(count.div_ceil(8))?;
    if r.u8()? != 1 {
        // Without types the values cannot be skipped.
        return None;
    }
    let mut types = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let t = r.u16()?;
        r.lenenc_str()?;
        types.push(t);
    }
    for (i, t) in types.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            continue;
        }
        skip_binary_value(r, (*t & 0xff) as u8)?;
    }
    Some(())
}

/// Skips one value of the binary protocol, by its column type.
pub(crate) fn skip_binary_value(r: &mut Reader<'_>, ty: u8) -> Option<()> {
    match ty {
        0x06 => Some(()),                // NULL
        0x01 => r.skip(1),               // TINY
        0x02 | 0x0d => r.skip(2),        // SHORT, YEAR
        0x03 | 0x09 | 0x04 => r.skip(4), // LONG, INT24, FLOAT
        0x05 | 0x08 => r.skip(8),        // DOUBLE, LONGLONG
        0x07 | 0x0a | 0x0c | 0x0b | 0x11 | 0x12 | 0x13 => {
            // TIMESTAMP, DATE, DATETIME, TIME (and their *2 forms): length byte
            let n = r.u8()?;
            r.skip(usize::from(n))
        }
        _ => r.lenenc_str().map(|_| ()), // strings, decimals, blobs, JSON...
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Command::QUERY.name(), "COM_QUERY");
        assert_eq!(Command(0x60).name(), "COM_0x60");
        assert_eq!(Command(0xfa).name(), "COM_STMT_BULK_EXECUTE");
        assert_eq!(Command(0xff).name(), "COM_0xFF");
        assert!(Command::STMT_CLOSE.has_no_response());
        assert!(!Command::STMT_RESET.has_no_response());
    }

    #[test]
    fn query_attributes_are_skipped() {
        // 2 attributes: "a" (LONGLONG 7) and "bb" (VARCHAR "xyz"), then SQL.
        let mut p = vec![0x03, 0x02, 0x01, 0x00, 0x01];
        p.extend_from_slice(&[0x08, 0x00, 0x01, b'a', 0x0f, 0x00, 0x02, b'b', b'b']);
        p.extend_from_slice(&7u64.to_le_bytes());
        p.extend_from_slice(&[0x03, b'x', b'y', b'z']);
        let at = p.len();
        p.extend_from_slice(b"SELECT 1");
        let f = parse_fields(Command::QUERY, &p, p.len() as u64, Some(caps::QUERY_ATTRIBUTES));
        assert_eq!(f.text_at, Some(at));
        // inferred when the handshake was not seen
        assert_eq!(parse_fields(Command::QUERY, &p, p.len() as u64, None).text_at, Some(at));
        // no attributes: 0 count, 1 set
        let q = b"\x03\x00\x01SELECT 2";
        assert_eq!(parse_fields(Command::QUERY, q, 11, Some(caps::QUERY_ATTRIBUTES)).text_at, Some(3));
        assert_eq!(parse_fields(Command::QUERY, b"\x03SELECT 2", 9, None).text_at, Some(1));
        // cut before the SQL: unknown
        assert_eq!(parse_fields(Command::QUERY, &p[..12], 100, Some(caps::QUERY_ATTRIBUTES)).text_at, None);
    }

    #[test]
    fn statement_ids_and_cursor() {
        let e = [0x17, 5, 0, 0, 0, 1, 1, 0, 0, 0];
        assert_eq!(parse_fields(Command::STMT_EXECUTE, &e, 10, None), CommandFields { text_at: None, statement_id: Some(5), cursor: true });
        assert_eq!(parse_fields(Command::STMT_CLOSE, &[0x19, 9, 0], 5, None).statement_id, None);
    }
}
