//! Metrics aggregated from events, served on `/metrics` (`prometheus.rs`)
//! and sent over OTLP (`otlp/`). Names and attributes follow the
//! OpenTelemetry semantic conventions where one exists (HTTP, database);
//! the agent's own families are `masdeepflow.*`. docs/metrics.md lists them.
//!
//! Cost: every event reaches [`Metrics::observe`] on the output thread.
//! In the steady state it allocates nothing: a series is found by a small
//! fixed-size key (method, status and route as numbers, the server's
//! address inline, the route and the workload as ids of strings interned
//! once when their first series was admitted).
//!
//! Cardinality: each family holds at most `max_series` label sets. An
//! observation with a new label set past that goes to the family's one
//! overflow series (`otel.metric.overflow="true"`, as OpenTelemetry SDKs
//! do) and is counted in `masdeepflow.metrics.overflow`. Series not
//! updated for [`SERIES_IDLE`] are dropped (a workload that went away
//! frees its slots), and the interned strings only they used with them.
use std::{
    borrow::Cow,
    collections::{BTreeMap, hash_map::Entry},
    hash::Hash,
    net::IpAddr,
    time::Duration,
};

use rustc_hash::FxHashMap;

use crate::{
    event::{AgentStats, Event, HttpExchange, MysqlExchange, Output, Process, Role},
    names::errno_name,
    sink::route,
};

/// Series not updated for this long (up to 1.5 times it: sweeps run every
/// half of it) are dropped.
pub const SERIES_IDLE: Duration = Duration::from_secs(600);

const MS: u64 = 1_000_000;
/// `http.*.request.duration` bucket bounds, in ns (the semantic conventions' advice, in seconds:
/// 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10).
pub const HTTP_BOUNDS_NS: &[u64] = &[
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    75 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    750 * MS,
    1000 * MS,
    2500 * MS,
    5000 * MS,
    7500 * MS,
    10_000 * MS,
];
/// `db.*.operation.duration` bucket bounds, in ns (the conventions' advice:
/// 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10 s).
pub const DB_BOUNDS_NS: &[u64] = &[MS, 5 * MS, 10 * MS, 50 * MS, 100 * MS, 500 * MS, 1000 * MS, 5000 * MS, 10_000 * MS];
const MAX_BOUNDS: usize = 14;

/// Bucket counts (not cumulative): `buckets[i]` holds observations in
/// `(bounds[i-1], bounds[i]]`, `buckets[bounds.len()]` those above the last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; MAX_BOUNDS + 1],
    pub count: u64,
    pub sum_ns: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[u64], ns: u64) {
        let i = bounds.partition_point(|&b| b < ns);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }
}

struct Series<V> {
    value: V,
    /// The sweep period of the last update.
    epoch: u32,
    /// When the series was created (the start of its cumulative values).
    start_ns: u64,
}

struct Family<K, V> {
    series: FxHashMap<K, Series<V>>,
    overflow: Option<Series<V>>,
    /// Observations folded into `overflow`.
    folded: u64,
}

impl<K, V> Default for Family<K, V> {
    fn default() -> Self {
        Family { series: FxHashMap::default(), overflow: None, folded: 0 }
    }
}

/// Where a series' interned strings are: texts and one workload.
trait SeriesKey: Hash + Eq + Copy {
    fn texts(&self) -> [u32; 3];
    fn workload(&self) -> u32;
}

/// The value of `key`'s series: found, or admitted while there is room
/// (`admit` interns its strings and returns it; `probe` is the key when
/// all its strings were interned already), or the overflow series.
fn slot<K: SeriesKey, V: Default>(
    family: &mut Family<K, V>,
    probe: Option<K>,
    limit: usize,
    clock: (u32, u64),
    admit: impl FnOnce() -> K,
) -> &mut V {
    let (epoch, now_ns) = clock;
    let Family { series, overflow, folded } = family;
    let new = |epoch| Series { value: V::default(), epoch, start_ns: now_ns };
    let full = series.len() >= limit;
    match probe {
        Some(k) if !full => {
            let s = match series.entry(k) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => {
                    admit();
                    v.insert(new(epoch))
                }
            };
            s.epoch = epoch;
            return &mut s.value;
        }
        // Full: only existing series (a second lookup, past the limit only).
        Some(k) if series.contains_key(&k) => {
            let s = series.get_mut(&k).expect("just found");
            s.epoch = epoch;
            return &mut s.value;
        }
        None if !full => return &mut series.entry(admit()).or_insert_with(|| new(epoch)).value,
        _ => {}
    }
    *folded += 1;
    let s = overflow.get_or_insert_with(|| new(epoch));
    s.epoch = epoch;
    &mut s.value
}

/// Byte strings interned with a count of the series using them; id 0 is
/// "none".
#[derive(Default)]
pub struct Interner {
    ids: FxHashMap<Box<[u8]>, u32>,
    entries: Vec<(Box<[u8]>, u32)>,
    free: Vec<u32>,
}

impl Interner {
    fn get(&self, s: &[u8]) -> Option<u32> {
        if s.is_empty() { Some(0) } else { self.ids.get(s).copied() }
    }

