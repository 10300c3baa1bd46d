//! JWT-SVIDs for the app: fetched from the identity source that can sign them (a SPIRE
//! agent) and validated here against the JWT bundles (JWKS by trust domain) in force.
//! Validation is the gateway's strict JWT check ([`crate::gateway::jwt`]) with the key set
//! of the subject's trust domain; the subject must be a SPIFFE ID of that trust domain.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use ward_api::workload::{JwtBundlesResponse, Jwtsvid, ValidateJwtsvidResponse};
use ward_certs::SpiffeId;
use ward_runtime::Drain;

use super::Streamed;
use crate::identity::jwt::{Issue, JwtBundles, JwtSource};
use crate::jwt::{Issuer, verify_with};

/// The algorithms a JWT-SVID may be signed with (JWT-SVID spec §3: RS, ES and PS families).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Where the Workload API's JWT calls are answered from.
pub struct JwtSvids {
    issuer: Result<Arc<dyn Issue>, &'static str>,
    bundles: watch::Receiver<Arc<JwtBundles>>,
}

impl JwtSvids {
    /// An identity source that signs no JWT-SVIDs: fetches are refused, saying so;
    /// validation has no keys.
    pub fn unavailable(why: &'static str) -> Self {
        Self {
            issuer: Err(why),
            bundles: watch::channel(Arc::new(JwtBundles::new())).1,
        }
    }

    pub fn new(source: JwtSource) -> Self {
        Self {
            issuer: Ok(source.issuer),
            bundles: source.bundles,
        }
    }

    /// A JWT-SVID of `own` for `audience`; a request for another identity gets nothing.
    pub async fn fetch(
        &self,
        own: &SpiffeId,
        audience: &[String],
        spiffe_id: &str,
    ) -> Result<Jwtsvid, Status> {
        if audience.is_empty() || audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if !spiffe_id.is_empty() && spiffe_id != own.to_string() {
            return Err(Status::permission_denied("no identity issued"));
        }
        let issuer = self
            .issuer
            .as_ref()
            .map_err(|why| Status::unavailable(*why))?;
        let token = issuer.fetch(own, audience.to_vec()).await?;
        Ok(Jwtsvid {
            spiffe_id: own.to_string(),
            svid: token,
            hint: String::new(),
        })
    }

    /// The JWT bundles now and after each change.
    pub fn follow_bundles(&self, drain: Drain) -> Result<Streamed<JwtBundlesResponse>, Status> {
        if let Err(why) = &self.issuer {
            return Err(Status::unavailable(*why));
        }
        let (tx, rx) = mpsc::channel(1);
        let mut bundles = self.bundles.clone();
        tokio::spawn(async move {
            loop {
                let message = JwtBundlesResponse {
                    bundles: bundles
                        .borrow_and_update()
                        .iter()
                        .map(|(td, jwks)| (td.clone(), jwks.clone()))
                        .collect(),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
                let changed = tokio::select! {
                    r = bundles.changed() => r.is_ok(),
                    () = tx.closed() => false,
                    () = drain.signaled() => false,
                };
                if !changed {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Checks `token` for `audience` against the JWT bundles in force.
    pub fn validate(&self, token: &str, audience: &str) -> Result<ValidateJwtsvidResponse, Status> {
        if audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if token.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let bundles = self.bundles.borrow().clone();
        validate(token, audience, &bundles, SystemTime::now())
            .map_err(|why| Status::invalid_argument(format!("invalid JWT-SVID: {why}")))
    }
}

/// The JWT-SVID check: a key of some trust domain's set signed it, `aud` holds `audience`,
/// `exp` is in the future, and `sub` is a SPIFFE ID of that same trust domain.
pub fn validate(
    token: &str,
    audience: &str,
    bundles: &JwtBundles,
    now: SystemTime,
) -> Result<ValidateJwtsvidResponse, String> {
    let mut last = String::from("no JWT bundle is held");
    for (td, jwks) in bundles {
        let keys: JwkSet = match serde_json::from_slice(jwks) {
            Ok(keys) => keys,
            Err(e) => {
                last = format!("{td}: JWT bundle unreadable: {e}");
                continue;
            }
        };
        let issuer = Issuer {
            issuer: String::new(),
            audiences: vec![audience.to_owned()],
            algorithms: ALGORITHMS.to_vec(),
            keys,
            clock_skew: Duration::ZERO,
        };
        let verified = match verify_with(token, &issuer, now) {
            Ok(v) => v,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let subject = verified.subject.as_deref().unwrap_or_default();
        let id = ward_certs::parse_spiffe_id(subject)
            .map_err(|e| format!("sub {subject:?} is not a SPIFFE ID: {e}"))?;
        if format!("spiffe://{}", id.trust_domain()) != *td {
            return Err(format!("sub {id} is not of {td}, whose key signed it"));
        }
        return Ok(ValidateJwtsvidResponse {
            spiffe_id: id.to_string(),
            claims: Some(to_struct(verified.claims)),
        });
    }
    Err(last)
}

fn to_struct(map: serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}
