//! The gateway's JSON lines on stdout (described in docs/gateway.md).
use std::{
    collections::BTreeMap,
    io::{BufWriter, ErrorKind, Stdout, Write as _},
    net::SocketAddr,
};

use masdeepflow_gateway::{Protocol, ServiceSpec, health::State};
use serde::Serialize;

use crate::clock::{Clock, rfc3339};

/// A time written as RFC 3339 UTC with nanoseconds.
#[derive(Clone, Copy)]
pub struct Time(pub u64);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(rfc3339(self.0).as_str())
    }
}

impl Time {
    pub fn now() -> Time {
        Time(Clock::new().wall_ns(Clock::ktime_now()))
    }
}

#[derive(Serialize)]
pub struct ServiceLine {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub algorithm: &'static str,
    pub backends: Vec<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub source: &'static str,
}

impl ServiceLine {
    pub fn of(spec: &ServiceSpec, source: &'static str) -> ServiceLine {
        ServiceLine {
            name: spec.name.clone(),
            vip: spec.vip,
            protocol: spec.protocol,
            algorithm: spec.algorithm.name(),
            backends: spec.backends.iter().map(|b| b.address).collect(),
            scope: spec.scope.as_ref().map(|p| p.display().to_string()),
            source,
        }
    }
}

#[derive(Serialize)]
pub struct ServiceChangeLine {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends_added: Vec<SocketAddr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends_removed: Vec<SocketAddr>,
}

#[derive(Serialize, Default)]
pub struct BackendStatsLine {
    pub address: Option<SocketAddr>,
    pub state: Option<State>,
    pub connections: u64,
}

#[derive(Serialize)]
pub struct ServiceStatsLine {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub connections: u64,
    pub refused_no_backend: u64,
    pub backends: Vec<BackendStatsLine>,
}

#[derive(Serialize)]
pub struct Endpoint {
    pub ip: std::net::IpAddr,
    pub port: u16,
}

#[derive(Serialize)]
pub struct ProcessLine {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    GatewayStart {
        time: Time,
        version: &'static str,
        kernel: String,
        config: Option<String>,
        cgroup_root: String,
        attached: Vec<String>,
        features: super::kernel::Features,
        services: Vec<ServiceLine>,
    },
    ServiceUpdate {
        time: Time,
        /// `reload`, `kubernetes`.
        reason: &'static str,
        added: Vec<ServiceLine>,
        updated: Vec<ServiceChangeLine>,
        removed: Vec<ServiceChangeLine>,
        attached: Vec<String>,
    },
    ReloadFailed {
        time: Time,
        config: String,
        error: String,
    },
    BackendHealth {
        time: Time,
        service: String,
        vip: SocketAddr,
        protocol: Protocol,
        backend: SocketAddr,
        state: State,
        /// The last check's result, e.g. `ECONNREFUSED`, `timeout`, `ok`.
        check: String,
        in_rotation: usize,
    },
    BackendsReset {
        time: Time,
        service: String,
        vip: SocketAddr,
        backend: SocketAddr,
        /// Connections reset (sock_diag destroy).
        connections: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    GatewayConnection {
        time: Time,
        #[serde(skip_serializing_if = "Option::is_none")]
        process: Option<ProcessLine>,
        cgroup_id: u64,
        service: String,
        protocol: Protocol,
        /// `connect`, or `sendmsg` (an unconnected UDP socket).
        via: &'static str,
        vip: Endpoint,
        backend: Endpoint,
    },
    GatewayStats {
        time: Time,
        services: Vec<ServiceStatsLine>,
        counters: BTreeMap<&'static str, u64>,
        lost: BTreeMap<&'static str, u64>,
        tables: BTreeMap<&'static str, u64>,
    },
}

/// Writes lines to stdout; a closed stdout ends the gateway quietly.
pub struct Out {
    w: BufWriter<Stdout>,
    pub closed: bool,
}

impl Out {
    pub fn new() -> Out {
        Out { w: BufWriter::new(std::io::stdout()), closed: false }
    }

    /// Writes one line (buffered until [`Out::flush`]).
    pub fn line(&mut self, line: &Line) {
        if self.closed {
            return;
        }
        let r = serde_json::to_writer(&mut self.w, line).map_err(std::io::Error::from).and_then(|()| self.w.write_all(b"\n"));
        self.check(r);
    }

    pub fn flush(&mut self) {
        if !self.closed {
            let r = self.w.flush();
            self.check(r);
        }
    }

    fn check(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            if e.kind() != ErrorKind::BrokenPipe {
                log::warn!("writing to stdout: {e}");
            }
            self.closed = true;
        }
    }
}
