//! The mesh's endpoints from the cluster's Pods, the authoritative source on Kubernetes:
//! each injected pod's IPs and container ports, the SPIFFE ID of its service account
//! (`spiffe://TD/ns/NS/sa/SA`), and what each port speaks: `ward.dev/app-protocols:
//! "8080=grpc,5432=tcp"` on the pod, else the `appProtocol` of a Service port that selects
//! it, else the port's name (Istio-style: `http`, `http2`, `grpc`, `tcp`, ...).
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
type Key = (String, String);

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

    /// Applies one event; true when the objects in force changed.
    fn apply(&mut self, event: watcher::Event<K>) -> bool {
        let key = |o: &K| Some((o.meta().namespace.clone()?, o.meta().name.clone()?));
        match event {
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                if let Some(k) = key(&o) {
                    self.listing.get_or_insert_with(BTreeMap::new).insert(k, o);
                }
                false
            }
            watcher::Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                true
            }
            watcher::Event::Apply(o) => key(&o).is_some_and(|k| {
                self.objects.insert(k, o);
                true
            }),
            watcher::Event::Delete(o) => key(&o).is_some_and(|k| self.objects.remove(&k).is_some()),
        }
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
    loop {
        let changed = tokio::select! {
            () = drain.signaled() => return,
            Some(event) = pod_events.next() => match event {
                Ok(event) => pods.apply(event),
                Err(e) => { watch_failed("pods", &e); false }
            },
            Some(event) = service_events.next() => match event {
                Ok(event) => services.apply(event),
                Err(e) => { watch_failed("services", &e); false }
            },
        };
        if changed {
            let by_address = endpoints(&pods.objects, &services.objects, &td);
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

/// Every injected pod's endpoints, with protocols its Services' `appProtocol` names.
fn endpoints(
    pods: &BTreeMap<Key, Pod>,
    services: &BTreeMap<Key, Service>,
    td: &TrustDomain,
) -> BTreeMap<SocketAddr, v1::Endpoint> {
    let known: BTreeMap<Key, Vec<(SocketAddr, v1::Endpoint)>> = pods
        .iter()
        .map(|(key, pod)| {
            let hints = service_protocols(
                pod,
                services
                    .values()
                    .filter(|s| s.metadata.namespace == pod.metadata.namespace),
            );
            (key.clone(), endpoints_of(pod, td, &hints))
        })
        .collect();
    merged(&known)
}

/// The protocols the Services selecting `pod` name for its ports (`appProtocol`), by
/// container port.
pub fn service_protocols<'a>(
    pod: &Pod,
    services: impl Iterator<Item = &'a Service>,
) -> BTreeMap<u16, String> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let containers: Vec<_> = pod.spec.iter().flat_map(|s| s.containers.iter()).collect();
    let mut hints = BTreeMap::new();
    for spec in services.filter_map(|s| s.spec.as_ref()) {
        let selector = spec.selector.clone().unwrap_or_default();
        if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
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
fn merged(
    known: &BTreeMap<Key, Vec<(SocketAddr, v1::Endpoint)>>,
) -> BTreeMap<SocketAddr, v1::Endpoint> {
    let mut by_address: BTreeMap<SocketAddr, v1::Endpoint> = BTreeMap::new();
    let mut contested = Vec::new();
    for (addr, endpoint) in known.values().flatten() {
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
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION));
    let (Some(spec), Some(status), Some(namespace)) =
        (&pod.spec, &pod.status, &pod.metadata.namespace)
    else {
        return Vec::new();
    };
    let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    if !injected || finished || pod.metadata.deletion_timestamp.is_some() {
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
                let addr = SocketAddr::new(*ip, number);
                endpoints.push((
                    addr,
                    v1::Endpoint {
                        address: addr.to_string(),
                        spiffe_id: id.to_string(),
                        // Captured: the pod's sidecar takes mTLS on the port itself.
                        inbound_port: 0,
                        protocol: protocol.clone(),
                    },
                ));
            }
        }
    }
    endpoints
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
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        yaml_serde::from_str(yaml).unwrap()
    }

    const WEB: &str = "metadata: { name: web-1, namespace: shop, annotations: { ward.dev/injected: \"0.1.0\", ward.dev/app-protocols: \"9090=grpc, x=y\" } }
spec:
  serviceAccountName: web
  initContainers: [ { name: ward-proxy, image: w, ports: [ { containerPort: 15000 } ] } ]
  containers:
  - { name: app, image: a, ports: [ { name: http-web, containerPort: 8080 }, { containerPort: 9090 }, { containerPort: 53, protocol: UDP } ] }
