//! `ward-proxy gateway` end to end: curl (a real client) over public TLS to the gateway,
//! which authenticates the end user's JWT, authorizes with claim-bound policy and carries
//! the request over mTLS to a sidecar in front of an echo app. Covers 401 (missing and
//! invalid tokens), 403 (BOLA), 404, path normalization, SNI, certificate hot reload, TLS
//! versions, the audit line, and configurations the gateway must refuse.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use ward_tests::apps;
use ward_tests::bin::{Run, run};
use ward_tests::gateway::{Edge, IDP, echo, public_ca, public_cert, start};
use ward_tests::jwt::{mint, now};
use ward_tests::k8s::eventually;
use ward_tests::pki::TestPki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_users_reach_their_own_accounts_through_the_gateway_and_nothing_else() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let edge = tokio::task::spawn_blocking(move || start(addr))
        .await
        .expect("start");
    let (alice, bob) = (edge.alice.clone(), edge.bob.clone());
    let gateway_id = edge.pki.id("edge", "gateway");
    let checks = tokio::task::spawn_blocking(move || {
        // Alice reads her account, over HTTP/2 and HTTP/1.1.
        for version in ["--http2", "--http1.1"] {
            let (code, _, body) = edge.get("/accounts/alice/balance", Some(&alice), &[version]);
            assert_eq!(code, 200, "{version}: {body}");
            let seen = echo(&body);
            assert_eq!(seen["path"], "/accounts/alice/balance");
            let h = &seen["headers"];
            assert_eq!(
                h["x-ward-peer-identity"][0],
                gateway_id.as_str(),
                "mTLS as the gateway"
            );
            assert!(
                h.get("authorization").is_none(),
                "the token stays at the edge"
            );
            let end_user = h["x-ward-end-user"][0]
                .as_str()
                .expect("the end user, for the app");
            let end_user = String::from_utf8(
                base64::Engine::decode(&URL_SAFE_NO_PAD, end_user).expect("base64url"),
            )
            .expect("utf-8");
            let end_user: Value = serde_json::from_str(&end_user).expect("JSON");
            assert_eq!(
                end_user,
                json!({ "principal": format!("{IDP}/alice"), "claims": { "sub": "alice" } })
            );
            assert_eq!(h["x-via"][0], "gateway");
            assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
            assert_eq!(h["x-forwarded-proto"][0], "https");
        }
        // BOLA: Bob's token on Alice's account, also behind a dot segment.
        for path in ["/accounts/alice/balance", "/accounts/bob/../alice/balance"] {
            let (code, _, body) = edge.get(path, Some(&bob), &[]);
            assert_eq!((code, body.as_str()), (403, "forbidden"), "{path}");
        }
        let (code, _, _) = edge.get("/accounts/alice/../bob/balance", Some(&alice), &[]);
        assert_eq!(code, 403, "normalized before it is judged");
        // No token: 401 with the challenge and nothing else.
        let (code, head, body) = edge.get("/accounts/alice/balance", None, &[]);
        assert_eq!((code, body.as_str()), (401, "unauthorized\n"));
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer realm=\"ward\"\r"),
            "{head}"
        );
        // Invalid tokens: 401 with invalid_token, the same words for every reason.
        let expired = mint(
            &edge.signer,
            json!({ "iss": IDP, "sub": "alice", "aud": "bank-api", "exp": now() - 3600 }),
        );
        let bound = mint(
            &edge.signer,
            json!({ "iss": IDP, "sub": "alice", "aud": "bank-api", "exp": now() + 300,
                    "cnf": { "x5t#S256": "abc" } }),
        );
        let tampered = format!("{}x", &alice[..alice.len() - 1]);
        for (what, token) in [
            ("expired", &expired),
            ("bound", &bound),
            ("tampered", &tampered),
        ] {
            let (code, head, body) = edge.get("/accounts/alice/balance", Some(token), &[]);
            assert_eq!((code, body.as_str()), (401, "unauthorized\n"), "{what}");
            assert!(head.contains("error=\"invalid_token\""), "{what}: {head}");
        }
        // A route without authentication, and a path no route takes.
        assert_eq!(edge.get("/health", None, &[]).0, 200);
        assert_eq!(edge.get("/nowhere", Some(&alice), &[]).0, 404);
        // The audit log: who, how, by which route and policy; never a token.
        let allowed = edge.audit_line("an allow line", |l| {
            l["decision"] == "allow" && l["path"] == "/accounts/alice/balance"
        });
        let lines = edge.audit();
        assert_eq!(allowed["request_principal"], format!("{IDP}/alice"));
        assert_eq!(allowed["authentication"], "verified");
        assert_eq!(allowed["issuer"], IDP);
        assert_eq!(allowed["kid"], "es-1");
        assert_eq!(allowed["route"], 1);
        assert_eq!(allowed["policy"], "edge/own-accounts");
        assert!(lines.iter().any(|l| l["decision"] == "deny"
            && l["request_principal"] == format!("{IDP}/bob")
            && l["policy"] == "default:deny"));
        let refused: Vec<_> = lines
            .iter()
            .filter(|l| l["policy"] == "authentication")
            .collect();
        assert!(
            refused
                .iter()
                .any(|l| l["authentication"] == "refused: expired"),
            "{refused:?}"
        );
        assert!(
            refused
                .iter()
                .any(|l| l["authentication"] == "refused: no token")
        );
        let text = std::fs::read_to_string(edge.pki.dir().join("gateway-audit.log")).unwrap();
        for t in [&alice, &bob, &expired] {
            assert!(!text.contains(t.as_str()) && !edge.gateway.logs().contains(t.as_str()));
        }
        edge
    })
    .await
    .expect("checks");
    drop(checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_picks_certificates_by_sni_reloads_them_and_speaks_modern_tls_only() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let edge = tokio::task::spawn_blocking(move || start(addr))
        .await
        .expect("start");
    tokio::task::spawn_blocking(move || {
        // SNI: each name gets its own certificate (curl checks the name against it).
        assert_eq!(edge.get("/health", None, &[]).0, 200);
        let (code, _, _) = edge.curl("admin.bank.test", "/health", &[]);
        assert_eq!(
            code, 404,
            "admin.bank.test's certificate served; no route there"
        );
        // Versions and suites: TLS 1.3 and 1.2 with AEAD only.
        let connect = format!("127.0.0.1:{}", edge.port);
        let s_client = |args: &[&str]| -> Run {
            let mut all = vec![
                "s_client",
                "-connect",
                &connect,
                "-servername",
                "api.bank.test",
            ];
            all.extend_from_slice(args);
            run(Path::new("openssl"), &all)
        };
        for (args, ok) in [
            (&["-tls1_3"][..], true),
            (
                &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"][..],
                true,
            ),
            (&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"][..], false),
            (&["-tls1_1"][..], false),
        ] {
            let out = s_client(args);
            let text = format!("{}{}", out.stdout, out.stderr);
            let shook = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
            assert_eq!(shook, ok, "{args:?}:\n{text}");
        }
        // Hot reload: a certificate from another CA replaces the file in place.
        let dir = edge.pki.dir().to_owned();
        let (next, next_ca) = public_ca(&dir, "next-ca");
        public_cert(&dir, &next, "api", &["api.bank.test"]);
        let edge = Edge {
            ca: next_ca,
            ..edge
        };
        eventually(
            Duration::from_secs(10),
            "the new certificate served",
            || (edge.get("/health", None, &[]).0 == 200).then_some(()),
        );
        // A broken replacement is refused and the last good certificate stays.
        std::fs::write(dir.join("api.pem"), "not a certificate").expect("break");
        eventually(Duration::from_secs(10), "the refusal logged", || {
            edge.gateway
                .logs()
                .contains("public certificates refused")
                .then_some(())
        });
        assert_eq!(edge.get("/health", None, &[]).0, 200);
    })
    .await
    .expect("checks");
}

#[test]
fn configurations_the_gateway_refuses_name_the_field() {
    let pki = TestPki::new("example.org");
    let dir = pki.dir();
    pki.svid(&pki.id("edge", "gateway"))
        .write(&dir.join("gateway.pem"), &dir.join("gateway.key"))
        .expect("svid");
    std::fs::create_dir_all(dir.join("policies")).expect("policies");
    let head = "trust_domain: example.org\nidentity: { cert: gateway.pem, key: gateway.key, bundle: ca/bundle.pem }\npolicy: { dir: policies }\n";
    let route = "routes: [ { upstream: 127.0.0.1:1, server_identity: \"spiffe://example.org/ns/a/sa/b\", authentication: none } ]\n";
    for (body, want) in [
        (
            format!("{head}plaintext: true\ninbound: []\n{route}"),
            "inbound: a sidecar setting",
        ),
        (format!("{head}{route}"), "tls: required"),
        (
            format!(
                "{head}plaintext: true\nroutes: [ {{ upstream: 127.0.0.1:1, server_identity: \"spiffe://example.org/ns/a/sa/b\", authentication: none, rate_limits: [nope] }} ]\n"
            ),
            "routes[0].rate_limits: no limit named \"nope\"",
        ),
        (
            format!("{head}plaintext: true\nrate_limits: [ {{ name: a, rate: 10/d }} ]\n{route}"),
            "rate_limits[0]: rate \"10/d\" is not N/s, N/m or N/h",
        ),
        (
            format!(
                "{head}plaintext: true\nissuers: [ {{ issuer: \"http://idp\", audiences: [a], algorithms: [RS256], discovery: true }} ]\n{route}"
            ),
            "\"http://idp\" is not an https:// URL",
        ),
        (
            format!(
                "{head}plaintext: true\nissuers: [ {{ issuer: \"https://idp\", audiences: [a], algorithms: [RS256], discovery: true, jwks_uri: \"https://idp/k\" }} ]\n{route}"
            ),
            "name one key source",
        ),
        (
            format!(
                "{head}plaintext: true\nissuers: [ {{ issuer: apikey, audiences: [a], algorithms: [RS256], jwks_uri: \"https://idp/k\" }} ]\n{route}"
            ),
            "issuer \"apikey\" is reserved for API keys",
        ),
        (
            format!("{head}plaintext: true\nroutes: []\n"),
            "routes: at least one route",
        ),
        (
            format!(
                "{head}plaintext: true\nroutes: [ {{ service: \"127.0.0.1:8080\", authentication: none }} ]\n"
            ),
            "routes[0].service: needs a control plane",
        ),
        (
            format!(
                "{head}plaintext: true\nroutes: [ {{ upstream: 127.0.0.1:1, service: \"127.0.0.1:8080\", server_identity: \"spiffe://example.org/ns/a/sa/b\", authentication: none }} ]\n"
            ),
            "upstream (with server_identity) or service, one of them",
        ),
        (
            format!(
                "{head}plaintext: true\nroutes: [ {{ upstream: 127.0.0.1:1, authentication: none }} ]\n"
            ),
            "upstream needs its server_identity",
        ),
        (
            format!("{head}plaintext: true\ndpop: {{ algorithms: [HS256] }}\n{route}"),
            "dpop: algorithm \"HS256\" is not accepted",
        ),
        (
            format!(
                "{head}plaintext: true\ndpop: {{ nonce: {{ secret_file: nowhere }} }}\n{route}"
            ),
            "dpop: nonce.secret_file",
        ),
        (
            format!(
                "{head}plaintext: true\nroutes: [ {{ upstream: 127.0.0.1:1, server_identity: \"spiffe://other.org/ns/a/sa/b\", authentication: none }} ]\n"
            ),
            "routes[0].server_identity: spiffe://other.org/ns/a/sa/b is not in trust domain",
        ),
        (
            format!(
                "{head}plaintext: true\nroutes: [ {{ upstream: 127.0.0.1:1, server_identity: \"spiffe://example.org/ns/a/sa/b\" }} ]\n"
            ),
            "routes[0].authentication: needs at least one issuer",
        ),
        (
            format!(
                "{head}plaintext: true\nissuers: [ {{ issuer: x, audiences: [a], algorithms: [HS256], jwks_file: j.json }} ]\n{route}"
            ),
            "algorithm \"HS256\" is not accepted",
        ),
        (
            format!(
                "{head}plaintext: true\nroutes: [ {{ host: \"a.com:443\", upstream: 127.0.0.1:1, server_identity: \"spiffe://example.org/ns/a/sa/b\", authentication: none }} ]\n"
            ),
            "is not a host name",
        ),
        (
            format!(
                "{head}tls: {{ certificates: [ {{ cert: missing.pem, key: missing.key }} ] }}\nadmin: 127.0.0.1:0\nlisten: 127.0.0.1:0\n{route}"
            ),
            "missing.pem",
        ),
    ] {
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, &body).expect("config");
        // Under `timeout`: a configuration accepted by mistake fails the test (exit 124)
        // instead of serving forever.
        let proxy = ward_tests::bin::path("ward-proxy");
        let out = run(
            Path::new("timeout"),
            [
                "20",
                proxy.to_str().expect("utf-8"),
                "gateway",
                "--config",
                path.to_str().expect("utf-8"),
            ],
        );
        let line = out.fails_with(1);
        assert!(line.contains(want), "{want}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_judge_the_end_user_only_from_the_gateways_the_mesh_names() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let edge = tokio::task::spawn_blocking(move || start(addr))
        .await
        .expect("start");
    tokio::task::spawn_blocking(move || {
        let alice = edge.alice.clone();
        // The gateway lets any verified user ask for statements; accounts' own policy
        // judges whose they are, from the end user the gateway sent.
        let (code, _, body) = edge.get("/statements/alice/2026-11", Some(&alice), &[]);
        assert_eq!(code, 200, "{body}");
        let (code, _, body) = edge.get("/statements/bob/2026-11", Some(&alice), &[]);
        assert_eq!(
            (code, body.as_str()),
            (403, "forbidden"),
            "denied by the sidecar"
        );
        let audit = std::fs::read_to_string(edge.pki.dir().join("accounts-audit.log")).unwrap();
        let denied: Value = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["decision"] == "deny")
            .expect("the sidecar's denial");
        assert_eq!(denied["request_principal"], format!("{IDP}/alice"));
        assert_eq!(denied["path"], "/statements/bob/2026-11");
        // From web, a mesh peer that is no gateway, the same header is removed unread.
        let forged = edge.get_header("x-ward-end-user");
        let url = format!("http://{}/statements/alice/2026-11", edge.web_outbound);
        let header = format!("x-ward-end-user: {forged}");
        let out = run(
            Path::new("curl"),
            [
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "-H",
                &header,
                &url,
            ],
        );
        assert!(
            out.stdout.ends_with("\n403"),
            "web is not a gateway: {}",
            out.stdout
        );
    })
    .await
    .expect("checks");
}
