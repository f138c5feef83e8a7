//! Deterministic guards of the agent's per-event cost: heap allocations
//! per emitted event on the hot paths (ring buffer record -> decode ->
//! pipeline -> enrichment -> JSON line), counted by a global allocator
//! that counts per thread. Timing belongs in `cargo xtask bench`; an
//! allocation count does not move with the machine's load, so it can gate
//! CI.
//!
//! Bounds (documented in docs/benchmarks.md): see the `MAX_*` constants.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

use masdeepflow_common::{
    EventHeader, EventKind, ProcessInfo,
    payload::{DIR_RECEIVED, DIR_SENT, PROTO_HTTP, PROTO_MYSQL, PayloadHeader, PayloadLoss},
    process::{ExecRecord, ExitRecord},
    tcp::{AF_INET, Endpoints, ROLE_CLIENT, ROLE_SERVER, TcpRecord},
};

use crate::{
    cli::Cli,
    clock::Clock,
    containers::Containers,
    decode::decode,
    event::{Event, Output},
    pipeline::Pipeline,
    sink::{
        json::JsonWriter,
        metrics::{Live, Metrics},
    },
};

/// Most heap allocations per `http` event, both sides of an exchange
/// through the whole path: the parser's request target and Host copies.
pub const MAX_ALLOCS_PER_HTTP_EVENT: f64 = 2.0;
/// Most per exec + exit pair (filename, argv and cwd copies).
pub const MAX_ALLOCS_PER_EXEC: f64 = 6.0;
/// Most per TCP connection (connect, accept, two closes and their last
/// flows; the flow table's entry).
pub const MAX_ALLOCS_PER_CONNECTION: f64 = 2.0;
/// Most per `mysql` event of a prepared statement's execution (sysbench's
/// point select with `--db-ps-mode=auto`), both sides: the event's box.
/// The statement and fingerprint are shared with the prepared-statement
/// table, not copied.
pub const MAX_ALLOCS_PER_MYSQL_EXECUTE: f64 = 1.0;
/// Most per `mysql` event of a text query (`COM_QUERY`, a new literal each
/// time): the event's box, the statement's shared copy, and its
/// fingerprint: the token list, the whitespace flags, the two passes over
/// them (pairing, collapsing `IN (...)`), the text, its shared copy.
pub const MAX_ALLOCS_PER_MYSQL_QUERY: f64 = 8.0;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised
// thread local (no allocation of its own).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: as the caller promised.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller promised.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: as the caller promised.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: as the caller promised.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain record.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn process(pid: u32, comm: &[u8]) -> ProcessInfo {
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm);
    ProcessInfo { cgroup_id: 1, pid, tid: pid, ppid: 1, uid: 0, comm: c }
}

fn endpoints(local_port: u16, peer_port: u16) -> Endpoints {
    let mut e = Endpoints { family: AF_INET, sport: local_port, dport: peer_port, ..Default::default() };
    e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e
}

fn payload(ts: u64, conn_id: u64, role: u32, sent: bool, data: &[u8], proc_: ProcessInfo, e: Endpoints) -> Vec<u8> {
    payload_of(PROTO_HTTP, ts, conn_id, role, sent, data, proc_, e)
}

#[allow(clippy::too_many_arguments)]
fn payload_of(protocol: u32, ts: u64, conn_id: u64, role: u32, sent: bool, data: &[u8], proc_: ProcessInfo, e: Endpoints) -> Vec<u8> {
    let h = PayloadHeader {
        header: EventHeader { kind: EventKind::Payload as u32, has_process: 1, ts_ns: ts, process: proc_ },
        endpoints: e,
        conn_id,
        total_len: data.len() as u64,
        captured_len: data.len() as u32,
        direction: if sent { DIR_SENT } else { DIR_RECEIVED },
        role,
        protocol,
        loss: PayloadLoss::NONE,
        tls: 0,
        _pad: 0,
    };
    let mut b = bytes_of(&h);
    b.extend_from_slice(data);
    b
}

const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:18900\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 23:30:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 6\r\nLast-Modified: Tue, 01 Dec 2026 23:10:00 GMT\r\nConnection: keep-alive\r\nETag: \"1\"\r\nAccept-Ranges: bytes\r\n\r\nhello\n";

/// The four payload records of `n` keep-alive exchanges seen from both
/// sides (client `wrk` on connection 1, server `nginx` on connection 2).
pub fn http_records(n: usize) -> Vec<Vec<u8>> {
    let (wrk, nginx) = (process(100, b"wrk"), process(200, b"nginx"));
    let (client, server) = (endpoints(40000, 80), endpoints(80, 40000));
    let mut out = Vec::with_capacity(4 * n);
    for i in 0..n as u64 {
        let t = 1_000_000 + i * 1000;
        out.push(payload(t, 1, ROLE_CLIENT, true, REQUEST, wrk, client));
        out.push(payload(t + 10, 2, ROLE_SERVER, false, REQUEST, nginx, server));
        out.push(payload(t + 100, 2, ROLE_SERVER, true, RESPONSE, nginx, server));
        out.push(payload(t + 110, 1, ROLE_CLIENT, false, RESPONSE, wrk, client));
    }
    out
}

