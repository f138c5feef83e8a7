//! The gateway's TOML file:
//!
//! ```toml
//! [[service]]
//! name = "web"
//! vip = "127.0.0.100:80"          # IPv4, or "[addr]:port" for IPv6
//! protocol = "tcp"                # "tcp" (default) or "udp"
//! algorithm = "round_robin"       # "round_robin" (default), "weighted", "random", "maglev"
//! backends = [ { address = "127.0.0.1:18081", weight = 1 }, { address = "127.0.0.1:18082", weight = 3 } ]
//! health = { kind = "tcp", interval = "1s", timeout = "300ms", unhealthy_after = 2, healthy_after = 2 }
//! # hash = "cgroup"               # maglev only: "cgroup" (default), "process", "netns"
//! # scope = "/sys/fs/cgroup/my.slice"   # only sockets of this cgroup subtree
//! # drain = "keep"                # or "reset": reset open connections to a backend that leaves
//! ```
//!
//! Every error is one line naming the line of the file it is about.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    ops::Range,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::spec::{Algorithm, BackendSpec, Drain, HashKey, HealthKind, HealthSpec, Protocol, ServiceSpec};

/// Most backends of one service.
pub const MAX_BACKENDS_PER_SERVICE: usize = 1024;
/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 1000;
/// Most rotation slots weights may expand to, per service (after dividing
/// the weights by their greatest common divisor).
pub const MAX_WEIGHT_SLOTS: u32 = 16384;

/// A configuration error: `line` (1-based) of the file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ConfigError {
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    vip: Spanned<String>,
    protocol: Option<Spanned<String>>,
    algorithm: Option<Spanned<String>>,
    hash: Option<Spanned<String>>,
    backends: Spanned<Vec<Spanned<RawBackend>>>,
    health: Option<Spanned<RawHealth>>,
    scope: Option<Spanned<String>>,
    drain: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<String>,
    weight: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    kind: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    unhealthy_after: Option<Spanned<i64>>,
    healthy_after: Option<Spanned<i64>>,
}

/// The checked services of a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub services: Vec<ServiceSpec>,
}

/// Parses and checks a configuration file's text.
pub fn parse_config(text: &str) -> Result<Config, ConfigError> {
    let lines = Lines::new(text);
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| lines.of(s.start));
        ConfigError { line, message: one_line(e.message()) }
    })?;
    let mut services = Vec::with_capacity(raw.service.len());
    // (vip, protocol) -> name of the service that has it.
    let mut vips: HashMap<(SocketAddr, Protocol), String> = HashMap::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for service in raw.service {
        let at = lines.of(service.span().start);
        let spec = check_service(service.into_inner(), at, &lines)?;
        if let Some(first) = names.get(&spec.name) {
            return Err(ConfigError { line: at, message: format!("duplicate service name \"{}\" (first on line {first})", spec.name) });
        }
        names.insert(spec.name.clone(), at);
        if let Some(other) = vips.get(&(spec.vip, spec.protocol)) {
            return Err(ConfigError {
                line: at,
                message: format!("duplicate VIP {} ({}): service \"{other}\" has it already", spec.vip, spec.protocol.name()),
            });
        }
        vips.insert((spec.vip, spec.protocol), spec.name.clone());
        services.push((at, spec));
    }
    // A backend that is itself a VIP would be translated twice.
    for (at, spec) in &services {
        for b in &spec.backends {
            if let Some(other) = vips.get(&(b.address, spec.protocol)) {
                return Err(ConfigError {
                    line: *at,
                    message: format!("backend {} of \"{}\" is the VIP of service \"{other}\" (VIPs are not chained)", b.address, spec.name),
                });
            }
        }
    }
    Ok(Config { services: services.into_iter().map(|(_, s)| s).collect() })
}

