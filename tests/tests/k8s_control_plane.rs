//! `ward control-plane --kubernetes` against a real kube-apiserver: the CA in a Secret,
//! proxies attested by their pods' service-account tokens (TokenReview, audience `ward`),
//! the identity taken from the reviewed service account, and policy from the CRDs taking
//! effect within a second of `kubectl apply` and of `kubectl delete`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ward_api::v1;
use ward_tests::apps;
use ward_tests::k8s::{Cluster, eventually};
use ward_tests::mesh::{ControlPlane, Proxy, cp_channel, csr_for, http_get};
use ward_tests::net::free_addr;

const TD: &str = "cluster.local";
const WEB_ID: &str = "spiffe://cluster.local/ns/bank/sa/web";
const ORDERS_ID: &str = "spiffe://cluster.local/ns/bank/sa/orders";

/// A namespace `bank` with service accounts and (Pending) pods for web and orders.
fn workloads(cluster: &Cluster) {
    cluster.install_ward();
    let mut yaml = String::from("apiVersion: v1\nkind: Namespace\nmetadata: { name: bank }\n");
    for app in ["web", "orders"] {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{ name: {app}, namespace: bank }}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{ name: {app}-0, namespace: bank, labels: {{ app: {app} }} }}\n\
             spec: {{ serviceAccountName: {app}, containers: [ {{ name: app, image: {app}:test }} ] }}\n"
        ));
    }
    cluster.apply(&yaml);
}

/// A token for `account`'s pod `pod` in `bank`, for `audience`.
fn token(cluster: &Cluster, account: &str, pod: &str, audience: &str) -> String {
    cluster.pod_token("bank", account, pod, audience)
}

fn kubernetes_control_plane(cluster: &Cluster) -> ControlPlane {
    ControlPlane::start_kubernetes(cluster.dir(), &cluster.kubeconfig, TD, &[])
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    http_get(addr, path).map_or(0, |(s, _)| s)
}

#[test]
fn proxies_attested_by_pod_tokens_follow_crd_policy_within_a_second() {
    let cluster = Cluster::start();
    workloads(&cluster);
    let cp = kubernetes_control_plane(&cluster);
    // The CA is in the Secret, and the bundle the proxies bootstrap with comes from it.
    let bundle = cluster.ca_secret_file("bundle.pem");
    assert!(!bundle.is_empty(), "no CA Secret");
    let dir = cluster.dir();
    std::fs::copy(cp.bundle_path(), dir.join("bundle.pem")).unwrap();
    for (app, pod) in [("web", "web-0"), ("orders", "orders-0")] {
        std::fs::write(
            dir.join(format!("{app}.token")),
            token(&cluster, app, pod, "ward"),
        )
        .unwrap();
    }
    // The app serves on this runtime, kept for the whole test.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(apps::http_echo());
    let (outbound, inbound) = (free_addr(), free_addr());
    let identity = |name: &str| {
        format!(
            "identity: {{ control_plane: \"https://{}\", token_file: {name}.token, renew_with_token: true, bundle: bundle.pem }}\n",
            cp.listen
        )
    };
    let orders = Proxy::start(
        dir,
        "orders",
        &format!(
            "trust_domain: {TD}\n{}inbound: [ {{ listen: {inbound}, app: {} }} ]\nadmin: {}\n",
            identity("orders"),
            app.addr,
            free_addr()
        ),
    );
    let web = Proxy::start(
        dir,
        "web",
        &format!(
            "trust_domain: {TD}\n{}outbound: [ {{ listen: {outbound}, upstream: {inbound}, server_identity: \"{ORDERS_ID}\" }} ]\nadmin: {}\n",
            identity("web"),
            free_addr()
        ),
    );
    for (proxy, id) in [(&orders, ORDERS_ID), (&web, WEB_ID)] {
        let certs: serde_json::Value = serde_json::from_str(&proxy.admin_get("/certs").1).unwrap();
        assert_eq!(
            certs["spiffe_id"], id,
            "the identity is the pod's service account"
        );
    }
    // No policy: the mesh default denies.
    assert_eq!(status(outbound, "/orders/1"), 403);

    let policy = format!(
        "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: orders-read, namespace: bank }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: orders }} }}\n  action: ALLOW\n  rules:\n  - from: [ {{ principals: [\"{WEB_ID}\"] }} ]\n    to: [ {{ methods: [GET] }} ]\n"
    );
    let applied = Instant::now();
    cluster.apply(&policy);
    eventually(Duration::from_secs(5), "the policy allows web", || {
        (status(outbound, "/orders/1") == 200).then_some(())
    });
    let took = applied.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "kubectl apply took {took:?} to take effect"
    );
    let deleted = Instant::now();
    cluster
        .kubectl(["delete", "authorizationpolicy", "orders-read", "-n", "bank"])
        .ok();
    eventually(
        Duration::from_secs(5),
        "deleting the policy denies web again",
        || (status(outbound, "/orders/1") == 403).then_some(()),
    );
    let took = deleted.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "kubectl delete took {took:?} to take effect"
    );
    eprintln!("policy took effect after apply and delete within {took:?}");
}