/// A recorded session's chunks (`masdeepflow-proto/tests/fixtures/mysql`):
/// (client to server, bytes).
fn recording(text: &str) -> Vec<(bool, Vec<u8>)> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split(' ');
            let to_server = match it.next()? {
                "C" => true,
                "S" => false,
                _ => return None,
            };
            let hex = it.nth(1).unwrap_or("");
            Some((to_server, (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect()))
        })
        .collect()
}

/// The payload records of a MySQL session seen from both sides, as the
/// kernel captures them: the client (`sysbench`, connection 1) writes each
/// command and reads each response whole; the server (`mariadbd`,
/// connection 2) reads each command's header and body apart and writes
/// each response whole. `setup` is played once, then `n` rounds of
/// `round(i)` (command, response).
fn mysql_records(setup: &[(bool, Vec<u8>)], n: usize, round: impl Fn(usize) -> (Vec<u8>, Vec<u8>)) -> Vec<Vec<u8>> {
    let (client, server) = (process(100, b"sysbench"), process(200, b"mariadbd"));
    let (ce, se) = (endpoints(40000, 3306), endpoints(3306, 40000));
    let mut out = Vec::new();
    let mut t = 1_000_000u64;
    let mut one = |to_server: bool, data: &[u8], out: &mut Vec<Vec<u8>>| {
        t += 1000;
        let rec = |conn, role, sent, d: &[u8], p, e| payload_of(PROTO_MYSQL, t, conn, role, sent, d, p, e);
        out.push(rec(1, ROLE_CLIENT, to_server, data, client, ce));
        if to_server {
            out.push(rec(2, ROLE_SERVER, false, &data[..4], server, se));
            out.push(rec(2, ROLE_SERVER, false, &data[4..], server, se));
        } else {
            out.push(rec(2, ROLE_SERVER, true, data, server, se));
        }
    };
    for (to_server, data) in setup {
        one(*to_server, data, &mut out);
    }
    for i in 0..n {
        let (cmd, resp) = round(i);
        one(true, &cmd, &mut out);
        one(false, &resp, &mut out);
    }
    out
}

/// sysbench's point select as a prepared statement: greeting, handshake,
/// COM_STMT_PREPARE, then `n` COM_STMT_EXECUTE with their one-row results.
pub fn mysql_execute_records(n: usize) -> Vec<Vec<u8>> {
    let rec = recording(include_str!("../../masdeepflow-proto/tests/fixtures/mysql/sysbench_ps.rec"));
    mysql_records(&rec[..5], n, |_| (rec[5].1.clone(), rec[6].1.clone()))
}

/// The same as text queries, a new id each time (PyMySQL's session: a
/// one-row text result set).
pub fn mysql_query_records(n: usize) -> Vec<Vec<u8>> {
    let rec = recording(include_str!("../../masdeepflow-proto/tests/fixtures/mysql/pymysql_session.rec"));
    let response = rec.iter().position(|(c, d)| *c && d.ends_with(b"SELECT DATABASE()")).map(|i| rec[i + 1].1.clone()).unwrap();
    mysql_records(&rec[..3], n, |i| {
        let sql = format!("SELECT c FROM sbtest1 WHERE id={}", 1 + i % 10_000);
        let mut cmd = vec![(sql.len() + 1) as u8, 0, 0, 0, 3];
        cmd.extend_from_slice(sql.as_bytes());
        (cmd, response.clone())
    })
}

/// Records of `n` execs of `/bin/true` and their exits.
fn exec_records(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n as u32 {
        let p = process(u32::MAX - 1 - i, b"true");
        // SAFETY: a plain record, zero is valid for every field.
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        r.header = EventHeader { kind: EventKind::ProcessExec as u32, has_process: 1, ts_ns: 1_000 + u64::from(i), process: p };
        r.filename[..9].copy_from_slice(b"/bin/true");
        r.filename_len = 9;
        let argv = b"/bin/true\0bench-1\0";
        r.args[..argv.len()].copy_from_slice(argv);
        r.args_len = argv.len() as u32;
        out.push(bytes_of(&r));
        let x = ExitRecord {
            header: EventHeader { kind: EventKind::ProcessExit as u32, has_process: 1, ts_ns: 2_000 + u64::from(i), process: p },
            exit_code: 0,
            _pad: 0,
        };
        out.push(bytes_of(&x));
    }
    out
}