fn check_service(raw: RawService, at: usize, lines: &Lines) -> Result<ServiceSpec, ConfigError> {
    let err = |span: Range<usize>, message: String| ConfigError { line: lines.of(span.start), message };
    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty() || name.len() > 253 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c)) {
        return Err(err(raw.name.span(), format!("invalid service name \"{}\" (1-253 of A-Z a-z 0-9 - _ . / :)", raw.name.get_ref())));
    }
    let vip = parse_address(raw.vip.get_ref()).map_err(|m| err(raw.vip.span(), format!("vip: {m}")))?;
    let protocol = match raw.protocol.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
        None | Some(("tcp", _)) => Protocol::Tcp,
        Some(("udp", _)) => Protocol::Udp,
        Some((other, span)) => return Err(err(span, format!("unknown protocol \"{other}\" (tcp or udp)"))),
    };
    let algorithm = match raw.algorithm.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("round_robin", _)) => Algorithm::RoundRobin,
        Some(("weighted", _)) => Algorithm::Weighted,
        Some(("random", _)) => Algorithm::Random,
        Some(("maglev", _)) => Algorithm::Maglev,
        Some((other, span)) => {
            return Err(err(span, format!("unknown algorithm \"{other}\" (round_robin, weighted, random or maglev)")));
        }
    };
    let hash_key = match raw.hash.as_ref().map(|h| (h.get_ref().as_str(), h.span())) {
        None => HashKey::Cgroup,
        Some((_, span)) if algorithm != Algorithm::Maglev => {
            return Err(err(span, "hash applies to algorithm \"maglev\" only".into()));
        }
        Some(("cgroup", _)) => HashKey::Cgroup,
        Some(("process", _)) => HashKey::Process,
        Some(("netns", _)) => HashKey::Netns,
        Some((other, span)) => return Err(err(span, format!("unknown hash \"{other}\" (cgroup, process or netns)"))),
    };
    let backends_span = raw.backends.span();
    let raw_backends = raw.backends.into_inner();
    if raw_backends.is_empty() {
        return Err(err(backends_span, format!("service \"{name}\" has no backends")));
    }
    if raw_backends.len() > MAX_BACKENDS_PER_SERVICE {
        return Err(err(backends_span, format!("more than {MAX_BACKENDS_PER_SERVICE} backends")));
    }
    let mut backends: Vec<BackendSpec> = Vec::with_capacity(raw_backends.len());
    for b in raw_backends {
        let b = b.into_inner();
        let address = parse_address(b.address.get_ref()).map_err(|m| err(b.address.span(), format!("backend address: {m}")))?;
        if address.is_ipv4() != vip.is_ipv4() {
            return Err(err(b.address.span(), format!("backend {address} and VIP {vip} are not of the same IP version")));
        }
        if backends.iter().any(|o| o.address == address) {
            return Err(err(b.address.span(), format!("backend {address} is listed twice")));
        }
        let weight = match &b.weight {
            None => 1,
            Some(w) => match u32::try_from(*w.get_ref()) {
                Ok(v @ 1..=MAX_WEIGHT) => v,
                _ => return Err(err(w.span(), format!("weight {} out of range (1-{MAX_WEIGHT})", w.get_ref()))),
            },
        };
        if weight != 1 && matches!(algorithm, Algorithm::RoundRobin | Algorithm::Maglev) {
            let span = b.weight.as_ref().map_or(b.address.span(), |w| w.span());
            return Err(err(span, format!("weights need algorithm \"weighted\" or \"random\", not \"{}\"", algorithm.name())));
        }
        backends.push(BackendSpec { address, weight });
    }
    let slots = crate::rotation::weight_slots(&backends.iter().map(|b| b.weight).collect::<Vec<_>>());
    if slots > MAX_WEIGHT_SLOTS {
        return Err(err(backends_span, format!("weights expand to {slots} slots (at most {MAX_WEIGHT_SLOTS}): use coarser weights")));
    }
    let health = raw.health.map(|h| check_health(h, lines)).transpose()?;
    let scope = match raw.scope {
        None => None,
        Some(s) => {
            let path = PathBuf::from(s.get_ref());
            if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(err(s.span(), format!("scope \"{}\" must be an absolute cgroup2 path without ..", s.get_ref())));
            }
            Some(path)
        }
    };
    let drain = match raw.drain.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
        None | Some(("keep", _)) => Drain::Keep,
        Some(("reset", _)) => Drain::Reset,
        Some((other, span)) => return Err(err(span, format!("unknown drain \"{other}\" (keep or reset)"))),
    };
    let _ = at;
    Ok(ServiceSpec { name, vip, protocol, algorithm, hash_key, backends, health, scope, drain })
}

