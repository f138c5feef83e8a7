//! The OTLP exporter (on the export thread): takes batches from the shared
//! buffer, sends them over gRPC or HTTP/protobuf (`masdeepflow_export::otlp`),
//! retries what the OTLP specification calls retryable with exponential
//! backoff, and counts what it gives up on.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use masdeepflow_export::otlp::{self as wire, Client, Encoded, Outcome, Protocol};
use opentelemetry_proto::tonic::{logs::v1::LogRecord, metrics::v1::Metric, resource::v1::Resource, trace::v1::Span};
use tokio::sync::watch;

use super::{BATCH_MAX, Shared, Signal, convert};
use crate::{
    cli::{OtlpProtocol, RunArgs},
    sink::metrics::Metrics,
};

/// How long one batch is retried before it is dropped and counted.
pub const RETRY_FOR: Duration = Duration::from_secs(30);
/// Log records and spans wait at most this long for a full batch.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// At exit, what is left is sent for at most this long.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// One request's body.
enum Payload {
    Logs(Vec<LogRecord>),
    Spans(Vec<Span>),
    Metrics(Vec<Metric>, u64),
}

impl Payload {
    fn signal(&self) -> Signal {
        match self {
            Payload::Logs(_) => Signal::Logs,
            Payload::Spans(_) => Signal::Traces,
            Payload::Metrics(..) => Signal::Metrics,
        }
    }

    fn items(&self) -> u64 {
        match self {
            Payload::Logs(v) => v.len() as u64,
            Payload::Spans(v) => v.len() as u64,
            Payload::Metrics(_, points) => *points,
        }
    }
}

/// Everything configured, ready to run on the export thread's runtime.
pub struct Exporter {
    endpoint: String,
    client: Client,
    resource: Resource,
    interval: Duration,
    shared: Arc<Shared>,
}

/// Failures of one signal, reported once when they start and once when
/// they end (not per request).
#[derive(Default)]
struct Health([Option<String>; 3]);

impl Health {
    fn failed(&mut self, signal: Signal, why: &str, endpoint: &str) {
        if self.0[signal as usize].is_none() {
            log::warn!("OTLP {} export to {endpoint} failing: {why}", signal.name());
        }
        self.0[signal as usize] = Some(why.to_string());
    }

    fn ok(&mut self, signal: Signal, endpoint: &str) {
        if self.0[signal as usize].take().is_some() {
            log::warn!("OTLP {} export to {endpoint} works again", signal.name());
        }
    }
}

