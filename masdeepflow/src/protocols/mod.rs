//! Application protocols from captured payloads: one parser per connection
//! (`masdeepflow-proto`), of the protocol the kernel detected on the
//! connection's first payload (HTTP/1.x or MySQL), fed in the order the
//! kernel saw the syscalls and driven alike through [`ConnectionParser`].
//! Bounded: at most [`CONNECTIONS_MAX`] connections; each is freed when its
//! `tcp_close` arrives or when the kernel no longer tracks it.
//!
//! Payload records the ring buffer dropped arrive as counts with the
//! connection's next record (or its close); the parser then reports every
//! exchange with its own response or counts it in [`Tracker::lost`], never
//! both.
//!
//! What each protocol's exchanges become: `http.rs`, `mysql.rs`.
use std::collections::HashSet;

use rustc_hash::FxHashMap;

use masdeepflow_common::{
    ProcessInfo,
    payload::{PROTO_HTTP, PROTO_MYSQL_MIDSTREAM, PayloadLoss},
};
use masdeepflow_proto::{ConnectionParser, ConnectionState, Direction, Http1Connection, mysql::MysqlConnection};

use crate::{
    decode::Payload,
    event::{Connection, Event, Role, Time},
};

mod http;
mod mysql;

pub use mysql::MysqlOptions;

/// Most connections with parser state at once (the kernel tracks as many).
pub const CONNECTIONS_MAX: usize = 65536;

/// The protocols parsed, as `agent_stats` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Mysql,
}

impl Protocol {
    /// From the kernel's `PROTO_*` (anything but HTTP is MySQL: the kernel
    /// captures no other).
    pub fn from_kernel(protocol: u32) -> Protocol {
        if protocol == PROTO_HTTP { Protocol::Http } else { Protocol::Mysql }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Boxed: the parsers are a few hundred bytes (HTTP) to most of a
/// kilobyte (MySQL), and the table holds up to 65536.
enum Parser {
    Http(Box<Http1Connection>),
    Mysql(Box<MysqlConnection>),
}

/// What the tracker keeps of one connection besides its parser.
struct Side {
    conn: Connection,
    role: Role,
    /// The process that sent (client) or received (server) the last request
    /// bytes, as the kernel reported it (strings are made per exchange).
    process: Option<ProcessInfo>,
    /// The TLS library whose calls returned the connection's plaintext
    /// (None: its syscalls' bytes, in the clear).
    tls: Option<&'static str>,
}

struct Tracked {
    parser: Parser,
    side: Side,
    /// Absent from the kernel's live sockets at the last check.
    missing: bool,
    /// The parser's `lost_exchanges` already added to the tracker's.
    lost_counted: u64,
    /// The MySQL parser's counters already added to the tracker's.
    mysql_counted: MysqlCounters,
    /// The HTTP parser's counters already added to the tracker's.
    http_counted: HttpCounters,
}

/// Counters of the MySQL parsers, summed over connections (`agent_stats.mysql`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MysqlCounters {
    /// Prepared statements evicted from a connection's full table.
    pub statements_evicted: u64,
    /// `COM_STMT_*` commands naming a statement the table did not hold.
    pub unknown_statements: u64,
}

/// Counters of the HTTP parsers, summed over connections (`agent_stats.http`):
/// exchanges neither reported nor lost to a full ring buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    /// Requests inferred in bytes past the capture (each run of them counts
    /// one: how many a run held is unknown).
    pub unseen_requests: u64,
    /// Responses that matched no request seen.
    pub orphan_responses: u64,
    /// Requests not reported because a connection already had 32 waiting
    /// for their responses (pipelining deeper than that).
    pub pending_overflow: u64,
    /// Connections whose later exchanges are `approximate` because
    /// uncaptured bytes may have hidden pipelined messages.
    pub pairing_lost: u64,
    /// Connections the parser gave up on (bytes that were not HTTP/1.x, or
    /// a pending queue past its bound): their later traffic is not parsed.
    pub gave_up: u64,
}

impl Tracked {
    fn protocol(&self) -> Protocol {
        match self.parser {
            Parser::Http(_) => Protocol::Http,
            Parser::Mysql(_) => Protocol::Mysql,
        }
    }
}

