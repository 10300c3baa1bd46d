//! ward-k8s: ward on Kubernetes.
//!
//! - [`crd`]: the custom resources, generated from the policy model;
//! - [`install`]: the manifests `ward install` prints and `deploy/base` holds;
//! - [`check`]: `ward check`, a line per check of ward on a cluster;
//! - [`control_plane`]: `ward control-plane --kubernetes`, assembled from [`ca`] (the CA
//!   in a Secret), [`policy`] (policy from the CRDs), [`discovery`] (endpoints from the
//!   Pods), [`bundle`] (the trust bundle for injected pods), [`attest`] (proxies attested by
//!   their pods' service-account tokens), and [`webhook`] (the sidecar injector, whose
//!   mutation is [`inject`], shared with `ward inject`), with [`leader`] (one replica
//!   leads), [`status`] (each replica's view, merged) and [`rotation`] (root rotation,
//!   driven by the leader).

pub mod attest;
pub mod bundle;
pub mod ca;
pub mod check;
mod check_certs;
mod check_line;
pub mod control_plane;
pub mod crd;
pub mod crd_changes;
pub mod discovery;
pub mod inject;
pub mod install;
pub mod leader;
pub mod policy;
pub mod policy_status;
pub mod rotation;
pub mod status;
pub mod webhook;
