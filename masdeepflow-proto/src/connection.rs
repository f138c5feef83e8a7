//! Streaming per-connection HTTP/1.x state machine.
//!
//! See the crate documentation for the model; this file holds the
//! mechanics. Each direction is a [`Side`] with its own framing state;
//! requests wait in a bounded FIFO until the response at the head of the
//! response stream completes.

use std::collections::VecDeque;

use crate::chunked::{ChunkedDecoder, Skip};
use crate::exchange::{Direction, Exchange, ExchangeError};
use crate::http1::{
    self, Detect, Method, ParseError, RequestHead, ResponseHead, check_partial, find_head_end, has_valid_start_line, leading_newlines,
};
use crate::stream::{Output, PendingQueue, Syscall, Uncounted};
mod loss;
mod sides;

use crate::limits::{DEFAULT_MAX_SYNC_SKIPS, MAX_HEAD_SIZE, MAX_OUTPUT, MAX_PENDING_ENTRIES, MAX_PENDING_REQUESTS, MAX_UNPAIRED_RESPONSES};

/// Uncaptured bytes past the end of a request that are taken to hold at
/// least one unseen request (`GET / HTTP/1.1\r\n\r\n` is 18 bytes).
const MIN_UNSEEN_REQUEST: u64 = 16;
/// Same for responses (`HTTP/1.1 200\r\n\r\n` is 17 bytes).
const MIN_UNSEEN_RESPONSE: u64 = 12;
/// While resynchronising, a start line cut by the capture is accepted only
/// if at least this many bytes of it were captured.
const MIN_CUT_START_LINE: usize = 256;
/// Suffix of a syscall that ends a chunked body (used after chunked framing
/// was lost).
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How an [`Http1Connection`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `false`: the first byte of each direction is the start of the
    /// connection, so it must be an HTTP message (else give up at once).
    /// `true`: observation began mid-connection; syscalls are skipped until
    /// one starts with a recognisable head.
    pub mid_stream: bool,
    /// In mid-stream mode, syscalls per direction skipped before giving up
    /// ([`GiveUpReason::SyncTimeout`]).
    pub max_sync_skips: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { mid_stream: false, max_sync_skips: DEFAULT_MAX_SYNC_SKIPS }
    }
}

/// Why a connection was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// Bytes at a message boundary do not start an HTTP/1.x message.
    NotHttp,
    /// A head looked like HTTP but failed to parse.
    Head(ParseError),
    /// Mid-stream mode found no message boundary within the skip budget.
    SyncTimeout,
    /// More than [`MAX_PENDING_ENTRIES`] runs of requests waited (stored,
    /// unseen and lost ones alternating without responses).
    TooManyPending,
}

/// Lifecycle of a connection parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Parsing HTTP/1.x.
    Active,
    /// Switched protocols (`101`) or a `CONNECT` tunnel was established;
    /// further bytes are ignored.
    Tunnel,
    /// Not (or no longer) HTTP/1.x; further bytes are ignored.
    GaveUp { direction: Direction, reason: GiveUpReason },
    /// [`Http1Connection::on_close`] was called.
    Closed,
}

/// Counters for things the parser had to drop or guess.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Requests not stored because [`MAX_PENDING_REQUESTS`] were waiting.
    pub pending_overflow: u64,
    /// Requests inferred to exist in uncaptured bytes (kept as placeholders).
    pub unseen_requests: u64,
    /// Responses that matched no request (its request was not seen), or
    /// that were discarded with the connection.
    pub orphan_responses: u64,
    /// Exchanges dropped because [`MAX_OUTPUT`] were not drained.
    pub dropped_exchanges: u64,
    /// Times framing was lost and the parser fell back to resynchronising on
    /// message heads at syscall starts.
    pub resyncs: u64,
    /// Exchanges not reported because the capture pipeline lost the start
    /// of their request or of their response ([`Http1Connection::on_lost`]),
    /// or because the connection's end was lost ([`Http1Connection::abandon`]).
    pub lost_exchanges: u64,
    /// 1 once uncaptured bytes may have hidden pipelined messages (a
    /// response past the one in progress, or requests past a complete
    /// one): how many is unknown, so every later exchange of the
    /// connection is reported `approximate` (its pairing may be shifted).
    pub pairing_lost: u64,
}

