//! ward on Kubernetes end to end, with a real kube-apiserver and a test harness playing
//! the node (`ward_tests::node`): the control plane runs against the API server with its
//! webhook; Deployments created in a labelled namespace have their pods injected; the
//! harness runs those pods (the real `ward-proxy init` and sidecar, in network namespaces);
//! the proxies attest with their pods' tokens, discover each other from the Pods, and
//! carry captured calls over mTLS with the right SPIFFE IDs, under policy applied with
//! kubectl. Needs root (network namespaces, nftables); CI runs as root.

use std::time::Duration;

use ward_tests::k8s::{Cluster, eventually};
use ward_tests::mesh::ControlPlane;
use ward_tests::net::free_addr;
use ward_tests::netns::{self, Netns};
use ward_tests::node::Node;

const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn curl(ns: &Netns, url: &str) -> String {
    let out = ns.exec(&[
        "curl",
        "-s",
        "--max-time",
        "10",
        "-w",
        "\nstatus=%{http_code}",
        url,
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn deployment(app: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: {app}, namespace: shop }}\n\
         spec:\n  replicas: 1\n  selector: {{ matchLabels: {{ app: {app} }} }}\n  template:\n    metadata: {{ labels: {{ app: {app} }} }}\n    \
         spec: {{ serviceAccountName: {app}, containers: [ {{ name: {app}, image: \"{app}:1\", ports: [ {{ name: http, containerPort: 8080 }} ], \
         readinessProbe: {{ httpGet: {{ path: /healthz, port: http }} }}, livenessProbe: {{ tcpSocket: {{ port: 8080 }} }} }} ] }}\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{ name: {app}, namespace: shop }}\n"
    )
}

/// Plays the ReplicaSet controller: pod `NAME-0` from the Deployment's template (the
/// webhook injects it as it is created).
fn pod_of(cluster: &Cluster, app: &str) -> String {
    let template: serde_json::Value = serde_json::from_str(
        cluster
            .kubectl([
                "get",
                "deployment",
                app,
                "-n",
                "shop",
                "-o",
                "jsonpath={.spec.template}",
            ])
            .ok(),
    )
    .unwrap();
    let name = format!("{app}-0");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "shop", "labels": template["metadata"]["labels"] },
        "spec": template["spec"],
    });
    cluster.apply(&pod.to_string());
    name
}

#[test]
fn injected_pods_attest_discover_each_other_and_talk_mtls_under_crd_policy() {
    if let Some(why) = netns::unavailable() {
        eprintln!("SKIPPED (needs root with network namespaces and nftables): {why}");
        return;
    }
    let cluster = Cluster::start();
    cluster.install_ward();
    let mut node = Node::new(&cluster.dir().join("node"));
    // Two control-plane replicas behind one Service address (kube-proxy played by the
    // harness); SVIDs live 20 s so the proxies renew during the test.
    let on_bridge = || std::net::SocketAddr::new(node.host.into(), free_addr().port());
    let (a_addr, b_addr, service) = (on_bridge(), on_bridge(), on_bridge());
    let webhook = free_addr();
    let webhook_flag = webhook.to_string();
    let short = ["--leader-lease", "3s"];
    let mut a_args = short.to_vec();
    a_args.extend([
        "--webhook",
        &webhook_flag,
        "--webhook-name",
        "127.0.0.1",
        "--proxy-image",
        "ward:test",
    ]);
    // The replicas run as their ServiceAccount: the install's RBAC must be enough.
    let account = cluster.kubeconfig_for("ward-system", "ward-control-plane");
    let mut a =
        ControlPlane::start_replica_on(cluster.dir(), &account, "cp-a", a_addr, "20s", &a_args);
    let _b = ControlPlane::start_replica_on(cluster.dir(), &account, "cp-b", b_addr, "20s", &short);
    ward_tests::node::service(service, vec![a_addr, b_addr]);
    cluster.route_webhook(webhook);
    cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, labels: { ward.dev/inject: enabled } }\n");
    cluster.apply(&format!(
        "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{ name: default, namespace: ward-system }}\nspec: {{ default: deny }}\n---\n\
         apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: orders-read, namespace: shop }}\n\
         spec: {{ selector: {{ matchLabels: {{ app: orders }} }}, action: ALLOW, rules: [ {{ from: [ {{ principals: [\"{WEB_ID}\"] }} ], to: [ {{ methods: [GET] }} ] }} ] }}\n"
    ));
    for app in ["web", "orders"] {
        eventually(Duration::from_secs(20), "the webhook answers", || {
            let run = cluster.kubectl_with_input(["apply", "-f", "-"], &deployment(app));
            (run.code == 0).then_some(())
        });
    }
    // A Service in front of orders, its ClusterIP played by the harness.
    let orders_vip = node.cluster_ip(10);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: orders, namespace: shop }}\n\
         spec: {{ clusterIP: {orders_vip}, selector: {{ app: orders }}, ports: [ {{ name: http, port: 80, targetPort: 8080 }} ] }}\n"
    ));
    let (web_pod, orders_pod) = (pod_of(&cluster, "web"), pod_of(&cluster, "orders"));
    let web = node.run_pod(&cluster, "shop", &web_pod, service);
    let orders = node.run_pod(&cluster, "shop", &orders_pod, service);
    ward_tests::node::service((orders_vip, 80).into(), vec![(orders.ip, 8080).into()]);

    // The web sidecar learns the orders pod from discovery (the Pods), then its captured
    // call goes over mTLS: the orders app sees web's SPIFFE ID set by its own sidecar.
    let url = format!("http://{}:8080/orders/1", orders.ip);
    let seen = eventually(
        Duration::from_secs(20),
        "web reaches orders over the mesh",
        || {
            let seen = curl(&web.ns, &url);
            seen.contains("status=200").then_some(seen)
        },
    );
    assert!(
        seen.contains(&format!("x-ward-peer-identity: {WEB_ID}")),
        "{seen}\n{}",
        std::fs::read_to_string(&web.log).unwrap_or_default()
    );
    // The leader (with only the install's RBAC) marked the policy accepted.
    eventually(Duration::from_secs(10), "orders-read is Accepted", || {
        let accepted = cluster.kubectl([
            "get",
            "wap",
            "orders-read",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status}",
        ]);
        (accepted.stdout == "True").then_some(())
    });
    // The same call by the Service's ClusterIP: mTLS too, as the identity of the pods the
    // Service selects.
    let by_service = eventually(
        Duration::from_secs(20),
        "web reaches orders by its ClusterIP over the mesh",
        || {
            let seen = curl(&web.ns, &format!("http://{orders_vip}/orders/1"));
            seen.contains("status=200").then_some(seen)
        },
    );
    assert!(
        by_service.contains(&format!("x-ward-peer-identity: {WEB_ID}")),
        "{by_service}"
    );
    // The kubelet's probes (played here from the node, as the kubelet would send them):
    // the app's own port takes only mTLS now, so the injector moved them to the admin
    // port, where the sidecar runs them against the app.
    for kind in ["readinessProbe", "livenessProbe"] {
        let (path, port) = kubelet_probe(&cluster, &orders_pod, kind);
        assert_eq!(port, 15000, "{kind}");
        let answer = ward_tests::net::http_get((orders.ip, port).into(), &path);
        assert_eq!(answer.map(|(s, _)| s), Some(200), "{kind} {path}");
    }
    let plain = ward_tests::net::http_get((orders.ip, 8080).into(), "/healthz");
    assert!(
        plain.is_none_or(|(s, _)| s != 200),
        "a plaintext probe of the app port is not answered by the app"
    );
    // Policy: nothing allows orders to call web.
    let back = curl(&orders.ns, &format!("http://{}:8080/", web.ip));
    assert!(back.contains("status=403"), "{back}");

    // The leader is killed: the other replica takes the Lease, and the proxies' SVIDs keep
    // renewing (through the Service, now to the survivor) while traffic goes on; a
    // proxy's policy stream is accepted by a replica that never attested it.
    let before = web.serial();
    let holder = || cluster.lease_holder();
    eventually(
        Duration::from_secs(15),
        "cp-a leads (it started first)",
        || (holder() == "cp-a").then_some(()),
    );
    // cp-a is both the leader and the backend the Service prefers: every stream and
    // renewal must move to cp-b.
    a.kill9();
    eventually(Duration::from_secs(20), "cp-b takes the Lease", || {
        (holder() == "cp-b").then_some(())
    });
    eventually(
        Duration::from_secs(40),
        "web renews its SVID after the failover",
        || (web.serial() != before).then_some(()),
    );
    assert!(
        curl(&web.ns, &url).contains("status=200"),
        "traffic after the failover"
    );

    // A root rotation asked for with `ward ca rotate --kubernetes`: the leader takes the
    // three steps as the proxies catch up, and not one call fails meanwhile.
    let old_bundle = cluster.trust_bundle("shop");
    let rotated = rotate_under_load(&cluster, &web.ns, &url, &old_bundle);
    assert_eq!(rotated.matches("BEGIN CERTIFICATE").count(), 1, "{rotated}");
    assert_ne!(rotated, old_bundle, "a new root");
    let check = cluster.ward(["check"]).stdout;
    assert!(
        check.contains("[ok]   proxy certificates: 2 proxies")
            && check.contains("[ok]   root rotation: none under way"),
        "{check}"
    );

    // Deleting the policy denies web again within a second.
    let deleted = std::time::Instant::now();
    cluster
        .kubectl(["delete", "authorizationpolicy", "orders-read", "-n", "shop"])
        .ok();
    eventually(Duration::from_secs(5), "the deletion takes effect", || {
        curl(&web.ns, &url).contains("status=403").then_some(())
    });
    let took = deleted.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "kubectl delete took {took:?}"
    );
}

