//! Each command's response shape, driven packet by packet: OK, ERR (with
//! or without SQLSTATE, MariaDB progress reports skipped), EOF (present or
//! not, per CLIENT_DEPRECATE_EOF, recognised by shape), text and binary
//! result sets (rows counted, several result sets chained by
//! SERVER_MORE_RESULTS_EXISTS), COM_STMT_PREPARE's answer and its
//! definition packets, LOCAL INFILE, cursors, the auth exchange of
//! COM_CHANGE_USER, and single-packet answers.
//!
//! Row packets are never stored: only their first byte and length are
//! looked at.

use super::command::Command;
use super::exchange::ResponseKind;
use super::framing::{MAX_PHYSICAL, Packet};
use super::handshake::caps;
use super::wire::{Reader, lenenc_size};
use crate::limits::MYSQL_MAX_ERROR_MESSAGE;

/// Server status flags.
pub(crate) mod status {
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const SESSION_STATE_CHANGED: u16 = 0x4000;
}

/// Bytes of a server packet the response parser reads (the rest of a
/// packet is counted, not kept): enough for OK with session state, ERR
/// with its bounded message, and the prepare answer.
pub(crate) const SERVER_KEEP: usize = 64 + MYSQL_MAX_ERROR_MESSAGE + 2 * super::handshake::MAX_NAME_LEN;

/// What the command's answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// OK, ERR, LOCAL INFILE or text result sets, possibly several.
    Query,
    /// OK, ERR or binary result sets; with a cursor, metadata only.
    Execute {
        cursor: bool,
    },
    Prepare,
    /// Binary rows and a terminator, no metadata.
    Fetch,
    /// Column definitions and a terminator.
    FieldList,
    /// Authentication packets up to OK or ERR.
    Auth,
    /// Replication: event packets until EOF or ERR.
    Stream,
    /// One packet (OK, ERR, EOF or a string).
    Single,
}

pub(crate) fn shape_for(cmd: Command, cursor: bool) -> Shape {
    match cmd {
        Command::QUERY | Command::PROCESS_INFO => Shape::Query,
        Command::STMT_EXECUTE | Command::STMT_BULK_EXECUTE => Shape::Execute { cursor },
        Command::STMT_PREPARE => Shape::Prepare,
        Command::STMT_FETCH => Shape::Fetch,
        Command::FIELD_LIST => Shape::FieldList,
        Command::CHANGE_USER => Shape::Auth,
        Command::BINLOG_DUMP | Command::BINLOG_DUMP_GTID => Shape::Stream,
        _ => Shape::Single,
    }
}

/// What a packet did to the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More packets follow.
    More,
    /// The server waits for the client (LOCAL INFILE contents, auth data);
    /// its answer then continues this response.
    AwaitClient,
    /// The response is complete.
    Done,
    /// Complete unless the next packet continues it (an EOF whose presence
    /// depends on capabilities not seen): see [`ResponseParser::continues`].
    MaybeDone,
    /// The packet could not be read (its first bytes were not captured):
    /// the rest of the response cannot be followed.
    Unreadable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Columns {
        left: u64,
    },
    AfterColumns,
    Rows,
    PrepareDefs {
        params: u64,
        columns: u64,
    },
    /// After the prepare answer's parameter definitions, an EOF may follow.
    PrepareEof {
        columns: u64,
        last: bool,
    },
    Auth,
    Done,
}

/// What the response said, accumulated over its packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub kind: Option<ResponseKind>,
    pub rows: u64,
    pub result_sets: u32,
    pub affected_rows: Option<u64>,
    pub last_insert_id: Option<u64>,
    pub warnings: Option<u32>,
    pub error_code: Option<u16>,
    pub sql_state: Option<[u8; 5]>,
    pub error_message: Option<Vec<u8>>,
    pub statement_id: Option<u32>,
    pub params: Option<u16>,
    pub columns: Option<u16>,
    /// Current schema from a session-state change (SESSION_TRACK_SCHEMA).
    pub schema: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct ResponseParser {
    shape: Shape,
    state: State,
    /// Capabilities when the handshake was seen.
    caps: Option<u64>,
    last_seq: u8,
    pub out: Outcome,
}

