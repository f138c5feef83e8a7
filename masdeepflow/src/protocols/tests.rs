//! The tracker with both parsers: HTTP exchanges made up, MySQL sessions
//! recorded from a real MariaDB (`masdeepflow-proto/tests/fixtures/mysql`)
//! replayed from each side.
use super::*;
use crate::sink::json::tests::event_value;
use masdeepflow_common::{
    payload::PROTO_MYSQL,
    tcp::{AF_INET, Endpoints, ROLE_CLIENT, ROLE_SERVER},
};
use serde_json::Value;

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
        protocol: PROTO_HTTP,
        tls: None,
    }
}

#[test]
fn server_side_exchange_and_unanswered_request() {
    let mut h = Tracker::default();
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
    h.on_close(1, Time(500), Role::Server, &PayloadLoss::default(), PROTO_HTTP, &mut out);
    assert_eq!(out.len(), 2);
    let json = event_value(&out[1]);
    assert_eq!(json["status"], serde_json::Value::Null);
    assert_eq!(json["error"], "no_response");
    assert_eq!(h.len(Protocol::Http), 0);
}

#[test]
fn client_side_direction_and_pruning() {
    let mut h = Tracker::default();
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
    assert_eq!(h.len(Protocol::Http), 2);
    h.retain_live(&HashSet::from([3]));
    assert_eq!(h.len(Protocol::Http), 2, "kept for one more check");
    h.retain_live(&HashSet::from([3]));
    assert_eq!(h.len(Protocol::Http), 1);
}

/// Losses arrive as counts with the next record or the close; each
/// exchange is reported or counted lost, once.
#[test]
fn lost_payloads_are_counted_per_exchange() {
    let mut h = Tracker::default();
    let mut out = Vec::new();
    let req = b"GET /1 HTTP/1.1\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let n = |b: &[u8]| b.len() as u64;
    // Server side: request 1 lost, its response is delivered with the count.
    let mut p = payload(1, Role::Server, true, resp, n(resp), 20);
    p.loss = PayloadLoss { received_starts: 1, received_bytes: n(req), ..Default::default() };
    h.on_payload(p, &mut out);
    assert_eq!((out.len(), h.lost(Protocol::Http)), (0, 1));
    // Request 2 delivered, its response lost; the close says so.
    h.on_payload(payload(1, Role::Server, false, req, n(req), 30), &mut out);
    let loss = PayloadLoss { sent_starts: 1, sent_bytes: n(resp), ..Default::default() };
    h.on_close(1, Time(50), Role::Server, &loss, PROTO_HTTP, &mut out);
    assert_eq!((out.len(), h.lost(Protocol::Http)), (0, 2), "not reported as no_response");
    // A client connection whose every record was lost: its close counts them.
    let loss = PayloadLoss { sent_starts: 3, received_starts: 2, sent_bytes: 3 * n(req), received_bytes: 2 * n(resp) };
    h.on_close(2, Time(60), Role::Client, &loss, PROTO_HTTP, &mut out);
    assert_eq!(h.lost(Protocol::Http), 5);
    // A connection whose close was lost: its waiting request counts.
    h.on_payload(payload(3, Role::Client, true, req, n(req), 70), &mut out);
    h.retain_live(&HashSet::new());
    h.retain_live(&HashSet::new());
    assert_eq!((out.len(), h.lost(Protocol::Http), h.len(Protocol::Http)), (0, 6, 0));
}

/// A recorded session: (client to server, timestamp, bytes) per chunk.
fn recording(text: &str) -> Vec<(bool, u64, Vec<u8>)> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split(' ');
            let to_server = match it.next()? {
                "C" => true,
                "S" => false,
                _ => return None,
            };
            let ts: u64 = it.next()?.parse().ok()?;
            let hex = it.next().unwrap_or("");
            let bytes = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
            Some((to_server, ts, bytes))
        })
        .collect()
}

const SYSBENCH_PS: &str = include_str!("../../../masdeepflow-proto/tests/fixtures/mysql/sysbench_ps.rec");
const PYMYSQL: &str = include_str!("../../../masdeepflow-proto/tests/fixtures/mysql/pymysql_session.rec");

