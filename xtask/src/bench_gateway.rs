//! `cargo xtask bench --only gateway`: the connect-time balancer against a
//! direct connection, HAProxy (`mode tcp`, `balance roundrobin`) and
//! nginx's `stream` module, in alternating rounds:
//! - wrk keep-alive and wrk with a new connection per request
//!   (`Connection: close`, so a connect per request), `-t2 -c50`, against
//!   nginx backends (one worker each): "direct" and "balancer, 1 backend"
//!   to backend A (the balancer's own cost), "balancer, 2 backends",
//!   HAProxy and nginx stream round robin over A and B;
//! - iperf3 bulk throughput through each to one iperf3 server.
//!
//! The clients run in a cgroup the bench makes, where the gateway's
//! programs are attached (VIPs in 127.0.0.0/8). Reports medians of
//! requests/s and Gbit/s, CPU per request and per GB (clients, backends,
//! proxy, gateway), and the ratios the goals are about.
use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{bench::cpu_seconds, procfs, setup::agent_path};

/// One backend (A), two backends (A, B), iperf3.
const VIP_ONE: &str = "127.0.0.180";
const VIP_TWO: &str = "127.0.0.182";
const VIP_IPERF: &str = "127.0.0.181";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Direct,
    BalancerOne,
    BalancerTwo,
    Haproxy,
    NginxStream,
}

impl Mode {
    const ALL: [Mode; 5] = [Mode::Direct, Mode::BalancerOne, Mode::BalancerTwo, Mode::Haproxy, Mode::NginxStream];

    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::BalancerOne => "balancer, 1 backend",
            Mode::BalancerTwo => "balancer, 2 backends",
            Mode::Haproxy => "HAProxy",
            Mode::NginxStream => "nginx stream",
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("masdeepflow-bench-gw-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn wait_listening(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A server process and its scratch directory, stopped when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
    stop: i32,
}

impl Server {
    /// CPU seconds of the process and its direct children (nginx workers).
    fn cpu(&self) -> f64 {
        tree_cpu(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, self.stop) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tree_cpu(pid: u32) -> f64 {
    let mut total = procfs::cpu_seconds(pid).unwrap_or(0.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(pid) {
            total += procfs::cpu_seconds(child).unwrap_or(0.0);
        }
    }
    total
}

fn nginx_backend(name: &str, port: u16) -> Result<Server> {
    let dir = scratch(name)?;
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::write(dir.join("www/index.html"), vec![b'x'; 612])?;
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 8192; }}\n\
             http {{ access_log off; keepalive_requests 10000000; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port} backlog=4096; root {d}/www; }} }}\n",
            d = dir.display()
        ),
    )?;
    let child =
        Command::new("nginx").arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf")).spawn().context("nginx (apt-get install nginx)")?;
    wait_listening(port, "nginx")?;
    Ok(Server { child, dir, stop: libc::SIGQUIT })
}

fn iperf_server(port: u16) -> Result<Server> {
    let dir = scratch("iperf")?;
    let child = Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("iperf3 (apt-get install iperf3)")?;
    wait_listening(port, "iperf3")?;
    Ok(Server { child, dir, stop: libc::SIGTERM })
}

fn haproxy(web: u16, iperf: u16, backends: [u16; 2], iperf_backend: u16) -> Result<Server> {
    let dir = scratch("haproxy")?;
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  nbthread 2\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend web\n  bind 127.0.0.1:{web}\n  default_backend web\nbackend web\n  balance roundrobin\n  server a 127.0.0.1:{}\n  server b 127.0.0.1:{}\n\
             frontend iperf\n  bind 127.0.0.1:{iperf}\n  default_backend iperf\nbackend iperf\n  server i 127.0.0.1:{iperf_backend}\n",
            backends[0], backends[1]
        ),
    )?;
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .spawn()
        .context("haproxy (apt-get install haproxy)")?;
    wait_listening(web, "haproxy")?;
    Ok(Server { child, dir, stop: libc::SIGTERM })
}

