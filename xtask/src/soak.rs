//! `cargo xtask soak --minutes N`: the agent (all families) under a steady
//! mix of keep-alive HTTP (nginx + wrk, paced), TCP connection churn and
//! exec storms. Once a second it samples the agent's RSS and, from its
//! `agent_stats` (`--stats-interval 1s`), the entry count of every bounded
//! table (the kernel's SOCKETS and CONNECTING maps and the agent's own).
//! It reports the slope of each after a warm-up and fails when one grows.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{bench_http::Nginx, setup::agent_path};

#[derive(clap::Args)]
pub struct Options {
    /// How long to run.
    #[arg(long, default_value_t = 2)]
    minutes: u64,
    /// Largest RSS growth allowed over the run after warm-up, in MB.
    #[arg(long, default_value_t = 8.0)]
    max_rss_growth_mb: f64,
    /// Largest growth of any table over the run after warm-up, in entries.
    #[arg(long, default_value_t = 200.0)]
    max_table_growth: f64,
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

pub fn run(opts: &Options) -> Result<()> {
    if opts.minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    let duration = Duration::from_secs(opts.minutes * 60);
    let stop = Arc::new(AtomicBool::new(false));

    let mut agent = Command::new(agent_path())
        .args(["--stats-interval", "1s", "--flow-interval", "5s"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let pid = agent.id();
    let stats: Arc<Mutex<Vec<(Instant, serde_json::Value)>>> = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    {
        let stats = stats.clone();
        let stdout = agent.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"agent_start\"") {
                    let _ = ready_tx.send(());
                } else if line.contains("\"agent_stats\"")
                    && let Ok(v) = serde_json::from_str(&line)
                {
                    stats.lock().expect("lock").push((Instant::now(), v));
                }
            }
        });
    }
    ready_rx.recv_timeout(Duration::from_secs(60)).context("the agent did not start")?;

    // Keep-alive HTTP: wrk paced at about 800 req/s.
    let nginx = Nginx::start(&[b'x'; 612])?;
    let script = std::env::temp_dir().join(format!("masdeepflow-soak-{}.lua", std::process::id()));
    std::fs::write(&script, "function delay() return 5 end\n")?;
    let mut wrk = Command::new("wrk")
        .args(["-t1", "-c4", "-d", &format!("{}s", duration.as_secs()), "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}/index.html", nginx.port))
        .stdout(Stdio::null())
        .spawn()
        .context("wrk (apt-get install wrk)")?;

    // TCP churn: about 200 short connections a second.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(false)?;
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"x");
        }
    });
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                    let mut b = [0u8; 1];
                    let _ = c.read(&mut b);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Exec storms: about 100 execs a second.
    let execs = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = Command::new("/bin/true").status();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let start = Instant::now();
    let mut rss = Vec::new();
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        let t = start.elapsed().as_secs_f64() / 60.0;
        rss.push((t, crate::procfs::memory_mb(pid, "VmRSS").context("the agent died")?));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = churn.join();
    let _ = execs.join();
    let _ = wrk.wait();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = agent.wait()?;
    if !status.success() {
        bail!("the agent exited with {status}");
    }

    // Slopes after a quarter of the run (warm-up).
    let warm = opts.minutes as f64 / 4.0;
    let after: Vec<(f64, f64)> = rss.iter().copied().filter(|p| p.0 >= warm).collect();
    let minutes_after = opts.minutes as f64 - warm;
    let rss_growth = slope(&after) * minutes_after;
    println!("# masdeepflow soak: {} min, nginx+wrk keep-alive, TCP churn, exec storm", opts.minutes);
    println!(
        "rss: first {:.1} MB, last {:.1} MB, max {:.1} MB; slope {:.3} MB/min -> {:+.2} MB over {:.1} min after warm-up (limit {:.1})",
        rss.first().map_or(0.0, |p| p.1),
        rss.last().map_or(0.0, |p| p.1),
        rss.iter().map(|p| p.1).fold(0.0, f64::max),
        slope(&after),
        rss_growth,
        minutes_after,
        opts.max_rss_growth_mb
    );
    let stats = stats.lock().expect("lock");
    let Some((_, last)) = stats.last() else { bail!("no agent_stats seen") };
    let mut failed = Vec::new();
    if rss_growth > opts.max_rss_growth_mb {
        failed.push(format!("RSS grew {rss_growth:.2} MB"));
    }
    for table in last["tables"].as_object().context("no tables in agent_stats")?.keys() {
        let points: Vec<(f64, f64)> = stats
            .iter()
            .map(|(t, v)| (t.duration_since(start).as_secs_f64() / 60.0, v["tables"][table].as_f64().unwrap_or(0.0)))
            .filter(|p| p.0 >= warm)
            .collect();
        let growth = slope(&points) * minutes_after;
        let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
        println!(
            "table {table:<18} max {max:>7.0}  slope {:>8.2}/min -> {growth:+.1} over the run (limit {:.0})",
            slope(&points),
            opts.max_table_growth
        );
        if growth > opts.max_table_growth {
            failed.push(format!("table {table} grew {growth:.1}"));
        }
    }
    let sum = |v: &serde_json::Value| v.as_object().map_or(0, |m| m.values().filter_map(|x| x.as_u64()).sum::<u64>());
    println!(
        "events emitted {}, lost: kernel {}, queue {}",
        sum(&last["emitted"]),
        sum(&last["lost"]["kernel_ring_buffer"]),
        sum(&last["lost"]["user_queue"])
    );
    if failed.is_empty() {
        println!("soak: ok");
        Ok(())
    } else {
        bail!("soak failed: {}", failed.join("; "))
    }
}
