//! Root rotation on Kubernetes, driven by the leader replica against a real
//! kube-apiserver: a step waits while a proxy that holds a leaf has not caught up (and
//! `ward check` names it), and goes ahead once that leaf has expired. The rotation under
//! load, with no failed call, is in `k8s_e2e`.

use std::time::{Duration, SystemTime};

use ward_tests::bin::ward;
use ward_tests::k8s::{Cluster, eventually};
use ward_tests::mesh::{ControlPlane, certify_with_token};
use ward_tests::net::free_addr;

const WEB_ID: &str = "spiffe://cluster.local/ns/bank/sa/web";

#[test]
fn a_rotation_step_waits_for_a_lagging_proxy_until_its_leaf_expires() {
    let cluster = Cluster::start();
    cluster.install_ward();
    cluster.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: { name: bank }\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: web, namespace: bank }\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: { name: web-0, namespace: bank }\n\
         spec: { serviceAccountName: web, containers: [ { name: app, image: web:test } ] }\n",
    );
    let cp = ControlPlane::start_replica_on(
        cluster.dir(),
        &cluster.kubeconfig,
        "cp-a",
        free_addr(),
        "25s",
        &["--leader-lease", "3s"],
    );
    let old_bundle = cluster.ca_secret_file("bundle.pem");
    assert_eq!(
        old_bundle.matches("BEGIN CERTIFICATE").count(),
        1,
        "{old_bundle}"
    );

    // A workload takes a leaf and never opens its bundle stream: it cannot learn a new root.
    let token = cluster.pod_token("bank", "web", "web-0", "ward");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leaf_not_after = rt.block_on(async {
        let issued = certify_with_token(cp.listen, &cp.bundle_path(), token)
            .await
            .expect("certify");
        assert_eq!(issued.spiffe_id, WEB_ID);
        SystemTime::UNIX_EPOCH + Duration::from_secs(issued.not_after_unix as u64)
    });

    let asked = cluster.ward(["ca", "rotate", "--kubernetes"]);
    assert!(
        asked.stdout.contains("root rotation requested"),
        "{asked:?}"
    );
    // The leader prepares (a second root in the bundle), then holds activation for the
    // proxy that does not have it; `ward check` says which.
    let check = eventually(
        Duration::from_secs(20),
        "ward check reports the wait",
        || {
            let out = cluster.ward(["check"]).stdout;
            out.contains("[warn] root rotation: prepared")
                .then_some(out)
        },
    );
    assert!(
        check.contains(&format!("waiting for {WEB_ID} (has bundle 0,")),
        "{check}"
    );
    assert_eq!(
        cluster
            .ca_secret_file("bundle.pem")
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    let again = cluster.ward(["ca", "rotate", "--kubernetes"]);
    assert!(
        again.stdout.contains("already under way (phase: Prepared)"),
        "{again:?}"
    );
    assert!(
        SystemTime::now() < leaf_not_after,
        "the leaf lived through the wait"
    );

    // Once its leaf has expired the proxy no longer counts: activate and finish follow.
    let new_bundle = eventually(Duration::from_secs(60), "the rotation completes", || {
        let bundle = cluster.ca_secret_file("bundle.pem");
        (bundle != old_bundle && bundle.matches("BEGIN CERTIFICATE").count() == 1).then_some(bundle)
    });
    assert!(
        SystemTime::now() >= leaf_not_after,
        "activated while the lagging leaf was alive"
    );
    assert!(cluster.ca_secret_file("ca.pem").len() > 100);
    assert!(!new_bundle.is_empty());
    assert!(
        cluster
            .ward(["check"])
            .stdout
            .contains("[ok]   root rotation: none under way"),
        "the rotation is over"
    );
}

/// The flags: `--rotate-root-before` is bounded (a new root must not be due at once), and
/// `ward ca rotate` needs a data directory or `--kubernetes`, not both.
#[test]
fn rotation_flags_are_refused_when_they_cannot_work() {
    let too_long = ward([
        "control-plane",
        "--kubernetes",
        "--rotate-root-before",
        "200d",
    ]);
    assert!(
        too_long.fails_with(2).contains("at most 182d"),
        "{too_long:?}"
    );
    let neither = ward(["ca", "rotate"]);
    assert!(neither.fails_with(2).contains("--data-dir"), "{neither:?}");
    let both = ward(["ca", "rotate", "--kubernetes", "--data-dir", "/tmp/x"]);
    assert!(
        both.fails_with(2).contains("cannot be used with"),
        "{both:?}"
    );
    let step = ward(["ca", "rotate", "--kubernetes", "--step", "finish"]);
    assert!(
        step.fails_with(2).contains("cannot be used with"),
        "{step:?}"
    );
}
