//! What happens to each decoded record before it is written: enrichment,
//! pairing, filtering. Owned by the agent's main loop (single-threaded).
use std::collections::BTreeMap;

use masdeepflow_common::tcp::SockState;

use crate::{
    cli::{Family, RunArgs},
    clock::Clock,
    containers::Containers,
    decode::Record,
    event::{Event, Output, Time},
    flows::FlowTable,
    lifetimes::ExecTimes,
    protocols::{MysqlOptions, Protocol, Tracker},
};

/// Most live processes whose exec time is kept for `duration_ns`.
pub const EXEC_TIMES_MAX: usize = 65536;

pub struct Pipeline {
    families: Vec<Family>,
    pids: Vec<u32>,
    comms: Vec<String>,
    ports: Vec<u16>,
    clock: Clock,
    flows: FlowTable,
    exec_times: ExecTimes,
    protocols: Tracker,
    containers: Containers,
    pods_index: Option<masdeepflow_k8s::PodIndex>,
    namespaces: Vec<String>,
    pods: Vec<String>,
}

impl Pipeline {
    pub fn new(args: &RunArgs, clock: Clock, containers: Containers, pods_index: Option<masdeepflow_k8s::PodIndex>) -> Self {
        Pipeline {
            families: args.events.clone(),
            pids: args.pid.clone(),
            comms: args.comm.clone(),
            ports: args.port.clone(),
            clock,
            flows: FlowTable::default(),
            exec_times: ExecTimes::new(EXEC_TIMES_MAX),
            protocols: Tracker::new(MysqlOptions { sql_bytes: args.sql_bytes as usize, redact: args.sql_redact }),
            containers,
            pods_index,
            namespaces: args.namespace.clone(),
            pods: args.pod.clone(),
        }
    }

    fn wants(&self, f: Family) -> bool {
        self.families.contains(&f)
    }

    fn passes_filters(&self, e: &Event) -> bool {
        if !self.ports.is_empty() {
            match e.connection() {
                Some(c) if self.ports.contains(&c.src.port) || self.ports.contains(&c.dst.port) => {}
                _ => return false,
            }
        }
        if self.pids.is_empty() && self.comms.is_empty() {
            return true;
        }
        let Some(p) = e.process() else { return false };
        (self.pids.is_empty() || self.pids.contains(&p.pid)) && (self.comms.is_empty() || self.comms.iter().any(|c| p.comm.is(c)))
    }

    /// Events to write for one kernel record, in order.
    pub fn on_record(&mut self, record: Record<'_>, out: &mut Vec<Event>) {
        let event = match record {
            Record::Event(e) => e,
            Record::Payload(p) => {
                let start = out.len();
                self.protocols.on_payload(p, out);
                self.keep_wanted_exchanges(out, start);
                return;
            }
            Record::CgroupMkdir { id, path } => {
                self.containers.on_mkdir(id, &path);
                return;
            }
            Record::CgroupRmdir { id } => {
                self.containers.on_rmdir(id, std::time::Instant::now());
                return;
            }
        };
        let event = match event {
            exec @ Event::ProcessExec { .. } => {
                if let Event::ProcessExec { time, process, .. } = &exec {
                    self.exec_times.exec(process.pid, time.0);
                }
                if !self.wants(Family::Exec) {
                    return;
                }
                exec
            }
            Event::ProcessExit { time, process, exit_code, signal, core_dumped, duration_ns: _ } => {
                let duration_ns = self.exec_times.exit(process.pid, time.0);
                if !self.wants(Family::Exit) {
                    return;
                }
                Event::ProcessExit { time, process, exit_code, signal, core_dumped, duration_ns }
            }
            e @ (Event::TcpConnect { .. } | Event::TcpAccept { .. }) => {
                if !self.wants(Family::Tcp) {
                    return;
                }
                e
            }
            close @ Event::TcpClose { .. } => {
                if let Event::TcpClose { conn_id, time, role, payload_loss, protocol, adopted, .. } = &close {
                    let start = out.len();
                    self.protocols.on_close(*conn_id, *time, *role, payload_loss, *protocol, out);
                    self.keep_wanted_exchanges(out, start);
                    if *adopted {
                        // Opened before the agent started: no tcp or flow events.
                        return;
                    }
                }
                if self.wants(Family::Flow) {
                    let now = self.clock.ktime_ns(close.time().0);
                    if let Some(flow) = self.flows.close(&close, now).filter(|f| self.passes_filters(f)) {
                        out.push(flow);
                    }
                }
                if !self.wants(Family::Tcp) {
                    return;
                }
                close
            }
            other => other,
        };
        if self.passes_filters(&event) {
            out.push(event);
        }
    }

    /// Applies the http and mysql family choices and the filters to
    /// `out[start..]`.
    fn keep_wanted_exchanges(&self, out: &mut Vec<Event>, start: usize) {
        let (http, mysql) = (self.wants(Family::Http), self.wants(Family::Mysql));
        if !http && !mysql {
            out.truncate(start);
            return;
        }
        // Compacted in place: events are large, and most pass.
        let mut kept = start;
        for i in start..out.len() {
            let wanted = match &out[i] {
                Event::Http(_) => http,
                Event::Mysql(_) => mysql,
                _ => true,
            };
            if wanted && self.passes_filters(&out[i]) {
                if kept != i {
                    out.swap(kept, i);
                }
                kept += 1;
            }
        }
        out.truncate(kept);
    }