    /// The id of `s`, with one more reference.
    fn acquire(&mut self, s: &[u8]) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if self.entries.is_empty() {
            self.entries.push((Box::default(), 0));
        }
        if let Some(&id) = self.ids.get(s) {
            self.entries[id as usize].1 += 1;
            return id;
        }
        let key: Box<[u8]> = s.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = (key.clone(), 1);
                id
            }
            None => {
                self.entries.push((key.clone(), 1));
                (self.entries.len() - 1) as u32
            }
        };
        self.ids.insert(key, id);
        id
    }

    fn release(&mut self, id: u32) {
        if id == 0 {
            return;
        }
        let e = &mut self.entries[id as usize];
        e.1 -= 1;
        if e.1 == 0 {
            let key = std::mem::take(&mut e.0);
            self.ids.remove(&key);
            self.free.push(id);
        }
    }

    pub fn bytes(&self, id: u32) -> &[u8] {
        if id == 0 { b"" } else { &self.entries[id as usize].0 }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Method ids: the common methods, then `_OTHER` (the conventions' name
/// for any other method, which keeps the label bounded).
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER"];

fn method_id(m: &masdeepflow_proto::http1::Method) -> u8 {
    use masdeepflow_proto::http1::Method as M;
    match m {
        M::Get => 0,
        M::Head => 1,
        M::Post => 2,
        M::Put => 3,
        M::Delete => 4,
        M::Connect => 5,
        M::Options => 6,
        M::Trace => 7,
        M::Patch => 8,
        M::Other(_) => 9,
    }
}

/// `error.type` of an HTTP exchange, by id: 0 none, then the exchange's
/// error, else the status when it is an error for this side (5xx for a
/// server, 4xx and 5xx for a client), as the conventions say.
const HTTP_ERRORS: [&str; 5] = ["", "no_response", "response_incomplete", "response_head_not_captured", "parser_gave_up"];

/// The error id meaning "the status code is the error type".
const STATUS_IS_ERROR: u8 = u8::MAX;

fn http_error_id(e: Option<&str>) -> u8 {
    match e {
        None => 0,
        Some(e) => HTTP_ERRORS.iter().position(|n| *n == e).unwrap_or(4) as u8,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct HttpKey {
    route: u32,
    workload: u32,
    server: (IpAddr, u16),
    status: u16,
    method: u8,
    error: u8,
}

impl SeriesKey for HttpKey {
    fn texts(&self) -> [u32; 3] {
        [self.route, 0, 0]
    }
    fn workload(&self) -> u32 {
        self.workload
    }
}

/// Exchanges with no duration (no response was seen), by side and error.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct UnansweredKey {
    error: u8,
}

impl SeriesKey for UnansweredKey {
    fn texts(&self) -> [u32; 3] {
        [0; 3]
    }
    fn workload(&self) -> u32 {
        0
    }
}

/// A database operation's identity (MySQL now; others later).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct DbKey {
    system: u8,
    operation: u32,
    summary: u32,
    error: u32,
    server: (IpAddr, u16),
    workload: u32,
}

impl SeriesKey for DbKey {
    fn texts(&self) -> [u32; 3] {
        [self.operation, self.summary, self.error]
    }
    fn workload(&self) -> u32 {
        self.workload
    }
}

const DB_SYSTEMS: [&str; 1] = ["mysql"];

/// A process (by command name) in a workload; `detail` is per family:
/// the role (closes, bytes), the errno (connect errors), the exit kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ProcKey {
    comm: [u8; 16],
    workload: u32,
    detail: u32,
}

impl SeriesKey for ProcKey {
    fn texts(&self) -> [u32; 3] {
        [0; 3]
    }
    fn workload(&self) -> u32 {
        self.workload
    }
}

const EXIT_KINDS: [&str; 3] = ["success", "failure", "signal"];

/// A label: its OpenTelemetry attribute name and Prometheus label name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub otel: &'static str,
    pub prom: &'static str,
}

macro_rules! labels {
    ($($id:ident = $otel:literal, $prom:literal;)*) => {
        $(pub const $id: Label = Label { otel: $otel, prom: $prom };)*
    };
}

labels! {
    HTTP_METHOD = "http.request.method", "http_request_method";
    HTTP_STATUS = "http.response.status_code", "http_response_status_code";
    HTTP_ROUTE = "http.route", "http_route";
    SERVER_ADDRESS = "server.address", "server_address";
    SERVER_PORT = "server.port", "server_port";
    ERROR_TYPE = "error.type", "error_type";
    K8S_NAMESPACE = "k8s.namespace.name", "k8s_namespace_name";
    K8S_POD = "k8s.pod.name", "k8s_pod_name";
    K8S_CONTAINER = "k8s.container.name", "k8s_container_name";
    CONTAINER_ID = "container.id", "container_id";
    PROCESS_NAME = "process.executable.name", "process_executable_name";
    ROLE = "masdeepflow.role", "role";
    EXIT_KIND = "masdeepflow.exit.kind", "exit_kind";
    DB_SYSTEM = "db.system.name", "db_system_name";
    DB_OPERATION = "db.operation.name", "db_operation_name";
    DB_SUMMARY = "db.query.summary", "db_query_summary";
    OVERFLOW = "otel.metric.overflow", "otel_metric_overflow";
    METRIC = "masdeepflow.metric", "metric";
    EVENT_TYPE = "masdeepflow.event.type", "type";
    LOSS_REASON = "masdeepflow.loss.reason", "reason";
    SIGNAL = "masdeepflow.signal", "signal";
    TABLE = "masdeepflow.table", "table";
    VERSION = "service.version", "version";
    KERNEL = "os.version", "kernel";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    /// An OpenTelemetry annotation unit such as `{connection}` (no Prometheus suffix).
    Count(&'static str),
}

/// A metric family's names and type.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    /// OpenTelemetry name, e.g. `http.server.request.duration`.
    pub otel: &'static str,
    /// Prometheus name before the unit and `_total` suffixes.
    pub prom: &'static str,
    pub help: &'static str,
    pub unit: Unit,
    pub kind: Kind,
}

macro_rules! desc {
    ($id:ident: $kind:ident $unit:expr, $otel:literal, $prom:literal, $help:literal) => {
        pub const $id: Desc = Desc { otel: $otel, prom: $prom, help: $help, unit: $unit, kind: Kind::$kind };
    };
}

desc!(HTTP_CLIENT: Histogram Unit::Seconds, "http.client.request.duration", "http_client_request_duration",
    "Duration of HTTP requests seen from the client side (request sent to response head received).");
desc!(HTTP_SERVER: Histogram Unit::Seconds, "http.server.request.duration", "http_server_request_duration",
    "Duration of HTTP requests seen from the server side (request received to response head sent).");
desc!(HTTP_UNANSWERED: Counter Unit::Count("{request}"), "masdeepflow.http.requests.unanswered", "masdeepflow_http_requests_unanswered",
    "HTTP requests seen without a response (no duration), by side and error.");
desc!(DB_CLIENT: Histogram Unit::Seconds, "db.client.operation.duration", "db_client_operation_duration",
    "Duration of database operations seen from the client side.");
desc!(DB_SERVER: Histogram Unit::Seconds, "db.server.operation.duration", "db_server_operation_duration",
    "Duration of database operations seen from the server side.");
desc!(TCP_CONNECTS: Counter Unit::Count("{connection}"), "masdeepflow.tcp.connects", "masdeepflow_tcp_connects",
    "TCP connections opened (connect succeeded).");
desc!(TCP_CONNECT_ERRORS: Counter Unit::Count("{connection}"), "masdeepflow.tcp.connect.errors", "masdeepflow_tcp_connect_errors",
    "TCP connects that failed, by errno.");
desc!(TCP_ACCEPTS: Counter Unit::Count("{connection}"), "masdeepflow.tcp.accepts", "masdeepflow_tcp_accepts", "TCP connections accepted.");
desc!(TCP_CLOSES: Counter Unit::Count("{connection}"), "masdeepflow.tcp.closes", "masdeepflow_tcp_closes",
    "TCP connections closed, by side.");
desc!(TCP_SENT: Counter Unit::Bytes, "masdeepflow.tcp.sent", "masdeepflow_tcp_sent", "Bytes sent on TCP connections, by side.");
desc!(TCP_RECEIVED: Counter Unit::Bytes, "masdeepflow.tcp.received", "masdeepflow_tcp_received",
    "Bytes received on TCP connections, by side.");
