//! `cargo xtask bench`: the cost of the agent on real work, measured as
//! alternating runs without and with it. Reports medians and ratios of
//! wall time and CPU seconds, completeness (events seen / work done), the
//! agent's own CPU and peak RSS, and its idle CPU.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{procfs, setup::agent_path};

#[derive(clap::Args)]
pub struct Options {
    /// Pairs of runs (without, with the agent) per case.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Execs per exec-storm run.
    #[arg(long, default_value_t = 2000)]
    execs: usize,
    /// Loopback connections per churn run.
    #[arg(long, default_value_t = 20000)]
    connections: usize,
    /// Seconds the idle agent is watched.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Seconds per wrk run in the HTTP cases.
    #[arg(long, default_value_t = 5)]
    http_secs: u64,
    /// Seconds per sysbench run in the MySQL cases.
    #[arg(long, default_value_t = 5)]
    mysql_secs: u64,
    /// Only these cases (exec, tcp, idle, http, mysql); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// CPU seconds of this process and its waited-for children.
pub fn cpu_seconds() -> f64 {
    let usage = |who| {
        // SAFETY: rusage is a plain out struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer.
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

struct Agent {
    child: Child,
    out: PathBuf,
}

impl Agent {
    fn start(events: &str) -> Result<Agent> {
        let out = std::env::temp_dir().join(format!("masdeepflow-bench-{}.jsonl", std::process::id()));
        let child = Command::new(agent_path())
            .args(["--events", events, "--stats-interval", "3600s"])
            .stdout(File::create(&out)?)
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the agent")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut first = String::new();
            BufReader::new(File::open(&out)?).read_line(&mut first)?;
            if first.contains("agent_start") {
                return Ok(Agent { child, out });
            }
            if Instant::now() > deadline {
                bail!("the agent did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU seconds so far.
    fn cpu_seconds(&self) -> Result<f64> {
        procfs::cpu_seconds(self.child.id()).context("the agent is gone")
    }

    fn peak_rss_mb(&self) -> Result<f64> {
        procfs::memory_mb(self.child.id(), "VmHWM").context("the agent is gone")
    }

    /// Stops the agent and returns its output lines as JSON.
    fn stop(mut self) -> Result<Vec<serde_json::Value>> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        let mut text = String::new();
        File::open(&self.out)?.read_to_string(&mut text)?;
        let _ = std::fs::remove_file(&self.out);
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }
}

struct Sample {
    wall: f64,
    cpu: f64,
    agent_cpu: f64,
    rss_mb: f64,
    completeness: f64,
    lost: u64,
}

fn exec_storm(n: usize) -> Result<(f64, f64)> {
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    for i in 0..n {
        let status = Command::new("/bin/true").arg(format!("bench-{i}")).status()?;
        if !status.success() {
            bail!("/bin/true failed");
        }
    }
    Ok((t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0))
}

fn tcp_churn(n: usize) -> Result<(f64, f64, u16)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..n {
            let (mut s, _) = listener.accept()?;
            s.write_all(b"x")?;
        }
        Ok(())
    });
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    for _ in 0..n {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b)?;
    }
    server.join().expect("server thread")?;
    Ok((t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0, port))
}

fn lost_total(events: &[serde_json::Value]) -> u64 {
    let Some(stats) = events.iter().rev().find(|e| e["type"] == "agent_stats") else { return u64::MAX };
    let sum = |v: &serde_json::Value| v.as_object().map_or(0, |m| m.values().filter_map(|x| x.as_u64()).sum());
    sum(&stats["lost"]["kernel_ring_buffer"]) + sum(&stats["lost"]["user_queue"])
}

fn run_case(name: &str, opts: &Options) -> Result<()> {
    let mut base = Vec::new();
    let mut with = Vec::new();
    for pair in 0..opts.pairs {
        // Without the agent.
        let (wall, cpu) = match name {
            "exec" => exec_storm(opts.execs)?,
            _ => tcp_churn(opts.connections).map(|(w, c, _)| (w, c))?,
        };
        base.push(Sample { wall, cpu, agent_cpu: 0.0, rss_mb: 0.0, completeness: 1.0, lost: 0 });
        // With the agent.
        let agent = Agent::start(if name == "exec" { "exec,exit" } else { "tcp" })?;
        let a0 = agent.cpu_seconds()?;
        let (wall, cpu, seen_expected): (f64, f64, Box<dyn Fn(&serde_json::Value) -> bool>) = match name {
            "exec" => {
                let (w, c) = exec_storm(opts.execs)?;
                let me = std::process::id();
                (w, c, Box::new(move |e| e["type"] == "process_exec" && e["process"]["ppid"] == me && e["filename"] == "/bin/true"))
            }
            _ => {
                let (w, c, port) = tcp_churn(opts.connections)?;
                (w, c, Box::new(move |e| e["type"] == "tcp_connect" && e["dst"]["port"] == port))
            }
        };
        // Let the agent drain what the kernel queued before measuring it.
        std::thread::sleep(Duration::from_millis(300));
        let agent_cpu = agent.cpu_seconds()? - a0;
        let rss_mb = agent.peak_rss_mb()?;
        let events = agent.stop()?;
        let work = if name == "exec" { opts.execs } else { opts.connections } as f64;
        let seen = events.iter().filter(|e| seen_expected(e)).count() as f64;
        with.push(Sample { wall, cpu, agent_cpu, rss_mb, completeness: seen / work, lost: lost_total(&events) });
        eprintln!("bench {name}: pair {}/{} done", pair + 1, opts.pairs);
    }
    let work = if name == "exec" { opts.execs } else { opts.connections } as f64;
    let med = |v: &[Sample], f: &dyn Fn(&Sample) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        x[x.len() / 2]
    };
    let ratios = |f: &dyn Fn(&Sample) -> f64| {
        let mut r: Vec<f64> = base.iter().zip(&with).map(|(b, w)| f(w) / f(b)).collect();
        r.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        r[r.len() / 2]
    };
    let added_us = (med(&with, &|s| s.cpu + s.agent_cpu) - med(&base, &|s| s.cpu)) / work * 1e6;
    println!("## {name} ({} per run, {} pairs)", work as u64, opts.pairs);
    println!(
        "wall s median: without {:.3}, with {:.3}; median ratio {:.3}",
        med(&base, &|s| s.wall),
        med(&with, &|s| s.wall),
        ratios(&|s| s.wall)
    );
    println!(
        "CPU s median (workload + agent): without {:.3}, with {:.3}; median ratio {:.3}",
        med(&base, &|s| s.cpu),
        med(&with, &|s| s.cpu + s.agent_cpu),
        ratios(&|s| s.cpu + s.agent_cpu)
    );
    let unit = if name == "exec" { "exec" } else { "connection" };
    println!(
        "added CPU per {unit}: {added_us:.1} us; agent CPU s median {:.3} ({:.1} us per {unit})",
        med(&with, &|s| s.agent_cpu),
        med(&with, &|s| s.agent_cpu) / work * 1e6
    );
    println!(
        "completeness: min {:.4}, median {:.4}; lost (counted) max {}; agent peak RSS max {:.1} MB",
        with.iter().map(|s| s.completeness).fold(f64::INFINITY, f64::min),
        med(&with, &|s| s.completeness),
        with.iter().map(|s| s.lost).max().unwrap_or(0),
        with.iter().map(|s| s.rss_mb).fold(0.0, f64::max)
    );
    Ok(())
}

