//! The per-connection stitcher: both directions' packets in, exchanges
//! out. Commands wait in a bounded FIFO ([`PendingQueue`]) for their
//! responses, which are read by a [`ResponseParser`] chosen by the command;
//! the connection phase, prepared statements and the current schema are
//! tracked on the way.
//!
//! Mechanics by file: `connection/client.rs` (what the client's packets
//! mean), `connection/server.rs` (the server's), `connection/sync.rs`
//! (losing and finding packet boundaries, lost syscalls).

use std::sync::Arc;

use super::command::Command;
use super::exchange::{MysqlError, MysqlExchange};
use super::framing::{Event, Framer, Input, PacketReader};
use super::response::{Outcome, ResponseParser};
use super::statements::StatementTable;
use crate::exchange::Direction;
use crate::limits::{
    MAX_OUTPUT, MAX_PENDING_ENTRIES, MAX_PENDING_REQUESTS, MYSQL_DEFAULT_SQL_BYTES, MYSQL_MAX_PREPARED, MYSQL_MAX_PREPARED_BYTES,
    MYSQL_MAX_SQL_BYTES,
};
use crate::stream::{Output, Pending, PendingQueue, Syscall, Uncounted};

mod client;
mod server;
mod sync;

pub(crate) use sync::plausible_command_start;

/// How a [`MysqlConnection`] starts and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MysqlConfig {
    /// Bytes of SQL kept per statement (default 4096, at most
    /// [`MYSQL_MAX_SQL_BYTES`]); the full length is still counted.
    pub sql_bytes: usize,
    /// `false`: the parser sees the connection from its first byte (the
    /// server's greeting). `true`: observation began mid-connection;
    /// syscalls are skipped until one starts with a recognisable command
    /// (or greeting, or handshake response), and capabilities are inferred.
    pub mid_stream: bool,
    /// Prepared statements remembered (oldest evicted first).
    pub max_prepared: usize,
    /// Bytes of prepared SQL and fingerprints remembered.
    pub max_prepared_bytes: usize,
    /// In mid-stream mode (or after framing was lost), client syscalls
    /// skipped before giving up on the connection.
    pub max_sync_skips: u32,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            sql_bytes: MYSQL_DEFAULT_SQL_BYTES,
            mid_stream: false,
            max_prepared: MYSQL_MAX_PREPARED,
            max_prepared_bytes: MYSQL_MAX_PREPARED_BYTES,
            max_sync_skips: crate::limits::DEFAULT_MAX_SYNC_SKIPS,
        }
    }
}

/// Lifecycle of a MySQL connection parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MysqlState {
    /// Parsing.
    Active,
    /// The client asked for TLS: reported once, nothing more is parsed.
    Tls,
    /// Not (or no longer) the MySQL protocol; further bytes are ignored.
    GaveUp,
    /// [`MysqlConnection::on_close`] or [`MysqlConnection::abandon`] was called.
    Closed,
}

/// Counters for what the parser had to drop, guess or bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MysqlStats {
    /// Commands not reported because the capture pipeline lost their start
    /// or their response's start ([`MysqlConnection::on_lost`]), or because
    /// the connection's end was lost ([`MysqlConnection::abandon`]).
    pub lost_exchanges: u64,
    /// Exchanges dropped because [`MAX_OUTPUT`] were not drained.
    pub dropped_exchanges: u64,
    /// Responses (or server bytes) that answered no known command.
    pub orphan_responses: u64,
    /// Commands not stored because [`MAX_PENDING_REQUESTS`] were waiting.
    pub pending_overflow: u64,
    /// Times a direction lost its packet framing (headers in uncaptured or
    /// lost bytes) and had to find a boundary again.
    pub resyncs: u64,
    /// Prepared statements evicted from the bounded table.
    pub statements_evicted: u64,
    /// Command packets whose first byte the capture did not hold (not
    /// reported: which command it was is unknown).
    pub unreadable_commands: u64,
    /// COM_STMT_* commands naming a statement the table does not hold
    /// (prepared before the parser saw the connection, or evicted).
    pub unknown_statements: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server's greeting.
    Greeting,
    /// Waiting for the client's handshake response.
    Hello,
    /// Authentication exchange until the server's OK.
    Auth,
    /// Commands.
    Command,
}

