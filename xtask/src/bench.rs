//! `cargo xtask bench`: the cost of the agent on real work, measured as
//! alternating runs without and with it, the agent started as a new user
//! would (no arguments: every family on). Reports medians and median
//! ratios of wall time and CPU seconds, the agent's own CPU per event
//! (from its threads' schedstat, in nanoseconds), the kernel programs'
//! run time per event (`kernel.bpf_stats_enabled`, per program),
//! completeness (events seen / work done), counted losses, peak RSS and
//! idle CPU. Every run's numbers are also written as JSON to
//! `target/bench/<time>.json`, so runs can be compared across commits.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{procfs, setup::agent_path};

#[derive(clap::Args)]
pub struct Options {
    /// Pairs of runs (without, with the agent) per case.
    #[arg(long, default_value_t = 5)]
    pub pairs: usize,
    /// Execs per exec-storm run.
    #[arg(long, default_value_t = 2000)]
    execs: usize,
    /// Loopback connections per churn run.
    #[arg(long, default_value_t = 20000)]
    connections: usize,
    /// File and pipe syscalls per run of the non-socket I/O case.
    #[arg(long, default_value_t = 1_000_000)]
    syscalls: usize,
    /// Seconds the idle agent is watched.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Seconds per wrk run in the HTTP cases.
    #[arg(long, default_value_t = 5)]
    pub http_secs: u64,
    /// Seconds per sysbench run in the MySQL cases.
    #[arg(long, default_value_t = 5)]
    mysql_secs: u64,
    /// Only these cases (exec, tcp, io, idle, http, gateway, mysql); all when empty.
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

/// CPU seconds of this thread alone (the non-socket I/O workload).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The agent under test, writing to a file on tmpfs (as under a log
/// collector: reading its output here would take CPU from the workload).
pub struct Agent {
    child: Child,
    out: PathBuf,
}

/// Where tracer output goes: tmpfs when there is one.
pub fn output_path(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    dir.join(format!("masdeepflow-bench-{name}-{}.out", std::process::id()))
}

impl Agent {
    /// Starts the agent with `args` (besides a long stats interval) and
    /// waits for `agent_start`.
    pub fn start(args: &[&str]) -> Result<Agent> {
        let out = output_path("agent");
        let child = Command::new(agent_path())
            .args(args)
            .args(["--stats-interval", "3600s"])
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

    /// CPU seconds of all the agent's threads so far, from schedstat
    /// (nanoseconds, not clock ticks).
    pub fn cpu_seconds(&self) -> Result<f64> {
        procfs::thread_cpu_seconds(self.child.id()).context("the agent is gone")
    }

    pub fn peak_rss_mb(&self) -> Result<f64> {
        procfs::memory_mb(self.child.id(), "VmHWM").context("the agent is gone")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the agent; returns its output lines.
    pub fn stop(self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        self.stop_reading(|line| {
            lines.push(line.to_owned());
            Ok(())
        })?;
        Ok(lines)
    }

    /// Stops the agent and hands its output to `each_line`, one line at a
    /// time (runs at saturation write too much to hold).
    pub fn stop_reading(mut self, mut each_line: impl FnMut(&str) -> Result<()>) -> Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        let read: Result<()> = (|| {
            for line in BufReader::new(File::open(&self.out)?).lines() {
                each_line(&line?)?;
            }
            Ok(())
        })();
        let _ = std::fs::remove_file(&self.out);
        read
    }
}

/// The agent's last `agent_stats`: events lost in the kernel ring buffer and
/// the output queue, summed.
pub fn lost_total(lines: &[String]) -> u64 {
    let Some(stats) = lines.iter().rev().find(|l| l.contains("\"agent_stats\"")) else { return u64::MAX };
    lost_in_stats(stats)
}

/// Events lost in the kernel ring buffer and the output queue, summed, as
/// one `agent_stats` line says.
pub fn lost_in_stats(line: &str) -> u64 {
    let stats: Value = serde_json::from_str(line).unwrap_or_default();
    let sum = |v: &Value| v.as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>());
    sum(&stats["lost"]["kernel_ring_buffer"]) + sum(&stats["lost"]["user_queue"])
}

/// Kernel program run time, from `bpftool prog show` while
/// `kernel.bpf_stats_enabled` is 1: name -> (run_time_ns, run_cnt).
pub fn bpf_stats() -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(o) = Command::new("bpftool").args(["prog", "show", "--json"]).output() else { return out };
    let progs: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    for p in progs.as_array().into_iter().flatten() {
        let (Some(t), Some(c)) = (p["run_time_ns"].as_u64(), p["run_cnt"].as_u64()) else { continue };
        let name = format!("{}#{}", p["name"].as_str().unwrap_or("?"), p["id"]);
        out.insert(name, (t, c));
    }
    out
}