#[derive(Debug)]
struct PendingRequest {
    seq: u64,
    method: Method,
    target: Vec<u8>,
    target_truncated: bool,
    host: Option<Vec<u8>>,
    version: u8,
    ts: u64,
    bytes: u64,
    approximate: bool,
}

/// Requests waiting for responses: stored ones, and runs of unseen
/// (placeholder) or lost ones, in the queue shared with the MySQL parser.
type Pending = crate::stream::Pending<PendingRequest>;

#[derive(Debug)]
struct RespProgress {
    /// First byte of the first head (interim included) of this response.
    start_ts: u64,
    /// First byte of the final head.
    ts: Option<u64>,
    last_ts: u64,
    status: Option<u16>,
    bytes: u64,
    interim: u8,
    approximate: bool,
    error: Option<ExchangeError>,
}

impl RespProgress {
    fn new(ts: u64) -> Self {
        RespProgress { start_ts: ts, ts: None, last_ts: ts, status: None, bytes: 0, interim: 0, approximate: false, error: None }
    }
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

#[derive(Debug)]
enum SideState {
    /// At a message boundary.
    Idle,
    /// Part of a head buffered (never more than [`MAX_HEAD_SIZE`] bytes).
    Head {
        buf: Vec<u8>,
        start_ts: u64,
    },
    Body(Framing),
    /// Framing unknown: wait for a head at the start of a syscall. `open`:
    /// the bytes meanwhile belong to the current message. `chunked_tail`:
    /// a fully captured syscall ending in `0\r\n\r\n` ends the message.
    Resync {
        open: bool,
        chunked_tail: bool,
    },
}

#[derive(Debug)]
struct Side {
    state: SideState,
    /// `Some(n)` until the first head in mid-stream mode: syscalls skipped.
    sync_skips: Option<u32>,
}

enum AnyHead {
    Req(RequestHead),
    Resp(ResponseHead),
}

/// Streaming HTTP/1.x parser for one TCP connection.
///
/// Feed every read/write syscall's payload with [`on_data`](Self::on_data)
/// (per direction in order), call [`on_close`](Self::on_close) at the end
/// and collect results with [`drain`](Self::drain) after each call.
/// Memory is bounded: two head buffers of at most [`MAX_HEAD_SIZE`] bytes,
/// at most [`MAX_PENDING_REQUESTS`] pending requests,
/// [`MAX_UNPAIRED_RESPONSES`] early responses and [`MAX_OUTPUT`] undrained
/// exchanges, each with bounded strings.
#[derive(Debug)]
pub struct Http1Connection {
    cfg: Config,
    phase: ConnectionState,
    req: Side,
    resp: Side,
    pending: PendingQueue<PendingRequest>,
    cur_req: Option<u64>,
    next_seq: u64,
    cur_resp: Option<RespProgress>,
    unpaired: VecDeque<RespProgress>,
    out: Output<Exchange>,
    stats: ConnectionStats,
    /// Timestamp of the syscall being processed.
    now: u64,
}

impl Default for Http1Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Http1Connection {
    /// A parser that sees the connection from its first byte.
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    /// A parser attached to a connection already in progress.
    pub fn mid_stream() -> Self {
        Self::with_config(Config { mid_stream: true, ..Config::default() })
    }

    pub fn with_config(cfg: Config) -> Self {
        let side = || Side {
            state: if cfg.mid_stream { SideState::Resync { open: false, chunked_tail: false } } else { SideState::Idle },
            sync_skips: cfg.mid_stream.then_some(0),
        };
        Http1Connection {
            cfg,
            phase: ConnectionState::Active,
            req: side(),
            resp: side(),
            pending: PendingQueue::new(MAX_PENDING_REQUESTS, MAX_PENDING_ENTRIES),
            cur_req: None,
            next_seq: 0,
            cur_resp: None,
            unpaired: VecDeque::new(),
            out: Output::new(MAX_OUTPUT),
            stats: ConnectionStats::default(),
            now: 0,
        }
    }

    pub fn state(&self) -> ConnectionState {
        self.phase
    }