impl ResponseParser {
    pub(crate) fn new(shape: Shape, caps: Option<u64>) -> Self {
        ResponseParser { shape, state: State::Start, caps, last_seq: 0, out: Outcome::default() }
    }

    fn deprecate_eof(&self) -> Option<bool> {
        self.caps.map(|c| c & caps::DEPRECATE_EOF != 0)
    }

    /// In [`Progress::MaybeDone`]: whether `p` belongs to this response
    /// (the optional EOF, with the next sequence id).
    pub(crate) fn continues(&self, p: &Packet<'_>) -> bool {
        p.seq == self.last_seq.wrapping_add(1) && is_eof(p)
    }

    pub(crate) fn on_packet(&mut self, p: &Packet<'_>) -> Progress {
        self.last_seq = p.seq;
        let Some(first) = p.first().filter(|_| p.complete) else {
            return Progress::Unreadable;
        };
        // MariaDB progress report: an ERR with code 0xffff, not the answer
        // (an ERR whose code was not captured could be either).
        if first == 0xff {
            match p.prefix.get(1..3) {
                Some([0xff, 0xff]) => return Progress::More,
                None => return Progress::Unreadable,
                Some(_) => {}
            }
        }
        match self.state {
            State::Start => self.start(p, first),
            State::Columns { left } => {
                if first == 0xff {
                    return self.error(p);
                }
                self.state = if left <= 1 { State::AfterColumns } else { State::Columns { left: left - 1 } };
                Progress::More
            }
            State::AfterColumns => {
                if first == 0xff {
                    return self.error(p);
                }
                if is_terminator(p) {
                    let Some(st) = self.terminator(p) else { return Progress::Unreadable };
                    if st & status::CURSOR_EXISTS != 0 {
                        return self.finish(st, false);
                    }
                    if p.len == 5 {
                        // The EOF after the metadata: rows follow.
                        self.state = State::Rows;
                        return Progress::More;
                    }
                    // CLIENT_DEPRECATE_EOF: the terminator of an empty result.
                    return self.finish(st, true);
                }
                self.out.rows = self.out.rows.saturating_add(1);
                self.state = State::Rows;
                Progress::More
            }
            State::Rows => {
                if first == 0xff {
                    return self.error(p);
                }
                if is_terminator(p) {
                    let Some(st) = self.terminator(p) else { return Progress::Unreadable };
                    return self.finish(st, self.shape != Shape::FieldList);
                }
                if self.shape != Shape::FieldList {
                    self.out.rows = self.out.rows.saturating_add(1);
                }
                Progress::More
            }
            State::PrepareDefs { params, columns } => {
                if params > 0 {
                    let params = params - 1;
                    if params == 0 {
                        return self.after_defs(columns, columns == 0);
                    }
                    self.state = State::PrepareDefs { params, columns };
                    return Progress::More;
                }
                let columns = columns.saturating_sub(1);
                if columns == 0 {
                    return self.after_defs(0, true);
                }
                self.state = State::PrepareDefs { params: 0, columns };
                Progress::More
            }
            State::PrepareEof { columns, last } => {
                // Only reached when the next packet is not an EOF (deprecated).
                if is_eof(p) {
                    if last || columns == 0 {
                        self.state = State::Done;
                        return Progress::Done;
                    }
                    self.state = State::PrepareDefs { params: 0, columns };
                    return Progress::More;
                }
                if last {
                    return Progress::Unreadable;
                }
                self.state = State::PrepareDefs { params: 0, columns };
                self.on_packet(p)
            }
            State::Auth => self.auth(p, first),
            State::Done => Progress::Done,
        }
    }

    fn after_defs(&mut self, columns: u64, last: bool) -> Progress {
        match self.deprecate_eof() {
            Some(true) if last => {
                self.state = State::Done;
                Progress::Done
            }
            Some(true) => {
                self.state = State::PrepareDefs { params: 0, columns };
                Progress::More
            }
            Some(false) => {
                self.state = State::PrepareEof { columns, last };
                Progress::More
            }
            None => {
                self.state = State::PrepareEof { columns, last };
                if last { Progress::MaybeDone } else { Progress::More }
            }
        }
    }