#[test]
fn tokens_for_another_audience_a_deleted_account_or_a_gone_pod_are_refused() {
    let cluster = Cluster::start();
    workloads(&cluster);
    let cp = kubernetes_control_plane(&cluster);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = cp_channel(cp.listen, &cp.bundle_path(), TD, None).await;
        let mut client = v1::identity_client::IdentityClient::new(channel);
        let certify = |token: String, spiffe_id: &str| v1::CertifyRequest {
            csr: csr_for(None),
            token,
            spiffe_id: spiffe_id.to_owned(),
            serving: Vec::new(),
        };
        let good = token(&cluster, "web", "web-0", "ward");
        let ok = client
            .certify(certify(good.clone(), ""))
            .await
            .expect("a good token");
        assert_eq!(ok.into_inner().spiffe_id, WEB_ID);
        // Asking for another identity with a good token: refused, the identity is the token's.
        let err = client.certify(certify(good, ORDERS_ID)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

        let refusals = [
            (
                "another audience",
                token(&cluster, "web", "web-0", "not-ward"),
            ),
            ("not a token", "ward-00".to_owned()),
        ];
        for (what, token) in refusals {
            let err = client.certify(certify(token, "")).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{what}: {err:?}");
            assert!(
                !err.message().contains("audience ["),
                "{what}: no API server detail to the caller: {err:?}"
            );
        }

        let orphan = token(&cluster, "orders", "orders-0", "ward");
        cluster
            .kubectl(["delete", "pod", "orders-0", "-n", "bank", "--wait=false"])
            .ok();
        let err = client.certify(certify(orphan, "")).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::Unauthenticated,
            "gone pod: {err:?}"
        );

        let web = token(&cluster, "web", "web-0", "ward");
        cluster
            .kubectl(["delete", "serviceaccount", "web", "-n", "bank"])
            .ok();
        let err = client.certify(certify(web, "")).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::Unauthenticated,
            "deleted account: {err:?}"
        );
    });
}

/// The `Accepted` condition the leader writes on each policy object, for the generation
/// it read: True when in force; False with the field and reason for one that does not
/// read (here: stored under a laxer CRD, as after an upgrade to a stricter one), naming
/// the generation that stays in force.
#[test]
fn policy_objects_carry_the_control_planes_accepted_condition() {
    let cluster = Cluster::start();
    workloads(&cluster);
    let cp = kubernetes_control_plane(&cluster);
    let policy = |principals: &str| {
        format!(
            "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: orders-read, namespace: bank }}\n\
             spec: {{ action: ALLOW, rules: [ {{ from: [ {{ {principals} }} ] }} ] }}\n"
        )
    };
    cluster.apply(&policy(&format!("principals: [\"{WEB_ID}\"]")));
    let object = |path: &str| {
        cluster
            .kubectl([
                "get",
                "wap",
                "orders-read",
                "-n",
                "bank",
                "-o",
                &format!("jsonpath={{.{path}}}"),
            ])
            .stdout
    };
    let status = |path: &str| object(&format!("status.{path}"));
    let condition = |field: &str| status(&format!("conditions[?(@.type==\"Accepted\")].{field}"));
    eventually(Duration::from_secs(20), "Accepted=True", || {
        (condition("status") == "True" && condition("observedGeneration") == "1").then_some(())
    });
    let table = cluster
        .kubectl(["get", "wap", "-n", "bank"])
        .ok()
        .to_owned();
    assert!(
        table.contains("ACCEPTED") && table.contains("True"),
        "{table}"
    );

    // A CRD that no longer checks the spec (as an older one might), and an edit it lets
    // through that the control plane does not read.
    cluster
        .kubectl([
            "patch",
            "crd",
            "authorizationpolicies.ward.dev",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/versions/0/schema/openAPIV3Schema/properties/spec","value":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}]"#,
        ])
        .ok();
    eventually(
        Duration::from_secs(20),
        "the lax CRD takes the edit",
        || {
            // Until the new schema is in force the API server prunes the unknown field.
            cluster.kubectl_with_input(
                ["apply", "-f", "-"],
                &policy(&format!("principal: [\"{WEB_ID}\"]")),
            );
            let stored = object("spec.rules[0].from[0].principal");
            stored.contains(WEB_ID).then_some(())
        },
    );
    let edited = Instant::now();
    let message = eventually(Duration::from_secs(20), "Accepted=False", || {
        (condition("status") == "False").then(|| condition("message"))
    });
    assert!(
        message.contains("spec.rules[0].from[0]") && message.contains("unknown field `principal`"),
        "{message}"
    );
    // The generation in force is the last that read: 1, or the edit itself if the API
    // server served it pruned by the old schema before the new one took effect (its last
    // good reading is then what stays in force).
    let generation = |field: &str| status(field).parse::<i64>().unwrap();
    let (accepted, observed) = (
        generation("acceptedGeneration"),
        generation("observedGeneration"),
    );
    assert!(
        accepted >= 1 && accepted <= observed,
        "{accepted} {observed}"
    );
    assert!(
        message.ends_with(&format!("generation {accepted} stays in force")),
        "{message}"
    );
    assert_eq!(condition("reason"), "Invalid");
    // The policy source saw the edit too (its watch also started over) and kept the last
    // good version.
    eventually(
        Duration::from_secs(10),
        "the policy source refuses the edit",
        || {
            cp.logs()
                .contains("AuthorizationPolicy bank/orders-read refused")
                .then_some(())
        },
    );
    // The CRD change strands the API server's watches; the control plane starts them over
    // when it notices (every 3 s).
    assert!(
        edited.elapsed() < Duration::from_secs(10),
        "{:?}",
        edited.elapsed()
    );
}
