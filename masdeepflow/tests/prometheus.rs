//! End to end with Debian's Prometheus server: the agent serves
//! `/metrics` with `--output none` (nothing on stdout), a real Prometheus
//! (started here with a scrape configuration pointing at the agent on
//! 127.0.0.1) scrapes it every second, and PromQL over its HTTP API gives
//! exact values. Also: the text format passes `promtool check metrics`,
//! OpenMetrics is served to whoever asks for it, and 100,000 distinct
//! paths stay within the documented series limit; MySQL operations
//! between a real MariaDB and its CLI give exact db_*_operation_duration
//! histograms.
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    Agent, Peer,
    mariadb::MariaDb,
    metrics, sample,
    servers::{Nginx, free_port},
};

/// One test at a time: each agent sees the whole host's HTTP traffic
/// (`--port` keeps its own), so the 100,000-path flood of one test fills
/// the other tests' ring buffers and their exact loss counts (zero) fail.
static SERIAL: Mutex<()> = Mutex::new(());

struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Scrapes 127.0.0.1:`target` every second (job `masdeepflow`).
    fn start(target: u16) -> Prometheus {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("masdeepflow-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: masdeepflow\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        let mut p = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.get("/-/ready").is_some_and(|b| b.contains("Ready")) {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited: {status}");
            }
            assert!(Instant::now() < deadline, "prometheus not ready within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn get(&self, path_and_query: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-s", "-f", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}{path_and_query}", self.port))
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The samples of an instant PromQL query: (labels, value).
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let out = Command::new("curl")
            .args(["-s", "-f", "--max-time", "5", "--get", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .expect("curl");
        assert!(out.status.success(), "query {promql} failed: {}", String::from_utf8_lossy(&out.stdout));
        let v: Value = serde_json::from_slice(&out.stdout).expect("Prometheus API JSON");
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|s| (s["metric"].clone(), s["value"][1].as_str().unwrap().parse::<f64>().unwrap()))
            .collect()
    }

    /// Waits (bounded) until `promql` gives one sample equal to `want`,
    /// then checks it: counters only grow, so the last value seen is the
    /// answer if it never gets there.
    fn expect(&self, promql: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.query(promql);
            if last.len() == 1 && last[0].1 == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{promql}: want {want}, Prometheus says {last:?}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// curl over one keep-alive connection; returns each URL's status.
fn curl(urls: &[String]) -> Vec<u16> {
    let out = Command::new("curl")
        .args(["-s", "-w", "%{http_code}\\n"])
        .args(urls.iter().flat_map(|u| ["-o", "/dev/null", u.as_str()]))
        .output()
        .expect("curl (apt-get install curl)");
    assert!(out.status.success(), "curl failed");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect()
}

fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_scrapes_exact_http_histograms_and_the_agents_own_numbers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 37 users exist; 3 requests go to users that do not.
    let ids: Vec<u32> = (0..37).map(|i| if i == 0 { 17 } else { 40 + i }).collect();
    let files: Vec<(String, Vec<u8>)> = ids.iter().map(|id| (format!("/users/{id}"), format!("user {id}\n").into_bytes())).collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    let nginx = Nginx::start_with(Path::new("nginx"), &files);
    let np = nginx.port;
    let mp = free_port();
    let agent = Agent::start_serving(
        &[
            "--output",
            "none",
            "--metrics-listen",
            &format!("127.0.0.1:{mp}"),
            "--events",
            "http",
            "--port",
            &np.to_string(),
            "--stats-interval",
            "1s",
        ],
        mp,
    );
    let prometheus = Prometheus::start(mp);
    let mut urls: Vec<String> = ids.iter().map(|id| format!("http://127.0.0.1:{np}/users/{id}?from=test")).collect();
    urls.extend((1000..1003).map(|id| format!("http://127.0.0.1:{np}/users/{id}")));
    let statuses = curl(&urls);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 37);
    assert_eq!(statuses.iter().filter(|s| **s == 404).count(), 3);

    let route = r#"http_route="/users/{id}""#;
    prometheus.expect(&format!(r#"sum(http_server_request_duration_seconds_count{{{route},http_response_status_code="200"}})"#), 37.0);
    prometheus.expect(&format!(r#"sum(http_server_request_duration_seconds_count{{{route},http_response_status_code="404"}})"#), 3.0);
    prometheus.expect(&format!(r#"sum(http_server_request_duration_seconds_bucket{{{route},le="+Inf"}})"#), 40.0);
    prometheus.expect(
        &format!(r#"sum(http_client_request_duration_seconds_count{{{route},http_response_status_code="404",error_type="404"}})"#),
        3.0,
    );
    prometheus.expect(
        &format!(
            r#"sum(http_server_request_duration_seconds_count{{http_request_method="GET",server_address="127.0.0.1",server_port="{np}"}})"#
        ),
        40.0,
    );
    // Seconds, not nanoseconds: 40 local requests take well under 40 s.
    let sum = prometheus.query(&format!(r#"sum(http_server_request_duration_seconds_sum{{{route}}})"#));
    assert!(sum.len() == 1 && sum[0].1 > 0.0 && sum[0].1 < 40.0, "{sum:?}");
    // One series per status for each side: the route folded the ids.
    prometheus.expect("count(http_server_request_duration_seconds_count)", 2.0);
    // The agent's own numbers, the same as agent_stats.
    prometheus.expect(r#"masdeepflow_events_emitted_total{type="http"}"#, 80.0);
    prometheus.expect("sum(masdeepflow_events_lost_total)", 0.0);
    prometheus.expect(r#"up{job="masdeepflow"}"#, 1.0);
    prometheus.expect("masdeepflow_queue_capacity", 65536.0);
    let rss = prometheus.query("process_resident_memory_bytes");
    assert!(rss.len() == 1 && rss[0].1 > 1e6 && rss[0].1 < 200e6, "{rss:?}");

    // The text format, as promtool reads it; OpenMetrics when asked.
    let text = metrics(mp, false).expect("metrics");
    promtool_accepts(&text);
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"http_server_request_duration_seconds_count{{http_request_method="GET",http_response_status_code="200",http_route="/users/{{id}}",server_address="127.0.0.1",server_port="{np}"}}"#
            )
        ),
        Some(37.0),
        "{text}"
    );
    assert!(text.contains("# TYPE masdeepflow_events_emitted_total counter\n"), "{text}");
    let om = metrics(mp, true).expect("openmetrics");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE http_server_request_duration_seconds histogram\n# UNIT http_server_request_duration_seconds seconds\n"),
        "{om}"
    );
    assert!(om.contains("# TYPE masdeepflow_events_emitted counter\n"), "{om}");
    assert_eq!(sample(&om, r#"masdeepflow_events_emitted_total{type="http"}"#), Some(80.0));

    let (events, status, err) = agent.stop_with(libc::SIGINT);
    assert!(status.success(), "{status}: {err}");
    assert!(events.is_empty(), "--output none writes nothing to stdout: {events:?}");
}

#[test]
fn a_hundred_thousand_distinct_paths_stay_within_the_series_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PATHS: u64 = 100_000;
    const LIMIT: u64 = 2000; // the documented default
    let nginx = Nginx::start();
    let np = nginx.port;
    let mp = free_port();
    let agent = Agent::start_serving(
        &[
            "--output",
            "none",
            "--metrics-listen",
            &format!("127.0.0.1:{mp}"),
            "--events",
            "http",
            "--port",
            &np.to_string(),
            "--stats-interval",
            "1s",
        ],
        mp,
    );
    let prometheus = Prometheus::start(mp);
    // One request at a time over one keep-alive connection (about 10 s
    // here): the point is the number of distinct label sets, and a client
    // that answers each response before the next request is seen whole on
    // both sides. (Pipelined, 16 responses arrive in one read whose
    // captured prefix holds only the first few: see docs/metrics.md.)
    let sent = Instant::now();
    let client = Peer::script("raw_http.py", &["paths", &np.to_string(), &PATHS.to_string(), "1"]);
    assert_eq!(client.line(), "done");
    client.wait();
    eprintln!("{PATHS} requests in {:?}", sent.elapsed());
    let started = Instant::now();
    let text = loop {
        let text = metrics(mp, false).expect("metrics");
        if sample(&text, r#"masdeepflow_events_emitted_total{type="http"}"#) == Some(2.0 * PATHS as f64) {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not every exchange counted within 60 s:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for side in ["server", "client"] {
        let name = format!("http_{side}_request_duration_seconds_count{{");
        let series: Vec<f64> =
            text.lines().filter(|l| l.starts_with(&name)).map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
        assert_eq!(series.len() as u64, LIMIT + 1, "{side}: the limit and one overflow series");
        assert_eq!(series.iter().sum::<f64>(), PATHS as f64, "{side}: every request counted once");
        assert_eq!(
            sample(&text, &format!(r#"http_{side}_request_duration_seconds_count{{otel_metric_overflow="true"}}"#)),
            Some((PATHS - LIMIT) as f64)
        );
        let metric = format!("http.{side}.request.duration");
        assert_eq!(sample(&text, &format!(r#"masdeepflow_metrics_overflow_total{{metric="{metric}"}}"#)), Some((PATHS - LIMIT) as f64));
        assert_eq!(sample(&text, &format!(r#"masdeepflow_metrics_series{{metric="{metric}"}}"#)), Some((LIMIT + 1) as f64));
    }
    assert_eq!(sample(&text, r#"masdeepflow_events_lost_total{reason="kernel_ring_buffer",type="http"}"#), Some(0.0));
    let rss = sample(&text, "process_resident_memory_bytes").unwrap();
    assert!(rss < 150e6, "agent RSS {rss} bytes after 100,000 paths");
    // Prometheus sees the same bounded set.
    prometheus.expect("count(http_server_request_duration_seconds_count)", (LIMIT + 1) as f64);
    prometheus.expect("sum(http_server_request_duration_seconds_count)", PATHS as f64);
    agent.stop();
}

#[test]
fn prometheus_scrapes_exact_mysql_operation_histograms() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = MariaDb::start();
    let dp = db.port;
    let mp = free_port();
    let agent = Agent::start_serving(
        &["--output", "none", "--metrics-listen", &format!("127.0.0.1:{mp}"), "--events", "mysql", "--port", &dp.to_string()],
        mp,
    );
    let prometheus = Prometheus::start(mp);
    // 7 point selects and 2 on a missing table, in one session of the
    // real CLI (batch mode, --force: the errors do not stop it).
    let mut script: String = (0..7).map(|i| format!("SELECT name FROM items WHERE id = {};\n", i % 3 + 1)).collect();
    script.push_str("SELECT * FROM missing_table;\nSELECT * FROM missing_table;\n");
    let mut child = db
        .cli()
        .arg("--force")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mariadb (apt-get install mariadb-client)");
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("ERROR 1146 (42S02)").count(), 2, "{err}");

    for side in ["client", "server"] {
        let m = format!("db_{side}_operation_duration_seconds");
        let ok = format!(
            r#"db_system_name="mysql",db_operation_name="SELECT",db_query_summary="SELECT items",server_address="127.0.0.1",server_port="{dp}""#
        );
        prometheus.expect(&format!(r#"sum({m}_count{{{ok},error_type=""}})"#), 7.0);
        prometheus.expect(&format!(r#"sum({m}_bucket{{{ok},error_type="",le="+Inf"}})"#), 7.0);
        prometheus.expect(
            &format!(r#"sum({m}_count{{db_system_name="mysql",db_operation_name="SELECT",db_query_summary="SELECT missing_table",error_type="1146"}})"#),
            2.0,
        );
        // Seconds: 7 local point selects take well under a second.
        let sum = prometheus.query(&format!(r#"sum({m}_sum{{{ok}}})"#));
        assert!(sum.len() == 1 && sum[0].1 > 0.0 && sum[0].1 < 1.0, "{side}: {sum:?}");
    }
    prometheus.expect(r#"sum(masdeepflow_events_lost_total{type="mysql"})"#, 0.0);
    let (events, status, err) = agent.stop_with(libc::SIGINT);
    assert!(status.success(), "{status}: {err}");
    assert!(events.is_empty(), "{events:?}");
}
