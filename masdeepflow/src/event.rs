//! The events the agent writes, one JSON object per line. The contract is
//! documented in docs/events.md; keep both in step.
use std::{collections::BTreeMap, sync::Arc};

use masdeepflow_container::ContainerRef;
use masdeepflow_k8s::PodMeta;
use serde::{Serialize, Serializer, ser::SerializeMap as _};

use crate::clock::rfc3339;
use masdeepflow_common::payload::PayloadLoss;

/// Unix nanoseconds, written as RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub u64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(rfc3339(self.0).as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    /// cgroup2 id, for container enrichment (not written).
    #[serde(skip)]
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

/// The identity shared by the TCP events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// The client side.
    pub src: Endpoint,
    /// The server side.
    pub dst: Endpoint,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    ProcessExec {
        time: Time,
        process: Process,
        filename: String,
        args: Vec<String>,
        args_truncated: bool,
        cwd: Option<String>,
    },
    ProcessExit {
        time: Time,
        process: Process,
        exit_code: Option<u32>,
        signal: Option<String>,
        core_dumped: bool,
        duration_ns: Option<u64>,
    },
    TcpConnect {
        time: Time,
        process: Option<Process>,
        #[serde(flatten)]
        conn: Connection,
        latency_ns: u64,
        error: Option<String>,
    },
    TcpAccept {
        time: Time,
        process: Option<Process>,
        #[serde(flatten)]
        conn: Connection,
    },
    TcpClose {
        time: Time,
        process: Option<Process>,
        role: &'static str,
        #[serde(flatten)]
        conn: Connection,
        bytes_sent: u64,
        bytes_received: u64,
        duration_ns: u64,
        #[serde(skip)]
        conn_id: u64,
        /// Payload records lost since the connection's last one delivered.
        #[serde(skip)]
        payload_loss: PayloadLoss,
    },
    Flow {
        time: Time,
        process: Option<Process>,
        role: &'static str,
        #[serde(flatten)]
        conn: Connection,
        bytes_sent: u64,
        bytes_received: u64,
        interval_ns: u64,
    },
    Http {
        time: Time,
        process: Option<Process>,
        role: &'static str,
        #[serde(flatten)]
        conn: Connection,
        method: String,
        path: String,
        path_truncated: bool,
        host: Option<String>,
        status: Option<u16>,
        latency_ns: Option<u64>,
        request_bytes: u64,
        response_bytes: u64,
        version: &'static str,
        error: Option<&'static str>,
        approximate: bool,
    },
    AgentStart {
        time: Time,
        version: &'static str,
        kernel: String,
        probes: Vec<String>,
        events: Vec<&'static str>,
    },
    AgentStats {
        time: Time,
        emitted: BTreeMap<&'static str, u64>,
        lost: Lost,
        /// Connections the kernel could not track (its maps were full).
        untracked_connections: u64,
        /// Entries in every bounded table, kernel and user space.
        tables: BTreeMap<&'static str, u64>,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lost {
    /// Kernel ring buffer full, by event type.
    pub kernel_ring_buffer: BTreeMap<&'static str, u64>,
    /// Output queue full (stdout too slow), by event type.
    pub user_queue: BTreeMap<&'static str, u64>,
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
            Event::Http { .. } => "http",
            Event::AgentStart { .. } => "agent_start",
            Event::AgentStats { .. } => "agent_stats",
        }
    }

    pub fn process(&self) -> Option<&Process> {
        match self {
            Event::ProcessExec { process, .. } | Event::ProcessExit { process, .. } => Some(process),
            Event::TcpConnect { process, .. }
            | Event::TcpAccept { process, .. }
            | Event::TcpClose { process, .. }
            | Event::Flow { process, .. }
            | Event::Http { process, .. } => process.as_ref(),
            Event::AgentStart { .. } | Event::AgentStats { .. } => None,
        }
    }

    /// The connection, for TCP, flow and HTTP events.
    pub fn connection(&self) -> Option<&Connection> {
        match self {
            Event::TcpConnect { conn, .. }
            | Event::TcpAccept { conn, .. }
            | Event::TcpClose { conn, .. }
            | Event::Flow { conn, .. }
            | Event::Http { conn, .. } => Some(conn),
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
            | Event::Http { time, .. }
            | Event::AgentStart { time, .. }
            | Event::AgentStats { time, .. } => *time,
        }
    }
}

/// A line of output: an event plus, for processes in containers, their
/// container and Kubernetes context.
#[derive(Clone, Debug, Serialize)]
pub struct Output {
    #[serde(flatten)]
    pub event: Event,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "container_json")]
    pub container: Option<Arc<ContainerRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<Arc<PodMeta>>,
}

impl Output {
    pub fn plain(event: Event) -> Output {
        Output { event, container: None, k8s: None }
    }
}

/// `{"id": "<64 hex>", "runtime": "containerd"}`.
fn container_json<S: Serializer>(c: &Option<Arc<ContainerRef>>, s: S) -> Result<S::Ok, S::Error> {
    let Some(c) = c else { return s.serialize_none() };
    let mut m = s.serialize_map(Some(2))?;
    m.serialize_entry("id", &c.id)?;
    m.serialize_entry("runtime", c.runtime.as_str())?;
    m.end()
}