/// Program run time between two [`bpf_stats`] snapshots, by program name
/// (ids dropped): name -> (ns, runs), for programs that ran.
pub fn bpf_delta(before: &BTreeMap<String, (u64, u64)>, after: &BTreeMap<String, (u64, u64)>) -> BTreeMap<String, (u64, u64)> {
    let mut d: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (k, (t, c)) in after {
        let (t0, c0) = before.get(k).copied().unwrap_or((0, 0));
        if c > &c0 {
            let name = k.split('#').next().unwrap_or(k).to_string();
            let e = d.entry(name).or_default();
            e.0 += t - t0;
            e.1 += c - c0;
        }
    }
    d
}

/// Turns `kernel.bpf_stats_enabled` on for the bench and back as it was.
pub struct BpfStatsOn(Option<String>);

impl BpfStatsOn {
    pub fn new() -> BpfStatsOn {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path).ok();
        if std::fs::write(path, "1").is_err() {
            eprintln!("bench: cannot enable kernel.bpf_stats_enabled: kernel program times are not measured");
        }
        BpfStatsOn(old)
    }
}

impl Drop for BpfStatsOn {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", old.trim());
        }
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Kernel time per unit of work, by program and in total, from per-run
/// deltas: medians over runs.
fn bpf_per_unit(runs: &[BTreeMap<String, (u64, u64)>], units: &[f64]) -> (f64, BTreeMap<String, Value>) {
    let mut names: Vec<&String> = runs.iter().flat_map(|r| r.keys()).collect();
    names.sort();
    names.dedup();
    let total = median(runs.iter().zip(units).map(|(r, u)| r.values().map(|v| v.0).sum::<u64>() as f64 / u).collect());
    let mut per = BTreeMap::new();
    for n in names {
        let ns_per_run = median(runs.iter().filter_map(|r| r.get(n)).map(|(t, c)| *t as f64 / (*c).max(1) as f64).collect());
        let runs_per_unit = median(runs.iter().zip(units).map(|(r, u)| r.get(n).map_or(0.0, |v| v.1 as f64 / u)).collect());
        per.insert(n.clone(), json!({ "ns_per_run": ns_per_run.round(), "runs_per_unit": runs_per_unit }));
    }
    (total, per)
}

fn print_bpf(unit: &str, total: f64, per: &BTreeMap<String, Value>) {
    println!("kernel programs: {total:.0} ns per {unit} in all");
    for (n, v) in per {
        println!("  {n:<24} {:>6} ns per run, {:.2} runs per {unit}", v["ns_per_run"], v["runs_per_unit"].as_f64().unwrap_or(0.0));
    }
}