desc!(EXECS: Counter Unit::Count("{exec}"), "masdeepflow.process.execs", "masdeepflow_process_execs", "Successful execs, by new command name.");
desc!(EXITS: Counter Unit::Count("{process}"), "masdeepflow.process.exits", "masdeepflow_process_exits",
    "Processes that ended, by command name and how (success: exit 0, failure: other codes, signal).");
desc!(OVERFLOWED: Counter Unit::Count("{observation}"), "masdeepflow.metrics.overflow", "masdeepflow_metrics_overflow",
    "Observations folded into a metric's overflow series because it had reached its series limit.");
desc!(EMITTED: Counter Unit::Count("{event}"), "masdeepflow.events.emitted", "masdeepflow_events_emitted",
    "Events handed to the outputs, by type (agent_stats emitted).");
desc!(LOST: Counter Unit::Count("{event}"), "masdeepflow.events.lost", "masdeepflow_events_lost",
    "Events lost, by type and where (agent_stats lost.kernel_ring_buffer and lost.user_queue).");
desc!(EXPORT_LOST: Counter Unit::Count("{item}"), "masdeepflow.export.lost", "masdeepflow_export_lost",
    "Log records, spans and metric points that could not be sent over OTLP (agent_stats lost.export).");
desc!(UNTRACKED: Counter Unit::Count("{connection}"), "masdeepflow.connections.untracked", "masdeepflow_connections_untracked",
    "Connections the kernel could not track because its maps were full.");
desc!(TABLES: Gauge Unit::Count("{entry}"), "masdeepflow.table.entries", "masdeepflow_table_entries", "Entries in each bounded table.");
desc!(QUEUE_USED: Gauge Unit::Count("{event}"), "masdeepflow.queue.events", "masdeepflow_queue_events",
    "Events waiting in the output queue now.");
desc!(QUEUE_SIZE: Gauge Unit::Count("{event}"), "masdeepflow.queue.capacity", "masdeepflow_queue_capacity",
    "Size of the output queue (--queue-size).");
desc!(RING_SIZE: Gauge Unit::Bytes, "masdeepflow.ring_buffer.size", "masdeepflow_ring_buffer_size", "Size of the kernel ring buffer.");
desc!(SERIES: Gauge Unit::Count("{series}"), "masdeepflow.metrics.series", "masdeepflow_metrics_series",
    "Label sets held per metric (at most --metrics-max-series, plus the overflow series).");
desc!(RSS: Gauge Unit::Bytes, "process.memory.usage", "process_resident_memory", "The agent's resident memory.");
desc!(CPU: Counter Unit::Seconds, "process.cpu.time", "process_cpu", "CPU time the agent used (user and system).");
desc!(BUILD: Gauge Unit::Count("1"), "masdeepflow.build.info", "masdeepflow_build_info", "The agent's version and the kernel it runs on.");

/// A point's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Counter(u64),
    /// Seconds (CPU time).
    CounterF64(f64),
    Gauge(i64),
    Histogram(Histogram, &'static [u64]),
}

/// One series' labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub labels: Vec<(Label, Cow<'static, str>)>,
    pub value: Value,
    pub start_ns: u64,
}

/// One family's points, for the encoders.
#[derive(Clone)]
pub struct FamilySnapshot {
    pub desc: Desc,
    pub points: Vec<Point>,
}

/// Values the metrics read from elsewhere when a snapshot is taken.
#[derive(Clone, Default)]
pub struct Live {
    /// Events in the output queue now.
    pub queue: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    pub queue_capacity: u64,
    pub ring_buffer_size: u64,
}

/// The interned strings, and the buffers keys are built in.
#[derive(Default)]
struct Strings {
    texts: Interner,
    workloads: Interner,
    route: Vec<u8>,
    workload: Vec<u8>,
    /// `db.operation.name`, `db.query.summary` and `error.type` of the
    /// MySQL exchange being counted.
    operation: String,
    summary: String,
    error: String,
}

impl Strings {
    /// The workload id of `line` if interned (`Some(0)` outside containers).
    fn probe_workload(&mut self, line: &Output) -> Option<u32> {
        workload_key(line, &mut self.workload);
        self.workloads.get(&self.workload)
    }
}

pub struct Metrics {
    limit: usize,
    epoch: u32,
    last_sweep_ns: u64,
    now_ns: u64,
    /// TCP bytes come from flows (when `flow` events are on) or closes.
    bytes_from_flows: bool,
    http: [Family<HttpKey, Histogram>; 2],
    unanswered: [Family<UnansweredKey, u64>; 2],
    db: [Family<DbKey, Histogram>; 2],
    connects: Family<ProcKey, u64>,
    connect_errors: Family<ProcKey, u64>,
    accepts: Family<ProcKey, u64>,
    closes: Family<ProcKey, u64>,
    sent: Family<ProcKey, u64>,
    received: Family<ProcKey, u64>,
    execs: Family<ProcKey, u64>,
    exits: Family<ProcKey, u64>,
    strings: Strings,
    /// The last agent_stats and agent_start seen.
    agent: Option<AgentStats>,
    build: Option<(&'static str, String)>,
    live: Live,
}

fn role_id(r: Role) -> usize {
    match r {
        Role::Client => 0,
        Role::Server => 1,
    }
}

/// The workload's interning key: `k` namespace NUL pod NUL container for
/// pods, `c` container id for other containers, empty for the host.
fn workload_key(line: &Output, out: &mut Vec<u8>) {
    out.clear();
    if let Some(k) = &line.k8s {
        out.push(b'k');
        for (i, part) in [&k.namespace, &k.pod, &k.container].into_iter().enumerate() {
            if i > 0 {
                out.push(0);
            }
            out.extend_from_slice(part.as_bytes());
        }
    } else if let Some(c) = &line.container {
        out.push(b'c');
        out.extend_from_slice(c.id.as_bytes());
    }
}

/// The value of the series of a process (by command name) in `line`'s workload.
fn proc_slot<'a>(
    family: &'a mut Family<ProcKey, u64>,
    strings: &mut Strings,
    line: &Output,
    process: Option<&Process>,
    detail: u32,
    limit: usize,
    clock: (u32, u64),
) -> &'a mut u64 {
    let comm = process.map_or([0; 16], |p| p.comm.0);
    let probe = strings.probe_workload(line).map(|workload| ProcKey { comm, workload, detail });
    slot(family, probe, limit, clock, || ProcKey { comm, workload: strings.workloads.acquire(&strings.workload), detail })
}

