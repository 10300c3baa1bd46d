//! `Policy.Watch`: each proxy's policy snapshots.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use ward_api::v1::{self, PolicySnapshot, PolicyWatchRequest};

use super::{Api, caller_svid};
use crate::metrics as m;

pub(crate) type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PolicySnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl v1::policy_server::Policy for Api {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        req: Request<PolicyWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = caller_svid(&req)?;
        let registration = self.0.registry.workload(&id, self.0.attestor.as_ref())?;
        let slot = self.0.registry.watch_slot(&id)?;
        let mut updates = self.0.policy.subscribe();
        // Capacity 1: a slow watcher only ever waits for its own previous snapshot, and
        // skips straight to the newest one when it catches up.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _slot = slot;
            let mut first = true;
            loop {
                let current = updates.borrow_and_update().clone();
                if tx
                    .send(Ok(ward_policy::wire::snapshot(
                        current.version,
                        &current.set,
                        &registration.namespace,
                        &registration.labels,
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
                if !first {
                    metrics::histogram!(m::PUSH_FANOUT)
                        .record(current.changed.elapsed().as_secs_f64());
                }
                first = false;
                // A watcher that went away gives its slot back now, not at the next change.
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
