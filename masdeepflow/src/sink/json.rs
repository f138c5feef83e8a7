//! JSON lines, written straight into a byte buffer.
//!
//! The schema is fixed (docs/events.md), so keys are written as they are and
//! only values are escaped: strings from the traced system are written as
//! lossy UTF-8 with `"`, `\` and control bytes escaped, never raw. The
//! `json_lines_parse_back` property test checks every event type against
//! serde_json's parser with arbitrary bytes in every string.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use masdeepflow_k8s::PodMeta;
use rustc_hash::FxHashMap;

use crate::{
    clock::TimeFormatter,
    event::{Connection, Endpoint, Event, HttpExchange, MysqlExchange, Output, Process, Role, split_args},
    names::{errno_name, signal_name},
};

/// Writes JSON lines, keeping what it can reuse between lines (the last
/// second's date text, each pod's `k8s` object).
#[derive(Default)]
pub struct JsonWriter {
    time: TimeFormatter,
    /// `"k8s":{...}` of pods recently written, by their shared metadata.
    pods: HashMap<usize, (Arc<PodMeta>, Vec<u8>)>,
    /// `"process":..,"role":..,"src":..,"dst":..,"family":..` of recent
    /// connections: the same for every event of a connection and side.
    sides: FxHashMap<SideKey, SideText>,
}

/// A connection side's text, kept inline (no allocation per entry).
#[derive(Clone, Copy)]
struct SideText {
    len: u8,
    text: [u8; SIDE_TEXT_MAX],
}

/// Longest side text kept (longer ones, IPv6 with escaped names, are
/// written each time).
const SIDE_TEXT_MAX: usize = 248;

/// Most pods whose `k8s` text is kept.
const POD_CACHE_MAX: usize = 4096;
/// Most connection sides whose text is kept (about 1 MiB).
const SIDE_CACHE_MAX: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SideKey {
    process: Option<(u32, u32, u32, u32, [u8; 16])>,
    role: Option<Role>,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
}

impl JsonWriter {
    /// Appends one line (with its newline) for `line` to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, line: &Output) {
        let mut o = Obj::new(out);
        o.raw_str("type", line.event.type_name());
        o.key("time");
        o.out.push(b'"');
        o.out.extend_from_slice(self.time.format(line.event.time().0));
        o.out.push(b'"');
        write_event(&mut o, &line.event, &mut self.sides);
        if let Some(c) = &line.container {
            o.key("container");
            let mut c_obj = Obj::new(o.out);
            c_obj.str("id", c.id.as_bytes());
            c_obj.str("runtime", c.runtime.as_str().as_bytes());
            c_obj.end();
        }
        if let Some(k) = &line.k8s {
            let key = Arc::as_ptr(k) as usize;
            if !self.pods.contains_key(&key) {
                if self.pods.len() >= POD_CACHE_MAX {
                    self.pods.clear();
                }
                let mut text = Vec::with_capacity(256);
                pod(&mut text, k);
                self.pods.insert(key, (k.clone(), text));
            }
            o.key("k8s");
            o.out.extend_from_slice(&self.pods[&key].1);
        }
        o.end();
        out.push(b'\n');
    }
}

/// The parts of a connection event that its side determines.
fn direct_side(o: &mut Obj<'_>, p: Option<&Process>, role: Option<Role>, c: &Connection) {
    opt_process(o, p);
    if let Some(r) = role {
        o.raw_str("role", r.as_str());
    }
    connection(o, c);
}

/// As [`direct_side`], from the cache when written before: for `http` and
/// `mysql` events, many per connection.
fn side(o: &mut Obj<'_>, cache: &mut FxHashMap<SideKey, SideText>, p: Option<&Process>, role: Option<Role>, c: &Connection) {
    let key = SideKey {
        process: p.map(|p| (p.pid, p.tid, p.ppid, p.uid, p.comm.0)),
        role,
        src: (c.src.ip, c.src.port),
        dst: (c.dst.ip, c.dst.port),
    };
    if let Some(t) = cache.get(&key) {
        o.sep();
        o.out.extend_from_slice(&t.text[..t.len as usize]);
        return;
    }
    if cache.len() >= SIDE_CACHE_MAX {
        cache.clear();
    }
    o.sep();
    let start = o.out.len();
    direct_side(&mut Obj { out: o.out, first: true }, p, role, c);
    let written = &o.out[start..];
    if written.len() <= SIDE_TEXT_MAX {
        let mut t = SideText { len: written.len() as u8, text: [0; SIDE_TEXT_MAX] };
        t.text[..written.len()].copy_from_slice(written);
        cache.insert(key, t);
    }
}