    /// True once nothing more can come out of this connection except what
    /// is still to be drained (tunnel, gave up or closed).
    pub fn is_finished(&self) -> bool {
        self.phase != ConnectionState::Active
    }

    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    fn sync_stats(&mut self) {
        self.stats.dropped_exchanges = self.out.dropped;
    }

    /// Requests waiting for a response (stored ones and placeholders).
    pub fn pending_requests(&self) -> usize {
        usize::try_from(self.pending.requests()).unwrap_or(usize::MAX)
    }

    /// Entries in the pending queue (at most [`MAX_PENDING_ENTRIES`]).
    pub fn pending_entries(&self) -> usize {
        self.pending.len()
    }

    /// Bytes currently held in partial-head buffers (at most 2 × [`MAX_HEAD_SIZE`]).
    pub fn buffered_bytes(&self) -> usize {
        [&self.req, &self.resp]
            .iter()
            .map(|s| match &s.state {
                SideState::Head { buf, .. } => buf.len(),
                _ => 0,
            })
            .sum()
    }

    /// Completed exchanges, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Exchange> + '_ {
        self.out.drain()
    }

    /// Process one syscall's payload.
    ///
    /// `captured` is the prefix of the syscall's bytes that was captured,
    /// `total_len` the syscall's real byte count (bytes past the capture are
    /// counted, not seen). If `captured` is longer than `total_len`, its
    /// length is used as the total.
    pub fn on_data(&mut self, dir: Direction, captured: &[u8], total_len: u64, ts_ns: u64) {
        if !self.active() {
            return;
        }
        self.now = ts_ns;
        let call = Syscall::new(captured, total_len);
        if call.is_empty() {
            return;
        }
        let uncaptured = call.uncaptured;
        if let SideState::Resync { open, chunked_tail } = self.side(dir).state
            && !self.resync_start(dir, captured, uncaptured, open, chunked_tail)
        {
            return;
        }
        let mut data = captured;
        while !data.is_empty() && self.active() {
            let state = std::mem::replace(&mut self.side_mut(dir).state, SideState::Idle);
            let (next, used) = match state {
                SideState::Idle => self.idle(dir, data, uncaptured),
                SideState::Head { buf, start_ts } => self.head_more(dir, buf, start_ts, data, uncaptured),
                SideState::Body(f) => self.body(dir, f, data),
                SideState::Resync { open, .. } => {
                    if open {
                        self.add_bytes(dir, data.len() as u64);
                    }
                    (state, data.len())
                }
            };
            self.side_mut(dir).state = next;
            data = data.get(used..).unwrap_or_default();
        }
        if uncaptured > 0 && self.active() {
            self.tail(dir, uncaptured);
        }
        if !self.active() {
            self.release();
        }
    }

    /// The connection closed: finish a close-delimited response, report
    /// requests without a response ([`ExchangeError::NoResponse`]) and
    /// responses cut short ([`ExchangeError::ResponseIncomplete`]).
    /// `ts_ns` is accepted for symmetry; no reported timestamp uses it.
    pub fn on_close(&mut self, _ts_ns: u64) {
        if self.active() {
            let state = std::mem::replace(&mut self.resp.state, SideState::Idle);
            match state {
                SideState::Body(Framing::UntilClose) => self.complete_response(None),
                SideState::Body(_) => self.complete_response(Some(ExchangeError::ResponseIncomplete)),
                SideState::Head { start_ts, .. } => {
                    self.cur_resp.get_or_insert_with(|| RespProgress::new(start_ts));
                    self.complete_response(Some(ExchangeError::ResponseIncomplete));
                }
                SideState::Resync { open: true, .. } => self.complete_response(None),
                SideState::Idle | SideState::Resync { .. } => {
                    if self.cur_resp.is_some() {
                        self.complete_response(Some(ExchangeError::ResponseIncomplete));
                    }
                }
            }
            self.flush_pending(ExchangeError::NoResponse);
        }
        self.phase = ConnectionState::Closed;
        self.release();
    }

    // ---- plumbing -------------------------------------------------------

    fn active(&self) -> bool {
        self.phase == ConnectionState::Active
    }

    fn side(&self, dir: Direction) -> &Side {
        match dir {
            Direction::ClientToServer => &self.req,
            Direction::ServerToClient => &self.resp,
        }
    }