    /// Drops parser state of connections the kernel no longer tracks.
    pub fn retain_live_connections(&mut self, live: &std::collections::HashSet<u64>) {
        self.protocols.retain_live(live);
    }

    /// Adds container (and Kubernetes) context to `events` and applies
    /// the namespace and pod filters, moving them to `out`.
    pub fn enrich_into(&mut self, events: &mut Vec<Event>, out: &mut Vec<Output>) {
        for event in events.drain(..) {
            let container = event.process().and_then(|p| self.containers.container(p.cgroup_id, p.pid));
            let k8s = match (&container, &self.pods_index) {
                (Some(c), Some(index)) => index.lookup(&c.id),
                _ => None,
            };
            let line = Output { event, container, k8s };
            if !self.namespaces.is_empty() || !self.pods.is_empty() {
                let Some(k) = &line.k8s else { continue };
                if (!self.namespaces.is_empty() && !self.namespaces.contains(&k.namespace))
                    || (!self.pods.is_empty() && !self.pods.contains(&k.pod))
                {
                    continue;
                }
            }
            out.push(line);
        }
    }

    /// The MySQL parsers' counters (so far).
    pub fn mysql_counters(&self) -> crate::protocols::MysqlCounters {
        self.protocols.mysql_counters()
    }

    pub fn http_counters(&self) -> crate::protocols::HttpCounters {
        self.protocols.http_counters()
    }

    /// Exchanges of `protocol` lost with their payload records (so far).
    pub fn exchanges_lost(&self, protocol: Protocol) -> u64 {
        self.protocols.lost(protocol)
    }

    /// Forgets cgroups removed long enough ago.
    pub fn prune_cgroups(&mut self) {
        self.containers.prune(std::time::Instant::now());
    }

    /// Sizes of the agent's own bounded tables.
    pub fn table_sizes(&self) -> [(&'static str, u64); 6] {
        [
            ("cgroups", self.containers.len() as u64),
            ("pods", self.pods_index.as_ref().map_or(0, |i| i.len() as u64)),
            ("flows", self.flows.len() as u64),
            ("http_connections", self.protocols.len(Protocol::Http) as u64),
            ("mysql_connections", self.protocols.len(Protocol::Mysql) as u64),
            ("exec_times", self.exec_times.len() as u64),
        ]
    }

    /// Flow records for one interval.
    pub fn on_flow_tick(&mut self, sockets: impl IntoIterator<Item = SockState>, out: &mut Vec<Event>) {
        if !self.wants(Family::Flow) {
            return;
        }
        let now = Clock::ktime_now();
        let wall = Time(self.clock.wall_ns(now));
        // Connections adopted for MySQL were opened before the agent
        // started: their counts start at adoption, they have no flows.
        let sockets = sockets.into_iter().filter(|s| s.adopted == 0);
        for flow in self.flows.tick(sockets, now, wall) {
            if self.passes_filters(&flow) {
                out.push(flow);
            }
        }
    }

    /// Event types the chosen families produce, for zeroed counters.
    pub fn event_types(&self) -> BTreeMap<&'static str, u64> {
        let mut types = BTreeMap::new();
        for f in &self.families {
            let names: &[&'static str] = match f {
                Family::Exec => &["process_exec"],
                Family::Exit => &["process_exit"],
                Family::Tcp => &["tcp_connect", "tcp_accept", "tcp_close"],
                Family::Flow => &["flow"],
                Family::Http => &["http"],
                Family::Mysql => &["mysql"],
            };
            for n in names {
                types.insert(*n, 0);
            }
        }
        types
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{
        cli::Cli,
        event::{Connection, Endpoint, HttpExchange, Process, Role},
    };

    fn http(pid: u32, port: u16) -> Event {
        Event::Http(HttpExchange {
            time: Time(1),
            process: Some(Process { cgroup_id: 0, pid, tid: pid, ppid: 1, uid: 0, comm: "c".into() }),
            role: Role::Server,
            conn: Connection {
                src: Endpoint { ip: "127.0.0.1".parse().unwrap(), port: 40000 },
                dst: Endpoint { ip: "127.0.0.1".parse().unwrap(), port },
            },
            method: masdeepflow_proto::http1::Method::Get,
            path: format!("/{pid}/{port}").into_bytes(),
            path_truncated: false,
            host: None,
            status: Some(200),
            latency_ns: Some(1),
            request_bytes: 1,
            response_bytes: 1,
            version_minor: 1,
            error: None,
            approximate: false,
            tls: None,
        })
    }

    fn path(e: &Event) -> &[u8] {
        match e {
            Event::Http(h) => &h.path,
            _ => b"",
        }
    }

    /// Filtering the events one payload produced keeps the matching ones in
    /// order and leaves the batch's earlier events alone.
    #[test]
    fn http_filters_apply_to_new_events_only() {
        let cli = Cli::try_parse_from(["masdeepflow", "--port", "80", "--pid", "7"]).unwrap();
        let pipeline = Pipeline::new(&cli.run, Clock::with_offset(0), Containers::default(), None);
        let mut out = vec![http(9, 9)];
        out.extend([http(7, 80), http(8, 80), http(7, 81), http(7, 80), http(8, 81)]);
        pipeline.keep_wanted_exchanges(&mut out, 1);
        assert_eq!(out.iter().map(path).collect::<Vec<_>>(), [&b"/9/9"[..], b"/7/80", b"/7/80"]);
    }
}
