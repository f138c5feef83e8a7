//! What the client's packets mean: the handshake response (or SSLRequest)
//! and, in the command phase, commands (sequence id 0) and the data that
//! continues a command (LOCAL INFILE contents, authentication data).

use std::sync::Arc;

use super::super::command::{Command, parse_fields};
use super::super::exchange::{MysqlError, MysqlExchange};
use super::super::fingerprint::fingerprint;
use super::super::framing::Packet;
use super::super::handshake::{ClientHello, HandshakeResponse, caps, parse_client_hello};
use super::super::wire::Reader;
use super::{FramerAction, InFlight, MysqlConnection, MysqlState, PendingCommand, Phase};
use crate::limits::{MYSQL_HELLO_BYTES, MYSQL_QUERY_ATTRIBUTES_BYTES};
use crate::stream::Pending;

impl MysqlConnection {
    pub(super) fn client_keep(&self) -> usize {
        match self.phase {
            Phase::Greeting | Phase::Hello => MYSQL_HELLO_BYTES,
            Phase::Auth => 0,
            Phase::Command if self.inflight.as_ref().is_some_and(|f| f.awaiting_client) => 16,
            Phase::Command => self.cfg.sql_bytes + MYSQL_QUERY_ATTRIBUTES_BYTES + 16,
        }
    }

    pub(super) fn client_packet(&mut self, p: &Packet<'_>) -> FramerAction {
        match self.phase {
            // The server speaks first: this is not a MySQL connection seen
            // from its start.
            Phase::Greeting => self.give_up(),
            // A command (sequence id 0) where the handshake was expected: its
            // end was not seen.
            Phase::Hello | Phase::Auth if p.seq == 0 && self.resynced_handshake => {
                self.phase = Phase::Command;
                return self.command_packet(p);
            }
            Phase::Hello => self.client_hello(p),
            Phase::Auth => {}
            Phase::Command => return self.command_packet(p),
        }
        FramerAction::None
    }

    fn client_hello(&mut self, p: &Packet<'_>) {
        self.client_tentative = false;
        let whole = p.complete && p.prefix.len() as u64 == p.len;
        let hello = match parse_client_hello(p.prefix, self.server_caps).filter(|_| whole) {
            Some(h) => Some(h),
            // cut by the capture: the capabilities (first 4 bytes) still tell
            None if p.prefix.len() >= 4 && (p.prefix.len() as u64) < p.len => {
                let low = u32::from_le_bytes([p.prefix[0], p.prefix[1], p.prefix[2], p.prefix[3]]);
                let capabilities = u64::from(low);
                if p.len == 32 && capabilities & caps::SSL != 0 {
                    Some(ClientHello::SslRequest { capabilities })
                } else {
                    Some(ClientHello::Response(HandshakeResponse { capabilities, user: Vec::new(), database: None, auth_plugin: None }))
                }
            }
            None => None,
        };
        match hello {
            Some(ClientHello::SslRequest { .. }) => {
                self.emit(MysqlExchange {
                    command: None,
                    statement: None,
                    statement_truncated: false,
                    statement_len: None,
                    fingerprint: None,
                    statement_id: None,
                    database: None,
                    user: None,
                    response: None,
                    rows: None,
                    result_sets: 0,
                    affected_rows: None,
                    last_insert_id: None,
                    warnings: None,
                    error_code: None,
                    sql_state: None,
                    error_message: None,
                    params: None,
                    columns: None,
                    request_ts_ns: p.first_ts,
                    response_ts_ns: None,
                    response_end_ts_ns: None,
                    request_bytes: p.wire,
                    response_bytes: 0,
                    approximate: false,
                    error: Some(MysqlError::Tls),
                });
                self.finish(MysqlState::Tls);
            }
            Some(ClientHello::Response(h)) => {
                self.caps = Some(self.server_caps.map_or(h.capabilities, |s| s & h.capabilities));
                self.user = (!h.user.is_empty()).then(|| Arc::from(h.user));
                self.database = h.database.map(Arc::from);
                self.phase = Phase::Auth;
            }
            None => self.give_up(),
        }
    }

