//! ward-control-plane: issues SVIDs to proxies that prove who they are, and streams each
//! proxy the policy for its own workload and the trust bundle.
//!
//! - [`server`]: the process assembled (`ward control-plane`);
//! - [`api`]: the gRPC API over TLS 1.3 with the control plane's own SVID
//!   (`spiffe://TD/ns/ward-system/sa/control-plane`);
//! - [`attest`]: how a proxy proves who it is on its first Certify (join tokens today);
//! - [`policy_source`]: where policy comes from (a directory today); [`discovery`]: where
//!   the mesh's endpoints come from (what proxies report today);
//! - [`state`], [`trust`] and [`registry`]: what is held while running, and the proxies
//!   known; [`tasks`]: the background work;
//! - [`datadir`] and [`rotation`]: the CA files, the rotation journal and `status.json`,
//!   shared with the `ward` CLI;
//! - [`metrics`]: the control plane's metric names; [`dashboard`]: what proxies report,
//!   shown by [`page`] on a read-only web page.

pub mod api;
pub mod attest;
pub mod dashboard;
pub mod datadir;
pub mod discovery;
pub mod jwt_svid;
pub mod metrics;
pub mod page;
pub mod policy_source;
pub mod registry;
pub mod rotation;
pub mod server;
pub mod settings;
pub mod state;
pub mod tasks;
pub mod trust;
