//! Prints where TLS uprobes would go in the given files, or for every
//! executable file a process maps with `--pid PID`.
//!
//!     cargo run -p masdeepflow-tls --example probe_points -- /usr/lib/x86_64-linux-gnu/libssl.so.3
//!     cargo run -p masdeepflow-tls --example probe_points -- --pid 1234
use std::{path::Path, process::ExitCode};

use masdeepflow_tls::{analyze_path, procfs};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, pid] if flag == "--pid" => pid.parse::<u32>().map_err(|_| format!("not a pid: {pid}")).and_then(show_process),
        [] => Err("usage: probe_points FILE... | probe_points --pid PID".into()),
        files => files.iter().try_for_each(|f| show_file(Path::new(f), f)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe_points: {e}");
            ExitCode::FAILURE
        }
    }
}

fn show_process(pid: u32) -> Result<(), String> {
    let proc_root = Path::new("/proc");
    for file in procfs::process_files(proc_root, pid).map_err(|e| e.to_string())? {
        match procfs::open_mapped_file(proc_root, pid, &file) {
            Ok(opened) => show_file(&opened.path, &file.path.display().to_string())?,
            Err(e) => println!("{e}"),
        }
    }
    Ok(())
}

fn show_file(path: &Path, label: &str) -> Result<(), String> {
    let analysis = analyze_path(path).map_err(|e| format!("{label}: {e}"))?;
    if analysis.probes.is_empty() && analysis.refused.is_empty() && analysis.go.is_none() {
        return Ok(());
    }
    println!("{label} ({}{})", analysis.arch.name(), analysis.go.as_ref().map(|g| format!(", {}", g.version)).unwrap_or_default());
    for p in &analysis.probes {
        let returns: Vec<String> = p.return_offsets.iter().map(|o| format!("{o:#x}")).collect();
        let version = p.symbol_version.as_deref().map(|v| format!("@{v}")).unwrap_or_default();
        println!("  {}{version}: entry {:#x}, returns [{}] ({:?})", p.function.symbol(), p.entry_offset, returns.join(", "), p.found_in);
    }
    for r in &analysis.refused {
        println!("  {r}");
    }
    if let Some(e) = &analysis.go_error {
        println!("  Go functions not looked for: {e}");
    }
    Ok(())
}