impl Metrics {
    pub fn new(max_series: usize, bytes_from_flows: bool, live: Live) -> Metrics {
        Metrics {
            limit: max_series,
            epoch: 0,
            last_sweep_ns: 0,
            now_ns: 0,
            bytes_from_flows,
            http: Default::default(),
            unanswered: Default::default(),
            db: Default::default(),
            connects: Family::default(),
            connect_errors: Family::default(),
            accepts: Family::default(),
            closes: Family::default(),
            sent: Family::default(),
            received: Family::default(),
            execs: Family::default(),
            exits: Family::default(),
            strings: Strings { route: Vec::with_capacity(256), workload: Vec::with_capacity(256), ..Default::default() },
            agent: None,
            build: None,
            live,
        }
    }

    /// Sets the time (Unix ns) new series start at, and drops idle series
    /// every half [`SERIES_IDLE`]. Called once per batch.
    pub fn set_time(&mut self, unix_ns: u64) {
        self.now_ns = unix_ns;
        if self.last_sweep_ns == 0 {
            self.last_sweep_ns = unix_ns;
        }
        if unix_ns.saturating_sub(self.last_sweep_ns) >= SERIES_IDLE.as_nanos() as u64 / 2 {
            self.last_sweep_ns = unix_ns;
            self.sweep();
        }
    }

    /// Ends a sweep period: series updated in none of the last two full
    /// periods are dropped, with the strings only they used.
    pub fn sweep(&mut self) {
        fn drop_idle<K: SeriesKey, V>(f: &mut Family<K, V>, epoch: u32, strings: &mut Strings) {
            f.series.retain(|k, s| {
                let keep = s.epoch + 2 >= epoch;
                if !keep {
                    for t in k.texts() {
                        strings.texts.release(t);
                    }
                    strings.workloads.release(k.workload());
                }
                keep
            });
            if f.overflow.as_ref().is_some_and(|s| s.epoch + 2 < epoch) {
                f.overflow = None;
            }
        }
        self.epoch += 1;
        let (e, s) = (self.epoch, &mut self.strings);
        for f in &mut self.http {
            drop_idle(f, e, s);
        }
        for f in &mut self.unanswered {
            drop_idle(f, e, s);
        }
        for f in &mut self.db {
            drop_idle(f, e, s);
        }
        for f in [
            &mut self.connects,
            &mut self.connect_errors,
            &mut self.accepts,
            &mut self.closes,
            &mut self.sent,
            &mut self.received,
            &mut self.execs,
            &mut self.exits,
        ] {
            drop_idle(f, e, s);
        }
    }

    /// Counts one event.
    pub fn observe(&mut self, line: &Output) {
        let (limit, clock, s) = (self.limit, (self.epoch, self.now_ns), &mut self.strings);
        match &line.event {
            Event::Http(h) => self.observe_http(line, h),
            Event::Mysql(m) => self.observe_mysql(line, m),
            Event::TcpConnect { process, error: None, .. } => {
                *proc_slot(&mut self.connects, s, line, process.as_ref(), 0, limit, clock) += 1
            }
            Event::TcpConnect { process, error: Some(errno), .. } => {
                *proc_slot(&mut self.connect_errors, s, line, process.as_ref(), *errno, limit, clock) += 1
            }
            Event::TcpAccept { process, .. } => *proc_slot(&mut self.accepts, s, line, process.as_ref(), 0, limit, clock) += 1,
            Event::TcpClose { process, role, bytes_sent, bytes_received, .. } => {
                let (p, r) = (process.as_ref(), role_id(*role) as u32);
                *proc_slot(&mut self.closes, s, line, p, r, limit, clock) += 1;
                if !self.bytes_from_flows {
                    *proc_slot(&mut self.sent, s, line, p, r, limit, clock) += bytes_sent;
                    *proc_slot(&mut self.received, s, line, p, r, limit, clock) += bytes_received;
                }
            }
            Event::Flow { process, role, bytes_sent, bytes_received, .. } => {
                if self.bytes_from_flows {
                    let (p, r) = (process.as_ref(), role_id(*role) as u32);
                    *proc_slot(&mut self.sent, s, line, p, r, limit, clock) += bytes_sent;
                    *proc_slot(&mut self.received, s, line, p, r, limit, clock) += bytes_received;
                }
            }
            Event::ProcessExec { process, .. } => *proc_slot(&mut self.execs, s, line, Some(process), 0, limit, clock) += 1,
            Event::ProcessExit { process, exit_code, .. } => {
                let kind = match exit_code {
                    Some(0) => 0,
                    Some(_) => 1,
                    None => 2,
                };
                *proc_slot(&mut self.exits, s, line, Some(process), kind, limit, clock) += 1;
            }
            Event::AgentStart { version, kernel, .. } => self.build = Some((version, kernel.clone())),
            Event::AgentStats(stats) => self.agent = Some((**stats).clone()),
        }
    }

    fn observe_http(&mut self, line: &Output, h: &HttpExchange) {
        let (limit, clock, s) = (self.limit, (self.epoch, self.now_ns), &mut self.strings);
        let role = role_id(h.role);
        let mut error = http_error_id(h.error);
        let Some(latency) = h.latency_ns else {
            *slot(&mut self.unanswered[role], Some(UnansweredKey { error }), limit, clock, || UnansweredKey { error }) += 1;
            return;
        };
        if error == 0 && h.status.is_some_and(|st| st >= 500 || (st >= 400 && h.role == Role::Client)) {
            error = STATUS_IS_ERROR;
        }
        route::template(&h.path, &mut s.route);
        let route = s.texts.get(&s.route);
        let workload = s.probe_workload(line);
        let key = |route, workload| HttpKey {
            route,
            workload,
            server: (h.conn.dst.ip, h.conn.dst.port),
            status: h.status.unwrap_or(0),
            method: method_id(&h.method),
            error,
        };
        let probe = route.zip(workload).map(|(r, w)| key(r, w));
        let hist = slot(&mut self.http[role], probe, limit, clock, || key(s.texts.acquire(&s.route), s.workloads.acquire(&s.workload)));
        hist.observe(HTTP_BOUNDS_NS, latency);
    }

    /// Counts one MySQL exchange that was answered: the operation is the
    /// statement's first keyword (upper case) for statements, otherwise the
    /// command (`COM_PING`); the summary comes from the fingerprint; the
    /// error type is the server's error code (`1146`), or the parser's
    /// error when the exchange is incomplete.
    fn observe_mysql(&mut self, line: &Output, m: &MysqlExchange) {
        let (Some(command), Some(latency)) = (m.command, m.latency_ns) else { return };
        let mut strings = std::mem::take(&mut self.strings.operation);
        let mut summary = std::mem::take(&mut self.strings.summary);
        let mut error = std::mem::take(&mut self.strings.error);
        summary.clear();
        strings.clear();
        error.clear();
        if let Some(fp) = m.fingerprint.as_deref() {
            query_summary(fp, &mut summary);
            strings.extend(summary.split(' ').next().unwrap_or_default().chars().map(|c| c.to_ascii_uppercase()));
        }
        if strings.is_empty() {
            strings.push_str(command.name());
        }
        if let Some(code) = m.error_code {
            use std::fmt::Write;
            let _ = write!(error, "{code}");
        } else if let Some(e) = m.error {
            error.push_str(e);
        }
        self.observe_db(line, m.role, strings.as_bytes(), summary.as_bytes(), Some(error.as_bytes()), latency);
        self.strings.operation = strings;
        self.strings.summary = summary;
        self.strings.error = error;
    }

