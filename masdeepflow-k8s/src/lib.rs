//! Kubernetes context for masdeepflow events.
//!
//! This crate watches the pods of **one node** on the kube-apiserver and keeps
//! an in-memory index that answers "which pod is container `<id>`?" for the
//! agent's event enrichment.
//!
//! * [`PodIndex`] is the index: a cheap-to-clone handle (an `Arc` inside).
//!   [`PodIndex::lookup`] is synchronous, takes a read lock held only for two
//!   hash-map look-ups, returns metadata shared by all events of the
//!   container (an `Arc`, built when the pod is indexed) and never waits on
//!   the network: while the API server is unreachable it simply returns `None`.
//! * [`spawn_watcher`] / [`run_watcher`] keep the index up to date with
//!   `kube::runtime::watcher`: list the node's pods
//!   (`fieldSelector=spec.nodeName=<node>`, from the apiserver's cache), then
//!   watch from the list's `resourceVersion` with bookmarks, applying
//!   `ADDED` / `MODIFIED` / `DELETED`. A `410 Gone` (expired
//!   resourceVersion), either as an `ERROR` event inside the stream or as the
//!   HTTP status of the watch request, causes a relist. Failures are retried
//!   with kube-runtime's capped exponential backoff; each outage is logged
//!   once with `log::warn!` (then `debug!` per retry, and one `warn!` again
//!   when the API server is back). The watcher never panics and never
//!   returns.
//!
//! # Container ids
//! `status.containerStatuses[].containerID`, `initContainerStatuses` and
//! `ephemeralContainerStatuses` are indexed, plus the `containerID` of each
//! status's `lastState.terminated` (the previous instance of a restarted
//! container, so late events of that instance still resolve). The API gives
//! ids as `containerd://<64hex>`, `cri-o://<64hex>` or `docker://<64hex>`; the
//! index is keyed by the bare id (everything after `://`), see
//! [`normalize_container_id`]. `lookup` accepts either form.
//!
//! # Deleted pods and bounds
//! A deleted pod (a `DELETED` event, or a pod missing from a relist) stays
//! resolvable for [`WatchConfig::grace`] (default 60 s), then it is removed.
//! The index holds at most [`PodIndex::max_pods`] pods ([`DEFAULT_MAX_PODS`],
//! 10,000, by default; a node runs at most a few hundred). When a *new* pod
//! arrives while the index is full, the deleted pod closest to expiry is
//! evicted early; if every indexed pod is live, the new pod is **not indexed**
//! (its containers resolve to `None`), [`IndexStats::dropped`] counts it and a
//! warning is logged once. Pods already indexed are always updated.
//!
//! # Wiring into the agent (tokio current-thread runtime)
//! The runtime needs its IO and time drivers (`enable_all()`); the watcher is
//! one task, `lookup` is a plain synchronous call usable from any thread.
//!
//! ```no_run
//! use masdeepflow_k8s::{ClientSource, PodIndex, WatchConfig, node_name_from_env, spawn_watcher};
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let index = PodIndex::new();
//!     // `--node-name` wins over NODE_NAME; without either, run without enrichment.
//!     let watcher = node_name_from_env().map(|node| {
//!         spawn_watcher(WatchConfig::new(node, ClientSource::Infer), index.clone())
//!     });
//!     // ... in the event loop, never blocking:
//!     if let Some(meta) = index.lookup("containerd://5be1ecc7935f1dd85635d4feedaf660594030253cc97c9e9ca3819ffeac36b65") {
//!         println!("{}/{} {}", meta.namespace, meta.pod, meta.container);
//!     }
//!     // ... at shutdown:
//!     if let Some(w) = watcher {
//!         w.abort();
//!     }
//! });
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

mod index;
mod pod_record;
mod services;
mod state;
mod watch;

pub use index::{IndexStats, PodIndex};
pub use services::{ClusterService, cluster_services, spawn_service_watcher};
pub use watch::{ClientSource, InvalidUrl, WatchConfig, run_watcher, spawn_watcher};

/// Default maximum number of pods held by a [`PodIndex`].
pub const DEFAULT_MAX_PODS: usize = 10_000;

/// Default time a deleted pod stays resolvable.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// Kubernetes metadata of the pod a container belongs to (serialised as
/// the agent's `k8s` object).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodMeta {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub pod: String,
    /// `metadata.uid`.
    pub pod_uid: String,
    /// Name of the container (from the container status) within the pod.
    pub container: String,
    /// `spec.nodeName` (falls back to the watched node's name).
    pub node: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

/// Strips a `<runtime>://` prefix (`containerd://`, `cri-o://`, `docker://`,
/// ...) and surrounding whitespace from a container id.
///
/// ```
/// use masdeepflow_k8s::normalize_container_id;
/// assert_eq!(normalize_container_id("cri-o://abc"), "abc");
/// assert_eq!(normalize_container_id("abc"), "abc");
/// ```
pub fn normalize_container_id(raw: &str) -> &str {
    let raw = raw.trim();
    match raw.find("://") {
        Some(pos) => &raw[pos + 3..],
        None => raw,
    }
}

/// The node name from the `NODE_NAME` environment variable (as set by the
/// downward API, `fieldRef: spec.nodeName`), if set and non-empty.
pub fn node_name_from_env() -> Option<String> {
    let v = std::env::var("NODE_NAME").ok()?;
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        assert_eq!(normalize_container_id("containerd://abc"), "abc");
        assert_eq!(normalize_container_id("docker://abc "), "abc");
        assert_eq!(normalize_container_id("abc"), "abc");
        assert_eq!(normalize_container_id(""), "");
    }
}
