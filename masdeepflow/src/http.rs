//! HTTP/1.x exchanges from captured payloads: one parser per connection
//! (`masdeepflow-proto`), fed in the order the kernel saw the syscalls.
//! Bounded: at most [`HTTP_CONNECTIONS_MAX`] connections; each is freed
//! when its `tcp_close` arrives or when the kernel no longer tracks it.
//!
//! Payload records the ring buffer dropped arrive as counts with the
//! connection's next record (or its close); the parser then reports every
//! exchange with its own response or counts it in
//! [`HttpTracker::lost_exchanges`], never both.
use std::collections::HashSet;

use rustc_hash::FxHashMap;

use masdeepflow_common::{ProcessInfo, payload::PayloadLoss};
use masdeepflow_proto::{Direction, Exchange, ExchangeError, Http1Connection};

use crate::{
    decode::{self, Payload},
    event::{Connection, Event, HttpExchange, Role, Time},
};

/// Most connections with parser state at once (the kernel tracks as many).
pub const HTTP_CONNECTIONS_MAX: usize = 65536;

struct Tracked {
    parser: Http1Connection,
    conn: Connection,
    role: Role,
    /// The process that sent (client) or received (server) the last request
    /// bytes, as the kernel reported it (strings are made per exchange).
    process: Option<ProcessInfo>,
    /// Absent from the kernel's live sockets at the last check.
    missing: bool,
    /// The parser's `lost_exchanges` already added to the tracker's.
    lost_counted: u64,
}

#[derive(Default)]
pub struct HttpTracker {
    conns: FxHashMap<u64, Tracked>,
    /// Payloads dropped because the table was full.
    pub untracked: u64,
    /// Exchanges not reported because a payload record of their request or
    /// response was lost (or the connection's close with news of it).
    pub lost_exchanges: u64,
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

impl HttpTracker {
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn on_payload(&mut self, p: Payload<'_>, out: &mut Vec<Event>) {
        if !self.conns.contains_key(&p.conn_id) && self.conns.len() >= HTTP_CONNECTIONS_MAX {
            self.untracked += 1;
            return;
        }
        let t = self.conns.entry(p.conn_id).or_insert_with(|| Tracked {
            parser: Http1Connection::new(),
            conn: p.conn(),
            role: p.role(),
            process: None,
            missing: false,
            lost_counted: 0,
        });
        if !p.loss.is_empty() {
            for (dir, starts, bytes) in oriented(&p.loss, p.role()) {
                t.parser.on_lost(dir, starts, bytes, p.time.0);
            }
        }
        // The client sends requests; the server receives them.
        let to_server = p.sent == (p.role() == Role::Client);
        let dir = if to_server { Direction::ClientToServer } else { Direction::ServerToClient };
        if to_server {
            t.process = Some(p.process);
        }
        t.parser.on_data(dir, p.data, p.total_len, p.time.0);
        drain(t, out);
        self.lost_exchanges += settle_lost(t);
    }

    /// The connection closed: requests still waiting are reported, after
    /// the losses its close carries.
    pub fn on_close(&mut self, conn_id: u64, time: Time, role: Role, loss: &PayloadLoss, out: &mut Vec<Event>) {
        match self.conns.remove(&conn_id) {
            Some(mut t) => {
                for (dir, starts, bytes) in oriented(loss, role) {
                    t.parser.on_lost(dir, starts, bytes, time.0);
                }
                t.parser.on_close(time.0);
                drain(&mut t, out);
                self.lost_exchanges += settle_lost(&mut t);
            }
            // Every record of the connection was lost: its requests are.
            None => self.lost_exchanges += oriented(loss, role)[0].1,
        }
    }

    /// Forgets connections the kernel no longer tracks (their close was
    /// lost): those absent from two consecutive checks, since one that just
    /// closed may still have records in the ring buffer.
    /// Their waiting requests count as lost.
    pub fn retain_live(&mut self, live: &HashSet<u64>) {
        let mut lost = 0;
        self.conns.retain(|id, t| {
            let gone = !live.contains(id);
            let keep = !(gone && t.missing);
            t.missing = gone;
            if !keep {
                t.parser.abandon();
                lost += settle_lost(t);
            }
            keep
        });
        self.lost_exchanges += lost;
    }
}

/// Exchanges the parser counted as lost since the last call.
fn settle_lost(t: &mut Tracked) -> u64 {
    let total = t.parser.stats().lost_exchanges;
    let new = total.saturating_sub(t.lost_counted);
    t.lost_counted = total;
    new
}

fn drain(t: &mut Tracked, out: &mut Vec<Event>) {
    let Tracked { parser, conn, role, process, .. } = t;
    for x in parser.drain() {
        out.push(to_event(x, conn, *role, process));
    }
}

fn error_name(e: ExchangeError) -> &'static str {
    match e {
        ExchangeError::NoResponse => "no_response",
        ExchangeError::ResponseIncomplete => "response_incomplete",
        ExchangeError::ResponseHeadNotCaptured => "response_head_not_captured",
        ExchangeError::ParserGaveUp => "parser_gave_up",
        _ => "unknown",
    }
}

