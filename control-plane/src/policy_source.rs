//! Where policy comes from: a directory of YAML files today (Kubernetes CRDs next).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::state::*;
use ward_policy::PolicySet;
use ward_runtime::Drain;

/// Polls the policy directory; a valid change is pushed to every watcher, a broken one is
/// refused with every error logged and the last good set stays.
pub(crate) async fn watch_policy(dir: PathBuf, state: Arc<State>, drain: Drain) {
    let seen = ward_policy::load::fingerprint(&dir);
    let (fp, load) = (dir.clone(), dir);
    let apply = move |loaded: Result<PolicySet, ward_policy::PolicyErrors>| match loaded {
        Ok(set) => {
            state.policy.send_modify(|current| {
                *current = Arc::new((current.0 + 1, set, Instant::now()));
            });
            tracing::info!(version = state.policy.borrow().0, "policy updated");
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(target: "ward::policy", "{e}");
            }
            tracing::warn!("policy refused; the last good policy stays in force");
        }
    };
    ward_runtime::poll::poll_changes(
        ward_runtime::poll::POLL_EVERY,
        Some(seen),
        move || ward_policy::load::fingerprint(&fp),
        move || ward_policy::load_dir(&load),
        apply,
        async move { drain.signaled().await },
    )
    .await
}