fn check_health(raw: Spanned<RawHealth>, lines: &Lines) -> Result<HealthSpec, ConfigError> {
    let err = |span: Range<usize>, message: String| ConfigError { line: lines.of(span.start), message };
    let span = raw.span();
    let raw = raw.into_inner();
    let kind = match raw.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
        None | Some(("tcp", _)) => HealthKind::Tcp,
        Some((other, span)) => return Err(err(span, format!("unknown health kind \"{other}\" (tcp)"))),
    };
    let duration = |d: &Option<Spanned<String>>, default: Duration, what: &str| match d {
        None => Ok(default),
        Some(d) => parse_duration(d.get_ref()).map_err(|m| err(d.span(), format!("health {what}: {m}"))),
    };
    let interval = duration(&raw.interval, Duration::from_secs(5), "interval")?;
    let timeout = duration(&raw.timeout, Duration::from_secs(1).min(interval), "timeout")?;
    if timeout > interval {
        return Err(err(span, format!("health timeout {timeout:?} is longer than the interval {interval:?}")));
    }
    let count = |c: &Option<Spanned<i64>>, default: u32, what: &str| match c {
        None => Ok(default),
        Some(c) => match u32::try_from(*c.get_ref()) {
            Ok(v @ 1..=100) => Ok(v),
            _ => Err(err(c.span(), format!("health {what} {} out of range (1-100)", c.get_ref()))),
        },
    };
    let unhealthy_after = count(&raw.unhealthy_after, 3, "unhealthy_after")?;
    let healthy_after = count(&raw.healthy_after, 2, "healthy_after")?;
    Ok(HealthSpec { kind, interval, timeout, unhealthy_after, healthy_after })
}

/// `1.2.3.4:80` or `[::1]:80`; the port must not be 0, the address not
/// unspecified or multicast.
pub fn parse_address(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.trim().parse().map_err(|_| format!("\"{s}\" is not an address with a port (1.2.3.4:80 or [::1]:80)"))?;
    if addr.port() == 0 {
        return Err(format!("\"{s}\" has port 0"));
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(format!("\"{s}\" is not a unicast address"));
    }
    if let SocketAddr::V6(v6) = addr
        && v6.scope_id() != 0
    {
        return Err(format!("\"{s}\": scoped IPv6 addresses are not supported"));
    }
    Ok(addr)
}

/// `300ms`, `1s`, `2m`: at least 10 ms, at most an hour.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("\"{s}\" is not a duration (e.g. 300ms, 1s, 2m)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("\"{s}\": unit must be ms, s or m")),
    };
    if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
        return Err(format!("\"{s}\" out of range (10ms-60m)"));
    }
    Ok(d)
}

/// The scope's path relative to a cgroup2 mount at `root`, when inside it.
pub fn scope_in(root: &Path, scope: &Path) -> Option<PathBuf> {
    scope.strip_prefix(root).ok().map(Path::to_path_buf)
}

fn one_line(message: &str) -> String {
    message.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Byte offset to 1-based line number.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    fn of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[service]]
name = "web"
vip = "127.0.0.100:80"
protocol = "tcp"
algorithm = "weighted"
backends = [ { address = "127.0.0.1:18081", weight = 1 }, { address = "127.0.0.1:18082", weight = 3 } ]
health = { kind = "tcp", interval = "1s", timeout = "300ms", unhealthy_after = 2, healthy_after = 2 }

