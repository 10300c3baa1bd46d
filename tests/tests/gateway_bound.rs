//! Sender-constrained tokens at the gateway: DPoP (RFC 9449) proofs checked step by step —
//! each broken proof refused with 401 and its reason in the audit log only — server
//! nonces, and certificate-bound tokens (RFC 8705) against the client certificate of the
//! connection.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use ward_tests::apps;
use ward_tests::gateway::{Edge, IDP, Options, echo, public_ca, public_cert, start_with};
use ward_tests::jwt::{
    Key, ath, dpop_proof, dpop_proof_raw, key, mint, now, public_jwk, thumbprint,
};

/// A token for `sub` bound by `cnf`.
fn bound_token(edge: &Edge, sub: &str, cnf: Value) -> String {
    mint(
        &edge.signer,
        json!({ "iss": IDP, "sub": sub, "aud": "bank-api", "exp": now() + 300, "cnf": cnf }),
    )
}

fn htu(edge: &Edge, path: &str) -> String {
    format!("https://api.bank.test:{}{path}", edge.port)
}

/// GET `path` with `Authorization: SCHEME TOKEN` and these `DPoP` headers.
fn call(
    edge: &Edge,
    path: &str,
    scheme: &str,
    token: &str,
    proofs: &[&str],
) -> (u16, String, String) {
    let auth = format!("Authorization: {scheme} {token}");
    let proofs: Vec<String> = proofs.iter().map(|p| format!("DPoP: {p}")).collect();
    let mut args = vec!["-H", auth.as_str()];
    for p in &proofs {
        args.extend(["-H", p.as_str()]);
    }
    edge.curl("api.bank.test", path, &args)
}

/// The reason the gateway's audit log gives for its last refusal.
/// The refusals the gateway audited so far, oldest first.
fn refusals(edge: &Edge) -> Vec<String> {
    edge.audit()
        .iter()
        .filter_map(|l| {
            l["authentication"]
                .as_str()
                .filter(|a| a.starts_with("refused"))
                .map(str::to_owned)
        })
        .collect()
}

