//! Kubernetes Services as gateway services: with `--node-name`, every
//! Service's cluster IP and port (ClusterIP, NodePort and LoadBalancer
//! types) becomes a service whose backends are its ready endpoints,
//! updated as Services and EndpointSlices change (`masdeepflow-k8s`).
//! Round robin, or Maglev by network namespace for `sessionAffinity:
//! ClientIP` (a pod's IP is its network namespace).
use std::{net::SocketAddr, path::PathBuf};

use masdeepflow_gateway::{Algorithm, BackendSpec, HashKey, Protocol, ServiceSpec};
use masdeepflow_k8s::{ClientSource, ClusterService};
use tokio::{sync::mpsc, task::JoinHandle};

pub struct KubeServices {
    pub task: JoinHandle<()>,
    pub updates: mpsc::UnboundedReceiver<Vec<ServiceSpec>>,
}

/// Starts watching; `scope` limits the services to a cgroup subtree.
pub fn spawn(scope: Option<PathBuf>) -> KubeServices {
    let (tx, mut raw) = mpsc::unbounded_channel();
    let watcher = masdeepflow_k8s::spawn_service_watcher(ClientSource::Infer, tx);
    let (specs_tx, updates) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _watcher = AbortOnDrop(watcher);
        while let Some(services) = raw.recv().await {
            let specs = services.iter().filter_map(|s| spec(s, scope.clone())).collect();
            if specs_tx.send(specs).is_err() {
                break;
            }
        }
    });
    KubeServices { task, updates }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A cluster service as a gateway service (None for ports it cannot serve).
pub fn spec(s: &ClusterService, scope: Option<PathBuf>) -> Option<ServiceSpec> {
    let protocol = match s.protocol.as_str() {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        _ => return None,
    };
    let vip = SocketAddr::new(s.cluster_ip, s.port);
    let backends = s
        .endpoints
        .iter()
        .filter(|e| e.is_ipv4() == vip.is_ipv4() && e.port() != 0)
        .map(|&address| BackendSpec { address, weight: 1 })
        .collect();
    let mut spec = ServiceSpec::new(s.display_name(), vip, protocol, backends);
    if s.client_ip_affinity {
        spec.algorithm = Algorithm::Maglev;
        spec.hash_key = HashKey::Netns;
    }
    spec.scope = scope;
    Some(spec)
}