    fn side_mut(&mut self, dir: Direction) -> &mut Side {
        match dir {
            Direction::ClientToServer => &mut self.req,
            Direction::ServerToClient => &mut self.resp,
        }
    }

    fn classify(dir: Direction, buf: &[u8]) -> Detect {
        match dir {
            Direction::ClientToServer => http1::classify_request(buf),
            Direction::ServerToClient => http1::classify_response(buf),
        }
    }

    /// A complete, valid head at the start of `buf` in one pass, or `None`
    /// (incomplete or invalid: the general path decides).
    fn parse_fast(dir: Direction, buf: &[u8]) -> Option<(AnyHead, usize)> {
        match dir {
            Direction::ClientToServer => http1::parse_request_fast(buf).map(|(h, n)| (AnyHead::Req(h), n)),
            Direction::ServerToClient => http1::parse_response_fast(buf).map(|(h, n)| (AnyHead::Resp(h), n)),
        }
    }

    fn parse(dir: Direction, head: &[u8]) -> Result<AnyHead, ParseError> {
        match dir {
            Direction::ClientToServer => http1::parse_request_complete(head).map(AnyHead::Req),
            Direction::ServerToClient => http1::parse_response_complete(head).map(AnyHead::Resp),
        }
    }

    /// Free buffers and queues once nothing more will be parsed.
    fn release(&mut self) {
        self.count_lost_pending();
        self.req.state = SideState::Idle;
        self.resp.state = SideState::Idle;
        self.pending.clear();
        self.cur_req = None;
        self.cur_resp = None;
        self.stats.orphan_responses += self.unpaired.len() as u64;
        self.unpaired.clear();
    }

    fn give_up(&mut self, dir: Direction, reason: GiveUpReason) {
        if !self.active() {
            return;
        }
        self.cur_resp = None;
        self.flush_pending(ExchangeError::ParserGaveUp);
        self.phase = ConnectionState::GaveUp { direction: dir, reason };
    }

    fn emit(&mut self, mut ex: Exchange) {
        if self.stats.pairing_lost != 0 {
            ex.approximate = true;
        }
        self.out.push(ex);
        self.sync_stats();
    }

    fn exchange(r: PendingRequest, resp: Option<RespProgress>, error: Option<ExchangeError>) -> Exchange {
        let (status, ts, end, bytes, interim, approx, rerr) = match resp {
            Some(p) => (p.status, p.ts, Some(p.last_ts), p.bytes, p.interim, p.approximate, p.error),
            None => (None, None, None, 0, 0, false, None),
        };
        Exchange {
            method: r.method,
            target: r.target,
            target_truncated: r.target_truncated,
            host: r.host,
            version: r.version,
            status,
            request_ts_ns: r.ts,
            response_ts_ns: ts,
            response_end_ts_ns: end,
            request_bytes: r.bytes,
            response_bytes: bytes,
            interim_responses: interim,
            approximate: r.approximate || approx,
            error: error.or(rerr),
        }
    }

    /// Emit every stored pending request with `err` and forget placeholders
    /// (lost requests are counted).
    fn flush_pending(&mut self, err: ExchangeError) {
        while let Some(p) = self.pending.pop_front() {
            match p {
                Pending::Req(r) => {
                    let ex = Self::exchange(r, None, Some(err));
                    self.emit(ex);
                }
                Pending::Lost(n) => self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(n),
                Pending::Placeholder(_) => {}
            }
        }
        self.cur_req = None;
    }

    fn add_bytes(&mut self, dir: Direction, n: u64) {
        match dir {
            Direction::ClientToServer => {
                if let Some(r) = self.current_request() {
                    r.bytes = r.bytes.saturating_add(n);
                }
            }
            Direction::ServerToClient => {
                let now = self.now;
                if let Some(r) = self.cur_resp.as_mut() {
                    r.bytes = r.bytes.saturating_add(n);
                    r.last_ts = now;
                }
            }
        }
    }

    fn mark_approximate(&mut self, dir: Direction) {
        self.stats.resyncs += 1;
        match dir {
            Direction::ClientToServer => {
                if let Some(r) = self.current_request() {
                    r.approximate = true;
                }
            }
            Direction::ServerToClient => {
                if let Some(r) = self.cur_resp.as_mut() {
                    r.approximate = true;
                }
            }
        }
    }