impl Exporter {
    /// Checks the options (header syntax, the CA file) so that a mistake is
    /// a clear error at start, not a silent failure later.
    pub fn new(args: &RunArgs, endpoint: &str, shared: Arc<Shared>) -> Result<Exporter> {
        let ca = match &args.otlp_ca_file {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| format!("reading --otlp-ca-file {}", path.display()))?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    bail!("--otlp-ca-file {} holds no PEM certificate", path.display());
                }
                Some(pem)
            }
            None => None,
        };
        let protocol = match args.otlp_protocol {
            OtlpProtocol::Grpc => Protocol::Grpc,
            OtlpProtocol::HttpProtobuf => Protocol::HttpProtobuf,
        };
        let client = Client::new(endpoint, protocol, &args.otlp_header, ca.as_deref())?;
        Ok(Exporter {
            endpoint: endpoint.to_string(),
            client,
            resource: convert::resource(args.node_name.as_deref()),
            interval: args.otlp_interval,
            shared,
        })
    }

    /// Runs until `stop` turns true, then sends what is left (bounded).
    pub async fn run(self, metrics: Option<Arc<Mutex<Metrics>>>, agent_start_ns: u64, mut stop: watch::Receiver<bool>) {
        let mut health = Health::default();
        let signals = self.shared.signals;
        let metrics = metrics.filter(|_| signals.metrics);
        let mut metrics_timer = tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        metrics_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush_timer = tokio::time::interval(FLUSH_EVERY);
        flush_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shared.ready.notified() => {}
                _ = flush_timer.tick() => {}
                _ = metrics_timer.tick(), if metrics.is_some() => {
                    if let Some(m) = &metrics {
                        let payload = self.metrics_payload(m, agent_start_ns);
                        self.send_retrying(payload, &mut health, &mut stop).await;
                    }
                }
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            self.send_pending(&mut health, &mut stop).await;
        }
        // At exit: the last metrics, then what waits, for a bounded time;
        // what cannot be sent is counted and said (no agent_stats follows).
        let before = self.shared.lost();
        let finish = async {
            if let Some(m) = &metrics {
                let payload = self.metrics_payload(m, agent_start_ns);
                self.send_once(payload, &mut health).await;
            }
            loop {
                let batch = self.shared.take(BATCH_MAX);
                if batch.logs.is_empty() && batch.spans.is_empty() {
                    break;
                }
                for payload in [Payload::Logs(batch.logs), Payload::Spans(batch.spans)] {
                    if payload.items() > 0 {
                        self.send_once(payload, &mut health).await;
                    }
                }
            }
        };
        if tokio::time::timeout(FINAL_FLUSH, finish).await.is_err() {
            let left = self.shared.take(usize::MAX);
            self.shared.count_lost(Signal::Logs, left.logs.len() as u64);
            self.shared.count_lost(Signal::Traces, left.spans.len() as u64);
        }
        let after = self.shared.lost();
        if after != before {
            log::warn!("OTLP export at exit: not sent {after:?} (before the final agent_stats: {before:?})");
        }
    }

    fn metrics_payload(&self, metrics: &Mutex<Metrics>, agent_start_ns: u64) -> Payload {
        let snapshot = metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot();
        let (list, points) = convert::metrics(&snapshot, crate::clock::unix_now_ns(), agent_start_ns);
        Payload::Metrics(list, points)
    }

    /// Sends every full or waiting batch (log records, then spans).
    async fn send_pending(&self, health: &mut Health, stop: &mut watch::Receiver<bool>) {
        loop {
            let batch = self.shared.take(BATCH_MAX);
            if batch.logs.is_empty() && batch.spans.is_empty() {
                return;
            }
            for payload in [Payload::Logs(batch.logs), Payload::Spans(batch.spans)] {
                if payload.items() > 0 {
                    self.send_retrying(payload, health, stop).await;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Sends with retries (backoff 0.5 s doubling to 8 s) for up to
    /// [`RETRY_FOR`], or until the agent stops (then one last try).
    async fn send_retrying(&self, payload: Payload, health: &mut Health, stop: &mut watch::Receiver<bool>) {
        let (signal, items) = (payload.signal(), payload.items());
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(500);
        let request = self.request(payload);
        loop {
            match self.client.send(&request).await {
                Outcome::Sent(rejected) => {
                    self.shared.count_lost(signal, rejected);
                    health.ok(signal, &self.endpoint);
                    return;
                }
                Outcome::Fail(why) => {
                    health.failed(signal, &why, &self.endpoint);
                    self.shared.count_lost(signal, items);
                    return;
                }
                Outcome::Retry(why) => {
                    health.failed(signal, &why, &self.endpoint);
                    if started.elapsed() + backoff > RETRY_FOR || *stop.borrow() {
                        self.shared.count_lost(signal, items);
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(8));
                }
            }
        }
    }

    /// One try; what fails is counted.
    async fn send_once(&self, payload: Payload, health: &mut Health) {
        let (signal, items) = (payload.signal(), payload.items());
        let request = self.request(payload);
        match self.client.send(&request).await {
            Outcome::Sent(rejected) => self.shared.count_lost(signal, rejected),
            Outcome::Retry(why) | Outcome::Fail(why) => {
                health.failed(signal, &why, &self.endpoint);
                self.shared.count_lost(signal, items);
            }
        }
    }

    /// The encoded export request (encoded once, whatever the retries).
    fn request(&self, payload: Payload) -> Encoded {
        let (resource, scope) = (self.resource.clone(), convert::scope());
        match payload {
            Payload::Logs(records) => wire::logs(resource, scope, records),
            Payload::Spans(spans) => wire::spans(resource, scope, spans),
            Payload::Metrics(metrics, _) => wire::metrics(resource, scope, metrics),
        }
    }
}