fn write_event(o: &mut Obj<'_>, event: &Event, sides: &mut FxHashMap<SideKey, SideText>) {
    match event {
        Event::ProcessExec { process: p, filename, args, args_truncated, cwd, cwd_truncated, .. } => {
            o.key("process");
            process(o.out, p);
            o.str("filename", filename);
            o.key("args");
            o.out.push(b'[');
            for (i, a) in split_args(args).enumerate() {
                if i > 0 {
                    o.out.push(b',');
                }
                string(o.out, a);
            }
            o.out.push(b']');
            o.bool("args_truncated", *args_truncated);
            o.opt_str("cwd", cwd.as_deref());
            o.bool("cwd_truncated", *cwd_truncated);
        }
        Event::ProcessExit { process: p, exit_code, signal, core_dumped, duration_ns, .. } => {
            o.key("process");
            process(o.out, p);
            o.opt_u64("exit_code", exit_code.map(u64::from));
            o.opt_str("signal", signal.map(signal_name).as_deref().map(str::as_bytes));
            o.bool("core_dumped", *core_dumped);
            o.opt_u64("duration_ns", *duration_ns);
        }
        Event::TcpConnect { process: p, conn, latency_ns, error, .. } => {
            direct_side(o, p.as_ref(), None, conn);
            o.u64("latency_ns", *latency_ns);
            o.opt_str("error", error.map(errno_name).as_deref().map(str::as_bytes));
        }
        Event::TcpAccept { process: p, conn, .. } => direct_side(o, p.as_ref(), None, conn),
        Event::TcpClose { process: p, role, conn, bytes_sent, bytes_received, duration_ns, .. } => {
            direct_side(o, p.as_ref(), Some(*role), conn);
            o.u64("bytes_sent", *bytes_sent);
            o.u64("bytes_received", *bytes_received);
            o.u64("duration_ns", *duration_ns);
        }
        Event::Flow { process: p, role, conn, bytes_sent, bytes_received, interval_ns, .. } => {
            direct_side(o, p.as_ref(), Some(*role), conn);
            o.u64("bytes_sent", *bytes_sent);
            o.u64("bytes_received", *bytes_received);
            o.u64("interval_ns", *interval_ns);
        }
        Event::Http(h) => {
            side(o, sides, h.process.as_ref(), Some(h.role), &h.conn);
            http(o, h);
        }
        Event::Mysql(m) => {
            side(o, sides, m.process.as_ref(), Some(m.role), &m.conn);
            mysql(o, m);
        }
        Event::AgentStart { version, kernel, probes, events, .. } => {
            o.str("version", version.as_bytes());
            o.str("kernel", kernel.as_bytes());
            o.key("probes");
            str_array(o.out, probes.iter().map(|p| p.as_bytes()));
            o.key("events");
            str_array(o.out, events.iter().map(|e| e.as_bytes()));
        }
        Event::AgentStats(s) => {
            o.key("emitted");
            counts(o.out, &s.emitted);
            o.key("lost");
            let mut lost = Obj::new(o.out);
            lost.key("kernel_ring_buffer");
            counts(lost.out, &s.lost.kernel_ring_buffer);
            lost.key("user_queue");
            counts(lost.out, &s.lost.user_queue);
            lost.key("export");
            counts(lost.out, &s.lost.export);
            lost.end();
            o.u64("untracked_connections", s.untracked_connections);
            o.key("http");
            counts(o.out, &s.http);
            o.key("mysql");
            counts(o.out, &s.mysql);
            o.key("tls");
            counts(o.out, &s.tls);
            o.key("tables");
            counts(o.out, &s.tables);
        }
    }
}

fn http(o: &mut Obj<'_>, h: &HttpExchange) {
    o.str("method", h.method.as_bytes());
    o.str("path", &h.path);
    o.bool("path_truncated", h.path_truncated);
    o.opt_str("host", h.host.as_deref());
    o.opt_u64("status", h.status.map(u64::from));
    o.opt_u64("latency_ns", h.latency_ns);
    o.u64("request_bytes", h.request_bytes);
    o.u64("response_bytes", h.response_bytes);
    o.raw_str("version", if h.version_minor == 0 { "1.0" } else { "1.1" });
    match h.error {
        Some(e) => o.raw_str("error", e),
        None => o.null("error"),
    }
    o.bool("approximate", h.approximate);
    o.bool("tls", h.tls.is_some());
    match h.tls {
        Some(library) => o.raw_str("tls_library", library),
        None => o.null("tls_library"),
    }
}

