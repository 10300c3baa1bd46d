//! The mesh's endpoints from the control plane (`Discovery.Watch`), kept in a map the
//! capture's resolver reads; the last good map stays while the stream is down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_stream::StreamExt;
use ward_api::v1;
use ward_certs::MeshIdentity;

use super::{ControlPlane, Health, Stream, status_text};
use crate::resolve::Destination;
pub use crate::resolve::Endpoints;

/// Follows `Discovery.Watch` into `into`, for ever.
pub async fn follow(
    client: ControlPlane,
    identity: MeshIdentity,
    health: Arc<Health>,
    into: Endpoints,
) {
    let open = || async {
        let stream = client
            .watch_discovery(&identity)
            .await
            .map_err(|s| status_text(&s))?;
        Ok::<_, String>(stream.map(|m| m.map(Some).map_err(|s| status_text(&s))))
    };
    let apply = |snapshot: v1::DiscoverySnapshot| {
        let map = destinations(&snapshot);
        tracing::info!(
            version = snapshot.version,
            endpoints = map.len(),
            "discovery in force"
        );
        metrics::gauge!("ward_discovery_endpoints").set(map.len() as f64);
        into.store(Arc::new(map));
        std::future::ready(())
    };
    super::follow_snapshots(Stream::Discovery, &health, open, apply).await
}

/// The snapshot's endpoints as destinations; an entry that does not parse is skipped.
pub fn destinations(snapshot: &v1::DiscoverySnapshot) -> HashMap<SocketAddr, Destination> {
    snapshot
        .endpoints
        .iter()
        .filter_map(|e| {
            let address: SocketAddr = e.address.parse().ok()?;
            let identity = ward_certs::parse_spiffe_id(&e.spiffe_id).ok()?;
            let port = match u16::try_from(e.inbound_port).ok()? {
                0 => address.port(),
                p => p,
            };
            let addr = SocketAddr::new(address.ip(), port);
            Some((address, Destination { addr, identity }))
        })
        .collect()
}
