//! The export thread: serves `/metrics` and runs the OTLP exporter on its
//! own small tokio runtime, off the main loop (which must never wait on a
//! scraper or a collector) and off the output thread.
use std::{
    sync::{Arc, Mutex, PoisonError},
    thread::JoinHandle,
};

use anyhow::{Context as _, Result};
use tokio::sync::watch;

use crate::{
    cli::{Family, RunArgs},
    event::Output,
    sink::{
        metrics::{Live, Metrics},
        otlp::{self, exporter::Exporter},
        prometheus,
        stdout::Sinks,
    },
};

/// What the options ask for, checked and bound before the kernel programs
/// are loaded (a busy port or a bad CA file is a clear error at start).
pub struct Plan {
    listener: Option<std::net::TcpListener>,
    otlp: Option<(Exporter, Arc<otlp::Shared>)>,
    max_series: usize,
    bytes_from_flows: bool,
    format: crate::cli::Format,
}

pub fn prepare(args: &RunArgs) -> Result<Plan> {
    let listener = match args.metrics_listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr).with_context(|| format!("--metrics-listen {addr}"))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let otlp = match &args.otlp_endpoint {
        Some(endpoint) => {
            let shared = otlp::Shared::new(args.otlp_queue_size as usize, otlp::Signals::from_args(&args.otlp_signals));
            Some((Exporter::new(args, endpoint, shared.clone())?, shared))
        }
        None => None,
    };
    Ok(Plan {
        listener,
        otlp,
        max_series: args.metrics_max_series as usize,
        bytes_from_flows: args.events.contains(&Family::Flow),
        format: args.format,
    })
}

/// The main loop's side: every event, where it is made, goes to the
/// metrics and OTLP (each locked once per batch), whether or not the
/// output queue has room for its line.
pub struct Taps {
    metrics: Option<Arc<Mutex<Metrics>>>,
    otlp: Option<otlp::Feed>,
}

impl Taps {
    pub fn feed(&mut self, lines: &[Output]) {
        if lines.is_empty() {
            return;
        }
        if let Some(m) = &self.metrics {
            let mut m = m.lock().unwrap_or_else(PoisonError::into_inner);
            m.set_time(crate::clock::unix_now_ns());
            for line in lines {
                m.observe(line);
            }
        }
        if let Some(o) = &mut self.otlp {
            let mut batch = o.batch();
            for line in lines {
                batch.push(line);
            }
        }
    }
}

/// The running export thread.
pub struct ExportThread {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Plan {
    /// The output thread's sinks, the main loop's taps, and the export
    /// thread when there is something to serve or send.
    pub fn start(self, live: Live, agent_start_ns: u64) -> Result<(Sinks, Taps, Option<ExportThread>)> {
        let wants_metrics = self.listener.is_some() || self.otlp.as_ref().is_some_and(|(_, s)| s.signals.metrics);
        let metrics = wants_metrics.then(|| Arc::new(Mutex::new(Metrics::new(self.max_series, self.bytes_from_flows, live))));
        let feed = || self.otlp.as_ref().map(|(_, shared)| otlp::Feed::new(shared.clone()));
        let sinks = Sinks { format: self.format, metrics: metrics.clone(), otlp: feed() };
        let taps = Taps { metrics: metrics.clone(), otlp: feed() };
        if self.listener.is_none() && self.otlp.is_none() {
            return Ok((sinks, taps, None));
        }
        let (stop, mut stop_rx) = watch::channel(false);
        let (listener, exporter) = (self.listener, self.otlp.map(|(e, _)| e));
        let handle = std::thread::Builder::new().name("export".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return log::error!("export thread: {e}"),
            };
            runtime.block_on(async move {
                let server = match (listener, &metrics) {
                    (Some(l), Some(m)) => match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => Some(tokio::spawn(prometheus::serve(l, m.clone()))),
                        Err(e) => {
                            log::error!("metrics endpoint: {e}");
                            None
                        }
                    },
                    _ => None,
                };
                match exporter {
                    Some(e) => e.run(metrics, agent_start_ns, stop_rx).await,
                    None => while stop_rx.changed().await.is_ok() && !*stop_rx.borrow() {},
                }
                if let Some(s) = server {
                    s.abort();
                }
            });
        })?;
        Ok((sinks, taps, Some(ExportThread { stop, handle })))
    }
}

impl ExportThread {
    /// Stops serving, sends what is left to the collector (bounded) and
    /// waits for the thread.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.join();
    }
}
