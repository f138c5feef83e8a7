//! OTLP export requests: the `opentelemetry-proto` messages encoded with
//! prost, sent as
//!
//! - OTLP/HTTP: the binary protobuf message POSTed to `/v1/logs`,
//!   `/v1/traces` or `/v1/metrics` (`application/x-protobuf`), over
//!   HTTP/1.1;
//! - OTLP/gRPC: a unary call of the collector's `Export` method over
//!   HTTP/2, i.e. one POST to `/<package>.<Service>/Export` whose body is
//!   the message behind gRPC's 5-byte prefix (compressed flag, big-endian
//!   length), answered by one such message and a `grpc-status` (in the
//!   trailers, or in the headers of a trailers-only answer).
//!
//! and what the collector's answer means: accepted (with the count it
//! rejected, a partial success), worth retrying, or not.
use std::{pin::Pin, time::Duration};

use anyhow::{Context as _, Result};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    HeaderMap, Request, StatusCode,
    body::Bytes,
    header::{CONTENT_TYPE, HeaderName, HeaderValue},
};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
        metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
        trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    },
    common::v1::InstrumentationScope,
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{Metric, ResourceMetrics, ScopeMetrics},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;

use crate::connection::{Connection, Version};

/// Timeout of one export request (connecting, sending, the answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The three OTLP signals (also the index of each one's loss counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Logs = 0,
    Traces = 1,
    Metrics = 2,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }
}

/// OTLP's two transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted; the collector rejected this many items.
    Sent(u64),
    /// Worth another try (connection failed, collector busy or away).
    Retry(String),
    /// Not worth another try.
    Fail(String),
}

/// One encoded export request, ready to be sent (and sent again).
pub struct Encoded {
    signal: Signal,
    message: Bytes,
}

impl Encoded {
    pub fn signal(&self) -> Signal {
        self.signal
    }
}

#[inline(never)] // compiled here, for size (see lib.rs)
pub fn logs(resource: Resource, scope: InstrumentationScope, log_records: Vec<LogRecord>) -> Encoded {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs { scope: Some(scope), log_records, ..Default::default() }],
            ..Default::default()
        }],
    };
    Encoded { signal: Signal::Logs, message: request.encode_to_vec().into() }
}

#[inline(never)] // compiled here, for size (see lib.rs)
pub fn spans(resource: Resource, scope: InstrumentationScope, spans: Vec<Span>) -> Encoded {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { scope: Some(scope), spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    Encoded { signal: Signal::Traces, message: request.encode_to_vec().into() }
}

#[inline(never)] // compiled here, for size (see lib.rs)
pub fn metrics(resource: Resource, scope: InstrumentationScope, metrics: Vec<Metric>) -> Encoded {
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope), metrics, ..Default::default() }],
            ..Default::default()
        }],
    };
    Encoded { signal: Signal::Metrics, message: request.encode_to_vec().into() }
}

/// Sends export requests to one collector.
pub struct Client {
    connection: Connection,
    protocol: Protocol,
    headers: HeaderMap,
}

