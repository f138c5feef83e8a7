//! `cargo xtask vm-test`: the agent on other kernels and on arm64. Boots a
//! Debian cloud kernel under QEMU (TCG) with an initramfs holding
//! busybox-static and the agent's static binary (`cargo xtask dist`), runs
//! a scripted workload (an exec, an HTTP exchange between busybox httpd and
//! wget, a TCP exchange with nc) under the agent twice, once with the
//! traffic hooks it picks itself and once forced onto the syscall hooks,
//! and checks `masdeepflow check` and each family's events: exec, exit,
//! TCP with exact bytes, HTTP from both sides, no loss.
//!
//! The matrix: Debian's x86_64 kernels 5.10 (bullseye), 6.1 (bookworm) and
//! 6.12 (trixie), and arm64 6.1 (bookworm). Kernels and arm64 busybox come
//! through a private apt configuration (`debian.rs`). Results are reported
//! per kernel, run and family; the run fails on any failure not listed in
//! `KNOWN_GAPS`, and on a listed gap that passes (so the list stays true).
//! Needs qemu-system-x86, qemu-system-arm, cpio and busybox-static
//! (`.ci/run` installs them).
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::{debian::Apt, dist, setup::workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Guest architecture (x86_64 or aarch64).
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// Kernel line: 5.10, 6.1 or 6.12 on x86_64; 6.1 on aarch64.
    #[arg(long, default_value = "6.1")]
    kernel: String,
    /// Every kernel of the matrix, one after the other (what CI runs).
    #[arg(long)]
    all: bool,
}

/// One kernel of the matrix.
pub struct Kernel {
    line: &'static str,
    suite: &'static str,
    /// `dist::Arch` name.
    arch: &'static str,
    /// The traffic probe `--traffic-source auto` must pick there.
    auto_probe: &'static str,
    /// What the agent may say on stderr there (each line must contain one).
    expected_warnings: &'static [&'static str],
}

pub const MATRIX: [Kernel; 4] = [
    Kernel { line: "5.10", suite: "bullseye", arch: "x86_64", auto_probe: "fexit:tcp_recvmsg", expected_warnings: &[] },
    Kernel { line: "6.1", suite: "bookworm", arch: "x86_64", auto_probe: "fexit:tcp_recvmsg", expected_warnings: &[] },
    Kernel { line: "6.12", suite: "trixie", arch: "x86_64", auto_probe: "sock:sock_recv_length", expected_warnings: &[] },
    // arm64 6.1 refuses to attach fexit programs (ENOTSUPP, 524): the agent
    // says so and counts bytes at the syscall exits.
    Kernel {
        line: "6.1",
        suite: "bookworm",
        arch: "aarch64",
        auto_probe: "syscalls:sys_exit_read",
        expected_warnings: &["fexit hooks unavailable"],
    },
];

/// Failures known and owned elsewhere: (kernel line, arch, run, family or
/// `*`, why). Reported as such; they do not fail the run, but passing
/// does, so that the entry is removed when the gap closes.
const KNOWN_GAPS: &[(&str, &str, &str, &str, &str)] = &[];

impl Kernel {
    fn id(&self) -> String {
        format!("{}-{}", self.line, self.arch)
    }

    fn deb_arch(&self) -> &'static str {
        if self.arch == "aarch64" { "arm64" } else { "amd64" }
    }

    fn known_gap(&self, run: &str, family: &str) -> Option<&'static str> {
        KNOWN_GAPS.iter().find(|g| g.0 == self.line && g.1 == self.arch && g.2 == run && (g.3 == family || g.3 == "*")).map(|g| g.4)
    }
}

