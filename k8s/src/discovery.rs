//! The mesh's endpoints from the cluster's Pods, the authoritative source on Kubernetes:
//! each injected pod's IPs and container ports, the SPIFFE ID of its service account
//! (`spiffe://TD/ns/NS/sa/SA`), and what each port speaks: `ward.dev/app-protocols:
//! "8080=grpc,5432=tcp"` on the pod, else the `appProtocol` of a Service port that selects
//! it, else the port's name (Istio-style: `http`, `http2`, `grpc`, `tcp`, ...).
//! A Service's ClusterIP ports are endpoints too, as the identity of the pods it selects
//! (when they are all meshed and of one service account), so that a call to a Service
//! name goes over mTLS like a call to a pod.
//! What proxies say about themselves is ignored here: an address belongs to the pod the
//! API server says has it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use ward_api::v1;
use ward_certs::{SpiffeId, TrustDomain};
use ward_control_plane::discovery::{DiscoverySource, Endpoints};
use ward_runtime::Drain;

use crate::inject::{INJECTED_ANNOTATION, PROXY};

/// The annotation naming ports' protocols.
pub const PROTOCOLS_ANNOTATION: &str = "ward.dev/app-protocols";

/// Endpoints of the injected pods, followed by a watch.
pub struct PodEndpoints {
    tx: watch::Sender<Arc<Endpoints>>,
}

impl PodEndpoints {
    /// Starts following the cluster's pods until the drain begins.
    pub fn start(client: kube::Client, td: TrustDomain, drain: Drain) -> Self {
        let tx = watch::Sender::new(Arc::new(Endpoints::default()));
        tokio::spawn(follow(client, td, tx.clone(), drain));
        Self { tx }
    }
}

impl DiscoverySource for PodEndpoints {
    fn watch(&self) -> watch::Receiver<Arc<Endpoints>> {
        self.tx.subscribe()
    }

    fn attested(&self, _id: &SpiffeId, _serving: &[v1::Endpoint]) {}
}

/// `namespace/name`
pub type Key = (String, String);

/// Objects of one kind as a watch sees them: put in force whole after each (re)list.
struct Watched<K> {
    objects: BTreeMap<Key, K>,
    listing: Option<BTreeMap<Key, K>>,
}

impl<K: kube::Resource> Watched<K> {
    fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            listing: None,
        }
    }

    /// Applies one event; what changed in the objects in force.
    fn apply(&mut self, event: watcher::Event<K>) -> Option<Changed> {
        let key = |o: &K| Some((o.meta().namespace.clone()?, o.meta().name.clone()?));
        match event {
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                None
            }
            watcher::Event::InitApply(o) => {
                if let Some(k) = key(&o) {
                    self.listing.get_or_insert_with(BTreeMap::new).insert(k, o);
                }
                None
            }
            watcher::Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                Some(Changed::All)
            }
            watcher::Event::Apply(o) => {
                let k = key(&o)?;
                self.objects.insert(k.clone(), o);
                Some(Changed::Namespace(k.0))
            }
            watcher::Event::Delete(o) => {
                let k = key(&o)?;
                self.objects.remove(&k)?;
                Some(Changed::Namespace(k.0))
            }
        }
    }
}

/// What a watch event changed: one namespace's objects, or all of them (a relist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Namespace(String),
    All,
}

/// Endpoints by pod and by Service, so that an event recomputes only its namespace (a
/// pod's protocols and a Service's ClusterIP depend on that namespace alone).
pub struct Index {
    td: TrustDomain,
    pods: BTreeMap<Key, Vec<(SocketAddr, v1::Endpoint)>>,
    services: BTreeMap<Key, Vec<(SocketAddr, v1::Endpoint)>>,
}

/// The objects of `map` in namespace `ns`.
fn in_namespace<'a, T>(
    map: &'a BTreeMap<Key, T>,
    ns: &'a str,
) -> impl Iterator<Item = (&'a Key, &'a T)> {
    map.range((ns.to_owned(), String::new())..)
        .take_while(move |((n, _), _)| n == ns)
}

impl Index {
    pub fn new(td: TrustDomain) -> Self {
        Self {
            td,
            pods: BTreeMap::new(),
            services: BTreeMap::new(),
        }
    }

