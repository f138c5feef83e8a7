//! `cargo xtask vm-test`: the agent on another kernel. Boots Debian's
//! Linux 6.1 cloud kernel under QEMU (TCG) with an initramfs of
//! busybox-static, the agent and its libraries, runs a scripted workload
//! (exec, an HTTP exchange with busybox httpd and wget, a TCP exchange with
//! nc) under the agent twice, and checks the agent's output. 6.1 lacks
//! `sock:sock_*_length` and `group_dead` in `sched_process_exit`, and allows
//! fexit: the first run must pick the fexit traffic hooks, the second is
//! made to use the syscall hooks. Needs qemu-system-x86, cpio and busybox-static
//! (Debian packages; `.ci/run` installs them) and apt to fetch the kernel.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::setup::{agent_path, workspace_root};

/// The guest's /init: start the agent, run the workload, print everything
/// between markers on the serial console, power off.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tracefs nodev /sys/kernel/tracing
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
echo "=== KERNEL $(cat /proc/sys/kernel/osrelease)"
/masdeepflow check > /check.txt
echo "=== CHECK rc=$?"
cat /check.txt
httpd -p 127.0.0.1:8080 -h /www
# run NAME NC_PORT AGENT_ARGS...: the workload under one agent.
run() {
  name=$1; port=$2; shift 2
  /masdeepflow "$@" > /out.jsonl 2>/err.txt &
  AGENT=$!
  for i in $(seq 1 600); do grep -q agent_start /out.jsonl 2>/dev/null && break; sleep 0.1; done
  /bin/echo vm-marker "two words"
  wget -q -O /tmp/got http://127.0.0.1:8080/x
  (echo server-says-hi | nc -l -p $port > /tmp/nc.out) &
  sleep 1
  echo client-says-hello | nc 127.0.0.1 $port > /dev/null
  sleep 2
  kill -INT $AGENT
  for i in $(seq 1 300); do kill -0 $AGENT 2>/dev/null || break; sleep 0.1; done
  echo "=== ERR $name"
  cat /err.txt
  echo "=== OUT $name"
  cat /out.jsonl
}
run auto 9000
run syscalls 9001 --traffic-source syscalls
echo "=== END"
poweroff -f
"#;

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Downloads and unpacks the newest Debian 6.1 cloud kernel (once).
fn kernel(dir: &Path) -> Result<PathBuf> {
    let unpacked = dir.join("kernel");
    if !unpacked.join("boot").is_dir() {
        let list = run(Command::new("apt-cache").args(["search", "--names-only", "^linux-image-6.1.0-.*-cloud-amd64-unsigned$"]))?;
        let mut names: Vec<&str> = list.lines().filter_map(|l| l.split(' ').next()).collect();
        names.sort_by_key(|n| n.split('-').nth(3).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0));
        let name = names.last().context("no linux-image-6.1.0-*-cloud-amd64-unsigned in apt (apt-get update?)")?;
        eprintln!("xtask: fetching {name}");
        run(Command::new("apt-get").args(["download", name]).current_dir(dir))?;
        let deb = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    std::fs::read_dir(unpacked.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .context("no vmlinuz in the kernel package")
}

/// The initramfs: busybox, the agent and the libraries it links.
fn initramfs(dir: &Path) -> Result<PathBuf> {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp", "www"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox (apt-get install busybox-static)")?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for applet in ["sh", "mount", "echo", "cat", "sleep", "grep", "nc", "wget", "httpd", "ip", "kill", "poweroff", "mkdir", "seq"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let agent = agent_path();
    std::fs::copy(&agent, root.join("masdeepflow"))?;
    for line in run(Command::new("ldd").arg(&agent))?.lines() {
        if let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) {
            let to = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().expect("a library has a folder"))?;
            std::fs::copy(lib, &to)?;
        }
    }
    std::fs::write(root.join("www/x"), "hello-from-vm\n")?;
    std::fs::write(root.join("init"), INIT)?;
    run(Command::new("chmod").arg("755").arg(root.join("init")))?;
    let image = dir.join("initrd.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd '{}' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > '{}'", root.display(), image.display()))
        .status()?;
    ensure!(status.success(), "building the initramfs failed (apt-get install cpio)");
    Ok(image)
}

