//! [`PodIndex`]: the node's pods by container id, shared between the
//! watcher that writes it and the agent that reads it.
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use crate::pod_record::{PodRecord, record_from_pod};
use crate::state::State;
use crate::{DEFAULT_MAX_PODS, PodMeta, normalize_container_id};

struct Shared {
    state: RwLock<State>,
    max_pods: usize,
    last_sync_ok: AtomicBool,
    dropped: AtomicU64,
    dropped_warned: AtomicBool,
    relists: AtomicU64,
    synced: watch::Sender<bool>,
    generation: watch::Sender<u64>,
}

/// Point-in-time counters of a [`PodIndex`], for the agent's stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    /// Pods held, including deleted pods still within their grace period.
    pub pods: usize,
    /// Of `pods`, how many are deleted and waiting for their grace period to end.
    pub deleted_pending: usize,
    /// Container ids held.
    pub containers: usize,
    /// New pods that were not indexed because the index was full of live pods.
    pub dropped: u64,
    /// Full lists applied (the first sync included).
    pub lists: u64,
    /// Whether the first list has been applied.
    pub synced: bool,
    /// Whether the last request to the API server (list, watch) succeeded.
    pub last_sync_ok: bool,
}

/// Index of the node's pods by container id. Clone it freely: all clones
/// share the same data.
#[derive(Clone)]
pub struct PodIndex {
    shared: Arc<Shared>,
}

impl fmt::Debug for PodIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodIndex").field("stats", &self.stats()).finish()
    }
}

impl Default for PodIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl PodIndex {
    /// An empty index bounded to [`DEFAULT_MAX_PODS`] pods.
    pub fn new() -> Self {
        Self::with_max_pods(DEFAULT_MAX_PODS)
    }

