//! End-user JWT verification (`ward_proxy::gateway::jwt`): tokens minted here with real
//! keys (P-256, Ed25519, RSA) against an issuer's JWKS, and the negative matrix of issue 14:
//! expired, not yet valid, issued in the future, wrong issuer, wrong audience, `alg: none`,
//! HS256 signed with the public key, unknown `kid`, `kid` after rotation, tampered payload,
//! wrong key type, oversized, duplicate claims, `crit`, and a key offered in the header.

use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use ward_proxy::gateway::issuers::IssuerConfig;
use ward_proxy::gateway::jwt::{Issuer, JwtError, MAX_TOKEN_BYTES, verify};
use ward_tests::jwt::{Key, b64, key, mint, mint_raw, now};

const ISS: &str = "https://idp.example";

fn claims() -> serde_json::Value {
    json!({ "iss": ISS, "sub": "alice", "aud": "bank-api", "exp": now() + 300, "iat": now(), "scope": "read" })
}

fn issuer(keys: &[&Key]) -> Issuer {
    Issuer {
        issuer: ISS.into(),
        audiences: vec!["bank-api".into()],
        algorithms: vec![
            Algorithm::ES256,
            Algorithm::EdDSA,
            Algorithm::RS256,
            Algorithm::PS256,
        ],
        keys: JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        },
        clock_skew: Duration::from_secs(60),
    }
}

fn check(token: &str, issuers: &[Issuer]) -> Result<String, JwtError> {
    verify(token, issuers, SystemTime::now()).map(|v| v.subject.unwrap_or_default())
}

#[test]
fn tokens_of_each_accepted_algorithm_verify_and_carry_their_claims() {
    let (ec, ed, rsa) = (
        key("ec-1", Algorithm::ES256),
        key("ed-1", Algorithm::EdDSA),
        key("rsa-1", Algorithm::RS256),
    );
    let pss = Key {
        alg: Algorithm::PS256,
        ..key("rsa-2", Algorithm::PS256)
    };
    let issuers = [issuer(&[&ec, &ed, &rsa, &pss])];
    for k in [&ec, &ed, &rsa, &pss] {
        let verified = verify(&mint(k, claims()), &issuers, SystemTime::now()).unwrap();
        assert_eq!(verified.subject.as_deref(), Some("alice"), "{:?}", k.alg);
        assert_eq!(verified.kid, k.jwk.common.key_id);
        assert_eq!(verified.claims["scope"], "read");
    }
    // An audience list holding ours, and a token a little past exp but inside the skew.
    let mut c = claims();
    c["aud"] = json!(["other", "bank-api"]);
    c["exp"] = json!(now() - 30);
    assert_eq!(check(&mint(&ec, c), &issuers).unwrap(), "alice");
}

#[test]
fn the_negative_matrix_is_refused_each_for_its_reason() {
    let ec = key("ec-1", Algorithm::ES256);
    let rsa = key("rsa-1", Algorithm::RS256);
    let issuers = [issuer(&[&ec, &rsa])];
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        edit(&mut c);
        mint(&ec, c)
    };
    let header = |h: serde_json::Value, payload: &serde_json::Value, key: &EncodingKey, alg| {
        mint_raw(&h.to_string(), &payload.to_string(), key, alg)
    };
    let good = mint(&ec, claims());
    let (head, payload, sig) = {
        let p: Vec<&str> = good.split('.').collect();
        (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
    };
    let tampered_payload = b64(&claims().to_string().replace("alice", "admin"));
    // HS256 keyed with the issuer's public key (the classic confusion).
    let public_as_secret =
        EncodingKey::from_secret(serde_json::to_string(&ec.jwk).unwrap().as_bytes());
    let attacker = key("ec-1", Algorithm::ES256);
    let cases: Vec<(&str, String, JwtError)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 120)),
            JwtError::Expired,
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 600)),
            JwtError::NotYetValid,
        ),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(now() + 600)),
            JwtError::IssuedInFuture,
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            JwtError::NoExpiry,
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
            JwtError::UnknownIssuer("https://evil.example".into()),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("other-api")),
            JwtError::Audience,
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            JwtError::Audience,
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#)),
            JwtError::Algorithm("none".into()),
        ),
        (
            "HS256 with the public key",
            header(
                json!({"alg":"HS256","kid":"ec-1"}),
                &claims(),
                &public_as_secret,
                Algorithm::HS256,
            ),
            JwtError::Algorithm("HS256".into()),
        ),
        (
            "unknown kid",
            header(
                json!({"alg":"ES256","kid":"ec-9"}),
                &claims(),
                &ec.encoding,
                Algorithm::ES256,
            ),
            JwtError::UnknownKey(Some("ec-9".into())),
        ),
        (
            "tampered payload",
            format!("{head}.{tampered_payload}.{sig}"),
            JwtError::Signature,
        ),
        (
            // A valid signature by the same key, over other claims.
            "signature of another token",
            format!(
                "{head}.{payload}.{}",
                mint(
                    &ec,
                    json!({ "iss": ISS, "sub": "bob", "aud": "bank-api", "exp": now() + 300 })
                )
                .rsplit('.')
                .next()
                .unwrap()
            ),
            JwtError::Signature,
        ),
        (
            "RS256 naming the EC key",
            header(
                json!({"alg":"RS256","kid":"ec-1"}),
                &claims(),
                &rsa.encoding,
                Algorithm::RS256,
            ),
            JwtError::KeyMismatch(Some("ec-1".into())),
        ),
        (
            "ES384 not allowed",
            header(
                json!({"alg":"ES384","kid":"ec-1"}),
                &claims(),
                &ec.encoding,
                Algorithm::ES256,
            ),
            JwtError::Algorithm("ES384".into()),
        ),
        (
            "crit",
            header(
                json!({"alg":"ES256","kid":"ec-1","crit":["exp"]}),
                &claims(),
                &ec.encoding,
                Algorithm::ES256,
            ),
            JwtError::Critical("[\"exp\"]".into()),
        ),
        // The attacker's own key, offered in the header and named by our kid: never used.
        (
            "key in the header",
            header(
                json!({"alg":"ES256","kid":"ec-1","jwk": attacker.jwk, "jku":"https://evil.example/jwks"}),
                &claims(),
                &attacker.encoding,
                Algorithm::ES256,
            ),
            JwtError::Signature,
        ),
        (
            "four segments",
            format!("{good}.x"),
            JwtError::Malformed("not three segments".into()),
        ),
    ];
    for (what, token, want) in cases {
        assert_eq!(check(&token, &issuers), Err(want), "{what}");
    }
    let oversized = with(&|c| c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES)));
    assert_eq!(check(&oversized, &issuers), Err(JwtError::TooLarge));
    // Duplicate names, in the payload or the header, even correctly signed.
    for (h, p) in [
        (
            r#"{"alg":"ES256","kid":"ec-1"}"#.to_owned(),
            format!(
                r#"{{"iss":"{ISS}","sub":"alice","sub":"admin","aud":"bank-api","exp":{}}}"#,
                now() + 300
            ),
        ),
        (
            r#"{"alg":"ES256","kid":"ec-1","alg":"none"}"#.to_owned(),
            claims().to_string(),
        ),
        (
            r#"{"alg":"ES256","kid":"ec-1"}"#.to_owned(),
            format!(
                r#"{{"iss":"{ISS}","aud":"bank-api","exp":{},"cnf":{{"jkt":"a","jkt":"b"}}}}"#,
                now() + 300
            ),
        ),
    ] {
        let token = mint_raw(&h, &p, &ec.encoding, Algorithm::ES256);
        match check(&token, &issuers) {
            Err(JwtError::Malformed(why)) => assert!(why.contains("duplicate member"), "{why}"),
            other => panic!("duplicate names accepted: {other:?}"),
        }
    }
}

