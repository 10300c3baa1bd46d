//! End-user JWTs for tests: real keys (P-256, Ed25519, RSA) with their JWKs, and compact
//! JWS tokens minted with them, including ones a correct verifier must refuse.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

/// A signing key, its JWK (with `kid`) and its algorithm.
pub struct Key {
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    pub alg: Algorithm,
}

pub fn key(kid: &str, alg: Algorithm) -> Key {
    let (pair, encoding) = match alg {
        Algorithm::ES256 => {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
            (pair, enc)
        }
        Algorithm::EdDSA => {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let enc = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
            (pair, enc)
        }
        _ => {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            let enc = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap();
            (pair, enc)
        }
    };
    let mut jwk = if alg == Algorithm::EdDSA {
        // jsonwebtoken derives no Ed25519 JWK from a private key: state it from the raw
        // public key (RFC 8037).
        serde_json::from_value(json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
        }))
        .unwrap()
    } else {
        Jwk::from_encoding_key(&encoding, alg).unwrap()
    };
    jwk.common.key_id = Some(kid.to_owned());
    Key { encoding, jwk, alg }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

pub fn b64_bytes(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of these exact header and payload texts, signed by `key` with `alg`.
pub fn mint_raw(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

pub fn mint(key: &Key, claims: serde_json::Value) -> String {
    let header = json!({ "alg": key.alg, "typ": "JWT", "kid": key.jwk.common.key_id });
    mint_raw(
        &header.to_string(),
        &claims.to_string(),
        &key.encoding,
        key.alg,
    )
}

/// The JWKS document of `keys`, as an issuer publishes it.
pub fn jwks(keys: &[&Key]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    })
    .expect("a JWKS serializes")
}

/// The JWK thumbprint (RFC 7638, SHA-256) of `key`: what a DPoP-bound token's `cnf.jkt`
/// holds.
pub fn thumbprint(key: &Key) -> String {
    key.jwk
        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .expect("a thumbprint")
}

/// The public JWK of `key` as a DPoP proof carries it (no `kid`).
pub fn public_jwk(key: &Key) -> serde_json::Value {
    let mut jwk = serde_json::to_value(&key.jwk).expect("a JWK serializes");
    if let Some(members) = jwk.as_object_mut() {
        members.remove("kid");
    }
    jwk
}

/// `ath`: base64url of the SHA-256 of `token`.
pub fn ath(token: &str) -> String {
    b64_bytes(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

/// A DPoP proof (RFC 9449) by `key` for `htm` `htu` and `token`, with a fresh `jti`;
/// `claims` adds to or replaces its claims (`null` removes one).
pub fn dpop_proof(
    key: &Key,
    htm: &str,
    htu: &str,
    token: &str,
    claims: serde_json::Value,
) -> String {
    let header = json!({ "typ": "dpop+jwt", "alg": key.alg, "jwk": public_jwk(key) });
    dpop_proof_raw(&header, key, htm, htu, token, claims)
}

/// [`dpop_proof`] with this exact `header`.
pub fn dpop_proof_raw(
    header: &serde_json::Value,
    key: &Key,
    htm: &str,
    htu: &str,
    token: &str,
    claims: serde_json::Value,
) -> String {
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).expect("randomness");
    let mut payload = json!({
        "jti": URL_SAFE_NO_PAD.encode(jti), "htm": htm, "htu": htu, "iat": now(),
        "ath": ath(token),
    });
    if let (Some(p), Some(extra)) = (payload.as_object_mut(), claims.as_object()) {
        for (name, value) in extra {
            if value.is_null() {
                p.remove(name);
            } else {
                p.insert(name.clone(), value.clone());
            }
        }
    }
    mint_raw(
        &header.to_string(),
        &payload.to_string(),
        &key.encoding,
        key.alg,
    )
}