/// Asks for a root rotation and calls `url` from `ns` without pause until the bundle
/// published to `shop` is a single root other than `old_bundle`; every call must answer
/// 200. Returns the new bundle.
fn rotate_under_load(cluster: &Cluster, ns: &Netns, url: &str, old_bundle: &str) -> String {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                answers.push(curl(ns, url));
            }
            answers
        });
        let asked = cluster.ward(["ca", "rotate", "--kubernetes"]);
        assert!(
            asked.stdout.contains("root rotation requested"),
            "{asked:?}"
        );
        let rotated = eventually(
            Duration::from_secs(90),
            "the rotation completes (one new root published)",
            || {
                let now = cluster.trust_bundle("shop");
                (now != old_bundle && now.matches("BEGIN CERTIFICATE").count() == 1).then_some(now)
            },
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answers = load.join().expect("the load thread");
        let failed: Vec<&String> = answers
            .iter()
            .filter(|a| !a.contains("status=200"))
            .collect();
        assert!(answers.len() >= 20, "only {} calls", answers.len());
        assert!(
            failed.is_empty(),
            "{} of {} calls failed: {failed:?}",
            failed.len(),
            answers.len()
        );
        rotated
    })
}

/// The HTTP GET the kubelet would send for the pod's `kind` probe, as stored.
fn kubelet_probe(cluster: &Cluster, pod: &str, kind: &str) -> (String, u16) {
    let probe: serde_json::Value = serde_json::from_str(
        cluster
            .kubectl([
                "get",
                "pod",
                pod,
                "-n",
                "shop",
                "-o",
                &format!("jsonpath={{.spec.containers[0].{kind}}}"),
            ])
            .ok(),
    )
    .unwrap();
    let get = &probe["httpGet"];
    let port = get["port"].as_u64().expect("a numbered port") as u16;
    (get["path"].as_str().unwrap().to_owned(), port)
}