#[test]
fn a_key_rotation_retires_the_old_kid_and_a_lone_key_needs_no_kid() {
    let (old, new) = (
        key("2026-11", Algorithm::ES256),
        key("2026-12", Algorithm::ES256),
    );
    let before = [issuer(&[&old])];
    let after = [issuer(&[&new])];
    let old_token = mint(&old, claims());
    assert!(check(&old_token, &before).is_ok());
    assert_eq!(
        check(&old_token, &after),
        Err(JwtError::UnknownKey(Some("2026-11".into())))
    );
    assert!(check(&mint(&new, claims()), &after).is_ok());
    // No kid: the issuer's only key of the type; with two, no guessing.
    let no_kid = mint_raw(
        r#"{"alg":"ES256"}"#,
        &claims().to_string(),
        &new.encoding,
        Algorithm::ES256,
    );
    assert!(check(&no_kid, &after).is_ok());
    let both = [issuer(&[&old, &new])];
    assert_eq!(check(&no_kid, &both), Err(JwtError::UnknownKey(None)));
}

#[test]
fn an_issuer_is_configured_with_a_jwks_file_and_asymmetric_algorithms_only() {
    let dir = tempfile::tempdir().unwrap();
    let ec = key("ec-1", Algorithm::ES256);
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [ec.jwk] }).to_string()).unwrap();
    let config = |yaml: &str| -> IssuerConfig {
        yaml_serde::from_str(&format!("{yaml}\njwks_file: {}", jwks.display())).unwrap()
    };
    let issuer = config(&format!(
        "issuer: {ISS}\naudiences: [bank-api]\nalgorithms: [ES256]\nclock_skew: 30s"
    ))
    .load()
    .unwrap();
    assert_eq!(issuer.clock_skew, Duration::from_secs(30));
    assert_eq!(check(&mint(&ec, claims()), &[issuer]).unwrap(), "alice");
    for (alg, why) in [
        ("none", "not accepted"),
        ("HS256", "never none or HMAC"),
        ("ES512", "not accepted"),
    ] {
        let err = config(&format!(
            "issuer: {ISS}\naudiences: [bank-api]\nalgorithms: [{alg}]"
        ))
        .load()
        .unwrap_err();
        assert!(err.contains(why) && err.contains(alg), "{err}");
    }
    // A JWKS whose kid repeats, or that is not one, is refused with the file.
    std::fs::write(&jwks, json!({ "keys": [ec.jwk, ec.jwk] }).to_string()).unwrap();
    let err = config(&format!(
        "issuer: {ISS}\naudiences: [a]\nalgorithms: [ES256]"
    ))
    .load()
    .unwrap_err();
    assert!(
        err.contains("appears twice") && err.contains("jwks.json"),
        "{err}"
    );
    std::fs::write(&jwks, "{}").unwrap();
    let err = config(&format!(
        "issuer: {ISS}\naudiences: [a]\nalgorithms: [ES256]"
    ))
    .load()
    .unwrap_err();
    assert!(err.contains("not a JWKS"), "{err}");
    assert!(
        yaml_serde::from_str::<IssuerConfig>(
            "issuer: x\naudiences: [a]\nalgorithms: [ES256]\njwks_file: j\naud: b"
        )
        .is_err(),
        "unknown fields are refused"
    );
}
