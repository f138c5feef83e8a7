//! masdeepflow: reports processes and TCP connections on this host as JSON
//! lines, with eBPF. This file only wires the command line.
use std::process::ExitCode;

use clap::Parser as _;

mod agent;
mod check;
mod cli;
mod clock;
mod containers;
mod decode;
mod embedded;
mod event;
mod fexit_hooks;
mod flows;
mod gateway;
#[cfg(test)]
mod hot_paths;
mod kernel;
mod lifetimes;
mod loader;
mod names;
mod pipeline;
mod protocols;
mod queue;
mod sink;
mod tls_coverage;
mod tls_probes;
mod wakeups;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_timestamp(None).init();
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Check) => {
            let items = check::items();
            let (text, all_ok) = check::report(&items);
            print!("{text}");
            print!("{}", check::program_sizes());
            print!("{}", tls_coverage::coverage_report());
            if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Some(cli::Command::Gateway(args)) => gateway::main(args),
        None if cli.run.validate().is_err() => {
            eprintln!("masdeepflow: error: {}", cli.run.validate().unwrap_err());
            ExitCode::from(2)
        }
        None => match agent::run(cli.run) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("masdeepflow: error: {}", one_line(&format!("{e:#}")));
                log::debug!("full error: {e:?}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Errors from the kernel can carry a whole verifier log: the user gets its
/// first line (the full text is logged at debug level, RUST_LOG=debug).
pub(crate) fn one_line(message: &str) -> String {
    let mut lines = message.lines();
    let first = lines.next().unwrap_or_default();
    match lines.count() {
        0 => first.to_string(),
        n => format!("{first} ({n} more lines with RUST_LOG=debug)"),
    }
}
