//! The verified end user of a request: what policy judges (principal and claims) and what
//! the gateway tells the mesh in `x-ward-end-user` — never the token itself. A sidecar
//! reads the header only from a caller the MeshPolicy lists among its `gateways`.
//!
//! The header is the base64url (no padding) of a JSON object `{"principal": "ISS/SUB",
//! "claims": {...}}`. Only the gateway sets it; every sidecar removes it from callers that
//! are not gateways the mesh trusts, so a client cannot claim to be a user.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::HeaderValue;
use serde_json::{Map, Value, json};
use ward_policy::{Claims, RequestAuth};

/// The header the gateway sets for the mesh.
pub use crate::http::END_USER;
/// The largest `x-ward-end-user` value read (a token's claims fit well within it).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// A verified end user.
#[derive(Debug, Clone)]
pub struct EndUser {
    /// `ISSUER/SUBJECT` (`ISSUER/` without `sub`).
    pub principal: String,
    pub issuer: String,
    /// The key that signed the token, for the audit log.
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

impl EndUser {
    /// The end user of a verified token.
    pub fn new(
        issuer: String,
        subject: Option<&str>,
        kid: Option<String>,
        claims: Map<String, Value>,
    ) -> Self {
        Self {
            principal: format!("{issuer}/{}", subject.unwrap_or("")),
            issuer,
            kid,
            claims,
        }
    }

    /// As the policy engine reads it.
    pub fn auth(&self) -> RequestAuth<'_> {
        RequestAuth {
            principal: &self.principal,
            claims: self,
        }
    }

    /// The `x-ward-end-user` value: the principal and the claims named in `forward` (all
    /// of them if `None`).
    pub fn header_value(&self, forward: Option<&[String]>) -> Option<HeaderValue> {
        let claims: Map<String, Value> = match forward {
            None => self.claims.clone(),
            Some(names) => self
                .claims
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let body = json!({ "principal": self.principal, "claims": claims });
        HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(body.to_string())).ok()
    }

    /// The end user a trusted gateway sent, or why the value is not one.
    pub fn from_header(value: &[u8]) -> Result<Self, String> {
        if value.len() > MAX_HEADER_BYTES {
            return Err("x-ward-end-user is too long".into());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| "x-ward-end-user is not base64url")?;
        let Value::Object(mut body) =
            serde_json::from_slice::<Value>(&bytes).map_err(|_| "x-ward-end-user is not JSON")?
        else {
            return Err("x-ward-end-user is not a JSON object".into());
        };
        let principal = match body.remove("principal") {
            Some(Value::String(p)) if p.contains('/') => p,
            _ => return Err("x-ward-end-user has no principal".into()),
        };
        let claims = match body.remove("claims") {
            Some(Value::Object(c)) => c,
            _ => return Err("x-ward-end-user has no claims object".into()),
        };
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            principal,
            issuer,
            kid: None,
            claims,
        })
    }
}

/// Claims as policy reads them: nested by name; a string is its value (a top-level `scope`
/// or `scp` string is the list of its space-separated scopes, RFC 8693 §4.2), a number its
/// JSON text, a list each of its string or number elements.
impl Claims for EndUser {
    fn any_value(&self, path: &[String], f: &mut dyn FnMut(&str) -> bool) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        let mut at = self.claims.get(first);
        for name in rest {
            at = at.and_then(|v| v.as_object()).and_then(|o| o.get(name));
        }
        let scopes = rest.is_empty() && (first == "scope" || first == "scp");
        let scalar = |v: &Value, f: &mut dyn FnMut(&str) -> bool| match v {
            Value::String(s) if scopes => s.split(' ').filter(|s| !s.is_empty()).any(&mut *f),
            Value::String(s) => f(s),
            Value::Number(n) => f(&n.to_string()),
            _ => false,
        };
        match at {
            Some(Value::Array(items)) => items.iter().any(|v| scalar(v, f)),
            Some(v) => scalar(v, f),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(claims: Value) -> EndUser {
        let Value::Object(claims) = claims else {
            panic!("claims are an object")
        };
        EndUser {
            principal: "https://idp/alice".into(),
            issuer: "https://idp".into(),
            kid: None,
            claims,
        }
    }

    fn values(u: &EndUser, path: &[&str]) -> Vec<String> {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        let mut out = Vec::new();
        u.any_value(&path, &mut |v| {
            out.push(v.to_owned());
            false
        });
        out
    }

    #[test]
    fn claims_read_nested_lists_scopes_and_numbers() {
        let u = user(json!({
            "sub": "alice", "scope": "openid  accounts:read", "groups": ["a", "b", {"x": 1}],
            "realm": { "roles": ["teller"] }, "n": 7, "flag": true, "note": "two words"
        }));
        assert_eq!(values(&u, &["scope"]), ["openid", "accounts:read"]);
        assert_eq!(values(&u, &["groups"]), ["a", "b"]);
        assert_eq!(values(&u, &["realm", "roles"]), ["teller"]);
        assert_eq!(values(&u, &["n"]), ["7"]);
        assert_eq!(values(&u, &["note"]), ["two words"], "only scope splits");
        assert!(values(&u, &["flag"]).is_empty());
        assert!(values(&u, &["realm"]).is_empty(), "an object is no value");
        assert!(values(&u, &["missing", "x"]).is_empty());
    }

    #[test]
    fn the_mesh_header_carries_principal_and_chosen_claims_only() {
        let u =
            user(json!({ "sub": "alice", "iss": "https://idp", "email": "a@x", "groups": ["g"] }));
        let all = u.header_value(None).unwrap();
        let back = EndUser::from_header(all.as_bytes()).unwrap();
        assert_eq!(back.principal, "https://idp/alice");
        assert_eq!(back.issuer, "https://idp");
        assert_eq!(back.claims, u.claims);
        let some = u.header_value(Some(&["sub".to_owned()])).unwrap();
        let back = EndUser::from_header(some.as_bytes()).unwrap();
        assert_eq!(back.claims.len(), 1);
        for bad in [
            &b"not base64!"[..],
            URL_SAFE_NO_PAD.encode("[1]").as_bytes(),
            URL_SAFE_NO_PAD.encode(r#"{"claims":{}}"#).as_bytes(),
            URL_SAFE_NO_PAD.encode(r#"{"principal":"x/y"}"#).as_bytes(),
            URL_SAFE_NO_PAD
                .encode(r#"{"principal":"nosep","claims":{}}"#)
                .as_bytes(),
        ] {
            assert!(EndUser::from_header(bad).is_err(), "{bad:?}");
        }
    }
}
