//! What every replica sees of the mesh, shared through the API server: each replica
//! publishes its `status.json` (the proxies it knows, the bundle it pushes, the root it
//! signs with) to a ConfigMap `ward-status-REPLICA` in the control plane's namespace; the
//! leader merges them to drive a root rotation, and `ward check` reads them for the
//! proxies' certificates. A status not refreshed for [`FRESH_FOR`] is a replica that is
//! gone (its proxies reconnect to the others); the leader deletes it after [`FORGET_AFTER`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use ward_control_plane::rotation::{STATUS_FILE, Status};
use ward_runtime::Drain;
use ward_runtime::time::unix_secs;

/// Names of the status ConfigMaps: this prefix and the replica's name.
pub const PREFIX: &str = "ward-status-";
/// The label every status ConfigMap carries (value `control-plane`).
pub const LABEL: &str = "ward.dev/status";
/// A replica republishes at least this often, and whenever what it knows changes.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A status older than this is a replica that is gone.
pub const FRESH_FOR: Duration = Duration::from_secs(15);
/// A gone replica's status is deleted after this.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The ConfigMap name for a replica (`POD_NAME`, or host and process outside a cluster):
/// lower case, with anything a name cannot hold made a `-`.
pub fn configmap_name(replica: &str) -> String {
    let cleaned: String = replica
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = format!("{PREFIX}{}", cleaned.trim_matches(|c| c == '-' || c == '.'));
    name.truncate(253);
    name
}

/// What changes a status, leaving out the clocks (written, last seen), so that a replica
/// republishes on a change and otherwise once a heartbeat.
fn content(status: &Status) -> String {
    let mut status = status.clone();
    status.written_unix = 0;
    for p in status.proxies.values_mut() {
        p.last_seen_unix = 0;
    }
    serde_json::to_string(&status).unwrap_or_default()
}

/// Publishes this replica's `status.json` from `data_dir` until the drain begins.
pub async fn publish(
    client: kube::Client,
    namespace: String,
    replica: String,
    data_dir: PathBuf,
    drain: Drain,
) {
    let api = Api::<ConfigMap>::namespaced(client, &namespace);
    let name = configmap_name(&replica);
    let file = data_dir.join(STATUS_FILE);
    let mut published: Option<(String, std::time::Instant)> = None;
    loop {
        let read = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Status>(&b).ok());
        if let Some(status) = read {
            let now = content(&status);
            let due = published
                .as_ref()
                .is_none_or(|(last, at)| *last != now || at.elapsed() >= HEARTBEAT);
            if due {
                match apply(&api, &name, &replica, &status).await {
                    Ok(()) => published = Some((now, std::time::Instant::now())),
                    Err(e) => {
                        tracing::warn!(configmap = %name, error = %e, "cannot publish the replica's status")
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = drain.signaled() => return,
        }
    }
}

async fn apply(
    api: &Api<ConfigMap>,
    name: &str,
    replica: &str,
    status: &Status,
) -> Result<(), kube::Error> {
    let json = serde_json::to_string(status).unwrap_or_default();
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": { "app.kubernetes.io/part-of": "ward", LABEL: "control-plane" },
            "annotations": { "ward.dev/replica": replica },
        },
        "data": { STATUS_FILE: json },
    });
    api.patch(
        name,
        &PatchParams::apply("ward-control-plane").force(),
        &Patch::Apply(value),
    )
    .await
    .map(drop)
}

/// One replica's published status.
#[derive(Debug, Clone)]
pub struct Replica {
    pub name: String,
    pub status: Status,
}

impl Replica {
    fn age(&self, now: SystemTime) -> Duration {
        Duration::from_secs(unix_secs(now).saturating_sub(self.status.written_unix))
    }
}

/// Every replica's status, fresh or not, by ConfigMap name.
pub async fn read_all(client: &kube::Client, namespace: &str) -> Result<Vec<Replica>, kube::Error> {
    let list = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{LABEL}=control-plane")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|cm| {
            let name = cm.metadata.name?;
            let json = cm.data?.remove(STATUS_FILE)?;
            match serde_json::from_str::<Status>(&json) {
                Ok(status) => Some(Replica { name, status }),
                Err(e) => {
                    tracing::warn!(configmap = %name, error = %e, "a replica's status does not read");
                    None
                }
            }
        })
        .collect())
}

/// The replicas that are alive (published within [`FRESH_FOR`]).
pub fn fresh(replicas: Vec<Replica>, now: SystemTime) -> Vec<Replica> {
    replicas
        .into_iter()
        .filter(|r| r.age(now) <= FRESH_FOR)
        .collect()
}