#[derive(Default)]
pub struct Tracker {
    conns: FxHashMap<u64, Tracked>,
    /// Connections per protocol.
    counts: [usize; 2],
    mysql: MysqlOptions,
    /// Payloads dropped because the table was full.
    pub untracked: u64,
    /// Exchanges not reported because a payload record of their request or
    /// response was lost (or the connection's close with news of it), per
    /// protocol.
    lost: [u64; 2],
    mysql_counters: MysqlCounters,
    http_counters: HttpCounters,
}

/// The request and response directions of a loss: (starts, bytes) each.
fn oriented(loss: &PayloadLoss, role: Role) -> [(Direction, u64, u64); 2] {
    let sent_requests = role == Role::Client;
    let (req, resp) = if sent_requests {
        ((loss.sent_starts, loss.sent_bytes), (loss.received_starts, loss.received_bytes))
    } else {
        ((loss.received_starts, loss.received_bytes), (loss.sent_starts, loss.sent_bytes))
    };
    [(Direction::ClientToServer, req.0, req.1), (Direction::ServerToClient, resp.0, resp.1)]
}

/// One payload record (after the losses it reports) into a parser.
fn feed<P: ConnectionParser>(parser: &mut P, p: &Payload<'_>, dir: Direction) {
    if !p.loss.is_empty() {
        for (dir, starts, bytes) in oriented(&p.loss, p.role()) {
            parser.on_lost(dir, starts, bytes, p.time.0);
        }
    }
    parser.on_data(dir, p.data, p.total_len, p.time.0);
}

/// The connection closed, after the losses its close carries.
fn close<P: ConnectionParser>(parser: &mut P, loss: &PayloadLoss, role: Role, time: Time) {
    for (dir, starts, bytes) in oriented(loss, role) {
        parser.on_lost(dir, starts, bytes, time.0);
    }
    parser.on_close(time.0);
}

impl Tracker {
    pub fn new(mysql: MysqlOptions) -> Tracker {
        Tracker { mysql, ..Tracker::default() }
    }

    /// Connections with parser state, of one protocol.
    pub fn len(&self, protocol: Protocol) -> usize {
        self.counts[protocol.index()]
    }

    /// Exchanges counted lost so far, of one protocol.
    pub fn lost(&self, protocol: Protocol) -> u64 {
        self.lost[protocol.index()]
    }

    /// The MySQL parsers' counters so far.
    pub fn mysql_counters(&self) -> MysqlCounters {
        self.mysql_counters
    }

    /// The HTTP parsers' counters so far.
    pub fn http_counters(&self) -> HttpCounters {
        self.http_counters
    }

    pub fn on_payload(&mut self, p: Payload<'_>, out: &mut Vec<Event>) {
        if !self.conns.contains_key(&p.conn_id) && self.conns.len() >= CONNECTIONS_MAX {
            self.untracked += 1;
            return;
        }
        let t = self.conns.entry(p.conn_id).or_insert_with(|| {
            let protocol = Protocol::from_kernel(p.protocol);
            self.counts[protocol.index()] += 1;
            let parser = match protocol {
                Protocol::Http => Parser::Http(Box::default()),
                Protocol::Mysql => {
                    // A connection adopted when seen to speak MySQL (opened
                    // before the agent started) is parsed from the middle.
                    let mid_stream = p.protocol == PROTO_MYSQL_MIDSTREAM;
                    Parser::Mysql(Box::new(MysqlConnection::with_config(self.mysql.parser_config(mid_stream))))
                }
            };
            Tracked {
                parser,
                side: Side { conn: p.conn(), role: p.role(), process: None, tls: p.tls },
                missing: false,
                lost_counted: 0,
                mysql_counted: MysqlCounters::default(),
                http_counted: HttpCounters::default(),
            }
        });
        // The client sends requests; the server receives them.
        let to_server = p.sent == (p.role() == Role::Client);
        let dir = if to_server { Direction::ClientToServer } else { Direction::ServerToClient };
        if to_server {
            t.side.process = Some(p.process);
        }
        match &mut t.parser {
            Parser::Http(h) => feed(h.as_mut(), &p, dir),
            Parser::Mysql(m) => feed(m.as_mut(), &p, dir),
        }
        drain(t, &self.mysql, out);
        self.lost[t.protocol().index()] += settle_lost(t);
        settle_counters(t, &mut self.mysql_counters, &mut self.http_counters);
    }

