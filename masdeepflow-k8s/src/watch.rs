//! The watcher: `kube::runtime::watcher` lists the node's pods, watches
//! them from the list's resourceVersion (bookmarks included), relists on
//! `410 Gone` and retries failures with backoff; this module applies its
//! events to a [`PodIndex`] and says when the API server is lost and back.
use std::fmt;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;

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
    /// First retry delay after a failure. Default 800 ms (kube-runtime's).
    pub backoff_initial: Duration,
    /// Retry delay cap. Default 30 s (kube-runtime's).
    pub backoff_max: Duration,
    /// `timeoutSeconds` asked of each watch request; the watch is then
    /// reopened from the last resourceVersion. Default 290 s. The watcher
    /// also gives up on a watch that stays silent past it and reopens it.
    pub watch_timeout: Duration,
}

impl WatchConfig {
    /// Defaults for `node_name` and `source`.
    pub fn new(node_name: impl Into<String>, source: ClientSource) -> Self {
        WatchConfig {
            node_name: node_name.into(),
            grace: DEFAULT_GRACE,
            source,
            backoff_initial: Duration::from_millis(800),
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

/// How long requests must go without failing, after the retry that follows
/// a failure, for the API server to count as back: a server that accepts
/// watches and then fails them at once is still failing, and must not log
/// "recovered"/"failed" pairs on every retry.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// kube-runtime's retry strategy (capped exponential with jitter from
/// `backon`, reset after 120 s without failures; kube-runtime keeps its own
/// constructor private, so it is rebuilt here with the configured bounds),
/// shared by the watcher streams of one [`Watcher`] and remembering the
/// last delay it gave.
#[derive(Clone)]
struct SharedBackoff(Arc<Mutex<(ResetTimerBackoff<Exponential>, Duration)>>);

struct Exponential {
    builder: backon::ExponentialBuilder,
    current: backon::ExponentialBackoff,
}

impl Iterator for Exponential {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.current.next()
    }
}

impl Backoff for Exponential {
    fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

impl SharedBackoff {
    fn new(initial: Duration, max: Duration) -> Self {
        let max = max.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(initial.clamp(Duration::from_millis(1), max))
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        let exponential = Exponential { builder, current: builder.build() };
        SharedBackoff(Arc::new(Mutex::new((ResetTimerBackoff::new(exponential, Duration::from_secs(120)), Duration::ZERO))))
    }

    /// The delay given for the last failure.
    fn last_delay(&self) -> Duration {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

impl Iterator for SharedBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let delay = inner.0.next();
        inner.1 = delay.unwrap_or_default();
        delay
    }
}

impl Backoff for SharedBackoff {
    fn reset(&mut self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).0.reset();
    }
}

/// Failure bookkeeping: one warn when things break, one when they recover.
struct Health {
    failures: u64,
    since: Option<Instant>,
}

struct Watcher {
    config: WatchConfig,
    index: PodIndex,
    backoff: SharedBackoff,
    health: Health,
}

/// What a watcher error was doing, for the log.
fn failed_step(err: &watcher::Error) -> &'static str {
    match err {
        watcher::Error::InitialListFailed(_) | watcher::Error::NoResourceVersion => "listing pods",
        watcher::Error::WatchStartFailed(_) => "watching pods",
        watcher::Error::WatchError(_) => "watch stream",
        watcher::Error::WatchFailed(_) => "reading the watch stream",
    }
}

/// Whether the error says the resourceVersion expired (`410 Gone`), as a
/// watch event or as the status of the watch request.
fn is_gone(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

impl Watcher {
    fn new(config: WatchConfig, index: PodIndex) -> Self {
        let backoff = SharedBackoff::new(config.backoff_initial, config.backoff_max);
        Watcher { config, index, backoff, health: Health { failures: 0, since: None } }
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
        self.index.set_last_sync_ok(true);
    }

    /// The client, retried with backoff until it can be built.
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
                    let delay = self.backoff.next().unwrap_or(self.config.backoff_max);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn run(&mut self) {
        let client = self.client().await;
        let api: Api<Pod> = Api::all(client);
        let timeout_secs = self.config.watch_timeout.as_secs().clamp(1, u32::MAX as u64) as u32;
        // The list is served from the apiserver's watch cache
        // (resourceVersion=0, NotOlderThan), not a quorum read from etcd:
        // one agent per node must stay cheap. Unpaged, since kube leaves
        // resourceVersion=0 out of paged lists.
        let config = watcher::Config {
            page_size: None,
            ..watcher::Config::default().fields(&format!("spec.nodeName={}", self.config.node_name)).timeout(timeout_secs).any_semantic()
        };
        loop {
            // kube-runtime relists on a 410 inside the watch stream, but keeps
            // retrying the same resourceVersion when the watch request itself
            // is answered 410 (older apiservers): a new stream relists.
            self.follow(watcher(api.clone(), config.clone()).backoff(self.backoff.clone())).await;
            log::debug!("kube: resourceVersion expired (410 Gone on the watch request), relisting");
        }
    }

    /// Applies one watcher stream's events until its watch request is
    /// answered `410 Gone`.
    async fn follow(&mut self, stream: impl futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>>) {
        let node = self.config.node_name.clone();
        let grace = self.config.grace;
        let mut stream = pin!(stream);
        // Pods of the list in progress.
        let mut listed: Vec<Pod> = Vec::new();
        let recovered = tokio::time::sleep(Duration::ZERO);
        let mut recovered = pin!(recovered);
        loop {
            let item = tokio::select! {
                _ = &mut recovered, if self.health.failures > 0 => {
                    self.ok();
                    continue;
                }
                item = stream.next() => item,
            };
            match item {
                // The watcher stream never ends on its own (its backoff never gives up).
                None => return,
                Some(Err(e)) => {
                    if is_gone(&e) {
                        log::debug!("kube: resourceVersion expired (410 Gone), relisting");
                    } else {
                        self.fail(failed_step(&e), &e);
                    }
                    let retry_at = tokio::time::Instant::now() + self.backoff.last_delay();
                    recovered.as_mut().reset(retry_at + HEALTHY_AFTER);
                    if matches!(&e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410) {
                        tokio::time::sleep_until(retry_at).await;
                        return;
                    }
                }
                Some(Ok(event)) => {
                    match event {
                        watcher::Event::Init => {
                            listed.clear();
                            continue;
                        }
                        watcher::Event::InitApply(pod) => listed.push(pod),
                        watcher::Event::InitDone => {
                            self.index.apply_list(&listed, &node, grace);
                            log::debug!("kube: listed {} pod(s) on node {node:?}", listed.len());
                            listed = Vec::new();
                        }
                        watcher::Event::Apply(pod) => self.index.apply_pod(&pod, &node),
                        watcher::Event::Delete(pod) => self.index.apply_deleted(&pod, &node, grace),
                    }
                    self.ok();
                }
            }
        }
    }
}