/// Records of `n` loopback connections: connect, accept, both closes.
fn tcp_records(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(4 * n);
    let (c, s) = (process(300, b"client"), process(301, b"server"));
    for i in 0..n as u64 {
        let port = 30000 + (i % 30000) as u16;
        let rec = |kind: EventKind, p: ProcessInfo, e: Endpoints, role: u32, id: u64| TcpRecord {
            header: EventHeader { kind: kind as u32, has_process: 1, ts_ns: 1_000 + i, process: p },
            endpoints: e,
            role,
            error: 0,
            duration_ns: 50,
            bytes_sent: 1,
            bytes_received: 0,
            conn_id: id,
            payload_loss: PayloadLoss::NONE,
            protocol: 0,
            adopted: 0,
        };
        out.push(bytes_of(&rec(EventKind::TcpConnect, c, endpoints(port, 9000), ROLE_CLIENT, 2 * i + 1)));
        out.push(bytes_of(&rec(EventKind::TcpAccept, s, endpoints(9000, port), ROLE_SERVER, 2 * i + 2)));
        out.push(bytes_of(&rec(EventKind::TcpClose, c, endpoints(port, 9000), ROLE_CLIENT, 2 * i + 1)));
        out.push(bytes_of(&rec(EventKind::TcpClose, s, endpoints(9000, port), ROLE_SERVER, 2 * i + 2)));
    }
    out
}

/// Runs `records` through the agent's path as the main loop and the output
/// thread do, returning (events written, allocations, bytes written).
pub fn run_path(records: &[Vec<u8>], pipeline: &mut Pipeline, json: &mut JsonWriter) -> (usize, u64, usize) {
    let clock = Clock::with_offset(0);
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let mut lines: Vec<Output> = Vec::with_capacity(1024);
    let mut text: Vec<u8> = Vec::with_capacity(1 << 20);
    let (mut written, mut bytes) = (0, 0);
    let before = allocs();
    for chunk in records.chunks(512) {
        for r in chunk {
            pipeline.on_record(decode(r, &clock).expect("a valid record"), &mut events);
        }
        pipeline.enrich_into(&mut events, &mut lines);
        for line in lines.drain(..) {
            json.write(&mut text, &line);
            written += 1;
        }
        bytes += text.len();
        text.clear();
    }
    (written, allocs() - before, bytes)
}

fn pipeline() -> Pipeline {
    let cli = <Cli as clap::Parser>::try_parse_from(["masdeepflow"]).expect("default arguments");
    let mut containers = Containers::default();
    // The records' cgroup: known, not a container (no /proc lookups).
    containers.on_mkdir(1, "/user.slice");
    Pipeline::new(&cli.run, Clock::with_offset(0), containers, None)
}

/// Allocations per event in the steady state: after a warm-up run has
/// grown every reusable buffer and table.
fn per_event(records: &[Vec<u8>], warm_up: &[Vec<u8>]) -> (f64, usize) {
    let mut p = pipeline();
    let mut json = JsonWriter::default();
    run_path(warm_up, &mut p, &mut json);
    let (n, a, _) = run_path(records, &mut p, &mut json);
    (a as f64 / n as f64, n)
}

#[test]
fn http_events_allocate_at_most_the_documented_bound() {
    let all = http_records(3000);
    let (per, n) = per_event(&all[4000..], &all[..4000]);
    assert_eq!(n, 2 * 2000, "one event per exchange and side");
    assert!(per <= MAX_ALLOCS_PER_HTTP_EVENT, "{per} allocations per http event (bound {MAX_ALLOCS_PER_HTTP_EVENT})");
}

#[test]
fn mysql_events_allocate_at_most_the_documented_bound() {
    // setup records (greeting, handshake, prepare) first, then rounds of
    // 5 records (client: command, response; server: header, body, response)
    let all = mysql_execute_records(3000);
    let (per, n) = per_event(&all[12 + 5 * 1000..], &all[..12 + 5 * 1000]);
    assert_eq!(n, 2 * 2000, "one event per execute and side");
    assert!(per <= MAX_ALLOCS_PER_MYSQL_EXECUTE, "{per} allocations per mysql execute event (bound {MAX_ALLOCS_PER_MYSQL_EXECUTE})");
    let all = mysql_query_records(3000);
    let (per, n) = per_event(&all[7 + 5 * 1000..], &all[..7 + 5 * 1000]);
    assert_eq!(n, 2 * 2000, "one event per query and side");
    assert!(per <= MAX_ALLOCS_PER_MYSQL_QUERY, "{per} allocations per mysql query event (bound {MAX_ALLOCS_PER_MYSQL_QUERY})");
}

