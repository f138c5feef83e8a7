//! Project tasks: `cargo xtask setup|build|run|test|bench`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_gateway;
mod bench_http;
mod procfs;
mod setup;
mod soak;
mod tls_fixtures;
mod vm;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF side needs (idempotent).
    Setup,
    /// Set up, then build the agent at target/release/masdeepflow.
    Build,
    /// Set up, build and run the agent; arguments after `--` go to it.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fetch the TLS test fixtures (OpenSSL 1.1/3.5, arm64 libraries, Go 1.24) once.
    TlsFixtures,
    /// Set up, build and run every test, privileged ones included.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build and run the benchmarks (exec storm, TCP churn, idle, HTTP, gateway).
    Bench(bench::Options),
    /// Set up, build and run the agent under mixed load for a while,
    /// failing when its memory or any table keeps growing.
    Soak(soak::Options),
    /// Set up, build, and run the agent on Debian's Linux 6.1 under QEMU.
    VmTest,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::setup(),
        Task::Build => setup::setup().and_then(|()| setup::build_release()),
        Task::Run { args } => setup::setup().and_then(|()| setup::build_release()).and_then(|()| setup::run_agent(&args)),
        Task::TlsFixtures => tls_fixtures::ensure(),
        Task::Test { args } => {
            setup::setup().and_then(|()| tls_fixtures::ensure()).and_then(|()| setup::build_release()).and_then(|()| setup::test(&args))
        }
        Task::Bench(opts) => setup::setup().and_then(|()| setup::build_release()).and_then(|()| bench::run(&opts)),
        Task::VmTest => setup::setup().and_then(|()| setup::build_release()).and_then(|()| vm::run_vm_test()),
        Task::Soak(opts) => setup::setup().and_then(|()| setup::build_release()).and_then(|()| soak::run(&opts)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