/// The guest's /init: start the agent, run the workload, print everything
/// between markers on the serial console, power off.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tracefs nodev /sys/kernel/tracing
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
echo "=== KERNEL $(cat /proc/sys/kernel/osrelease) $(uname -m)"
/masdeepflow check > /check.txt 2>&1
echo "=== CHECK rc=$?"
cat /check.txt
httpd -p 127.0.0.1:8080 -h /www
# t NAME LABEL: when (guest uptime) the run reached LABEL.
t() { echo "$2 $(cut -d' ' -f1 /proc/uptime)" >> /times-$1.txt; }
# run NAME NC_PORT AGENT_ARGS...: the workload under one agent.
run() {
  name=$1; port=$2; shift 2
  t $name start
  /masdeepflow "$@" > /out.jsonl 2>/err.txt &
  AGENT=$!
  for i in $(seq 1 1200); do grep -q agent_start /out.jsonl 2>/dev/null && break; kill -0 $AGENT 2>/dev/null || break; sleep 0.1; done
  t $name agent_start_seen
  /bin/echo vm-marker "two words"
  wget -q -O /tmp/got http://127.0.0.1:8080/x
  (echo server-says-hi | nc -l -p $port > /tmp/nc.out) &
  sleep 1
  echo client-says-hello | nc 127.0.0.1 $port > /dev/null
  sleep 2
  t $name workload_done
  kill -INT $AGENT
  for i in $(seq 1 600); do kill -0 $AGENT 2>/dev/null || break; sleep 0.1; done
  kill -9 $AGENT 2>/dev/null && t $name killed_after_60s
  t $name stopped
  echo "=== ERR $name"
  cat /err.txt
  echo "=== TIMES $name"
  cat /times-$name.txt
  echo "=== OUT $name"
  cat /out.jsonl
}
run auto 9000
run syscalls 9001 --traffic-source syscalls
echo "=== END"
poweroff -f
"#;

/// The runs of the workload: name, nc port, agent arguments.
const RUNS: [(&str, u16, &[&str]); 2] = [("auto", 9000, &[]), ("syscalls", 9001, &["--traffic-source", "syscalls"])];

/// The families checked in each run, in report order.
const FAMILIES: [&str; 7] = ["start", "stderr", "exec", "exit", "tcp", "http", "loss"];

