//! The gateway against a real OIDC identity provider: Dex (built from its Go modules by
//! `scripts/dex.sh`), serving discovery and JWKS over HTTPS and issuing ID tokens by the
//! password grant. The gateway finds the keys by discovery, lets users reach only their own
//! accounts, follows Dex's key rotation (a token with a new `kid` makes it fetch the keys
//! again), and keeps its last good keys while Dex is down.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use ward_tests::apps;
use ward_tests::bin::run;
use ward_tests::gateway::{Options, public_ca, public_cert, start_with};
use ward_tests::k8s::eventually;
use ward_tests::mesh::free_addr;

/// bcrypt of `alice-pw` and `bob-pw` (cost 10), as Dex's static passwords want them.
const ALICE_HASH: &str = "$2a$10$a8wazlubmyiiWrHh.pMGDOrUJGgUTEOvqlzfld2UaasZJO/E5Z8c.";
const BOB_HASH: &str = "$2a$10$pxsdFzQQ9uL7mhv8Tb2XF.9iyDP5Hhj5quHrKLCjdamUef19SjKru";

/// A Dex serving HTTPS on loopback with in-memory storage (a restart makes new keys).
struct Dex {
    child: Child,
    config: PathBuf,
    ca: PathBuf,
    issuer: String,
    log: PathBuf,
}

impl Dex {
    fn start(dir: &Path) -> Self {
        let (ca, ca_path) = public_ca(dir, "dex-ca");
        public_cert(dir, &ca, "dex", &["localhost"]);
        let addr = free_addr();
        let issuer = format!("https://localhost:{}/dex", addr.port());
        let config = dir.join("dex.yaml");
        std::fs::write(
            &config,
            format!(
                "issuer: {issuer}\nstorage: {{ type: memory }}\n\
                 web: {{ https: \"{addr}\", tlsCert: {}, tlsKey: {} }}\n\
                 oauth2: {{ passwordConnector: local, skipApprovalScreen: true }}\n\
                 enablePasswordDB: true\n\
                 staticPasswords:\n\
                 - {{ email: alice@example.com, hash: \"{ALICE_HASH}\", username: alice, userID: user-alice }}\n\
                 - {{ email: bob@example.com, hash: \"{BOB_HASH}\", username: bob, userID: user-bob }}\n\
                 staticClients:\n\
                 - {{ id: bank-api, name: Bank API, secret: bank-api-secret, redirectURIs: [\"https://localhost/cb\"] }}\n",
                dir.join("dex.pem").display(),
                dir.join("dex.key").display(),
            ),
        )
        .expect("dex config");
        let log = dir.join("dex.log");
        let child = spawn(&config, &log);
        let dex = Self {
            child,
            config,
            ca: ca_path,
            issuer,
            log,
        };
        dex.wait_serving();
        dex
    }

    fn wait_serving(&self) {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        eventually(Duration::from_secs(20), "Dex serving discovery", || {
            let out = self.curl(&["-f", &url]);
            (out.code == 0).then_some(())
        });
    }

    fn curl(&self, args: &[&str]) -> ward_tests::bin::Run {
        let ca = self.ca.display().to_string();
        let mut all = vec!["-sS", "--max-time", "10", "--cacert", &ca];
        all.extend_from_slice(args);
        run(Path::new("curl"), &all)
    }

    /// An ID token for `email` by the password grant.
    fn token(&self, email: &str, password: &str) -> String {
        let url = format!("{}/token", self.issuer);
        let user = format!("username={email}");
        let pass = format!("password={password}");
        let out = self.curl(&[
            "-f",
            "-u",
            "bank-api:bank-api-secret",
            "--data-urlencode",
            "grant_type=password",
            "--data-urlencode",
            &user,
            "--data-urlencode",
            &pass,
            "--data-urlencode",
            "scope=openid email profile",
            &url,
        ]);
        let body: Value = serde_json::from_str(out.ok()).expect("token response");
        body["id_token"].as_str().expect("an id_token").to_owned()
    }

    /// Stops Dex and starts it again on the same address: with memory storage, a new
    /// signing key and none of the old ones.
    fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.config, &self.log);
        self.wait_serving();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dex {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- dex log ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn spawn(config: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("dex log");
    Command::new(ward_tests::bin::go_tool("dex"))
        .arg("serve")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn dex")
}

/// The `kid` of a token's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().expect("a JWS");
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
        .expect("base64url");
    let header: Value = serde_json::from_slice(&bytes).expect("JSON header");
    header["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dex_users_reach_their_own_accounts_and_key_rotation_needs_no_restart() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let dir = tempfile::tempdir().expect("temp dir");
    let dex_dir = dir.path().to_owned();
    let mut dex = tokio::task::spawn_blocking(move || Dex::start(&dex_dir))
        .await
        .expect("dex");
    let options = Options {
        issuers: Some(format!(
            "[ {{ issuer: \"{}\", audiences: [bank-api], algorithms: [RS256], discovery: true, ca_file: {}, min_refresh_interval: 1s }} ]",
            dex.issuer,
            dex.ca.display()
        )),
        gateway_policy: Some(format!(
            "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: own-accounts, namespace: edge }}\nspec:\n  action: ALLOW\n  rules:\n  - from: [ {{ requestPrincipals: [\"{}/*\"] }} ]\n    to: [ {{ methods: [GET], paths: [\"/accounts/{{request.auth.claims[name]}}/*\"] }} ]\n",
            dex.issuer
        )),
        ..Options::default()
    };
    tokio::task::spawn_blocking(move || {
        // Ready only once Dex's keys are in (start_with waits for /ready).
        let edge = start_with(addr, &options);
        let alice = dex.token("alice@example.com", "alice-pw");
        let bob = dex.token("bob@example.com", "bob-pw");
        let path = "/accounts/alice/balance";
        let (code, _, body) = edge.get(path, Some(&alice), &[]);
        assert_eq!(code, 200, "{body}");
        assert_eq!(edge.get(path, Some(&bob), &[]).0, 403, "BOLA");
        let line = edge.audit_line("the allow line", |l| l["decision"] == "allow");
        assert_eq!(line["issuer"], dex.issuer.as_str());
        assert_eq!(line["kid"], kid(&alice).as_str());

        // Dex restarts with a new key: its new tokens verify after one refresh, the old
        // key is gone from its JWKS and so from the gateway.
        dex.restart();
        let renewed = dex.token("alice@example.com", "alice-pw");
        assert_ne!(kid(&renewed), kid(&alice), "a new signing key");
        let (code, _, body) = edge.get(path, Some(&renewed), &[]);
        assert_eq!(code, 200, "refreshed on the unknown kid: {body}");
        eventually(Duration::from_secs(5), "the old key dropped", || {
            (edge.get(path, Some(&alice), &[]).0 == 401).then_some(())
        });

        // Dex down: the keys held keep working.
        dex.stop();
        assert_eq!(edge.get(path, Some(&renewed), &[]).0, 200);
        let (_, metrics) = edge.gateway.admin_get("/metrics");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ward_gateway_jwks_refreshes_total")
                    && l.contains("result=\"ok\"")),
            "{metrics}"
        );
    })
    .await
    .expect("checks");
}
