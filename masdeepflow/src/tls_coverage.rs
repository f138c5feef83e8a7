//! `masdeepflow check`'s TLS section: which TLS libraries the host and its
//! running processes hold, and what the agent would probe in each (the
//! lifecycle of the probes themselves is in `tls_probes`).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use masdeepflow_tls::{Discovery, FileAnalysis, analyze_path};

use crate::tls_probes::{entry_program, host_libraries, live_pids};

/// `masdeepflow check`: each TLS file on the host and in running
/// processes, with the processes mapping it, what the agent would probe in
/// it and what not, and why.
pub fn coverage_report() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut discovery = Discovery::new(Path::new("/proc"));
    let mut files: BTreeMap<PathBuf, (Arc<FileAnalysis>, Vec<String>)> = BTreeMap::new();
    for path in host_libraries() {
        if let Ok(a) = analyze_path(&path) {
            files.entry(path).or_insert((Arc::new(a), Vec::new())).1.push("host library".into());
        }
    }
    let own = std::process::id();
    let mut pids: Vec<u32> = live_pids().into_iter().filter(|&p| p != own).collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(scan) = discovery.scan_process(pid) else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        for f in scan.tls_files {
            let user = format!("{pid} ({})", comm.trim().escape_debug());
            files.entry(f.mapped.path.clone()).or_insert((f.analysis.clone(), Vec::new())).1.push(user);
        }
    }
    if files.is_empty() {
        let _ = writeln!(out, "tls: no TLS library found on the host or in any process");
    }
    for (path, (analysis, users)) in files {
        let probed: Vec<&str> = analysis
            .probes
            .iter()
            .filter(|p| entry_program(p.function).is_some() && !p.return_offsets.is_empty())
            .map(|p| p.function.symbol())
            .collect();
        let mut not: Vec<String> = analysis
            .probes
            .iter()
            .filter(|p| p.function.needs_returns() || entry_program(p.function).is_some())
            .filter_map(|p| match entry_program(p.function) {
                None => Some(format!("{} (not supported yet)", p.function.symbol())),
                Some(_) if p.return_offsets.is_empty() => {
                    Some(format!("{} (no return instruction of its own: not marked)", p.function.symbol()))
                }
                Some(_) => None,
            })
            .collect();
        not.extend(analysis.refused.iter().map(|r| r.to_string()));
        let state =
            if probed.iter().any(|s| s.starts_with("SSL_read") || s.starts_with("SSL_write")) { "[covered]" } else { "[not covered]" };
        let _ = writeln!(out, "tls {state} {} used by {}", path.display().to_string().escape_debug(), users.join(", "));
        if !probed.is_empty() {
            let _ = writeln!(out, "    probed: {}", probed.join(", "));
        }
        if !not.is_empty() {
            let _ = writeln!(out, "    not probed: {}", not.join("; "));
        }
    }
    out
}
