//! ward-runtime: what both binaries (`ward-proxy` and `ward`) run on, written once.
//!
//! - [`drain`]: graceful shutdown with a forced stop at a deadline;
//! - [`readiness`]: named conditions that keep `/ready` at 503 until cleared;
//! - [`signal`]: the one shutdown signal (SIGTERM or SIGINT);
//! - [`accept`]: the one accept loop (per-listener limit, backoff on EMFILE, never exits);
//! - [`admin`]: the admin server, `/live /ready /metrics` plus the routes a binary adds;
//! - [`telemetry`]: logs and the metrics recorder, with the layer hook tracing exporters use;
//! - [`backoff`]: capped exponential backoff with jitter;
//! - [`follow`]: a stream that reconnects, and a stream turned into a `watch`;
//! - [`poll`]: a file or directory polled for changes, loaded off the async workers;
//! - [`time`]: RFC 3339 and Unix-seconds formatting.

pub mod accept;
pub mod admin;
pub mod backoff;
pub mod drain;
pub mod follow;
pub mod poll;
pub mod readiness;
pub mod signal;
pub mod telemetry;
pub mod time;
pub mod traces;

pub use drain::Drain;
pub use readiness::{Pending, Readiness};