    /// Recomputes what `changed` touched, from the objects in force.
    pub fn refresh(
        &mut self,
        changed: &Changed,
        pods: &BTreeMap<Key, Pod>,
        services: &BTreeMap<Key, Service>,
    ) {
        match changed {
            Changed::Namespace(ns) => self.refresh_namespace(ns, pods, services),
            Changed::All => {
                self.pods.clear();
                self.services.clear();
                let namespaces: std::collections::BTreeSet<&String> = pods
                    .keys()
                    .chain(services.keys())
                    .map(|(ns, _)| ns)
                    .collect();
                for ns in namespaces {
                    self.refresh_namespace(ns, pods, services);
                }
            }
        }
    }

    fn refresh_namespace(
        &mut self,
        ns: &str,
        pods: &BTreeMap<Key, Pod>,
        services: &BTreeMap<Key, Service>,
    ) {
        for map in [&mut self.pods, &mut self.services] {
            let stale: Vec<Key> = in_namespace(map, ns).map(|(k, _)| k.clone()).collect();
            for key in stale {
                map.remove(&key);
            }
        }
        let local_services: Vec<&Service> = in_namespace(services, ns).map(|(_, s)| s).collect();
        for (key, pod) in in_namespace(pods, ns) {
            let hints = service_protocols(pod, local_services.iter().copied());
            self.pods
                .insert(key.clone(), endpoints_of(pod, &self.td, &hints));
        }
        let local_pods: Vec<(&Key, &Pod)> = in_namespace(pods, ns).collect();
        for (key, service) in in_namespace(services, ns) {
            let endpoints = cluster_ip_endpoints(service, &local_pods, &self.pods);
            self.services.insert(key.clone(), endpoints);
        }
    }

    /// Every endpoint, by address (a contested address goes to no one).
    pub fn endpoints(&self) -> BTreeMap<SocketAddr, v1::Endpoint> {
        merged(self.pods.values().chain(self.services.values()))
    }
}

async fn follow(
    client: kube::Client,
    td: TrustDomain,
    tx: watch::Sender<Arc<Endpoints>>,
    drain: Drain,
) {
    let config = watcher::Config::default();
    let mut pod_events =
        std::pin::pin!(watcher(Api::<Pod>::all(client.clone()), config.clone()).default_backoff());
    let mut service_events =
        std::pin::pin!(watcher(Api::<Service>::all(client), config).default_backoff());
    let (mut pods, mut services) = (Watched::<Pod>::new(), Watched::<Service>::new());
    let mut index = Index::new(td);
    loop {
        let changed = tokio::select! {
            () = drain.signaled() => return,
            Some(event) = pod_events.next() => match event {
                Ok(event) => pods.apply(event),
                Err(e) => { watch_failed("pods", &e); None }
            },
            Some(event) = service_events.next() => match event {
                Ok(event) => services.apply(event),
                Err(e) => { watch_failed("services", &e); None }
            },
        };
        if let Some(changed) = changed {
            index.refresh(&changed, &pods.objects, &services.objects);
            let by_address = index.endpoints();
            tx.send_if_modified(|current| {
                if current.by_address == by_address {
                    return false;
                }
                *current = Arc::new(Endpoints {
                    version: current.version + 1,
                    by_address,
                });
                true
            });
        }
    }
}

fn watch_failed(what: &str, e: &watcher::Error) {
    tracing::warn!(error = %e, "watching {what} failed; retrying, the last endpoints stay");
}

/// Every injected pod's endpoints (with protocols its Services' `appProtocol` names) and
/// every meshed Service's ClusterIP ports, computed whole.
pub fn endpoints(
    pods: &BTreeMap<Key, Pod>,
    services: &BTreeMap<Key, Service>,
    td: &TrustDomain,
) -> BTreeMap<SocketAddr, v1::Endpoint> {
    let mut index = Index::new(td.clone());
    index.refresh(&Changed::All, pods, services);
    index.endpoints()
}

