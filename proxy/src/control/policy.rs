//! Policy from the control plane: this workload's snapshots, put in force in the
//! authorizer as they come; one that does not load is refused and the last good stays.

use std::path::Path;
use std::sync::Arc;

use metrics::gauge;
use tokio_stream::StreamExt;
use ward_certs::MeshIdentity;
use ward_runtime::Pending;

use super::{ControlPlane, Health, Stream, status_text};
use crate::authz::Authorizer;

/// Follows this workload's policy snapshots into `authz`, for ever; `not_ready` is cleared
/// by the first snapshot put in force. Snapshots arrive through a `watch`, so one that
/// takes long to compile is followed by the newest, never by a queue of stale ones.
pub async fn follow(
    client: ControlPlane,
    identity: MeshIdentity,
    health: Arc<Health>,
    authz: Arc<Authorizer>,
    not_ready: Option<Pending>,
) {
    let open = || async {
        let stream = client
            .watch_policy(&identity)
            .await
            .map_err(|s| status_text(&s))?;
        Ok::<_, String>(stream.map(|m| m.map(Some).map_err(|s| status_text(&s))))
    };
    let not_ready = std::sync::Mutex::new(not_ready);
    let apply = |snapshot| {
        let (authz, health, not_ready) = (&authz, &health, &not_ready);
        async move {
            if apply(snapshot, authz).await {
                health.updated(Stream::Policy);
                drop(not_ready.lock().map(|mut pending| pending.take()));
            }
        }
    };
    super::follow_snapshots(Stream::Policy, &health, open, apply).await
}

/// Checks a snapshot's policies as a file's would be (off the async workers) and puts
/// them in force; false if refused.
async fn apply(snapshot: ward_api::v1::PolicySnapshot, authz: &Authorizer) -> bool {
    let version = snapshot.version;
    let loaded = tokio::task::spawn_blocking(move || ward_policy::wire::policy_set(&snapshot))
        .await
        .unwrap_or_else(|e| Err(crate::authz::load_failed(Path::new("control plane"), &e)));
    match loaded {
        Ok(set) => {
            let applying = authz.install(&set);
            gauge!("ward_policy_version").set(version as f64);
            gauge!("ward_policy_updated_timestamp_seconds")
                .set(ward_runtime::time::unix_secs(std::time::SystemTime::now()) as f64);
            tracing::info!(version, applying, "policy from the control plane in force");
            true
        }
        Err(errors) => {
            tracing::error!(%errors, "refused a policy snapshot; the last good one stays");
            false
        }
    }
}