    fn command_packet(&mut self, p: &Packet<'_>) -> FramerAction {
        let tentative = std::mem::take(&mut self.client_tentative);
        if p.seq != 0 {
            if tentative {
                return FramerAction::Desync;
            }
            // LOCAL INFILE contents, auth data: part of the last command.
            let receiving = self.receiving_command();
            if let Some(c) = receiving {
                c.bytes = c.bytes.saturating_add(p.wire);
            }
            return FramerAction::None;
        }
        let Some(first) = p.first() else {
            // A command whose first byte was not captured (after a header
            // that looked like a command's, when resynchronising).
            if tentative && p.len == 0 {
                return FramerAction::Desync;
            }
            self.before_command();
            self.stats.unreadable_commands = self.stats.unreadable_commands.saturating_add(1);
            if !self.pending.push_run(false, 1) {
                self.give_up();
            }
            return FramerAction::None;
        };
        let cmd = Command(first);
        if tentative && !plausible_command(cmd, p.len) {
            return FramerAction::Desync;
        }
        self.client_skips = 0;
        self.seen_command = true;
        self.before_command();
        let c = self.build_command(cmd, p);
        if cmd.has_no_response() {
            if cmd == Command::STMT_CLOSE
                && let Some(id) = c.statement_id
            {
                self.statements.remove(id);
            }
            let ex = Self::exchange(c, None, None);
            self.emit(ex);
            return FramerAction::None;
        }
        if self.pending.has_room() {
            self.pending.push_req(c);
        } else {
            self.stats.pending_overflow = self.stats.pending_overflow.saturating_add(1);
            if !self.pending.push_run(false, 1) {
                self.give_up();
            }
        }
        FramerAction::None
    }

    /// The command that client data (not a new command) belongs to: the
    /// last one, while its response has not started or waits for the client.
    pub(super) fn receiving_command(&mut self) -> Option<&mut PendingCommand> {
        let answering_last = self.pending.len() == 1 && self.inflight.as_ref().is_some_and(|f| !f.awaiting_client && !f.detached);
        if answering_last {
            return None;
        }
        match self.pending.iter_mut().last() {
            Some(Pending::Req(c)) => Some(c),
            _ => None,
        }
    }

    /// Commands whose start was not seen (lost or not captured).
    pub(super) fn push_lost(&mut self, n: u64) {
        if !self.pending.push_run(true, n) {
            self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(n);
            self.give_up();
        }
    }

    /// A new command: in a client that does not pipeline, everything sent
    /// before it has been answered. A response still in flight ends here
    /// unless it is being read in sync (then the client pipelines);
    /// commands lost before it are counted.
    pub(super) fn before_command(&mut self) {
        self.before_command_seen(true);
    }

    /// [`Self::before_command`]; `seen`: the command itself was seen (a
    /// lost one, reported with other losses in no known order, says nothing
    /// about pipelining).
    pub(super) fn before_command_seen(&mut self, seen: bool) {
        if let Some(f) = &self.inflight {
            let in_sync = f.parser.is_some() && f.following && !f.maybe_done && !f.awaiting_client && self.server.is_synced();
            if seen && in_sync && matches!(self.pending.front(), Some(Pending::Req(_))) {
                self.pipelined = true;
            } else {
                let incomplete = f.parser.is_some() && !f.maybe_done;
                if let Some(f) = self.inflight.as_mut()
                    && incomplete
                {
                    f.approximate = true;
                }
                self.complete(None);
            }
        } else if seen && matches!(self.pending.front(), Some(Pending::Req(_))) && self.server.is_synced() {
            // its response has not even started
            self.pipelined = true;
        }
        if !self.pipelined {
            while let Some(Pending::Lost(_) | Pending::Placeholder(_)) = self.pending.front() {
                if let Some(Pending::Lost(n)) = self.pending.pop_front() {
                    self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(n);
                }
            }
        }
        if !self.server.is_synced() {
            self.server_resync_armed = true;
        }
    }