#[test]
fn exec_events_allocate_at_most_the_documented_bound() {
    let all = exec_records(3000);
    let (per, n) = per_event(&all[2000..], &all[..2000]);
    assert_eq!(n, 2 * 2000);
    // Per exec: its exec and exit events.
    assert!(per * 2.0 <= MAX_ALLOCS_PER_EXEC, "{} allocations per exec (bound {MAX_ALLOCS_PER_EXEC})", per * 2.0);
}

#[test]
fn tcp_events_allocate_at_most_the_documented_bound() {
    let all = tcp_records(3000);
    let (per, n) = per_event(&all[4000..], &all[..4000]);
    // connect, accept, two closes and the two last flows.
    assert_eq!(n, 6 * 2000);
    assert!(per * 6.0 <= MAX_ALLOCS_PER_CONNECTION, "{} allocations per connection (bound {MAX_ALLOCS_PER_CONNECTION})", per * 6.0);
}

/// Runs `records` through the metrics-only path (`--output none
/// --metrics-listen`): the pipeline, then aggregation instead of JSON.
/// Returns (events, allocations of the whole path, allocations of the
/// aggregation alone).
fn run_metrics_path(records: &[Vec<u8>], pipeline: &mut Pipeline, metrics: &mut Metrics) -> (usize, u64, u64) {
    let clock = Clock::with_offset(0);
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let mut lines: Vec<Output> = Vec::with_capacity(1024);
    let (mut n, mut in_metrics) = (0, 0);
    let before = allocs();
    for chunk in records.chunks(512) {
        for r in chunk {
            pipeline.on_record(decode(r, &clock).expect("a valid record"), &mut events);
        }
        pipeline.enrich_into(&mut events, &mut lines);
        let m0 = allocs();
        metrics.set_time(1_000_000_000);
        for line in &lines {
            metrics.observe(line);
        }
        in_metrics += allocs() - m0;
        n += lines.len();
        lines.clear();
    }
    (n, allocs() - before, in_metrics)
}

/// Metrics-only: the aggregation allocates nothing per event once its
/// series exist, so the path costs what the pipeline does.
#[test]
fn metrics_only_path_allocates_nothing_more_than_the_pipeline() {
    let all = http_records(3000);
    let mut p = pipeline();
    let mut m = Metrics::new(2000, true, Live::default());
    run_metrics_path(&all[..4000], &mut p, &mut m);
    let (n, a, in_metrics) = run_metrics_path(&all[4000..], &mut p, &mut m);
    assert_eq!(n, 2 * 2000);
    assert_eq!(in_metrics, 0, "aggregation allocations in the steady state");
    let per = a as f64 / n as f64;
    assert!(per <= MAX_ALLOCS_PER_HTTP_EVENT, "{per} allocations per http event (bound {MAX_ALLOCS_PER_HTTP_EVENT})");
    // And the same for TCP and process events.
    for (records, warm) in [(tcp_records(3000), 4000), (exec_records(3000), 2000)] {
        let mut p = pipeline();
        run_metrics_path(&records[..warm], &mut p, &mut m);
        let (_, _, in_metrics) = run_metrics_path(&records[warm..], &mut p, &mut m);
        assert_eq!(in_metrics, 0);
    }
}

/// Not a timing test: prints the path's cost on this machine for the
/// developer (`cargo test -- hot_paths --nocapture`), asserts nothing of it.
#[test]
fn http_path_cost_report() {
    path_cost_report("http", &http_records(20000), 4000);
    path_cost_report("mysql execute", &mysql_execute_records(20000), 12 + 5 * 2000);
    path_cost_report("mysql query", &mysql_query_records(20000), 7 + 5 * 2000);
}

fn path_cost_report(name: &str, all: &[Vec<u8>], warm: usize) {
    let mut p = pipeline();
    let mut json = JsonWriter::default();
    run_path(&all[..warm], &mut p, &mut json);
    let t = std::time::Instant::now();
    let mut total = (0, 0, 0);
    for _ in 0..5 {
        let (n, a, bytes) = run_path(&all[warm..], &mut p, &mut json);
        total = (total.0 + n, total.1 + a, total.2 + bytes);
    }
    let (n, a, bytes) = total;
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    eprintln!(
        "{name} path: {ns:.0} ns per event, {} bytes per line, {:.2} allocations per event, {n} events",
        bytes / n,
        a as f64 / n as f64
    );
    let mut p = pipeline();
    let mut m = Metrics::new(2000, true, Live::default());
    run_metrics_path(&all[..4000], &mut p, &mut m);
    let t = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..5 {
        n += run_metrics_path(&all[4000..], &mut p, &mut m).0;
    }
    eprintln!("http path, metrics only: {:.0} ns per event", t.elapsed().as_nanos() as f64 / n as f64);
}
