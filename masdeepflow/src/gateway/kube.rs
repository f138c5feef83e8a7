//! Kubernetes Services as gateway services (filled in below).
use masdeepflow_gateway::ServiceSpec;
use tokio::{sync::mpsc, task::JoinHandle};

pub struct KubeServices {
    pub task: JoinHandle<()>,
    pub updates: mpsc::UnboundedReceiver<Vec<ServiceSpec>>,
}

pub fn spawn(_node: String) -> KubeServices {
    let (_tx, updates) = mpsc::unbounded_channel();
    KubeServices { task: tokio::spawn(async {}), updates }
}