/// Downloads and unpacks the suite's newest cloud kernel of the line that
/// the mirror serves (once per machine); returns the kernel image.
fn kernel_image(k: &Kernel, dir: &Path) -> Result<PathBuf> {
    let unpacked = dir.join("kernel");
    if !unpacked.join("boot").is_dir() {
        let apt = Apt::new(&workspace_root().join("target/vm/apt").join(format!("{}-{}", k.suite, k.deb_arch())), k.suite, k.deb_arch())?;
        let regex = format!("^linux-image-{}\\.[0-9][0-9a-z.+-]*-cloud-{}-unsigned$", k.line.replace('.', "\\."), k.deb_arch());
        let candidates = apt.search(&regex)?;
        ensure!(!candidates.is_empty(), "no package matches {regex} in Debian {} {}", k.suite, k.deb_arch());
        // A mirror may list a security update it does not serve yet: take
        // the newest that downloads.
        let mut fetched = false;
        for package in candidates.iter().take(5) {
            match apt.unpack(package, &unpacked) {
                Ok(()) => {
                    fetched = true;
                    break;
                }
                Err(e) => eprintln!("xtask: {package} not fetched ({e:#}); trying the next older one"),
            }
        }
        ensure!(fetched, "none of {:?} could be fetched", &candidates[..candidates.len().min(5)]);
    }
    std::fs::read_dir(unpacked.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .context("no vmlinuz in the kernel package")
}

/// A static busybox for the guest's architecture: the host's for x86_64,
/// Debian's arm64 busybox-static otherwise.
fn busybox(k: &Kernel) -> Result<PathBuf> {
    if k.arch == "x86_64" {
        return ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("busybox (apt-get install busybox-static)");
    }
    let dir = workspace_root().join("target/vm").join(format!("busybox-{}", k.deb_arch()));
    let path = dir.join("bin/busybox");
    if !path.exists() {
        let apt = Apt::new(&workspace_root().join("target/vm/apt").join(format!("bookworm-{}", k.deb_arch())), "bookworm", k.deb_arch())?;
        apt.unpack("busybox-static", &dir)?;
    }
    Ok(path)
}

/// The initramfs: busybox and the agent's static binary.
fn initramfs(k: &Kernel, dir: &Path, agent: &Path) -> Result<PathBuf> {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp", "www"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(busybox(k)?, root.join("bin/busybox"))?;
    for applet in ["sh", "mount", "echo", "cat", "sleep", "grep", "nc", "wget", "httpd", "ip", "kill", "poweroff", "mkdir", "seq", "uname"]
    {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    std::fs::copy(agent, root.join("masdeepflow"))?;
    std::fs::write(root.join("www/x"), "hello-from-vm\n")?;
    std::fs::write(root.join("init"), INIT)?;
    std::fs::set_permissions(root.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let image = dir.join("initrd.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd '{}' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > '{}'", root.display(), image.display()))
        .status()?;
    ensure!(status.success(), "building the initramfs failed (apt-get install cpio)");
    Ok(image)
}

/// Boots the guest; returns its console output.
fn boot(k: &Kernel, vmlinuz: &Path, initrd: &Path) -> Result<String> {
    let (qemu, machine, console, timeout): (&str, &[&str], &str, u32) = if k.arch == "aarch64" {
        // cortex-a72: plain ARMv8.0, cheaper to emulate than `max`.
        ("qemu-system-aarch64", &["-M", "virt", "-cpu", "cortex-a72"], "ttyAMA0", 900)
    } else {
        ("qemu-system-x86_64", &[], "ttyS0", 420)
    };
    let out = Command::new("timeout")
        .args([timeout.to_string().as_str(), qemu])
        .args(machine)
        .args(["-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("console={console} panic=-1 quiet")])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{qemu} (apt-get install qemu-system-x86 qemu-system-arm)"))?;
    Ok(String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

/// The text between `=== name` and the next marker.
fn section<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let start = log.find(&format!("=== {name}"))?;
    let body = &log[start..];
    let body = &body[body.find('\n')? + 1..];
    Some(&body[..body.find("=== ").unwrap_or(body.len())])
}

type Outcome = std::result::Result<String, String>;

/// Checks one run's output, family by family.
fn check_run(log: &str, run: &str, nc_port: u16, probe: &str, expected_warnings: &[&str]) -> Vec<(&'static str, Outcome)> {
    let Some(out) = section(log, &format!("OUT {run}")) else {
        return FAMILIES.iter().map(|f| (*f, Err("the run did not finish (no output section)".to_string()))).collect();
    };
    let stderr = section(log, &format!("ERR {run}")).unwrap_or("").trim().to_string();
    let events: Vec<Value> = out.lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let find = |pred: &dyn Fn(&Value) -> bool| events.iter().find(|e| pred(e)).cloned();
    let mut results = Vec::new();

    let start = find(&|e| e["type"] == "agent_start");
    results.push((
        "start",
        match &start {
            None => Err(format!("no agent_start; stderr: {stderr}")),
            Some(s) if !s["probes"].as_array().is_some_and(|p| p.iter().any(|x| x == probe)) => {
                Err(format!("{probe} not attached: {}", s["probes"]))
            }
            Some(s) => Ok(format!("{} probes, {probe} among them", s["probes"].as_array().map_or(0, Vec::len))),
        },
    ));
    let unexpected: Vec<&str> = stderr.lines().filter(|l| !expected_warnings.iter().any(|w| l.contains(w))).collect();
    results.push((
        "stderr",
        if unexpected.is_empty() {
            Ok(if stderr.is_empty() { "empty".to_string() } else { format!("only the expected: {stderr}") })
        } else {
            Err(unexpected.join(" | "))
        },
    ));

    let exec = find(&|e| e["type"] == "process_exec" && e["args"] == serde_json::json!(["/bin/echo", "vm-marker", "two words"]));
    results.push(("exec", exec.as_ref().map(|e| format!("pid {}", e["process"]["pid"])).ok_or_else(|| "no exec of /bin/echo".to_string())));
    let exit = exec.as_ref().and_then(|x| find(&|e| e["type"] == "process_exit" && e["process"]["pid"] == x["process"]["pid"]));
    results.push((
        "exit",
        match exit {
            None => Err("no exit of /bin/echo".to_string()),
            Some(e) if e["exit_code"] != 0 => Err(format!("exit code: {e}")),
            Some(_) => Ok("code 0".to_string()),
        },
    ));

    let close = |role: &str| find(&|e| e["type"] == "tcp_close" && e["role"] == role && e["dst"]["port"] == nc_port);
    results.push((
        "tcp",
        match (close("client"), close("server")) {
            (None, _) => Err("no tcp_close of the nc client".to_string()),
            (_, None) => Err("no tcp_close of the nc server".to_string()),
            (Some(c), Some(s)) => {
                if c["bytes_sent"] != 18 || c["bytes_received"] != 15 {
                    Err(format!("client bytes: {c}"))
                } else if s["bytes_sent"] != 15 || s["bytes_received"] != 18 {
                    Err(format!("server bytes: {s}"))
                } else if c["src"] != s["src"] {
                    Err(format!("the two ends name different clients: {} and {}", c["src"], s["src"]))
                } else {
                    Ok("18 and 15 bytes at both ends".to_string())
                }
            }
        },
    ));

    let http = |role: &str| find(&|e| e["type"] == "http" && e["role"] == role && e["path"] == "/x");
    results.push((
        "http",
        match (http("client"), http("server")) {
            (None, _) => Err("no client http event for GET /x".to_string()),
            (_, None) => Err("no server http event for GET /x".to_string()),
            (Some(c), Some(s)) => {
                let bad = [&c, &s].into_iter().find(|h| h["status"] != 200 || h["method"] != "GET" || h["dst"]["port"] != 8080);
                match bad {
                    Some(h) => Err(format!("{h}")),
                    None => Ok("GET /x 200 from both sides".to_string()),
                }
            }
        },
    ));

    let stats = events.iter().rev().find(|e| e["type"] == "agent_stats");
    let killed = section(log, &format!("TIMES {run}")).is_some_and(|t| t.contains("killed"));
    results.push((
        "loss",
        match stats {
            _ if killed => Err("the agent did not exit within 60 s of SIGINT and was killed: no final agent_stats".to_string()),
            None => Err("no final agent_stats".to_string()),
            Some(s) => {
                let lost: Vec<String> = s["lost"]["kernel_ring_buffer"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| **v != 0)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if lost.is_empty() { Ok(format!("{} events, none lost", events.len())) } else { Err(format!("lost {}", lost.join(", "))) }
            }
        },
    ));
    results
}

/// One kernel's outcome.
struct Report {
    kernel: String,
    release: String,
    wall: Duration,
    /// (run, family, outcome).
    results: Vec<(String, &'static str, Outcome)>,
}

fn run_kernel(k: &Kernel) -> Result<Report> {
    let dir = workspace_root().join("target/vm").join(k.id());
    std::fs::create_dir_all(&dir)?;
    let vmlinuz = kernel_image(k, &dir)?;
    let initrd = initramfs(k, &dir, &dist::binary(dist::arch(k.arch)?))?;
    eprintln!(
        "xtask: booting {} under {} (TCG)",
        vmlinuz.display(),
        if k.arch == "aarch64" { "qemu-system-aarch64" } else { "qemu-system-x86_64" }
    );
    let t0 = Instant::now();
    let log = boot(k, &vmlinuz, &initrd)?;
    let wall = t0.elapsed();
    let console = dir.join("console.log");
    std::fs::write(&console, &log)?;
    let mut results = Vec::new();
    let release = log.lines().find_map(|l| l.split("=== KERNEL ").nth(1)).unwrap_or("(the guest did not start)").to_string();
    let check = match section(&log, "CHECK") {
        None => Err("no check output".to_string()),
        Some(_) if !log.contains("=== CHECK rc=0") => {
            let missing: Vec<&str> = section(&log, "CHECK").unwrap_or("").lines().filter(|l| l.contains("[missing]")).collect();
            Err(format!("`masdeepflow check` did not pass: {}", missing.join(" | ")))
        }
        Some(_) => Ok("exit 0".to_string()),
    };
    results.push(("-".to_string(), "check", check));
    if !release.starts_with(k.line) {
        results.push(("-".to_string(), "boot", Err(format!("guest kernel {release}, not {}; console: {}", k.line, console.display()))));
    }
    for (run, port, _) in RUNS {
        let probe = if run == "auto" { k.auto_probe } else { "syscalls:sys_exit_read" };
        for (family, outcome) in check_run(&log, run, port, probe, k.expected_warnings) {
            results.push((run.to_string(), family, outcome));
        }
    }
    Ok(Report { kernel: k.id(), release, wall, results })
}

/// Prints every report; fails on unexpected failures and on known gaps
/// that pass.
fn summarize(kernels: &[&Kernel], reports: &[Report]) -> Result<()> {
    let mut unexpected = Vec::new();
    let mut text = String::new();
    for (k, r) in kernels.iter().zip(reports) {
        let _ = writeln!(text, "vm-test: Linux {} ({}): {:.0} s in QEMU", r.release.trim(), r.kernel, r.wall.as_secs_f64());
        let mut reasons: Vec<&str> = Vec::new();
        for (run, family, outcome) in &r.results {
            let gap = k.known_gap(run, family);
            let (mark, detail) = match (outcome, gap) {
                (Ok(d), None) => ("pass", d.clone()),
                (Err(e), Some(why)) => {
                    if !reasons.contains(&why) {
                        reasons.push(why);
                    }
                    ("known gap", e.clone())
                }
                (Err(e), None) => {
                    unexpected.push(format!("{} {run} {family}", r.kernel));
                    ("FAIL", e.clone())
                }
                (Ok(d), Some(_)) => {
                    unexpected.push(format!("{} {run} {family} passes: remove it from KNOWN_GAPS", r.kernel));
                    ("PASS (listed as a known gap)", d.clone())
                }
            };
            let detail = detail.replace('\n', " | ");
            let _ = writeln!(text, "  {:<9} {:<6} {:<10} {detail}", run, family, mark);
        }
        for why in reasons {
            let _ = writeln!(text, "  known gap: {why}");
        }
    }
    print!("{text}");
    std::fs::write(workspace_root().join("target/vm/report.txt"), &text)?;
    ensure!(unexpected.is_empty(), "vm-test: {} (consoles in target/vm/*/console.log)", unexpected.join("; "));
    Ok(())
}

/// The kernels an invocation asks for.
pub fn selection(opts: &Options) -> Result<Vec<&'static Kernel>> {
    if opts.all {
        return Ok(MATRIX.iter().collect());
    }
    let k = MATRIX
        .iter()
        .find(|k| k.arch == opts.arch && k.line == opts.kernel)
        .with_context(|| format!("no kernel {} for {} in the matrix (x86_64: 5.10, 6.1, 6.12; aarch64: 6.1)", opts.kernel, opts.arch))?;
    Ok(vec![k])
}

pub fn run(opts: &Options) -> Result<()> {
    let kernels = selection(opts)?;
    let mut arches: Vec<&str> = kernels.iter().map(|k| k.arch).collect();
    arches.sort_unstable();
    arches.dedup();
    dist::setup()?;
    for a in &arches {
        dist::build(dist::arch(a)?)?;
    }
    let mut reports = Vec::new();
    for k in &kernels {
        reports.push(run_kernel(k)?);
    }
    summarize(&kernels, &reports)
}