/// Makes one refused request with `call`, and returns its answer and the refusal audited
/// for it. Audit lines are written after the answer, by the audit writer: this waits for
/// the line that request added rather than reading the log too early.
fn refused<T>(edge: &Edge, call: impl FnOnce() -> T) -> (T, String) {
    let before = refusals(edge).len();
    let answer = call();
    let reason =
        ward_tests::k8s::eventually(Duration::from_secs(5), "the refusal's audit line", || {
            refusals(edge).get(before).cloned()
        });
    (answer, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_bound_tokens_need_a_fresh_proof_by_their_key_for_this_request() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let edge = start_with(addr, &Options::default());
        let holder = key("dpop-holder", Algorithm::ES256);
        let thief = key("dpop-thief", Algorithm::ES256);
        let token = bound_token(&edge, "alice", json!({ "jkt": thumbprint(&holder) }));
        let path = "/statements/alice/2026";
        let proof = dpop_proof(&holder, "GET", &htu(&edge, path), &token, json!({}));

        let (code, _, body) = call(&edge, path, "DPoP", &token, &[&proof]);
        assert_eq!(code, 200, "{body}");
        let seen = &echo(&body)["headers"];
        assert!(
            seen.get("dpop").is_none(),
            "the proof stays at the edge: {seen}"
        );
        assert!(seen.get("authorization").is_none());
        assert!(seen["x-ward-end-user"][0].is_string());

        // The same proof again: a replay.
        let ((code, head, body), refusal) =
            refused(&edge, || call(&edge, path, "DPoP", &token, &[&proof]));
        assert_eq!((code, body.as_str()), (401, "unauthorized\n"));
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(
                "www-authenticate: dpop realm=\"ward\", error=\"invalid_token\", algs=\"es256"
            ),
            "{head}"
        );
        assert!(refusal.contains("replayed"), "{refusal}");

        let url = htu(&edge, path);
        let fresh = |claims: Value| dpop_proof(&holder, "GET", &url, &token, claims);
        let header = |extra: Value| {
            let mut h = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&holder) });
            for (k, v) in extra.as_object().into_iter().flatten() {
                h[k] = v.clone();
            }
            h
        };
        let with_header = |h: Value| dpop_proof_raw(&h, &holder, "GET", &url, &token, json!({}));
        let mut private_jwk = public_jwk(&holder);
        private_jwk["d"] = json!("AAAA");
        let unsigned = {
            let p = fresh(json!({}));
            let payload = p.split('.').nth(1).unwrap();
            let none = json!({ "typ": "dpop+jwt", "alg": "none", "jwk": public_jwk(&holder) });
            format!("{}.{payload}.", b64(&none))
        };
        let tampered = {
            let p = fresh(json!({}));
            let (rest, sig) = p.rsplit_once('.').unwrap();
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            format!("{rest}.{flipped}{}", &sig[1..])
        };
        let other_token = bound_token(&edge, "alice", json!({ "jkt": thumbprint(&holder) }));
        let cases: Vec<(&str, Vec<String>, &str)> = vec![
            ("no proof", vec![], "no DPoP proof"),
            (
                "two proofs",
                vec![fresh(json!({})), fresh(json!({}))],
                "more than one",
            ),
            (
                "wrong htm",
                vec![dpop_proof(&holder, "POST", &url, &token, json!({}))],
                "htm",
            ),
            (
                "wrong htu path",
                vec![dpop_proof(
                    &holder,
                    "GET",
                    &htu(&edge, "/statements/alice/2027"),
                    &token,
                    json!({}),
                )],
                "htu",
            ),
            (
                "wrong htu host",
                vec![dpop_proof(
                    &holder,
                    "GET",
                    &format!("https://evil.test:{}{path}", edge.port),
                    &token,
                    json!({}),
                )],
                "htu",
            ),
            (
                "wrong htu scheme",
                vec![dpop_proof(
                    &holder,
                    "GET",
                    &url.replace("https:", "http:"),
                    &token,
                    json!({}),
                )],
                "htu",
            ),
            ("old", vec![fresh(json!({ "iat": now() - 600 }))], "too old"),
            (
                "future",
                vec![fresh(json!({ "iat": now() + 600 }))],
                "future",
            ),
            ("no iat", vec![fresh(json!({ "iat": null }))], "no iat"),
            ("no jti", vec![fresh(json!({ "jti": null }))], "no jti"),
            (
                "ath of another token",
                vec![fresh(json!({ "ath": ath(&other_token) }))],
                "ath",
            ),
            ("no ath", vec![fresh(json!({ "ath": null }))], "ath"),
            (
                "another key",
                vec![dpop_proof(&thief, "GET", &url, &token, json!({}))],
                "jkt",
            ),
            (
                "private key in jwk",
                vec![with_header(header(json!({ "jwk": private_jwk })))],
                "private",
            ),
            (
                "typ JWT",
                vec![with_header(header(json!({ "typ": "JWT" })))],
                "typ",
            ),
            (
                "no jwk",
                vec![with_header(header(json!({ "jwk": null })))],
                "no jwk",
            ),
            (
                "kid instead of jwk",
                vec![with_header(
                    json!({ "typ": "dpop+jwt", "alg": "ES256", "kid": "dpop-holder" }),
                )],
                "no jwk",
            ),
            (
                "crit",
                vec![with_header(header(json!({ "crit": ["exp"] })))],
                "critical",
            ),
            ("alg none", vec![unsigned], "alg"),
            ("HS256", vec![hs256_proof(&holder, &url, &token)], "alg"),
            ("bad signature", vec![tampered], "bad signature"),
            ("not a JWS", vec!["a.b".into()], "three segments"),
        ];
        for (what, proofs, reason) in &cases {
            let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
            let ((code, head, body), refusal) =
                refused(&edge, || call(&edge, path, "DPoP", &token, &proofs));
            assert_eq!((code, body.as_str()), (401, "unauthorized\n"), "{what}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: dpop "),
                "{what}: {head}"
            );
            assert!(refusal.contains(reason), "{what}: {refusal}");
        }

        // The binding cannot be stepped around: the bound token as a bearer token, an
        // unbound one with the DPoP scheme (and a good proof).
        let ((code, head, _), refusal) = refused(&edge, || {
            call(&edge, path, "Bearer", &token, &[&fresh(json!({}))])
        });
        assert_eq!(code, 401);
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: dpop "),
            "{head}"
        );
        assert!(refusal.contains("without the DPoP scheme"), "{refusal}");
        let unbound = edge.alice.clone();
        let proof = dpop_proof(&holder, "GET", &url, &unbound, json!({}));
        let ((code, _, _), refusal) =
            refused(&edge, || call(&edge, path, "DPoP", &unbound, &[&proof]));
        assert_eq!(code, 401);
        assert!(refusal.contains("not bound to a DPoP key"), "{refusal}");
        // An unknown confirmation method is refused, not ignored.
        let odd = bound_token(
            &edge,
            "alice",
            json!({ "jkt": thumbprint(&holder), "jwk": {} }),
        );
        let proof = dpop_proof(&holder, "GET", &url, &odd, json!({}));
        let (answer, refusal) = refused(&edge, || call(&edge, path, "DPoP", &odd, &[&proof]));
        assert_eq!(answer.0, 401);
        assert!(refusal.contains("cnf"), "{refusal}");

        // Bob's DPoP-bound token still meets the policy: not Alice's statements.
        let bobs = bound_token(&edge, "bob", json!({ "jkt": thumbprint(&holder) }));
        let proof = dpop_proof(&holder, "GET", &url, &bobs, json!({}));
        assert_eq!(call(&edge, path, "DPoP", &bobs, &[&proof]).0, 403);

        // Nothing of a proof or token reaches the audit log.
        let log = std::fs::read_to_string(edge.pki.dir().join("gateway-audit.log")).unwrap();
        assert!(!log.contains(&token) && !log.contains(&proof[..40]));
    })
    .await
    .expect("test thread");
}