fn mysql(o: &mut Obj<'_>, m: &MysqlExchange) {
    match m.command {
        Some(c) => o.raw_str("command", c.name()),
        None => o.null("command"),
    }
    let statement = if m.redacted { m.fingerprint.as_deref().map(str::as_bytes) } else { m.statement.as_deref() };
    o.opt_str("statement", statement);
    o.bool("statement_truncated", m.statement_truncated);
    o.opt_u64("statement_id", m.statement_id.map(u64::from));
    o.opt_str("fingerprint", m.fingerprint.as_deref().map(str::as_bytes));
    o.opt_str("database", m.database.as_deref());
    o.opt_str("user", m.user.as_deref());
    match m.response {
        Some(r) => o.raw_str("response", r.as_str()),
        None => o.null("response"),
    }
    o.opt_u64("rows", m.rows);
    o.u64("result_sets", m.result_sets.into());
    o.opt_u64("affected_rows", m.affected_rows);
    o.opt_u64("last_insert_id", m.last_insert_id);
    o.opt_u64("warnings", m.warnings.map(u64::from));
    o.opt_u64("error_code", m.error_code.map(u64::from));
    o.opt_str("sql_state", m.sql_state.as_ref().map(|s| &s[..]));
    o.opt_str("error_message", m.error_message.as_deref());
    o.opt_u64("params", m.params.map(u64::from));
    o.opt_u64("columns", m.columns.map(u64::from));
    o.opt_u64("latency_ns", m.latency_ns);
    o.opt_u64("duration_ns", m.duration_ns);
    o.u64("request_bytes", m.request_bytes);
    o.u64("response_bytes", m.response_bytes);
    match m.error {
        Some(e) => o.raw_str("error", e),
        None => o.null("error"),
    }
    o.bool("approximate", m.approximate);
}

fn process(out: &mut Vec<u8>, p: &Process) {
    let mut o = Obj::new(out);
    o.u64("pid", p.pid.into());
    o.u64("tid", p.tid.into());
    o.u64("ppid", p.ppid.into());
    o.u64("uid", p.uid.into());
    o.str("comm", p.comm.as_bytes());
    o.end();
}

fn opt_process(o: &mut Obj<'_>, p: Option<&Process>) {
    o.key("process");
    match p {
        Some(p) => process(o.out, p),
        None => o.out.extend_from_slice(b"null"),
    }
}

fn connection(o: &mut Obj<'_>, c: &Connection) {
    o.key("src");
    endpoint(o.out, &c.src);
    o.key("dst");
    endpoint(o.out, &c.dst);
    o.raw_str("family", c.family());
}

fn endpoint(out: &mut Vec<u8>, e: &Endpoint) {
    out.extend_from_slice(b"{\"ip\":\"");
    ip(out, &e.ip);
    out.extend_from_slice(b"\",\"port\":");
    number(out, e.port.into());
    out.push(b'}');
}

/// An address as text (IPv4 without the formatting machinery).
fn ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, (*octet).into());
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

fn counts(out: &mut Vec<u8>, m: &BTreeMap<&'static str, u64>) {
    let mut o = Obj::new(out);
    for (k, v) in m {
        o.key(k);
        number(o.out, *v);
    }
    o.end();
}

fn str_array<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a [u8]>) {
    out.push(b'[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s);
    }
    out.push(b']');
}

fn pod(out: &mut Vec<u8>, k: &PodMeta) {
    let mut o = Obj::new(out);
    o.str("namespace", k.namespace.as_bytes());
    o.str("pod", k.pod.as_bytes());
    o.str("pod_uid", k.pod_uid.as_bytes());
    o.str("container", k.container.as_bytes());
    o.str("node", k.node.as_bytes());
    o.key("labels");
    let mut labels = Obj::new(o.out);
    for (name, value) in &k.labels {
        labels.sep();
        string(labels.out, name.as_bytes());
        labels.out.push(b':');
        string(labels.out, value.as_bytes());
    }
    labels.end();
    o.end();
}

