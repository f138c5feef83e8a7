//! The static release binary (`cargo xtask dist`, which `cargo xtask test`
//! runs first) needs nothing from the host's userland: it runs chrooted in
//! a root file system that holds the binary and nothing else, with only the
//! kernel's own file systems mounted there (sysfs with tracefs, BTF and
//! cgroups under it, and procfs), as a container runtime would provide.
mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;
use support::{AGENT, Agent, servers::free_port};

/// `target/dist/masdeepflow-linux-<amd64|arm64>` for this machine.
fn static_binary() -> PathBuf {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no static build for {other}"),
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/dist/masdeepflow-linux-{arch}"));
    assert!(path.exists(), "{} is missing: `cargo xtask dist` builds it (`cargo xtask test` does)", path.display());
    path
}

/// A root holding only the binary, at `/masdeepflow`, and empty mount
/// points; removed when dropped.
struct Root(PathBuf);

impl Root {
    fn new() -> Root {
        let dir = std::env::temp_dir().join(format!("masdeepflow-static-root-{}-{}", std::process::id(), free_port()));
        for d in ["proc", "sys"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::copy(static_binary(), dir.join("masdeepflow")).unwrap();
        let mut entries: Vec<String> = walk(&dir).into_iter().map(|p| p.strip_prefix(&dir).unwrap().display().to_string()).collect();
        entries.sort();
        assert_eq!(entries, ["masdeepflow", "proc", "sys"], "the root holds the binary and two empty mount points");
        Root(dir)
    }

    /// `args` run as `/masdeepflow` chrooted in the root, in a mount
    /// namespace of their own where the host's /sys (recursively) and a
    /// procfs are mounted. The shell and chroot are the host's; they exec
    /// the agent, whose pid is the command's.
    fn command(&self, args: &[&str]) -> Command {
        let root = self.0.display();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!("mount --rbind /sys {root}/sys && mount -t proc proc {root}/proc && exec chroot {root} /masdeepflow \"$@\""))
            .arg("sh")
            .args(args);
        cmd
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // The mounts lived in the command's namespace and left with it.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn the_binary_is_static_and_stripped() {
    let binary = static_binary();
    let file = Command::new("file").arg("-b").arg(&binary).output().expect("file");
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(file.contains("static-pie linked") || file.contains("statically linked"), "{file}");
    assert!(file.contains(", stripped"), "{file}");
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
    let said = String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(said.contains("not a dynamic executable") || said.contains("statically linked"), "ldd: {said}");
}

#[test]
fn check_in_an_empty_root_says_what_the_host_build_says() {
    support::require_root();
    let root = Root::new();
    let chrooted = root.command(&["check"]).output().expect("unshare (util-linux)");
    let host = Command::new(AGENT).arg("check").output().unwrap();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        chrooted.status.code(),
        Some(0),
        "check failed in the empty root: {}{}",
        text(&chrooted),
        String::from_utf8_lossy(&chrooted.stderr)
    );
    // TLS coverage lists the libraries and processes the binary can see:
    // none in the empty root, the host's in it; the kernel's part is equal.
    let kernel_part =
        |t: String| -> String { t.lines().filter(|l| !l.starts_with("tls") && !l.starts_with("    ")).map(|l| format!("{l}\n")).collect() };
    assert_eq!(kernel_part(text(&chrooted)), kernel_part(text(&host)), "the static binary sees the kernel as the host build does");
    assert!(text(&chrooted).contains("features: exec ok, exit ok, tcp ok, flow ok, http ok"), "{}", text(&chrooted));
}

#[test]
fn agent_in_an_empty_root_reports_a_host_exec_and_its_exit() {
    let root = Root::new();
    let mut agent = Agent::start_command(root.command(&["--events", "exec,exit"]));
    let child = Command::new("/bin/echo").args(["static-marker", "two words"]).output().unwrap();
    assert!(child.status.success());
    let me = std::process::id();
    let exec = agent.expect("exec of /bin/echo", |e| {
        e["type"] == "process_exec" && e["process"]["ppid"] == me && e["args"] == json!(["/bin/echo", "static-marker", "two words"])
    });
    assert_eq!(exec["filename"], "/bin/echo");
    let pid = exec["process"]["pid"].clone();
    let exit = agent.expect("exit of /bin/echo", |e| e["type"] == "process_exit" && e["process"]["pid"] == pid);
    assert_eq!(exit["exit_code"], 0);
    let events = agent.stop();
    let stats = events.iter().rev().find(|e| e["type"] == "agent_stats").expect("final agent_stats");
    for (kind, n) in stats["lost"]["kernel_ring_buffer"].as_object().unwrap() {
        assert_eq!(n, 0, "lost {kind}");
    }
}
