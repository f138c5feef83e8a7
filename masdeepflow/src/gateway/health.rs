//! Health checks: one task per (service, backend) with a `health` spec,
//! connecting to the backend's own address (never the VIP: a backend is
//! never a VIP, the config refuses that) every `interval`, each attempt
//! bounded by `timeout`. Results go to the main loop, which runs the state
//! machine (`masdeepflow_gateway::health`).
use std::{collections::HashMap, net::SocketAddr, time::Duration};

use masdeepflow_gateway::{HealthKind, HealthSpec, Protocol, health::Health};
use tokio::{sync::mpsc, task::JoinHandle};

/// A backend of a service: (VIP, protocol, backend address).
pub type BackendKey = (SocketAddr, Protocol, SocketAddr);

pub struct CheckResult {
    pub key: BackendKey,
    /// Which checker sent it (results of a replaced checker are ignored).
    pub checker: u64,
    pub ok: bool,
    pub detail: String,
}

struct Checker {
    id: u64,
    spec: HealthSpec,
    task: JoinHandle<()>,
}

pub struct HealthChecks {
    checkers: HashMap<BackendKey, Checker>,
    /// State per backend; kept across reloads while the backend stays.
    pub states: HashMap<BackendKey, Health>,
    next_id: u64,
    tx: mpsc::UnboundedSender<CheckResult>,
}

impl HealthChecks {
    pub fn new() -> (HealthChecks, mpsc::UnboundedReceiver<CheckResult>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (HealthChecks { checkers: HashMap::new(), states: HashMap::new(), next_id: 0, tx }, rx)
    }

    /// Runs exactly the checks of `wanted`; a backend whose spec changed is
    /// checked anew from the up state.
    pub fn reconcile(&mut self, wanted: &[(BackendKey, HealthSpec)]) {
        let keep: HashMap<BackendKey, HealthSpec> = wanted.iter().copied().collect();
        self.checkers.retain(|k, c| {
            let same = keep.get(k) == Some(&c.spec);
            if !same {
                c.task.abort();
            }
            same
        });
        self.states.retain(|k, _| self.checkers.contains_key(k) || keep.contains_key(k));
        for (key, spec) in wanted {
            if self.checkers.contains_key(key) {
                continue;
            }
            self.next_id += 1;
            let id = self.next_id;
            self.states.insert(*key, Health::default());
            let task = tokio::spawn(check_loop(*key, id, *spec, self.tx.clone()));
            self.checkers.insert(*key, Checker { id, spec: *spec, task });
        }
    }

    /// Whether a result comes from the current checker of its backend.
    pub fn is_current(&self, r: &CheckResult) -> bool {
        self.checkers.get(&r.key).is_some_and(|c| c.id == r.checker)
    }

    pub fn spec(&self, key: &BackendKey) -> Option<HealthSpec> {
        self.checkers.get(key).map(|c| c.spec)
    }

    /// In rotation: no checker, or up.
    pub fn is_up(&self, key: &BackendKey) -> bool {
        self.states.get(key).is_none_or(|h| h.is_up())
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for c in self.checkers.values() {
            c.task.abort();
        }
    }
}

async fn check_loop(key: BackendKey, checker: u64, spec: HealthSpec, tx: mpsc::UnboundedSender<CheckResult>) {
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (ok, detail) = match spec.kind {
            HealthKind::Tcp => tcp_check(key.2, spec.timeout).await,
        };
        if tx.send(CheckResult { key, checker, ok, detail }).is_err() {
            return;
        }
    }
}

/// A TCP connect within `timeout`, then closed.
async fn tcp_check(addr: SocketAddr, timeout: Duration) -> (bool, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => (true, "ok".into()),
        Ok(Err(e)) => (false, errno_name(&e)),
        Err(_) => (false, "timeout".into()),
    }
}

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::ENETUNREACH) => "ENETUNREACH".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        _ => e.to_string(),
    }
}