/// An object being written: keys are trusted (the schema's own names),
/// values are escaped.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }

    /// `"key":` (with the comma before it where needed).
    fn key(&mut self, key: &str) {
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        self.sep();
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A value known to need no escaping (the schema's own words).
    fn raw_str(&mut self, key: &str, value: &'static str) {
        debug_assert!(value.bytes().all(|b| !ESCAPE[b as usize] && b.is_ascii()));
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.extend_from_slice(b"null");
    }

    fn str(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        string(self.out, value);
    }

    fn opt_str(&mut self, key: &str, value: Option<&[u8]>) {
        self.key(key);
        match value {
            Some(v) => string(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        number(self.out, value);
    }

    fn opt_u64(&mut self, key: &str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(v) => number(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

fn number(out: &mut Vec<u8>, v: u64) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(v).as_bytes());
}

/// Which bytes of valid UTF-8 text need escaping: `"`, `\` and controls.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// `bytes` as a JSON string: lossy UTF-8 (each invalid sequence becomes
/// U+FFFD, as `String::from_utf8_lossy` does), escaped.
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if bytes.is_ascii() {
        escape_valid(out, bytes);
    } else {
        for chunk in bytes.utf8_chunks() {
            escape_valid(out, chunk.valid().as_bytes());
            if !chunk.invalid().is_empty() {
                out.extend_from_slice("\u{fffd}".as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn escape_valid(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        if !ESCAPE[b as usize] {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

#[cfg(test)]
pub mod tests {
    use std::net::Ipv6Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::event::{AgentStats, Comm, Lost, Role, Time};

    /// The line for `line`, parsed back.
    pub fn value(line: &Output) -> serde_json::Value {
        let mut out = Vec::new();
        JsonWriter::default().write(&mut out, line);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    pub fn event_value(e: &Event) -> serde_json::Value {
        value(&Output::plain(e.clone()))
    }

    fn lossy(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn conn() -> Connection {
        Connection {
            src: Endpoint { ip: "127.0.0.1".parse().unwrap(), port: 40000 },
            dst: Endpoint { ip: "127.0.0.2".parse().unwrap(), port: 80 },
        }
    }

    fn proc_(comm: &[u8]) -> Process {
        let mut c = [0u8; 16];
        let n = comm.len().min(16);
        c[..n].copy_from_slice(&comm[..n]);
        Process { cgroup_id: 0, pid: 1, tid: 2, ppid: 3, uid: 4, comm: Comm(c) }
    }

    #[test]
    fn exec_line_is_exact() {
        let e = Event::ProcessExec {
            time: Time(1_795_711_206_123_456_789),
            process: Process { cgroup_id: 0, pid: 42, tid: 42, ppid: 1, uid: 0, comm: "sh".into() },
            filename: b"/bin/sh".to_vec(),
            args: b"sh\0-c\0echo \"hi\"\n\0".to_vec(),
            args_truncated: false,
            cwd: Some(b"/tmp".to_vec()),
            cwd_truncated: false,
        };
        let mut out = Vec::new();
        JsonWriter::default().write(&mut out, &Output::plain(e));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"process_exec\",\"time\":\"2026-11-26T16:40:06.123456789Z\",\"process\":{\"pid\":42,\"tid\":42,\"ppid\":1,\"uid\":0,\"comm\":\"sh\"},\"filename\":\"/bin/sh\",\"args\":[\"sh\",\"-c\",\"echo \\\"hi\\\"\\n\"],\"args_truncated\":false,\"cwd\":\"/tmp\",\"cwd_truncated\":false}\n"
        );
    }

    #[test]
    fn ipv6_and_stats() {
        let mut c = conn();
        c.src.ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
        c.dst.ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let v = event_value(&Event::TcpAccept { time: Time(0), process: None, conn: c });
        assert_eq!(v["src"]["ip"], "::1");
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["process"], serde_json::Value::Null);
        let mut s = AgentStats { time: Time(5), lost: Lost::default(), ..Default::default() };
        s.emitted.insert("http", 3);
        s.lost.kernel_ring_buffer.insert("payload", 1);
        let v = event_value(&Event::AgentStats(Box::new(s)));
        assert_eq!(v["emitted"]["http"], 3);
        assert_eq!(v["lost"]["kernel_ring_buffer"]["payload"], 1);
        assert_eq!(v["lost"]["user_queue"], serde_json::json!({}));
        assert_eq!(v["lost"]["export"], serde_json::json!({}));
    }

    proptest! {
        /// Every event type, with arbitrary bytes in every string, is one
        /// line of JSON whose strings read back as the lossy text.
        #[test]
        fn json_lines_parse_back(a in proptest::collection::vec(any::<u8>(), 0..64), b in proptest::collection::vec(any::<u8>(), 0..64),
                                  n in any::<u64>(), comm in proptest::collection::vec(any::<u8>(), 0..20)) {
            let p = proc_(&comm);
            let mut args = a.clone();
            args.push(0);
            args.extend_from_slice(&b);
            let exec = Event::ProcessExec { time: Time(n), process: p, filename: a.clone(), args, args_truncated: true, cwd: Some(b.clone()), cwd_truncated: true };
            let v = event_value(&exec);
            prop_assert_eq!(v["filename"].as_str().unwrap(), lossy(&a));
            prop_assert_eq!(v["cwd"].as_str().unwrap(), lossy(&b));
            prop_assert_eq!(v["process"]["comm"].as_str().unwrap(), lossy(p.comm.as_bytes()));
            let want: Vec<String> = split_args(match &exec { Event::ProcessExec { args, .. } => args, _ => unreachable!() }).map(lossy).collect();
            let got: Vec<String> = v["args"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
            prop_assert_eq!(got, want);
            let h = HttpExchange {
                time: Time(n), process: Some(p), role: Role::Server, conn: conn(), method: masdeepflow_proto::http1::Method::Get,
                path: a.clone(), path_truncated: false, host: Some(b.clone()), status: Some(200), latency_ns: Some(n),
                request_bytes: n, response_bytes: 0, version_minor: 1, error: None, approximate: false, tls: Some("openssl"),
            };
            let v = event_value(&Event::Http(h));
            prop_assert_eq!((v["tls"].as_bool(), v["tls_library"].as_str()), (Some(true), Some("openssl")));
            prop_assert_eq!(v["path"].as_str().unwrap(), lossy(&a));
            prop_assert_eq!(v["host"].as_str().unwrap(), lossy(&b));
            prop_assert_eq!(v["latency_ns"].as_u64(), Some(n));
            let m = MysqlExchange {
                time: Time(n), process: Some(p), role: Role::Client, conn: conn(), command: Some(masdeepflow_proto::mysql::Command(a.first().copied().unwrap_or(3))),
                statement: Some(a.as_slice().into()), statement_truncated: true, statement_id: Some(n as u32), fingerprint: Some(lossy(&b).into()),
                redacted: false, database: Some(b.as_slice().into()), user: Some(a.as_slice().into()), response: Some(masdeepflow_proto::mysql::ResponseKind::Error),
                rows: Some(n), result_sets: 2, affected_rows: None, last_insert_id: Some(n), warnings: Some(1), error_code: Some(3819),
                sql_state: Some([b'H', b'Y', 0xff, b'"', 0]), error_message: Some(b.clone()), params: None, columns: Some(2),
                latency_ns: Some(n), duration_ns: None, request_bytes: n, response_bytes: 1, error: Some("no_response"), approximate: true,
            };
            let v = event_value(&Event::Mysql(Box::new(m.clone())));
            prop_assert_eq!(v["statement"].as_str().unwrap(), lossy(&a));
            prop_assert_eq!(v["fingerprint"].as_str().unwrap(), lossy(&b));
            prop_assert_eq!(v["database"].as_str().unwrap(), lossy(&b));
            prop_assert_eq!(v["user"].as_str().unwrap(), lossy(&a));
            prop_assert_eq!(v["error_message"].as_str().unwrap(), lossy(&b));
            prop_assert_eq!(v["sql_state"].as_str().unwrap(), lossy(&[b'H', b'Y', 0xff, b'"', 0]));
            prop_assert_eq!(v["command"].as_str().unwrap(), m.command.unwrap().name());
            prop_assert_eq!((v["rows"].as_u64(), v["error_code"].as_u64(), v["affected_rows"].is_null()), (Some(n), Some(3819), true));
            prop_assert_eq!(v["type"].as_str(), Some("mysql"));
            let redacted = event_value(&Event::Mysql(Box::new(MysqlExchange { redacted: true, statement: None, command: None, ..m })));
            prop_assert_eq!(redacted["statement"].as_str().unwrap(), lossy(&b));
            prop_assert!(redacted["command"].is_null());
            for e in [
                Event::ProcessExit { time: Time(n), process: p, exit_code: None, signal: Some(9), core_dumped: false, duration_ns: Some(n) },
                Event::TcpConnect { time: Time(n), process: Some(p), conn: conn(), latency_ns: n, error: Some(111) },
                Event::TcpClose { time: Time(n), process: Some(p), role: Role::Client, conn: conn(), bytes_sent: n, bytes_received: 1, duration_ns: 2, conn_id: 3, payload_loss: Default::default(), protocol: 0, adopted: false },
                Event::Flow { time: Time(n), process: None, role: Role::Server, conn: conn(), bytes_sent: 1, bytes_received: n, interval_ns: 2 },
                Event::AgentStart { time: Time(n), version: "0", kernel: lossy(&a), probes: vec![lossy(&b)], events: vec!["http"] },
            ] {
                let v = event_value(&e);
                prop_assert_eq!(v["type"].as_str().unwrap(), e.type_name());
            }
        }
    }
}
