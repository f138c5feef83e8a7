//! Kubernetes context for masdeepflow events.
//!
//! This crate watches the pods of **one node** on the kube-apiserver and keeps
//! an in-memory index that answers "which pod is container `<id>`?" for the
//! agent's event enrichment.
//!
//! * [`PodIndex`] is the index: a cheap-to-clone handle (an `Arc` inside).
//!   [`PodIndex::lookup`] is synchronous, takes a read lock held only for two
//!   hash-map look-ups and never waits on the network: while the API server is
//!   unreachable it simply returns `None`.
//! * [`spawn_watcher`] / [`run_watcher`] keep the index up to date: list the
//!   node's pods (`fieldSelector=spec.nodeName=<node>`), then watch from the
//!   list's `resourceVersion`, applying `ADDED` / `MODIFIED` / `DELETED`.
//!   A `410 Gone` (expired resourceVersion), either as the HTTP status of the
//!   watch request or as an `ERROR` event inside the stream, causes a relist.
//!   Any other failure is logged once with `log::warn!` (then `debug!` per
//!   retry, and one `warn!` again when the API server is back) and retried
//!   with capped exponential backoff. The watcher never panics and never
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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

// ---------------------------------------------------------------------------
// Index
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct PodBase {
    namespace: String,
    pod: String,
    pod_uid: String,
    node: String,
    labels: BTreeMap<String, String>,
}

#[derive(Debug)]
struct PodEntry {
    base: Arc<PodBase>,
    /// Bare container ids this pod owns in `State::containers`.
    ids: Vec<String>,
    /// `Some` once the pod is deleted: it resolves until then.
    expires_at: Option<Instant>,
}

#[derive(Debug)]
struct ContainerRef {
    pod_key: String,
    name: String,
}

/// A pod reduced to what the index keeps, built outside the lock.
#[derive(Debug)]
struct PodRecord {
    key: String,
    base: Arc<PodBase>,
    /// (bare id, container name)
    containers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, PodEntry>,
    containers: HashMap<String, ContainerRef>,
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
        let victim = self
            .pods
            .iter()
            .filter_map(|(k, e)| e.expires_at.map(|t| (t, k)))
            .min()
            .map(|(_, k)| k.clone());
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
    fn upsert(&mut self, rec: PodRecord, expires_at: Option<Instant>, max_pods: usize) -> bool {
        let PodRecord {
            key,
            base,
            containers,
        } = rec;
        let new_ids: Vec<String> = containers.iter().map(|(id, _)| id.clone()).collect();
        if let Some(entry) = self.pods.get_mut(&key) {
            let old_ids = std::mem::replace(&mut entry.ids, new_ids);
            entry.base = base;
            entry.expires_at = expires_at;
            let keep: HashSet<&str> = containers.iter().map(|(id, _)| id.as_str()).collect();
            let stale: Vec<String> = old_ids
                .into_iter()
                .filter(|id| !keep.contains(id.as_str()))
                .collect();
            self.unlink_ids(&key, &stale);
        } else {
            if self.pods.len() >= max_pods && !self.evict_one_deleted() {
                return false;
            }
            self.pods.insert(
                key.clone(),
                PodEntry {
                    base,
                    ids: new_ids,
                    expires_at,
                },
            );
        }
        for (id, name) in containers {
            self.containers.insert(
                id,
                ContainerRef {
                    pod_key: key.clone(),
                    name,
                },
            );
        }
        true
    }

    fn purge(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| e.expires_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.remove_pod(k);
        }
        expired.len()
    }
}

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
        f.debug_struct("PodIndex")
            .field("stats", &self.stats())
            .finish()
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
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The pod that container `container_id` belongs to. Accepts a bare id
    /// or one with a `<runtime>://` prefix. Never waits on the network.
    pub fn lookup(&self, container_id: &str) -> Option<PodMeta> {
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
        let b = &entry.base;
        Some(PodMeta {
            namespace: b.namespace.clone(),
            pod: b.pod.clone(),
            pod_uid: b.pod_uid.clone(),
            container: cref.name.clone(),
            node: b.node.clone(),
            labels: b.labels.clone(),
        })
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
    fn apply_list(&self, pods: &[Pod], fallback_node: &str, grace: Duration) {
        let records: Vec<PodRecord> = pods
            .iter()
            .filter_map(|p| record_from_pod(p, fallback_node))
            .collect();
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
        self.shared
            .synced
            .send_if_modified(|s| !std::mem::replace(s, true));
        self.bump();
    }

    /// Removes deleted pods whose grace period is over. The watcher calls
    /// this periodically; `lookup` already ignores expired pods.
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let needs = self
            .read()
            .pods
            .values()
            .any(|e| e.expires_at.is_some_and(|t| t <= now));
        if !needs {
            return 0;
        }
        let n = self.write().purge(now);
        if n > 0 {
            self.bump();
        }
        n
    }

    fn set_last_sync_ok(&self, ok: bool) {
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
        self.shared
            .generation
            .send_modify(|g| *g = g.wrapping_add(1));
    }
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let st = pod.status.as_ref();
    let all = |f: fn(&k8s_openapi::api::core::v1::PodStatus) -> &Option<Vec<ContainerStatus>>| {
        st.and_then(|s| f(s).as_ref()).into_iter().flatten()
    };
    all(|s| &s.container_statuses)
        .chain(all(|s| &s.init_container_statuses))
        .chain(all(|s| &s.ephemeral_container_statuses))
}

