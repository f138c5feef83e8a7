//! Events and metric snapshots as OTLP messages (`opentelemetry-proto`):
//! every event a log record, every HTTP exchange a span, the metrics as
//! cumulative sums, gauges and explicit-bucket histograms. Attribute names
//! follow the OpenTelemetry semantic conventions; what they have no name
//! for is `masdeepflow.*`. docs/otlp.md lists them.
use std::borrow::Cow;

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value},
    logs::v1::{LogRecord, SeverityNumber},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram as OtlpHistogram, HistogramDataPoint, Metric, NumberDataPoint, Sum, metric,
        number_data_point,
    },
    resource::v1::Resource,
    trace::v1::{Span, Status, span::SpanKind, status::StatusCode},
};

use crate::{
    event::{Connection, Event, HttpExchange, MysqlExchange, Output, Process, Role, split_args},
    names::{errno_name, signal_name},
    sink::{
        metrics::{FamilySnapshot, Kind, Unit, Value},
        route, text,
    },
};

pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn lossy(b: &[u8]) -> any_value::Value {
    s(String::from_utf8_lossy(b))
}

fn int(v: impl Into<i64>) -> any_value::Value {
    any_value::Value::IntValue(v.into())
}

fn uint(v: u64) -> any_value::Value {
    any_value::Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The resource of everything the agent sends: itself, on this host.
pub fn resource(node_name: Option<&str>) -> Resource {
    let mut attributes = vec![kv("service.name", s("masdeepflow")), kv("service.version", s(env!("CARGO_PKG_VERSION")))];
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid out pointer.
    if unsafe { libc::uname(&mut uts) } == 0 {
        // SAFETY: uname NUL-terminates nodename.
        let host = unsafe { std::ffi::CStr::from_ptr(uts.nodename.as_ptr()) };
        attributes.push(kv("host.name", s(host.to_string_lossy())));
    }
    if let Some(node) = node_name.filter(|n| !n.is_empty()) {
        attributes.push(kv("k8s.node.name", s(node)));
    }
    Resource { attributes, ..Default::default() }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "masdeepflow".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }
}

/// Random trace and span ids (xorshift seeded from the kernel's random bytes).
pub struct Ids(u64);

