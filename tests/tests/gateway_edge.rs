//! `ward-proxy gateway` end to end: curl (a real client) over public TLS to the gateway,
//! which authenticates the end user's JWT, authorizes with claim-bound policy and carries
//! the request over mTLS to a sidecar in front of an echo app. Covers 401 (missing and
//! invalid tokens), 403 (BOLA), 404, path normalization, SNI, certificate hot reload, TLS
//! versions, the audit line, and configurations the gateway must refuse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use ward_certs::pem::{self, FileMode};
use ward_tests::apps;
use ward_tests::bin::{Run, run};
use ward_tests::jwt::{Key, jwks, key, mint, now};
use ward_tests::k8s::eventually;
use ward_tests::mesh::{Proxy, free_addr};
use ward_tests::pki::{CaSpec, CustomCa, LeafSpec, TestPki};

const IDP: &str = "https://idp.bank.test";

/// A public CA's root in `dir/NAME-ca.pem`, and a server certificate for `hosts` in
/// `dir/FILE.pem` / `dir/FILE.key`.
fn public_cert(dir: &Path, ca: &CustomCa, file: &str, hosts: &[&str]) {
    let mut spec = LeafSpec::svid("spiffe://unused");
    spec.uris.clear();
    spec.dns = hosts.iter().map(|h| (*h).to_owned()).collect();
    let leaf = ca.leaf(&spec);
    let write = |name: &str, text: String, mode| {
        pem::write_atomic(&dir.join(name), text.as_bytes(), mode).expect("write");
    };
    write(
        &format!("{file}.key"),
        pem::pem_block("PRIVATE KEY", leaf.key.secret_der()),
        FileMode::Secret,
    );
    write(
        &format!("{file}.pem"),
        pem::certs_to_pem(&leaf.chain),
        FileMode::Public,
    );
}

fn public_ca(dir: &Path, name: &str) -> (CustomCa, PathBuf) {
    let ca = CustomCa::root(&CaSpec::new("bank.test", name));
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, pem::certs_to_pem([&ca.cert])).expect("write CA");
    (ca, path)
}

struct Edge {
    pki: TestPki,
    gateway: Proxy,
    _accounts: Proxy,
    _web: Proxy,
    /// The web sidecar's outbound listener (to accounts).
    web_outbound: std::net::SocketAddr,
    port: u16,
    ca: PathBuf,
    alice: String,
    bob: String,
    signer: Key,
}