[[service]]
name = "dns"
vip = "[fd00::53]:53"
protocol = "udp"
algorithm = "maglev"
hash = "process"
backends = [ { address = "[fd00::1]:5353" } ]
scope = "/sys/fs/cgroup/test.slice"
drain = "reset"
"#;

    fn error(text: &str) -> String {
        parse_config(text).expect_err("must fail").to_string()
    }

    #[test]
    fn the_example_parses() {
        let c = parse_config(EXAMPLE).unwrap();
        assert_eq!(c.services.len(), 2);
        let web = &c.services[0];
        assert_eq!(web.name, "web");
        assert_eq!(web.vip, "127.0.0.100:80".parse().unwrap());
        assert_eq!(web.algorithm, Algorithm::Weighted);
        assert_eq!(web.backends[1], BackendSpec { address: "127.0.0.1:18082".parse().unwrap(), weight: 3 });
        assert_eq!(
            web.health,
            Some(HealthSpec {
                kind: HealthKind::Tcp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(300),
                unhealthy_after: 2,
                healthy_after: 2
            })
        );
        assert_eq!(web.drain, Drain::Keep);
        let dns = &c.services[1];
        assert_eq!(
            (dns.protocol, dns.algorithm, dns.hash_key, dns.drain),
            (Protocol::Udp, Algorithm::Maglev, HashKey::Process, Drain::Reset)
        );
        assert_eq!(dns.scope.as_deref(), Some(Path::new("/sys/fs/cgroup/test.slice")));
        assert_eq!(dns.health, None);
    }

    #[test]
    fn empty_file_has_no_services() {
        assert_eq!(parse_config("").unwrap().services, vec![]);
        assert_eq!(parse_config("# nothing\n").unwrap().services, vec![]);
    }

    #[test]
    fn errors_name_their_line() {
        let base = "[[service]]\nname = \"a\"\nvip = \"127.0.0.100:80\"\nbackends = [ { address = \"127.0.0.1:1\" } ]\n";
        assert_eq!(
            error(&format!("{base}colour = \"red\"\n")),
            "line 5: unknown field `colour`, expected one of `name`, `vip`, `protocol`, `algorithm`, `hash`, `backends`, `health`, `scope`, `drain`"
        );
        assert_eq!(
            error(&base.replace("127.0.0.100:80", "127.0.0.300:80")),
            "line 3: vip: \"127.0.0.300:80\" is not an address with a port (1.2.3.4:80 or [::1]:80)"
        );
        assert_eq!(
            error(&base.replace("127.0.0.1:1", "127.0.0.1")),
            "line 4: backend address: \"127.0.0.1\" is not an address with a port (1.2.3.4:80 or [::1]:80)"
        );
        assert_eq!(error(&base.replace("[ { address = \"127.0.0.1:1\" } ]", "[]")), "line 4: service \"a\" has no backends");
        let dup = format!("{base}\n{}", base.replace("\"a\"", "\"b\""));
        assert_eq!(error(&dup), "line 6: duplicate VIP 127.0.0.100:80 (tcp): service \"a\" has it already");
        let dup_name = format!("{base}\n{}", base.replace("127.0.0.100", "127.0.0.101"));
        assert_eq!(error(&dup_name), "line 6: duplicate service name \"a\" (first on line 1)");
        assert_eq!(
            error(&base.replace("backends", "backend")),
            "line 4: unknown field `backend`, expected one of `name`, `vip`, `protocol`, `algorithm`, `hash`, `backends`, `health`, `scope`, `drain`"
        );
        assert_eq!(error(&format!("{base}protocol = \"sctp\"\n")), "line 5: unknown protocol \"sctp\" (tcp or udp)");
        assert_eq!(
            error(&format!("{base}algorithm = \"fastest\"\n")),
            "line 5: unknown algorithm \"fastest\" (round_robin, weighted, random or maglev)"
        );
        assert_eq!(error(&format!("{base}hash = \"process\"\n")), "line 5: hash applies to algorithm \"maglev\" only");
        assert_eq!(error(&format!("{base}[[proxy]]\nname = \"x\"\n")), "line 5: unknown field `proxy`, expected `service`");
        assert_eq!(error("[[service]]\nname = \"a\"\n"), "line 1: missing field `vip`");
        assert_eq!(error("[[service]\n"), "line 1: unclosed array table, expected `]`");
    }

    #[test]
    fn semantic_errors() {
        let svc = |extra: &str, backends: &str| {
            format!("[[service]]\nname = \"a\"\nvip = \"127.0.0.100:80\"\n{extra}\nbackends = [ {backends} ]\n")
        };
        assert_eq!(
            error(&svc("", "{ address = \"127.0.0.1:1\", weight = 2 }")),
            "line 5: weights need algorithm \"weighted\" or \"random\", not \"round_robin\""
        );
        assert_eq!(
            error(&svc("algorithm = \"weighted\"", "{ address = \"127.0.0.1:1\", weight = 0 }")),
            "line 5: weight 0 out of range (1-1000)"
        );
        assert_eq!(
            error(&svc("", "{ address = \"[::1]:1\" }")),
            "line 5: backend [::1]:1 and VIP 127.0.0.100:80 are not of the same IP version"
        );
        assert_eq!(
            error(&svc("", "{ address = \"127.0.0.1:1\" }, { address = \"127.0.0.1:1\" }")),
            "line 5: backend 127.0.0.1:1 is listed twice"
        );
        assert_eq!(error(&svc("", "{ address = \"127.0.0.1:0\" }")), "line 5: backend address: \"127.0.0.1:0\" has port 0");
        assert_eq!(error(&svc("", "{ address = \"0.0.0.0:80\" }")), "line 5: backend address: \"0.0.0.0:80\" is not a unicast address");
        assert_eq!(
            error(&svc("scope = \"sys/fs/cgroup\"", "{ address = \"127.0.0.1:1\" }")),
            "line 4: scope \"sys/fs/cgroup\" must be an absolute cgroup2 path without .."
        );
        assert_eq!(error(&svc("drain = \"maybe\"", "{ address = \"127.0.0.1:1\" }")), "line 4: unknown drain \"maybe\" (keep or reset)");
        assert_eq!(
            error(&svc("health = { interval = \"1s\", timeout = \"2s\" }", "{ address = \"127.0.0.1:1\" }")),
            "line 4: health timeout 2s is longer than the interval 1s"
        );
        assert_eq!(
            error(&svc("health = { interval = \"1h\" }", "{ address = \"127.0.0.1:1\" }")),
            "line 4: health interval: \"1h\": unit must be ms, s or m"
        );
        assert_eq!(
            error(&svc("health = { kind = \"icmp\" }", "{ address = \"127.0.0.1:1\" }")),
            "line 4: unknown health kind \"icmp\" (tcp)"
        );
        assert_eq!(
            error(&svc("health = { healthy_after = 0 }", "{ address = \"127.0.0.1:1\" }")),
            "line 4: health healthy_after 0 out of range (1-100)"
        );
        let chained = format!(
            "{}\n[[service]]\nname = \"b\"\nvip = \"127.0.0.101:80\"\nbackends = [ {{ address = \"127.0.0.100:80\" }} ]\n",
            svc("", "{ address = \"127.0.0.1:1\" }")
        );
        assert_eq!(error(&chained), "line 7: backend 127.0.0.100:80 of \"b\" is the VIP of service \"a\" (VIPs are not chained)");
        // The same VIP over TCP and UDP is two services.
        let both = format!(
            "{}\n{}",
            svc("", "{ address = \"127.0.0.1:1\" }"),
            svc("protocol = \"udp\"", "{ address = \"127.0.0.1:1\" }").replace("\"a\"", "\"a-udp\"")
        );
        assert_eq!(parse_config(&both).unwrap().services.len(), 2);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5ms").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn line_numbers() {
        let l = Lines::new("a\nbb\n\nc");
        assert_eq!((l.of(0), l.of(1), l.of(2), l.of(4), l.of(5), l.of(6)), (1, 1, 2, 2, 3, 4));
    }
}
