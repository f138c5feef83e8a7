//! The L4 proxy (`[[proxy]]`): start-up (data path choice, listeners),
//! the connection lines, and stopping with a drain.
pub mod engine;
pub mod probe;
pub mod sockmap;
pub mod sys;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use masdeepflow_gateway::{Datapath, ProxySpec, parse_config};
use tokio::sync::{mpsc, watch};

use super::{
    Failure,
    kernel::Kernel,
    output::{Line, Out, Time},
};
use engine::{Finished, Proxy};

/// Parts of the configuration this build accepts but does not run yet: a
/// one-line reason.
pub fn unsupported(config: &masdeepflow_gateway::config::Config) -> Result<(), String> {
    if config.accelerate.as_ref().is_some_and(|a| a.enabled) {
        return Err("[accelerate] (same-host acceleration) is not available in this build yet; remove the table".into());
    }
    if let Some(p) = config.proxies.iter().find(|p| p.health.is_some()) {
        return Err(format!(
            "proxy \"{}\": health checks of proxy backends are not available in this build yet (a refused backend is skipped per connection)",
            p.name
        ));
    }
    let _ = parse_config;
    Ok(())
}

/// The running proxies.
pub struct Running {
    pub specs: Vec<ProxySpec>,
    proxies: Vec<Arc<Proxy>>,
    stop: watch::Sender<bool>,
    reset: watch::Sender<bool>,
}

/// Chooses each proxy's data path, binds its listener and starts accepting.
pub fn start(
    kernel: &mut Kernel,
    specs: Vec<ProxySpec>,
    finished: mpsc::UnboundedSender<Finished>,
    out: &mut Vec<Line>,
) -> Result<Running, Failure> {
    let (stop, stop_rx) = watch::channel(false);
    let (reset, reset_rx) = watch::channel(false);
    let mut running = Running { specs: specs.clone(), proxies: Vec::new(), stop, reset };
    if specs.is_empty() {
        return Ok(running);
    }
    let files = sys::raise_nofile();
    log::info!("proxy: up to {files} open files (two per proxied connection)");
    // The sockmap data path, when any proxy may take it: loaded and probed once.
    let wants = specs.iter().any(|p| p.datapath != Datapath::Userspace);
    let mut sockmap: Result<Arc<engine::Kernel>, String> = Err("not needed".into());
    if wants {
        sockmap = match kernel.load_proxy() {
            Err(e) => Err(format!("the sk_skb program did not load: {}", crate::one_line(&format!("{e:#}")))),
            Ok(()) => {
                let maps = kernel.proxy.as_ref().map(|p| p.maps.clone()).expect("loaded");
                let probe = probe::probe_proxy(&maps);
                match probe.checks.iter().find(|c| !c.ok) {
                    Some(c) => Err(format!("the start-up probe failed: {}: {}", c.name, c.detail)),
                    None => {
                        let sides = engine::Sides::new(maps.worker_sides());
                        Ok(Arc::new(engine::Kernel { maps, sides }))
                    }
                }
            }
        };
    }
    for spec in specs {
        let (datapath, reason, k) = match (spec.datapath, &sockmap) {
            (Datapath::Userspace, _) => (Datapath::Userspace, "configured".to_string(), None),
            (Datapath::Sockmap, Ok(k)) => (Datapath::Sockmap, "configured; the start-up probe passed".to_string(), Some(k.clone())),
            (Datapath::Sockmap, Err(e)) => {
                return Err(Failure::Other(anyhow::anyhow!(
                    "proxy \"{}\": datapath \"sockmap\" is not usable on this kernel: {e}",
                    spec.name
                )));
            }
            (Datapath::Auto, Ok(k)) => (Datapath::Sockmap, "auto: the start-up probe passed".to_string(), Some(k.clone())),
            (Datapath::Auto, Err(e)) => (Datapath::Userspace, format!("auto: {e}"), None),
        };
        let std_listener = sys::listener(spec.listen, 4096)
            .map_err(|e| Failure::Other(anyhow::anyhow!("proxy \"{}\": listening on {}: {e}", spec.name, spec.listen)))?;
        let std_listener: std::net::TcpListener = std_listener.into();
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| Failure::Other(e.into()))?;
        out.push(Line::ProxyStart {
            time: Time::now(),
            name: spec.name.clone(),
            listen: spec.listen,
            intercept: spec.intercept,
            backends: spec.backends.iter().map(|b| b.address).collect(),
            algorithm: spec.algorithm.name(),
            datapath: datapath.name(),
            reason,
        });
        let p = Arc::new(Proxy::new(spec, datapath, k));
        running.proxies.push(p.clone());
        tokio::spawn(engine::accept_loop(p, listener, finished.clone(), stop_rx.clone(), reset_rx.clone()));
    }
    Ok(running)
}

impl Running {
    fn live(&self) -> u64 {
        self.proxies.iter().map(|p| p.live.load(Ordering::SeqCst)).sum()
    }

    /// Stops accepting, waits up to `drain` for live connections to end,
    /// then resets the rest; writes every connection's line.
    pub async fn stop(self, drain: Duration, finished: &mut mpsc::UnboundedReceiver<Finished>, out: &mut Out) {
        if self.proxies.is_empty() {
            return;
        }
        let _ = self.stop.send(true);
        let deadline = Instant::now() + drain;
        let mut reset_at: Option<Instant> = None;
        loop {
            while let Ok(f) = finished.try_recv() {
                out.line(&line(f));
            }
            out.flush();
            if self.live() == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline && reset_at.is_none() {
                let _ = self.reset.send(true);
                reset_at = Some(now);
            }
            if reset_at.is_some_and(|t| now > t + Duration::from_secs(5)) {
                log::warn!("{} proxied connections did not end after their reset", self.live());
                break;
            }
            tokio::select! {
                Some(f) = finished.recv() => out.line(&line(f)),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        while let Ok(f) = finished.try_recv() {
            out.line(&line(f));
        }
    }
}

/// A finished connection's `gateway_connection` line.
pub fn line(f: Finished) -> Line {
    Line::ProxyConnection {
        time: Time::now(),
        proxy: f.proxy,
        client: f.client,
        backend: f.backend,
        bytes_to_backend: f.bytes_to_backend,
        bytes_to_client: f.bytes_to_client,
        duration_us: f.duration.as_micros() as u64,
        datapath: f.datapath.name(),
        end: f.end,
        closed_by: f.closed_by,
        error: f.error,
    }
}
