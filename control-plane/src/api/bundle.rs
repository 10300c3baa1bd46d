//! `Bundle.Watch`: the trust bundle, and each proxy's acknowledgements.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use ward_api::v1::{self, BundleAck, TrustBundle as BundleMsg};

use super::{Api, caller_svid};

pub(crate) type BundleStream = Pin<Box<dyn Stream<Item = Result<BundleMsg, Status>> + Send>>;

#[tonic::async_trait]
impl v1::bundle_server::Bundle for Api {
    type WatchStream = BundleStream;

    async fn watch(
        &self,
        req: Request<tonic::Streaming<BundleAck>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let spiffe_id = caller_svid(&req)?;
        let slot = self.0.registry.watch_slot(&spiffe_id)?;
        let id = spiffe_id.to_string();
        let mut acks = req.into_inner();
        let mut updates = self.0.bundle.subscribe();
        let state = self.0.clone();
        let (tx, rx) = mpsc::channel(1);
        // The watch ends when the proxy stops acknowledging (its side of the stream ended).
        let acks_done = Arc::new(tokio::sync::Notify::new());
        let done = acks_done.clone();
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let current = updates.borrow_and_update().clone();
                let msg = BundleMsg {
                    version: current.version,
                    roots: current.bundle.roots().map(|r| r.to_vec()).collect(),
                    active_root: current.active_root.clone(),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = done.notified() => return,
                }
            }
        });
        tokio::spawn(async move {
            while let Ok(Some(ack)) = acks.message().await {
                state.registry.acknowledged(&id, &ack);
            }
            state.registry.disconnected(&id);
            acks_done.notify_one();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
