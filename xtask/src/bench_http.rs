//! `cargo xtask bench` HTTP cases: nginx serving a 6-byte file to wrk
//! (`-t1 -c32`, keep-alive) at saturation, and at a fixed rate of about
//! 10k requests/s (12 connections paced with wrk's Lua `delay`), in rounds
//! of three runs: no tracer, the agent (no arguments: every family on, both
//! sides of each exchange reported as JSON), and a bpftrace peer that
//! captures the same syscalls' payloads. Reports medians and median ratios,
//! the CPU added per request (workload + tracer), the agent's own CPU and
//! the kernel programs' time per request (per program, from bpf_stats).
use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    bench::{bpf_delta, bpf_stats, median, output_path},
    setup::agent_path,
};

/// The peer: the payload of every socket read/write of nginx and wrk,
/// 64 bytes of it, printed (the classic bpftrace way of doing this).
const BPFTRACE_PEER: &str = r#"
tracepoint:syscalls:sys_enter_read, tracepoint:syscalls:sys_enter_write
/comm == "nginx" || comm == "wrk"/ { @buf[tid] = (uint64)args->buf; }
tracepoint:syscalls:sys_enter_recvfrom
/comm == "nginx" || comm == "wrk"/ { @buf[tid] = (uint64)args->ubuf; }
tracepoint:syscalls:sys_enter_sendto
/comm == "nginx" || comm == "wrk"/ { @buf[tid] = (uint64)args->buff; }
tracepoint:syscalls:sys_exit_read, tracepoint:syscalls:sys_exit_write,
tracepoint:syscalls:sys_exit_recvfrom, tracepoint:syscalls:sys_exit_sendto
/@buf[tid] && args->ret > 0/ { printf("%d %d %r\n", pid, args->ret, buf((uint8 *)@buf[tid], 64)); delete(@buf[tid]); }
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracer {
    None,
    Agent,
    Bpftrace,
}

impl Tracer {
    fn name(self) -> &'static str {
        match self {
            Tracer::None => "none",
            Tracer::Agent => "masdeepflow",
            Tracer::Bpftrace => "bpftrace",
        }
    }
}

struct Run {
    rps: f64,
    p99_ms: f64,
    requests: u64,
    /// CPU seconds of nginx + wrk + the tracer.
    cpu: f64,
    /// CPU seconds of the tracer alone.
    tracer_cpu: f64,
    /// Events reported / requests made (agent: http events of both sides / 2).
    completeness: f64,
    lost: u64,
    /// Kernel program time during the run (name -> ns, runs).
    bpf: BTreeMap<String, (u64, u64)>,
}

/// CPU seconds of a process and its waited-for children (0 once gone).
fn proc_cpu(pid: u32) -> f64 {
    crate::procfs::cpu_seconds(pid).unwrap_or(0.0)
}

/// CPU seconds of a process's threads, nanosecond precise (0 once gone).
fn thread_cpu(pid: u32) -> f64 {
    crate::procfs::thread_cpu_seconds(pid).unwrap_or(0.0)
}

/// CPU of nginx: master and its workers.
fn nginx_cpu(master: u32) -> f64 {
    let mut total = proc_cpu(master);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(master) {
            total += proc_cpu(pid);
        }
    }
    total
}

pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// nginx serving `body` at `/index.html` on a free loopback port.
    pub fn start(body: &[u8]) -> Result<Nginx> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("masdeepflow-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("www"))?;
        std::fs::write(dir.join("www/index.html"), body)?;
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "daemon off;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 4096; }}\n\
                 http {{ access_log off; keepalive_requests 10000000; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
                 server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
                d = dir.display()
            ),
        )?;
        let child = Command::new("nginx").arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf")).spawn().context("starting nginx")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx { child, port, dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tracer process writing to a file, as under a log collector: reading
/// its output in this process would take CPU from the workload being
/// measured (the exec and TCP cases do the same).
struct Traced {
    child: Child,
    out: PathBuf,
}

fn start_tracer(tracer: Tracer) -> Result<Option<Traced>> {
    let mut cmd = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Agent => {
            let mut c = Command::new(agent_path());
            c.args(["--stats-interval", "3600s"]);
            c
        }
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", BPFTRACE_PEER]);
            c
        }
    };
    let out = output_path(tracer.name());
    let child = cmd
        .stdout(File::create(&out).with_context(|| format!("creating {}", out.display()))?)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", tracer.name()))?;
    let traced = Traced { child, out };
    // Ready once the first line is out: `agent_start`, or bpftrace's
    // "Attaching N probes..." (printed before it attaches them).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut first = String::new();
        BufReader::new(File::open(&traced.out)?).read_line(&mut first)?;
        if first.contains("agent_start") || first.starts_with("Attaching") {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} did not start within 60 s", tracer.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if tracer == Tracer::Bpftrace {
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(Some(traced))
}

