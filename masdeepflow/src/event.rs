//! The events the agent writes, one JSON object per line. The contract is
//! documented in docs/events.md; keep both in step.
//!
//! Events are plain values, cheap to build on the hot path: processes,
//! addresses and names are copied as the kernel gave them (no strings made
//! per event); text is produced once, by the sink that writes the line
//! (`sink/json.rs`, `sink/text.rs`).
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use masdeepflow_common::{COMM_LEN, payload::PayloadLoss};
use masdeepflow_container::ContainerRef;
use masdeepflow_k8s::PodMeta;

/// Unix nanoseconds, written as RFC 3339.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub u64);

/// A task's `comm` as the kernel keeps it: up to 16 bytes, NUL padded, any
/// bytes (written as lossy UTF-8).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm(pub [u8; COMM_LEN]);

impl Comm {
    /// The bytes before the first NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.0[..end]
    }

    /// As text (invalid UTF-8 replaced).
    pub fn lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// Whether this is the command name `name`.
    pub fn is(&self, name: &str) -> bool {
        self.as_bytes() == name.as_bytes()
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Comm {
        let mut c = [0u8; COMM_LEN];
        let n = s.len().min(COMM_LEN);
        c[..n].copy_from_slice(&s.as_bytes()[..n]);
        Comm(c)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    /// cgroup2 id, for container enrichment (not written).
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: Comm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

/// The identity shared by the TCP events: the client side (`src`) and the
/// server side (`dst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl Connection {
    /// `ipv4` or `ipv6`.
    pub fn family(&self) -> &'static str {
        if self.src.ip.is_ipv4() { "ipv4" } else { "ipv6" }
    }
}

/// Which side of a connection the observed process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// One HTTP/1.x exchange seen from one side.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpExchange {
    pub time: Time,
    pub process: Option<Process>,
    pub role: Role,
    pub conn: Connection,
    pub method: masdeepflow_proto::http1::Method,
    /// Request target as sent (any bytes; written as lossy UTF-8).
    pub path: Vec<u8>,
    pub path_truncated: bool,
    pub host: Option<Vec<u8>>,
    pub status: Option<u16>,
    pub latency_ns: Option<u64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Request minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    pub error: Option<&'static str>,
    pub approximate: bool,
    /// The TLS library the exchange was read from (`openssl`), None when
    /// it went in the clear.
    pub tls: Option<&'static str>,
}

