//! Cluster Services for the gateway: every Service with a cluster IP
//! (ClusterIP, NodePort and LoadBalancer types; not headless, not
//! ExternalName) and the ready endpoints of its EndpointSlices, as
//! [`ClusterService`]s, one per (cluster IP, port). [`cluster_services`] is
//! the pure conversion; [`spawn_service_watcher`] lists and watches both
//! resources on the API server (`kube::runtime::watcher`) and sends the result on every change.
use std::{
    collections::BTreeMap,
    fmt::Debug,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    serde::de::DeserializeOwned,
};
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::watch::ClientSource;

/// One port of one cluster IP of a Service, with its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterService {
    pub namespace: String,
    pub name: String,
    /// The Service port's name (may be empty for a single-port Service).
    pub port_name: String,
    /// `TCP` or `UDP` (SCTP ports are left out).
    pub protocol: String,
    pub cluster_ip: IpAddr,
    pub port: u16,
    /// `sessionAffinity: ClientIP`.
    pub client_ip_affinity: bool,
    /// Ready endpoints (`conditions.ready` true or unset) of the Service's
    /// EndpointSlices for this port, of the cluster IP's family, sorted.
    pub endpoints: Vec<SocketAddr>,
}

impl ClusterService {
    /// `namespace/name:port-name` (or the port number when unnamed).
    pub fn display_name(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}:{}", self.namespace, self.name, self.port)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// The Services' cluster ports with their ready endpoints.
pub fn cluster_services(services: &[Service], slices: &[EndpointSlice]) -> Vec<ClusterService> {
    let mut out = Vec::new();
    for svc in services {
        let (Some(namespace), Some(name), Some(spec)) = (&svc.metadata.namespace, &svc.metadata.name, &svc.spec) else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ips: Vec<IpAddr> = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(ips), _) if !ips.is_empty() => ips.iter().filter_map(|s| s.parse().ok()).collect(),
            (_, Some(ip)) => ip.parse().ok().into_iter().collect(),
            _ => Vec::new(),
        };
        let own: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(namespace)
                    && s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).map(String::as_str) == Some(name)
            })
            .collect();
        for port in spec.ports.iter().flatten() {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            if protocol != "TCP" && protocol != "UDP" {
                continue;
            }
            let Ok(number) = u16::try_from(port.port) else { continue };
            let port_name = port.name.clone().unwrap_or_default();
            for ip in &ips {
                let mut endpoints = Vec::new();
                for slice in &own {
                    let family_ok = match slice.address_type.as_str() {
                        "IPv4" => ip.is_ipv4(),
                        "IPv6" => ip.is_ipv6(),
                        _ => false,
                    };
                    if !family_ok {
                        continue;
                    }
                    let target = slice.ports.iter().flatten().find(|p| {
                        p.name.clone().unwrap_or_default() == port_name && p.protocol.clone().unwrap_or_else(|| "TCP".into()) == protocol
                    });
                    let Some(target) = target.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else { continue };
                    for ep in &slice.endpoints {
                        if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                            continue;
                        }
                        for a in &ep.addresses {
                            if let Ok(addr) = a.parse::<IpAddr>() {
                                endpoints.push(SocketAddr::new(addr, target));
                            }
                        }
                    }
                }
                endpoints.sort();
                endpoints.dedup();
                out.push(ClusterService {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port_name: port_name.clone(),
                    protocol: protocol.clone(),
                    cluster_ip: *ip,
                    port: number,
                    client_ip_affinity: spec.session_affinity.as_deref() == Some("ClientIP"),
                    endpoints,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.name, a.cluster_ip, a.port, &a.protocol).cmp(&(&b.namespace, &b.name, b.cluster_ip, b.port, &b.protocol))
    });
    out
}

