//! Command line.
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use masdeepflow_common::payload::CAPTURE_MAX;

#[derive(Debug, Parser)]
#[command(name = "masdeepflow", version, about = "Reports processes and TCP connections on this host as JSON lines, using eBPF")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report what this kernel supports and which features will work.
    Check,
    /// Run the gateway: connect-time load balancing of VIPs to backends
    /// (see docs/gateway.md).
    Gateway(crate::gateway::GatewayArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Family {
    /// process_exec
    Exec,
    /// process_exit
    Exit,
    /// tcp_connect, tcp_accept, tcp_close
    Tcp,
    /// flow: bytes moved per connection per interval
    Flow,
    /// http: HTTP/1.x requests with status and latency
    Http,
    /// mysql: MySQL/MariaDB commands with statement, outcome and latency
    Mysql,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Exec => "exec",
            Family::Exit => "exit",
            Family::Tcp => "tcp",
            Family::Flow => "flow",
            Family::Http => "http",
            Family::Mysql => "mysql",
        }
    }
}

/// Most `--sql-bytes`: 16 KiB, what the kernel copies of the syscall that
/// sends a statement (`MYSQL_CAPTURE_BYTES`) leaves for the SQL.
pub const SQL_BYTES_MAX: usize = 16 * 1024;
const _: () = assert!(SQL_BYTES_MAX + 4 + 1 + 2 <= masdeepflow_common::payload::MYSQL_CAPTURE_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line on stdout (docs/events.md).
    Json,
    /// Aligned text lines on stdout, for a terminal.
    Text,
    /// Nothing on stdout: events only feed `--metrics-listen` and
    /// `--otlp-endpoint` (no line is formatted at all).
    None,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// gRPC (usually port 4317).
    Grpc,
    /// Protobuf over HTTP POST to `<endpoint>/v1/{logs,traces,metrics}` (usually port 4318).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// What goes to the OTLP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum OtlpSignal {
    /// The metrics also served on `/metrics`.
    Metrics,
    /// Every event as a log record.
    Logs,
    /// Every HTTP exchange as a span.
    Traces,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Event families to report (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "exec,exit,tcp,flow,http,mysql")]
    pub events: Vec<Family>,
    /// Only events of these processes (thread-group ids; comma separated).
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Only events of processes with these command names (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub comm: Vec<String>,
    /// Only connection events (tcp, flow, http, mysql) with one of these ports on either end.
    #[arg(long, value_delimiter = ',')]
    pub port: Vec<u16>,
    /// Only events of processes in pods of these Kubernetes namespaces.
    #[arg(long, value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// Only events of processes in these pods (names).
    #[arg(long, value_delimiter = ',')]
    pub pod: Vec<String>,
    /// This node's name, for watching its pods (default: $NODE_NAME). Without
    /// it, or without a reachable cluster, events carry container ids only.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Payload bytes copied per send/receive on HTTP connections (bytes past
    /// them are counted, not read).
    #[arg(long, default_value_t = DEFAULT_CAPTURE_BYTES, value_parser = clap::value_parser!(u32).range(64..=CAPTURE_MAX as i64))]
    pub capture_bytes: u32,
    /// Bytes of SQL kept per MySQL statement (longer ones are flagged
    /// `statement_truncated`; their length is still counted).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(64..=SQL_BYTES_MAX as i64))]
    pub sql_bytes: u32,
    /// Report MySQL statements as their fingerprints (literals replaced by
    /// `?`) and error messages without their quoted text: no literal from the
    /// traced system leaves the host.
    #[arg(long)]
    pub sql_redact: bool,
    /// Where socket byte counts and HTTP payloads come from.
    #[arg(long, value_enum, default_value_t = crate::loader::TrafficSource::Auto)]
    pub traffic_source: crate::loader::TrafficSource,
    /// Find syscall buffers from the syscalls' recorded entries, as on
    /// kernels before 5.15, even where their saved registers can be read
    /// (for tests of that path).
    #[arg(long, hide = true)]
    pub record_syscall_entries: bool,
    /// Period of flow records, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub flow_interval: Duration,
    /// Period of agent_stats records.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub stats_interval: Duration,
    /// What is written to stdout per event (`none` needs --metrics-listen
    /// or --otlp-endpoint). `--format` is the same option.
    #[arg(long = "output", alias = "format", value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9464;
    /// off by default: the agent opens no port unless asked).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Most label sets (series) per metric; observations with new label
    /// sets past it are folded into the metric's overflow series and counted.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub metrics_max_series: u32,
    /// Export to an OpenTelemetry collector at this URL (http:// or
    /// https://; TLS for https).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL", value_parser = parse_otlp_url)]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport (http/protobuf is the OpenTelemetry default).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::HttpProtobuf)]
    pub otlp_protocol: OtlpProtocol,
    /// Extra header for every OTLP request, `name=value` (repeat the
    /// option, or separate with commas; values may be percent-encoded).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", value_delimiter = ',', value_name = "NAME=VALUE", value_parser = parse_header)]
    pub otlp_header: Vec<(String, String)>,
    /// PEM file of the certificate authority that signed the collector's
    /// certificate (default: the system's roots).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE", value_name = "PATH")]
    pub otlp_ca_file: Option<std::path::PathBuf>,
    /// Signals sent to the OTLP endpoint (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "metrics,logs,traces")]
    pub otlp_signals: Vec<OtlpSignal>,
    /// Period of OTLP metric exports (log records and spans go out within a second).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub otlp_interval: Duration,
    /// Log records and spans that may wait for the collector (each); more
    /// are dropped and counted in agent_stats `lost.export`.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..))]
    pub otlp_queue_size: u32,
    /// Kernel ring buffer size in bytes: a power of two, at least 4096.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,
    /// Events that may wait for stdout before new ones are counted as lost.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_size: u32,
}