impl Traced {
    /// Stops the tracer; returns its `http` lines of the server on `port`
    /// and its last `agent_stats` line.
    fn stop(mut self, port: u16) -> Result<(u64, String)> {
        // bpftrace has been seen to miss a SIGINT: repeat it each second,
        // and kill after ten.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut next_signal = Instant::now();
        while self.child.try_wait()?.is_none() {
            let now = Instant::now();
            if now > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("tracer did not stop on SIGINT within 10 s");
            }
            if now >= next_signal {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
                next_signal = now + Duration::from_secs(1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (mut http, mut stats) = (0, String::new());
        let server = format!("\"dst\":{{\"ip\":\"127.0.0.1\",\"port\":{port}}}");
        for line in BufReader::new(File::open(&self.out)?).split(b'\n') {
            let line = line?;
            if line.starts_with(b"{\"type\":\"http\"") && line.windows(server.len()).any(|w| w == server.as_bytes()) {
                http += 1;
            } else if line.windows(11).any(|w| w == b"agent_stats") {
                stats = String::from_utf8_lossy(&line).into_owned();
            }
        }
        Ok((http, stats))
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Runs wrk; `paced` adds a Lua delay per request for a fixed rate.
fn wrk(port: u16, secs: u64, paced: bool) -> Result<(f64, f64, u64, f64)> {
    let cpu0 = crate::bench::cpu_seconds();
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "--latency", "-d", &format!("{secs}s")]);
    let script;
    if paced {
        // 12 connections, each waiting 1 ms between requests: about 10k req/s.
        script = std::env::temp_dir().join(format!("masdeepflow-wrk-{}.lua", std::process::id()));
        std::fs::write(&script, "function delay() return 1 end\n")?;
        cmd.args(["-c12", "-s"]).arg(&script);
    } else {
        cmd.arg("-c32");
    }
    let out = cmd.arg(format!("http://127.0.0.1:{port}/index.html")).output().context("wrk (apt-get install wrk)")?;
    if !out.status.success() {
        bail!("wrk failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rps: f64 = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).context("no Requests/sec")?.trim().parse()?;
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.to_string()))
        .context("no request count")?
        .trim()
        .parse()?;
    let p99 = text.lines().find_map(|l| l.trim().strip_prefix("99%")).context("no p99")?.trim();
    let p99_ms = if let Some(us) = p99.strip_suffix("us") {
        us.parse::<f64>()? / 1000.0
    } else if let Some(ms) = p99.strip_suffix("ms") {
        ms.parse::<f64>()?
    } else if let Some(s) = p99.strip_suffix('s') {
        s.parse::<f64>()? * 1000.0
    } else {
        bail!("odd p99 {p99}")
    };
    Ok((rps, p99_ms, requests, crate::bench::cpu_seconds() - cpu0))
}

fn one_run(nginx: &Nginx, tracer: Tracer, secs: u64, paced: bool) -> Result<Run> {
    let traced = start_tracer(tracer)?;
    let n0 = nginx_cpu(nginx.child.id());
    let t0 = traced.as_ref().map_or(0.0, |t| thread_cpu(t.child.id()));
    let b0 = bpf_stats();
    let (rps, p99_ms, requests, wrk_cpu) = wrk(nginx.port, secs, paced)?;
    let bpf = bpf_delta(&b0, &bpf_stats());
    // Let the tracer drain what the kernel queued, then stop it.
    std::thread::sleep(Duration::from_millis(500));
    let tracer_cpu = traced.as_ref().map_or(0.0, |t| thread_cpu(t.child.id()) - t0);
    let nginx_cpu = nginx_cpu(nginx.child.id()) - n0;
    let (mut completeness, mut lost) = (1.0, 0);
    if let Some(t) = traced {
        let (http, stats) = t.stop(nginx.port)?;
        if tracer == Tracer::Agent {
            completeness = (http as f64 / 2.0 / requests as f64).min(1.0);
            let stats: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
            let sum = |v: &serde_json::Value| v.as_object().map_or(0, |m| m.values().filter_map(|x| x.as_u64()).sum::<u64>());
            lost = sum(&stats["lost"]["kernel_ring_buffer"]) + sum(&stats["lost"]["user_queue"]);
        }
    }
    Ok(Run { rps, p99_ms, requests, cpu: wrk_cpu + nginx_cpu + tracer_cpu, tracer_cpu, completeness, lost, bpf })
}

pub fn run(pairs: usize, secs: u64) -> Result<Value> {
    for tool in ["nginx", "wrk", "bpftrace"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?.stdout.is_empty() {
            bail!("{tool} is missing (apt-get install nginx wrk bpftrace)");
        }
    }
    let nginx = Nginx::start(b"hello\n")?;
    let mut results = serde_json::Map::new();
    for (key, label, paced) in [
        ("saturation", "saturation (wrk -t1 -c32, keep-alive, 6-byte body)", false),
        ("fixed_rate", "fixed rate (~10k req/s, wrk -t1 -c12 with a 1 ms Lua delay)", true),
    ] {
        let tracers = [Tracer::None, Tracer::Agent, Tracer::Bpftrace];
        let mut runs: Vec<Vec<Run>> = tracers.iter().map(|_| Vec::new()).collect();
        for round in 0..pairs {
            for (i, t) in tracers.iter().enumerate() {
                runs[i].push(one_run(&nginx, *t, secs, paced)?);
            }
            eprintln!("bench http {label}: round {}/{pairs} done", round + 1);
        }
        println!("## http, {label}, {pairs} rounds of {secs} s");
        let base = &runs[0];
        let mut case = serde_json::Map::new();
        for (i, t) in tracers.iter().enumerate() {
            let r = &runs[i];
            let thr_ratio = median(r.iter().zip(base).map(|(x, b)| x.rps / b.rps).collect());
            let p99_ratio = median(r.iter().zip(base).map(|(x, b)| x.p99_ms / b.p99_ms).collect());
            let us_per_req = median(r.iter().map(|x| x.cpu / x.requests as f64 * 1e6).collect());
            let added = median(r.iter().zip(base).map(|(x, b)| (x.cpu / x.requests as f64 - b.cpu / b.requests as f64) * 1e6).collect());
            let tracer_us = median(r.iter().map(|x| x.tracer_cpu / x.requests as f64 * 1e6).collect());
            let completeness = r.iter().map(|x| x.completeness).fold(f64::INFINITY, f64::min);
            let lost = r.iter().map(|x| x.lost).max().unwrap_or(0);
            let bpf_ns = median(r.iter().map(|x| x.bpf.values().map(|v| v.0).sum::<u64>() as f64 / x.requests as f64).collect());
            println!(
                "{:<12} req/s median {:>9.0}  throughput ratio {:.3}  p99 {:.3} ms (ratio {:.2})  CPU {:.1} us/req (added {:+.2}; tracer {:.2}; kernel programs {:.2})  completeness min {:.4}  lost max {}",
                t.name(),
                median(r.iter().map(|x| x.rps).collect()),
                thr_ratio,
                median(r.iter().map(|x| x.p99_ms).collect()),
                p99_ratio,
                us_per_req,
                added,
                tracer_us,
                bpf_ns / 1e3,
                completeness,
                lost
            );
            let mut programs = serde_json::Map::new();
            if *t == Tracer::Agent {
                let mut names: Vec<&String> = r.iter().flat_map(|x| x.bpf.keys()).collect();
                names.sort();
                names.dedup();
                for n in names {
                    let per_run = median(r.iter().filter_map(|x| x.bpf.get(n)).map(|(ns, c)| *ns as f64 / (*c).max(1) as f64).collect());
                    let per_req = median(r.iter().map(|x| x.bpf.get(n).map_or(0.0, |v| v.1 as f64 / x.requests as f64)).collect());
                    println!("  {n:<24} {per_run:>6.0} ns per run, {per_req:.2} runs per request");
                    programs.insert(n.clone(), json!({ "ns_per_run": per_run.round(), "runs_per_request": per_req }));
                }
            }
            case.insert(
                t.name().into(),
                json!({
                    "rps": median(r.iter().map(|x| x.rps).collect()), "throughput_ratio": thr_ratio, "p99_ms": median(r.iter().map(|x| x.p99_ms).collect()),
                    "p99_ratio": p99_ratio, "cpu_us_per_request": us_per_req, "added_cpu_us_per_request": added,
                    "tracer_cpu_us_per_request": tracer_us, "bpf_ns_per_request": bpf_ns, "bpf_programs": programs,
                    "completeness_min": completeness, "lost_max": lost,
                }),
            );
        }
        results.insert(key.into(), Value::Object(case));
    }
    Ok(Value::Object(results))
}
