//! TLS plaintext probes: which files to attach OpenSSL's uprobes to, and
//! attaching them (see docs/tls.md). Uprobes bind to a file's inode and
//! fire in every process mapping it, so each file is attached once, with
//! pid -1, while at least one process maps it (`masdeepflow_tls::AttachPlan`).
//!
//! - At start: the host's own `libssl` (standard library folders), held
//!   for the agent's lifetime, so short-lived clients (curl) are seen from
//!   their first call; then every running process.
//! - Then a sweep every [`SWEEP_INTERVAL`]: new processes (and those that
//!   just exec'd) are scanned 0.2, 1 and 5 s after they are first seen (the
//!   dynamic loader maps libraries after the exec; Python loads libssl when
//!   it imports `ssl`); processes gone release their files, and a file with
//!   no process left is detached. When the agent receives every process's
//!   exec and exit events, new and gone processes come from them and
//!   `/proc` itself is listed only every [`LISTING_INTERVAL`], so a quiet
//!   host costs a sweep no directory read; otherwise (`--events` without
//!   exec or exit, `--pid`, `--comm`) at every sweep.
//! - Attached by link: the agent's exit, kill -9 included, removes them.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
    programs::{UProbe, uprobe::UProbeLinkId, uprobe::UProbeScope},
};
use masdeepflow_common::tls::{TlsConn, TlsConnKey};
use masdeepflow_tls::{AttachPlan, Change, Discovery, FileAnalysis, FileId, TlsFunction, TlsLibrary, analyze_path};

pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// `/proc` is listed this often (and at start): exec and exit events name
/// new and gone processes in between; the listing catches those whose
/// events were lost. A sweep between listings only scans processes due.
pub const LISTING_INTERVAL: Duration = Duration::from_secs(10);

/// Ages (since first seen or exec) at which a process is scanned.
const SCAN_AGES: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5)];

/// The pseudo-process holding the host's libraries.
const HOST: u32 = 0;

const ENTRY_PROGRAMS: [&str; 5] = ["ssl_write_entry", "ssl_read_entry", "ssl_write_ex_entry", "ssl_read_ex_entry", "ssl_handshake_entry"];
const RETURN_PROGRAM: &str = "ssl_return";

/// The entry program of a function, None for those not probed.
pub(crate) fn entry_program(f: TlsFunction) -> Option<&'static str> {
    match f {
        TlsFunction::SslWrite => Some("ssl_write_entry"),
        TlsFunction::SslRead => Some("ssl_read_entry"),
        TlsFunction::SslWriteEx => Some("ssl_write_ex_entry"),
        TlsFunction::SslReadEx => Some("ssl_read_ex_entry"),
        TlsFunction::SslDoHandshake | TlsFunction::SslConnect | TlsFunction::SslAccept => Some("ssl_handshake_entry"),
        // `SSL_write_ex2` (OpenSSL 3.3+), GnuTLS, Go: not done yet.
        _ => None,
    }
}

/// A file to attach: where to open it and what it holds.
#[derive(Clone)]
struct Target {
    path: PathBuf,
    analysis: Arc<FileAnalysis>,
}