/// `--capture-bytes` when not given.
pub const DEFAULT_CAPTURE_BYTES: u32 = 1024;

/// `10s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration '{s}' (e.g. 10s, 500ms)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("invalid duration unit in '{s}' (use ms, s or m)")),
    };
    if d.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    Ok(d)
}

/// An `http://` or `https://` URL with a host.
fn parse_otlp_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(s.trim_end_matches('/').to_string()),
        _ => Err(format!("'{s}' is not an http:// or https:// URL with a host")),
    }
}

/// `name=value`, the value percent-decoded (as OTEL_EXPORTER_OTLP_HEADERS
/// has it); names are lower-cased (HTTP/2 and gRPC metadata require it).
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("header '{s}' is not name=value"))?;
    let name = name.trim().to_ascii_lowercase();
    let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid_name {
        return Err(format!("invalid header name '{name}'"));
    }
    let value = percent_decode(value.trim()).ok_or_else(|| format!("invalid percent-encoding in the value of header '{name}'"))?;
    if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!("control characters in the value of header '{name}'"));
    }
    Ok((name, value))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl RunArgs {
    /// Checks that clap cannot express; the message is for the user.
    pub fn validate(&self) -> Result<(), String> {
        if self.format == Format::None && self.metrics_listen.is_none() && self.otlp_endpoint.is_none() {
            return Err("--output none needs --metrics-listen or --otlp-endpoint (else the agent reports nothing)".into());
        }
        if self.otlp_endpoint.is_none() && (self.otlp_ca_file.is_some() || !self.otlp_header.is_empty()) {
            return Err("--otlp-header and --otlp-ca-file need --otlp-endpoint".into());
        }
        Ok(())
    }
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("invalid size '{s}'"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("ring buffer size {n} must be a power of two and at least 4096"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn defaults_and_lists() {
        let cli = Cli::try_parse_from(["masdeepflow"]).unwrap();
        assert_eq!(cli.run.events, vec![Family::Exec, Family::Exit, Family::Tcp, Family::Flow, Family::Http, Family::Mysql]);
        assert_eq!(cli.run.capture_bytes, 1024);
        assert_eq!((cli.run.sql_bytes, cli.run.sql_redact), (4096, false));
        let cli = Cli::try_parse_from(["masdeepflow", "--events", "mysql", "--sql-bytes", "16384", "--sql-redact"]).unwrap();
        assert_eq!((cli.run.events.as_slice(), cli.run.sql_bytes, cli.run.sql_redact), (&[Family::Mysql][..], 16384, true));
        assert!(Cli::try_parse_from(["masdeepflow", "--sql-bytes", "16385"]).is_err());
        assert!(Cli::try_parse_from(["masdeepflow", "--sql-bytes", "32"]).is_err());
        assert!(Cli::try_parse_from(["masdeepflow", "--capture-bytes", "16385"]).is_err());
        assert_eq!(Cli::try_parse_from(["masdeepflow", "--capture-bytes", "16384"]).unwrap().run.capture_bytes, 16384);
        assert_eq!(Cli::try_parse_from(["masdeepflow", "--port", "80,8080"]).unwrap().run.port, vec![80, 8080]);
        assert_eq!(cli.run.flow_interval, Duration::from_secs(10));
        let cli = Cli::try_parse_from(["masdeepflow", "--events", "exec,tcp", "--pid", "1,2", "--format", "text"]).unwrap();
        assert_eq!(cli.run.events, vec![Family::Exec, Family::Tcp]);
        assert_eq!(cli.run.pid, vec![1, 2]);
        assert_eq!(cli.run.format, Format::Text);
        assert!(Cli::try_parse_from(["masdeepflow", "--events", "dns"]).is_err());
        assert!(Cli::try_parse_from(["masdeepflow", "--ring-buffer-size", "5000"]).is_err());
        assert!(matches!(Cli::try_parse_from(["masdeepflow", "check"]).unwrap().command, Some(Command::Check)));
    }

    #[test]
    fn output_metrics_and_otlp_options() {
        let run = |args: &[&str]| Cli::try_parse_from(std::iter::once("masdeepflow").chain(args.iter().copied())).map(|c| c.run);
        let r = run(&[]).unwrap();
        assert_eq!((r.format, r.metrics_listen, r.metrics_max_series), (Format::Json, None, 2000));
        assert_eq!(r.otlp_signals, vec![OtlpSignal::Metrics, OtlpSignal::Logs, OtlpSignal::Traces]);
        assert_eq!(run(&["--format", "text"]).unwrap().format, Format::Text);
        let r = run(&["--output", "none", "--metrics-listen", "127.0.0.1:9464"]).unwrap();
        assert_eq!(r.format, Format::None);
        assert_eq!(r.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(r.validate(), Ok(()));
        assert!(run(&["--output", "none"]).unwrap().validate().unwrap_err().contains("--metrics-listen"));
        assert!(run(&["--metrics-listen", "9464"]).is_err(), "an address with a host");
        let r = run(&[
            "--otlp-endpoint",
            "https://otel.example:4317/",
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-header",
            "Authorization=Bearer%20x,x-tenant=a",
        ])
        .unwrap();
        assert_eq!(r.otlp_endpoint.as_deref(), Some("https://otel.example:4317"));
        assert_eq!(r.otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(r.otlp_header, vec![("authorization".into(), "Bearer x".into()), ("x-tenant".into(), "a".into())]);
        assert!(run(&["--otlp-endpoint", "otel:4317"]).is_err());
        assert!(run(&["--otlp-endpoint", "http://h", "--otlp-header", "novalue"]).is_err());
        assert!(run(&["--otlp-endpoint", "http://h", "--otlp-header", "a=%zz"]).is_err());
        assert!(run(&["--otlp-header", "a=b"]).unwrap().validate().is_err());
    }
}