impl Client {
    /// Checks everything (the URL, headers, roots, the CA file) so that a
    /// mistake is an error at start.
    #[inline(never)]
    pub fn new(endpoint: &str, protocol: Protocol, headers: &[(String, String)], ca_pem: Option<&[u8]>) -> Result<Client> {
        let grpc = protocol == Protocol::Grpc;
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static(if grpc { "application/grpc" } else { "application/x-protobuf" }));
        if grpc {
            map.insert(HeaderName::from_static("te"), HeaderValue::from_static("trailers"));
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).with_context(|| format!("invalid OTLP header name {name}"))?;
            let value = HeaderValue::from_str(value).with_context(|| format!("invalid value of OTLP header {name}"))?;
            map.append(name, value);
        }
        let version = if grpc { Version::Http2 } else { Version::Http1 };
        let connection = Connection::new(endpoint, version, ca_pem).with_context(|| format!("OTLP endpoint {endpoint}"))?;
        Ok(Client { connection, protocol, headers: map })
    }

    /// Sends one request, waiting at most [`REQUEST_TIMEOUT`]. (Boxed, so
    /// that its state machine stays compiled here, for size, and is not
    /// inlined into the caller's.)
    pub fn send<'a>(&'a self, request: &'a Encoded) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.connection.reset();
                    Outcome::Retry(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))
                }
            }
        })
    }

    async fn exchange(&self, request: &Encoded) -> Outcome {
        let signal = request.signal;
        let (path, body) = match self.protocol {
            Protocol::Grpc => (grpc_path(signal), frame(&request.message)),
            Protocol::HttpProtobuf => (http_path(signal), request.message.clone()),
        };
        let mut http = Request::new(Full::new(body));
        *http.method_mut() = hyper::Method::POST;
        *http.uri_mut() = hyper::Uri::from_static(path);
        *http.headers_mut() = self.headers.clone();
        let response = match self.connection.send(http).await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("{e:#}")),
        };
        let (head, body) = response.into_parts();
        let collected = match body.collect().await {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(format!("reading the answer: {e}")),
        };
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        match self.protocol {
            Protocol::Grpc => grpc_outcome(signal, head.status, &head.headers, trailers.as_ref(), &body),
            Protocol::HttpProtobuf => http_outcome(signal, head.status, &body),
        }
    }
}

/// The collector's services (opentelemetry/proto/collector/*/v1/*_service.proto).
fn grpc_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    }
}

fn http_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Logs => "/v1/logs",
        Signal::Traces => "/v1/traces",
        Signal::Metrics => "/v1/metrics",
    }
}

/// A gRPC message: not compressed, its length, itself.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

/// The one message of a unary answer.
fn unframe(body: &[u8]) -> Result<&[u8], String> {
    let Some((head, rest)) = body.split_first_chunk::<5>() else {
        return if body.is_empty() { Ok(body) } else { Err(format!("{} bytes, shorter than a gRPC prefix", body.len())) };
    };
    if head[0] != 0 {
        return Err("a compressed message (none was asked for)".into());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    rest.get(..len).ok_or_else(|| format!("a message of {len} bytes in {} bytes", rest.len()))
}

/// Items the collector says it rejected (a partial success), from its answer.
fn rejected(signal: Signal, answer: &[u8]) -> u64 {
    let n = match signal {
        Signal::Logs => {
            ExportLogsServiceResponse::decode(answer).ok().and_then(|r| r.partial_success).map_or(0, |p| p.rejected_log_records)
        }
        Signal::Traces => ExportTraceServiceResponse::decode(answer).ok().and_then(|r| r.partial_success).map_or(0, |p| p.rejected_spans),
        Signal::Metrics => {
            ExportMetricsServiceResponse::decode(answer).ok().and_then(|r| r.partial_success).map_or(0, |p| p.rejected_data_points)
        }
    };
    n.max(0) as u64
}

/// HTTP statuses worth a retry: OTLP/HTTP's retryable ones, which are also
/// those gRPC maps to UNAVAILABLE when a proxy answers.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

fn http_outcome(signal: Signal, status: StatusCode, body: &[u8]) -> Outcome {
    if status.is_success() {
        return Outcome::Sent(rejected(signal, body));
    }
    let why = format!("HTTP {status}");
    if retryable_status(status) { Outcome::Retry(why) } else { Outcome::Fail(why) }
}

fn grpc_outcome(signal: Signal, status: StatusCode, headers: &HeaderMap, trailers: Option<&HeaderMap>, body: &[u8]) -> Outcome {
    if status != StatusCode::OK {
        let why = format!("HTTP {status}");
        return if retryable_status(status) { Outcome::Retry(why) } else { Outcome::Fail(why) };
    }
    // A trailers-only answer carries the status in its headers.
    let Some((code, message)) = grpc_status(headers).or_else(|| trailers.and_then(grpc_status)) else {
        return Outcome::Fail("an answer without grpc-status".into());
    };
    if code != 0 {
        let why = format!("gRPC {} ({code}): {message}", code_name(code));
        return if retryable_code(code) { Outcome::Retry(why) } else { Outcome::Fail(why) };
    }
    match unframe(body) {
        Ok(message) => Outcome::Sent(rejected(signal, message)),
        // Accepted all the same (grpc-status 0): the answer only tells of
        // partial successes.
        Err(why) => {
            log::debug!("OTLP gRPC answer not read: {why}");
            Outcome::Sent(0)
        }
    }
}

/// `grpc-status` and `grpc-message`, when present.
fn grpc_status(headers: &HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers.get("grpc-message").map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned()).unwrap_or_default();
    Some((code, message))
}

