//! The trust bundle where injected pods mount it: a ConfigMap `ward-trust-bundle` in every
//! namespace labelled `ward.dev/inject=enabled`, written at start, when such a namespace
//! appears, and whenever the bundle changes (a root rotation), so a proxy that starts or
//! restarts always bootstraps with the roots in force. The leader replica does it
//! (server-side apply: a new leader rewriting what the last one wrote changes nothing).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams};
use ward_runtime::Drain;

use crate::inject::{BUNDLE_CONFIGMAP, BUNDLE_KEY};
use crate::install::names::INJECT_LABEL;

/// How often namespaces and the bundle file are looked at again.
const EVERY: Duration = Duration::from_secs(2);

/// Keeps the ConfigMaps in step with `bundle_file` while `leader` says so, until the
/// drain begins.
pub async fn publish(
    client: kube::Client,
    bundle_file: PathBuf,
    leader: tokio::sync::watch::Receiver<bool>,
    drain: Drain,
) {
    let namespaces = Api::<Namespace>::all(client.clone());
    let selector = ListParams::default().labels(&format!("{INJECT_LABEL}=enabled"));
    // (namespace -> bundle written there)
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if !*leader.borrow() {
            // A new term starts from nothing written: another leader may have written since.
            written.clear();
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = drain.signaled() => return,
            }
            continue;
        }
        match (
            namespaces.list(&selector).await,
            std::fs::read_to_string(&bundle_file),
        ) {
            (Ok(list), Ok(bundle)) => {
                for ns in list.items.into_iter().filter_map(|n| n.metadata.name) {
                    if written.get(&ns) == Some(&bundle) {
                        continue;
                    }
                    match apply(&client, &ns, &bundle).await {
                        Ok(()) => {
                            tracing::info!(namespace = %ns, configmap = BUNDLE_CONFIGMAP, "trust bundle published");
                            written.insert(ns, bundle.clone());
                        }
                        Err(e) => {
                            tracing::warn!(namespace = %ns, error = %e, "cannot publish the trust bundle")
                        }
                    }
                }
            }
            (Err(e), _) => tracing::warn!(error = %e, "cannot list meshed namespaces"),
            (_, Err(e)) => {
                tracing::warn!(file = %bundle_file.display(), error = %e, "cannot read the trust bundle")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = drain.signaled() => return,
        }
    }
}

async fn apply(client: &kube::Client, namespace: &str, bundle: &str) -> Result<(), kube::Error> {
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": BUNDLE_CONFIGMAP,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/part-of": "ward" },
        },
        "data": { BUNDLE_KEY: bundle },
    });
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            BUNDLE_CONFIGMAP,
            &PatchParams::apply("ward-control-plane").force(),
            &Patch::Apply(value),
        )
        .await
        .map(drop)
}