struct Attached {
    path: PathBuf,
    /// Entries first: they are detached first, so no call is opened
    /// without its returns.
    links: Vec<(&'static str, UProbeLinkId)>,
}

struct Seen {
    since: Instant,
    scans: usize,
    covered: bool,
}

pub struct TlsProbes {
    discovery: Discovery,
    plan: AttachPlan,
    targets: HashMap<FileId, Target>,
    attached: HashMap<FileId, Attached>,
    seen: HashMap<u32, Seen>,
    conns: Option<BpfHashMap<MapData, TlsConnKey, TlsConn>>,
    own_pid: u32,
    /// When `/proc` was last listed, and how often it is.
    last_listing: Option<Instant>,
    listing_interval: Duration,
}

impl TlsProbes {
    /// Loads the uprobe programs and attaches the host's libssl. `/proc`
    /// is listed every `listing_interval` ([`LISTING_INTERVAL`] when exec
    /// and exit events of every process reach [`on_exec`](Self::on_exec)
    /// and [`on_exit`](Self::on_exit), else [`SWEEP_INTERVAL`]).
    pub fn start(ebpf: &mut Ebpf, listing_interval: Duration) -> Result<TlsProbes> {
        for name in ENTRY_PROGRAMS.iter().chain([&RETURN_PROGRAM]) {
            let p: &mut UProbe = ebpf.program_mut(name).with_context(|| format!("program {name} missing from the object"))?.try_into()?;
            p.load().with_context(|| format!("loading program {name}"))?;
        }
        let conns = ebpf.take_map("TLS_CONNS").map(BpfHashMap::try_from).transpose()?;
        let mut probes = TlsProbes {
            discovery: Discovery::new(Path::new("/proc")),
            plan: AttachPlan::new(),
            targets: HashMap::new(),
            attached: HashMap::new(),
            seen: HashMap::new(),
            conns,
            own_pid: std::process::id(),
            last_listing: None,
            listing_interval,
        };
        let mut host = Vec::new();
        for path in host_libraries() {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            use std::os::unix::fs::MetadataExt as _;
            let id = FileId::from_stat(meta.dev(), meta.ino());
            match analyze_path(&path) {
                Ok(a) if a.has_probes() => {
                    probes.targets.insert(id, Target { path: path.clone(), analysis: Arc::new(a) });
                    host.push(id);
                }
                Ok(_) => {}
                Err(e) => log::info!("tls: {}: {e}", path.display()),
            }
        }
        let changes = probes.plan.set_process_files(HOST, host);
        probes.apply(ebpf, changes);
        probes.sweep(ebpf);
        Ok(probes)
    }

    /// A process exec'd: scanned again from now.
    pub fn on_exec(&mut self, pid: u32) {
        self.seen.insert(pid, Seen { since: Instant::now(), scans: 0, covered: false });
    }

    /// A process exited.
    pub fn on_exit(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if self.seen.remove(&pid).is_some() {
            let changes = self.plan.process_exited(pid);
            self.apply(ebpf, changes);
        }
    }

    pub fn sweep(&mut self, ebpf: &mut Ebpf) {
        let now = Instant::now();
        let listing = self.last_listing.is_none_or(|t| now.duration_since(t) >= self.listing_interval);
        let alive = if listing { live_pids() } else { HashSet::new() };
        if listing {
            self.last_listing = Some(now);
            for &pid in &alive {
                if pid != self.own_pid {
                    self.seen.entry(pid).or_insert(Seen { since: now, scans: 0, covered: false });
                }
            }
        }
        let gone: Vec<u32> = if listing { self.seen.keys().copied().filter(|p| !alive.contains(p)).collect() } else { Vec::new() };
        let mut changes = Vec::new();
        for pid in &gone {
            self.seen.remove(pid);
            changes.extend(self.plan.process_exited(*pid));
        }
        let due: Vec<u32> = self
            .seen
            .iter()
            .filter(|(_, s)| s.scans < SCAN_AGES.len() && now.duration_since(s.since) >= SCAN_AGES[s.scans])
            .map(|(p, _)| *p)
            .collect();
        for pid in due {
            let Ok(scan) = self.discovery.scan_process(pid) else {
                self.seen.remove(&pid);
                changes.extend(self.plan.process_exited(pid));
                continue;
            };
            let seen = self.seen.get_mut(&pid).expect("due pids are seen");
            seen.scans += 1;
            let mut ids = Vec::new();
            for f in &scan.tls_files {
                if !f.analysis.libraries().contains(&TlsLibrary::OpenSsl) {
                    continue;
                }
                ids.push(f.mapped.id);
                self.targets.entry(f.mapped.id).or_insert_with(|| Target {
                    path: host_path(pid, &f.mapped.path, f.mapped.id).unwrap_or_else(|| f.open_path.clone()),
                    analysis: f.analysis.clone(),
                });
                if !seen.covered {
                    log::info!("tls: pid {pid} maps {} (openssl): covered", f.mapped.path.display());
                }
            }
            seen.covered |= !ids.is_empty();
            changes.extend(self.plan.set_process_files(pid, ids));
        }
        self.apply(ebpf, changes);
        if !gone.is_empty() {
            self.forget_connections(&alive);
        }
    }

