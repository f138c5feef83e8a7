//! The watcher: lists the node's pods, then watches them from the list's
//! resourceVersion, relisting on `410 Gone` and retrying failures with
//! backoff, and applies what it gets to a [`PodIndex`].
use std::fmt;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::{DEFAULT_GRACE, PodIndex};

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
        let seed = config.node_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let backoff = Backoff::new(config.backoff_initial, config.backoff_max, seed);
        let field_selector = format!("spec.nodeName={}", config.node_name);
        Watcher { config, index, field_selector, backoff, health: Health { failures: 0, since: None } }
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
            log::debug!("kube: {what} failed again (attempt {}): {err}", self.health.failures);
        }
    }

    fn ok(&mut self) {
        if self.health.failures > 0 {
            let secs = self.health.since.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
            log::warn!("kube: API server reachable again after {} failed attempt(s) over {secs:.1}s", self.health.failures);
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
                ClientSource::Config(cfg) => Client::try_from((**cfg).clone()).map_err(|e| e.to_string()),
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
            let lp = ListParams::default().fields(&self.field_selector).match_any();
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
            self.index.apply_list(&list.items, &self.config.node_name, self.config.grace);
            log::debug!("kube: listed {} pod(s) on node {:?} at resourceVersion {rv}", list.items.len(), self.config.node_name);
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
        let timeout_secs = self.config.watch_timeout.as_secs().clamp(1, u32::MAX as u64) as u32;
        let wp = WatchParams::default().fields(&self.field_selector).timeout(timeout_secs);
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
        let deadline = tokio::time::sleep(self.config.watch_timeout.saturating_add(Duration::from_secs(60)));
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
                    return WatchOutcome::Ended { quick_and_empty: false };
                }
                let quick_and_empty = started.elapsed() < Duration::from_secs(1);
                return WatchOutcome::Ended { quick_and_empty };
            };
            let event = match item {
                Ok(WatchEvent::Error(status)) | Err(kube::Error::Api(status)) if status.code == 410 => {
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
                    return WatchOutcome::Ended { quick_and_empty: false };
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

fn update_rv(rv: &mut String, new: Option<&str>) {
    if let Some(new) = new.filter(|v| !v.is_empty()) {
        new.clone_into(rv);
    }
}
