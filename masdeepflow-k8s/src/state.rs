//! The index's tables: pods by key and container ids to their pod, kept
//! consistent under one lock by [`PodIndex`](crate::PodIndex).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::PodMeta;
use crate::pod_record::{PodBase, PodRecord};

#[derive(Debug)]
pub(crate) struct PodEntry {
    pub(crate) base: Arc<PodBase>,
    /// Bare container ids this pod owns in `State::containers`.
    pub(crate) ids: Vec<String>,
    /// `Some` once the pod is deleted: it resolves until then.
    pub(crate) expires_at: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct ContainerRef {
    pub(crate) pod_key: String,
    /// What a lookup returns, built when the pod is indexed so that a
    /// lookup (one per enriched event) only clones an `Arc`.
    pub(crate) meta: Arc<PodMeta>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) pods: HashMap<String, PodEntry>,
    pub(crate) containers: HashMap<String, ContainerRef>,
}

impl State {
    fn unlink_ids(&mut self, key: &str, ids: &[String]) {
        for id in ids {
            if self.containers.get(id).is_some_and(|c| c.pod_key == key) {
                self.containers.remove(id);
            }
        }
    }

    fn remove_pod(&mut self, key: &str) {
        if let Some(entry) = self.pods.remove(key) {
            self.unlink_ids(key, &entry.ids);
        }
    }

    /// Evicts the deleted pod closest to expiry. Returns false if every pod is live.
    fn evict_one_deleted(&mut self) -> bool {
        let victim = self.pods.iter().filter_map(|(k, e)| e.expires_at.map(|t| (t, k))).min().map(|(_, k)| k.clone());
        match victim {
            Some(k) => {
                self.remove_pod(&k);
                true
            }
            None => false,
        }
    }

    /// Inserts or updates a pod. Returns false if it was not indexed because
    /// the index is full of live pods.
    pub(crate) fn upsert(&mut self, rec: PodRecord, expires_at: Option<Instant>, max_pods: usize) -> bool {
        let PodRecord { key, base, containers } = rec;
        let new_ids: Vec<String> = containers.iter().map(|(id, _)| id.clone()).collect();
        if let Some(entry) = self.pods.get_mut(&key) {
            let old_ids = std::mem::replace(&mut entry.ids, new_ids);
            entry.base = base.clone();
            entry.expires_at = expires_at;
            let keep: HashSet<&str> = containers.iter().map(|(id, _)| id.as_str()).collect();
            let stale: Vec<String> = old_ids.into_iter().filter(|id| !keep.contains(id.as_str())).collect();
            self.unlink_ids(&key, &stale);
        } else {
            if self.pods.len() >= max_pods && !self.evict_one_deleted() {
                return false;
            }
            self.pods.insert(key.clone(), PodEntry { base: base.clone(), ids: new_ids, expires_at });
        }
        for (id, name) in containers {
            let meta = Arc::new(PodMeta {
                namespace: base.namespace.clone(),
                pod: base.pod.clone(),
                pod_uid: base.pod_uid.clone(),
                container: name,
                node: base.node.clone(),
                labels: base.labels.clone(),
            });
            self.containers.insert(id, ContainerRef { pod_key: key.clone(), meta });
        }
        true
    }

    pub(crate) fn purge(&mut self, now: Instant) -> usize {
        let expired: Vec<String> =
            self.pods.iter().filter(|(_, e)| e.expires_at.is_some_and(|t| t <= now)).map(|(k, _)| k.clone()).collect();
        for k in &expired {
            self.remove_pod(k);
        }
        expired.len()
    }
}