/// Lists and watches Services and EndpointSlices (all namespaces) and
/// sends the cluster services on `tx` whenever they change (changes within
/// 100 ms are sent once). Never ends on its own; abort the handle to stop.
pub fn spawn_service_watcher(source: ClientSource, tx: mpsc::UnboundedSender<Vec<ClusterService>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = loop {
            let built = match &source {
                ClientSource::Client(c) => Ok(c.clone()),
                ClientSource::Config(cfg) => Client::try_from((**cfg).clone()).map_err(|e| e.to_string()),
                ClientSource::Infer => match kube::Config::infer().await {
                    Ok(cfg) => Client::try_from(cfg).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            match built {
                Ok(c) => break c,
                Err(e) => {
                    log::warn!("kube: building the Kubernetes client: {e}; retrying in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        let (events_tx, mut events) = mpsc::unbounded_channel::<Change>();
        let services = tokio::spawn(list_watch::<Service>(Api::all(client.clone()), events_tx.clone(), Change::Services));
        let slices = tokio::spawn(list_watch::<EndpointSlice>(Api::all(client), events_tx, Change::Slices));
        let mut store_services: BTreeMap<(String, String), Service> = BTreeMap::new();
        let mut store_slices: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
        let mut synced = (false, false);
        let mut last: Option<Vec<ClusterService>> = None;
        while let Some(first) = events.recv().await {
            let mut batch = vec![first];
            let settle = tokio::time::sleep(Duration::from_millis(100));
            tokio::pin!(settle);
            loop {
                tokio::select! {
                    _ = &mut settle => break,
                    more = events.recv() => match more {
                        Some(c) => batch.push(c),
                        None => break,
                    },
                }
            }
            for change in batch {
                match change {
                    Change::Services(e) => {
                        synced.0 |= matches!(e, Event::Reset(_));
                        e.apply(&mut store_services);
                    }
                    Change::Slices(e) => {
                        synced.1 |= matches!(e, Event::Reset(_));
                        e.apply(&mut store_slices);
                    }
                }
            }
            // Nothing is sent before both lists arrived: a Service without
            // its endpoints yet would refuse connects.
            if synced != (true, true) {
                continue;
            }
            let svcs: Vec<Service> = store_services.values().cloned().collect();
            let sl: Vec<EndpointSlice> = store_slices.values().cloned().collect();
            let now = cluster_services(&svcs, &sl);
            if last.as_ref() != Some(&now) {
                last = Some(now.clone());
                if tx.send(now).is_err() {
                    break;
                }
            }
        }
        services.abort();
        slices.abort();
    })
}

// One message per watch event, consumed at once: no reason to box.
#[allow(clippy::large_enum_variant)]
enum Change {
    Services(Event<Service>),
    Slices(Event<EndpointSlice>),
}

enum Event<K> {
    /// A full list: replaces everything.
    Reset(Vec<K>),
    Apply(K),
    Delete(K),
}

impl<K: Resource> Event<K> {
    fn apply(self, store: &mut BTreeMap<(String, String), K>) {
        let key = |k: &K| (k.meta().namespace.clone().unwrap_or_default(), k.meta().name.clone().unwrap_or_default());
        match self {
            Event::Reset(items) => {
                store.clear();
                for k in items {
                    store.insert(key(&k), k);
                }
            }
            Event::Apply(k) => {
                store.insert(key(&k), k);
            }
            Event::Delete(k) => {
                store.remove(&key(&k));
            }
        }
    }
}

/// `kube::runtime::watcher` lists, watches from the list's resourceVersion
/// (bookmarks included), relists on 410 Gone and retries failures with
/// kube-runtime's default backoff; its events become [`Event`]s, a
/// completed (re)list as one [`Event::Reset`].
async fn list_watch<K>(api: Api<K>, tx: mpsc::UnboundedSender<Change>, wrap: fn(Event<K>) -> Change)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let what = std::any::type_name::<K>().rsplit("::").next().unwrap_or("objects");
    let config = watcher::Config::default().timeout(290);
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    let mut warned = false;
    let mut listing: Vec<K> = Vec::new();
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                if !warned {
                    log::warn!("kube: watching {what} failed: {e}; retrying with backoff");
                    warned = true;
                } else {
                    log::debug!("kube: watching {what}: {e}");
                }
                continue;
            }
        };
        if warned {
            log::warn!("kube: watching {what} works again");
            warned = false;
        }
        let change = match event {
            watcher::Event::Init => {
                listing.clear();
                continue;
            }
            watcher::Event::InitApply(k) => {
                listing.push(k);
                continue;
            }
            watcher::Event::InitDone => Event::Reset(std::mem::take(&mut listing)),
            watcher::Event::Apply(k) => Event::Apply(k),
            watcher::Event::Delete(k) => Event::Delete(k),
        };
        if tx.send(wrap(change)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ready_endpoints_per_port_and_family() {
        let svc = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "ClusterIP", "clusterIP": "127.0.0.170", "clusterIPs": ["127.0.0.170", "fd00::170"],
                     "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                               {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                               {"name": "sctp", "port": 9, "protocol": "SCTP"}]}
        }));
        let headless = service(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"port": 3306}]}
        }));
        let external = service(serde_json::json!({
            "metadata": {"name": "ext", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "example.invalid"}
        }));
        let v4 = slice(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["127.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["127.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["127.0.0.3"]}
            ]
        }));
        let other_ns = slice(serde_json::json!({
            "metadata": {"name": "web-x", "namespace": "other", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 1, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.9"]}]
        }));
        let out = cluster_services(&[svc, headless, external], &[v4, other_ns]);
        let names: Vec<String> = out.iter().map(|c| format!("{} {} {}:{}", c.display_name(), c.protocol, c.cluster_ip, c.port)).collect();
        assert_eq!(
            names,
            vec![
                "shop/web:dns UDP 127.0.0.170:53",
                "shop/web:http TCP 127.0.0.170:80",
                "shop/web:dns UDP fd00::170:53",
                "shop/web:http TCP fd00::170:80"
            ]
        );
        assert_eq!(out[1].endpoints, vec!["127.0.0.1:8080".parse().unwrap(), "127.0.0.3:8080".parse().unwrap()]);
        assert_eq!(out[0].endpoints, vec!["127.0.0.1:5353".parse().unwrap(), "127.0.0.3:5353".parse().unwrap()]);
        assert!(out[2].endpoints.is_empty(), "no IPv6 slice");
        assert!(out[1].client_ip_affinity);
    }
}
