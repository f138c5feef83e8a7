//! Project tasks: `cargo xtask setup|lint|build|dist|image|run|tls-fixtures|test|bench|soak|vm-test`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_gateway;
mod bench_http;
mod bench_mysql;
mod debian;
mod dist;
mod image;
mod lint;
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
    /// Fail on formatting differences and on clippy warnings (host crates,
    /// and the eBPF crate for its own target).
    Lint,
    /// Set up, then build the agent at target/release/masdeepflow.
    Build,
    /// Set up, build static x86_64 and aarch64 binaries (musl, stripped)
    /// and their checksums into target/dist/.
    Dist,
    /// Set up, build the static binaries, and the container image (buildah,
    /// amd64 and arm64) holding only the binary.
    Image,
    /// Set up, build and run the agent; arguments after `--` go to it.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fetch the TLS test fixtures (OpenSSL 1.1/3.5, arm64 libraries, Go 1.24) once.
    TlsFixtures,
    /// Set up, build (the agent, the static binaries, the image) and run
    /// every test, privileged ones included.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build and run the benchmarks (exec storm, TCP churn, idle, HTTP, gateway, MySQL).
    Bench(bench::Options),
    /// Set up, build and run the agent under mixed load for a while,
    /// failing when its memory or any table keeps growing.
    Soak(soak::Options),
    /// Set up, build the static binaries, and run the agent on Debian
    /// kernels under QEMU (default: x86_64 Linux 6.1; `--all`: the matrix).
    VmTest(vm::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::setup(),
        Task::Lint => lint::fmt_check().and_then(|()| lint::clippy()),
        Task::Build => setup::setup().and_then(|()| setup::build_release()),
        Task::Dist => setup::setup().and_then(|()| dist::dist()),
        Task::Image => setup::setup().and_then(|()| image::image()),
        Task::Run { args } => setup::setup().and_then(|()| setup::build_release()).and_then(|()| setup::run_agent(&args)),
        Task::TlsFixtures => tls_fixtures::ensure(),
        Task::Test { args } => setup::setup()
            .and_then(|()| tls_fixtures::ensure())
            .and_then(|()| setup::build_release())
            .and_then(|()| image::image())
            .and_then(|()| setup::test(&args)),
        Task::Bench(opts) => setup::setup().and_then(|()| setup::build_release()).and_then(|()| bench::run(&opts)),
        Task::VmTest(opts) => setup::setup().and_then(|()| vm::run(&opts)),
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