/// Replays a session on connection `conn_id` as seen from `role`, then closes it.
fn replay(t: &mut Tracker, text: &str, conn_id: u64, role: Role, out: &mut Vec<Event>) {
    for (to_server, ts, bytes) in recording(text) {
        let sent = to_server == (role == Role::Client);
        let mut p = payload(conn_id, role, sent, &bytes, bytes.len() as u64, 1_000_000 + ts);
        p.protocol = PROTO_MYSQL;
        t.on_payload(p, out);
    }
    t.on_close(conn_id, Time(9_000_000_000), role, &PayloadLoss::default(), PROTO_MYSQL, out);
}

fn values(out: &[Event]) -> Vec<Value> {
    out.iter().map(event_value).collect()
}

/// sysbench's prepared statement, executed 5 times, from both sides: the
/// same events (but the role), with the statement's SQL on every execute.
#[test]
fn mysql_prepared_statements_from_both_sides() {
    let mut t = Tracker::default();
    let (mut client, mut server) = (Vec::new(), Vec::new());
    replay(&mut t, SYSBENCH_PS, 1, Role::Client, &mut client);
    replay(&mut t, SYSBENCH_PS, 2, Role::Server, &mut server);
    let (client, server) = (values(&client), values(&server));
    let commands: Vec<&str> = client.iter().map(|e| e["command"].as_str().unwrap()).collect();
    assert_eq!(
        commands,
        [
            "COM_STMT_PREPARE",
            "COM_STMT_EXECUTE",
            "COM_STMT_EXECUTE",
            "COM_STMT_EXECUTE",
            "COM_STMT_EXECUTE",
            "COM_STMT_EXECUTE",
            "COM_STMT_CLOSE",
            "COM_QUIT"
        ]
    );
    for (c, s) in client.iter().zip(&server) {
        assert_eq!((c["role"].as_str(), s["role"].as_str()), (Some("client"), Some("server")));
        for field in [
            "command",
            "statement",
            "statement_id",
            "fingerprint",
            "rows",
            "response",
            "latency_ns",
            "request_bytes",
            "response_bytes",
            "database",
            "user",
        ] {
            assert_eq!(c[field], s[field], "{field}");
        }
        assert_eq!(c["type"], "mysql");
    }
    let prepare = &client[0];
    assert_eq!(
        (prepare["response"].as_str(), prepare["params"].as_u64(), prepare["columns"].as_u64()),
        (Some("prepared"), Some(1), Some(1))
    );
    for e in &client[1..6] {
        assert_eq!(e["statement"], "SELECT c FROM sbtest1 WHERE id=?");
        assert_eq!(e["fingerprint"], "SELECT c FROM sbtest1 WHERE id = ?");
        assert_eq!((e["statement_id"].as_u64(), e["rows"].as_u64(), e["response"].as_str()), (Some(5), Some(1), Some("rows")));
        assert_eq!((e["database"].as_str(), e["user"].as_str()), (Some("shop"), Some("app")));
        assert_eq!(e["error"], Value::Null);
    }
    assert_eq!((client[6]["response"].clone(), client[6]["statement_id"].as_u64()), (Value::Null, Some(5)));
    assert_eq!((t.len(Protocol::Mysql), t.len(Protocol::Http), t.lost(Protocol::Mysql)), (0, 0, 0));
}

/// `--sql-redact`: statements become their fingerprints, error messages lose
/// their quoted text; no literal of the session is left in any line.
#[test]
fn mysql_redaction_leaves_no_literal() {
    let mut t = Tracker::new(MysqlOptions { redact: true, ..MysqlOptions::default() });
    let mut out = Vec::new();
    replay(&mut t, PYMYSQL, 1, Role::Client, &mut out);
    let all = values(&out);
    let e = all.iter().find(|e| e["statement"].as_str().is_some_and(|s| s.starts_with("SELECT id, name"))).unwrap();
    assert_eq!(e["statement"], "SELECT id, name, price FROM items WHERE id IN (...) ORDER BY id");
    let err = all.iter().find(|e| e["error_code"] == 1146).unwrap();
    assert_eq!(err["error_message"], "Table '?' doesn't exist");
    // A schema name is no literal: COM_INIT_DB keeps it.
    let init = all.iter().find(|e| e["command"] == "COM_INIT_DB").unwrap();
    assert_eq!(init["statement"], "shop");
    let text = all.iter().map(Value::to_string).collect::<String>();
    for literal in ["(3, 1)", "shop.nope", "IN (1, 2, 3)", ".csv"] {
        assert!(!text.contains(literal), "{literal} left in {text}");
    }
}

