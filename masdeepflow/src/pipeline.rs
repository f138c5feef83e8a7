//! What happens to each decoded record before it is written: enrichment,
//! pairing, filtering. Owned by the agent's main loop (single-threaded).
use std::collections::BTreeMap;

use masdeepflow_common::tcp::SockState;

use crate::{
    cli::{Family, RunArgs},
    clock::Clock,
    event::{Event, Time},
    flows::FlowTable,
    lifetimes::ExecTimes,
};

/// Most live processes whose exec time is kept for `duration_ns`.
pub const EXEC_TIMES_MAX: usize = 65536;

pub struct Pipeline {
    families: Vec<Family>,
    pids: Vec<u32>,
    comms: Vec<String>,
    clock: Clock,
    flows: FlowTable,
    exec_times: ExecTimes,
}

impl Pipeline {
    pub fn new(args: &RunArgs, clock: Clock) -> Self {
        Pipeline {
            families: args.events.clone(),
            pids: args.pid.clone(),
            comms: args.comm.clone(),
            clock,
            flows: FlowTable::default(),
            exec_times: ExecTimes::new(EXEC_TIMES_MAX),
        }
    }

    fn wants(&self, f: Family) -> bool {
        self.families.contains(&f)
    }

    fn passes_filters(&self, e: &Event) -> bool {
        if self.pids.is_empty() && self.comms.is_empty() {
            return true;
        }
        let Some(p) = e.process() else { return false };
        (self.pids.is_empty() || self.pids.contains(&p.pid)) && (self.comms.is_empty() || self.comms.contains(&p.comm))
    }

    /// Events to write for one kernel record, in order.
    pub fn on_record(&mut self, event: Event, out: &mut Vec<Event>) {
        let event = match event {
            Event::ProcessExec { time, process, filename, args, args_truncated, cwd: _ } => {
                self.exec_times.exec(process.pid, time.0);
                if !self.wants(Family::Exec) {
                    return;
                }
                let cwd = std::fs::read_link(format!("/proc/{}/cwd", process.pid)).ok().map(|p| p.to_string_lossy().into_owned());
                Event::ProcessExec { time, process, filename, args, args_truncated, cwd }
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

    /// Flow records for one interval.
    pub fn on_flow_tick(&mut self, sockets: impl IntoIterator<Item = SockState>, out: &mut Vec<Event>) {
        if !self.wants(Family::Flow) {
            return;
        }
        let now = Clock::ktime_now();
        let wall = Time(self.clock.wall_ns(now));
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
            };
            for n in names {
                types.insert(*n, 0);
            }
        }
        types
    }
}
