//! Graceful shutdown, shared by every listener: one signal to stop accepting and wind down,
//! one tracker of the connections still open, one deadline.
//!
//! On SIGTERM/SIGINT the signal fires: listeners stop accepting (their sockets close, so new
//! connections are refused), HTTP connections finish their in-flight requests and close (h2
//! with GOAWAY), TCP splices run on. The process waits for all of them up to
//! `drain_timeout`, then exits whatever is left.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// The drain handle every listener and connection holds a clone of.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    signal: CancellationToken,
    open: TaskTracker,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves once draining has begun.
    pub fn signaled(&self) -> WaitForCancellationFuture<'_> {
        self.signal.cancelled()
    }

    pub fn is_draining(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Runs a connection (or listener) task that the drain waits for.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.open.spawn(task);
    }

    /// Begins draining.
    pub fn start(&self) {
        self.signal.cancel();
        self.open.close();
    }

    /// Waits for every tracked task, at most `timeout`. Returns how many were still open.
    pub async fn finish(&self, timeout: Duration) -> usize {
        match tokio::time::timeout(timeout, self.open.wait()).await {
            Ok(()) => 0,
            Err(_) => self.open.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tasks_then_gives_up_at_the_deadline() {
        let drain = Drain::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let d = drain.clone();
        drain.spawn(async move {
            d.signaled().await;
            let _ = rx.await;
        });
        let stuck = drain.clone();
        drain.spawn(async move {
            stuck.signaled().await;
            std::future::pending::<()>().await;
        });
        assert!(!drain.is_draining());
        drain.start();
        assert!(drain.is_draining());
        tx.send(()).unwrap();
        assert_eq!(
            drain.finish(Duration::from_millis(50)).await,
            1,
            "one task never ends"
        );
    }
}