/// Whether `labels` has every pair of a non-empty `selector`.
fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    !selector.is_empty()
        && labels.is_some_and(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A pod that has not finished and is not being deleted.
fn live(pod: &Pod) -> bool {
    let finished = pod
        .status
        .as_ref()
        .is_some_and(|s| matches!(s.phase.as_deref(), Some("Succeeded" | "Failed")));
    !finished && pod.metadata.deletion_timestamp.is_none()
}

fn injected(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
}

/// A Service's cluster IPs and ports, as the identity of the pods it selects: an app dials
/// the ClusterIP, its sidecar sees that as the destination, and connects there with mTLS
/// (kube-proxy takes the connection on to a pod, whose sidecar captures it). Only when
/// every live pod it selects is injected and all run as one service account: a connection
/// to a mixed Service could reach a pod the mTLS would fail on, or one of another
/// identity, so such a Service is left as the app dialled it (and logged).
fn cluster_ip_endpoints(
    service: &Service,
    local_pods: &[(&Key, &Pod)],
    known: &BTreeMap<Key, Vec<(SocketAddr, v1::Endpoint)>>,
) -> Vec<(SocketAddr, v1::Endpoint)> {
    let (Some(spec), Some(namespace)) = (&service.spec, &service.metadata.namespace) else {
        return Vec::new();
    };
    let ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let selector = spec.selector.clone().unwrap_or_default();
    if ips.is_empty() || spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let selected: Vec<(&Key, &Pod)> = local_pods
        .iter()
        .copied()
        .filter(|((ns, _), pod)| {
            ns == namespace && live(pod) && selects(&selector, pod.metadata.labels.as_ref())
        })
        .collect();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    if selected.iter().any(|(_, pod)| !injected(pod)) {
        tracing::debug!(service = %format!("{namespace}/{name}"), "selects pods without the sidecar; its ClusterIP is not meshed");
        return Vec::new();
    }
    // Pods with an address (and so endpoints) speak for the Service.
    let serving: Vec<&Vec<(SocketAddr, v1::Endpoint)>> = selected
        .iter()
        .filter_map(|(key, _)| known.get(*key))
        .filter(|e| !e.is_empty())
        .collect();
    let ids: std::collections::BTreeSet<&str> = serving
        .iter()
        .flat_map(|e| e.iter().map(|(_, e)| e.spiffe_id.as_str()))
        .collect();
    let [id] = ids.into_iter().collect::<Vec<_>>()[..] else {
        if !serving.is_empty() {
            tracing::warn!(service = %format!("{namespace}/{name}"), "selects pods of several service accounts; its ClusterIP is not meshed (dial the pods, or split the Service)");
        }
        return Vec::new();
    };
    let mut endpoints = Vec::new();
    for port in spec.ports.iter().flatten() {
        if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            continue;
        }
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let target = match &port.target_port {
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
            Some(IntOrString::String(_)) => None,
            None => Some(number),
        };
        // What the port speaks: its appProtocol, else what the pods say of the target
        // port, else the port's name.
        let from_pods = target.and_then(|t| {
            serving
                .iter()
                .flat_map(|e| e.iter())
                .find(|(a, e)| a.port() == t && !e.protocol.is_empty())
                .map(|(_, e)| e.protocol.clone())
        });
        let protocol = port
            .app_protocol
            .as_deref()
            .and_then(protocol_word)
            .map(str::to_owned)
            .or(from_pods)
            .or_else(|| port.name.as_deref().map(protocol_of_name))
            .unwrap_or_default();
        for ip in &ips {
            endpoints.push(captured(SocketAddr::new(*ip, number), id, &protocol));
        }
    }
    endpoints
}

/// The protocols the Services selecting `pod` name for its ports (`appProtocol`), by
/// container port.
pub fn service_protocols<'a>(
    pod: &Pod,
    services: impl Iterator<Item = &'a Service>,
) -> BTreeMap<u16, String> {
    let containers: Vec<_> = pod.spec.iter().flat_map(|s| s.containers.iter()).collect();
    let mut hints = BTreeMap::new();
    for spec in services.filter_map(|s| s.spec.as_ref()) {
        if !selects(
            &spec.selector.clone().unwrap_or_default(),
            pod.metadata.labels.as_ref(),
        ) {
            continue;
        }
        for port in spec.ports.iter().flatten() {
            let Some(protocol) = port.app_protocol.as_deref().and_then(protocol_word) else {
                continue;
            };
            let target = match &port.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(name)) => containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
                None => u16::try_from(port.port).ok(),
            };
            if let Some(target) = target {
                hints.insert(target, protocol.to_owned());
            }
        }
    }
    hints
}

