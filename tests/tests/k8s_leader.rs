//! Control-plane replicas against a real kube-apiserver: one leads by the
//! `ward-system/ward-control-plane` Lease; when the leader is killed the other takes over
//! within the lease, and a replica stopped gracefully gives the Lease up at once. Both
//! serve proxies throughout (each attests and signs on its own).

use std::time::{Duration, Instant};

use ward_tests::k8s::{Cluster, eventually};
use ward_tests::mesh::{ControlPlane, certify_with_token, http_get};

const LEASE: &str = "3s";

fn holder(cluster: &Cluster) -> String {
    cluster.lease_holder()
}

fn leads(cp: &ControlPlane) -> bool {
    http_get(cp.admin, "/metrics").is_some_and(|(_, body)| body.contains("ward_cp_leader 1"))
}

#[test]
fn the_lease_moves_when_the_leader_dies_and_is_given_up_on_a_graceful_stop() {
    let cluster = Cluster::start();
    cluster.install_ward();
    cluster.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: { name: bank }\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: { name: web, namespace: bank }\n---\napiVersion: v1\nkind: Pod\nmetadata: { name: web-0, namespace: bank }\nspec: { serviceAccountName: web, containers: [ { name: app, image: web:1 } ] }\n",
    );
    let dir = cluster.dir();
    let args = ["--leader-lease", LEASE];
    let mut a = ControlPlane::start_replica(dir, &cluster.kubeconfig, "cp-a", &args);
    let mut b = ControlPlane::start_replica(dir, &cluster.kubeconfig, "cp-b", &args);
    let first = eventually(Duration::from_secs(15), "a replica takes the Lease", || {
        let h = holder(&cluster);
        (!h.is_empty()).then_some(h)
    });
    let (leader, follower, follower_name) = if first == "cp-a" {
        (&mut a, &mut b, "cp-b")
    } else {
        (&mut b, &mut a, "cp-a")
    };
    eventually(
        Duration::from_secs(5),
        "the leader says so in its metrics",
        || leads(leader).then_some(()),
    );
    assert!(!leads(follower), "one leader");

    // Both replicas share the CA (the Secret) and attest proxies.
    let token = cluster.pod_token("bank", "web", "web-0", "ward");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let certify = |cp: &ControlPlane| {
        let (addr, bundle, token) = (cp.listen, cp.bundle_path(), token.clone());
        rt.block_on(async move {
            certify_with_token(addr, &bundle, token)
                .await
                .map(|r| r.spiffe_id)
        })
    };
    for cp in [&*leader, &*follower] {
        assert_eq!(
            certify(cp).expect("certify"),
            "spiffe://cluster.local/ns/bank/sa/web"
        );
    }
    assert_eq!(
        std::fs::read(leader.bundle_path()).unwrap(),
        std::fs::read(follower.bundle_path()).unwrap(),
        "one CA"
    );

    // The leader dies without a word: the follower takes over once the Lease runs out.
    let killed = Instant::now();
    leader.kill9();
    eventually(
        Duration::from_secs(20),
        "the follower takes the Lease",
        || (holder(&cluster) == follower_name).then_some(()),
    );
    let took = killed.elapsed();
    eprintln!("the Lease moved {took:?} after the leader was killed (lease {LEASE})");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eventually(Duration::from_secs(5), "the new leader says so", || {
        leads(follower).then_some(())
    });
    // And it still signs.
    assert!(certify(follower).is_ok());

    // A graceful stop gives the Lease up at once.
    follower.terminate();
    assert_eq!(holder(&cluster), "", "the Lease was given up on SIGTERM");
}
