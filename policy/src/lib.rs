//! ward-policy: the one authorization engine, shared by the sidecar (per call) and by the
//! `ward policy` commands (offline), so what a test or a review says is what the mesh does.
//!
//! [`model`] is the schema as written, [`load`] turns a directory into a [`PolicySet`] or
//! `file:line:column` errors, [`compile`] decides calls, [`path`] normalizes request paths,
//! [`wire`] is the model as the control plane sends it to proxies. With the `crd` feature the
//! same spec types are the Kubernetes custom resources (`model::AuthorizationPolicy`,
//! `model::MeshPolicy`), their OpenAPI schema generated from these types.

pub mod auth;
pub mod compile;
pub mod decision;
pub mod lint;
pub mod load;
pub mod model;
pub mod path;
pub mod pattern;
pub mod reach;
pub mod request;
#[cfg(feature = "crd")]
mod schema;
pub mod wire;

pub use auth::{Claims, RequestAuth};
pub use compile::{Call, Decider, Decision, Headers, HttpCall, PolicySet, WorkloadPolicy};
pub use load::{PolicyError, PolicyErrors, load_dir, load_sources};
pub use model::{Action, MeshDefault, OutboundTrafficPolicy, ROOT_NAMESPACE};
pub use path::{PathError, normalize_path};
pub use request::{Authority, RequestError};