fn idle(opts: &Options) -> Result<()> {
    let agent = Agent::start("exec,exit,tcp,flow")?;
    let a0 = agent.cpu_seconds()?;
    std::thread::sleep(Duration::from_secs(opts.idle_secs));
    let cpu = agent.cpu_seconds()? - a0;
    let rss = agent.peak_rss_mb()?;
    agent.stop()?;
    println!("## idle ({} s)\nagent CPU {:.3}% of one core; peak RSS {rss:.1} MB", opts.idle_secs, cpu / opts.idle_secs as f64 * 100.0);
    Ok(())
}

pub fn run(opts: &Options) -> Result<()> {
    if opts.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if !Path::new("/bin/true").exists() {
        bail!("/bin/true is missing");
    }
    println!("# masdeepflow bench: alternating runs without and with the agent; medians and median ratios");
    let wants = |c: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == c);
    if wants("exec") {
        run_case("exec", opts)?;
    }
    if wants("tcp") {
        run_case("tcp", opts)?;
    }
    if wants("idle") {
        idle(opts)?;
    }
    if wants("http") {
        crate::bench_http::run(opts.pairs, opts.http_secs)?;
    }
    if wants("mysql") {
        crate::bench_mysql::run_bench(opts.pairs, opts.mysql_secs)?;
    }
    Ok(())
}
