//! Following a stream from another process (the control plane's policy and bundle streams,
//! next a SPIRE agent's or a Kubernetes watch): connect, consume, and on any end or error
//! reconnect after a capped exponential backoff, while the last good value stays in force
//! (fail static).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};

use crate::backoff::Backoff;

/// A session that ran at least this long was healthy: the backoff starts over after it.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Runs `session` again and again, for ever: each run connects and consumes a stream.
/// When one ends (or fails) `down` is called, and the next starts after the backoff.
pub async fn reconnect<S, Fut, E>(
    name: &'static str,
    mut backoff: Backoff,
    mut down: impl FnMut(),
    mut session: S,
) where
    S: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    loop {
        let started = tokio::time::Instant::now();
        let result = session().await;
        down();
        match result {
            Ok(()) => tracing::warn!(stream = name, "stream ended; reconnecting"),
            Err(e) => {
                tracing::warn!(stream = name, error = %e, retry_in = ?backoff.peek(), "stream failed")
            }
        }
        if started.elapsed() > HEALTHY_SESSION {
            backoff.reset();
        }
        backoff.wait().await;
    }
}

/// A stream of values turned into a `watch`: the receiver holds `initial` until the first
/// value arrives, then always the latest (a slow reader skips to the newest); a failed or
/// ended stream is opened again by `open` (see [`reconnect`]) and meanwhile the last value
/// stays. `connected` hears `true` when a stream opens and `false` when it ends. The
/// returned future does the work (spawn it); dropping it closes the channel.
pub fn stream_to_watch<T, O, Fut, St, E>(
    name: &'static str,
    initial: T,
    backoff: Backoff,
    connected: impl Fn(bool),
    mut open: O,
) -> (watch::Receiver<T>, impl Future<Output = ()>)
where
    T: Send + Sync,
    O: FnMut() -> Fut,
    Fut: Future<Output = Result<St, E>>,
    St: Stream<Item = Result<T, E>>,
    E: Display,
{
    let (tx, rx) = watch::channel(initial);
    let run = async move {
        let (tx, connected) = (&tx, &connected);
        reconnect(
            name,
            backoff,
            || connected(false),
            || {
                let opened = open();
                async move {
                    let stream = opened.await?;
                    connected(true);
                    tokio::pin!(stream);
                    while let Some(item) = stream.next().await {
                        tx.send_replace(item?);
                    }
                    Ok::<(), E>(())
                }
            },
        )
        .await
    };
    (rx, run)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Each open hands out the next scripted stream; the last one stays open.
    #[tokio::test(start_paused = true)]
    async fn keeps_the_last_value_across_failures_and_reconnects() {
        let opens = Arc::new(AtomicUsize::new(0));
        let counted = opens.clone();
        let ups = Arc::new(AtomicUsize::new(0));
        let counted_ups = ups.clone();
        let state = move |up: bool| {
            if up {
                counted_ups.fetch_add(1, Ordering::SeqCst);
            }
        };
        let (mut rx, run) =
            stream_to_watch("test", 0u32, Backoff::control_plane(), state, move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    let items: Vec<Result<u32, String>> = match n {
                        0 => vec![Ok(1), Ok(2), Err("reset by peer".into())],
                        1 => return Err("connection refused".to_owned()),
                        2 => vec![],
                        _ => vec![Ok(3)],
                    };
                    let tail: std::pin::Pin<Box<dyn Stream<Item = Result<u32, String>> + Send>> =
                        if n >= 3 {
                            Box::pin(tokio_stream::pending())
                        } else {
                            Box::pin(tokio_stream::empty())
                        };
                    Ok(tokio_stream::iter(items).chain(tail))
                }
            });
        assert_eq!(*rx.borrow(), 0, "the initial value");
        let task = tokio::spawn(run);
        rx.wait_for(|v| *v == 2).await.unwrap();
        // While the next opens fail or end empty, 2 stays in force.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*rx.borrow(), 2);
        rx.wait_for(|v| *v == 3).await.unwrap();
        assert_eq!(opens.load(Ordering::SeqCst), 4);
        assert_eq!(ups.load(Ordering::SeqCst), 3, "one open failed");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(
            rx.changed().await.is_err(),
            "closed when the work is dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_between_sessions_and_reports_each_end() {
        let downs = Arc::new(AtomicUsize::new(0));
        let d = downs.clone();
        let started = tokio::time::Instant::now();
        let sessions = Arc::new(AtomicUsize::new(0));
        let s = sessions.clone();
        let run = reconnect(
            "test",
            Backoff::new(Duration::from_secs(1), Duration::from_secs(4)),
            move || {
                d.fetch_add(1, Ordering::SeqCst);
            },
            move || {
                s.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>("refused") }
            },
        );
        let _ = tokio::time::timeout(Duration::from_millis(11_500), run).await;
        // Sessions at 0, 1, 3, 7, 11 s: waits of 1, 2, 4, 4.
        assert_eq!(sessions.load(Ordering::SeqCst), 5);
        assert_eq!(downs.load(Ordering::SeqCst), 5);
        assert!(started.elapsed() >= Duration::from_millis(11_500));
    }
}
