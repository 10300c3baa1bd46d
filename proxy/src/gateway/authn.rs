//! Authentication of a request's end user, per route: the token read from where the
//! gateway is configured to look, verified against the issuers, or the refusal. A route
//! that requires an end user answers a request without a token with 401 and
//! `WWW-Authenticate: Bearer` (RFC 6750 §3); a token that does not verify is 401 with
//! `error="invalid_token"` — the same words for every reason, which only the audit log
//! names.
//!
//! A token bound to its sender (`cnf`) is taken only with its proof: `x5t#S256` (RFC 8705)
//! must be the thumbprint of this connection's client certificate, `jkt` (RFC 9449) needs
//! the `DPoP` scheme and a proof by that key ([`super::dpop`]). A bound token presented as
//! a plain bearer token, or an unbound one with the `DPoP` scheme, is refused.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use serde_json::Value;

use super::api_keys::ApiKeys;
use super::credentials::{self, Scheme, TokenSource};
use super::dpop::{Dpop, ProofError, Target};
use super::jwt::{self, Issuer};
use super::routes::Authentication;
use crate::authz::end_user::EndUser;
use crate::http::Body;

/// Who the end user is, as far as this route asks.
#[derive(Debug)]
pub enum Authenticated {
    /// The route reads no token.
    NotAsked,
    /// No token, and the route does not require one.
    Anonymous,
    User(EndUser),
}

impl Authenticated {
    pub fn user(&self) -> Option<&EndUser> {
        match self {
            Authenticated::User(u) => Some(u),
            _ => None,
        }
    }

    /// The audit line's `authentication`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Authenticated::NotAsked => "none",
            Authenticated::Anonymous => "anonymous",
            Authenticated::User(_) => "verified",
        }
    }
}

/// Why a request is not authenticated (for the audit log).
#[derive(Debug)]
pub struct Refusal {
    /// No token at all (the challenge then carries no error code).
    pub missing: bool,
    pub reason: String,
    /// The issuer the token claims, when none of its keys held signed it: fetching its
    /// keys again may let the token verify (the IdP rotated).
    pub refresh: Option<String>,
    /// The challenge the 401 carries.
    pub challenge: Challenge,
}

/// How a 401 asks for credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer,
    /// The request used the `DPoP` scheme, or its token is bound to a DPoP key.
    Dpop,
    /// A proof lacked a valid server nonce: here is one (`use_dpop_nonce`).
    DpopNonce(String),
}

/// What end users may present: tokens (from where, checked against which issuers) and, if
/// configured, API keys.
pub struct Credentials<'a> {
    pub token: &'a TokenSource,
    pub issuers: &'a [Issuer],
    pub api_keys: Option<&'a ApiKeys>,
    pub dpop: &'a Dpop,
}

/// What the request presents: its headers, what a DPoP proof must name, and the SHA-256
/// thumbprint (base64url) of the client certificate of its connection, if there is one.
pub struct Presented<'a> {
    pub headers: &'a HeaderMap,
    pub target: Target<'a>,
    pub client_cert: Option<&'a str>,
}

/// Authenticates the end user of a request on a route with `mode`: an API key if one is
/// presented (never together with a token), else a token.
pub fn authenticate(
    presented: &Presented<'_>,
    mode: Authentication,
    creds: &Credentials<'_>,
    now: SystemTime,
) -> Result<Authenticated, Refusal> {
    if mode == Authentication::None {
        return Ok(Authenticated::NotAsked);
    }
    let headers = presented.headers;
    let refuse = |reason: String| Refusal {
        missing: false,
        reason,
        refresh: None,
        challenge: Challenge::Bearer,
    };
    if let Some(keys) = creds.api_keys {
        match keys.presented(headers) {
            Err(e) => return Err(refuse(e)),
            Ok(Some(key)) => {
                if !matches!(credentials::token(headers, creds.token), Ok(None)) {
                    return Err(refuse("both an API key and a token".into()));
                }
                return keys.verify(key).map(Authenticated::User).map_err(refuse);
            }
            Ok(None) => {}
        }
    }
    let (token, scheme) = match credentials::token(headers, creds.token) {
        Ok(Some(found)) => found,
        Ok(None) if mode == Authentication::Optional => return Ok(Authenticated::Anonymous),
        Ok(None) => {
            return Err(Refusal {
                missing: true,
                reason: "no token".into(),
                refresh: None,
                challenge: Challenge::Bearer,
            });
        }
        Err(e) => return Err(refuse(e.to_string())),
    };
    let challenge = if scheme == Scheme::DPoP {
        Challenge::Dpop
    } else {
        Challenge::Bearer
    };
    let verified = jwt::verify(token, creds.issuers, now).map_err(|e| Refusal {
        refresh: matches!(e, jwt::JwtError::UnknownKey(_))
            .then(|| jwt::claimed_issuer(token))
            .flatten(),
        challenge: challenge.clone(),
        ..refuse(e.to_string())
    })?;
    let cnf = verified.claims.get("cnf");
    bound_to_sender(cnf, token, scheme, presented, creds.dpop, now).map_err(|e| {
        let nonce = (e == Bound::Proof(ProofError::Nonce))
            .then(|| creds.dpop.nonce(now))
            .flatten();
        let dpop = challenge == Challenge::Dpop || e == Bound::NotDpop;
        Refusal {
            challenge: match nonce {
                Some(n) => Challenge::DpopNonce(n),
                None if dpop => Challenge::Dpop,
                None => Challenge::Bearer,
            },
            ..refuse(e.to_string())
        }
    })?;
    let user = EndUser::new(
        verified.issuer,
        verified.subject.as_deref(),
        verified.kid,
        verified.claims,
    );
    Ok(Authenticated::User(user))
}