impl Ids {
    pub fn new() -> Ids {
        let mut seed = [0u8; 8];
        // SAFETY: valid buffer of 8 bytes.
        unsafe { libc::getrandom(seed.as_mut_ptr().cast(), 8, 0) };
        Ids(u64::from_ne_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A trace id (16 bytes) and a span id (8 bytes), never zero.
    pub fn pair(&mut self) -> (Vec<u8>, Vec<u8>) {
        let mut trace = self.next().to_be_bytes().to_vec();
        trace.extend_from_slice(&self.next().to_be_bytes());
        (trace, self.next().to_be_bytes().to_vec())
    }
}

fn process_attrs(p: &Process, out: &mut Vec<KeyValue>) {
    out.push(kv("process.pid", int(p.pid)));
    out.push(kv("process.parent_pid", int(p.ppid)));
    out.push(kv("thread.id", int(p.tid)));
    out.push(kv("process.user.id", int(p.uid)));
    out.push(kv("process.executable.name", lossy(p.comm.as_bytes())));
}

/// Endpoint attributes: client/server from the connection, local/peer by
/// the observed side.
fn connection_attrs(c: &Connection, role: Role, out: &mut Vec<KeyValue>) {
    out.push(kv("network.transport", s("tcp")));
    out.push(kv("network.type", s(if c.src.ip.is_ipv4() { "ipv4" } else { "ipv6" })));
    out.push(kv("client.address", s(c.src.ip.to_string())));
    out.push(kv("client.port", int(c.src.port)));
    out.push(kv("server.address", s(c.dst.ip.to_string())));
    out.push(kv("server.port", int(c.dst.port)));
    let (local, peer) = match role {
        Role::Client => (&c.src, &c.dst),
        Role::Server => (&c.dst, &c.src),
    };
    out.push(kv("network.local.address", s(local.ip.to_string())));
    out.push(kv("network.local.port", int(local.port)));
    out.push(kv("network.peer.address", s(peer.ip.to_string())));
    out.push(kv("network.peer.port", int(peer.port)));
    out.push(kv("masdeepflow.role", s(role.as_str())));
}

fn context_attrs(line: &Output, out: &mut Vec<KeyValue>) {
    if let Some(c) = &line.container {
        out.push(kv("container.id", s(c.id.clone())));
        out.push(kv("container.runtime.name", s(c.runtime.as_str())));
    }
    if let Some(k) = &line.k8s {
        out.push(kv("k8s.namespace.name", s(k.namespace.clone())));
        out.push(kv("k8s.pod.name", s(k.pod.clone())));
        out.push(kv("k8s.pod.uid", s(k.pod_uid.clone())));
        out.push(kv("k8s.container.name", s(k.container.clone())));
        out.push(kv("k8s.node.name", s(k.node.clone())));
    }
}

/// `url.path` and `url.query` of a request target.
fn split_target(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

/// An exchange's `error.type`: the parser's error, else an error status.
fn http_error(h: &HttpExchange) -> Option<Cow<'static, str>> {
    if let Some(e) = h.error {
        return Some(Cow::Borrowed(e));
    }
    h.status.filter(|&st| st >= 500 || (st >= 400 && h.role == Role::Client)).map(|st| Cow::Owned(st.to_string()))
}

fn http_attrs(h: &HttpExchange, route_buf: &mut Vec<u8>, out: &mut Vec<KeyValue>) {
    out.push(kv("http.request.method", s(h.method.as_str())));
    let (path, query) = split_target(&h.path);
    out.push(kv("url.path", lossy(path)));
    if let Some(q) = query {
        out.push(kv("url.query", lossy(q)));
    }
    route::template(&h.path, route_buf);
    out.push(kv("http.route", lossy(route_buf)));
    if let Some(st) = h.status {
        out.push(kv("http.response.status_code", int(st)));
    }
    if let Some(host) = &h.host {
        let value = AnyValue { value: Some(lossy(host)) };
        out.push(kv("http.request.header.host", any_value::Value::ArrayValue(ArrayValue { values: vec![value] })));
    }
    out.push(kv("network.protocol.name", s("http")));
    out.push(kv("network.protocol.version", s(if h.version_minor == 0 { "1.0" } else { "1.1" })));
    out.push(kv("http.request.size", uint(h.request_bytes)));
    out.push(kv("http.response.size", uint(h.response_bytes)));
    if let Some(l) = h.latency_ns {
        out.push(kv("masdeepflow.latency_ns", uint(l)));
    }
    if let Some(e) = http_error(h) {
        out.push(kv("error.type", s(e)));
    }
    if h.path_truncated {
        out.push(kv("masdeepflow.path_truncated", any_value::Value::BoolValue(true)));
    }
    if h.approximate {
        out.push(kv("masdeepflow.approximate", any_value::Value::BoolValue(true)));
    }
}

/// A MySQL exchange's attributes (`db.*` semantic conventions).
fn mysql_attrs(m: &MysqlExchange, out: &mut Vec<KeyValue>) {
    out.push(kv("db.system.name", s("mysql")));
    if let Some(c) = m.command {
        out.push(kv("masdeepflow.mysql.command", s(c.name())));
    }
    let statement = if m.redacted { m.fingerprint.as_deref().map(str::as_bytes) } else { m.statement.as_deref() };
    if let Some(q) = statement {
        out.push(kv("db.query.text", lossy(q)));
    }
    if let Some(fp) = m.fingerprint.as_deref() {
        let mut summary = String::new();
        crate::sink::metrics::query_summary(fp, &mut summary);
        if let Some(op) = summary.split(' ').next().filter(|o| !o.is_empty()) {
            out.push(kv("db.operation.name", s(op.to_ascii_uppercase())));
        }
        out.push(kv("db.query.summary", s(summary)));
    }
    if let Some(d) = m.database.as_deref() {
        out.push(kv("db.namespace", lossy(d)));
    }
    if let Some(r) = m.response {
        out.push(kv("masdeepflow.mysql.response", s(r.as_str())));
    }
    if let Some(rows) = m.rows {
        out.push(kv("db.response.returned_rows", uint(rows)));
    }
    if let Some(code) = m.error_code {
        out.push(kv("db.response.status_code", s(code.to_string())));
        out.push(kv("error.type", s(code.to_string())));
    } else if let Some(e) = m.error {
        out.push(kv("error.type", s(e)));
    }
    if let Some(l) = m.latency_ns {
        out.push(kv("masdeepflow.latency_ns", uint(l)));
    }
    out.push(kv("masdeepflow.request_bytes", uint(m.request_bytes)));
    out.push(kv("masdeepflow.response_bytes", uint(m.response_bytes)));
}

fn counts(map: &std::collections::BTreeMap<&'static str, u64>) -> any_value::Value {
    let values = map.iter().map(|(k, v)| kv(k, uint(*v))).collect();
    any_value::Value::KvlistValue(KeyValueList { values })
}

/// What one event becomes.
pub struct Converter {
    pub ids: Ids,
    route: Vec<u8>,
    text: Vec<u8>,
}

impl Converter {
    pub fn new() -> Converter {
        Converter { ids: Ids::new(), route: Vec::with_capacity(256), text: Vec::with_capacity(512) }
    }

    /// The log record of `line` (its body the text line of `--output
    /// text`); `ids` ties an `http` record to its span.
    pub fn log_record(&mut self, line: &Output, observed_ns: u64, ids: Option<&(Vec<u8>, Vec<u8>)>) -> LogRecord {
        let e = &line.event;
        let mut a = Vec::with_capacity(24);
        if let Some(p) = e.process() {
            process_attrs(p, &mut a);
        }
        match e {
            Event::ProcessExec { filename, args, args_truncated, cwd, .. } => {
                a.push(kv("process.executable.path", lossy(filename)));
                let values = split_args(args).map(|x| AnyValue { value: Some(lossy(x)) }).collect();
                a.push(kv("process.command_args", any_value::Value::ArrayValue(ArrayValue { values })));
                if *args_truncated {
                    a.push(kv("masdeepflow.args_truncated", any_value::Value::BoolValue(true)));
                }
                if let Some(cwd) = cwd {
                    a.push(kv("process.working_directory", lossy(cwd)));
                }
            }
            Event::ProcessExit { exit_code, signal, core_dumped, duration_ns, .. } => {
                if let Some(c) = exit_code {
                    a.push(kv("process.exit.code", int(*c)));
                }
                if let Some(sig) = signal {
                    a.push(kv("masdeepflow.signal", s(signal_name(*sig))));
                }
                if *core_dumped {
                    a.push(kv("masdeepflow.core_dumped", any_value::Value::BoolValue(true)));
                }
                if let Some(d) = duration_ns {
                    a.push(kv("masdeepflow.duration_ns", uint(*d)));
                }
            }
            Event::TcpConnect { conn, latency_ns, error, .. } => {
                connection_attrs(conn, Role::Client, &mut a);
                a.push(kv("masdeepflow.latency_ns", uint(*latency_ns)));
                if let Some(errno) = error {
                    a.push(kv("error.type", s(errno_name(*errno))));
                }
            }
            Event::TcpAccept { conn, .. } => connection_attrs(conn, Role::Server, &mut a),
            Event::TcpClose { conn, role, bytes_sent, bytes_received, duration_ns, .. } => {
                connection_attrs(conn, *role, &mut a);
                a.push(kv("masdeepflow.bytes_sent", uint(*bytes_sent)));
                a.push(kv("masdeepflow.bytes_received", uint(*bytes_received)));
                a.push(kv("masdeepflow.duration_ns", uint(*duration_ns)));
            }
            Event::Flow { conn, role, bytes_sent, bytes_received, interval_ns, .. } => {
                connection_attrs(conn, *role, &mut a);
                a.push(kv("masdeepflow.bytes_sent", uint(*bytes_sent)));
                a.push(kv("masdeepflow.bytes_received", uint(*bytes_received)));
                a.push(kv("masdeepflow.interval_ns", uint(*interval_ns)));
            }
            Event::Http(h) => {
                connection_attrs(&h.conn, h.role, &mut a);
                http_attrs(h, &mut self.route, &mut a);
            }
            Event::Mysql(m) => {
                connection_attrs(&m.conn, m.role, &mut a);
                mysql_attrs(m, &mut a);
            }
            Event::AgentStart { version, kernel, probes, events, .. } => {
                a.push(kv("service.version", s(*version)));
                a.push(kv("os.version", s(kernel.clone())));
                let list = |v: Vec<AnyValue>| any_value::Value::ArrayValue(ArrayValue { values: v });
                a.push(kv("masdeepflow.probes", list(probes.iter().map(|p| AnyValue { value: Some(s(p.clone())) }).collect())));
                a.push(kv("masdeepflow.events", list(events.iter().map(|p| AnyValue { value: Some(s(*p)) }).collect())));
            }
            Event::AgentStats(st) => {
                a.push(kv("masdeepflow.emitted", counts(&st.emitted)));
                a.push(kv("masdeepflow.lost.kernel_ring_buffer", counts(&st.lost.kernel_ring_buffer)));
                a.push(kv("masdeepflow.lost.user_queue", counts(&st.lost.user_queue)));
                a.push(kv("masdeepflow.lost.export", counts(&st.lost.export)));
                a.push(kv("masdeepflow.untracked_connections", uint(st.untracked_connections)));
                a.push(kv("masdeepflow.tables", counts(&st.tables)));
            }
        }
        context_attrs(line, &mut a);
        self.text.clear();
        let body = match text::write(&mut self.text, line) {
            Ok(()) => Some(AnyValue { value: Some(lossy(self.text.strip_suffix(b"\n").unwrap_or(&self.text))) }),
            Err(_) => None,
        };
        let (trace_id, span_id) = ids.cloned().unwrap_or_default();
        LogRecord {
            time_unix_nano: e.time().0,
            observed_time_unix_nano: observed_ns,
            severity_number: SeverityNumber::Info as i32,
            severity_text: "INFO".into(),
            body,
            attributes: a,
            event_name: format!("masdeepflow.{}", e.type_name()),
            trace_id,
            span_id,
            ..Default::default()
        }
    }

    /// The span of an HTTP exchange: kind by side, from the request's first
    /// byte for its latency (an exchange without a response has no duration).
    pub fn span(&mut self, line: &Output, h: &HttpExchange, ids: (Vec<u8>, Vec<u8>)) -> Span {
        let mut a = Vec::with_capacity(28);
        if let Some(p) = &h.process {
            process_attrs(p, &mut a);
        }
        connection_attrs(&h.conn, h.role, &mut a);
        http_attrs(h, &mut self.route, &mut a);
        context_attrs(line, &mut a);
        let error = http_error(h);
        let status = match &error {
            Some(e) => Status { code: StatusCode::Error as i32, message: e.to_string() },
            None => Status::default(),
        };
        route::template(&h.path, &mut self.route);
        Span {
            trace_id: ids.0,
            span_id: ids.1,
            name: format!("{} {}", h.method.as_str(), String::from_utf8_lossy(&self.route)),
            kind: match h.role {
                Role::Client => SpanKind::Client,
                Role::Server => SpanKind::Server,
            } as i32,
            start_time_unix_nano: h.time.0,
            end_time_unix_nano: h.time.0 + h.latency_ns.unwrap_or(0),
            attributes: a,
            status: Some(status),
            ..Default::default()
        }
    }
}

fn unit(u: Unit) -> &'static str {
    match u {
        Unit::Seconds => "s",
        Unit::Bytes => "By",
        Unit::Count(c) => c,
    }
}

/// The metrics of a snapshot, cumulative from each series' start (the
/// agent's start for its own families).
pub fn metrics(families: &[FamilySnapshot], now_ns: u64, agent_start_ns: u64) -> (Vec<Metric>, u64) {
    let mut points_total = 0;
    let out = families
        .iter()
        .map(|f| {
            let d = f.desc;
            let start = |p: u64| if p == 0 { agent_start_ns } else { p };
            let attrs = |p: &crate::sink::metrics::Point| p.labels.iter().map(|(l, v)| kv(l.otel, s(v.to_string()))).collect::<Vec<_>>();
            points_total += f.points.len() as u64;
            let number = |p: &crate::sink::metrics::Point| {
                let value = match &p.value {
                    Value::Counter(v) => number_data_point::Value::AsInt(i64::try_from(*v).unwrap_or(i64::MAX)),
                    Value::CounterF64(v) => number_data_point::Value::AsDouble(*v),
                    Value::Gauge(v) => number_data_point::Value::AsInt(*v),
                    Value::Histogram(..) => number_data_point::Value::AsInt(0),
                };
                NumberDataPoint {
                    attributes: attrs(p),
                    start_time_unix_nano: start(p.start_ns),
                    time_unix_nano: now_ns,
                    value: Some(value),
                    ..Default::default()
                }
            };
            let data = match d.kind {
                Kind::Counter => metric::Data::Sum(Sum {
                    data_points: f.points.iter().map(number).collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                Kind::Gauge => metric::Data::Gauge(Gauge { data_points: f.points.iter().map(number).collect() }),
                Kind::Histogram => metric::Data::Histogram(OtlpHistogram {
                    data_points: f
                        .points
                        .iter()
                        .filter_map(|p| match &p.value {
                            Value::Histogram(h, bounds) => Some(HistogramDataPoint {
                                attributes: attrs(p),
                                start_time_unix_nano: start(p.start_ns),
                                time_unix_nano: now_ns,
                                count: h.count,
                                sum: Some(h.sum_ns as f64 / 1e9),
                                bucket_counts: h.buckets[..=bounds.len()].to_vec(),
                                explicit_bounds: bounds.iter().map(|b| *b as f64 / 1e9).collect(),
                                ..Default::default()
                            }),
                            _ => None,
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            Metric { name: d.otel.into(), description: d.help.into(), unit: unit(d.unit).into(), data: Some(data), ..Default::default() }
        })
        .collect();
    (out, points_total)
}
