//! Why a request could not be carried, and the answer the caller gets for it.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use super::Body;

/// Why a request could not be carried. Each maps to one status and nothing else reaches
/// the caller; the access log and `ward_request_failures_total` name the cause (in the
/// spirit of Envoy's response flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The upstream could not be reached: refused, unreachable, or no connection in time.
    ConnectFailed,
    /// The upstream's certificate is valid but it is not the identity it must be.
    IdentityMismatch,
    /// The TLS handshake with the upstream failed otherwise (bad certificate, protocol).
    TlsFailed,
    /// The connection or the stream broke before a response head came.
    UpstreamReset,
    /// The upstream refused the request unprocessed as often as attempts are allowed.
    RetryLimit,
    /// The upstream switched protocols unasked, or to another protocol than asked.
    SwitchRefused,
    /// The upstream did not answer in time.
    Timeout,
    /// The request itself is malformed or ambiguous.
    BadRequest,
    /// Authorization said no.
    Forbidden,
    /// The request body is larger than this hop takes.
    TooLarge,
}

impl Failure {
    /// The access log's `cause` and the metric label.
    pub fn cause(self) -> &'static str {
        match self {
            Failure::ConnectFailed => "upstream_connect_failure",
            Failure::IdentityMismatch => "upstream_identity_mismatch",
            Failure::TlsFailed => "upstream_tls_failure",
            Failure::UpstreamReset => "upstream_reset",
            Failure::RetryLimit => "retry_limit",
            Failure::SwitchRefused => "upstream_switch_refused",
            Failure::Timeout => "upstream_timeout",
            Failure::BadRequest => "bad_request",
            Failure::Forbidden => "denied",
            Failure::TooLarge => "body_too_large",
        }
    }
}

impl From<&crate::transport::connect::ConnectError> for Failure {
    fn from(e: &crate::transport::connect::ConnectError) -> Self {
        use crate::transport::connect::ConnectError;
        match e {
            ConnectError::Io { .. } | ConnectError::Timeout { .. } => Failure::ConnectFailed,
            ConnectError::Identity { .. } => Failure::IdentityMismatch,
            ConnectError::BadCertificate { .. } | ConnectError::Tls { .. } => Failure::TlsFailed,
            ConnectError::Handshake { .. } => Failure::UpstreamReset,
        }
    }
}

/// The response for a failure: plain HTTP status, or for gRPC a trailers-only response with
/// the matching `grpc-status`. Bodies are fixed words, never internal detail.
pub fn failure_response(failure: Failure, grpc: bool) -> Response<Body> {
    let (status, grpc_status, text) = match failure {
        Failure::ConnectFailed
        | Failure::IdentityMismatch
        | Failure::TlsFailed
        | Failure::UpstreamReset
        | Failure::RetryLimit
        | Failure::SwitchRefused => (StatusCode::BAD_GATEWAY, "14", "upstream unavailable\n"),
        Failure::Timeout => (StatusCode::GATEWAY_TIMEOUT, "4", "upstream timeout\n"),
        Failure::BadRequest => (StatusCode::BAD_REQUEST, "13", "bad request\n"),
        Failure::Forbidden => (StatusCode::FORBIDDEN, "7", "forbidden"),
        Failure::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "8", "payload too large\n"),
    };
    let mut response = if grpc {
        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(grpc_status));
        r
    } else {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
            text.as_bytes(),
        ))));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    response.headers_mut().remove(header::CONNECTION);
    response
}