/// Codes the OTLP specification calls retryable: CANCELLED,
/// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE,
/// UNAVAILABLE, DATA_LOSS.
fn retryable_code(code: u32) -> bool {
    matches!(code, 1 | 4 | 8 | 10 | 11 | 14 | 15)
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown code")
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn grpc_answers() {
        let answer = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess { rejected_log_records: 3, error_message: "bad".into() }),
        }
        .encode_to_vec();
        let framed = frame(&answer);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, answer.len() as u8]);
        let ok = headers(&[("grpc-status", "0")]);
        let none = HeaderMap::new();
        assert!(matches!(grpc_outcome(Signal::Logs, StatusCode::OK, &none, Some(&ok), &framed), Outcome::Sent(3)));
        assert!(matches!(grpc_outcome(Signal::Logs, StatusCode::OK, &none, Some(&ok), &[0, 0, 0, 0, 0]), Outcome::Sent(0)));
        // Trailers-only: the status in the headers.
        let unavailable = headers(&[("grpc-status", "14"), ("grpc-message", "down")]);
        match grpc_outcome(Signal::Traces, StatusCode::OK, &unavailable, None, &[]) {
            Outcome::Retry(why) => assert_eq!(why, "gRPC UNAVAILABLE (14): down"),
            other => panic!("UNAVAILABLE is retryable: {other:?}"),
        }
        let unauthenticated = headers(&[("grpc-status", "16")]);
        assert!(matches!(grpc_outcome(Signal::Metrics, StatusCode::OK, &none, Some(&unauthenticated), &[]), Outcome::Fail(_)));
        assert!(matches!(grpc_outcome(Signal::Logs, StatusCode::OK, &none, None, &[]), Outcome::Fail(_)));
        assert!(matches!(grpc_outcome(Signal::Logs, StatusCode::SERVICE_UNAVAILABLE, &none, None, &[]), Outcome::Retry(_)));
        assert!(matches!(grpc_outcome(Signal::Logs, StatusCode::NOT_FOUND, &none, None, &[]), Outcome::Fail(_)));
        assert!(unframe(&[0, 0, 0, 0, 9, 1]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
        assert!(unframe(&[0, 0]).is_err());
    }

    #[test]
    fn http_answers() {
        assert!(matches!(http_outcome(Signal::Logs, StatusCode::OK, &[]), Outcome::Sent(0)));
        for s in [429, 502, 503, 504] {
            assert!(matches!(http_outcome(Signal::Logs, StatusCode::from_u16(s).unwrap(), &[]), Outcome::Retry(_)));
        }
        assert!(matches!(http_outcome(Signal::Logs, StatusCode::BAD_REQUEST, &[]), Outcome::Fail(_)));
    }

    #[test]
    fn checked_at_start() {
        let auth = [("authorization".to_string(), "Bearer x".to_string())];
        assert!(Client::new("http://h:4317", Protocol::Grpc, &auth, None).is_ok());
        assert!(Client::new("http://h:4317", Protocol::Grpc, &[("a b".into(), "x".into())], None).is_err());
        assert!(Client::new("http://h:4318", Protocol::HttpProtobuf, &[("a".into(), "x\ny".into())], None).is_err());
        assert!(Client::new("https://h:4317", Protocol::Grpc, &[], Some(b"nothing here")).is_err());
    }

    #[test]
    fn requests_decode_as_sent() {
        let record = LogRecord { event_name: "e".into(), ..Default::default() };
        let e = logs(Resource::default(), InstrumentationScope::default(), vec![record.clone()]);
        assert_eq!(e.signal(), Signal::Logs);
        let back = ExportLogsServiceRequest::decode(e.message.as_ref()).unwrap();
        assert_eq!(back.resource_logs[0].scope_logs[0].log_records, vec![record]);
    }
}