    fn build_command(&mut self, cmd: Command, p: &Packet<'_>) -> PendingCommand {
        let fields = parse_fields(cmd, p.prefix, p.len, self.caps);
        let mut c = PendingCommand {
            cmd,
            statement: None,
            statement_truncated: false,
            statement_len: None,
            fingerprint: None,
            statement_id: fields.statement_id,
            cursor: fields.cursor,
            database: self.database.clone(),
            user: self.user.clone(),
            ts: p.first_ts,
            bytes: p.wire,
            use_schema: None,
            change_user: None,
            approximate: !p.complete,
        };
        match cmd {
            Command::QUERY | Command::STMT_PREPARE | Command::INIT_DB => match fields.text_at {
                Some(at) => {
                    let text_len = p.len.saturating_sub(at as u64);
                    let avail = p.prefix.get(at..).unwrap_or_default();
                    let kept = &avail[..avail.len().min(self.cfg.sql_bytes)];
                    c.statement_truncated = (kept.len() as u64) < text_len;
                    c.statement_len = p.complete.then_some(text_len);
                    if cmd != Command::INIT_DB {
                        c.fingerprint = Some(Arc::from(fingerprint(kept)));
                    }
                    if cmd == Command::QUERY && !c.statement_truncated {
                        c.use_schema = parse_use(kept);
                    }
                    c.statement = Some(Arc::from(kept));
                }
                None => c.statement_truncated = p.len > 1,
            },
            Command::CHANGE_USER => c.change_user = parse_change_user(p.prefix, self.caps),
            _ => {}
        }
        if cmd.has_statement_id()
            && let Some(id) = fields.statement_id
        {
            let queued = if id == u32::MAX { self.queued_prepare() } else { None };
            if let Some((sql, truncated, len, fp)) = queued {
                // MariaDB's prepare and execute sent together: the id is
                // known once the prepare is answered
                c.statement = sql;
                c.statement_truncated = truncated;
                c.statement_len = len;
                c.fingerprint = fp;
                return c;
            }
            match self.statements.get(id) {
                Some(s) => {
                    c.statement = Some(s.sql.clone());
                    c.statement_truncated = s.sql_truncated;
                    c.statement_len = Some(s.sql_len);
                    c.fingerprint = Some(s.fingerprint.clone());
                    if id == u32::MAX {
                        c.statement_id = Some(s.id);
                    }
                }
                None => self.stats.unknown_statements = self.stats.unknown_statements.saturating_add(1),
            }
        }
        c
    }

    /// The statement of the last COM_STMT_PREPARE still waiting for its
    /// answer.
    #[allow(clippy::type_complexity)]
    fn queued_prepare(&self) -> Option<(Option<Arc<[u8]>>, bool, Option<u64>, Option<Arc<str>>)> {
        self.pending.iter().rev().find_map(|p| match p {
            Pending::Req(c) if c.cmd == Command::STMT_PREPARE => {
                Some((c.statement.clone(), c.statement_truncated, c.statement_len, c.fingerprint.clone()))
            }
            _ => None,
        })
    }