fn nginx_stream(web: u16, iperf: u16, backends: [u16; 2], iperf_backend: u16) -> Result<Server> {
    let module = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("nginx's stream module (apt-get install libnginx-mod-stream)")?;
    let dir = scratch("stream")?;
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "load_module {module};\ndaemon off;\nworker_processes 2;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 8000; }}\n\
             stream {{\n upstream web {{ server 127.0.0.1:{}; server 127.0.0.1:{}; }}\n server {{ listen 127.0.0.1:{web} backlog=4096; proxy_pass web; }}\n\
             upstream iperf {{ server 127.0.0.1:{iperf_backend}; }}\n server {{ listen 127.0.0.1:{iperf}; proxy_pass iperf; }}\n}}\n",
            backends[0],
            backends[1],
            d = dir.display()
        ),
    )?;
    let child = Command::new("nginx").arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf")).spawn().context("starting nginx stream")?;
    wait_listening(web, "nginx stream")?;
    Ok(Server { child, dir, stop: libc::SIGQUIT })
}

/// A cgroup2 directory for the clients, removed when dropped.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new() -> Result<Cgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let root = mountinfo
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                if right.split(' ').next()? != "cgroup2" {
                    return None;
                }
                Some(PathBuf::from(left.split(' ').nth(4)?))
            })
            .context("no cgroup2 mount")?;
        let dir = root.join(format!("mdf-bench-gw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {} (needs root)", dir.display()))?;
        Ok(Cgroup(dir))
    }

    /// `program args` inside the cgroup.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("echo $$ > \"$0\" && exec \"$@\"").arg(self.0.join("cgroup.procs")).arg(program);
        c
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The gateway, started for the balancer runs only.
struct Gateway {
    child: Child,
    config: PathBuf,
}

