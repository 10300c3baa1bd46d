//! Where an outbound connection goes: a resolver maps what is known of a connection the
//! app opened to a destination — the peer sidecar's address and the SPIFFE ID it must
//! present. Today a listener has one static upstream; original-destination capture and
//! the control plane's discovery, and the gateway's routes, are further resolvers.

use std::net::SocketAddr;

use ward_certs::SpiffeId;

/// A peer sidecar to reach over mTLS, and who it must be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: SocketAddr,
    pub identity: SpiffeId,
}

/// What is known of a connection the app opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target {
    /// Its original destination, when it was captured transparently.
    pub original_dst: Option<SocketAddr>,
}

/// Maps targets to destinations. `None`: nowhere to send it (the connection is closed).
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, target: &Target) -> Option<Destination>;
}

/// One destination for every connection (an `outbound` listener's `upstream`).
#[derive(Debug, Clone)]
pub struct Static(pub Destination);

impl Resolve for Static {
    fn resolve(&self, _: &Target) -> Option<Destination> {
        Some(self.0.clone())
    }
}

/// Mesh destinations by the address apps dial, as discovery last said (swapped whole).
pub type Endpoints =
    std::sync::Arc<arc_swap::ArcSwap<std::collections::HashMap<SocketAddr, Destination>>>;

/// The mesh workloads a captured connection may be going to, by the address the app
/// dialled (the original destination): those configured, then those the control plane's
/// discovery names.
#[derive(Default)]
pub struct Registry {
    pub configured: std::collections::HashMap<SocketAddr, Destination>,
    pub discovered: Option<Endpoints>,
}

impl Resolve for Registry {
    fn resolve(&self, target: &Target) -> Option<Destination> {
        let orig = target.original_dst?;
        if let Some(d) = self.configured.get(&orig) {
            return Some(d.clone());
        }
        self.discovered.as_ref()?.load().get(&orig).cloned()
    }
}
