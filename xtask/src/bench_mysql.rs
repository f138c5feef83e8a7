//! `cargo xtask bench --only mysql`: sysbench against a real MariaDB
//! (Debian's mariadb-server, started here in a temporary directory):
//! `oltp_point_select` and `oltp_read_only`, prepared statements on
//! (`--db-ps-mode=auto`, binary protocol) and off (text queries), at
//! saturation (4 threads) and at a fixed 5,000 queries/s, in pairs of runs
//! without and with the agent (`--events mysql --port <mariadb>`, which
//! reports both sysbench's and mariadbd's side of every query). Reports
//! median ratios of throughput and p95 latency, the added CPU per query
//! (sysbench + mariadbd + agent, from /proc and getrusage), completeness
//! (the agent's `mysql` events of one side / queries sysbench made) and
//! counted losses.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use serde_json::{Value, json};

use crate::{
    bench::{Agent, lost_in_stats, median},
    procfs,
};

/// A throw-away MariaDB server: data directory, socket and port of its own.
struct MariaDb {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl MariaDb {
    fn start() -> Result<MariaDb> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("masdeepflow-bench-mariadb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp"))?;
        run(Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir))?;
        run(Command::new("mariadb-install-db")
            .env("TMPDIR", dir.join("tmp"))
            .args(["--user=mysql", "--skip-test-db"])
            .arg(format!("--datadir={}", dir.join("data").display())))
        .context("mariadb-install-db (apt-get install mariadb-server)")?;
        let child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1", "--max-connections=500"])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--log-error={}", dir.join("log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mariadbd")?;
        let db = MariaDb { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while db.root("SELECT 1").is_err() {
            if Instant::now() > deadline {
                bail!("mariadbd did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        db.root("CREATE DATABASE sbtest; CREATE USER 'sb'@'127.0.0.1' IDENTIFIED BY 'sb'; GRANT ALL ON *.* TO 'sb'@'127.0.0.1';")?;
        Ok(db)
    }

    /// SQL as root over the Unix socket (not traced: the agent sees TCP).
    fn root(&self, sql: &str) -> Result<String> {
        run(Command::new("mariadb").arg(format!("--socket={}", self.dir.join("sock").display())).args(["-uroot", "-N", "-B", "-e", sql]))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy)]
struct Case {
    workload: &'static str,
    ps: bool,
    /// Transactions per second for the fixed-rate runs (`None`: saturation).
    rate: Option<u32>,
}

impl Case {
    /// sysbench's queries per transaction (event) for the workload.
    fn queries_per_event(&self) -> u32 {
        // oltp_read_only: BEGIN, 10 point selects, 4 range selects, COMMIT.
        if self.workload == "oltp_read_only" { 16 } else { 1 }
    }

    fn label(&self) -> String {
        let load = match self.rate {
            Some(r) => format!("fixed {} queries/s (--rate {r})", r * self.queries_per_event()),
            None => "saturation (4 threads)".to_string(),
        };
        format!("{}, prepared statements {}, {load}", self.workload, if self.ps { "on" } else { "off" })
    }
}

struct Sample {
    qps: f64,
    p95_ms: f64,
    queries: u64,
    /// CPU seconds of sysbench + mariadbd + the agent.
    cpu: f64,
    agent_cpu: f64,
    /// Per side: mysql events of the queries / queries made.
    completeness: [f64; 2],
    /// Of those events, the share with their statement.
    with_statement: f64,
    lost: u64,
}

const TABLE_SIZE: u32 = 10_000;

fn sysbench(db: &MariaDb, case: &Case, action: &str, secs: u64) -> Command {
    let mut c = Command::new("sysbench");
    c.arg(case.workload)
        .args(["--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-user=sb", "--mysql-password=sb", "--mysql-db=sbtest"])
        .args(["--tables=1", "--mysql-ssl=off", "--percentile=95"])
        .arg(format!("--table-size={TABLE_SIZE}"))
        .arg(format!("--mysql-port={}", db.port))
        .arg(format!("--db-ps-mode={}", if case.ps { "auto" } else { "disable" }))
        .arg(format!("--time={secs}"))
        .arg(format!("--threads={}", if case.rate.is_some() { 8 } else { 4 }));
    if let Some(r) = case.rate {
        c.arg(format!("--rate={r}"));
    }
    c.arg(action);
    c
}

/// Stops the agent; returns per side (client, server) the events of
/// queries (COM_QUERY, COM_STMT_EXECUTE) and of those the ones with their
/// statement, and the counted losses.
fn stop_and_count(agent: Agent) -> Result<([u64; 2], [u64; 2], u64)> {
    let (mut queries, mut with_statement, mut lost) = ([0u64; 2], [0u64; 2], 0);
    agent.stop_reading(|line| {
        if line.starts_with("{\"type\":\"mysql\"") {
            let v: Value = serde_json::from_str(line)?;
            if matches!(v["command"].as_str(), Some("COM_QUERY" | "COM_STMT_EXECUTE")) {
                let side = usize::from(v["role"] == "server");
                queries[side] += 1;
                if v["statement"].is_string() && v["error"].is_null() {
                    with_statement[side] += 1;
                }
            }
        } else if line.starts_with("{\"type\":\"agent_stats\"") {
            lost = lost_in_stats(line);
        }
        Ok(())
    })?;
    Ok((queries, with_statement, lost))
}

/// sysbench's totals: (queries, queries/s, p95 latency in ms).
fn parse_sysbench(text: &str) -> Result<(u64, f64, f64)> {
    let queries_line = text.lines().find_map(|l| l.trim().strip_prefix("queries:")).context("no queries line")?;
    let queries: u64 = queries_line.split_whitespace().next().context("no query count")?.parse()?;
    let qps: f64 = queries_line.split('(').nth(1).and_then(|r| r.split_whitespace().next()).context("no queries/s")?.parse()?;
    let p95: f64 = text.lines().find_map(|l| l.trim().strip_prefix("95th percentile:")).context("no p95")?.trim().parse()?;
    Ok((queries, qps, p95))
}

fn one_run(db: &MariaDb, case: &Case, secs: u64, traced: bool) -> Result<Sample> {
    let port = db.port.to_string();
    let agent = if traced { Some(Agent::start(&["--events", "mysql", "--port", &port])?) } else { None };
    let a0 = agent.as_ref().map_or(0.0, |a| procfs::cpu_seconds(a.pid()).unwrap_or(0.0));
    let d0 = procfs::cpu_seconds(db.child.id()).context("mariadbd is gone")?;
    let s0 = crate::bench::cpu_seconds();
    let out = sysbench(db, case, "run", secs).output().context("sysbench (apt-get install sysbench)")?;
    if !out.status.success() {
        bail!("sysbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sysbench_cpu = crate::bench::cpu_seconds() - s0;
    // Let the agent take in what the kernel queued, then stop it.
    std::thread::sleep(Duration::from_millis(500));
    let db_cpu = procfs::cpu_seconds(db.child.id()).context("mariadbd is gone")? - d0;
    let agent_cpu = agent.as_ref().map_or(0.0, |a| procfs::cpu_seconds(a.pid()).unwrap_or(0.0) - a0);
    let (queries, qps, p95_ms) = parse_sysbench(&String::from_utf8_lossy(&out.stdout))?;
    let (mut completeness, mut with_statement, mut lost) = ([1.0, 1.0], 1.0, 0);
    if let Some(a) = agent {
        let (seen, stated, l) = stop_and_count(a)?;
        completeness = seen.map(|n| n as f64 / queries as f64);
        with_statement = stated.iter().sum::<u64>() as f64 / seen.iter().sum::<u64>().max(1) as f64;
        lost = l;
    }
    Ok(Sample { qps, p95_ms, queries, cpu: sysbench_cpu + db_cpu + agent_cpu, agent_cpu, completeness, with_statement, lost })
}

pub fn run_bench(pairs: usize, secs: u64) -> Result<Value> {
    for tool in ["mariadbd", "mariadb-install-db", "sysbench"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?.stdout.is_empty() {
            bail!("{tool} is missing (apt-get install mariadb-server sysbench)");
        }
    }
    let db = MariaDb::start()?;
    let prepare = Case { workload: "oltp_read_only", ps: true, rate: None };
    run(&mut sysbench(&db, &prepare, "prepare", 0)).context("sysbench prepare")?;
    let mut cases = Vec::new();
    for workload in ["oltp_point_select", "oltp_read_only"] {
        for ps in [true, false] {
            for rate in [None, Some(5000 / if workload == "oltp_read_only" { 16 } else { 1 })] {
                cases.push(Case { workload, ps, rate });
            }
        }
    }
    println!("## mysql (sysbench against MariaDB, {pairs} pairs of {secs} s runs; medians)");
    println!(
        "| case | queries/s without | throughput ratio | p95 ratio | CPU per query without | added CPU per query | agent CPU per query | completeness client / server (min) | with statement | lost (max) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for case in &cases {
        let (mut base, mut with) = (Vec::new(), Vec::new());
        for pair in 0..pairs {
            base.push(one_run(&db, case, secs, false)?);
            with.push(one_run(&db, case, secs, true)?);
            eprintln!("bench mysql {}: pair {}/{pairs} done", case.label(), pair + 1);
        }
        let per_query = |s: &Sample| s.cpu / s.queries as f64 * 1e6;
        let pairs_of = |f: &dyn Fn(&Sample, &Sample) -> f64| median(base.iter().zip(&with).map(|(b, w)| f(b, w)).collect());
        let row = json!({
            "case": case.label(),
            "queries_per_s_without": median(base.iter().map(|s| s.qps).collect()),
            "throughput_ratio": pairs_of(&|b, w| w.qps / b.qps),
            "p95_ratio": pairs_of(&|b, w| w.p95_ms / b.p95_ms),
            "cpu_us_per_query_without": median(base.iter().map(per_query).collect()),
            "added_cpu_us_per_query": pairs_of(&|b, w| per_query(w) - per_query(b)),
            "agent_cpu_us_per_query": median(with.iter().map(|s| s.agent_cpu / s.queries as f64 * 1e6).collect()),
            "completeness_client_min": with.iter().map(|s| s.completeness[0]).fold(f64::INFINITY, f64::min),
            "completeness_server_min": with.iter().map(|s| s.completeness[1]).fold(f64::INFINITY, f64::min),
            "with_statement_min": with.iter().map(|s| s.with_statement).fold(f64::INFINITY, f64::min),
            "lost_max": with.iter().map(|s| s.lost).max().unwrap_or(0),
        });
        let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {} | {:.0} | {:.3} | {:.2} | {:.1} us | {:+.2} us | {:.2} us | {:.4} / {:.4} | {:.4} | {} |",
            case.label(),
            f("queries_per_s_without"),
            f("throughput_ratio"),
            f("p95_ratio"),
            f("cpu_us_per_query_without"),
            f("added_cpu_us_per_query"),
            f("agent_cpu_us_per_query"),
            f("completeness_client_min"),
            f("completeness_server_min"),
            f("with_statement_min"),
            row["lost_max"],
        );
        rows.push(row);
    }
    Ok(json!({ "pairs": pairs, "secs_per_run": secs, "agent_args": ["--events", "mysql", "--port", db.port.to_string()], "cases": rows }))
}