fn record_from_pod(pod: &Pod, fallback_node: &str) -> Option<PodRecord> {
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
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| fallback_node.to_string());
    let mut containers = Vec::new();
    let mut seen = HashSet::new();
    for cs in statuses(pod) {
        let last = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.container_id.as_deref());
        for raw in [cs.container_id.as_deref(), last].into_iter().flatten() {
            let id = normalize_container_id(raw);
            if !id.is_empty() && seen.insert(id.to_string()) {
                containers.push((id.to_string(), cs.name.clone()));
            }
        }
    }
    Some(PodRecord {
        key,
        base: Arc::new(PodBase {
            namespace,
            pod: name,
            pod_uid: uid,
            node,
            labels: md.labels.clone().unwrap_or_default(),
        }),
        containers,
    })
}

// ---------------------------------------------------------------------------
// Watcher
// ---------------------------------------------------------------------------

/// Where the watcher gets its API server connection from.
#[derive(Clone)]
pub enum ClientSource {
    /// In-cluster service account if present, else `KUBECONFIG` /
    /// `~/.kube/config` (as `kube::Config::infer`). Inference failures are
    /// retried with backoff like any other failure.
    Infer,
    /// An explicit configuration (tests build one pointing at a local server).
    Config(Box<kube::Config>),
    /// A ready client (e.g. shared with other parts of the agent).
    Client(Client),
}

impl fmt::Debug for ClientSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientSource::Infer => f.write_str("Infer"),
            ClientSource::Config(c) => write!(f, "Config({})", c.cluster_url),
            ClientSource::Client(_) => f.write_str("Client(..)"),
        }
    }
}

/// Error of [`ClientSource::from_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUrl(pub String);

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid API server URL: {}", self.0)
    }
}

impl std::error::Error for InvalidUrl {}

impl ClientSource {
    /// An unauthenticated configuration for `url` (e.g. `http://127.0.0.1:8001`,
    /// a `kubectl proxy`, or a test server).
    pub fn from_url(url: &str) -> Result<Self, InvalidUrl> {
        let uri = url.parse().map_err(|e| InvalidUrl(format!("{url}: {e}")))?;
        Ok(ClientSource::Config(Box::new(kube::Config::new(uri))))
    }
}

/// Configuration of [`spawn_watcher`].
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Node whose pods are watched (`spec.nodeName`).
    pub node_name: String,
    /// How long a deleted pod stays resolvable. Default 60 s.
    pub grace: Duration,
    /// API server connection.
    pub source: ClientSource,
    /// First retry delay after a failure. Default 500 ms.
    pub backoff_initial: Duration,
    /// Retry delay cap. Default 30 s.
    pub backoff_max: Duration,
    /// `timeoutSeconds` asked of each watch request; the watch is then
    /// reopened from the last resourceVersion. Default 290 s. A watch that
    /// stays open 60 s longer than this is considered dead and reopened.
    pub watch_timeout: Duration,
}

impl WatchConfig {
    /// Defaults for `node_name` and `source`.
    pub fn new(node_name: impl Into<String>, source: ClientSource) -> Self {
        WatchConfig {
            node_name: node_name.into(),
            grace: DEFAULT_GRACE,
            source,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(290),
        }
    }
}

/// Spawns [`run_watcher`] on the current tokio runtime (current-thread or
/// multi-thread). Must be called from within a runtime. The task never ends
/// on its own; abort the handle to stop it.
pub fn spawn_watcher(config: WatchConfig, index: PodIndex) -> JoinHandle<()> {
    tokio::spawn(run_watcher(config, index))
}

