//! Test support for ward's end-to-end suite: certificates good and bad, the binaries under
//! test, apps and sidecar processes, and TLS endpoints on loopback. Every cross-process test
//! builds on these, so a helper is written once here and never copied into a test file.

pub mod apps;
pub mod bin;
pub mod control_plane;
pub mod envoy;
pub mod gateway;
pub mod jaeger;
pub mod jwt;
pub mod k8s;
pub mod mesh;
pub mod net;
pub mod netns;
pub mod node;
pub mod pki;
pub mod spiffe;
pub mod spire;
pub mod tls;

/// Installs the process-wide crypto provider (idempotent), as every binary does at start.
pub fn init() {
    ward_certs::tls::install_default_provider();
}