struct Sample {
    wall: f64,
    cpu: f64,
    agent_cpu: f64,
    rss_mb: f64,
    completeness: f64,
    lost: u64,
    bpf: BTreeMap<String, (u64, u64)>,
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

/// `n` syscalls on files and pipes, none on sockets: writes and reads of a
/// file on tmpfs, and writes and reads through a pipe, in this thread.
/// Returns (wall, this thread's CPU) in seconds.
fn file_and_pipe_io(n: usize) -> Result<(f64, f64)> {
    let path = output_path("io");
    let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut pipe = [0i32; 2];
    // SAFETY: valid out array.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let buf = [b'x'; 64];
    let mut back = [0u8; 64];
    let (cpu0, t0) = (thread_cpu_seconds(), Instant::now());
    // Four syscalls per round: file write, file read, pipe write, pipe read.
    for i in 0..n / 4 {
        // SAFETY: valid fds and buffers of the given lengths.
        unsafe {
            if i % 1024 == 0 {
                libc::lseek(fd, 0, libc::SEEK_SET);
            }
            libc::write(fd, buf.as_ptr().cast(), buf.len());
            libc::pread(fd, back.as_mut_ptr().cast(), back.len(), 0);
            libc::write(pipe[1], buf.as_ptr().cast(), buf.len());
            libc::read(pipe[0], back.as_mut_ptr().cast(), back.len());
        }
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu0);
    // SAFETY: our own fds.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok((wall, cpu))
}

/// Alternating runs of one case; returns its JSON results.
fn run_case(name: &str, opts: &Options, agent_args: &[&str]) -> Result<Value> {
    let work = match name {
        "exec" => opts.execs,
        "tcp" => opts.connections,
        _ => opts.syscalls,
    } as f64;
    let workload = |opts: &Options| -> Result<(f64, f64, u16)> {
        match name {
            "exec" => exec_storm(opts.execs).map(|(w, c)| (w, c, 0)),
            "tcp" => tcp_churn(opts.connections),
            _ => file_and_pipe_io(opts.syscalls).map(|(w, c)| (w, c, 0)),
        }
    };
    let mut base = Vec::new();
    let mut with = Vec::new();
    for pair in 0..opts.pairs {
        let (wall, cpu, _) = workload(opts)?;
        base.push(Sample { wall, cpu, agent_cpu: 0.0, rss_mb: 0.0, completeness: 1.0, lost: 0, bpf: BTreeMap::new() });
        let agent = Agent::start(agent_args)?;
        let (a0, b0) = (agent.cpu_seconds()?, bpf_stats());
        let (wall, cpu, port) = workload(opts)?;
        // Let the agent drain what the kernel queued before measuring it.
        std::thread::sleep(Duration::from_millis(300));
        let (agent_cpu, bpf) = (agent.cpu_seconds()? - a0, bpf_delta(&b0, &bpf_stats()));
        let rss_mb = agent.peak_rss_mb()?;
        let me = std::process::id();
        let lines = agent.stop()?;
        let seen = match name {
            "exec" => {
                let ppid = format!("\"ppid\":{me},");
                lines.iter().filter(|l| l.contains("\"process_exec\"") && l.contains(&ppid) && l.contains("\"/bin/true\"")).count()
            }
            "tcp" => {
                let dst = format!("\"port\":{port}}},\"family\"");
                lines.iter().filter(|l| l.contains("\"tcp_connect\"") && l.contains(&dst)).count()
            }
            _ => work as usize,
        } as f64;
        with.push(Sample { wall, cpu, agent_cpu, rss_mb, completeness: seen / work, lost: lost_total(&lines), bpf });
        eprintln!("bench {name}: pair {}/{} done", pair + 1, opts.pairs);
    }
    let med = |v: &[Sample], f: &dyn Fn(&Sample) -> f64| median(v.iter().map(f).collect());
    let ratio = |f: &dyn Fn(&Sample) -> f64| median(base.iter().zip(&with).map(|(b, w)| f(w) / f(b)).collect());
    let unit = match name {
        "exec" => "exec",
        "tcp" => "connection",
        _ => "syscall",
    };
    let added_ns = (med(&with, &|s| s.cpu + s.agent_cpu) - med(&base, &|s| s.cpu)) / work * 1e9;
    let agent_ns = med(&with, &|s| s.agent_cpu) / work * 1e9;
    let (bpf_total, bpf_per) = bpf_per_unit(&with.iter().map(|s| s.bpf.clone()).collect::<Vec<_>>(), &vec![work; with.len()]);
    let completeness_min = with.iter().map(|s| s.completeness).fold(f64::INFINITY, f64::min);
    let lost_max = with.iter().map(|s| s.lost).max().unwrap_or(0);
    let rss_max = with.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
    println!("## {name} ({} per run, {} pairs, agent: {})", work as u64, opts.pairs, agent_args.join(" "));
    println!(
        "wall s median: without {:.3}, with {:.3}; median ratio {:.3}",
        med(&base, &|s| s.wall),
        med(&with, &|s| s.wall),
        ratio(&|s| s.wall)
    );
    println!(
        "CPU s median (workload + agent): without {:.3}, with {:.3}; median ratio {:.3}",
        med(&base, &|s| s.cpu),
        med(&with, &|s| s.cpu + s.agent_cpu),
        ratio(&|s| s.cpu + s.agent_cpu)
    );
    println!("added CPU per {unit}: {:.0} ns; agent CPU per {unit}: {agent_ns:.0} ns", added_ns);
    print_bpf(unit, bpf_total, &bpf_per);
    println!("completeness min {completeness_min:.4}; lost (counted) max {lost_max}; agent peak RSS max {rss_max:.1} MB");
    Ok(json!({
        "unit": unit, "per_run": work, "pairs": opts.pairs, "agent_args": agent_args,
        "wall_ratio": ratio(&|s| s.wall), "cpu_ratio": ratio(&|s| s.cpu + s.agent_cpu),
        "added_cpu_ns_per_unit": added_ns, "agent_cpu_ns_per_unit": agent_ns,
        "bpf_ns_per_unit": bpf_total, "bpf_programs": bpf_per,
        "completeness_min": completeness_min, "lost_max": lost_max, "agent_peak_rss_mb": rss_max,
    }))
}

fn idle(opts: &Options) -> Result<Value> {
    let agent = Agent::start(&[])?;
    let a0 = agent.cpu_seconds()?;
    std::thread::sleep(Duration::from_secs(opts.idle_secs));
    let cpu = agent.cpu_seconds()? - a0;
    let rss = agent.peak_rss_mb()?;
    // What the host did meanwhile (other users' processes are traced too):
    // the figure is idle only when this is near zero.
    let events = agent.stop()?.iter().filter(|l| !l.contains("\"agent_start\"") && !l.contains("\"agent_stats\"")).count();
    let percent = cpu / opts.idle_secs as f64 * 100.0;
    println!(
        "## idle ({} s, every family on)\nagent CPU {percent:.4}% of one core; peak RSS {rss:.1} MB; {events} events from the host meanwhile",
        opts.idle_secs
    );
    Ok(json!({ "seconds": opts.idle_secs, "cpu_percent": percent, "peak_rss_mb": rss, "events": events }))
}

/// This commit, for the results file.
fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn run(opts: &Options) -> Result<()> {
    if opts.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if !Path::new("/bin/true").exists() {
        bail!("/bin/true is missing");
    }
    let _stats = BpfStatsOn::new();
    println!("# masdeepflow bench: alternating runs without and with the agent; medians and median ratios");
    let wants = |c: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == c);
    let mut results = serde_json::Map::new();
    if wants("exec") {
        results.insert("exec".into(), run_case("exec", opts, &[])?);
    }
    if wants("tcp") {
        results.insert("tcp".into(), run_case("tcp", opts, &[])?);
    }
    if wants("io") {
        results.insert("io".into(), run_case("io", opts, &[])?);
        results.insert("io_syscall_hooks".into(), run_case("io", opts, &["--traffic-source", "syscalls"])?);
    }
    if wants("idle") {
        results.insert("idle".into(), idle(opts)?);
    }
    if wants("http") {
        results.insert("http".into(), crate::bench_http::run(opts.pairs, opts.http_secs)?);
    }
    if wants("mysql") {
        results.insert("mysql".into(), crate::bench_mysql::run_bench(opts.pairs, opts.mysql_secs)?);
    }
    if wants("gateway") {
        crate::bench_gateway::run(opts.pairs, opts.http_secs)?;
    }
    let dir = crate::setup::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let file = dir.join(format!("{now}.json"));
    let doc = json!({ "time": now, "commit": commit(), "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(), "results": results });
    std::fs::write(&file, serde_json::to_string_pretty(&doc)?)?;
    println!("results: {}", file.display());
    Ok(())
}
