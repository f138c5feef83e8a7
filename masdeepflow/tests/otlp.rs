//! End to end: `--otlp-endpoint` against an OTLP receiver. No OpenTelemetry
//! Collector is packaged for this machine, so the receiver is a stand-in
//! built here on the official protocol definitions: the gRPC services
//! generated in the `opentelemetry-proto` crate, served with tonic, and
//! OTLP/HTTP (binary protobuf on /v1/logs, /v1/traces, /v1/metrics,
//! decoded with prost into the same crate's messages), served with hyper.
//! It keeps every log record, span and metric point it is sent, plain or
//! over TLS (a test CA made with rcgen, handed to the agent with
//! `--otlp-ca-file`). Traffic is real: curl against nginx on 127.0.0.1,
//! seen from both sides.
mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value},
    logs::v1::LogRecord,
    metrics::v1::{Metric, metric},
    trace::v1::{Span, span::SpanKind},
};
use support::{
    Agent,
    servers::{Nginx, free_port},
};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Received {
    logs: Vec<LogRecord>,
    spans: Vec<Span>,
    /// Each export's metrics (the latest has the running totals).
    metrics: Vec<Vec<Metric>>,
    /// Each request's `authorization` header (gRPC metadata or HTTP).
    auth: Vec<String>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

impl Receiver {
    fn auth(&self, value: Option<&[u8]>) {
        self.0.lock().unwrap().auth.push(String::from_utf8_lossy(value.unwrap_or(b"(none)")).into_owned());
    }

    fn logs(&self, r: ExportLogsServiceRequest) {
        let mut got = self.0.lock().unwrap();
        for rl in r.resource_logs {
            for sl in rl.scope_logs {
                got.logs.extend(sl.log_records);
            }
        }
    }

    fn spans(&self, r: ExportTraceServiceRequest) {
        let mut got = self.0.lock().unwrap();
        for rs in r.resource_spans {
            for ss in rs.scope_spans {
                got.spans.extend(ss.spans);
            }
        }
    }

    fn metrics(&self, r: ExportMetricsServiceRequest) {
        let mut all = Vec::new();
        for rm in r.resource_metrics {
            for sm in rm.scope_metrics {
                all.extend(sm.metrics);
            }
        }
        self.0.lock().unwrap().metrics.push(all);
    }

    /// OTLP/HTTP: one binary protobuf request (`application/x-protobuf`)
    /// to `/v1/logs`, `/v1/traces` or `/v1/metrics`; the answer is the
    /// empty export response, protobuf too.
    fn http(&self, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        use prost::Message as _;
        let e = |e: prost::DecodeError| e.to_string();
        Ok(match path {
            "/v1/logs" => {
                self.logs(ExportLogsServiceRequest::decode(body).map_err(e)?);
                ExportLogsServiceResponse::default().encode_to_vec()
            }
            "/v1/traces" => {
                self.spans(ExportTraceServiceRequest::decode(body).map_err(e)?);
                ExportTraceServiceResponse::default().encode_to_vec()
            }
            "/v1/metrics" => {
                self.metrics(ExportMetricsServiceRequest::decode(body).map_err(e)?);
                ExportMetricsServiceResponse::default().encode_to_vec()
            }
            other => return Err(format!("no such OTLP path {other}")),
        })
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(&self, r: Request<ExportLogsServiceRequest>) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.auth(r.metadata().get("authorization").map(|v| v.as_bytes()));
        self.logs(r.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(&self, r: Request<ExportTraceServiceRequest>) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.auth(r.metadata().get("authorization").map(|v| v.as_bytes()));
        self.spans(r.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(&self, r: Request<ExportMetricsServiceRequest>) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.auth(r.metadata().get("authorization").map(|v| v.as_bytes()));
        self.metrics(r.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A test CA and a certificate it signed for 127.0.0.1, in PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Pki {
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "masdeepflow test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
        Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A TLS acceptor for OTLP/HTTP (ALPN http/1.1).
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(self.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(self.key.as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Serves OTLP/HTTP with hyper until `stopped`, over TLS with `tls`.
async fn serve_http(
    listener: tokio::net::TcpListener,
    receiver: Receiver,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use http_body_util::BodyExt as _;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => break,
            a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
        };
        let receiver = receiver.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let stream: Box<dyn Stream> = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(s) => Box::new(s),
                    Err(e) => return eprintln!("receiver: TLS: {e}"),
                },
                None => Box::new(tcp),
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let receiver = receiver.clone();
                async move {
                    let path = req.uri().path().to_string();
                    receiver.auth(req.headers().get("authorization").map(|v| v.as_bytes()));
                    let protobuf = req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let (status, out) = match (protobuf, receiver.http(&path, &body)) {
                        (true, Ok(out)) => (200, out),
                        (false, _) => (415, Vec::new()),
                        (true, Err(e)) => (400, e.into_bytes()),
                    };
                    let resp = hyper::Response::builder()
                        .status(status)
                        .header("content-type", "application/x-protobuf")
                        .body(http_body_util::Full::new(hyper::body::Bytes::from(out)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
    // Stopped: open connections are dropped, as a dead collector's would be.
    conns.abort_all();
}

/// The gRPC receiver on 127.0.0.1:`port`, on its own thread, until
/// `stop` (or drop).
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(port: u16, receiver: Receiver, grpc: bool) -> Server {
        Server::start_tls(port, receiver, grpc, None)
    }

    fn start_tls(port: u16, receiver: Receiver, grpc: bool, pki: Option<&Pki>) -> Server {
        let tls = pki.map(|p| (p.acceptor(), tonic::transport::Identity::from_pem(&p.cert, &p.key)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the receiver");
                ready_tx.send(()).unwrap();
                if !grpc {
                    return serve_http(listener, receiver, tls.map(|(acceptor, _)| acceptor), stopped).await;
                }
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let mut builder = tonic::transport::Server::builder();
                if let Some((_, identity)) = tls {
                    builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)).unwrap();
                }
                builder
                    .add_service(LogsServiceServer::new(receiver.clone()))
                    .add_service(TraceServiceServer::new(receiver.clone()))
                    .add_service(MetricsServiceServer::new(receiver))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            })
        });
        ready.recv_timeout(Duration::from_secs(10)).expect("receiver listening");
        Server { stop: Some(stop), thread: Some(thread) }
    }

    fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v: &AnyValue| v.value.as_ref())
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// curl over one keep-alive connection; each URL's status.
fn curl(urls: &[String]) -> Vec<u16> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "%{http_code}\\n"])
        .args(urls.iter().flat_map(|u| ["-o", "/dev/null", u.as_str()]))
        .output()
        .expect("curl");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect()
}

/// Waits (bounded) until `done` holds for what was received.
fn wait_for(r: &Receiver, what: &str, done: impl Fn(&Received) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let got = r.0.lock().unwrap();
            if done(&got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not received within 30 s: {} log records, {} spans, {} metric exports",
                got.logs.len(),
                got.spans.len(),
                got.metrics.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_logs(got: &Received) -> Vec<&LogRecord> {
    got.logs.iter().filter(|l| l.event_name == "masdeepflow.http").collect()
}

/// The count of the latest `http.server.request.duration` export, summed.
fn server_histogram_count(got: &Received) -> u64 {
    let Some(last) = got.metrics.iter().rev().find(|m| m.iter().any(|m| m.name == "http.server.request.duration")) else { return 0 };
    last.iter()
        .filter(|m| m.name == "http.server.request.duration")
        .filter_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => Some(h.data_points.iter().map(|p| p.count).sum::<u64>()),
            _ => None,
        })
        .sum()
}

#[test]
fn otlp_grpc_gets_exact_logs_spans_and_metrics_and_survives_a_receiver_outage() {
    exact_export_and_an_outage(true, 16384);
}

#[test]
fn otlp_http_protobuf_gets_exact_logs_spans_and_metrics_and_survives_a_receiver_outage() {
    exact_export_and_an_outage(false, 16384);
}

fn exact_export_and_an_outage(grpc: bool, queue: u32) {
    let files: Vec<(String, Vec<u8>)> = (1..=5).map(|i| (format!("/users/{i}"), format!("user {i}\n").into_bytes())).collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    let nginx = Nginx::start_with(std::path::Path::new("nginx"), &files);
    let np = nginx.port;
    let rp = free_port();
    let receiver = Receiver::default();
    let server = Server::start(rp, receiver.clone(), grpc);
    let mut agent = Agent::start(&[
        "--events",
        "http",
        "--port",
        &np.to_string(),
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{rp}"),
        "--otlp-protocol",
        if grpc { "grpc" } else { "http/protobuf" },
        "--otlp-queue-size",
        &queue.to_string(),
        "--otlp-header",
        "authorization=Bearer%20t0ken",
        "--otlp-interval",
        "1s",
        "--stats-interval",
        "1s",
    ]);

    // 5 requests, 200 each, over one connection: 10 exchanges (both sides).
    let urls: Vec<String> = (1..=5).map(|i| format!("http://127.0.0.1:{np}/users/{i}?q={i}")).collect();
    assert_eq!(curl(&urls), vec![200; 5]);
    wait_for(&receiver, "10 http log records, 10 spans, a histogram of 5", |g| {
        http_logs(g).len() == 10 && g.spans.len() == 10 && server_histogram_count(g) == 5
    });
    {
        let got = receiver.0.lock().unwrap();
        let mut seen = Vec::new();
        for l in http_logs(&got) {
            let a = &l.attributes;
            assert_eq!(str_attr(a, "http.request.method"), Some("GET"));
            assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
            assert_eq!(str_attr(a, "http.route"), Some("/users/{id}"));
            assert_eq!(str_attr(a, "server.address"), Some("127.0.0.1"));
            assert_eq!(int_attr(a, "server.port"), Some(np as i64));
            let role = str_attr(a, "masdeepflow.role").unwrap().to_string();
            let comm = str_attr(a, "process.executable.name").unwrap().to_string();
            assert_eq!(comm, if role == "client" { "curl" } else { "nginx" }, "{role}");
            assert!(int_attr(a, "process.pid").unwrap() > 0);
            seen.push((role, str_attr(a, "url.path").unwrap().to_string(), str_attr(a, "url.query").unwrap().to_string()));
            assert_eq!(l.trace_id.len(), 16, "a log record names its span");
        }
        seen.sort();
        let mut want: Vec<(String, String, String)> = ["client", "server"]
            .iter()
            .flat_map(|r| (1..=5).map(move |i| (r.to_string(), format!("/users/{i}"), format!("q={i}"))))
            .collect();
        want.sort();
        assert_eq!(seen, want);
        let kinds = |k: SpanKind| got.spans.iter().filter(|s| s.kind == k as i32).count();
        assert_eq!((kinds(SpanKind::Client), kinds(SpanKind::Server)), (5, 5));
        for s in &got.spans {
            assert_eq!(s.name, "GET /users/{id}");
            assert!(s.start_time_unix_nano > 0 && s.end_time_unix_nano > s.start_time_unix_nano, "{s:?}");
            assert!(s.end_time_unix_nano - s.start_time_unix_nano < 5_000_000_000, "a duration, in ns: {s:?}");
            assert_eq!(int_attr(&s.attributes, "http.response.status_code"), Some(200));
        }
        // Each span has its log record (same trace and span ids).
        for s in &got.spans {
            assert_eq!(http_logs(&got).iter().filter(|l| l.span_id == s.span_id && l.trace_id == s.trace_id).count(), 1);
        }
    }

    // The receiver goes away for 10 s while traffic goes on.
    server.stop();
    let during: Vec<String> = (1..=5).map(|i| format!("http://127.0.0.1:{np}/users/{i}?outage=1")).collect();
    let outage = Instant::now();
    // 4 rounds of 5 requests: 40 exchanges, counting both sides.
    for _ in 0..4 {
        assert_eq!(curl(&during), vec![200; 5]);
        std::thread::sleep(Duration::from_millis(2500));
    }
    assert!(outage.elapsed() >= Duration::from_secs(10));
    // The agent kept running, and stdout kept flowing.
    agent.wait_until("40 http events on stdout during the outage", Duration::from_secs(10), |ev| {
        ev.iter().filter(|e| e["type"] == "http" && e["path"].as_str().is_some_and(|p| p.ends_with("outage=1"))).count() == 40
    });
    let server = Server::start(rp, receiver.clone(), grpc);
    // Back: what waited is sent (on the exporter's next retry), the rest
    // was dropped and counted, and the two add up to the outage's 40.
    {
        let r = receiver.clone();
        agent.wait_until("the outage's records received or counted lost", Duration::from_secs(40), move |ev| {
            let Some(stats) = ev.iter().rev().find(|e| e["type"] == "agent_stats") else { return false };
            let got = r.0.lock().unwrap();
            let logs = http_logs(&got).iter().filter(|l| str_attr(&l.attributes, "url.query") == Some("outage=1")).count() as u64;
            let spans = got.spans.iter().filter(|s| str_attr(&s.attributes, "url.query") == Some("outage=1")).count() as u64;
            logs + stats["lost"]["export"]["logs"].as_u64().unwrap_or(0) == 40
                && spans + stats["lost"]["export"]["traces"].as_u64().unwrap_or(0) == 40
        });
    }
    let after: Vec<String> = (1..=5).map(|i| format!("http://127.0.0.1:{np}/users/{i}?after=1")).collect();
    assert_eq!(curl(&after), vec![200; 5]);
    // Everything arrives or is counted as lost (lost.export in agent_stats).
    wait_for(&receiver, "the 10 exchanges after the outage, in the histogram too", |g| {
        http_logs(g).iter().filter(|l| str_attr(&l.attributes, "url.query") == Some("after=1")).count() == 10
            && server_histogram_count(g) == 30
    });
    let events = agent.stop();
    server.stop();
    let stats = events.iter().rev().find(|e| e["type"] == "agent_stats").expect("agent_stats");
    let lost_logs = stats["lost"]["export"]["logs"].as_u64().unwrap_or(0);
    let lost_spans = stats["lost"]["export"]["traces"].as_u64().unwrap_or(0);
    let got = receiver.0.lock().unwrap();
    let http = http_logs(&got);
    let by = |q: &str| http.iter().filter(|l| str_attr(&l.attributes, "url.query").is_some_and(|x| x.ends_with(q))).count() as u64;
    let spans_during = got.spans.iter().filter(|s| str_attr(&s.attributes, "url.query") == Some("outage=1")).count() as u64;
    eprintln!("during the outage: {} log records and {spans_during} spans received, lost.export {stats}", by("outage=1"));
    assert_eq!(by("outage=1") + lost_logs, 40, "every record of the outage received or counted lost");
    assert_eq!(spans_during + lost_spans, 40, "every span of the outage received or counted lost");
    assert_eq!(by("after=1"), 10);
    if queue < 40 {
        assert!(lost_logs > 0 && lost_spans > 0, "a queue of {queue} cannot hold 40: {stats}");
    }
    // --otlp-header, percent-decoded, on every request.
    assert!(got.auth.len() >= 3 && got.auth.iter().all(|a| a == "Bearer t0ken"), "{:?}", got.auth);
    // Cumulative: 5 + 20 + 5 server-side requests.
    assert_eq!(server_histogram_count(&got), 30);
}

#[test]
fn otlp_over_https_with_a_ca_file_grpc_and_http_protobuf() {
    let pki = Pki::new();
    let ca_file = std::env::temp_dir().join(format!("masdeepflow-otlp-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &pki.ca).unwrap();
    let nginx = Nginx::start_with(std::path::Path::new("nginx"), &[("/users/7", b"user 7\n")]);
    let np = nginx.port;
    for grpc in [true, false] {
        let rp = free_port();
        let receiver = Receiver::default();
        let server = Server::start_tls(rp, receiver.clone(), grpc, Some(&pki));
        let agent = Agent::start(&[
            "--events",
            "http",
            "--port",
            &np.to_string(),
            "--otlp-endpoint",
            &format!("https://127.0.0.1:{rp}"),
            "--otlp-protocol",
            if grpc { "grpc" } else { "http/protobuf" },
            "--otlp-ca-file",
            ca_file.to_str().unwrap(),
            "--otlp-header",
            "authorization=Bearer%20t1s,x-tenant=a",
            "--otlp-interval",
            "1s",
        ]);
        let urls: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{np}/users/7?tls={i}")).collect();
        assert_eq!(curl(&urls), vec![200; 3]);
        // 3 exchanges seen from both sides; the histogram counts the server's 3.
        wait_for(&receiver, "6 http log records, 6 spans, a histogram of 3 over TLS", |g| {
            http_logs(g).len() == 6 && g.spans.len() == 6 && server_histogram_count(g) == 3
        });
        let events = agent.stop();
        server.stop();
        let stats = events.iter().rev().find(|e| e["type"] == "agent_stats").expect("agent_stats");
        assert_eq!(stats["lost"]["export"]["logs"], 0, "{stats}");
        assert_eq!(stats["lost"]["export"]["traces"], 0, "{stats}");
        let got = receiver.0.lock().unwrap();
        assert!(!got.auth.is_empty() && got.auth.iter().all(|a| a == "Bearer t1s"), "grpc {grpc}: {:?}", got.auth);
        let mut queries: Vec<&str> = http_logs(&got).iter().filter_map(|l| str_attr(&l.attributes, "url.query")).collect();
        queries.sort();
        assert_eq!(queries, ["tls=0", "tls=0", "tls=1", "tls=1", "tls=2", "tls=2"], "grpc {grpc}");
    }
    let _ = std::fs::remove_file(&ca_file);
}
