//! One record per request and per opaque TCP connection, written once: to the metrics and,
//! when the listener logs access, to the access log (`target: ward::access`). Both
//! listeners write through here, so a label means the same wherever it appears.

use std::time::Duration;

use crate::metrics::{self, Direction, Label};
use crate::trace::RequestSpan;
use crate::transport::tcp::Carried;

/// The protocol label of a request: what the caller of this hop spoke — the app for
/// outbound; for inbound the original caller (as a ward peer reports it, else the wire
/// version) — and `grpc` for gRPC-shaped requests. Allowed and refused requests are
/// labelled alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
}

impl Protocol {
    pub fn of(grpc: bool, http1: bool) -> Self {
        match (grpc, http1) {
            (true, _) => Self::Grpc,
            (false, true) => Self::Http1,
            (false, false) => Self::Http2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
        }
    }
}

/// A finished request.
#[derive(Debug)]
pub struct Request<'a> {
    pub direction: Direction,
    pub protocol: Protocol,
    /// The other side, for the access log: its SPIFFE ID (the caller inbound, the upstream
    /// outbound), or the client's address at the gateway.
    pub peer: &'a str,
    /// The workloads at both ends, for the metrics.
    pub source: &'a Label,
    pub destination: &'a Label,
    pub method: &'a http::Method,
    /// The path as judged and forwarded (inbound) or as the app sent it (outbound).
    pub path: &'a str,
    pub status: u16,
    /// Why the sidecar answered itself, if it did (see [`crate::http::Failure::cause`]).
    pub cause: Option<&'static str>,
    pub elapsed: Duration,
    /// Its span, which gets the status.
    pub span: &'a RequestSpan,
}

impl Request<'_> {
    pub fn write(&self, access_log: bool) {
        self.span.finish(self.status, self.cause);
        let protocol = self.protocol.label();
        let ends = (self.source, self.destination);
        metrics::request(self.direction, protocol, ends, self.status, self.elapsed);
        if let Some(cause) = self.cause {
            metrics::failed(self.direction, cause);
        }
        if access_log {
            tracing::info!(target: "ward::access", direction = self.direction.label(), protocol,
                peer = self.peer, method = %self.method, path = self.path, status = self.status,
                cause = self.cause.unwrap_or("-"),
                duration_ms = self.elapsed.as_secs_f64() * 1000.0);
        }
    }
}

/// A finished opaque TCP connection.
#[derive(Debug)]
pub struct Tcp<'a> {
    pub direction: Direction,
    pub peer: &'a str,
    pub source: &'a Label,
    pub destination: &'a Label,
    pub carried: Carried,
    pub elapsed: Duration,
}

impl Tcp<'_> {
    pub fn write(&self, access_log: bool) {
        let Carried { a_to_b, b_to_a } = self.carried;
        metrics::tcp_bytes(
            self.direction,
            (self.source, self.destination),
            a_to_b,
            b_to_a,
        );
        if access_log {
            tracing::info!(target: "ward::access", direction = self.direction.label(),
                protocol = "tcp", peer = self.peer, bytes_in = a_to_b, bytes_out = b_to_a,
                duration_ms = self.elapsed.as_millis() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol;

    #[test]
    fn protocol_labels() {
        assert_eq!(Protocol::of(true, true).label(), "grpc");
        assert_eq!(Protocol::of(true, false).label(), "grpc");
        assert_eq!(Protocol::of(false, true).label(), "http1");
        assert_eq!(Protocol::of(false, false).label(), "http2");
    }
}