    /// The connection closed: requests still waiting are reported, after
    /// the losses its close carries. `protocol` is the kernel's for the
    /// connection.
    pub fn on_close(&mut self, conn_id: u64, time: Time, role: Role, loss: &PayloadLoss, protocol: u32, out: &mut Vec<Event>) {
        match self.conns.remove(&conn_id) {
            Some(mut t) => {
                self.counts[t.protocol().index()] -= 1;
                match &mut t.parser {
                    Parser::Http(h) => close(h.as_mut(), loss, role, time),
                    Parser::Mysql(m) => close(m.as_mut(), loss, role, time),
                }
                drain(&mut t, &self.mysql, out);
                self.lost[t.protocol().index()] += settle_lost(&mut t);
                settle_counters(&mut t, &mut self.mysql_counters, &mut self.http_counters);
            }
            // Every record of the connection was lost: its requests are.
            None => self.lost[Protocol::from_kernel(protocol).index()] += oriented(loss, role)[0].1,
        }
    }

    /// Forgets connections the kernel no longer tracks (their close was
    /// lost): those absent from two consecutive checks, since one that just
    /// closed may still have records in the ring buffer.
    /// Their waiting requests count as lost.
    pub fn retain_live(&mut self, live: &HashSet<u64>) {
        let (lost, counts, mysql, http) = (&mut self.lost, &mut self.counts, &mut self.mysql_counters, &mut self.http_counters);
        self.conns.retain(|id, t| {
            let gone = !live.contains(id);
            let keep = !(gone && t.missing);
            t.missing = gone;
            if !keep {
                match &mut t.parser {
                    Parser::Http(h) => h.abandon(),
                    Parser::Mysql(m) => m.abandon(),
                }
                lost[t.protocol().index()] += settle_lost(t);
                settle_counters(t, mysql, http);
                counts[t.protocol().index()] -= 1;
            }
            keep
        });
    }
}

/// Exchanges the parser counted as lost since the last call.
fn settle_lost(t: &mut Tracked) -> u64 {
    let total = match &t.parser {
        Parser::Http(h) => ConnectionParser::lost_exchanges(h.as_ref()),
        Parser::Mysql(m) => ConnectionParser::lost_exchanges(m.as_ref()),
    };
    let new = total.saturating_sub(t.lost_counted);
    t.lost_counted = total;
    new
}

/// Adds what the connection's parser counted since the last call to the
/// totals of its protocol.
fn settle_counters(t: &mut Tracked, mysql: &mut MysqlCounters, http: &mut HttpCounters) {
    match &t.parser {
        Parser::Mysql(m) => {
            let s = m.stats();
            mysql.statements_evicted += s.statements_evicted.saturating_sub(t.mysql_counted.statements_evicted);
            mysql.unknown_statements += s.unknown_statements.saturating_sub(t.mysql_counted.unknown_statements);
            t.mysql_counted = MysqlCounters { statements_evicted: s.statements_evicted, unknown_statements: s.unknown_statements };
        }
        Parser::Http(h) => {
            let s = h.stats();
            http.unseen_requests += s.unseen_requests.saturating_sub(t.http_counted.unseen_requests);
            http.orphan_responses += s.orphan_responses.saturating_sub(t.http_counted.orphan_responses);
            http.pending_overflow += s.pending_overflow.saturating_sub(t.http_counted.pending_overflow);
            http.pairing_lost += s.pairing_lost.saturating_sub(t.http_counted.pairing_lost);
            let gave_up = u64::from(matches!(h.state(), ConnectionState::GaveUp { .. }));
            http.gave_up += gave_up.saturating_sub(t.http_counted.gave_up);
            t.http_counted = HttpCounters {
                unseen_requests: s.unseen_requests,
                orphan_responses: s.orphan_responses,
                pending_overflow: s.pending_overflow,
                pairing_lost: s.pairing_lost,
                gave_up,
            };
        }
    }
}

fn drain(t: &mut Tracked, mysql: &MysqlOptions, out: &mut Vec<Event>) {
    let Tracked { parser, side, .. } = t;
    match parser {
        Parser::Http(h) => {
            for x in h.drain() {
                out.push(http::to_event(x, side));
            }
        }
        Parser::Mysql(m) => {
            for x in m.drain() {
                out.push(mysql::to_event(x, side, mysql));
            }
        }
    }
}

#[cfg(test)]
mod tests;