/// Checks one agent run's output; returns how many events it wrote.
fn check_run(log: &str, run: &str, nc_port: u16, probe: &str) -> Result<usize> {
    ensure!(section(log, &format!("ERR {run}")).is_some_and(|e| e.trim().is_empty()), "the agent wrote to stderr");
    let events: Vec<Value> = section(log, &format!("OUT {run}"))
        .context("no agent output")?
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect::<Result<_>>()?;
    let find = |what: &str, pred: &dyn Fn(&Value) -> bool| events.iter().find(|e| pred(e)).cloned().with_context(|| format!("no {what}"));

    let start = find("agent_start", &|e| e["type"] == "agent_start")?;
    ensure!(start["probes"].as_array().is_some_and(|p| p.iter().any(|x| x == probe)), "{probe} was not attached: {start}");
    let exec = find("exec of /bin/echo", &|e| {
        e["type"] == "process_exec" && e["args"] == serde_json::json!(["/bin/echo", "vm-marker", "two words"])
    })?;
    let pid = exec["process"]["pid"].clone();
    let exit = find("exit of /bin/echo", &|e| e["type"] == "process_exit" && e["process"]["pid"] == pid)?;
    ensure!(exit["exit_code"] == 0, "echo's exit code");
    for role in ["client", "server"] {
        let http = find(&format!("{role} http"), &|e| e["type"] == "http" && e["role"] == role && e["path"] == "/x")?;
        ensure!(http["status"] == 200 && http["method"] == "GET" && http["dst"]["port"] == 8080, "{role} http: {http}");
    }
    let client_close = find("nc client close", &|e| e["type"] == "tcp_close" && e["role"] == "client" && e["dst"]["port"] == nc_port)?;
    ensure!(client_close["bytes_sent"] == 18 && client_close["bytes_received"] == 15, "nc bytes: {client_close}");
    let server_close = find("nc server close", &|e| e["type"] == "tcp_close" && e["role"] == "server" && e["dst"]["port"] == nc_port)?;
    ensure!(server_close["bytes_sent"] == 15 && server_close["bytes_received"] == 18, "nc server bytes: {server_close}");
    ensure!(server_close["src"] == client_close["src"], "both ends of the nc connection should name the same client");
    let stats = events.iter().rev().find(|e| e["type"] == "agent_stats").context("no final agent_stats")?;
    for (k, v) in stats["lost"]["kernel_ring_buffer"].as_object().into_iter().flatten() {
        ensure!(v == 0, "lost {k}");
    }
    Ok(events.len())
}

/// The text between `=== name` and the next marker.
fn section<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let start = log.find(&format!("=== {name}"))?;
    let body = &log[start..];
    let body = &body[body.find('\n')? + 1..];
    Some(&body[..body.find("=== ").unwrap_or(body.len())])
}

pub fn run_vm_test() -> Result<()> {
    let dir = workspace_root().join("target/vm");
    std::fs::create_dir_all(&dir)?;
    let vmlinuz = kernel(&dir)?;
    let initrd = initramfs(&dir)?;
    eprintln!("xtask: booting {} under QEMU (TCG)", vmlinuz.display());
    let out = Command::new("timeout")
        .args(["300", "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot", "-kernel"])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .output()
        .context("qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let log = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    std::fs::write(dir.join("console.log"), &log)?;
    let fail = |what: &str| anyhow::anyhow!("{what} (console: {})", dir.join("console.log").display());

    let release = log.lines().find_map(|l| l.split("=== KERNEL ").nth(1)).ok_or_else(|| fail("the guest did not start"))?;
    ensure!(release.starts_with("6.1."), fail(&format!("guest kernel {release}, not 6.1")));
    let check = section(&log, "CHECK").ok_or_else(|| fail("no check output"))?;
    ensure!(log.contains("=== CHECK rc=0"), fail("`masdeepflow check` did not pass on 6.1"));
    ensure!(check.contains("[replaced] tracepoint sock:sock_send_length"), fail("check does not show the traffic fallback"));
    ensure!(check.contains("[ok]      fexit on tcp_sendmsg"), fail("check does not find the fexit hooks"));
    // Auto picks the fexit hooks on 6.1; the syscall hooks must work too.
    for (run, nc_port, probe) in [("auto", 9000, "fexit:tcp_recvmsg"), ("syscalls", 9001, "syscalls:sys_exit_read")] {
        let n = check_run(&log, run, nc_port, probe).map_err(|e| fail(&format!("{run} run: {e}")))?;
        println!("vm-test: Linux {release}, {run} ({probe}): exec, exit, HTTP (both sides), TCP bytes and stats as expected ({n} events)");
    }
    println!("vm-test: Linux {release}: check passes, the sock tracepoints replaced by fexit");
    Ok(())
}