    /// An empty index bounded to `max_pods` pods (at least 1).
    pub fn with_max_pods(max_pods: usize) -> Self {
        PodIndex {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                max_pods: max_pods.max(1),
                last_sync_ok: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
                dropped_warned: AtomicBool::new(false),
                relists: AtomicU64::new(0),
                synced: watch::Sender::new(false),
                generation: watch::Sender::new(0),
            }),
        }
    }

    /// Maximum number of pods this index holds.
    pub fn max_pods(&self) -> usize {
        self.shared.max_pods
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pod that container `container_id` belongs to. Accepts a bare id
    /// or one with a `<runtime>://` prefix. Never waits on the network and
    /// never allocates: the metadata is shared.
    pub fn lookup(&self, container_id: &str) -> Option<Arc<PodMeta>> {
        let id = normalize_container_id(container_id);
        if id.is_empty() {
            return None;
        }
        let now = Instant::now();
        let state = self.read();
        let cref = state.containers.get(id)?;
        let entry = state.pods.get(&cref.pod_key)?;
        if entry.expires_at.is_some_and(|t| t <= now) {
            return None;
        }
        Some(cref.meta.clone())
    }

    /// Number of pods held (deleted pods within their grace period included).
    pub fn len(&self) -> usize {
        self.read().pods.len()
    }

    /// Whether no pod is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the last request to the API server succeeded.
    pub fn last_sync_ok(&self) -> bool {
        self.shared.last_sync_ok.load(Ordering::Relaxed)
    }

    /// Whether the first list has been applied.
    pub fn is_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Resolves once the first list has been applied (immediately if it
    /// already was). Wrap it in `tokio::time::timeout` to bound the wait.
    pub async fn synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        // The sender lives in `self.shared`, so this cannot fail while `self` lives.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// A receiver of a counter bumped after every change applied to the
    /// index (list, event, purge, status change). Use `changed()` on it to
    /// wait for the watcher's progress instead of sleeping.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Counters for the agent's stats.
    pub fn stats(&self) -> IndexStats {
        let (pods, deleted_pending, containers) = {
            let s = self.read();
            let deleted = s.pods.values().filter(|e| e.expires_at.is_some()).count();
            (s.pods.len(), deleted, s.containers.len())
        };
        IndexStats {
            pods,
            deleted_pending,
            containers,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            lists: self.shared.relists.load(Ordering::Relaxed),
            synced: self.is_synced(),
            last_sync_ok: self.last_sync_ok(),
        }
    }

    /// Applies one `Pod` as if it came from an `ADDED`/`MODIFIED` event.
    /// The watcher does this; it is public for agents that feed pods from
    /// elsewhere (and for tests).
    pub fn apply_pod(&self, pod: &Pod, fallback_node: &str) {
        if let Some(rec) = record_from_pod(pod, fallback_node) {
            let ok = self.write().upsert(rec, None, self.shared.max_pods);
            if !ok {
                self.note_dropped(pod);
            }
            self.bump();
        }
    }

    /// Applies a deleted `Pod`: it stays resolvable for `grace`.
    pub fn apply_deleted(&self, pod: &Pod, fallback_node: &str, grace: Duration) {
        if let Some(rec) = record_from_pod(pod, fallback_node) {
            let expires_at = expiry(grace);
            let mut state = self.write();
            // Only pods we know of: a DELETED for a pod never indexed is a no-op.
            if state.pods.contains_key(&rec.key) {
                state.upsert(rec, Some(expires_at), self.shared.max_pods);
            }
            drop(state);
            self.bump();
        }
    }

    /// Replaces the live set with a full list: listed pods are upserted,
    /// indexed live pods missing from it are treated as deleted (`grace`).
    pub(crate) fn apply_list(&self, pods: &[Pod], fallback_node: &str, grace: Duration) {
        let records: Vec<PodRecord> = pods.iter().filter_map(|p| record_from_pod(p, fallback_node)).collect();
        let listed: HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
        let expires_at = expiry(grace);
        let mut dropped = 0u64;
        {
            let mut state = self.write();
            for (key, entry) in state.pods.iter_mut() {
                if entry.expires_at.is_none() && !listed.contains(key.as_str()) {
                    entry.expires_at = Some(expires_at);
                }
            }
            drop(listed);
            for rec in records {
                if !state.upsert(rec, None, self.shared.max_pods) {
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.warn_dropped_once(dropped);
        }
        self.shared.relists.fetch_add(1, Ordering::Relaxed);
        self.shared.synced.send_if_modified(|s| !std::mem::replace(s, true));
        self.bump();
    }

    /// Removes deleted pods whose grace period is over. The watcher calls
    /// this periodically; `lookup` already ignores expired pods.
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let needs = self.read().pods.values().any(|e| e.expires_at.is_some_and(|t| t <= now));
        if !needs {
            return 0;
        }
        let n = self.write().purge(now);
        if n > 0 {
            self.bump();
        }
        n
    }

    pub(crate) fn set_last_sync_ok(&self, ok: bool) {
        if self.shared.last_sync_ok.swap(ok, Ordering::Relaxed) != ok {
            self.bump();
        }
    }

    fn note_dropped(&self, pod: &Pod) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "kube: pod index full ({} pods), not indexing pod {}/{}",
            self.shared.max_pods,
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        self.warn_dropped_once(1);
    }

    fn warn_dropped_once(&self, n: u64) {
        if !self.shared.dropped_warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "kube: pod index full ({} pods), {n} new pod(s) not indexed; their containers will not be enriched",
                self.shared.max_pods
            );
        }
    }

    fn bump(&self) {
        self.shared.generation.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// `now + grace`, saturating at about a century for absurd graces.
fn expiry(grace: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(grace).or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400))).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, ids: &[(&str, &str)]) -> Pod {
        let statuses: Vec<serde_json::Value> = ids
            .iter()
            .map(|(name, id)| serde_json::json!({"name": name, "containerID": id, "image": "x", "imageID": "", "ready": true, "restartCount": 0}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "labels": {"app": name}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"containerStatuses": statuses}
        }))
        .unwrap()
    }

    #[test]
    fn modified_drops_stale_ids_and_bound_is_enforced() {
        let idx = PodIndex::with_max_pods(2);
        idx.apply_pod(&pod("u1", "a", &[("c", "containerd://111")]), "n1");
        idx.apply_pod(&pod("u1", "a", &[("c", "containerd://222")]), "n1");
        assert!(idx.lookup("111").is_none());
        assert_eq!(idx.lookup("containerd://222").unwrap().container, "c");
        idx.apply_pod(&pod("u2", "b", &[("c", "containerd://333")]), "n1");
        // Full of live pods: a third is dropped.
        idx.apply_pod(&pod("u3", "c", &[("c", "containerd://444")]), "n1");
        assert!(idx.lookup("444").is_none());
        assert_eq!(idx.stats().dropped, 1);
        // A deleted pod is evicted early to make room.
        idx.apply_deleted(&pod("u2", "b", &[("c", "containerd://333")]), "n1", Duration::from_secs(60));
        idx.apply_pod(&pod("u3", "c", &[("c", "containerd://444")]), "n1");
        assert!(idx.lookup("444").is_some());
        assert!(idx.lookup("333").is_none());
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn deleted_expires_and_purges() {
        let idx = PodIndex::new();
        let p = pod("u1", "a", &[("c", "cri-o://111")]);
        idx.apply_pod(&p, "n1");
        idx.apply_deleted(&p, "n1", Duration::ZERO);
        assert!(idx.lookup("111").is_none());
        assert_eq!(idx.purge_expired(), 1);
        assert_eq!(idx.stats(), IndexStats::default());
    }

    /// Lookups share one record per container until the pod changes.
    #[test]
    fn lookups_share_metadata_until_the_pod_changes() {
        let idx = PodIndex::new();
        let mut p = pod("u1", "a", &[("c", "containerd://111")]);
        idx.apply_pod(&p, "n1");
        let first = idx.lookup("111").unwrap();
        assert!(Arc::ptr_eq(&first, &idx.lookup("containerd://111").unwrap()));
        p.metadata.labels.as_mut().unwrap().insert("tier".into(), "web".into());
        idx.apply_pod(&p, "n1");
        let second = idx.lookup("111").unwrap();
        assert_eq!(second.labels.get("tier").map(String::as_str), Some("web"));
        assert_eq!(first.labels.get("tier"), None);
        assert_eq!((second.namespace.as_str(), second.pod.as_str(), second.container.as_str()), ("ns", "a", "c"));
    }

    #[test]
    fn absurd_grace_does_not_panic() {
        let idx = PodIndex::new();
        let p = pod("u1", "a", &[("c", "containerd://111")]);
        idx.apply_pod(&p, "n1");
        idx.apply_deleted(&p, "n1", Duration::MAX);
        assert!(idx.lookup("111").is_some());
    }
}