/// One MySQL/MariaDB command and its response, seen from one side. Text
/// from the traced system is kept as the parser gave it (shared, not
/// copied) and escaped by the sinks.
#[derive(Clone, Debug, PartialEq)]
pub struct MysqlExchange {
    pub time: Time,
    pub process: Option<Process>,
    pub role: Role,
    pub conn: Connection,
    /// `None` only for the record of a connection switching to TLS.
    pub command: Option<masdeepflow_proto::mysql::Command>,
    /// The SQL (or schema name) as sent; `None` where there is none, and
    /// always with `--sql-redact` (the sinks then write the fingerprint in
    /// its place, see `redacted`).
    pub statement: Option<Arc<[u8]>>,
    pub statement_truncated: bool,
    pub statement_id: Option<u32>,
    pub fingerprint: Option<Arc<str>>,
    /// `--sql-redact`: `statement` is written as the fingerprint, error
    /// messages with their quoted literals replaced.
    pub redacted: bool,
    pub database: Option<Arc<[u8]>>,
    pub user: Option<Arc<[u8]>>,
    pub response: Option<masdeepflow_proto::mysql::ResponseKind>,
    pub rows: Option<u64>,
    pub result_sets: u32,
    pub affected_rows: Option<u64>,
    pub last_insert_id: Option<u64>,
    pub warnings: Option<u32>,
    pub error_code: Option<u16>,
    pub sql_state: Option<[u8; 5]>,
    pub error_message: Option<Vec<u8>>,
    /// COM_STMT_PREPARE's answer: parameter and column counts.
    pub params: Option<u16>,
    pub columns: Option<u16>,
    pub latency_ns: Option<u64>,
    pub duration_ns: Option<u64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub error: Option<&'static str>,
    pub approximate: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    ProcessExec {
        time: Time,
        process: Process,
        filename: Vec<u8>,
        /// The NUL-separated argv block as read (see [`Event::args`]).
        args: Vec<u8>,
        args_truncated: bool,
        /// Walked in the kernel at exec; `None` when it could not be read.
        cwd: Option<Vec<u8>>,
        /// `cwd` holds only the innermost part of a longer path.
        cwd_truncated: bool,
    },
    ProcessExit {
        time: Time,
        process: Process,
        exit_code: Option<u32>,
        signal: Option<u32>,
        core_dumped: bool,
        duration_ns: Option<u64>,
    },
    TcpConnect {
        time: Time,
        process: Option<Process>,
        conn: Connection,
        latency_ns: u64,
        /// Positive errno of a failed connect.
        error: Option<u32>,
    },
    TcpAccept {
        time: Time,
        process: Option<Process>,
        conn: Connection,
    },
    TcpClose {
        time: Time,
        process: Option<Process>,
        role: Role,
        conn: Connection,
        bytes_sent: u64,
        bytes_received: u64,
        duration_ns: u64,
        /// Not written: the kernel's connection id.
        conn_id: u64,
        /// Not written: payload records lost since the connection's last one delivered.
        payload_loss: PayloadLoss,
        /// Not written: the kernel's `PROTO_*` for the connection (whose
        /// parser the losses concern).
        protocol: u32,
        /// Not written: a connection opened before the agent started and
        /// adopted for MySQL (its close ends its parser, and is not reported).
        adopted: bool,
    },
    Flow {
        time: Time,
        process: Option<Process>,
        role: Role,
        conn: Connection,
        bytes_sent: u64,
        bytes_received: u64,
        interval_ns: u64,
    },
    Http(HttpExchange),
    Mysql(Box<MysqlExchange>),
    AgentStart {
        time: Time,
        version: &'static str,
        kernel: String,
        probes: Vec<String>,
        events: Vec<&'static str>,
    },
    AgentStats(Box<AgentStats>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub time: Time,
    pub emitted: BTreeMap<&'static str, u64>,
    pub lost: Lost,
    /// Connections the kernel could not track (its maps were full).
    pub untracked_connections: u64,
    /// The HTTP parsers' counters: `unseen_requests`, `orphan_responses`,
    /// `pending_overflow`, `pairing_lost`, `gave_up`.
    pub http: BTreeMap<&'static str, u64>,
    /// The MySQL parsers' counters: `statements_evicted`, `unknown_statements`.
    pub mysql: BTreeMap<&'static str, u64>,
    /// TLS plaintext not seen: `calls_untracked` (the kernel's table of
    /// open calls was full), `no_connection` (a call returned plaintext on
    /// an SSL object whose socket was never seen).
    pub tls: BTreeMap<&'static str, u64>,
    /// Entries in every bounded table, kernel and user space.
    pub tables: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Kernel ring buffer full, by event type.
    pub kernel_ring_buffer: BTreeMap<&'static str, u64>,
    /// Output queue full (stdout too slow), by event type.
    pub user_queue: BTreeMap<&'static str, u64>,
    /// OTLP items not sent (collector down or too slow), by signal:
    /// `logs` (log records), `traces` (spans), `metrics` (data points).
    pub export: BTreeMap<&'static str, u64>,
}

/// Splits a NUL-separated argv block. A final argument cut by the bound is
/// kept as far as it goes.
pub fn split_args(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    let empty = block.is_empty();
    block.split(|&b| b == 0).filter(move |_| !empty)
}

impl Event {
    /// The `type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::ProcessExec { .. } => "process_exec",
            Event::ProcessExit { .. } => "process_exit",
            Event::TcpConnect { .. } => "tcp_connect",
            Event::TcpAccept { .. } => "tcp_accept",
            Event::TcpClose { .. } => "tcp_close",
            Event::Flow { .. } => "flow",
            Event::Http(_) => "http",
            Event::Mysql(_) => "mysql",
            Event::AgentStart { .. } => "agent_start",
            Event::AgentStats(_) => "agent_stats",
        }
    }

    pub fn process(&self) -> Option<&Process> {
        match self {
            Event::ProcessExec { process, .. } | Event::ProcessExit { process, .. } => Some(process),
            Event::TcpConnect { process, .. }
            | Event::TcpAccept { process, .. }
            | Event::TcpClose { process, .. }
            | Event::Flow { process, .. } => process.as_ref(),
            Event::Http(h) => h.process.as_ref(),
            Event::Mysql(m) => m.process.as_ref(),
            Event::AgentStart { .. } | Event::AgentStats(_) => None,
        }
    }

    /// The connection, for TCP, flow, HTTP and MySQL events.
    pub fn connection(&self) -> Option<&Connection> {
        match self {
            Event::TcpConnect { conn, .. } | Event::TcpAccept { conn, .. } | Event::TcpClose { conn, .. } | Event::Flow { conn, .. } => {
                Some(conn)
            }
            Event::Http(h) => Some(&h.conn),
            Event::Mysql(m) => Some(&m.conn),
            _ => None,
        }
    }

    pub fn time(&self) -> Time {
        match self {
            Event::ProcessExec { time, .. }
            | Event::ProcessExit { time, .. }
            | Event::TcpConnect { time, .. }
            | Event::TcpAccept { time, .. }
            | Event::TcpClose { time, .. }
            | Event::Flow { time, .. }
            | Event::AgentStart { time, .. } => *time,
            Event::Http(h) => h.time,
            Event::Mysql(m) => m.time,
            Event::AgentStats(s) => s.time,
        }
    }
}

/// A line of output: an event plus, for processes in containers, their
/// container and Kubernetes context.
#[derive(Clone, Debug)]
pub struct Output {
    pub event: Event,
    pub container: Option<Arc<ContainerRef>>,
    pub k8s: Option<Arc<PodMeta>>,
}

impl Output {
    pub fn plain(event: Event) -> Output {
        Output { event, container: None, k8s: None }
    }
}