    fn start(&mut self, p: &Packet<'_>, first: u8) -> Progress {
        match (self.shape, first) {
            (_, 0xff) => self.error(p),
            (Shape::Auth, _) => self.auth(p, first),
            (Shape::Prepare, 0x00) => {
                let mut r = Reader::new(p.prefix);
                r.u8();
                let (Some(id), Some(columns), Some(params)) = (r.u32(), r.u16(), r.u16()) else {
                    return Progress::Unreadable;
                };
                r.u8();
                if let Some(w) = r.u16() {
                    self.out.warnings = Some(u32::from(w));
                }
                let metadata = !(self.caps.is_some_and(|c| c & caps::OPTIONAL_RESULTSET_METADATA != 0) && r.u8() == Some(0));
                self.out.kind = Some(ResponseKind::Prepared);
                self.out.statement_id = Some(id);
                self.out.params = Some(params);
                self.out.columns = Some(columns);
                if !metadata || (params == 0 && columns == 0) {
                    self.state = State::Done;
                    return Progress::Done;
                }
                self.state = State::PrepareDefs { params: u64::from(params), columns: u64::from(columns) };
                Progress::More
            }
            (Shape::Single, _) => {
                if first == 0x00 {
                    self.ok(p);
                } else if is_terminator(p) {
                    self.terminator(p);
                }
                self.out.kind.get_or_insert(ResponseKind::Ok);
                self.state = State::Done;
                Progress::Done
            }
            (Shape::Fetch | Shape::Stream, _) => {
                self.out.kind.get_or_insert(ResponseKind::Rows);
                self.state = State::Rows;
                self.on_packet(p)
            }
            (Shape::FieldList, _) => {
                self.out.kind.get_or_insert(ResponseKind::Ok);
                self.state = State::Rows;
                self.on_packet(p)
            }
            (Shape::Query | Shape::Execute { .. }, 0x00) => match self.ok(p) {
                Some(st) => self.more_or_done(st),
                None => Progress::Unreadable,
            },
            (Shape::Query, 0xfb) => {
                // LOCAL INFILE request: the client sends the file, then the
                // server answers with OK or ERR.
                self.out.kind.get_or_insert(ResponseKind::Ok);
                Progress::AwaitClient
            }
            (Shape::Query | Shape::Execute { .. } | Shape::Prepare, _) => {
                if self.shape == Shape::Prepare {
                    return Progress::Unreadable;
                }
                self.column_count(p)
            }
        }
    }

    fn column_count(&mut self, p: &Packet<'_>) -> Progress {
        let mysql_flag_first = self.caps.is_some_and(|c| c & caps::OPTIONAL_RESULTSET_METADATA != 0);
        let mut r = Reader::new(p.prefix);
        let mut metadata = true;
        if mysql_flag_first {
            metadata = r.u8() != Some(0);
        }
        let Some(n) = r.lenenc().filter(|&n| n > 0) else {
            return Progress::Unreadable;
        };
        if !mysql_flag_first && p.len as usize == lenenc_size(p.prefix[0]) + 1 {
            // MariaDB's MARIADB_CLIENT_CACHE_METADATA: "metadata follows".
            metadata = r.u8() != Some(0);
        }
        self.out.kind = Some(ResponseKind::Rows);
        self.out.result_sets = self.out.result_sets.saturating_add(1);
        self.state = if metadata { State::Columns { left: n } } else { State::AfterColumns };
        Progress::More
    }

    fn auth(&mut self, p: &Packet<'_>, first: u8) -> Progress {
        match first {
            0x00 => {
                self.ok(p);
                self.state = State::Done;
                Progress::Done
            }
            0xff => self.error(p),
            // caching_sha2 "fast auth success": its OK follows at once.
            0x01 if p.prefix.get(1) == Some(&0x03) && p.len == 2 => {
                self.state = State::Auth;
                Progress::More
            }
            _ => {
                self.state = State::Auth;
                Progress::AwaitClient
            }
        }
    }

