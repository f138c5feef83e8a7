//! The running gateway: load and attach, then one loop over signals,
//! configuration changes, health results, Kubernetes updates, connection
//! records and the stats timer. SIGINT/SIGTERM detach everything and exit 0.
use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, RingBuf};
use masdeepflow_common::gateway::{ConnectionRecord, FAMILY_V4};
use masdeepflow_gateway::table::ip_of;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at},
};

use super::{
    EventFamily, Failure, GatewayArgs,
    health::HealthChecks,
    kernel::Kernel,
    output::{Endpoint, Line, Out, ProcessLine, Time},
    service_set::{ServiceSet, read_config},
};
use crate::clock::Clock;

pub fn run(args: GatewayArgs) -> Result<(), Failure> {
    let node = args.node_name.clone().filter(|n| !n.is_empty());
    if args.config.is_none() && node.is_none() {
        return Err(Failure::Config("give --config FILE, or --node-name for Kubernetes Services, or both".into()));
    }
    // The configuration is checked before anything is loaded.
    let (config_text, services) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
            let config = masdeepflow_gateway::parse_config(&text).map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
            (Some(text), config.services)
        }
        None => (None, Vec::new()),
    };
    let root = crate::containers::cgroup2_root().ok_or_else(|| anyhow!("no cgroup2 file system is mounted"))?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(anyhow::Error::from)?;
    let _in_runtime = runtime.enter();
    let mut signals = Signals {
        int: signal(SignalKind::interrupt()).map_err(anyhow::Error::from)?,
        term: signal(SignalKind::terminate()).map_err(anyhow::Error::from)?,
        hup: signal(SignalKind::hangup()).map_err(anyhow::Error::from)?,
    };
    let events = args.events.contains(&EventFamily::Connections);
    let kernel = Kernel::load(events, args.ring_buffer_size)?;
    let (health, mut results) = HealthChecks::new();
    let mut set = ServiceSet::new(kernel, root.clone(), health);
    let mut out = Out::new();
    // Scopes are resolved and programs attached here: a scope that does not
    // exist is a configuration error, with nothing left attached.
    set.set_file(services, &mut out, None).map_err(|e| match (&args.config, e.strip_prefix(super::service_set::ATTACH_FAILED)) {
        (_, Some(e)) => Failure::Other(anyhow!("{e}")),
        (Some(p), None) => Failure::Config(format!("{}: {e}", p.display())),
        (None, None) => Failure::Config(e),
    })?;
    out.line(&Line::GatewayStart {
        time: Time::now(),
        version: env!("CARGO_PKG_VERSION"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default(),
        config: args.config.as_ref().map(|p| p.display().to_string()),
        cgroup_root: root.display().to_string(),
        attached: set.kernel.attached().iter().map(|p| p.display().to_string()).collect(),
        features: set.kernel.features,
        services: set.lines(),
    });
    out.flush();

    let kube_scope = args.kubernetes_scope.clone();
    let mut kube = node.map(|_| super::kube::spawn(kube_scope));
    let mut ring = set.kernel.ring.take();
    let clock = Clock::new();
    let mut last_text = config_text;
    // The file's text at the previous poll: a change is applied once it has
    // stayed the same for one poll, so a file caught half written is not.
    let mut seen_text: Option<String> = last_text.clone();
    let now = tokio::time::Instant::now();
    let mut stats_timer = interval_at(now + args.stats_interval, args.stats_interval);
    stats_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut file_timer = tokio::time::interval(Duration::from_millis(500));
    file_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let result: anyhow::Result<()> = runtime.block_on(async {
        loop {
            tokio::select! {
                _ = signals.int.recv() => break,
                _ = signals.term.recv() => break,
                _ = signals.hup.recv() => {
                    if let Some(path) = &args.config {
                        reload(&mut set, path, &mut last_text, &mut out, None);
                    }
                }
                _ = file_timer.tick(), if args.config.is_some() => {
                    if let Some(path) = &args.config {
                        reload(&mut set, path, &mut last_text, &mut out, Some(&mut seen_text));
                    }
                }
                Some(r) = results.recv() => set.on_check(r, &mut out),
                Some(services) = recv_kube(&mut kube) => {
                    if let Err(e) = set.set_kube(services, &mut out) {
                        log::warn!("kubernetes services not applied: {e}");
                    }
                }
                _ = stats_timer.tick() => out.line(&set.stats()),
                guard = readable(&mut ring) => {
                    let mut guard = guard?;
                    drain_connections(guard.get_inner_mut(), &set, &clock, &mut out);
                    guard.clear_ready();
                }
            }
            out.flush();
            if out.closed {
                break;
            }
        }
        Ok(())
    });
    result.context("the gateway's main loop")?;
    if let Some(ring) = ring.as_mut() {
        drain_connections(ring.get_mut(), &set, &clock, &mut out);
    }
    out.line(&set.stats());
    out.flush();
    if let Some(k) = kube.take() {
        k.task.abort();
    }
    // Dropping the set detaches every program and frees the maps.
    drop(set);
    Ok(())
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// Reloads the file: on SIGHUP (`poll` None) at once, else when its text
/// differs from the running one and is what the previous poll saw too. A
/// wrong configuration keeps the running one, and says why.
fn reload(set: &mut ServiceSet, path: &PathBuf, last: &mut Option<String>, out: &mut Out, poll: Option<&mut Option<String>>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            if poll.is_none() {
                fail(out, path, &format!("{}: {e}", path.display()));
            }
            return;
        }
    };
    if let Some(seen) = poll {
        let stable = seen.as_deref() == Some(text.as_str());
        *seen = Some(text.clone());
        if !stable || last.as_deref() == Some(text.as_str()) {
            return;
        }
    }
    *last = Some(text.clone());
    let config = match masdeepflow_gateway::parse_config(&text) {
        Ok(c) => c,
        Err(e) => return fail(out, path, &format!("{}: {e}", path.display())),
    };
    if let Err(e) = set.set_file(config.services, out, Some("reload")) {
        fail(out, path, &format!("{}: {e}", path.display()));
    }
    let _ = read_config;
}