/// Why a token bound to its sender is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum Bound {
    #[error("cnf is not an object of x5t#S256 and/or jkt")]
    Confirmation,
    #[error("token bound to a client certificate, and this connection has none")]
    NoCertificate,
    #[error("token bound to another client certificate (x5t#S256)")]
    OtherCertificate,
    #[error("token bound to a DPoP key, presented without the DPoP scheme")]
    NotDpop,
    #[error("DPoP scheme with a token not bound to a DPoP key")]
    Unbound,
    #[error("{0}")]
    Proof(ProofError),
}

/// Whether the sender proves it holds what the token's `cnf` binds it to (RFC 7800): each
/// member present must hold, and no other may be present.
fn bound_to_sender(
    cnf: Option<&Value>,
    token: &str,
    scheme: Scheme,
    presented: &Presented<'_>,
    dpop: &Dpop,
    now: SystemTime,
) -> Result<(), Bound> {
    let empty = serde_json::Map::new();
    let cnf = match cnf {
        None => &empty,
        Some(Value::Object(members)) if !members.is_empty() => members,
        Some(_) => return Err(Bound::Confirmation),
    };
    if cnf.keys().any(|k| k != "x5t#S256" && k != "jkt") {
        return Err(Bound::Confirmation);
    }
    if let Some(want) = cnf.get("x5t#S256") {
        let want = want.as_str().ok_or(Bound::Confirmation)?;
        let have = presented.client_cert.ok_or(Bound::NoCertificate)?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(want.as_bytes(), have.as_bytes())
            .is_err()
        {
            return Err(Bound::OtherCertificate);
        }
    }
    match (cnf.get("jkt"), scheme) {
        (None, Scheme::Bearer | Scheme::Bare) => Ok(()),
        (None, Scheme::DPoP) => Err(Bound::Unbound),
        (Some(_), Scheme::Bearer | Scheme::Bare) => Err(Bound::NotDpop),
        (Some(jkt), Scheme::DPoP) => {
            let jkt = jkt.as_str().ok_or(Bound::Confirmation)?;
            dpop.check(presented.headers, token, jkt, &presented.target, now)
                .map_err(Bound::Proof)
        }
    }
}

/// The 401 for a refusal: `WWW-Authenticate` and a body that says nothing more; a gRPC
/// caller gets `UNAUTHENTICATED` (16). Without a token, both schemes are offered.
pub fn unauthorized(refusal: &Refusal, grpc: bool, dpop: &Dpop) -> Response<Body> {
    let dpop_challenge = |error: &str| {
        let text = format!("DPoP realm=\"ward\", {error}algs=\"{}\"", dpop.algs());
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("DPoP realm=\"ward\""))
    };
    let mut challenges = Vec::new();
    let mut nonce = None;
    match (&refusal.challenge, refusal.missing) {
        (_, true) => {
            challenges.push(HeaderValue::from_static("Bearer realm=\"ward\""));
            challenges.push(dpop_challenge(""));
        }
        (Challenge::Bearer, false) => challenges.push(HeaderValue::from_static(
            "Bearer realm=\"ward\", error=\"invalid_token\"",
        )),
        (Challenge::Dpop, false) => challenges.push(dpop_challenge("error=\"invalid_token\", ")),
        (Challenge::DpopNonce(n), false) => {
            challenges.push(dpop_challenge("error=\"use_dpop_nonce\", "));
            nonce = HeaderValue::from_str(n).ok();
        }
    }
    let mut response = answer(StatusCode::UNAUTHORIZED, "16", "unauthorized\n", grpc);
    let h = response.headers_mut();
    for c in challenges {
        h.append(header::WWW_AUTHENTICATE, c);
    }
    if let Some(n) = nonce {
        h.insert("dpop-nonce", n);
    }
    response
}

/// The 404 for a request no route takes (gRPC: `UNIMPLEMENTED`).
pub fn not_found(grpc: bool) -> Response<Body> {
    answer(StatusCode::NOT_FOUND, "12", "not found\n", grpc)
}

/// The 429 for a request over a rate limit (gRPC: `RESOURCE_EXHAUSTED`); the caller adds
/// `Retry-After` and `RateLimit-*`.
pub fn too_many_requests(grpc: bool) -> Response<Body> {
    answer(
        StatusCode::TOO_MANY_REQUESTS,
        "8",
        "too many requests\n",
        grpc,
    )
}

/// The 421 for a request whose host its connection was not set up for (gRPC:
/// `UNAVAILABLE`, which a client retries on a new connection).
pub fn misdirected(grpc: bool) -> Response<Body> {
    answer(
        StatusCode::MISDIRECTED_REQUEST,
        "14",
        "misdirected request\n",
        grpc,
    )
}

/// An answer of the gateway's own: `status` with a fixed plain-text body, or for gRPC a
/// trailers-only response with `grpc-status`.
fn answer(
    status: StatusCode,
    grpc_status: &'static str,
    text: &'static str,
    grpc: bool,
) -> Response<Body> {
    let body = if grpc { "" } else { text };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    let h = response.headers_mut();
    if grpc {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(grpc_status));
    } else {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        *response.status_mut() = status;
    }
    response
}
