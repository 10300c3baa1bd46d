//! `Discovery.Watch`: the mesh's endpoints, to every proxy with an SVID.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use ward_api::v1::{self, DiscoverySnapshot, DiscoveryWatchRequest};

use super::{Api, caller_svid};

pub(crate) type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<DiscoverySnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl v1::discovery_server::Discovery for Api {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        req: Request<DiscoveryWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = caller_svid(&req)?;
        let slot = self.0.registry.watch_slot(&id)?;
        let mut updates = self.0.discovery.watch();
        // Capacity 1: a slow watcher skips to the newest snapshot.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let current = updates.borrow_and_update().clone();
                let snapshot = DiscoverySnapshot {
                    version: current.version,
                    endpoints: current.by_address.values().cloned().collect(),
                };
                if tx.send(Ok(snapshot)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