/// Syscalls shorter than this, while out of sync, are held to be looked at
/// with the next one (a packet header split across two syscalls).
const CARRY_MAX: usize = 8;

#[derive(Debug, Default)]
struct Carry {
    bytes: Vec<u8>,
    ts: u64,
}

/// What a packet's handler asks of the framer that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FramerAction {
    None,
    /// The packet was not at a boundary after all (a wrong guess).
    Desync,
    /// From the next byte on, the compressed protocol.
    Compress,
}

/// A command waiting for (or receiving) its response.
#[derive(Debug)]
struct PendingCommand {
    cmd: Command,
    statement: Option<Arc<[u8]>>,
    statement_truncated: bool,
    statement_len: Option<u64>,
    fingerprint: Option<Arc<str>>,
    statement_id: Option<u32>,
    cursor: bool,
    database: Option<Arc<[u8]>>,
    user: Option<Arc<[u8]>>,
    ts: u64,
    bytes: u64,
    /// `USE name` sent as COM_QUERY: the schema after an OK.
    use_schema: Option<Vec<u8>>,
    /// COM_CHANGE_USER: the new user and schema, after an OK.
    change_user: Option<(Vec<u8>, Option<Vec<u8>>)>,
    /// The command's packet was not fully framed.
    approximate: bool,
}

/// The response being read (it answers the front of the pending queue).
#[derive(Debug)]
struct InFlight {
    /// `None`: not followed (its start was not seen, a packet could not be
    /// read, or it answers a lost command): bytes are counted until it ends.
    parser: Option<ResponseParser>,
    awaiting_client: bool,
    maybe_done: bool,
    ts: u64,
    last_ts: u64,
    bytes: u64,
    packets: u64,
    approximate: bool,
    /// The response's first byte was not seen.
    start_unseen: bool,
    /// A packet could not be read: bytes are counted, packets not parsed.
    following: bool,
    /// Already accounted for (its command was counted lost): absorbs the
    /// rest of the response and pairs with nothing.
    detached: bool,
}

impl InFlight {
    fn new(parser: Option<ResponseParser>, ts: u64) -> Self {
        InFlight {
            approximate: parser.is_none(),
            parser,
            awaiting_client: false,
            maybe_done: false,
            ts,
            last_ts: ts,
            bytes: 0,
            packets: 0,
            start_unseen: false,
            following: true,
            detached: false,
        }
    }
}

/// Streaming MySQL/MariaDB protocol parser for one TCP connection.
///
/// Feed every read/write syscall's payload with [`on_data`](Self::on_data)
/// (per direction in order), syscalls the capture lost with
/// [`on_lost`](Self::on_lost), call [`on_close`](Self::on_close) (or
/// [`abandon`](Self::abandon)) at the end and collect exchanges with
/// [`drain`](Self::drain) after each call. See the [module
/// documentation](super) for the model and its bounds.
#[derive(Debug)]
pub struct MysqlConnection {
    cfg: MysqlConfig,
    state: MysqlState,
    phase: Phase,
    client: Framer,
    server: Framer,
    /// Capabilities of the greeting, when seen.
    server_caps: Option<u64>,
    /// Negotiated capabilities, when the handshake was seen.
    caps: Option<u64>,
    user: Option<Arc<[u8]>>,
    database: Option<Arc<[u8]>>,
    statements: StatementTable,
    pending: PendingQueue<PendingCommand>,
    inflight: Option<InFlight>,
    out: Output<MysqlExchange>,
    stats: MysqlStats,
    /// The connection switched to the compressed protocol.
    compressed: bool,
    /// A command arrived while the previous response was still being read
    /// in sync: the client pipelines.
    pipelined: bool,
    /// A command was seen since the server side lost its framing: the next
    /// server syscall that starts like a response resynchronises it.
    server_resync_armed: bool,
    /// The client framer was resynchronised on a guess: the next packet
    /// must be a valid command.
    client_tentative: bool,
    /// Client syscalls skipped while looking for a command.
    client_skips: u32,
    /// A command was parsed on this connection.
    seen_command: bool,
    /// The last loss report lost a command (see `on_lost`).
    lost_command_turn: bool,
    /// The connection phase was picked up from the middle (after a loss, or
    /// on a connection seen mid-stream): its end may be missed too.
    resynced_handshake: bool,
    /// Per direction: a short syscall held while out of sync.
    carry: [Carry; 2],
    /// Timestamp of the syscall being processed.
    now: u64,
}

