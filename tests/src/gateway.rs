//! The gateway's end-to-end harness: a public CA and server certificates, an end-user
//! token issuer (a signing key and its JWKS), an `accounts` sidecar in front of a test app
//! (with `web`, a mesh peer that is no gateway, able to call it), and `ward-proxy gateway`
//! in front of it all, reached with curl over public TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use ward_certs::pem::{self, FileMode};

use crate::bin::run;
use crate::jwt::{Key, jwks, key, mint, now};
use crate::mesh::{Proxy, free_addr};
use crate::pki::{CaSpec, CustomCa, LeafSpec, TestPki};

pub const IDP: &str = "https://idp.bank.test";

/// A certificate for `hosts` (server and client use) in `dir/FILE.pem` / `dir/FILE.key`,
/// issued by `ca`; returns the leaf's DER.
pub fn public_cert(dir: &Path, ca: &CustomCa, file: &str, hosts: &[&str]) -> Vec<u8> {
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
    leaf.chain[0].to_vec()
}

pub fn public_ca(dir: &Path, name: &str) -> (CustomCa, PathBuf) {
    let ca = CustomCa::root(&CaSpec::new("bank.test", name));
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, pem::certs_to_pem([&ca.cert])).expect("write CA");
    (ca, path)
}

pub struct Edge {
    pub pki: TestPki,
    pub gateway: Proxy,
    pub accounts: Proxy,
    pub web: Proxy,
    /// The web sidecar's outbound listener (to accounts).
    pub web_outbound: std::net::SocketAddr,
    pub port: u16,
    /// The gateway's configuration with `LISTEN` and `ADMIN` for its addresses.
    pub config: String,
    pub ca: PathBuf,
    pub alice: String,
    pub bob: String,
    pub signer: Key,
}

pub const GATEWAY_POLICY: &str = "\
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
  - from: [ { principals: [\"GATEWAY\", \"WEB\"], requestPrincipals: [\"https://idp.bank.test/*\", \"apikey/*\"] } ]
    to: [ { paths: [\"/statements/{request.auth.claims[sub]}/*\"] } ]
";

pub fn user_token(signer: &Key, sub: &str) -> String {
    mint(
        signer,
        json!({ "iss": IDP, "sub": sub, "aud": "bank-api", "exp": now() + 300, "iat": now() }),
    )
}

pub fn start(app: std::net::SocketAddr) -> Edge {
    start_with(app, &Options::default())
}

/// What a test adds to the gateway's configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Top-level lines (e.g. `rate_limits: [...]`).
    pub extra: String,
    /// The `issuers:` list instead of the test issuer's (a JWKS file).
    pub issuers: Option<String>,
    /// The gateway's policy file instead of [`GATEWAY_POLICY`].
    pub gateway_policy: Option<String>,
    /// Inside the `/accounts` route's map, after its fields (e.g. `, rate_limits: [a]`).
    pub accounts_route: String,
    /// Inside the `tls` map, after the certificates (e.g. `, client_ca: ca.pem`).
    pub tls: String,
}

/// [`start`] with `options`.
pub fn start_with(app: std::net::SocketAddr, options: &Options) -> Edge {
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
        (
            "gateway-policies",
            options
                .gateway_policy
                .clone()
                .unwrap_or_else(|| GATEWAY_POLICY.to_owned()),
        ),
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
         tls: {{ certificates: [ {{ cert: api.pem, key: api.key }}, {{ cert: admin.pem, key: admin.key }} ]{} }}\n\
         issuers: {}\n\
         routes:\n\
         \x20 - {{ host: api.bank.test, path: {{ exact: /health }}, {target}, authentication: none }}\n\
         \x20 - {{ host: \"*.bank.test\", path: {{ prefix: /accounts }}, {target}, request_headers: {{ set: {{ x-via: gateway }} }}{} }}\n\
         \x20 - {{ host: \"*.bank.test\", path: {{ prefix: /statements }}, {target} }}\n\
         forward_claims: [sub]\n\
         policy: {{ dir: gateway-policies }}\n\
         audit: {{ decisions: all, log: gateway-audit.log }}\n\
         admin: ADMIN\naccess_log: true\n{}\n",
        options.tls,
        options.issuers.clone().unwrap_or_else(|| format!(
            "[ {{ issuer: \"{IDP}\", audiences: [bank-api], algorithms: [ES256], jwks_file: jwks.json }} ]"
        )),
        options.accounts_route,
        options.extra,
    );
    let config = gateway.replace(&listen.to_string(), "LISTEN");
    let gateway = gateway.replace("ADMIN", &free_addr().to_string());
    let gateway = Proxy::start_gateway(&dir, "gateway", &gateway);
    Edge {
        alice: user_token(&signer, "alice"),
        bob: user_token(&signer, "bob"),
        pki,
        gateway,
        accounts,
        web,
        web_outbound: outbound,
        port: listen.port(),
        config,
        ca,
        signer,
    }
}

impl Edge {
    /// Another replica of the gateway, with the same configuration on its own ports:
    /// the process and its port.
    pub fn replica(&self, name: &str) -> (Proxy, u16) {
        let listen = free_addr();
        let config = self
            .config
            .replace("LISTEN", &listen.to_string())
            .replace("ADMIN", &free_addr().to_string());
        (
            Proxy::start_gateway(self.pki.dir(), name, &config),
            listen.port(),
        )
    }

    /// [`Edge::get`] to another gateway replica listening on `port`.
    pub fn get_at(&self, port: u16, path: &str, token: &str) -> (u16, String, String) {
        let auth = format!("Authorization: Bearer {token}");
        Edge::curl_to(&self.ca, port, "api.bank.test", path, &["-H", &auth])
    }

    /// curl to `host` (resolved to the gateway) with `extra` arguments; `-w` appends the
    /// status on a last line.
    pub fn curl(&self, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
        Self::curl_to(&self.ca, self.port, host, path, extra)
    }

    /// curl to a gateway listening on `port` whose certificates `ca` issued.
    fn curl_to(
        ca: &Path,
        port: u16,
        host: &str,
        path: &str,
        extra: &[&str],
    ) -> (u16, String, String) {
        let url = format!("https://{host}:{port}{path}");
        let resolve = format!("{host}:{port}:127.0.0.1");
        let ca = ca.display().to_string();
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

    pub fn get(&self, path: &str, token: Option<&str>, extra: &[&str]) -> (u16, String, String) {
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args: Vec<&str> = extra.to_vec();
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        self.curl("api.bank.test", path, &args)
    }

    /// The value of a header the app received through the gateway on Alice's request.
    pub fn get_header(&self, name: &str) -> String {
        let (code, _, body) = self.get("/statements/alice/x", Some(&self.alice), &[]);
        assert_eq!(code, 200, "{body}");
        echo(&body)["headers"][name][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name} reached the app: {body}"))
            .to_owned()
    }

    /// The first audit line that `matches`, waited for: lines are written after the answer,
    /// by the gateway's audit writer, so a test reading right after a request may be early.
    pub fn audit_line(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        crate::k8s::eventually(std::time::Duration::from_secs(5), what, || {
            self.audit().into_iter().find(|l| matches(l))
        })
    }

    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.pki.dir().join("gateway-audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

pub fn echo(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the echo ({e}): {body}"))
}