    /// Counts one database operation (`db.client.operation.duration` or
    /// the server side). `operation` is `db.operation.name` (the statement's
    /// first keyword, or the command), `summary` the low-cardinality
    /// `db.query.summary` ([`query_summary`]), `error` the error code or
    /// SQLSTATE as text. Operations without a response have no duration
    /// and are not recorded here.
    pub fn observe_db(&mut self, line: &Output, role: Role, operation: &[u8], summary: &[u8], error: Option<&[u8]>, latency_ns: u64) {
        let (limit, clock, s) = (self.limit, (self.epoch, self.now_ns), &mut self.strings);
        let Some(conn) = line.event.connection() else { return };
        let server = (conn.dst.ip, conn.dst.port);
        let error = error.unwrap_or(b"");
        let probe = match (s.texts.get(operation), s.texts.get(summary), s.texts.get(error), s.probe_workload(line)) {
            (Some(operation), Some(summary), Some(error), Some(workload)) => {
                Some(DbKey { system: 0, operation, summary, error, server, workload })
            }
            _ => None,
        };
        let hist = slot(&mut self.db[role_id(role)], probe, limit, clock, || DbKey {
            system: 0,
            operation: s.texts.acquire(operation),
            summary: s.texts.acquire(summary),
            error: s.texts.acquire(error),
            server,
            workload: s.workloads.acquire(&s.workload),
        });
        hist.observe(DB_BOUNDS_NS, latency_ns);
    }
}

/// `db.query.summary` from a statement's fingerprint: its first keyword
/// and the first table it names after `FROM`, `INTO`, `UPDATE`, `TABLE` or
/// `JOIN` (`SELECT users`), at most 64 bytes; as the conventions describe
/// a summary, low in cardinality unlike the fingerprint itself.
pub fn query_summary(fingerprint: &str, out: &mut String) {
    out.clear();
    let mut words =
        fingerprint.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == ';').filter(|w| !w.is_empty());
    let Some(first) = words.next() else { return };
    out.push_str(&first[..first.len().min(32)]);
    let mut next_is_table = first.eq_ignore_ascii_case("UPDATE");
    for w in words {
        if next_is_table {
            if !w.eq_ignore_ascii_case("IGNORE") && !w.eq_ignore_ascii_case("LOW_PRIORITY") && !w.eq_ignore_ascii_case("IF") {
                out.push(' ');
                let table: String = w.chars().filter(|c| !matches!(c, '`' | '"')).take(31).collect();
                out.push_str(&table);
                return;
            }
            continue;
        }
        next_is_table = ["FROM", "INTO", "TABLE", "JOIN"].iter().any(|k| w.eq_ignore_ascii_case(k));
    }
}

/// The text of a [`ProcKey`]'s detail.
type DetailName = fn(u32) -> Cow<'static, str>;