    /// What a finished exchange changes on the connection: prepared
    /// statements, current schema and user.
    pub(super) fn apply_effects(&mut self, c: &PendingCommand, f: &InFlight) {
        use super::super::exchange::ResponseKind;
        let Some(out) = f.parser.as_ref().map(|p| &p.out) else { return };
        if out.kind == Some(ResponseKind::Error) || out.kind.is_none() {
            return;
        }
        match c.cmd {
            Command::STMT_PREPARE => {
                if let Some(id) = out.statement_id {
                    for p in self.pending.iter_mut() {
                        if let Pending::Req(q) = p
                            && q.statement_id == Some(u32::MAX)
                        {
                            q.statement_id = Some(id);
                        }
                    }
                }
                if let (Some(id), Some(sql)) = (out.statement_id, c.statement.clone()) {
                    self.statements.insert(super::super::statements::Prepared {
                        id,
                        sql,
                        sql_truncated: c.statement_truncated,
                        sql_len: c.statement_len.unwrap_or(0),
                        fingerprint: c.fingerprint.clone().unwrap_or_else(|| Arc::from("")),
                        params: out.params.unwrap_or(0),
                        columns: out.columns.unwrap_or(0),
                    });
                }
            }
            Command::INIT_DB => self.database = c.statement.clone(),
            Command::RESET_CONNECTION => self.statements.clear(),
            Command::CHANGE_USER => {
                self.statements.clear();
                if let Some((user, db)) = &c.change_user {
                    self.user = Some(Arc::from(user.as_slice()));
                    self.database = db.as_deref().map(Arc::from);
                }
            }
            _ => {}
        }
        if let Some(s) = &c.use_schema {
            self.database = Some(Arc::from(s.as_slice()));
        }
        if let Some(s) = &out.schema {
            self.database = Some(Arc::from(s.as_slice()));
        }
    }
}

/// A command byte and length that a client could send (for resynchronising
/// on a guessed boundary).
pub(super) fn plausible_command(cmd: Command, len: u64) -> bool {
    match cmd {
        Command::QUIT | Command::PING | Command::STATISTICS | Command::RESET_CONNECTION | Command::PROCESS_INFO => len == 1,
        Command::QUERY | Command::STMT_PREPARE | Command::INIT_DB | Command::FIELD_LIST | Command::CHANGE_USER => len >= 2,
        Command::STMT_EXECUTE => len >= 10,
        Command::STMT_CLOSE | Command::STMT_RESET => len == 5,
        Command::STMT_FETCH => len == 9,
        Command::STMT_SEND_LONG_DATA => len >= 7,
        Command::SET_OPTION => len == 3,
        _ => false,
    }
}

/// `USE name` (backquoted or not, optional `;`): the schema named.
pub(crate) fn parse_use(sql: &[u8]) -> Option<Vec<u8>> {
    let s = sql.trim_ascii();
    let s = s.strip_suffix(b";").unwrap_or(s).trim_ascii_end();
    if s.len() < 4 || !s[..3].eq_ignore_ascii_case(b"USE") || !s[3].is_ascii_whitespace() {
        return None;
    }
    let name = s[3..].trim_ascii();
    let name = match name.strip_prefix(b"`").and_then(|n| n.strip_suffix(b"`")) {
        Some(q) => q.to_vec(),
        None if !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' || *b >= 0x80) => {
            name.to_vec()
        }
        None => return None,
    };
    (!name.is_empty() && name.len() <= super::super::handshake::MAX_NAME_LEN).then_some(name)
}

/// COM_CHANGE_USER: user and schema.
fn parse_change_user(payload: &[u8], capabilities: Option<u64>) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let mut r = Reader::new(payload);
    r.u8()?;
    let user = r.nul_str()?.to_vec();
    if capabilities.is_none_or(|c| c & caps::SECURE_CONNECTION != 0) {
        let n = r.u8()?;
        r.skip(usize::from(n))?;
    } else {
        r.nul_str()?;
    }
    let db = r.nul_str().filter(|d| !d.is_empty()).map(<[u8]>::to_vec);
    Some((user, db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_statements() {
        assert_eq!(parse_use(b"USE other"), Some(b"other".to_vec()));
        assert_eq!(parse_use(b"  use `my db` ; "), Some(b"my db".to_vec()));
        assert_eq!(parse_use(b"USER()"), None);
        assert_eq!(parse_use(b"USE a b"), None);
        assert_eq!(parse_use(b"USE"), None);
    }
}