const GATEWAY_POLICY: &str = "\
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: own-accounts, namespace: edge }
spec:
  selector: { matchLabels: { app: gateway } }
  action: ALLOW
  rules:
  - from: [ { requestPrincipals: [\"https://idp.bank.test/*\"] } ]
    to: [ { methods: [GET], paths: [\"/accounts/{request.auth.claims[sub]}/*\"] } ]
  - from: [ { requestPrincipals: [\"*\"] } ]
    to: [ { paths: [\"/statements/*\"] } ]
  - to: [ { paths: [\"/health\"] } ]
";

/// The accounts sidecar's own rule for statements: only the end user's own, whether the
/// call comes from the gateway or from `web` (whose end-user header is never believed).
const ACCOUNTS_POLICY: &str = "\
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: accounts, namespace: bank }
spec:
  action: ALLOW
  rules:
  - from: [ { principals: [\"GATEWAY\"] } ]
    to: [ { paths: [\"/accounts/*\", \"/health\"] } ]
  - from: [ { principals: [\"GATEWAY\", \"WEB\"], requestPrincipals: [\"https://idp.bank.test/*\"] } ]
    to: [ { paths: [\"/statements/{request.auth.claims[sub]}/*\"] } ]
";

fn user_token(signer: &Key, sub: &str) -> String {
    mint(
        signer,
        json!({ "iss": IDP, "sub": sub, "aud": "bank-api", "exp": now() + 300, "iat": now() }),
    )
}

fn start(app: std::net::SocketAddr) -> Edge {
    let pki = TestPki::new("example.org");
    let dir = pki.dir().to_owned();
    for (ns, sa) in [("edge", "gateway"), ("bank", "accounts"), ("bank", "web")] {
        pki.svid_ttl(&pki.id(ns, sa), Duration::from_secs(3600))
            .write(
                &dir.join(format!("{sa}.pem")),
                &dir.join(format!("{sa}.key")),
            )
            .expect("write svid");
    }
    let (public, ca) = public_ca(&dir, "public-ca");
    public_cert(&dir, &public, "api", &["api.bank.test"]);
    public_cert(&dir, &public, "admin", &["admin.bank.test"]);
    let signer = key("es-1", Algorithm::ES256);
    std::fs::write(dir.join("jwks.json"), jwks(&[&signer])).expect("jwks");
    let (gw, web) = (pki.id("edge", "gateway"), pki.id("bank", "web"));
    let accounts_policy = format!(
        "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{ name: default, namespace: ward-system }}\nspec: {{ default: deny, gateways: [\"{gw}\"] }}\n---\n{ACCOUNTS_POLICY}"
    )
    .replace("GATEWAY", &gw)
    .replace("WEB", &web);
    for (sub, policy) in [
        ("accounts-policies", accounts_policy),
        ("gateway-policies", GATEWAY_POLICY.to_owned()),
    ] {
        std::fs::create_dir_all(dir.join(sub)).expect("policy dir");
        std::fs::write(dir.join(sub).join("policy.yaml"), policy).expect("policy");
    }
    let inbound = free_addr();
    let accounts = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: accounts.pem, key: accounts.key, bundle: ca/bundle.pem }}\n\
         workload: {{ namespace: bank, labels: {{ app: accounts }} }}\n\
         inbound:\n  - {{ listen: {inbound}, app: {app} }}\n\
         policy: {{ dir: accounts-policies }}\n\
         audit: {{ decisions: all, log: accounts-audit.log }}\nadmin: {}\n",
        free_addr()
    );
    let accounts = Proxy::start(&dir, "accounts", &accounts);
    let outbound = free_addr();
    let web = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: web.pem, key: web.key, bundle: ca/bundle.pem }}\n\
         outbound:\n  - {{ listen: {outbound}, upstream: {inbound}, server_identity: \"{}\" }}\n\
         admin: {}\n",
        pki.id("bank", "accounts"),
        free_addr()
    );
    let web = Proxy::start(&dir, "web", &web);
    let listen = free_addr();
    let target = format!(
        "upstream: {inbound}, server_identity: \"{}\"",
        pki.id("bank", "accounts")
    );
    let gateway = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: gateway.pem, key: gateway.key, bundle: ca/bundle.pem }}\n\
         workload: {{ namespace: edge, labels: {{ app: gateway }} }}\n\
         listen: {listen}\n\
         tls: {{ certificates: [ {{ cert: api.pem, key: api.key }}, {{ cert: admin.pem, key: admin.key }} ] }}\n\
         issuers: [ {{ issuer: \"{IDP}\", audiences: [bank-api], algorithms: [ES256], jwks_file: jwks.json }} ]\n\
         routes:\n\
         \x20 - {{ host: api.bank.test, path: {{ exact: /health }}, {target}, authentication: none }}\n\
         \x20 - {{ host: \"*.bank.test\", path: {{ prefix: /accounts }}, {target}, request_headers: {{ set: {{ x-via: gateway }} }} }}\n\
         \x20 - {{ host: \"*.bank.test\", path: {{ prefix: /statements }}, {target} }}\n\
         forward_claims: [sub]\n\
         policy: {{ dir: gateway-policies }}\n\
         audit: {{ decisions: all, log: gateway-audit.log }}\n\
         admin: {}\naccess_log: true\n",
        free_addr()
    );
    let gateway = Proxy::start_gateway(&dir, "gateway", &gateway);
    Edge {
        alice: user_token(&signer, "alice"),
        bob: user_token(&signer, "bob"),
        pki,
        gateway,
        _accounts: accounts,
        _web: web,
        web_outbound: outbound,
        port: listen.port(),
        ca,
        signer,
    }
}

impl Edge {
    /// curl to `host` (resolved to the gateway) with `extra` arguments; `-w` appends the
    /// status on a last line.
    fn curl(&self, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
        let url = format!("https://{host}:{}{path}", self.port);
        let resolve = format!("{host}:{}:127.0.0.1", self.port);
        let ca = self.ca.display().to_string();
        let mut args = vec![
            "-sS",
            "--max-time",
            "10",
            "--path-as-is",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-D",
            "-",
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = run(Path::new("curl"), &args);
        let text = out.stdout.clone();
        let (rest, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        (
            code.trim().parse().unwrap_or(0),
            head.to_owned(),
            body.to_owned(),
        )
    }

    fn get(&self, path: &str, token: Option<&str>, extra: &[&str]) -> (u16, String, String) {
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args: Vec<&str> = extra.to_vec();
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        self.curl("api.bank.test", path, &args)
    }

    /// The value of a header the app received through the gateway on Alice's request.
    fn get_header(&self, name: &str) -> String {
        let (code, _, body) = self.get("/statements/alice/x", Some(&self.alice), &[]);
        assert_eq!(code, 200, "{body}");
        echo(&body)["headers"][name][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name} reached the app: {body}"))
            .to_owned()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.pki.dir().join("gateway-audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn echo(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the echo ({e}): {body}"))
}

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
        let lines = edge.audit();
        let allowed = lines
            .iter()
            .find(|l| l["decision"] == "allow" && l["path"] == "/accounts/alice/balance")
            .expect("an allow line");
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
            format!("{head}plaintext: true\nroutes: []\n"),
            "routes: at least one route",
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
        let out = run(
            &ward_tests::bin::path("ward-proxy"),
            ["gateway", "--config", path.to_str().expect("utf-8")],
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
