//! A tiny HTTP/1.1 server on 127.0.0.1 that **replays recorded kube-apiserver
//! responses** (the JSON files in `tests/fixtures/`) and records every request
//! it receives. It is not a Kubernetes API server: it only knows
//! `GET /api/v1/pods` (list) and `GET /api/v1/pods?watch=...` (watch), and
//! answers each from a queue the test fills.
//!
//! * A list (or a watch) reply is either a complete JSON body with a status
//!   code, or, for watches, a chunked streaming body to which the test pushes
//!   newline-delimited watch events while the connection stays open.
//! * When a queue is empty, a list gets `503` and a watch is held open
//!   without events (as a quiet real watch would be).
//! * Every response carries `Connection: close`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use masdeepflow_k8s::{ClientSource, PodIndex, WatchConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

pub const NODE: &str = "node-a";

/// Reads `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture re-serialised on one line, as the apiserver writes watch events.
pub fn event_line(name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&fixture(name)).expect("fixture is JSON");
    serde_json::to_string(&v).unwrap()
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Request target as sent (path and raw query).
    pub target: String,
    pub path: String,
    pub raw_query: String,
    /// Query pairs, percent-decoded.
    pub query: Vec<(String, String)>,
}

impl Recorded {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true") | Some("1"))
    }
}

pub enum Reply {
    Json {
        status: u16,
        body: String,
    },
    /// Streamed watch body; each received string is one event line.
    Stream(mpsc::UnboundedReceiver<String>),
}

impl Reply {
    pub fn ok(body: String) -> Self {
        Reply::Json { status: 200, body }
    }
}

/// Sender side of a streaming watch reply. Dropping it ends the response.
pub struct WatchFeed(mpsc::UnboundedSender<String>);

impl WatchFeed {
    pub fn send_fixture(&self, name: &str) {
        self.0.send(event_line(name)).expect("watch connection still open");
    }
}

pub fn watch_stream() -> (WatchFeed, Reply) {
    let (tx, rx) = mpsc::unbounded_channel();
    (WatchFeed(tx), Reply::Stream(rx))
}

#[derive(Default)]
struct Script {
    lists: VecDeque<Reply>,
    watches: VecDeque<Reply>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    count: watch::Receiver<usize>,
    count_tx: Arc<watch::Sender<usize>>,
    socket: Option<TcpSocket>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(t) = self.accept_task.take() {
            t.abort();
        }
    }
}

impl FakeApiServer {
    /// Bound to a free 127.0.0.1 port but **not listening** yet: connections
    /// are refused until [`FakeApiServer::listen`].
    pub fn bound() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let (count_tx, count) = watch::channel(0);
        FakeApiServer {
            addr,
            script: Arc::default(),
            requests: Arc::default(),
            count,
            count_tx: Arc::new(count_tx),
            socket: Some(socket),
            accept_task: None,
        }
    }

    /// Bound and listening.
    pub fn start() -> Self {
        let mut s = Self::bound();
        s.listen();
        s
    }

    pub fn listen(&mut self) {
        let listener = self.socket.take().expect("listen once").listen(64).unwrap();
        let script = self.script.clone();
        let requests = self.requests.clone();
        let count_tx = self.count_tx.clone();
        self.accept_task = Some(tokio::spawn(accept_loop(listener, script, requests, count_tx)));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push_list(&self, r: Reply) {
        self.script.lock().unwrap().lists.push_back(r);
    }

    pub fn push_watch(&self, r: Reply) {
        self.script.lock().unwrap().watches.push_back(r);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (at most 10 s) until at least `n` requests were received.
    pub async fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        let mut rx = self.count.clone();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("server did not get {n} requests: {:#?}", self.requests()))
            .unwrap();
        self.requests()
    }

    /// A watcher configuration pointing at this server, independent of the
    /// environment (no KUBECONFIG, no service account), with fast retries.
    pub fn watch_config(&self, grace: Duration) -> WatchConfig {
        let mut cfg = WatchConfig::new(NODE, ClientSource::from_url(&self.url()).unwrap());
        cfg.grace = grace;
        cfg.backoff_initial = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_millis(200);
        cfg
    }
}

async fn accept_loop(
    listener: TcpListener,
    script: Arc<Mutex<Script>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    count_tx: Arc<watch::Sender<usize>>,
) {
    while let Ok((conn, _)) = listener.accept().await {
        tokio::spawn(serve_conn(conn, script.clone(), requests.clone(), count_tx.clone()));
    }
}

async fn serve_conn(
    mut conn: TcpStream,
    script: Arc<Mutex<Script>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    count_tx: Arc<watch::Sender<usize>>,
) {
    // Read the request head (GET requests carry no body).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let query = raw_query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let rec = Recorded { method, target, path, raw_query, query };
    let is_watch = rec.is_watch();
    let path_ok = rec.path == "/api/v1/pods";
    requests.lock().unwrap().push(rec);
    count_tx.send_modify(|c| *c += 1);

    let reply = if !path_ok {
        Some(Reply::Json { status: 404, body: status_json(404, "NotFound", "unexpected path") })
    } else if is_watch {
        script.lock().unwrap().watches.pop_front()
    } else {
        Some(
            script
                .lock()
                .unwrap()
                .lists
                .pop_front()
                .unwrap_or_else(|| Reply::Json { status: 503, body: status_json(503, "ServiceUnavailable", "no scripted list") }),
        )
    };

    match reply {
        Some(Reply::Json { status, body }) => {
            let resp = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                reason(status),
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
        Some(Reply::Stream(mut rx)) => {
            if write_stream_head(&mut conn).await.is_err() {
                return;
            }
            while let Some(line) = rx.recv().await {
                let data = format!("{line}\n");
                let frame = format!("{:x}\r\n{data}\r\n", data.len());
                if conn.write_all(frame.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = conn.write_all(b"0\r\n\r\n").await;
            let _ = conn.shutdown().await;
        }
        None => {
            // Quiet watch: keep the stream open until the client goes away.
            if write_stream_head(&mut conn).await.is_err() {
                return;
            }
            let mut sink = [0u8; 64];
            while let Ok(n) = conn.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

async fn write_stream_head(conn: &mut TcpStream) -> std::io::Result<()> {
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

pub fn status_json(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
    .to_string()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits (at most `secs`) until `cond(index)` holds, woken by the index's
/// update signal (plus a 20 ms re-check for time-based conditions).
pub async fn wait_until(index: &PodIndex, secs: u64, what: &str, mut cond: impl FnMut(&PodIndex) -> bool) {
    let mut updates = index.updates();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond(index) {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what}; stats: {:?}", index.stats());
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), updates.changed()).await;
    }
}