fn workload_labels(key: &[u8], labels: &mut Vec<(Label, Cow<'static, str>)>) {
    let text = |b: &[u8]| Cow::Owned(String::from_utf8_lossy(b).into_owned());
    match key.split_first() {
        Some((b'k', rest)) => {
            let mut parts = rest.split(|&b| b == 0);
            for label in [K8S_NAMESPACE, K8S_POD, K8S_CONTAINER] {
                labels.push((label, text(parts.next().unwrap_or_default())));
            }
        }
        Some((b'c', id)) => labels.push((CONTAINER_ID, text(id))),
        _ => {}
    }
}

fn comm_label(comm: &[u8; 16], labels: &mut Vec<(Label, Cow<'static, str>)>) {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(16);
    if end > 0 {
        labels.push((PROCESS_NAME, Cow::Owned(String::from_utf8_lossy(&comm[..end]).into_owned())));
    }
}

fn overflow_labels() -> Vec<(Label, Cow<'static, str>)> {
    vec![(OVERFLOW, Cow::Borrowed("true"))]
}

/// A stable order for readers (and tests) of the text: by label values
/// (one sort, not one per family type; each series' labels are its own).
fn sort_points(points: &mut [Point]) {
    points.sort_unstable_by(|a, b| a.labels.iter().map(|l| &l.1).cmp(b.labels.iter().map(|l| &l.1)));
}

fn points<K, V: Clone>(
    f: &Family<K, V>,
    mut labels: impl FnMut(&K) -> Vec<(Label, Cow<'static, str>)>,
    value: impl Fn(&V) -> Value,
) -> Vec<Point> {
    let mut out: Vec<Point> =
        f.series.iter().map(|(k, s)| Point { labels: labels(k), value: value(&s.value), start_ns: s.start_ns }).collect();
    sort_points(&mut out);
    if let Some(s) = &f.overflow {
        out.push(Point { labels: overflow_labels(), value: value(&s.value), start_ns: s.start_ns });
    }
    out
}

/// The agent's CPU seconds and resident bytes, from /proc/self/stat.
fn own_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15, rss 24 (1-based in proc(5)).
    let num = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let (tick, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    Some(((num(14)? + num(15)?) as f64 / tick.max(1) as f64, num(24)? * page.max(1) as u64))
}

impl Metrics {
    /// Every family's points now, for an encoder. Families without points
    /// are left out, except the agent's own.
    pub fn snapshot(&self) -> Vec<FamilySnapshot> {
        let s = &self.strings;
        let mut out = Vec::new();
        let mut push = |desc: Desc, points: Vec<Point>| {
            if !points.is_empty() {
                out.push(FamilySnapshot { desc, points });
            }
        };
        for (desc, f) in [(HTTP_CLIENT, &self.http[0]), (HTTP_SERVER, &self.http[1])] {
            let labels = |k: &HttpKey| {
                let mut l = vec![(HTTP_METHOD, Cow::Borrowed(METHODS[k.method as usize]))];
                if k.status != 0 {
                    l.push((HTTP_STATUS, Cow::Owned(k.status.to_string())));
                }
                l.push((HTTP_ROUTE, Cow::Owned(String::from_utf8_lossy(s.texts.bytes(k.route)).into_owned())));
                l.push((SERVER_ADDRESS, Cow::Owned(k.server.0.to_string())));
                l.push((SERVER_PORT, Cow::Owned(k.server.1.to_string())));
                match k.error {
                    0 => {}
                    STATUS_IS_ERROR => l.push((ERROR_TYPE, Cow::Owned(k.status.to_string()))),
                    e => l.push((ERROR_TYPE, Cow::Borrowed(HTTP_ERRORS[e as usize]))),
                }
                workload_labels(s.workloads.bytes(k.workload), &mut l);
                l
            };
            push(desc, points(f, labels, |h| Value::Histogram(h.clone(), HTTP_BOUNDS_NS)));
        }
        let mut unanswered = Vec::new();
        for (role, f) in ["client", "server"].into_iter().zip(&self.unanswered) {
            let labels = |k: &UnansweredKey| vec![(ROLE, Cow::Borrowed(role)), (ERROR_TYPE, Cow::Borrowed(HTTP_ERRORS[k.error as usize]))];
            unanswered.extend(points(f, labels, |v| Value::Counter(*v)));
        }
        push(HTTP_UNANSWERED, unanswered);
        for (desc, f) in [(DB_CLIENT, &self.db[0]), (DB_SERVER, &self.db[1])] {
            let labels = |k: &DbKey| {
                let text = |id| Cow::Owned(String::from_utf8_lossy(s.texts.bytes(id)).into_owned());
                let mut l = vec![(DB_SYSTEM, Cow::Borrowed(DB_SYSTEMS[k.system as usize])), (DB_OPERATION, text(k.operation))];
                if k.summary != 0 {
                    l.push((DB_SUMMARY, text(k.summary)));
                }
                if k.error != 0 {
                    l.push((ERROR_TYPE, text(k.error)));
                }
                l.push((SERVER_ADDRESS, Cow::Owned(k.server.0.to_string())));
                l.push((SERVER_PORT, Cow::Owned(k.server.1.to_string())));
                workload_labels(s.workloads.bytes(k.workload), &mut l);
                l
            };
            push(desc, points(f, labels, |h| Value::Histogram(h.clone(), DB_BOUNDS_NS)));
        }
        let proc_labels = |detail: Option<(Label, DetailName)>| {
            move |k: &ProcKey| {
                let mut l = Vec::with_capacity(6);
                comm_label(&k.comm, &mut l);
                if let Some((label, name)) = detail {
                    l.push((label, name(k.detail)));
                }
                workload_labels(s.workloads.bytes(k.workload), &mut l);
                l
            }
        };
        let role_name: fn(u32) -> Cow<'static, str> = |r| Cow::Borrowed(if r == 0 { "client" } else { "server" });
        let counter = |v: &u64| Value::Counter(*v);
        push(TCP_CONNECTS, points(&self.connects, proc_labels(None), counter));
        push(TCP_CONNECT_ERRORS, points(&self.connect_errors, proc_labels(Some((ERROR_TYPE, errno_name))), counter));
        push(TCP_ACCEPTS, points(&self.accepts, proc_labels(None), counter));
        push(TCP_CLOSES, points(&self.closes, proc_labels(Some((ROLE, role_name))), counter));
        push(TCP_SENT, points(&self.sent, proc_labels(Some((ROLE, role_name))), counter));
        push(TCP_RECEIVED, points(&self.received, proc_labels(Some((ROLE, role_name))), counter));
        push(EXECS, points(&self.execs, proc_labels(None), counter));
        push(EXITS, points(&self.exits, proc_labels(Some((EXIT_KIND, |k| Cow::Borrowed(EXIT_KINDS[k as usize])))), counter));
        self.agent_families(&mut out);
        out
    }

    /// The agent's own families: the last agent_stats' numbers, and live
    /// values (queue, memory, CPU).
    fn agent_families(&self, out: &mut Vec<FamilySnapshot>) {
        let one = |labels: Vec<(Label, Cow<'static, str>)>, value: Value| Point { labels, value, start_ns: 0 };
        let by = |label: Label, map: &BTreeMap<&'static str, u64>, extra: &[(Label, &'static str)]| {
            map.iter()
                .map(|(k, v)| {
                    let mut l: Vec<(Label, Cow<'static, str>)> = extra.iter().map(|(l, v)| (*l, Cow::Borrowed(*v))).collect();
                    l.push((label, Cow::Borrowed(*k)));
                    one(l, Value::Counter(*v))
                })
                .collect::<Vec<_>>()
        };
        let stats = self.agent.clone().unwrap_or_default();
        out.push(FamilySnapshot { desc: EMITTED, points: by(EVENT_TYPE, &stats.emitted, &[]) });
        let mut lost = by(EVENT_TYPE, &stats.lost.kernel_ring_buffer, &[(LOSS_REASON, "kernel_ring_buffer")]);
        lost.extend(by(EVENT_TYPE, &stats.lost.user_queue, &[(LOSS_REASON, "user_queue")]));
        out.push(FamilySnapshot { desc: LOST, points: lost });
        out.push(FamilySnapshot { desc: EXPORT_LOST, points: by(SIGNAL, &stats.lost.export, &[]) });
        out.push(FamilySnapshot { desc: UNTRACKED, points: vec![one(vec![], Value::Counter(stats.untracked_connections))] });
        let tables = stats.tables.iter().map(|(k, v)| one(vec![(TABLE, Cow::Borrowed(*k))], Value::Gauge(*v as i64))).collect();
        out.push(FamilySnapshot { desc: TABLES, points: tables });
        let families: [(&str, usize, bool); 13] = [
            (HTTP_CLIENT.otel, self.http[0].series.len(), self.http[0].overflow.is_some()),
            (HTTP_SERVER.otel, self.http[1].series.len(), self.http[1].overflow.is_some()),
            (DB_CLIENT.otel, self.db[0].series.len(), self.db[0].overflow.is_some()),
            (DB_SERVER.otel, self.db[1].series.len(), self.db[1].overflow.is_some()),
            (TCP_CONNECTS.otel, self.connects.series.len(), self.connects.overflow.is_some()),
            (TCP_CONNECT_ERRORS.otel, self.connect_errors.series.len(), self.connect_errors.overflow.is_some()),
            (TCP_ACCEPTS.otel, self.accepts.series.len(), self.accepts.overflow.is_some()),
            (TCP_CLOSES.otel, self.closes.series.len(), self.closes.overflow.is_some()),
            (TCP_SENT.otel, self.sent.series.len(), self.sent.overflow.is_some()),
            (TCP_RECEIVED.otel, self.received.series.len(), self.received.overflow.is_some()),
            (EXECS.otel, self.execs.series.len(), self.execs.overflow.is_some()),
            (EXITS.otel, self.exits.series.len(), self.exits.overflow.is_some()),
            (
                HTTP_UNANSWERED.otel,
                self.unanswered.iter().map(|f| f.series.len()).sum(),
                self.unanswered.iter().any(|f| f.overflow.is_some()),
            ),
        ];
        let folded = [
            (HTTP_CLIENT.otel, self.http[0].folded),
            (HTTP_SERVER.otel, self.http[1].folded),
            (DB_CLIENT.otel, self.db[0].folded),
            (DB_SERVER.otel, self.db[1].folded),
            (TCP_CONNECTS.otel, self.connects.folded),
            (TCP_CONNECT_ERRORS.otel, self.connect_errors.folded),
            (TCP_ACCEPTS.otel, self.accepts.folded),
            (TCP_CLOSES.otel, self.closes.folded),
            (TCP_SENT.otel, self.sent.folded),
            (TCP_RECEIVED.otel, self.received.folded),
            (EXECS.otel, self.execs.folded),
            (EXITS.otel, self.exits.folded),
        ];
        let metric = |name: &'static str| vec![(METRIC, Cow::Borrowed(name))];
        out.push(FamilySnapshot {
            desc: SERIES,
            points: families.iter().map(|(n, len, over)| one(metric(n), Value::Gauge((*len + usize::from(*over)) as i64))).collect(),
        });
        out.push(FamilySnapshot { desc: OVERFLOWED, points: folded.iter().map(|(n, v)| one(metric(n), Value::Counter(*v))).collect() });
        if let Some(q) = &self.live.queue {
            let used = q.load(std::sync::atomic::Ordering::Relaxed) as i64;
            out.push(FamilySnapshot { desc: QUEUE_USED, points: vec![one(vec![], Value::Gauge(used))] });
        }
        out.push(FamilySnapshot { desc: QUEUE_SIZE, points: vec![one(vec![], Value::Gauge(self.live.queue_capacity as i64))] });
        out.push(FamilySnapshot { desc: RING_SIZE, points: vec![one(vec![], Value::Gauge(self.live.ring_buffer_size as i64))] });
        if let Some((cpu, rss)) = own_usage() {
            out.push(FamilySnapshot { desc: RSS, points: vec![one(vec![], Value::Gauge(rss as i64))] });
            out.push(FamilySnapshot { desc: CPU, points: vec![one(vec![], Value::CounterF64(cpu))] });
        }
        if let Some((version, kernel)) = &self.build {
            let labels = vec![(VERSION, Cow::Borrowed(*version)), (KERNEL, Cow::Owned(kernel.clone()))];
            out.push(FamilySnapshot { desc: BUILD, points: vec![one(labels, Value::Gauge(1))] });
        }
    }
}

#[cfg(test)]
pub mod tests {
    use std::sync::Arc;

    use masdeepflow_container::{ContainerRef, Runtime};
    use masdeepflow_k8s::PodMeta;

    use super::*;
    use crate::event::{Connection, Endpoint, Time};

    pub fn http(role: Role, path: &str, status: Option<u16>, latency_ns: Option<u64>) -> Event {
        Event::Http(HttpExchange {
            time: Time(1),
            process: Some(Process { cgroup_id: 0, pid: 7, tid: 7, ppid: 1, uid: 0, comm: "nginx".into() }),
            role,
            conn: Connection {
                src: Endpoint { ip: "127.0.0.1".parse().unwrap(), port: 40000 },
                dst: Endpoint { ip: "127.0.0.2".parse().unwrap(), port: 8080 },
            },
            method: masdeepflow_proto::http1::Method::Get,
            path: path.as_bytes().to_vec(),
            path_truncated: false,
            host: None,
            status,
            latency_ns,
            request_bytes: 1,
            response_bytes: 1,
            version_minor: 1,
            error: if status.is_none() { Some("no_response") } else { None },
            approximate: false,
            tls: None,
        })
    }

    fn family<'a>(snap: &'a [FamilySnapshot], otel: &str) -> &'a FamilySnapshot {
        snap.iter().find(|f| f.desc.otel == otel).unwrap_or_else(|| panic!("no {otel}"))
    }

    fn label<'a>(p: &'a Point, name: &str) -> Option<&'a str> {
        p.labels.iter().find(|(l, _)| l.prom == name).map(|(_, v)| v.as_ref())
    }

    fn hist(p: &Point) -> &Histogram {
        match &p.value {
            Value::Histogram(h, _) => h,
            v => panic!("not a histogram: {v:?}"),
        }
    }

    #[test]
    fn http_exchanges_by_route_status_and_side() {
        let mut m = Metrics::new(100, true, Live::default());
        for i in 0..37 {
            m.observe(&Output::plain(http(Role::Server, &format!("/users/{}?x={i}", 17 + i), Some(200), Some(3_000_000))));
        }
        for _ in 0..3 {
            m.observe(&Output::plain(http(Role::Server, "/users/99", Some(404), Some(7_000_000))));
        }
        m.observe(&Output::plain(http(Role::Client, "/users/1", Some(503), Some(2_000_000_000))));
        m.observe(&Output::plain(http(Role::Server, "/users/1", None, None)));
        let snap = m.snapshot();
        let server = family(&snap, "http.server.request.duration");
        assert_eq!(server.points.len(), 2);
        let ok = server.points.iter().find(|p| label(p, "http_response_status_code") == Some("200")).unwrap();
        assert_eq!(label(ok, "http_route"), Some("/users/{id}"));
        assert_eq!(label(ok, "http_request_method"), Some("GET"));
        assert_eq!(label(ok, "server_address"), Some("127.0.0.2"));
        assert_eq!(label(ok, "server_port"), Some("8080"));
        assert_eq!(label(ok, "error_type"), None);
        let h = hist(ok);
        assert_eq!((h.count, h.sum_ns, h.buckets[0]), (37, 37 * 3_000_000, 37));
        let nf = server.points.iter().find(|p| label(p, "http_response_status_code") == Some("404")).unwrap();
        assert_eq!((hist(nf).count, hist(nf).buckets[1]), (3, 3), "7 ms is in (5, 10] ms");
        assert_eq!(label(nf, "error_type"), None, "a 404 is not a server error");
        let client = family(&snap, "http.client.request.duration");
        let p = &client.points[0];
        assert_eq!(label(p, "error_type"), Some("503"));
        assert_eq!(hist(p).buckets[HTTP_BOUNDS_NS.len() - 4], 1, "2 s is in (1, 2.5] s");
        let unanswered = family(&snap, "masdeepflow.http.requests.unanswered");
        assert_eq!(unanswered.points.len(), 1);
        assert_eq!(unanswered.points[0].value, Value::Counter(1));
        assert_eq!(label(&unanswered.points[0], "role"), Some("server"));
    }

    #[test]
    fn series_limit_folds_new_label_sets_into_the_overflow_series() {
        let mut m = Metrics::new(10, true, Live::default());
        for i in 0..1000 {
            // 50 routes of letters only (kept as they are): /p/xaa, /p/xab, ...
            let word: String = [b'x', b'a' + (i % 50 / 26) as u8, b'a' + (i % 26) as u8].iter().map(|&b| b as char).collect();
            m.observe(&Output::plain(http(Role::Server, &format!("/p/{word}"), Some(200), Some(1))));
        }
        let snap = m.snapshot();
        let server = family(&snap, "http.server.request.duration");
        assert_eq!(server.points.len(), 11, "10 series and the overflow one");
        let total: u64 = server.points.iter().map(|p| hist(p).count).sum();
        assert_eq!(total, 1000, "every observation counted once");
        let overflow = server.points.last().unwrap();
        assert_eq!(label(overflow, "otel_metric_overflow"), Some("true"));
        assert_eq!(hist(overflow).count, 1000 - 10 * 20, "each of the 10 admitted routes came 20 times");
        let folded = family(&snap, "masdeepflow.metrics.overflow");
        let p = folded.points.iter().find(|p| label(p, "metric") == Some("http.server.request.duration")).unwrap();
        assert_eq!(p.value, Value::Counter(800));
        assert_eq!(m.strings.texts.len(), 10, "routes past the limit are not interned");
    }

    #[test]
    fn idle_series_and_their_strings_are_dropped() {
        let mut m = Metrics::new(10, true, Live::default());
        m.observe(&Output::plain(http(Role::Server, "/old", Some(200), Some(1))));
        m.sweep();
        m.observe(&Output::plain(http(Role::Server, "/new", Some(200), Some(1))));
        m.sweep();
        assert_eq!(m.strings.texts.len(), 2, "kept for one more period");
        m.observe(&Output::plain(http(Role::Server, "/new", Some(200), Some(1))));
        m.sweep();
        assert_eq!(m.strings.texts.len(), 1);
        let snap = m.snapshot();
        let routes: Vec<_> =
            family(&snap, "http.server.request.duration").points.iter().map(|p| label(p, "http_route").unwrap().to_string()).collect();
        assert_eq!(routes, ["/new"]);
        // A new route reuses the freed id.
        m.observe(&Output::plain(http(Role::Server, "/other", Some(200), Some(1))));
        assert_eq!(m.strings.texts.len(), 2);
    }

    #[test]
    fn workload_labels_and_tcp_families() {
        let mut m = Metrics::new(10, false, Live::default());
        let pod = Arc::new(PodMeta {
            namespace: "shop".into(),
            pod: "cart-1".into(),
            pod_uid: "u".into(),
            container: "app".into(),
            node: "n".into(),
            labels: Default::default(),
        });
        let container = Arc::new(ContainerRef { id: "a".repeat(64), runtime: Runtime::Containerd, pod_uid: None });
        let conn = Connection {
            src: Endpoint { ip: "127.0.0.1".parse().unwrap(), port: 40000 },
            dst: Endpoint { ip: "127.0.0.1".parse().unwrap(), port: 80 },
        };
        let p = Some(Process { cgroup_id: 0, pid: 7, tid: 7, ppid: 1, uid: 0, comm: "curl".into() });
        let in_pod = |event| Output { event, container: Some(container.clone()), k8s: Some(pod.clone()) };
        m.observe(&in_pod(Event::TcpConnect { time: Time(1), process: p, conn, latency_ns: 1, error: None }));
        m.observe(&in_pod(Event::TcpConnect { time: Time(1), process: p, conn, latency_ns: 1, error: Some(111) }));
        m.observe(&in_pod(Event::TcpConnect { time: Time(1), process: p, conn, latency_ns: 1, error: Some(111) }));
        let close = Event::TcpClose {
            time: Time(1),
            process: p,
            role: Role::Client,
            conn,
            bytes_sent: 89,
            bytes_received: 236,
            duration_ns: 1,
            conn_id: 1,
            payload_loss: Default::default(),
            protocol: 0,
            adopted: false,
        };
        m.observe(&Output { event: close, container: Some(container.clone()), k8s: None });
        let snap = m.snapshot();
        let c = &family(&snap, "masdeepflow.tcp.connects").points[0];
        assert_eq!(c.value, Value::Counter(1));
        assert_eq!(label(c, "process_executable_name"), Some("curl"));
        assert_eq!(label(c, "k8s_namespace_name"), Some("shop"));
        assert_eq!(label(c, "k8s_pod_name"), Some("cart-1"));
        assert_eq!(label(c, "k8s_container_name"), Some("app"));
        assert_eq!(label(c, "container_id"), None);
        let e = &family(&snap, "masdeepflow.tcp.connect.errors").points[0];
        assert_eq!((e.value.clone(), label(e, "error_type")), (Value::Counter(2), Some("ECONNREFUSED")));
        let sent = &family(&snap, "masdeepflow.tcp.sent").points[0];
        assert_eq!(sent.value, Value::Counter(89));
        assert_eq!(label(sent, "container_id"), Some("a".repeat(64).as_str()));
        assert_eq!(label(sent, "role"), Some("client"));
        assert_eq!(family(&snap, "masdeepflow.tcp.received").points[0].value, Value::Counter(236));
    }

    #[test]
    fn db_operations_are_one_call_away() {
        let mut m = Metrics::new(10, true, Live::default());
        let line = Output::plain(http(Role::Client, "/", Some(200), Some(1)));
        let mut summary = String::new();
        query_summary("SELECT `id`, name FROM `users` WHERE id = ?", &mut summary);
        assert_eq!(summary, "SELECT users");
        for _ in 0..2 {
            m.observe_db(&line, Role::Client, b"SELECT", summary.as_bytes(), None, 2_000_000);
        }
        m.observe_db(&line, Role::Server, b"SELECT", summary.as_bytes(), Some(b"1146"), 20_000_000);
        let snap = m.snapshot();
        let c = &family(&snap, "db.client.operation.duration").points[0];
        assert_eq!(label(c, "db_system_name"), Some("mysql"));
        assert_eq!(label(c, "db_operation_name"), Some("SELECT"));
        assert_eq!(label(c, "db_query_summary"), Some("SELECT users"));
        assert_eq!((hist(c).count, hist(c).buckets[1]), (2, 2));
        let s = &family(&snap, "db.server.operation.duration").points[0];
        assert_eq!(label(s, "error_type"), Some("1146"));
        for (fp, want) in [
            ("INSERT INTO t1 (a) VALUES (...)", "INSERT t1"),
            ("UPDATE IGNORE acct SET x = ?", "UPDATE acct"),
            ("COMMIT", "COMMIT"),
            ("SELECT ? FROM DUAL", "SELECT DUAL"),
            ("", ""),
        ] {
            query_summary(fp, &mut summary);
            assert_eq!(summary, want, "{fp}");
        }
    }
}