/// Keeps `index` in sync with the pods of `config.node_name`. Never returns.
pub async fn run_watcher(config: WatchConfig, index: PodIndex) {
    let purge_every = (config.grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let purge_index = index.clone();
    let purge = async move {
        let mut tick = tokio::time::interval(purge_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            purge_index.purge_expired();
        }
    };
    let mut w = Watcher::new(config, index);
    tokio::select! {
        _ = w.run() => {}
        _ = purge => {}
    }
}

struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        // Capped at an hour so that the arithmetic below cannot overflow.
        let max = max.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        let initial = initial.clamp(Duration::from_millis(1), max);
        Backoff {
            initial,
            max,
            current: initial,
            seed: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Next delay: "equal jitter" (between half and all of the current step),
    /// so that many agents restarted together do not retry in lockstep.
    fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        // xorshift64
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = step / 2;
        let frac = (self.seed % 1000) as u32;
        half + half * frac / 1000
    }
}

/// Failure bookkeeping: one warn when things break, one when they recover.
struct Health {
    failures: u64,
    since: Option<Instant>,
}

enum WatchOutcome {
    /// Stream ended (server timeout or our deadline): rewatch from the last rv.
    Ended { quick_and_empty: bool },
    /// resourceVersion expired: relist.
    Gone,
    /// Failure: back off, then rewatch from the last rv.
    Failed,
}

struct Watcher {
    config: WatchConfig,
    index: PodIndex,
    field_selector: String,
    backoff: Backoff,
    health: Health,
}

impl Watcher {
    fn new(config: WatchConfig, index: PodIndex) -> Self {
        let seed = config
            .node_name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        let backoff = Backoff::new(config.backoff_initial, config.backoff_max, seed);
        let field_selector = format!("spec.nodeName={}", config.node_name);
        Watcher {
            config,
            index,
            field_selector,
            backoff,
            health: Health {
                failures: 0,
                since: None,
            },
        }
    }

    fn fail(&mut self, what: &str, err: &dyn fmt::Display) {
        self.health.failures += 1;
        self.index.set_last_sync_ok(false);
        if self.health.failures == 1 {
            self.health.since = Some(Instant::now());
            log::warn!(
                "kube: {what} failed for node {:?}: {err}; pod enrichment degraded, retrying with backoff (up to {:?})",
                self.config.node_name,
                self.config.backoff_max
            );
        } else {
            log::debug!(
                "kube: {what} failed again (attempt {}): {err}",
                self.health.failures
            );
        }
    }

    fn ok(&mut self) {
        if self.health.failures > 0 {
            let secs = self
                .health
                .since
                .map(|s| s.elapsed().as_secs_f64())
                .unwrap_or(0.0);
            log::warn!(
                "kube: API server reachable again after {} failed attempt(s) over {secs:.1}s",
                self.health.failures
            );
        }
        self.health.failures = 0;
        self.health.since = None;
        self.backoff.reset();
        self.index.set_last_sync_ok(true);
    }

    async fn sleep_backoff(&mut self) {
        let d = self.backoff.next_delay();
        log::debug!("kube: retrying in {d:?}");
        tokio::time::sleep(d).await;
    }

