//! Where policy comes from. A [`PolicySource`] gives the policy set at start and then each
//! valid change; a change that does not load is refused with every error logged and the
//! last good set stays. A directory of YAML files here; Kubernetes CRDs in `ward-k8s`.

use std::future::Future;
use std::path::PathBuf;

use ward_policy::{PolicyErrors, PolicySet};

/// A source of the mesh's policy set.
pub trait PolicySource: Send + 'static {
    /// The policy set now (at start: an error stops the start).
    fn load(&self) -> impl Future<Output = Result<PolicySet, PolicyErrors>> + Send;

    /// Follows changes until `stop` resolves, calling `apply` with each valid new set.
    fn follow(
        self,
        apply: impl FnMut(PolicySet) + Send + 'static,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send;
}

/// A directory of policy files, polled for changes.
pub struct Directory(pub PathBuf);

impl PolicySource for Directory {
    async fn load(&self) -> Result<PolicySet, PolicyErrors> {
        ward_policy::load_dir(&self.0)
    }

    async fn follow(
        self,
        mut apply: impl FnMut(PolicySet) + Send + 'static,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let seen = ward_policy::load::fingerprint(&self.0);
        let (fp, load) = (self.0.clone(), self.0);
        let apply = move |loaded: Result<PolicySet, PolicyErrors>| match loaded {
            Ok(set) => apply(set),
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
            stop,
        )
        .await
    }
}

/// No policy (every proxy gets the empty set: default deny).
pub struct Empty;

impl PolicySource for Empty {
    async fn load(&self) -> Result<PolicySet, PolicyErrors> {
        Ok(PolicySet::default())
    }

    async fn follow(
        self,
        _apply: impl FnMut(PolicySet) + Send + 'static,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        stop.await
    }
}