status: { phase: Running, podIP: 10.1.0.7, podIPs: [ { ip: 10.1.0.7 }, { ip: \"fd00::7\" } ] }
";

    fn td() -> TrustDomain {
        ward_certs::parse_trust_domain("cluster.local").unwrap()
    }

    #[test]
    fn an_injected_pod_serves_its_tcp_ports_on_every_ip_as_its_service_account() {
        let endpoints = endpoints_of(&pod(WEB), &td(), &BTreeMap::new());
        let got: Vec<(String, String, String)> = endpoints
            .iter()
            .map(|(a, e)| (a.to_string(), e.spiffe_id.clone(), e.protocol.clone()))
            .collect();
        let id = "spiffe://cluster.local/ns/shop/sa/web".to_owned();
        assert_eq!(
            got,
            [
                ("10.1.0.7:8080".into(), id.clone(), "http1".into()),
                ("[fd00::7]:8080".into(), id.clone(), "http1".into()),
                ("10.1.0.7:9090".into(), id.clone(), "grpc".into()),
                ("[fd00::7]:9090".into(), id, "grpc".into()),
            ]
        );
    }

    #[test]
    fn pods_without_the_sidecar_finished_or_deleted_serve_nothing() {
        let plain = WEB.replace("ward.dev/injected: \"0.1.0\", ", "");
        let done = WEB.replace("phase: Running", "phase: Succeeded");
        let gone = WEB.replace(
            "name: web-1,",
            "name: web-1, deletionTimestamp: \"2026-12-01T00:00:00Z\",",
        );
        for yaml in [plain, done, gone] {
            assert!(
                endpoints_of(&pod(&yaml), &td(), &BTreeMap::new()).is_empty(),
                "{yaml}"
            );
        }
    }

    #[test]
    fn an_address_two_identities_claim_goes_to_neither() {
        let other = WEB
            .replace("serviceAccountName: web", "serviceAccountName: thief")
            .replace("web-1", "web-2");
        let mut known = BTreeMap::new();
        known.insert(
            ("shop".to_owned(), "web-1".to_owned()),
            endpoints_of(&pod(WEB), &td(), &BTreeMap::new()),
        );
        known.insert(
            ("shop".to_owned(), "web-2".to_owned()),
            endpoints_of(&pod(&other), &td(), &BTreeMap::new()),
        );
        assert!(merged(&known).is_empty());
        known.remove(&("shop".to_owned(), "web-2".to_owned()));
        assert_eq!(merged(&known).len(), 4);
    }

    #[test]
    fn a_selecting_services_app_protocol_names_the_port_and_the_pod_annotation_wins() {
        let services: Vec<Service> = [
            // Selects web-1; named and numbered target ports.
            "metadata: { name: web, namespace: shop }\nspec: { selector: { app: web }, ports: [ { port: 80, targetPort: http-web, appProtocol: kubernetes.io/h2c }, { port: 91, targetPort: 9090, appProtocol: tcp } ] }",
            // Another namespace's, and one whose selector does not match: no say.
            "metadata: { name: web, namespace: other }\nspec: { selector: { app: web }, ports: [ { port: 80, targetPort: 8080, appProtocol: grpc } ] }",
            "metadata: { name: db, namespace: shop }\nspec: { selector: { app: db }, ports: [ { port: 80, targetPort: 8080, appProtocol: tcp } ] }",
        ]
        .iter()
        .map(|y| yaml_serde::from_str(y).unwrap())
        .collect();
        let web = pod(&WEB.replace("name: web-1,", "name: web-1, labels: { app: web },"));
        let same_namespace = services
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some("shop"));
        let hints = service_protocols(&web, same_namespace);
        assert_eq!(
            hints.get(&8080).map(String::as_str),
            Some("http2"),
            "{hints:?}"
        );
        let endpoints = endpoints_of(&web, &td(), &hints);
        let protocol = |port: u16| {
            endpoints
                .iter()
                .find(|(a, _)| a.port() == port)
                .map(|(_, e)| e.protocol.clone())
                .unwrap()
        };
        assert_eq!(
            protocol(8080),
            "http2",
            "the Service's appProtocol beats the port name"
        );
        assert_eq!(
            protocol(9090),
            "grpc",
            "the pod's annotation beats the Service"
        );
    }
}