impl Default for MysqlConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl MysqlConnection {
    /// A parser that sees the connection from its first byte.
    pub fn new() -> Self {
        Self::with_config(MysqlConfig::default())
    }

    /// A parser attached to a connection already in progress.
    pub fn mid_stream() -> Self {
        Self::with_config(MysqlConfig { mid_stream: true, ..MysqlConfig::default() })
    }

    pub fn with_config(mut cfg: MysqlConfig) -> Self {
        cfg.sql_bytes = cfg.sql_bytes.min(MYSQL_MAX_SQL_BYTES);
        let synced = !cfg.mid_stream;
        MysqlConnection {
            statements: StatementTable::new(cfg.max_prepared, cfg.max_prepared_bytes),
            cfg,
            state: MysqlState::Active,
            phase: if cfg.mid_stream { Phase::Command } else { Phase::Greeting },
            client: Framer::Plain(PacketReader::new(synced)),
            server: Framer::Plain(PacketReader::new(synced)),
            server_caps: None,
            caps: None,
            user: None,
            database: None,
            pending: PendingQueue::new(MAX_PENDING_REQUESTS, MAX_PENDING_ENTRIES),
            inflight: None,
            out: Output::new(MAX_OUTPUT),
            stats: MysqlStats::default(),
            compressed: false,
            pipelined: false,
            server_resync_armed: false,
            client_tentative: false,
            client_skips: 0,
            seen_command: false,
            lost_command_turn: false,
            resynced_handshake: false,
            carry: [Carry::default(), Carry::default()],
            now: 0,
        }
    }

    pub fn state(&self) -> MysqlState {
        self.state
    }

    /// True once nothing more can come out of this connection except what
    /// is still to be drained.
    pub fn is_finished(&self) -> bool {
        self.state != MysqlState::Active
    }

    pub fn stats(&self) -> MysqlStats {
        MysqlStats { dropped_exchanges: self.out.dropped, statements_evicted: self.statements.evictions, ..self.stats }
    }

    /// Negotiated capability flags, when the handshake was seen (lower 32
    /// bits `CLIENT_*`, upper 32 MariaDB's extended ones; see
    /// [`super::handshake::caps`]).
    pub fn capabilities(&self) -> Option<u64> {
        self.caps
    }

    /// The connection uses the compressed protocol.
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// The client was seen sending a command before the previous response
    /// ended.
    pub fn is_pipelining(&self) -> bool {
        self.pipelined
    }

    /// Current user and schema, when known.
    pub fn user(&self) -> Option<&[u8]> {
        self.user.as_deref()
    }

    pub fn database(&self) -> Option<&[u8]> {
        self.database.as_deref()
    }

    /// Prepared statements held, and the bytes they cost (bounded by the
    /// configuration).
    pub fn prepared_statements(&self) -> (usize, usize) {
        (self.statements.len(), self.statements.bytes())
    }