    fn apply(&mut self, ebpf: &mut Ebpf, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Attach(id) => {
                    let Some(target) = self.targets.get(&id).cloned() else { continue };
                    match attach(ebpf, &target) {
                        Ok(links) => {
                            log::info!("tls: attached {} ({} probes)", target.path.display(), links.len());
                            self.attached.insert(id, Attached { path: target.path, links });
                        }
                        Err(e) => log::warn!("tls: cannot attach to {}: {e:#}", target.path.display()),
                    }
                }
                Change::Detach(id) => {
                    if let Some(a) = self.attached.remove(&id) {
                        detach(ebpf, a.links);
                        log::info!("tls: detached {}", a.path.display());
                    }
                    self.targets.remove(&id);
                    self.discovery.forget(id);
                }
            }
        }
    }

    /// Removes SSL-to-connection bindings of processes that are gone.
    fn forget_connections(&mut self, alive: &HashSet<u32>) {
        let Some(map) = self.conns.as_mut() else { return };
        let dead: Vec<TlsConnKey> = map.keys().filter_map(|k| k.ok()).filter(|k| !alive.contains(&k.pid)).collect();
        for k in dead {
            let _ = map.remove(&k);
        }
    }
}

fn attach(ebpf: &mut Ebpf, target: &Target) -> Result<Vec<(&'static str, UProbeLinkId)>> {
    let mut entries = Vec::new();
    let mut returns = Vec::new();
    let result = (|| -> Result<()> {
        for p in &target.analysis.probes {
            let Some(entry) = entry_program(p.function) else { continue };
            if p.return_offsets.is_empty() {
                continue;
            }
            // Returns first: an entry never opens a call whose return is not watched.
            let prog: &mut UProbe = ebpf.program_mut(RETURN_PROGRAM).context("ssl_return missing")?.try_into()?;
            for &off in &p.return_offsets {
                returns.push((RETURN_PROGRAM, prog.attach(off, &target.path, UProbeScope::AllProcesses)?));
            }
            let prog: &mut UProbe = ebpf.program_mut(entry).context("entry program missing")?.try_into()?;
            entries.push((entry, prog.attach(p.entry_offset, &target.path, UProbeScope::AllProcesses)?));
        }
        Ok(())
    })();
    entries.extend(returns);
    if let Err(e) = result {
        detach(ebpf, entries);
        return Err(e);
    }
    Ok(entries)
}

fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, UProbeLinkId)>) {
    for (name, link) in links {
        if let Some(Ok(p)) = ebpf.program_mut(name).map(<&mut UProbe>::try_from) {
            let _ = p.detach(link);
        }
    }
}

/// The file's path as the host sees it, when the process shares the
/// host's mount namespace view (its root is `/`) and the path names the
/// mapped file: readable in `bpftool perf list`.
fn host_path(pid: u32, path: &Path, id: FileId) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let root = std::fs::read_link(format!("/proc/{pid}/root")).ok()?;
    if root != Path::new("/") {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    (FileId::from_stat(meta.dev(), meta.ino()) == id).then(|| path.to_path_buf())
}

/// The host's libssl files in the standard library folders.
pub(crate) fn host_libraries() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for dir in ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib"] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("libssl.so.") && name[10..].chars().all(|c| c.is_ascii_digit() || c == '.')) {
                continue;
            }
            let Ok(path) = std::fs::canonicalize(e.path()) else { continue };
            if seen.insert(path.clone()) {
                out.push(path);
            }
        }
    }
    out
}

pub(crate) fn live_pids() -> HashSet<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect())
        .unwrap_or_default()
}
