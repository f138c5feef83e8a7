//! A `Pod` reduced to what the index keeps: its identity, node, labels and
//! the bare ids of its containers (current and last terminated instances).
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::normalize_container_id;

#[derive(Debug)]
pub(crate) struct PodBase {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) pod_uid: String,
    pub(crate) node: String,
    pub(crate) labels: BTreeMap<String, String>,
}

/// A pod reduced to what the index keeps, built outside the lock.
#[derive(Debug)]
pub(crate) struct PodRecord {
    pub(crate) key: String,
    pub(crate) base: Arc<PodBase>,
    /// (bare id, container name)
    pub(crate) containers: Vec<(String, String)>,
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let st = pod.status.as_ref();
    let all = |f: fn(&k8s_openapi::api::core::v1::PodStatus) -> &Option<Vec<ContainerStatus>>| {
        st.and_then(|s| f(s).as_ref()).into_iter().flatten()
    };
    all(|s| &s.container_statuses).chain(all(|s| &s.init_container_statuses)).chain(all(|s| &s.ephemeral_container_statuses))
}

pub(crate) fn record_from_pod(pod: &Pod, fallback_node: &str) -> Option<PodRecord> {
    let md = &pod.metadata;
    let namespace = md.namespace.clone().unwrap_or_default();
    let name = md.name.clone().unwrap_or_default();
    let uid = md.uid.clone().unwrap_or_default();
    let key = if !uid.is_empty() {
        uid.clone()
    } else if !name.is_empty() {
        format!("{namespace}/{name}")
    } else {
        return None;
    };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| fallback_node.to_string());
    let mut containers = Vec::new();
    let mut seen = HashSet::new();
    for cs in statuses(pod) {
        let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.container_id.as_deref());
        for raw in [cs.container_id.as_deref(), last].into_iter().flatten() {
            let id = normalize_container_id(raw);
            if !id.is_empty() && seen.insert(id.to_string()) {
                containers.push((id.to_string(), cs.name.clone()));
            }
        }
    }
    Some(PodRecord {
        key,
        base: Arc::new(PodBase { namespace, pod: name, pod_uid: uid, node, labels: md.labels.clone().unwrap_or_default() }),
        containers,
    })
}