    fn current_request(&mut self) -> Option<&mut PendingRequest> {
        let seq = self.cur_req?;
        self.pending.iter_mut().rev().find_map(|p| match p {
            Pending::Req(r) if r.seq == seq => Some(r),
            _ => None,
        })
    }

    fn push_placeholder(&mut self) {
        self.push_run(false, 1);
    }

    /// Appends a run of unseen (`lost == false`) or lost requests to the
    /// pending queue, or gives the connection up when the queue already
    /// holds [`MAX_PENDING_ENTRIES`] entries.
    pub(super) fn push_run(&mut self, lost: bool, n: u64) {
        if !self.pending.push_run(lost, n) {
            if lost {
                self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(n);
            }
            self.give_up(Direction::ClientToServer, GiveUpReason::TooManyPending);
        }
    }

    /// Queue a request; becomes the current request if stored.
    fn push_request(&mut self, r: PendingRequest) {
        if !self.pending.has_room() {
            self.stats.pending_overflow += 1;
            self.cur_req = None;
            self.push_placeholder();
        } else {
            self.cur_req = Some(r.seq);
            self.pending.push_req(r);
        }
    }

    fn new_request(&mut self, head: RequestHead, bytes: u64, ts: u64, approximate: bool) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.req.sync_skips = None;
        self.push_request(PendingRequest {
            seq,
            method: head.method,
            target: head.target,
            target_truncated: head.target_truncated,
            host: head.host,
            version: head.version,
            ts,
            bytes,
            approximate,
        });
    }

    /// The current request's last byte has been seen.
    fn finish_request(&mut self) {
        let Some(seq) = self.cur_req.take() else { return };
        // Pair with a response that arrived before the request (reordering).
        while let Some(u) = self.unpaired.front() {
            let Some(Pending::Req(r)) = self.pending.front() else { break };
            if r.seq != seq {
                break;
            }
            if r.ts <= u.start_ts {
                let (Some(u), Some(r)) = (self.unpaired.pop_front(), self.pending.pop_req()) else {
                    break;
                };
                let ex = Self::exchange(r, Some(u), None);
                self.emit(ex);
                break;
            }
            self.unpaired.pop_front();
            self.stats.orphan_responses += 1;
        }
    }

    /// The current response's last byte has been seen: pair it.
    fn complete_response(&mut self, err: Option<ExchangeError>) {
        let Some(mut resp) = self.cur_resp.take() else { return };
        if err.is_some() {
            resp.error = err;
        }
        match self.pending.front() {
            Some(Pending::Placeholder(_) | Pending::Lost(_)) => self.answer_uncounted_front(),
            Some(Pending::Req(r)) if r.ts <= resp.start_ts => {
                if let Some(r) = self.pending.pop_req() {
                    if self.cur_req == Some(r.seq) {
                        // Early response while the request body is still
                        // arriving: the rest of that body is not counted.
                        self.cur_req = None;
                    }
                    let ex = Self::exchange(r, Some(resp), None);
                    self.emit(ex);
                }
            }
            Some(Pending::Req(_)) => self.stats.orphan_responses += 1,
            None => {
                if self.unpaired.len() >= MAX_UNPAIRED_RESPONSES {
                    self.unpaired.pop_front();
                    self.stats.orphan_responses += 1;
                }
                self.unpaired.push_back(resp);
            }
        }
    }

    /// A response (seen or lost) answers the placeholder at the front of
    /// the queue: counted as an orphan (unseen request) or a lost exchange.
    fn answer_uncounted_front(&mut self) {
        match self.pending.answer_run() {
            Some(Uncounted::Lost) => self.stats.lost_exchanges += 1,
            Some(Uncounted::Unseen) => self.stats.orphan_responses += 1,
            None => {}
        }
    }

    fn finish(&mut self, dir: Direction) {
        match dir {
            Direction::ClientToServer => self.finish_request(),
            Direction::ServerToClient => self.complete_response(None),
        }
    }

    fn front_method_is(&self, m: &Method) -> bool {
        matches!(self.pending.front(), Some(Pending::Req(r)) if r.method == *m)
    }

    fn enter_tunnel(&mut self) {
        self.phase = ConnectionState::Tunnel;
    }
}