/// All pods' endpoints by address; an address two pods claim (an IP reused while the old
/// pod is still listed) goes to neither, and is logged.
fn merged<'a>(
    known: impl Iterator<Item = &'a Vec<(SocketAddr, v1::Endpoint)>>,
) -> BTreeMap<SocketAddr, v1::Endpoint> {
    let mut by_address: BTreeMap<SocketAddr, v1::Endpoint> = BTreeMap::new();
    let mut contested = Vec::new();
    for (addr, endpoint) in known.flatten() {
        match by_address.get(addr) {
            Some(held) if held.spiffe_id != endpoint.spiffe_id => contested.push(*addr),
            _ => {
                by_address.insert(*addr, endpoint.clone());
            }
        }
    }
    for addr in contested {
        by_address.remove(&addr);
        tracing::warn!(%addr, "two pods of different identities list this address; neither is used");
    }
    by_address
}

/// An injected, live pod's endpoints: every pod IP with every TCP port its app containers
/// declare.
pub fn endpoints_of(
    pod: &Pod,
    td: &TrustDomain,
    service_hints: &BTreeMap<u16, String>,
) -> Vec<(SocketAddr, v1::Endpoint)> {
    let (Some(spec), Some(status), Some(namespace)) =
        (&pod.spec, &pod.status, &pod.metadata.namespace)
    else {
        return Vec::new();
    };
    if !injected(pod) || !live(pod) {
        return Vec::new();
    }
    let account = spec.service_account_name.as_deref().unwrap_or("default");
    let Ok(id) = ward_certs::id::workload_id(td, namespace, account) else {
        return Vec::new();
    };
    let ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .chain(status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let named = annotated_protocols(pod);
    let mut endpoints = Vec::new();
    for container in spec.containers.iter().filter(|c| c.name != PROXY) {
        for port in container.ports.iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Ok(number) = u16::try_from(port.container_port) else {
                continue;
            };
            let protocol = named
                .get(&number)
                .or_else(|| service_hints.get(&number))
                .cloned()
                .or_else(|| port.name.as_deref().map(protocol_of_name))
                .unwrap_or_default();
            for ip in &ips {
                endpoints.push(captured(
                    SocketAddr::new(*ip, number),
                    &id.to_string(),
                    &protocol,
                ));
            }
        }
    }
    endpoints
}

/// An endpoint whose traffic a pod's sidecar captures: it takes mTLS on the address's own
/// port (a ClusterIP's, after kube-proxy).
fn captured(addr: SocketAddr, id: &str, protocol: &str) -> (SocketAddr, v1::Endpoint) {
    let endpoint = v1::Endpoint {
        address: addr.to_string(),
        spiffe_id: id.to_owned(),
        inbound_port: 0,
        protocol: protocol.to_owned(),
    };
    (addr, endpoint)
}

/// What a port named like `grpc-api` or `http` speaks ("" : detect).
fn protocol_of_name(name: &str) -> String {
    let prefix = name.split('-').next().unwrap_or_default();
    protocol_word(prefix).unwrap_or_default().to_owned()
}

fn protocol_word(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "http" | "http1" => "http1",
        "http2" | "h2c" | "kubernetes.io/h2c" => "http2",
        "grpc" | "grpc-web" => "grpc",
        "tcp" | "mysql" | "postgres" | "postgresql" | "redis" | "mongo" | "kafka" => "tcp",
        _ => return None,
    })
}

/// `ward.dev/app-protocols: "8080=grpc,5432=tcp"`; unreadable entries are logged and
/// left to detection.
fn annotated_protocols(pod: &Pod) -> BTreeMap<u16, String> {
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROTOCOLS_ANNOTATION))
    else {
        return BTreeMap::new();
    };
    let mut protocols = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.split_once('=').and_then(|(port, word)| {
            Some((
                port.trim().parse::<u16>().ok()?,
                protocol_word(word.trim())?,
            ))
        });
        match parsed {
            Some((port, protocol)) => {
                protocols.insert(port, protocol.to_owned());
            }
            None => {
                tracing::warn!(pod = ?pod.metadata.name, entry, "{PROTOCOLS_ANNOTATION}: not PORT=PROTOCOL; left to detection")
            }
        }
    }
    protocols
}

#[cfg(test)]
mod tests;
