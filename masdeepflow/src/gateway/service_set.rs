//! The services the gateway runs (from its file and from Kubernetes), the
//! health of their backends and the table the kernel holds, kept in step:
//! every change goes through one plan (`masdeepflow_gateway::table`).
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Instant,
};

use masdeepflow_gateway::{
    Drain, Protocol, ServiceSpec,
    config::{Config, parse_config},
    health::State,
    scope,
    table::{Change, Desired, Table, words},
};

use super::{
    drain,
    health::{CheckResult, HealthChecks},
    kernel::Kernel,
    output::{BackendStatsLine, Line, Out, ServiceChangeLine, ServiceLine, ServiceStatsLine, Time},
};

/// Prefix of install errors that are not the configuration's fault.
pub const ATTACH_FAILED: &str = "attaching: ";

/// Reads and checks a configuration file: errors are one line naming the
/// file and the line.
pub fn read_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_config(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub struct ServiceSet {
    pub kernel: Kernel,
    table: Table,
    pub root: PathBuf,
    file: Vec<ServiceSpec>,
    kube: Vec<ServiceSpec>,
    pub health: HealthChecks,
    started: Instant,
    /// Service id -> (name, protocol), for connection events.
    pub names: HashMap<u32, (String, Protocol)>,
}

impl ServiceSet {
    pub fn new(kernel: Kernel, root: PathBuf, health: HealthChecks) -> ServiceSet {
        ServiceSet {
            kernel,
            table: Table::default(),
            root,
            file: Vec::new(),
            kube: Vec::new(),
            health,
            started: Instant::now(),
            names: HashMap::new(),
        }
    }

    /// File services first; a Kubernetes service whose VIP a file service
    /// has already is left out.
    fn all(&self) -> Vec<(ServiceSpec, &'static str)> {
        let mut out: Vec<(ServiceSpec, &'static str)> = self.file.iter().map(|s| (s.clone(), "config")).collect();
        let taken: BTreeSet<_> = self.file.iter().map(|s| (s.vip, s.protocol)).collect();
        for s in &self.kube {
            if taken.contains(&(s.vip, s.protocol)) {
                log::debug!("kubernetes service {} left out: its VIP {} is in the configuration file", s.name, s.vip);
            } else {
                out.push((s.clone(), "kubernetes"));
            }
        }
        out
    }

    pub fn lines(&self) -> Vec<ServiceLine> {
        self.all().iter().map(|(s, source)| ServiceLine::of(s, source)).collect()
    }

    /// Replaces the file's services and installs the result; on error the
    /// running services stay as they were.
    pub fn set_file(&mut self, services: Vec<ServiceSpec>, out: &mut Out, reason: Option<&'static str>) -> Result<(), String> {
        let drains = self.drains();
        let old = std::mem::replace(&mut self.file, services);
        let r = self.install(out, reason, &drains);
        if r.is_err() {
            self.file = old;
        }
        r
    }

    pub fn set_kube(&mut self, services: Vec<ServiceSpec>, out: &mut Out) -> Result<(), String> {
        let drains = self.drains();
        let old = std::mem::replace(&mut self.kube, services);
        let r = self.install(out, Some("kubernetes"), &drains);
        if r.is_err() {
            self.kube = old;
        }
        r
    }

    /// The drain setting of each running service (by VIP and protocol).
    fn drains(&self) -> HashMap<(SocketAddr, Protocol), Drain> {
        self.all().into_iter().map(|(s, _)| ((s.vip, s.protocol), s.drain)).collect()
    }

    fn resolve_scope(&self, path: &Path) -> Result<(u64, u32), String> {
        let level = scope::level(&self.root, path)
            .ok_or_else(|| format!("scope {} is not under the cgroup2 mount {}", path.display(), self.root.display()))?;
        let meta = std::fs::metadata(path).map_err(|e| format!("scope {}: {e}", path.display()))?;
        if !meta.is_dir() {
            return Err(format!("scope {} is not a cgroup directory", path.display()));
        }
        Ok((meta.ino(), level))
    }

    /// Brings the kernel to the current services and health: attach where
    /// needed, write the plan, detach what is no longer needed, reset
    /// drained connections; then the service_update line (with a reason).
    fn install(
        &mut self,
        out: &mut Out,
        reason: Option<&'static str>,
        drains: &HashMap<(SocketAddr, Protocol), Drain>,
    ) -> Result<(), String> {
        let services = self.all();
        let mut scopes = Vec::with_capacity(services.len());
        for (s, _) in &services {
            scopes.push(match &s.scope {
                Some(p) => Some(self.resolve_scope(p).map_err(|e| format!("service \"{}\": {e}", s.name))?),
                None => None,
            });
        }
        let desired: Vec<Desired> = services
            .iter()
            .zip(&scopes)
            .map(|((spec, _), scope)| Desired {
                spec,
                up: spec.backends.iter().map(|b| self.health.is_up(&(spec.vip, spec.protocol, b.address))).collect(),
                scope: *scope,
            })
            .collect();
        let before = self.table.clone();
        let now_ms = self.started.elapsed().as_millis() as u64;
        let plan = self.table.plan(&desired, now_ms).map_err(|e| e.to_string())?;
        let scope_paths: Vec<Option<&Path>> = services.iter().map(|(s, _)| s.scope.as_deref()).collect();
        let points = scope::attach_points(&self.root, &scope_paths);
        let attached = self.kernel.attached();
        for p in points.iter().filter(|p| !attached.contains(p)) {
            if let Err(e) = self.kernel.attach(p) {
                self.table = before;
                for p in points.iter().filter(|p| !attached.contains(p)) {
                    self.kernel.detach(p);
                }
                return Err(format!("{ATTACH_FAILED}{e:#}"));
            }
        }
        if let Err(e) = self.kernel.apply(&plan) {
            // A map write failed half way: the kernel holds a mix, so stop.
            return Err(format!("{e:#} (the kernel's service table is now incomplete)"));
        }
        for p in attached.iter().filter(|p| !points.contains(p)) {
            self.kernel.detach(p);
        }
        let wanted: Vec<_> = services
            .iter()
            .filter_map(|(s, _)| s.health.map(|h| (s, h)))
            .flat_map(|(s, h)| s.backends.iter().map(move |b| ((s.vip, s.protocol, b.address), h)))
            .collect();
        self.health.reconcile(&wanted);
        self.names = self.table.services().into_iter().map(|e| (e.service_id, (e.name, e.protocol))).collect();

        // Drains: backends that left a service whose drain was "reset".
        let mut added = Vec::new();
        let mut updated = Vec::new();
        let mut removed = Vec::new();
        for change in &plan.changes {
            match change {
                Change::Added { name, .. } => {
                    if let Some((s, source)) = services.iter().find(|(s, _)| &s.name == name) {
                        added.push(ServiceLine::of(s, source));
                    }
                }
                Change::Updated { name, vip, protocol, added: a, removed: r, .. } => {
                    if drains.get(&(*vip, *protocol)) == Some(&Drain::Reset) {
                        for b in r {
                            drain::reset(&self.kernel, name, *vip, *b, out);
                        }
                    }
                    if !a.is_empty() || !r.is_empty() || reason.is_some() {
                        updated.push(ServiceChangeLine {
                            name: name.clone(),
                            vip: *vip,
                            protocol: *protocol,
                            backends_added: a.clone(),
                            backends_removed: r.clone(),
                        });
                    }
                }
                Change::Removed { name, vip, protocol, backends } => {
                    if drains.get(&(*vip, *protocol)) == Some(&Drain::Reset) {
                        for b in backends {
                            drain::reset(&self.kernel, name, *vip, *b, out);
                        }
                    }
                    removed.push(ServiceChangeLine {
                        name: name.clone(),
                        vip: *vip,
                        protocol: *protocol,
                        backends_added: vec![],
                        backends_removed: backends.clone(),
                    });
                }
            }
        }
        if let Some(reason) = reason
            && !(added.is_empty() && updated.is_empty() && removed.is_empty())
        {
            {
                out.line(&Line::ServiceUpdate {
                    time: Time::now(),
                    reason,
                    added,
                    updated,
                    removed,
                    attached: self.kernel.attached().iter().map(|p| p.display().to_string()).collect(),
                });
            }
        }
        Ok(())
    }

    /// One health check's result: a change of state is written and the
    /// service's rotation rebuilt.
    pub fn on_check(&mut self, r: CheckResult, out: &mut Out) {
        if !self.health.is_current(&r) {
            return;
        }
        let Some(spec) = self.health.spec(&r.key) else { return };
        let Some(state) = self.health.states.get_mut(&r.key) else { return };
        let Some(new) = state.record(r.ok, spec.unhealthy_after, spec.healthy_after) else { return };
        let (vip, protocol, backend) = r.key;
        let services = self.all();
        let Some((svc, _)) = services.iter().find(|(s, _)| s.vip == vip && s.protocol == protocol) else { return };
        let in_rotation = svc.backends.iter().filter(|b| self.health.is_up(&(vip, protocol, b.address))).count();
        out.line(&Line::BackendHealth {
            time: Time::now(),
            service: svc.name.clone(),
            vip,
            protocol,
            backend,
            state: new,
            check: r.detail,
            in_rotation,
        });
        let reset = new == State::Down && svc.drain == Drain::Reset;
        let name = svc.name.clone();
        let drains = self.drains();
        if let Err(e) = self.install(out, None, &drains) {
            log::error!("rebuilding service {name} after a health change: {e}");
        }
        if reset {
            drain::reset(&self.kernel, &name, vip, backend, out);
        }
    }

    pub fn stats(&self) -> Line {
        let counters = self.kernel.counters();
        use masdeepflow_common::gateway::*;
        let services: Vec<ServiceStatsLine> = self
            .table
            .services()
            .into_iter()
            .map(|e| {
                let s = self.kernel.service_stats(e.service_id);
                ServiceStatsLine {
                    name: e.name.clone(),
                    vip: e.vip,
                    protocol: e.protocol,
                    connections: s.translated,
                    refused_no_backend: s.no_backend,
                    backends: e
                        .backends
                        .iter()
                        .map(|b| BackendStatsLine {
                            address: Some(b.address),
                            state: Some(if self.health.is_up(&(e.vip, e.protocol, b.address)) { State::Up } else { State::Down }),
                            connections: self.kernel.backend_connections(b.backend_id),
                        })
                        .collect(),
                }
            })
            .collect();
        let backends: u64 = services.iter().map(|s| s.backends.len() as u64).sum();
        Line::GatewayStats {
            time: Time::now(),
            tables: [
                ("services", services.len() as u64),
                ("backends", backends),
                ("slots", self.table.slots_in_use() as u64),
                ("reverse", self.kernel.reverse_entries()),
            ]
            .into(),
            services,
            counters: [
                ("translated", counters[C_TRANSLATED as usize]),
                ("refused_no_backend", counters[C_NO_BACKEND as usize]),
                ("reversed", counters[C_REVERSED as usize]),
                ("out_of_scope", counters[C_OUT_OF_SCOPE as usize]),
                ("reverse_full", counters[C_REVERSE_FULL as usize]),
                ("bad_slot", counters[C_BAD_SLOT as usize]),
            ]
            .into(),
            lost: [("connection_events", counters[C_EVENTS_LOST as usize])].into(),
        }
    }
}

/// The kernel's words of an address, for matching reverse entries.
pub fn kernel_addr(a: SocketAddr) -> ([u32; 4], u16) {
    (words(a.ip()).0, a.port())
}
