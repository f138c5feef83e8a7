//! The OTLP exporter (on the export thread): takes batches from the shared
//! buffer, sends them over gRPC (tonic clients generated in
//! `opentelemetry-proto`) or HTTP/protobuf (reqwest), retries what the
//! OTLP specification calls retryable with exponential backoff, and counts
//! what it gives up on.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse, logs_service_client::LogsServiceClient},
        metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse, metrics_service_client::MetricsServiceClient},
        trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_client::TraceServiceClient},
    },
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{ResourceMetrics, ScopeMetrics},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;
use tokio::sync::watch;
use tonic::{
    Code,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use super::{BATCH_MAX, Shared, Signal, convert};
use crate::{
    cli::{OtlpProtocol, RunArgs},
    sink::metrics::Metrics,
};

/// How long one batch is retried before it is dropped and counted.
pub const RETRY_FOR: Duration = Duration::from_secs(30);
/// Timeout of one export request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Log records and spans wait at most this long for a full batch.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// At exit, what is left is sent for at most this long.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

#[allow(clippy::large_enum_variant)] // One per exporter.
enum Transport {
    Grpc {
        logs: LogsServiceClient<Channel>,
        traces: TraceServiceClient<Channel>,
        metrics: MetricsServiceClient<Channel>,
        headers: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        base: String,
        headers: reqwest::header::HeaderMap,
    },
}

/// One request's body.
enum Payload {
    Logs(Vec<LogRecord>),
    Spans(Vec<Span>),
    Metrics(Vec<opentelemetry_proto::tonic::metrics::v1::Metric>, u64),
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

enum Outcome {
    /// Accepted; the collector rejected this many items.
    Sent(u64),
    Retry(String),
    Fail(String),
}

/// Everything configured, ready to run on the export thread's runtime.
pub struct Exporter {
    endpoint: String,
    protocol: OtlpProtocol,
    headers: Vec<(String, String)>,
    ca: Option<Vec<u8>>,
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
        for (name, value) in &args.otlp_header {
            MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes())
                .with_context(|| format!("invalid OTLP header name {name}"))?;
            MetadataValue::try_from(value.as_str()).with_context(|| format!("invalid value of OTLP header {name}"))?;
        }
        Ok(Exporter {
            endpoint: endpoint.to_string(),
            protocol: args.otlp_protocol,
            headers: args.otlp_header.clone(),
            ca,
            resource: convert::resource(args.node_name.as_deref()),
            interval: args.otlp_interval,
            shared,
        })
    }

    fn transport(&self) -> Result<Transport> {
        let https = self.endpoint.starts_with("https://");
        match self.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
                    .context("OTLP endpoint")?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(REQUEST_TIMEOUT);
                if https {
                    let mut tls = ClientTlsConfig::new().with_native_roots();
                    if let Some(pem) = &self.ca {
                        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                    }
                    endpoint = endpoint.tls_config(tls).context("OTLP TLS configuration")?;
                }
                let channel = endpoint.connect_lazy();
                let mut headers = MetadataMap::new();
                for (name, value) in &self.headers {
                    headers.insert(MetadataKey::from_bytes(name.as_bytes())?, MetadataValue::try_from(value.as_str())?);
                }
                Ok(Transport::Grpc {
                    logs: LogsServiceClient::new(channel.clone()),
                    traces: TraceServiceClient::new(channel.clone()),
                    metrics: MetricsServiceClient::new(channel),
                    headers,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).connect_timeout(Duration::from_secs(5));
                if let Some(pem) = &self.ca {
                    builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem).context("--otlp-ca-file")?);
                }
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(reqwest::header::CONTENT_TYPE, reqwest::header::HeaderValue::from_static("application/x-protobuf"));
                for (name, value) in &self.headers {
                    headers
                        .insert(reqwest::header::HeaderName::from_bytes(name.as_bytes())?, reqwest::header::HeaderValue::from_str(value)?);
                }
                Ok(Transport::Http { client: builder.build().context("OTLP HTTP client")?, base: self.endpoint.clone(), headers })
            }
        }
    }

    /// Runs until `stop` turns true, then sends what is left (bounded).
    pub async fn run(self, metrics: Option<Arc<Mutex<Metrics>>>, agent_start_ns: u64, mut stop: watch::Receiver<bool>) {
        let mut transport = match self.transport() {
            Ok(t) => t,
            Err(e) => {
                log::error!("OTLP export is off: {e:#}");
                return;
            }
        };
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
                        self.send_retrying(&mut transport, payload, &mut health, &mut stop).await;
                    }
                }
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            self.send_pending(&mut transport, &mut health, &mut stop).await;
        }
        // At exit: the last metrics, then what waits, for a bounded time;
        // what cannot be sent is counted and said (no agent_stats follows).
        let before = self.shared.lost();
        let finish = async {
            if let Some(m) = &metrics {
                let payload = self.metrics_payload(m, agent_start_ns);
                self.send_once(&mut transport, payload, &mut health).await;
            }
            loop {
                let batch = self.shared.take(BATCH_MAX);
                if batch.logs.is_empty() && batch.spans.is_empty() {
                    break;
                }
                for payload in [Payload::Logs(batch.logs), Payload::Spans(batch.spans)] {
                    if payload.items() > 0 {
                        self.send_once(&mut transport, payload, &mut health).await;
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
    async fn send_pending(&self, transport: &mut Transport, health: &mut Health, stop: &mut watch::Receiver<bool>) {
        loop {
            let batch = self.shared.take(BATCH_MAX);
            if batch.logs.is_empty() && batch.spans.is_empty() {
                return;
            }
            for payload in [Payload::Logs(batch.logs), Payload::Spans(batch.spans)] {
                if payload.items() > 0 {
                    self.send_retrying(transport, payload, health, stop).await;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Sends with retries (backoff 0.5 s doubling to 8 s) for up to
    /// [`RETRY_FOR`], or until the agent stops (then one last try).
    async fn send_retrying(&self, transport: &mut Transport, payload: Payload, health: &mut Health, stop: &mut watch::Receiver<bool>) {
        let (signal, items) = (payload.signal(), payload.items());
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(500);
        let request = self.request(payload);
        loop {
            match send(transport, &request).await {
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
    async fn send_once(&self, transport: &mut Transport, payload: Payload, health: &mut Health) {
        let (signal, items) = (payload.signal(), payload.items());
        let request = self.request(payload);
        match send(transport, &request).await {
            Outcome::Sent(rejected) => self.shared.count_lost(signal, rejected),
            Outcome::Retry(why) | Outcome::Fail(why) => {
                health.failed(signal, &why, &self.endpoint);
                self.shared.count_lost(signal, items);
            }
        }
    }

    fn request(&self, payload: Payload) -> Request {
        let resource = Some(self.resource.clone());
        let scope = Some(convert::scope());
        match payload {
            Payload::Logs(log_records) => Request::Logs(ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource,
                    scope_logs: vec![ScopeLogs { scope, log_records, ..Default::default() }],
                    ..Default::default()
                }],
            }),
            Payload::Spans(spans) => Request::Traces(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource,
                    scope_spans: vec![ScopeSpans { scope, spans, ..Default::default() }],
                    ..Default::default()
                }],
            }),
            Payload::Metrics(metrics, _) => Request::Metrics(ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource,
                    scope_metrics: vec![ScopeMetrics { scope, metrics, ..Default::default() }],
                    ..Default::default()
                }],
            }),
        }
    }
}

enum Request {
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// gRPC codes the OTLP specification calls retryable.
fn retryable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn grpc_outcome<T>(result: Result<tonic::Response<T>, tonic::Status>, rejected: impl FnOnce(&T) -> i64) -> Outcome {
    match result {
        Ok(r) => Outcome::Sent(rejected(r.get_ref()).max(0) as u64),
        Err(s) if retryable_code(s.code()) => Outcome::Retry(format!("{}: {}", s.code(), s.message())),
        Err(s) => Outcome::Fail(format!("{}: {}", s.code(), s.message())),
    }
}

async fn send(transport: &mut Transport, request: &Request) -> Outcome {
    match transport {
        Transport::Grpc { logs, traces, metrics, headers } => {
            fn wrap<T>(body: T, headers: &MetadataMap) -> tonic::Request<T> {
                let mut r = tonic::Request::new(body);
                *r.metadata_mut() = headers.clone();
                r
            }
            match request {
                Request::Logs(b) => grpc_outcome(logs.export(wrap(b.clone(), headers)).await, |r: &ExportLogsServiceResponse| {
                    r.partial_success.as_ref().map_or(0, |p| p.rejected_log_records)
                }),
                Request::Traces(b) => grpc_outcome(traces.export(wrap(b.clone(), headers)).await, |r: &ExportTraceServiceResponse| {
                    r.partial_success.as_ref().map_or(0, |p| p.rejected_spans)
                }),
                Request::Metrics(b) => grpc_outcome(metrics.export(wrap(b.clone(), headers)).await, |r: &ExportMetricsServiceResponse| {
                    r.partial_success.as_ref().map_or(0, |p| p.rejected_data_points)
                }),
            }
        }
        Transport::Http { client, base, headers } => {
            let (path, body) = match request {
                Request::Logs(b) => ("/v1/logs", b.encode_to_vec()),
                Request::Traces(b) => ("/v1/traces", b.encode_to_vec()),
                Request::Metrics(b) => ("/v1/metrics", b.encode_to_vec()),
            };
            let response = match client.post(format!("{base}{path}")).headers(headers.clone()).body(body).send().await {
                Ok(r) => r,
                Err(e) => return Outcome::Retry(format!("{e}")),
            };
            let status = response.status();
            if !status.is_success() {
                let why = format!("HTTP {status}");
                // The OTLP/HTTP specification's retryable statuses.
                return if matches!(status.as_u16(), 429 | 502 | 503 | 504) { Outcome::Retry(why) } else { Outcome::Fail(why) };
            }
            let body = response.bytes().await.unwrap_or_default();
            let rejected = match request {
                Request::Logs(_) => {
                    ExportLogsServiceResponse::decode(body).ok().and_then(|r| r.partial_success).map_or(0, |p| p.rejected_log_records)
                }
                Request::Traces(_) => {
                    ExportTraceServiceResponse::decode(body).ok().and_then(|r| r.partial_success).map_or(0, |p| p.rejected_spans)
                }
                Request::Metrics(_) => {
                    ExportMetricsServiceResponse::decode(body).ok().and_then(|r| r.partial_success).map_or(0, |p| p.rejected_data_points)
                }
            };
            Outcome::Sent(rejected.max(0) as u64)
        }
    }
}
