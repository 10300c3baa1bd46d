//! `ward check`'s certificate lines: the proxies' leaves (how old, whether they renew) and
//! the root rotation's phase, from the replicas' statuses (`crate::status`) and the CA
//! Secret.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use ward_control_plane::rotation::{Phase, Status as MeshStatus};
use ward_runtime::time::human;

use crate::check_line::{Check, Status, check};
use crate::install::names::CA_SECRET;
use crate::rotation::{REQUEST_ANNOTATION, phase};
use crate::status;

/// The certificate lines.
pub async fn run(client: &kube::Client, namespace: &str) -> Vec<Check> {
    let now = SystemTime::now();
    let merged = match status::read_all(client, namespace).await {
        Ok(all) => status::merge(&status::fresh(all, now), now),
        Err(e) => {
            return vec![check(
                Status::Fail,
                "certificates",
                format!("cannot read the replicas' status: {e}"),
            )];
        }
    };
    let merged = match merged {
        Ok(m) => m,
        Err(e) => return vec![check(Status::Warn, "certificates", e.to_string())],
    };
    vec![
        leaves(&merged, now),
        rotation(client, namespace, &merged).await,
    ]
}

/// Every live proxy's leaf: its age, and a warning for one past three quarters of its life
/// (it renews at half).
fn leaves(mesh: &MeshStatus, now: SystemTime) -> Check {
    let name = "proxy certificates";
    let ttl = Duration::from_secs(mesh.svid_ttl_secs);
    let now_unix = ward_runtime::time::unix_secs(now);
    let left = |p: &ward_control_plane::rotation::ProxyStatus| {
        Duration::from_secs(
            u64::try_from(p.leaf_not_after_unix)
                .unwrap_or(0)
                .saturating_sub(now_unix),
        )
    };
    let live: Vec<_> = mesh.live_proxies().collect();
    if live.is_empty() {
        return check(Status::Ok, name, "no proxy holds a leaf yet");
    }
    let ages: Vec<Duration> = live
        .iter()
        .map(|(_, p)| ttl.saturating_sub(left(p)))
        .collect();
    let (youngest, oldest) = (
        ages.iter().min().copied().unwrap_or_default(),
        ages.iter().max().copied().unwrap_or_default(),
    );
    let overdue: Vec<String> = live
        .iter()
        .filter(|(_, p)| left(p) < ttl / 4)
        .map(|(id, p)| format!("{id} (expires in {})", human(left(p))))
        .collect();
    if overdue.is_empty() {
        check(
            Status::Ok,
            name,
            format!(
                "{} proxies, leaves {}–{} old (they live {}, renewed at half)",
                live.len(),
                human(youngest),
                human(oldest),
                human(ttl)
            ),
        )
    } else {
        check(
            Status::Warn,
            name,
            format!(
                "{} of {} proxies have not renewed past three quarters of their leaf's life: {}",
                overdue.len(),
                live.len(),
                overdue.join(", ")
            ),
        )
    }
}

/// The root rotation: none, asked for, or under way and what it waits for.
async fn rotation(client: &kube::Client, namespace: &str, mesh: &MeshStatus) -> Check {
    let name = "root rotation";
    let secret = match Api::<Secret>::namespaced(client.clone(), namespace)
        .get(CA_SECRET)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return check(
                Status::Fail,
                name,
                format!("cannot read the CA Secret: {e}"),
            );
        }
    };
    let requested = secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(REQUEST_ANNOTATION));
    let waiting = match phase(&secret) {
        Err(e) => return check(Status::Fail, name, format!("{e:#}")),
        Ok(Phase::Stable) if requested => {
            return check(Status::Ok, name, "requested; the leader starts it");
        }
        Ok(Phase::Stable) => {
            return check(Status::Ok, name, "none under way");
        }
        Ok(Phase::Prepared) => ("prepared: the new root is pushed", mesh.lagging_bundle()),
        Ok(Phase::Activated) => (
            "activated: the new root signs",
            mesh.lagging_leaves(&mesh.active_root),
        ),
    };
    match waiting {
        (what, lagging) if lagging.is_empty() => {
            check(Status::Ok, name, format!("{what}; the next step is ready"))
        }
        (what, lagging) => check(
            Status::Warn,
            name,
            format!("{what}; waiting for {}", lagging.join(", ")),
        ),
    }
}
