//! A signal for when ward's CRDs change (an upgrade): watches of custom resources opened
//! before a CRD changed can be stranded (seen here with kube-apiserver v1.36: no more
//! events, no error, until the watch times out minutes later; kubernetes#71138 was this
//! once), so the policy watches start over when the signal moves. The CRDs themselves
//! are read every [`EVERY`] (two GETs).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use tokio::sync::watch;

/// How often the CRDs are read.
pub const EVERY: Duration = Duration::from_secs(3);

/// The names of the CRDs policy is read from.
pub const POLICY_CRDS: [&str; 2] = ["authorizationpolicies.ward.dev", "meshpolicies.ward.dev"];

/// A receiver whose value changes whenever a policy CRD's generation (or uid: deleted and
/// created again) does; the poller stops once every receiver is gone.
pub fn follow(client: kube::Client) -> watch::Receiver<Vec<Option<(String, i64)>>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let api = Api::<CustomResourceDefinition>::all(client);
        loop {
            let mut now = Vec::with_capacity(POLICY_CRDS.len());
            let mut read_all = true;
            for name in POLICY_CRDS {
                match api.get_opt(name).await {
                    Ok(crd) => now.push(crd.and_then(|c| {
                        Some((c.metadata.uid?, c.metadata.generation.unwrap_or_default()))
                    })),
                    Err(e) => {
                        tracing::debug!(crd = name, error = %e, "cannot read a CRD");
                        read_all = false;
                    }
                }
            }
            if read_all {
                tx.send_if_modified(|seen| {
                    if *seen == now {
                        return false;
                    }
                    let first = seen.is_empty();
                    *seen = now;
                    if !first {
                        tracing::info!("a policy CRD changed; policy watches start over");
                    }
                    !first
                });
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = tx.closed() => return,
            }
        }
    });
    rx
}