fn b64(v: &Value) -> String {
    ward_tests::jwt::b64(&v.to_string())
}

/// A proof "signed" with HMAC keyed by the holder's public key: the old confusion attack.
fn hs256_proof(holder: &Key, htu: &str, token: &str) -> String {
    let secret = serde_json::to_vec(&public_jwk(holder)).unwrap();
    let hmac = Key {
        encoding: jsonwebtoken::EncodingKey::from_secret(&secret),
        jwk: holder.jwk.clone(),
        alg: Algorithm::HS256,
    };
    let header = json!({ "typ": "dpop+jwt", "alg": "HS256", "jwk": public_jwk(holder) });
    dpop_proof_raw(&header, &hmac, "GET", htu, token, json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_requires_nonces_hands_one_out_and_takes_proofs_that_carry_it() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let options = Options {
            extra: "dpop: { nonce: { lifetime: 5m }, algorithms: [ES256, EdDSA] }".into(),
            ..Options::default()
        };
        let edge = start_with(addr, &options);
        let holder = key("dpop-ed", Algorithm::EdDSA);
        let token = bound_token(&edge, "alice", json!({ "jkt": thumbprint(&holder) }));
        let path = "/statements/alice/2026";
        let url = htu(&edge, path);
        let (code, head, _) = call(&edge, path, "DPoP", &token, &[&dpop_proof(&holder, "GET", &url, &token, json!({}))]);
        assert_eq!(code, 401);
        assert!(
            head.to_ascii_lowercase().contains(
                "www-authenticate: dpop realm=\"ward\", error=\"use_dpop_nonce\", algs=\"es256 eddsa\""
            ),
            "{head}"
        );
        let nonce_sent = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("dpop-nonce").then(|| value.trim().to_owned())
            })
            .expect("a nonce");
        let with_nonce = dpop_proof(&holder, "GET", &url, &token, json!({ "nonce": nonce_sent }));
        let (code, _, body) = call(&edge, path, "DPoP", &token, &[&with_nonce]);
        assert_eq!(code, 200, "{body}");
        let forged = dpop_proof(&holder, "GET", &url, &token, json!({ "nonce": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }));
        let ((code, head, _), refusal) =
            refused(&edge, || call(&edge, path, "DPoP", &token, &[&forged]));
        assert_eq!(code, 401);
        assert!(refusal.contains("nonce"), "{refusal}");
        assert!(head.to_ascii_lowercase().contains("use_dpop_nonce"), "{head}");
        // A proof by a key of an algorithm not on this gateway's list.
        let es = key("dpop-es", Algorithm::ES256);
        let es_token = bound_token(&edge, "alice", json!({ "jkt": thumbprint(&es) }));
        let rs = key("dpop-rs", Algorithm::RS256);
        let rs_token = bound_token(&edge, "alice", json!({ "jkt": thumbprint(&rs) }));
        let proof = dpop_proof(&rs, "GET", &url, &rs_token, json!({ "nonce": nonce_sent }));
        let (answer, refusal) = refused(&edge, || call(&edge, path, "DPoP", &rs_token, &[&proof]));
        assert_eq!(answer.0, 401);
        assert!(refusal.contains("alg not accepted"), "{refusal}");
        let proof = dpop_proof(&es, "GET", &url, &es_token, json!({ "nonce": nonce_sent }));
        assert_eq!(call(&edge, path, "DPoP", &es_token, &[&proof]).0, 200);
    })
    .await
    .expect("test thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_bound_tokens_are_taken_only_over_a_connection_with_that_client_certificate() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("temp dir");
        let (clients, ca_path) = public_ca(dir.path(), "client-ca");
        let mine = public_cert(dir.path(), &clients, "client-a", &["a.partner.test"]);
        public_cert(dir.path(), &clients, "client-b", &["b.partner.test"]);
        let (strangers, _) = public_ca(dir.path(), "stranger-ca");
        public_cert(dir.path(), &strangers, "stranger", &["a.partner.test"]);
        let options = Options {
            tls: format!(", client_ca: {}", ca_path.display()),
            ..Options::default()
        };
        let edge = start_with(addr, &options);
        let x5t = ward_tests::jwt::b64_bytes(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &mine).as_ref(),
        );
        let token = bound_token(&edge, "alice", json!({ "x5t#S256": x5t }));
        let auth = format!("Authorization: Bearer {token}");
        let with_cert = |name: &str, auth: &str| {
            let cert = dir.path().join(format!("{name}.pem"));
            let key = dir.path().join(format!("{name}.key"));
            let (cert, key) = (cert.display().to_string(), key.display().to_string());
            edge.curl(
                "api.bank.test",
                "/statements/alice/2026",
                &["--cert", &cert, "--key", &key, "-H", auth],
            )
        };
        let (code, _, body) = with_cert("client-a", &auth);
        assert_eq!(code, 200, "{body}");
        // Without a certificate, or with another one from the same CA: 401.
        let ((code, head, _), refusal) = refused(&edge, || {
            edge.get("/statements/alice/2026", Some(&token), &[])
        });
        assert_eq!(code, 401);
        assert!(
            head.to_ascii_lowercase()
                .contains("bearer realm=\"ward\", error=\"invalid_token\"")
        );
        assert!(refusal.contains("this connection has none"), "{refusal}");
        let (answer, refusal) = refused(&edge, || with_cert("client-b", &auth));
        assert_eq!(answer.0, 401);
        assert!(refusal.contains("another client certificate"), "{refusal}");
        // A certificate from a CA the gateway does not trust ends the handshake.
        assert_eq!(with_cert("stranger", &auth).0, 0);
        // Unbound tokens still work with or without a certificate.
        let plain = format!("Authorization: Bearer {}", edge.alice);
        assert_eq!(with_cert("client-a", &plain).0, 200);
        assert_eq!(
            edge.get("/statements/alice/2026", Some(&edge.alice), &[]).0,
            200
        );
    })
    .await
    .expect("test thread");
}