fn fail(out: &mut Out, path: &std::path::Path, error: &str) {
    log::warn!("reload failed, the running configuration stays: {error}");
    out.line(&Line::ReloadFailed { time: Time::now(), config: path.display().to_string(), error: error.to_string() });
}

async fn readable(
    ring: &mut Option<tokio::io::unix::AsyncFd<RingBuf<MapData>>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    match ring {
        Some(r) => r.readable_mut().await,
        None => std::future::pending().await,
    }
}

async fn recv_kube(kube: &mut Option<super::kube::KubeServices>) -> Option<Vec<masdeepflow_gateway::ServiceSpec>> {
    match kube {
        Some(k) => k.updates.recv().await,
        None => std::future::pending().await,
    }
}

fn drain_connections(ring: &mut RingBuf<MapData>, set: &ServiceSet, clock: &Clock, out: &mut Out) {
    while let Some(item) = ring.next() {
        if item.len() < std::mem::size_of::<ConnectionRecord>() {
            log::warn!("dropping a short connection record ({} bytes)", item.len());
            continue;
        }
        // SAFETY: length checked; the record is plain data.
        let r: ConnectionRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        drop(item);
        let (service, protocol) = match set.names.get(&r.service_id) {
            Some((n, p)) => (n.clone(), *p),
            None => continue,
        };
        let family = if r.family == FAMILY_V4 { FAMILY_V4 } else { masdeepflow_common::gateway::FAMILY_V6 };
        let comm_len = r.comm.iter().position(|&b| b == 0).unwrap_or(r.comm.len());
        out.line(&Line::GatewayConnection {
            time: crate::gateway::output::Time(clock.wall_ns(r.ts_ns)),
            process: set.kernel.features.process_info.then(|| ProcessLine {
                pid: r.pid,
                tid: r.tid,
                uid: r.uid,
                comm: String::from_utf8_lossy(&r.comm[..comm_len]).into_owned(),
            }),
            cgroup_id: r.cgroup_id,
            service,
            protocol,
            via: if r.via == 2 { "sendmsg" } else { "connect" },
            vip: Endpoint { ip: ip_of(r.vip, family), port: r.vip_port },
            backend: Endpoint { ip: ip_of(r.backend, family), port: r.backend_port },
        });
    }
}
