//! ward-proxy: the data plane — listeners, mutual TLS, protocol detection, HTTP/gRPC/TCP
//! forwarding, the authorization hook, admin and metrics.

pub mod admin;
pub mod authz;
pub mod config;
pub mod detect;
pub mod forward;
pub mod h1guard;
pub mod http;
pub mod identity;
pub mod idle;
pub mod inbound;
mod io;
pub mod listener;
pub mod metrics;
pub mod outbound;
pub mod pool;
pub mod replay;
pub mod sidecar;
pub mod tcp;
pub mod tls_alerts;
