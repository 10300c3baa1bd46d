//! ward-proxy: the data plane — listeners, mutual TLS, protocol detection, HTTP/gRPC/TCP
//! forwarding, the authorization hook, admin and metrics.
//!
//! Layers, each using only those above it:
//! - [`transport`]: connect, ALPN, detection, TCP splicing, idle tracking;
//! - [`http`]: serving and forwarding HTTP (server, HTTP/1 guard, replay, pool, errors);
//! - [`authz`]: the policy decision for a call and its audit line;
//! - [`identity`] and [`control`]: where the SVID, bundle and policy come from;
//! - [`inbound`] and [`outbound`]: the two kinds of listener;
//! - [`sidecar`]: a proxy assembled from its configuration.

pub mod admin;
pub mod authz;
pub mod capture;
pub mod config;
pub mod control;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod inputs;
pub mod jwt;
pub mod metrics;
pub mod outbound;
pub mod probes;
pub mod record;
pub mod resolve;
pub mod sidecar;
pub mod trace;
pub mod transport;
pub mod workload_api;
