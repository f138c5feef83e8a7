//! `masdeepflow gateway`: connect-time load balancing. Programs on the
//! cgroup socket hooks rewrite a connect (or UDP send) to a VIP into one to
//! a backend, so the connection runs directly between client and backend.
//!
//! - `kernel.rs`: the object, cgroup attachments by link, map writes;
//! - `service_set.rs`: services from the file and Kubernetes, health and
//!   the table, kept in step with the kernel;
//! - `health.rs`: the checker tasks; `drain.rs`: resetting connections;
//! - `output.rs`: the JSON lines; `run.rs`: the main loop.
use std::{path::PathBuf, process::ExitCode, time::Duration};

mod drain;
mod health;
mod kernel;
mod kube;
mod output;
mod run;
mod service_set;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFamily {
    /// gateway_connection: one per balanced connection (and per UDP socket
    /// and VIP): client process, service, VIP, chosen backend.
    Connections,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// The configuration file (TOML, `[[service]]` tables). SIGHUP or a
    /// change of the file reloads it.
    #[arg(long, value_name = "FILE", conflicts_with = "check")]
    pub config: Option<PathBuf>,
    /// Check a configuration file and exit: 0 when valid, 2 with a one-line
    /// error naming the line when not. Loads nothing.
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
    /// Optional events (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<EventFamily>,
    /// Period of gateway_stats lines, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub stats_interval: Duration,
    /// This node's name: Kubernetes ClusterIP Services and their ready
    /// endpoints become services too (in-cluster service account or
    /// KUBECONFIG).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Apply the Kubernetes services to this cgroup2 subtree only (default:
    /// every process on the host).
    #[arg(long, value_name = "PATH")]
    pub kubernetes_scope: Option<PathBuf>,
    /// Ring buffer for connection events, in bytes (a power of two, at
    /// least 4096).
    #[arg(long, default_value_t = 1 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("invalid size '{s}'"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("ring buffer size {n} must be a power of two and at least 4096"));
    }
    Ok(n)
}

/// Why the gateway did not run.
pub enum Failure {
    /// A wrong configuration: exit 2, nothing attached.
    Config(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

pub fn main(args: GatewayArgs) -> ExitCode {
    if let Some(path) = &args.check {
        return match service_set::read_config(path) {
            Ok(config) => {
                println!("{}: ok ({} services)", path.display(), config.services.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("masdeepflow gateway: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("masdeepflow gateway: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("masdeepflow gateway: error: {}", crate::one_line(&format!("{e:#}")));
            log::debug!("full error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn gateway_arguments() {
        let cli =
            Cli::try_parse_from(["masdeepflow", "gateway", "--config", "gw.toml", "--events", "connections", "--stats-interval", "2s"])
                .unwrap();
        let Some(Command::Gateway(args)) = cli.command else { panic!("not the gateway") };
        assert_eq!(args.config.as_deref(), Some(std::path::Path::new("gw.toml")));
        assert_eq!(args.events, vec![super::EventFamily::Connections]);
        assert_eq!(args.stats_interval, std::time::Duration::from_secs(2));
        assert_eq!(args.ring_buffer_size, 1 << 20);
        assert!(Cli::try_parse_from(["masdeepflow", "gateway", "--config", "a", "--check", "b"]).is_err());
        assert!(Cli::try_parse_from(["masdeepflow", "gateway", "--events", "packets"]).is_err());
        assert!(Cli::try_parse_from(["masdeepflow", "gateway", "--ring-buffer-size", "5000"]).is_err());
    }
}
