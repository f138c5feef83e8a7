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
    payload::{DIR_RECEIVED, DIR_SENT, PayloadHeader, PayloadLoss},
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
/// Most per exec + exit pair (filename and argv copies, the cwd path).
pub const MAX_ALLOCS_PER_EXEC: f64 = 6.0;
/// Most per TCP connection (connect, accept, two closes and their last
/// flows; the flow table's entry).
pub const MAX_ALLOCS_PER_CONNECTION: f64 = 2.0;

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
    let h = PayloadHeader {
        header: EventHeader { kind: EventKind::Payload as u32, has_process: 1, ts_ns: ts, process: proc_ },
        endpoints: e,
        conn_id,
        total_len: data.len() as u64,
        captured_len: data.len() as u32,
        direction: if sent { DIR_SENT } else { DIR_RECEIVED },
        role,
        _pad: 0,
        loss: PayloadLoss::NONE,
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
    let all = http_records(20000);
    let mut p = pipeline();
    let mut json = JsonWriter::default();
    run_path(&all[..4000], &mut p, &mut json);
    let t = std::time::Instant::now();
    let mut total = (0, 0, 0);
    for _ in 0..5 {
        let (n, a, bytes) = run_path(&all[4000..], &mut p, &mut json);
        total = (total.0 + n, total.1 + a, total.2 + bytes);
    }
    let (n, a, bytes) = total;
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    eprintln!(
        "http path: {ns:.0} ns per event, {} bytes per line, {:.2} allocations per event, {n} events",
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