fn to_event(x: Exchange, conn: &Connection, role: Role, process: &Option<ProcessInfo>) -> Event {
    let latency_ns = x.latency_ns();
    Event::Http(HttpExchange {
        time: Time(x.request_ts_ns),
        process: process.as_ref().map(decode::process),
        role,
        conn: *conn,
        method: x.method,
        path: x.target,
        path_truncated: x.target_truncated,
        host: x.host,
        status: x.status,
        latency_ns,
        request_bytes: x.request_bytes,
        response_bytes: x.response_bytes,
        version_minor: x.version,
        error: x.error.map(error_name),
        approximate: x.approximate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::json::tests::event_value;
    use masdeepflow_common::tcp::{AF_INET, Endpoints, ROLE_CLIENT, ROLE_SERVER};

    fn payload<'a>(conn_id: u64, role: Role, sent: bool, data: &'a [u8], total: u64, t: u64) -> Payload<'a> {
        Payload {
            time: Time(t),
            process: ProcessInfo { cgroup_id: 0, pid: 7, tid: 7, ppid: 1, uid: 0, comm: *b"x\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0" },
            endpoints: Endpoints {
                family: AF_INET,
                sport: 40000,
                dport: 80,
                _pad: 0,
                saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            raw_role: if role == Role::Client { ROLE_CLIENT } else { ROLE_SERVER },
            conn_id,
            sent,
            total_len: total,
            data,
            loss: PayloadLoss::default(),
        }
    }

    #[test]
    fn server_side_exchange_and_unanswered_request() {
        let mut h = HttpTracker::default();
        let mut out = Vec::new();
        let req = b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        h.on_payload(payload(1, Role::Server, false, req, req.len() as u64, 100), &mut out);
        let resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\n";
        h.on_payload(payload(1, Role::Server, true, resp, resp.len() as u64 + 10, 350), &mut out);
        h.on_payload(payload(1, Role::Server, false, req, req.len() as u64, 400), &mut out);
        assert_eq!(out.len(), 1);
        let json = event_value(&out[0]);
        assert_eq!(json["method"], "GET");
        assert_eq!(json["path"], "/a?b=1");
        assert_eq!(json["host"], "h");
        assert_eq!(json["status"], 404);
        assert_eq!(json["latency_ns"], 250);
        assert_eq!(json["request_bytes"], req.len());
        assert_eq!(json["response_bytes"], resp.len() + 10);
        assert_eq!(json["role"], "server");
        assert_eq!(json["error"], serde_json::Value::Null);
        h.on_close(1, Time(500), Role::Server, &PayloadLoss::default(), &mut out);
        assert_eq!(out.len(), 2);
        let json = event_value(&out[1]);
        assert_eq!(json["status"], serde_json::Value::Null);
        assert_eq!(json["error"], "no_response");
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn client_side_direction_and_pruning() {
        let mut h = HttpTracker::default();
        let mut out = Vec::new();
        let req = b"HEAD / HTTP/1.0\r\n\r\n";
        h.on_payload(payload(2, Role::Client, true, req, req.len() as u64, 10), &mut out);
        let resp = b"HTTP/1.0 200 OK\r\nContent-Length: 99\r\n\r\n";
        h.on_payload(payload(2, Role::Client, false, resp, resp.len() as u64, 20), &mut out);
        assert_eq!(out.len(), 1);
        let json = event_value(&out[0]);
        assert_eq!((json["method"].as_str(), json["status"].as_u64(), json["version"].as_str()), (Some("HEAD"), Some(200), Some("1.0")));
        assert_eq!(json["process"]["pid"], 7);
        h.on_payload(payload(3, Role::Client, true, req, req.len() as u64, 30), &mut out);
        assert_eq!(h.len(), 2);
        h.retain_live(&HashSet::from([3]));
        assert_eq!(h.len(), 2, "kept for one more check");
        h.retain_live(&HashSet::from([3]));
        assert_eq!(h.len(), 1);
    }

    /// Losses arrive as counts with the next record or the close; each
    /// exchange is reported or counted lost, once.
    #[test]
    fn lost_payloads_are_counted_per_exchange() {
        let mut h = HttpTracker::default();
        let mut out = Vec::new();
        let req = b"GET /1 HTTP/1.1\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let n = |b: &[u8]| b.len() as u64;
        // Server side: request 1 lost, its response is delivered with the count.
        let mut p = payload(1, Role::Server, true, resp, n(resp), 20);
        p.loss = PayloadLoss { received_starts: 1, received_bytes: n(req), ..Default::default() };
        h.on_payload(p, &mut out);
        assert_eq!((out.len(), h.lost_exchanges), (0, 1));
        // Request 2 delivered, its response lost; the close says so.
        h.on_payload(payload(1, Role::Server, false, req, n(req), 30), &mut out);
        let loss = PayloadLoss { sent_starts: 1, sent_bytes: n(resp), ..Default::default() };
        h.on_close(1, Time(50), Role::Server, &loss, &mut out);
        assert_eq!((out.len(), h.lost_exchanges), (0, 2), "not reported as no_response");
        // A client connection whose every record was lost: its close counts them.
        let loss = PayloadLoss { sent_starts: 3, received_starts: 2, sent_bytes: 3 * n(req), received_bytes: 2 * n(resp) };
        h.on_close(2, Time(60), Role::Client, &loss, &mut out);
        assert_eq!(h.lost_exchanges, 5);
        // A connection whose close was lost: its waiting request counts.
        h.on_payload(payload(3, Role::Client, true, req, n(req), 70), &mut out);
        h.retain_live(&HashSet::new());
        h.retain_live(&HashSet::new());
        assert_eq!((out.len(), h.lost_exchanges, h.len()), (0, 6, 0));
    }
}