impl Gateway {
    fn start(cgroup: &Cgroup, backends: [u16; 2], iperf_backend: u16) -> Result<Gateway> {
        let config = std::env::temp_dir().join(format!("masdeepflow-bench-gw-{}.toml", std::process::id()));
        let scope = cgroup.0.display();
        std::fs::write(
            &config,
            format!(
                "[[service]]\nname = \"one\"\nvip = \"{VIP_ONE}:80\"\nscope = \"{scope}\"\nbackends = [ {{ address = \"127.0.0.1:{}\" }} ]\n\n\
                 [[service]]\nname = \"two\"\nvip = \"{VIP_TWO}:80\"\nscope = \"{scope}\"\n\
                 backends = [ {{ address = \"127.0.0.1:{}\" }}, {{ address = \"127.0.0.1:{}\" }} ]\n\n\
                 [[service]]\nname = \"iperf\"\nvip = \"{VIP_IPERF}:5201\"\nscope = \"{scope}\"\nbackends = [ {{ address = \"127.0.0.1:{iperf_backend}\" }} ]\n",
                backends[0], backends[0], backends[1]
            ),
        )?;
        let out = config.with_extension("jsonl");
        let mut child = Command::new(agent_path())
            .args(["gateway", "--stats-interval", "3600s", "--config"])
            .arg(&config)
            .stdout(File::create(&out)?)
            .spawn()
            .context("starting the gateway")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut first = String::new();
            BufReader::new(File::open(&out)?).read_line(&mut first)?;
            if first.contains("gateway_start") {
                let _ = std::fs::remove_file(&out);
                return Ok(Gateway { child, config });
            }
            if let Some(status) = child.try_wait()? {
                bail!("the gateway exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("the gateway did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cpu(&self) -> f64 {
        procfs::cpu_seconds(self.child.id()).unwrap_or(0.0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// One wrk process in the cgroup: (requests/s, requests).
fn wrk(cgroup: &Cgroup, url: &str, threads: u32, conns: u32, secs: u64, close: bool) -> Result<Child> {
    let mut cmd = cgroup.command("wrk");
    cmd.args([format!("-t{threads}"), format!("-c{conns}"), format!("-d{secs}s")]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("wrk (apt-get install wrk)")
}

fn wrk_result(child: Child) -> Result<(f64, u64, u64)> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("wrk failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rps: f64 = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).context("no Requests/sec")?.trim().parse()?;
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().to_string()))
        .context("no request count")?
        .parse()?;
    // "Socket errors: connect 0, read 0, write 0, timeout 0" and "Non-2xx".
    let errors: u64 = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Socket errors:"))
        .flat_map(|l| l.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()))
        .sum::<u64>()
        + text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum::<u64>();
    Ok((rps, requests, errors))
}

struct HttpRun {
    rps: f64,
    cpu_us_per_request: f64,
    errors: u64,
}

/// Run time and run count of the gateway's programs (`kernel.bpf_stats_enabled`).
fn gateway_program_stats() -> (u64, u64) {
    let Ok(out) = Command::new("bpftool").args(["prog", "show", "--json"]).output() else { return (0, 0) };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut total = (0, 0);
    for p in v.as_array().into_iter().flatten() {
        if p["name"].as_str().is_some_and(|n| n == "gw_connect4" || n == "gw_sock_release") {
            total.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            total.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    total
}

/// Turns on the kernel's per-program run-time accounting while alive.
struct BpfStats(Option<String>);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn on() -> BpfStats {
        let old = std::fs::read_to_string(Self::PATH).ok();
        let _ = std::fs::write(Self::PATH, "1");
        BpfStats(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(Self::PATH, old.trim());
        }
    }
}

struct BulkRun {
    gbps: f64,
    cpu_s_per_gb: f64,
}

struct Setup {
    cgroup: Cgroup,
    backends: [Server; 2],
    ports: [u16; 2],
    iperf: Server,
    iperf_port: u16,
}

impl Setup {
    fn background_cpu(&self) -> f64 {
        self.backends.iter().map(Server::cpu).sum::<f64>() + self.iperf.cpu()
    }
}

/// Proxies and the gateway for one mode; `(web address, iperf address)`.
struct Front {
    proxy: Option<Server>,
    gateway: Option<Gateway>,
    web: String,
    iperf: (String, u16),
}

impl Front {
    fn start(mode: Mode, s: &Setup) -> Result<Front> {
        let (web, iperf) = (free_port()?, free_port()?);
        Ok(match mode {
            Mode::Direct => Front {
                proxy: None,
                gateway: None,
                web: format!("http://127.0.0.1:{}/", s.ports[0]),
                iperf: ("127.0.0.1".into(), s.iperf_port),
            },
            Mode::BalancerOne | Mode::BalancerTwo => Front {
                proxy: None,
                gateway: Some(Gateway::start(&s.cgroup, s.ports, s.iperf_port)?),
                web: format!("http://{}:80/", if mode == Mode::BalancerOne { VIP_ONE } else { VIP_TWO }),
                iperf: (VIP_IPERF.into(), 5201),
            },
            Mode::Haproxy => Front {
                proxy: Some(haproxy(web, iperf, s.ports, s.iperf_port)?),
                gateway: None,
                web: format!("http://127.0.0.1:{web}/"),
                iperf: ("127.0.0.1".into(), iperf),
            },
            Mode::NginxStream => Front {
                proxy: Some(nginx_stream(web, iperf, s.ports, s.iperf_port)?),
                gateway: None,
                web: format!("http://127.0.0.1:{web}/"),
                iperf: ("127.0.0.1".into(), iperf),
            },
        })
    }

    fn cpu(&self) -> f64 {
        self.proxy.as_ref().map_or(0.0, Server::cpu) + self.gateway.as_ref().map_or(0.0, Gateway::cpu)
    }
}

fn http_run(s: &Setup, front: &Front, secs: u64, close: bool) -> Result<HttpRun> {
    let (c0, b0, f0) = (cpu_seconds(), s.background_cpu(), front.cpu());
    let results = [wrk_result(wrk(&s.cgroup, &front.web, 2, 50, secs, close)?)?];
    let cpu = (cpu_seconds() - c0) + (s.background_cpu() - b0) + (front.cpu() - f0);
    let requests: u64 = results.iter().map(|r| r.1).sum();
    Ok(HttpRun {
        rps: results.iter().map(|r| r.0).sum(),
        cpu_us_per_request: cpu / requests.max(1) as f64 * 1e6,
        errors: results.iter().map(|r| r.2).sum(),
    })
}

fn bulk_run(s: &Setup, front: &Front, secs: u64) -> Result<BulkRun> {
    let (c0, b0, f0) = (cpu_seconds(), s.background_cpu(), front.cpu());
    let out = s
        .cgroup
        .command("iperf3")
        .args(["-c", &front.iperf.0, "-p", &front.iperf.1.to_string(), "-t", &secs.to_string(), "-J"])
        .output()
        .context("iperf3")?;
    if !out.status.success() {
        bail!("iperf3 failed: {}", String::from_utf8_lossy(&out.stdout).lines().find(|l| l.contains("error")).unwrap_or(""));
    }
    let cpu = (cpu_seconds() - c0) + (s.background_cpu() - b0) + (front.cpu() - f0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().context("no iperf3 result")?;
    let bytes = v["end"]["sum_received"]["bytes"].as_f64().context("no iperf3 bytes")?;
    Ok(BulkRun { gbps: bps / 1e9, cpu_s_per_gb: cpu / (bytes / 1e9) })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

pub fn run(rounds: usize, secs: u64) -> Result<()> {
    for tool in ["nginx", "wrk", "haproxy", "iperf3"] {
        if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status()?.code() != Some(0) {
            bail!("{tool} is missing (apt-get install nginx libnginx-mod-stream wrk haproxy iperf3)");
        }
    }
    let ports = [free_port()?, free_port()?];
    let iperf_port = free_port()?;
    let setup = Setup {
        cgroup: Cgroup::new()?,
        backends: [nginx_backend("a", ports[0])?, nginx_backend("b", ports[1])?],
        ports,
        iperf: iperf_server(iperf_port)?,
        iperf_port,
    };
    // [mode][workload] samples: keep-alive, new connection, bulk.
    let mut keep: Vec<Vec<HttpRun>> = Mode::ALL.iter().map(|_| Vec::new()).collect();
    // Alternating rounds; within a round the order of the modes turns, so
    // that no mode always runs right after another.
    let mut fresh: Vec<Vec<HttpRun>> = Mode::ALL.iter().map(|_| Vec::new()).collect();
    let mut bulk: Vec<Vec<BulkRun>> = Mode::ALL.iter().map(|_| Vec::new()).collect();
    let mut program_ns: Vec<f64> = Vec::new();
    for round in 0..rounds {
        for k in 0..Mode::ALL.len() {
            let i = (k + round) % Mode::ALL.len();
            let mode = &Mode::ALL[i];
            let front = Front::start(*mode, &setup).with_context(|| format!("starting {}", mode.name()))?;
            keep[i].push(http_run(&setup, &front, secs, false)?);
            if *mode == Mode::BalancerOne {
                // The balancer's own cost per connect, from the kernel's
                // accounting of its programs (connect4 and sock_release).
                let stats = BpfStats::on();
                let (t0, n0) = gateway_program_stats();
                let run = http_run(&setup, &front, secs, true)?;
                let (t1, n1) = gateway_program_stats();
                drop(stats);
                if n1 > n0 {
                    program_ns.push((t1 - t0) as f64 / run.rps.max(1.0) / secs as f64);
                }
                fresh[i].push(run);
            } else {
                fresh[i].push(http_run(&setup, &front, secs, true)?);
            }
            // One iperf3 server: the balancer's bulk run is the same with one or two web backends.
            if *mode != Mode::BalancerTwo {
                bulk[i].push(bulk_run(&setup, &front, secs)?);
            }
        }
        eprintln!("bench gateway: round {}/{rounds} done", round + 1);
    }
    let m = |v: &[HttpRun], f: fn(&HttpRun) -> f64| median(v.iter().map(f).collect());
    println!("## gateway ({rounds} rounds of {secs} s runs in turn: {}; medians)", Mode::ALL.map(Mode::name).join(", "));
    println!(
        "| | direct | balancer, 1 backend | balancer, 2 backends | HAProxy, 2 | nginx stream, 2 | balancer 1 / direct | balancer 2 / HAProxy |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let row = |label: &str, v: [f64; 5], prec: usize| {
        let cell = |x: f64| if x.is_nan() { "-".to_string() } else { format!("{x:.prec$}") };
        println!(
            "| {label} | {} | {} | {} | {} | {} | {:.3} | {} |",
            cell(v[0]),
            cell(v[1]),
            cell(v[2]),
            cell(v[3]),
            cell(v[4]),
            v[1] / v[0],
            if v[2].is_nan() { "-".into() } else { format!("{:.2}", v[2] / v[3]) }
        );
    };
    let per = |v: &Vec<Vec<HttpRun>>, f: fn(&HttpRun) -> f64| std::array::from_fn::<f64, 5, _>(|i| m(&v[i], f));
    let per_bulk = |f: fn(&BulkRun) -> f64| {
        std::array::from_fn::<f64, 5, _>(|i| if bulk[i].is_empty() { f64::NAN } else { median(bulk[i].iter().map(f).collect()) })
    };
    let keep_rps = per(&keep, |r| r.rps);
    let fresh_rps = per(&fresh, |r| r.rps);
    let gbps = per_bulk(|r| r.gbps);
    row("wrk keep-alive, requests/s", keep_rps, 0);
    row("wrk keep-alive, CPU us/request", per(&keep, |r| r.cpu_us_per_request), 1);
    row("wrk new connection per request, requests/s", fresh_rps, 0);
    row("wrk new connection, CPU us/request", per(&fresh, |r| r.cpu_us_per_request), 1);
    row("iperf3 bulk, Gbit/s", gbps, 2);
    row("iperf3 bulk, CPU s/GB", per_bulk(|r| r.cpu_s_per_gb), 3);
    let errors: Vec<String> = Mode::ALL
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", m.name(), keep[i].iter().chain(&fresh[i]).map(|r| r.errors).sum::<u64>()))
        .collect();
    println!("wrk socket errors and non-2xx over all runs: {}", errors.join(", "));
    // Ratios of runs next to each other in time, then their median: less
    // exposed to the machine's drift than a ratio of medians.
    let paired = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let col = |v: &Vec<Vec<HttpRun>>, i: usize, f: fn(&HttpRun) -> f64| v[i].iter().map(f).collect::<Vec<f64>>();
    let bcol = |i: usize, f: fn(&BulkRun) -> f64| bulk[i].iter().map(f).collect::<Vec<f64>>();
    let pct = |r: f64| (r - 1.0) * 100.0;
    println!(
        "balancer (1 backend) / direct, median of paired ratios: requests/s keep-alive {:+.1}%, new connection {:+.1}%; iperf3 Gbit/s {:+.1}%; \
         CPU per request keep-alive {:+.1}%, new connection {:+.1}%; CPU per GB {:+.1}%",
        pct(paired(&col(&keep, 1, |r| r.rps), &col(&keep, 0, |r| r.rps))),
        pct(paired(&col(&fresh, 1, |r| r.rps), &col(&fresh, 0, |r| r.rps))),
        pct(paired(&bcol(1, |r| r.gbps), &bcol(0, |r| r.gbps))),
        pct(paired(&col(&keep, 1, |r| r.cpu_us_per_request), &col(&keep, 0, |r| r.cpu_us_per_request))),
        pct(paired(&col(&fresh, 1, |r| r.cpu_us_per_request), &col(&fresh, 0, |r| r.cpu_us_per_request))),
        pct(paired(&bcol(1, |r| r.cpu_s_per_gb), &bcol(0, |r| r.cpu_s_per_gb))),
    );
    if !program_ns.is_empty() {
        let ns = median(program_ns);
        println!(
            "the balancer's programs (connect4 + sock_release, kernel.bpf_stats_enabled) per new connection: {ns:.0} ns median, {:.2}% of the direct run's CPU per request",
            ns / 1000.0 / m(&fresh[0], |r| r.cpu_us_per_request) * 100.0
        );
    }
    println!(
        "goal: new-connection rate, balancer vs HAProxy (2 backends each): {:.2}x median of paired ratios (goal 1.5x); keep-alive {:.2}x; bulk (1 backend each) {:.2}x",
        paired(&col(&fresh, 2, |r| r.rps), &col(&fresh, 3, |r| r.rps)),
        paired(&col(&keep, 2, |r| r.rps), &col(&keep, 3, |r| r.rps)),
        paired(&bcol(1, |r| r.gbps), &bcol(3, |r| r.gbps)),
    );
    Ok(())
}