    async fn client(&mut self) -> Client {
        loop {
            let res = match &self.config.source {
                ClientSource::Client(c) => return c.clone(),
                ClientSource::Config(cfg) => {
                    Client::try_from((**cfg).clone()).map_err(|e| e.to_string())
                }
                ClientSource::Infer => match kube::Config::infer().await {
                    Ok(cfg) => Client::try_from(cfg).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            match res {
                Ok(c) => return c,
                Err(e) => {
                    self.fail("building the Kubernetes client", &e);
                    self.sleep_backoff().await;
                }
            }
        }
    }

    async fn run(&mut self) {
        let client = self.client().await;
        let api: Api<Pod> = Api::all(client);
        let mut consecutive_gone = 0u32;
        loop {
            // ---- list ----
            let lp = ListParams::default()
                .fields(&self.field_selector)
                .match_any();
            let list = match api.list(&lp).await {
                Ok(list) => list,
                Err(e) => {
                    self.fail("listing pods", &e);
                    self.sleep_backoff().await;
                    continue;
                }
            };
            self.ok();
            let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
            self.index
                .apply_list(&list.items, &self.config.node_name, self.config.grace);
            log::debug!(
                "kube: listed {} pod(s) on node {:?} at resourceVersion {rv}",
                list.items.len(),
                self.config.node_name
            );
            drop(list);

            // ---- watch until the resourceVersion expires ----
            loop {
                match self.watch_once(&api, &mut rv).await {
                    WatchOutcome::Ended { quick_and_empty } => {
                        consecutive_gone = 0;
                        if quick_and_empty {
                            self.sleep_backoff().await;
                        }
                    }
                    WatchOutcome::Failed => self.sleep_backoff().await,
                    WatchOutcome::Gone => {
                        consecutive_gone += 1;
                        log::debug!("kube: resourceVersion {rv} expired (410 Gone), relisting");
                        if consecutive_gone > 1 {
                            self.sleep_backoff().await;
                        }
                        break;
                    }
                }
            }
        }
    }

    async fn watch_once(&mut self, api: &Api<Pod>, rv: &mut String) -> WatchOutcome {
        let timeout_secs = self
            .config
            .watch_timeout
            .as_secs()
            .clamp(1, u32::MAX as u64) as u32;
        let wp = WatchParams::default()
            .fields(&self.field_selector)
            .timeout(timeout_secs);
        let started = Instant::now();
        let stream = match api.watch(&wp, rv).await {
            Ok(s) => s,
            Err(kube::Error::Api(status)) if status.code == 410 => return WatchOutcome::Gone,
            Err(e) => {
                self.fail("watching pods", &e);
                return WatchOutcome::Failed;
            }
        };
        // The watch counts as healthy (and a past outage as over) once it
        // delivers an event or stays open for `HEALTHY_AFTER`: a server that
        // accepts watches and then fails them at once is still failing, and
        // must not log "recovered"/"failed" pairs on every retry.
        const HEALTHY_AFTER: Duration = Duration::from_secs(5);
        let mut healthy = false;
        let mut stream = pin!(stream);
        let deadline = tokio::time::sleep(
            self.config
                .watch_timeout
                .saturating_add(Duration::from_secs(60)),
        );
        let mut deadline = pin!(deadline);
        let mut healthy_timer = pin!(tokio::time::sleep(HEALTHY_AFTER));
        let node = self.config.node_name.clone();
        loop {
            let item = tokio::select! {
                _ = &mut deadline => {
                    log::debug!("kube: watch open past its timeout, reopening");
                    return WatchOutcome::Ended { quick_and_empty: false };
                }
                _ = &mut healthy_timer, if !healthy => {
                    healthy = true;
                    self.ok();
                    continue;
                }
                item = stream.next() => item,
            };
            let Some(item) = item else {
                if healthy {
                    return WatchOutcome::Ended {
                        quick_and_empty: false,
                    };
                }
                let quick_and_empty = started.elapsed() < Duration::from_secs(1);
                return WatchOutcome::Ended { quick_and_empty };
            };
            let event = match item {
                Ok(WatchEvent::Error(status)) | Err(kube::Error::Api(status))
                    if status.code == 410 =>
                {
                    return WatchOutcome::Gone;
                }
                Ok(WatchEvent::Error(status)) => {
                    self.fail("watch stream", &kube::Error::Api(status));
                    return WatchOutcome::Failed;
                }
                Err(e) if healthy => {
                    // A healthy watch that breaks (apiserver restart, load
                    // balancer reset) is reopened at once; only a failure to
                    // reopen it is an outage worth a warning.
                    log::debug!("kube: watch stream broke, reopening: {e}");
                    return WatchOutcome::Ended {
                        quick_and_empty: false,
                    };
                }
                Err(e) => {
                    self.fail("reading the watch stream", &e);
                    return WatchOutcome::Failed;
                }
                Ok(ev) => ev,
            };
            if !healthy {
                healthy = true;
                self.ok();
            }
            match event {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    update_rv(rv, pod.metadata.resource_version.as_deref());
                    self.index.apply_pod(&pod, &node);
                }
                WatchEvent::Deleted(pod) => {
                    update_rv(rv, pod.metadata.resource_version.as_deref());
                    self.index.apply_deleted(&pod, &node, self.config.grace);
                }
                WatchEvent::Bookmark(b) => {
                    update_rv(rv, Some(&b.metadata.resource_version));
                }
                WatchEvent::Error(_) => {} // handled above
            }
        }
    }
}

/// `now + grace`, saturating at about a century for absurd graces.
fn expiry(grace: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(grace)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

fn update_rv(rv: &mut String, new: Option<&str>) {
    if let Some(new) = new.filter(|v| !v.is_empty()) {
        new.clone_into(rv);
    }
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
    fn normalize() {
        assert_eq!(normalize_container_id("containerd://abc"), "abc");
        assert_eq!(normalize_container_id("docker://abc "), "abc");
        assert_eq!(normalize_container_id("abc"), "abc");
        assert_eq!(normalize_container_id(""), "");
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
        idx.apply_deleted(
            &pod("u2", "b", &[("c", "containerd://333")]),
            "n1",
            Duration::from_secs(60),
        );
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

    #[test]
    fn absurd_durations_do_not_panic() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX, 7);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(3600));
        }
        let idx = PodIndex::new();
        let p = pod("u1", "a", &[("c", "containerd://111")]);
        idx.apply_pod(&p, "n1");
        idx.apply_deleted(&p, "n1", Duration::MAX);
        assert!(idx.lookup("111").is_some());
    }

    #[test]
    fn backoff_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 42);
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
