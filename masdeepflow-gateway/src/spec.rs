//! What a service is once its configuration has been checked, whichever
//! source it came from (the TOML file or Kubernetes).
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// IPPROTO number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => masdeepflow_common::gateway::PROTO_TCP,
            Protocol::Udp => masdeepflow_common::gateway::PROTO_UDP,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each healthy backend in turn (weights must be 1).
    RoundRobin,
    /// In turn, in proportion to the weights, spread smoothly.
    Weighted,
    /// Uniformly at random, in proportion to the weights.
    Random,
    /// Consistent hashing of the client over a Maglev lookup table.
    Maglev,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::Weighted => "weighted",
            Algorithm::Random => "random",
            Algorithm::Maglev => "maglev",
        }
    }
}

/// What identifies "a client" to Maglev at connect time (the source port
/// is not chosen yet then, and every local process shares the host's
/// address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// The connecting socket's cgroup: a container, a pod's container, a
    /// systemd service (default).
    Cgroup,
    /// The connecting process (thread-group id).
    Process,
    /// The network namespace (a pod's IP, as Kubernetes' ClientIP affinity).
    Netns,
}

impl HashKey {
    pub fn name(self) -> &'static str {
        match self {
            HashKey::Cgroup => "cgroup",
            HashKey::Process => "process",
            HashKey::Netns => "netns",
        }
    }
}

/// What happens to open connections to a backend that leaves the service
/// (removed by a reload or from Kubernetes, or marked down by health).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drain {
    /// They stay open (default).
    Keep,
    /// They are reset (sock_diag destroy).
    Reset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    /// A TCP connect to the backend's address succeeds within the timeout.
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HealthSpec {
    pub kind: HealthKind,
    #[serde(serialize_with = "millis")]
    pub interval: Duration,
    #[serde(serialize_with = "millis")]
    pub timeout: Duration,
    /// Consecutive failures that take an up backend out of rotation.
    pub unhealthy_after: u32,
    /// Consecutive successes that bring a down backend back.
    pub healthy_after: u32,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendSpec {
    pub address: SocketAddr,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    pub hash_key: HashKey,
    pub backends: Vec<BackendSpec>,
    pub health: Option<HealthSpec>,
    /// Only sockets in this cgroup2 directory (and below) are translated.
    pub scope: Option<PathBuf>,
    pub drain: Drain,
}

impl ServiceSpec {
    /// A service with the defaults of the TOML file.
    pub fn new(name: impl Into<String>, vip: SocketAddr, protocol: Protocol, backends: Vec<BackendSpec>) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            vip,
            protocol,
            algorithm: Algorithm::RoundRobin,
            hash_key: HashKey::Cgroup,
            backends,
            health: None,
            scope: None,
            drain: Drain::Keep,
        }
    }
}