/// A MySQL command lost with its payload record, counted once under
/// `mysql` (not `http`), and a connection whose every record was lost.
#[test]
fn mysql_losses_are_counted_apart_from_http() {
    let mut t = Tracker::default();
    let mut out = Vec::new();
    let chunks = recording(SYSBENCH_PS);
    // The second execute (chunk 7, its command) is dropped by the ring
    // buffer; the next record (its response) says so.
    assert_eq!((chunks[7].0, chunks[7].2.len()), (true, 24));
    for (i, (to_server, ts, bytes)) in chunks.iter().enumerate() {
        if i == 7 {
            continue;
        }
        let mut p = payload(1, Role::Client, *to_server, bytes, bytes.len() as u64, *ts);
        p.protocol = PROTO_MYSQL;
        if i == 8 {
            p.loss = PayloadLoss { sent_starts: 1, sent_bytes: 24, ..Default::default() };
        }
        t.on_payload(p, &mut out);
    }
    t.on_close(1, Time(1), Role::Client, &PayloadLoss::default(), PROTO_MYSQL, &mut out);
    let executes = values(&out).iter().filter(|e| e["command"] == "COM_STMT_EXECUTE").count();
    assert_eq!((executes, t.lost(Protocol::Mysql), t.lost(Protocol::Http)), (4, 1, 0));
    let loss = PayloadLoss { sent_starts: 2, ..Default::default() };
    t.on_close(77, Time(2), Role::Client, &loss, PROTO_MYSQL, &mut out);
    assert_eq!(t.lost(Protocol::Mysql), 3);
}

/// The parsers' counters reach `agent_stats.mysql`: the raw client executes
/// a statement that COM_RESET_CONNECTION made the server forget.
#[test]
fn mysql_counters_are_summed_over_connections() {
    const RAW: &str = include_str!("../../../masdeepflow-proto/tests/fixtures/mysql/raw_binary.rec");
    let mut t = Tracker::default();
    let mut out = Vec::new();
    replay(&mut t, RAW, 1, Role::Client, &mut out);
    replay(&mut t, RAW, 2, Role::Server, &mut out);
    let forgotten = values(&out).into_iter().filter(|e| e["error_code"] == 1243).count();
    assert_eq!(forgotten, 2);
    assert_eq!(t.mysql_counters(), MysqlCounters { statements_evicted: 0, unknown_statements: 2 });
}

/// The HTTP parsers' counters reach `agent_stats.http`: a pipelined pair
/// whose second request hides past the capture, and a connection whose
/// bytes stop being HTTP.
#[test]
fn http_counters_are_summed_over_connections() {
    let mut t = Tracker::default();
    let mut out = Vec::new();
    let req = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    // Connection 1: the client writes two requests, only the first captured.
    t.on_payload(payload(1, Role::Client, true, req, 2 * req.len() as u64, 100), &mut out);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    t.on_payload(payload(1, Role::Client, false, resp, resp.len() as u64, 200), &mut out);
    t.on_payload(payload(1, Role::Client, false, resp, resp.len() as u64, 300), &mut out);
    // Connection 2: an exchange, then bytes that are not HTTP.
    t.on_payload(payload(2, Role::Client, true, req, req.len() as u64, 100), &mut out);
    t.on_payload(payload(2, Role::Client, false, resp, resp.len() as u64, 200), &mut out);
    t.on_payload(payload(2, Role::Client, true, b"\x16\x03\x01 not http", 11, 300), &mut out);
    let c = t.http_counters();
    assert_eq!(c, HttpCounters { unseen_requests: 1, orphan_responses: 1, pending_overflow: 0, pairing_lost: 1, gave_up: 1 });
    // Both first exchanges reported; the hidden one's response is an orphan.
    assert_eq!(out.len(), 2);
}