    fn more_or_done(&mut self, status: u16) -> Progress {
        if status & status::MORE_RESULTS_EXISTS != 0 {
            self.state = State::Start;
            Progress::More
        } else {
            self.state = State::Done;
            Progress::Done
        }
    }

    fn finish(&mut self, status: u16, chain: bool) -> Progress {
        if chain { self.more_or_done(status) } else { self.more_or_done(status & !status::MORE_RESULTS_EXISTS) }
    }

    fn add_warnings(&mut self, w: u16) {
        self.out.warnings = Some(self.out.warnings.unwrap_or(0).saturating_add(u32::from(w)));
    }

    /// An OK packet (0x00, or 0xfe as a terminator): returns its status,
    /// `None` when the capture cut the packet before it.
    fn ok(&mut self, p: &Packet<'_>) -> Option<u16> {
        let is_ok = p.prefix.first() == Some(&0x00);
        if is_ok {
            self.out.kind.get_or_insert(ResponseKind::Ok);
        }
        let mut r = Reader::new(p.prefix);
        r.u8();
        let affected = r.lenenc()?;
        let id = r.lenenc()?;
        if is_ok {
            self.out.affected_rows = Some(self.out.affected_rows.unwrap_or(0).saturating_add(affected));
            self.out.last_insert_id = Some(id);
        }
        let st = r.u16()?;
        if let Some(w) = r.u16() {
            self.add_warnings(w);
        }
        if st & status::SESSION_STATE_CHANGED != 0 {
            let _info = r.lenenc_str();
            if let Some(schema) = r.lenenc_str().and_then(session_schema) {
                self.out.schema = Some(schema);
            }
        }
        Some(st)
    }

    /// A terminator (EOF, or OK with 0xfe): returns its status, `None` when
    /// the capture cut the packet before it.
    fn terminator(&mut self, p: &Packet<'_>) -> Option<u16> {
        if p.len == 5 {
            let mut r = Reader::new(p.prefix);
            r.u8();
            let w = r.u16()?;
            let st = r.u16()?;
            self.add_warnings(w);
            return Some(st);
        }
        self.ok(p)
    }

    fn error(&mut self, p: &Packet<'_>) -> Progress {
        let mut r = Reader::new(p.prefix);
        r.u8();
        self.out.kind = Some(ResponseKind::Error);
        self.out.error_code = r.u16();
        if r.rest().first() == Some(&b'#') {
            if r.remaining() < 6 {
                // cut by the capture inside the SQLSTATE
                self.state = State::Done;
                return Progress::Done;
            }
            r.u8();
            let s = r.bytes(5).unwrap_or_default();
            self.out.sql_state = Some([s[0], s[1], s[2], s[3], s[4]]);
        }
        let msg = r.rest();
        self.out.error_message = Some(msg[..msg.len().min(MYSQL_MAX_ERROR_MESSAGE)].to_vec());
        self.state = State::Done;
        Progress::Done
    }
}

/// 0xfe packet shorter than a row starting with an 8-byte length could be.
fn is_terminator(p: &Packet<'_>) -> bool {
    p.first() == Some(0xfe) && p.len < u64::from(MAX_PHYSICAL)
}

/// The 5-byte EOF packet of the pre-CLIENT_DEPRECATE_EOF protocol.
fn is_eof(p: &Packet<'_>) -> bool {
    p.first() == Some(0xfe) && p.len == 5
}

/// The schema named by a session-state block (SESSION_TRACK_SCHEMA, type 1).
fn session_schema(block: &[u8]) -> Option<Vec<u8>> {
    let mut r = Reader::new(block);
    let mut found = None;
    while r.remaining() > 0 {
        let ty = r.u8()?;
        let data = r.lenenc_str()?;
        if ty == 1 {
            let name = Reader::new(data).lenenc_str()?;
            found = Some(name[..name.len().min(super::handshake::MAX_NAME_LEN)].to_vec());
        }
    }
    found
}

impl ResponseParser {
    /// Inside a result set (rows or column definitions): only packets'
    /// first bytes matter.
    pub(crate) fn in_rows(&self) -> bool {
        matches!(self.state, State::Rows | State::Columns { .. } | State::AfterColumns | State::PrepareDefs { .. })
    }
}