    /// Entries in the pending-command queue (at most [`MAX_PENDING_ENTRIES`]).
    pub fn pending_entries(&self) -> usize {
        self.pending.len()
    }

    /// Commands waiting for a response (stored and lost ones).
    pub fn pending_commands(&self) -> u64 {
        self.pending.requests()
    }

    /// Finished exchanges, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = MysqlExchange> + '_ {
        self.out.drain()
    }

    /// Process one syscall's payload: `captured` is the prefix of its bytes
    /// that was captured, `total_len` its real byte count (bytes past the
    /// capture are counted through packet lengths, not seen).
    pub fn on_data(&mut self, dir: Direction, captured: &[u8], total_len: u64, ts_ns: u64) {
        if self.state != MysqlState::Active {
            return;
        }
        let call = Syscall::new(captured, total_len);
        if call.is_empty() {
            return;
        }
        self.lost_command_turn = false;
        // Bytes held from the other direction came before these.
        self.flush_carry_of(match dir {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        });
        self.now = ts_ns;
        if !self.framer(dir).is_synced() {
            self.resync_at(dir, call);
            return;
        }
        self.feed(dir, Input { data: call.captured, gap: call.uncaptured });
    }

    /// A syscall while `dir` is out of sync: parsed if it starts at a packet
    /// boundary (possibly together with a few bytes held from the previous
    /// syscall, a header split across two), else counted as unframed.
    fn resync_at(&mut self, dir: Direction, call: Syscall<'_>) {
        let k = usize::from(dir == Direction::ServerToClient);
        let carry = std::mem::take(&mut self.carry[k]);
        let joined: Vec<u8>;
        let probe = if carry.bytes.is_empty() {
            call
        } else {
            joined = [carry.bytes.as_slice(), &call.captured[..call.captured.len().min(64)]].concat();
            let total = (carry.bytes.len() as u64).saturating_add(call.total());
            Syscall { captured: &joined, uncaptured: total - joined.len() as u64 }
        };
        // a header alone is accepted only as a syscall of its own (what
        // mysqld reads), not pieced together from two
        let joined_ok = carry.bytes.is_empty() || probe.captured.len() > 4;
        if joined_ok && self.try_resync(dir, &probe) {
            if !carry.bytes.is_empty() {
                let now = std::mem::replace(&mut self.now, carry.ts);
                self.feed(dir, Input { data: &carry.bytes, gap: 0 });
                self.now = now;
            }
            self.feed(dir, Input { data: call.captured, gap: call.uncaptured });
            return;
        }
        if !carry.bytes.is_empty() {
            self.unframed(dir, carry.bytes.len() as u64);
            if self.state == MysqlState::Active && self.try_resync(dir, &call) {
                self.feed(dir, Input { data: call.captured, gap: call.uncaptured });
                return;
            }
        }
        if self.state == MysqlState::Active && call.uncaptured == 0 && call.captured.len() < CARRY_MAX {
            self.carry[k] = Carry { bytes: call.captured.to_vec(), ts: self.now };
            return;
        }
        self.unframed(dir, call.total());
    }

    /// Bytes held for resynchronisation are unframed after all.
    fn flush_carry(&mut self) {
        self.flush_carry_of(Direction::ClientToServer);
        self.flush_carry_of(Direction::ServerToClient);
    }

    fn flush_carry_of(&mut self, dir: Direction) {
        let k = usize::from(dir == Direction::ServerToClient);
        let carry = std::mem::take(&mut self.carry[k]);
        if !carry.bytes.is_empty() && self.state == MysqlState::Active {
            let now = std::mem::replace(&mut self.now, carry.ts);
            self.unframed(dir, carry.bytes.len() as u64);
            self.now = now;
        }
    }

    /// The connection closed: a response in progress ends (complete, or
    /// [`MysqlError::ResponseIncomplete`]), commands without a response are
    /// reported with [`MysqlError::NoResponse`]. `ts_ns` is accepted for
    /// symmetry; no reported timestamp uses it.
    pub fn on_close(&mut self, _ts_ns: u64) {
        self.flush_carry();
        if self.state == MysqlState::Active {
            if let Some(f) = &self.inflight {
                let incomplete = f.parser.is_some() && !f.maybe_done;
                let partial = self.server.partial_wire();
                if let Some(f) = self.inflight.as_mut() {
                    f.bytes = f.bytes.saturating_add(partial);
                }
                self.complete(incomplete.then_some(MysqlError::ResponseIncomplete));
            }
            self.flush_pending(MysqlError::NoResponse);
        }
        self.finish(MysqlState::Closed);
    }

    /// The connection ended without the parser being told how (its close
    /// was lost): every command still waiting counts as lost, and so does a
    /// command whose header was read but whose end went with the close
    /// (the loss report of its body came with the lost close).
    pub fn abandon(&mut self) {
        if self.state == MysqlState::Active {
            self.inflight = None;
            if self.phase == Phase::Command && self.client.cut().is_some_and(|(m, _)| m.seq == 0) {
                self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(1);
            }
            self.count_lost_pending();
        }
        self.finish(MysqlState::Closed);
    }

    // ---- plumbing -------------------------------------------------------

    fn framer(&self, dir: Direction) -> &Framer {
        match dir {
            Direction::ClientToServer => &self.client,
            Direction::ServerToClient => &self.server,
        }
    }

    fn framer_mut(&mut self, dir: Direction) -> &mut Framer {
        match dir {
            Direction::ClientToServer => &mut self.client,
            Direction::ServerToClient => &mut self.server,
        }
    }

    /// Runs the direction's framer over `input`, handling each packet.
    fn feed(&mut self, dir: Direction, mut input: Input<'_>) {
        let placeholder = || Framer::Plain(PacketReader::new(true));
        let mut framer = std::mem::replace(self.framer_mut(dir), placeholder());
        loop {
            let keep = self.keep(dir);
            let was_synced = framer.is_synced();
            match framer.next(&mut input, self.now, keep) {
                Event::NeedInput => break,
                Event::Unframed(n) => self.unframed(dir, n),
                Event::Packet(p) => {
                    let action = match dir {
                        Direction::ClientToServer => self.client_packet(&p),
                        Direction::ServerToClient => self.server_packet(&p),
                    };
                    match action {
                        FramerAction::None => {}
                        FramerAction::Desync => framer.desync(),
                        FramerAction::Compress => framer.compress(false),
                    }
                }
            }
            if was_synced && !framer.is_synced() {
                self.stats.resyncs = self.stats.resyncs.saturating_add(1);
            }
            if self.state != MysqlState::Active {
                break;
            }
        }
        framer.shrink();
        *self.framer_mut(dir) = framer;
        if self.state != MysqlState::Active {
            self.release();
        }
    }

    /// The client side loses sync: a command in progress is taken as it
    /// is (incomplete).
    fn cut_client(&mut self) {
        let mut framer = std::mem::replace(&mut self.client, Framer::Plain(PacketReader::new(false)));
        if let Some((m, prefix)) = framer.cut() {
            let p = m.with(prefix);
            let _ = self.client_packet(&p);
        }
        framer.desync();
        self.client = framer;
    }

    /// Bytes of the next packet's payload worth keeping in `dir`.
    fn keep(&self, dir: Direction) -> usize {
        match dir {
            Direction::ClientToServer => self.client_keep(),
            Direction::ServerToClient => self.server_keep(),
        }
    }

    fn emit(&mut self, ex: MysqlExchange) {
        self.out.push(ex);
    }

    fn exchange(c: PendingCommand, f: Option<InFlight>, error: Option<MysqlError>) -> MysqlExchange {
        let (outcome, ts, end, bytes, approx) = match f {
            Some(f) => {
                let approx = f.approximate;
                let o = f.parser.map(|p| p.out).unwrap_or_default();
                (o, (!f.start_unseen || f.packets > 0).then_some(f.ts), Some(f.last_ts), f.bytes, approx)
            }
            None => (Outcome::default(), None, None, 0, false),
        };
        let rows_known = !approx && outcome.kind == Some(super::exchange::ResponseKind::Rows);
        MysqlExchange {
            command: Some(c.cmd),
            statement: c.statement,
            statement_truncated: c.statement_truncated,
            statement_len: c.statement_len,
            fingerprint: c.fingerprint,
            statement_id: c.statement_id.or(outcome.statement_id),
            database: c.database,
            user: c.user,
            response: outcome.kind,
            rows: rows_known.then_some(outcome.rows),
            result_sets: outcome.result_sets,
            affected_rows: outcome.affected_rows,
            last_insert_id: outcome.last_insert_id,
            warnings: if approx { None } else { outcome.warnings },
            error_code: outcome.error_code,
            sql_state: outcome.sql_state,
            error_message: outcome.error_message,
            params: outcome.params,
            columns: outcome.columns,
            request_ts_ns: c.ts,
            response_ts_ns: ts,
            response_end_ts_ns: end,
            request_bytes: c.bytes,
            response_bytes: bytes,
            approximate: approx || c.approximate,
            error,
        }
    }

    /// The response in flight ended: pair it with the front of the queue.
    fn complete(&mut self, err: Option<MysqlError>) {
        let Some(f) = self.inflight.take() else { return };
        if f.detached {
            return;
        }
        match self.pending.front() {
            Some(Pending::Req(_)) => {
                if let Some(c) = self.pending.pop_req() {
                    self.apply_effects(&c, &f);
                    let ex = Self::exchange(c, Some(f), err);
                    self.emit(ex);
                }
            }
            Some(Pending::Lost(_) | Pending::Placeholder(_)) => self.answer_run(),
            None => self.stats.orphan_responses = self.stats.orphan_responses.saturating_add(1),
        }
    }

    /// A response (seen or lost) answered the run at the front.
    fn answer_run(&mut self) {
        match self.pending.answer_run() {
            Some(Uncounted::Lost) => self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(1),
            Some(Uncounted::Unseen) => self.stats.orphan_responses = self.stats.orphan_responses.saturating_add(1),
            None => {}
        }
    }

    /// Emit every stored pending command with `err`; lost ones are counted.
    fn flush_pending(&mut self, err: MysqlError) {
        while let Some(p) = self.pending.pop_front() {
            match p {
                Pending::Req(c) => {
                    let ex = Self::exchange(c, None, Some(err));
                    self.emit(ex);
                }
                Pending::Lost(n) => self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(n),
                Pending::Placeholder(_) => {}
            }
        }
    }

    /// Counts and forgets every command still waiting.
    fn count_lost_pending(&mut self) {
        self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(self.pending.unresolved());
        self.pending.clear();
    }

    fn give_up(&mut self) {
        if self.state != MysqlState::Active {
            return;
        }
        if let Some(f) = self.inflight.take()
            && let Some(c) = self.pending.pop_req()
        {
            let ex = Self::exchange(c, Some(f), Some(MysqlError::ParserGaveUp));
            self.emit(ex);
        }
        self.flush_pending(MysqlError::ParserGaveUp);
        self.state = MysqlState::GaveUp;
    }

    fn finish(&mut self, state: MysqlState) {
        if self.state == MysqlState::Active || state == MysqlState::Closed {
            self.state = state;
        }
        self.release();
    }

    /// Free buffers and queues once nothing more will be parsed.
    fn release(&mut self) {
        // A response still in flight answers the front command, counted here.
        self.inflight = None;
        self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(self.pending.unresolved());
        self.pending.clear();
        self.statements.clear();
        self.client = Framer::Plain(PacketReader::new(false));
        self.server = Framer::Plain(PacketReader::new(false));
    }
}
