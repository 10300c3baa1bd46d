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
    assert!(merged(known.values()).is_empty());
    known.remove(&("shop".to_owned(), "web-2".to_owned()));
    assert_eq!(merged(known.values()).len(), 4);
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

fn service(yaml: &str) -> Service {
    yaml_serde::from_str(yaml).unwrap()
}

fn keyed<K: kube::Resource>(objects: Vec<K>) -> BTreeMap<Key, K> {
    objects
        .into_iter()
        .map(|o| {
            let key = (
                o.meta().namespace.clone().unwrap(),
                o.meta().name.clone().unwrap(),
            );
            (key, o)
        })
        .collect()
}

const WEB_SERVICE: &str = "metadata: { name: web, namespace: shop }\nspec: { clusterIP: 10.96.0.10, clusterIPs: [ 10.96.0.10 ], selector: { app: web }, ports: [ { name: http, port: 80, targetPort: 8080 }, { name: api, port: 91, targetPort: 9090 } ] }";

fn labelled(name: &str, account: &str, ip: &str) -> Pod {
    pod(&WEB
        .replace(
            "name: web-1,",
            &format!("name: {name}, labels: {{ app: web }},"),
        )
        .replace(
            "serviceAccountName: web",
            &format!("serviceAccountName: {account}"),
        )
        .replace("10.1.0.7", ip))
}

#[test]
fn a_services_cluster_ip_is_the_identity_of_the_pods_it_selects() {
    let pods = keyed(vec![
        labelled("web-1", "web", "10.1.0.7"),
        labelled("web-2", "web", "10.1.0.8"),
    ]);
    let services = keyed(vec![service(WEB_SERVICE)]);
    let all = endpoints(&pods, &services, &td());
    let at = |a: &str| all.get(&a.parse::<SocketAddr>().unwrap()).cloned();
    let http = at("10.96.0.10:80").expect("the ClusterIP's port 80");
    assert_eq!(http.spiffe_id, "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!((http.protocol.as_str(), http.inbound_port), ("http1", 0));
    // Port 91 targets 9090, which the pods' annotation calls grpc.
    assert_eq!(at("10.96.0.10:91").unwrap().protocol, "grpc");
    assert!(at("10.1.0.8:8080").is_some(), "the pods stay endpoints too");
}

#[test]
fn a_cluster_ip_in_front_of_unmeshed_or_mixed_pods_or_headless_is_not_an_endpoint() {
    let cluster_ip = "10.96.0.10:80".parse::<SocketAddr>().unwrap();
    let plain = pod(&WEB
        .replace("ward.dev/injected: \"0.1.0\", ", "")
        .replace("name: web-1,", "name: web-3, labels: { app: web },")
        .replace("10.1.0.7", "10.1.0.9"));
    let cases = [
        (
            "an unmeshed pod behind it",
            vec![labelled("web-1", "web", "10.1.0.7"), plain],
            WEB_SERVICE.to_owned(),
        ),
        (
            "two service accounts",
            vec![
                labelled("web-1", "web", "10.1.0.7"),
                labelled("web-2", "thief", "10.1.0.8"),
            ],
            WEB_SERVICE.to_owned(),
        ),
        (
            "headless",
            vec![labelled("web-1", "web", "10.1.0.7")],
            WEB_SERVICE.replace(
                "clusterIP: 10.96.0.10, clusterIPs: [ 10.96.0.10 ]",
                "clusterIP: None",
            ),
        ),
        (
            "no selector",
            vec![labelled("web-1", "web", "10.1.0.7")],
            WEB_SERVICE.replace("selector: { app: web }, ", ""),
        ),
        (
            "nothing selected",
            vec![labelled("web-1", "web", "10.1.0.7")],
            WEB_SERVICE.replace("app: web", "app: db"),
        ),
    ];
    for (what, pods, svc) in cases {
        let all = endpoints(&keyed(pods), &keyed(vec![service(&svc)]), &td());
        assert!(!all.contains_key(&cluster_ip), "{what}: {all:?}");
        assert!(
            all.contains_key(&"10.1.0.7:8080".parse().unwrap()),
            "{what}: the pod itself is still meshed"
        );
    }
}

#[test]
fn an_event_recomputes_its_namespace_to_what_a_whole_recompute_gives() {
    let mut pods = keyed(vec![
        labelled("web-1", "web", "10.1.0.7"),
        labelled("web-2", "web", "10.1.0.8"),
    ]);
    let mut other = labelled("web-1", "web", "10.2.0.7");
    other.metadata.namespace = Some("other".into());
    pods.insert(("other".into(), "web-1".into()), other);
    let mut services = keyed(vec![service(WEB_SERVICE)]);
    let mut index = Index::new(td());
    index.refresh(&Changed::All, &pods, &services);
    assert_eq!(index.endpoints(), endpoints(&pods, &services, &td()));
    // A pod goes, a pod of another account comes: the ClusterIP is no longer meshed.
    pods.remove(&("shop".into(), "web-2".into()));
    pods.insert(
        ("shop".into(), "web-3".into()),
        labelled("web-3", "thief", "10.1.0.9"),
    );
    index.refresh(&Changed::Namespace("shop".into()), &pods, &services);
    let now = index.endpoints();
    assert_eq!(now, endpoints(&pods, &services, &td()));
    assert!(!now.contains_key(&"10.96.0.10:80".parse().unwrap()));
    assert!(
        !now.contains_key(&"10.1.0.8:8080".parse().unwrap()),
        "the gone pod"
    );
    assert!(
        now.contains_key(&"10.2.0.7:8080".parse().unwrap()),
        "other namespaces kept"
    );
    // The Service goes.
    services.clear();
    index.refresh(&Changed::Namespace("shop".into()), &pods, &services);
    assert_eq!(index.endpoints(), endpoints(&pods, &services, &td()));
}