/// Why the live replicas cannot be read as one control plane.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no control-plane replica has published its status in the last {}s", FRESH_FOR.as_secs())]
    NoReplica,
    #[error("the replicas have not all loaded the CA Secret yet: {0}")]
    Disagree(String),
}

/// The mesh as the live replicas see it together, at `now`: they must push the same bundle
/// and sign with the same root; each proxy as the replica that saw it last reports it.
pub fn merge(replicas: &[Replica], now: SystemTime) -> Result<Status, MergeError> {
    let first = replicas.first().ok_or(MergeError::NoReplica)?;
    let agree = replicas.iter().all(|r| {
        r.status.bundle_version == first.status.bundle_version
            && r.status.active_root == first.status.active_root
    });
    if !agree {
        let each: Vec<String> = replicas
            .iter()
            .map(|r| {
                format!(
                    "{} pushes bundle {:x} and signs with {}",
                    r.name, r.status.bundle_version, r.status.active_root
                )
            })
            .collect();
        return Err(MergeError::Disagree(each.join("; ")));
    }
    let mut merged = Status {
        written_unix: unix_secs(now),
        bundle_version: first.status.bundle_version,
        roots: first.status.roots.clone(),
        active_root: first.status.active_root.clone(),
        svid_ttl_secs: first.status.svid_ttl_secs,
        proxies: BTreeMap::new(),
    };
    for r in replicas {
        for (id, p) in &r.status.proxies {
            let newer = merged
                .proxies
                .get(id)
                .is_none_or(|known| p.last_seen_unix > known.last_seen_unix);
            if newer {
                merged.proxies.insert(id.clone(), p.clone());
            }
        }
    }
    Ok(merged)
}

/// Deletes the statuses of replicas gone for [`FORGET_AFTER`] (the leader does it).
pub async fn forget_gone(
    client: &kube::Client,
    namespace: &str,
    replicas: &[Replica],
    now: SystemTime,
) {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    for r in replicas.iter().filter(|r| r.age(now) > FORGET_AFTER) {
        match api.delete(&r.name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(configmap = %r.name, "forgot the status of a replica long gone")
            }
            Err(e) => {
                tracing::warn!(configmap = %r.name, error = %e, "cannot delete a stale status")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_control_plane::rotation::ProxyStatus;

    fn replica(
        name: &str,
        written: u64,
        bundle: u64,
        root: &str,
        proxies: &[(&str, u64, u64)],
    ) -> Replica {
        Replica {
            name: name.into(),
            status: Status {
                written_unix: written,
                bundle_version: bundle,
                roots: vec![root.into()],
                active_root: root.into(),
                svid_ttl_secs: 60,
                proxies: proxies
                    .iter()
                    .map(|(id, seen, version)| {
                        let p = ProxyStatus {
                            bundle_version: *version,
                            leaf_not_after_unix: 2_000_000_000,
                            leaf_issuer: root.into(),
                            last_seen_unix: *seen,
                        };
                        ((*id).to_owned(), p)
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn configmap_names_are_valid_object_names() {
        assert_eq!(
            configmap_name("ward-control-plane-7d9f-x2"),
            "ward-status-ward-control-plane-7d9f-x2"
        );
        assert_eq!(configmap_name("Host_Name-42"), "ward-status-host-name-42");
        assert!(configmap_name(&"a".repeat(400)).len() <= 253);
    }

    #[test]
    fn each_proxy_is_taken_from_the_replica_that_saw_it_last() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let a = replica(
            "a",
            999,
            7,
            "r1",
            &[("spiffe://td/p", 990, 6), ("spiffe://td/q", 995, 7)],
        );
        let b = replica("b", 998, 7, "r1", &[("spiffe://td/p", 997, 7)]);
        let merged = merge(&[a, b], now).unwrap();
        assert_eq!(merged.proxies["spiffe://td/p"].bundle_version, 7);
        assert_eq!(merged.proxies.len(), 2);
        assert!(merged.lagging_bundle().is_empty());
    }

    #[test]
    fn replicas_that_disagree_are_not_merged_and_stale_ones_are_left_out() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let a = replica("a", 999, 7, "r1", &[]);
        let b = replica("b", 999, 8, "r1", &[]);
        let err = merge(&[a.clone(), b], now).unwrap_err().to_string();
        assert!(err.contains("b pushes bundle 8"), "{err}");
        let gone = replica("gone", 900, 8, "r2", &[]);
        let live = fresh(vec![a, gone], now);
        assert_eq!(live.len(), 1);
        assert!(matches!(merge(&[], now), Err(MergeError::NoReplica)));
    }
}
