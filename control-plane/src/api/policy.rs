//! `Policy.Watch`: each proxy's policy snapshots.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use ward_api::v1::{self, PolicySnapshot, PolicyWatchRequest};

use super::{Api, attest_status, caller_svid};
use crate::metrics as m;

pub(crate) type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PolicySnapshot, Status>> + Send>>;

impl Api {
    /// The caller's workload: as this replica knows it, else as its token proves (a
    /// proxy attested by another replica), which must name the caller's own identity.
    async fn registration(
        &self,
        id: &ward_certs::SpiffeId,
        token: &str,
    ) -> Result<crate::attest::Registration, Status> {
        let state = &self.0;
        match state.registry.workload(id, state.attestor.as_ref()) {
            Ok(known) => Ok(known),
            Err(unknown) if token.is_empty() => Err(unknown),
            Err(_) => {
                let now = std::time::SystemTime::now();
                let attested = state
                    .attestor
                    .attest(token, now)
                    .await
                    .map_err(attest_status)?;
                if attested.id != *id {
                    return Err(Status::permission_denied(format!(
                        "the token attests {}, the caller is {id}",
                        attested.id
                    )));
                }
                state.registry.attested(id, attested.workload.clone());
                Ok(attested.workload)
            }
        }
    }
}

#[tonic::async_trait]
impl v1::policy_server::Policy for Api {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        req: Request<PolicyWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = caller_svid(&req)?;
        let registration = self.registration(&id, &req.get_ref().token).await?;
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
