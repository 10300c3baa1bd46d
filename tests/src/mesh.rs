//! Sidecar processes for end-to-end tests: generated configs on ephemeral ports, started as
//! a user would start them, waited on through `/ready`, killed on drop, and their logs
//! printed when a test fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::pki::TestPki;

use crate::control_plane::POLICY_DIR;
pub use crate::control_plane::{ControlPlane, certify_with_token, cp_channel, csr_for};
pub use crate::net::{free_addr, http_get};

/// A running `ward-proxy sidecar`.
pub struct Proxy {
    child: Child,
    pub name: String,
    pub admin: SocketAddr,
    log: PathBuf,
    /// The network namespace it runs in (its admin is reached from inside), if not ours.
    netns: Option<String>,
}

impl Proxy {
    /// Writes `config` to `dir/<name>.yaml` and starts the sidecar (without waiting).
    pub fn spawn(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(dir, name, config, env, &[])
    }

    /// [`Proxy::spawn`] with extra command-line arguments (e.g. `--log-format json`).
    pub fn spawn_with(
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        Self::spawn_prefixed(dir, name, config, env, args, &[], None)
    }

    /// [`Proxy::spawn_with`] run through `prefix` (e.g. `ip netns exec NS setpriv …`), its
    /// admin reached inside network namespace `netns`.
    pub fn spawn_prefixed(
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        prefix: &[&str],
        netns: Option<&str>,
    ) -> Self {
        Self::spawn_mode("sidecar", dir, name, config, env, args, prefix, netns)
    }

    /// Starts `ward-proxy gateway` with `config` and waits until `/ready` answers 200.
    pub fn start_gateway(dir: &Path, name: &str, config: &str) -> Self {
        let mut proxy = Self::spawn_mode("gateway", dir, name, config, &[], &[], &[], None);
        proxy.wait_ready();
        proxy
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_mode(
        mode: &str,
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        prefix: &[&str],
        netns: Option<&str>,
    ) -> Self {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config).expect("write config");
        let admin = yaml_admin(config).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 15000)));
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let proxy = crate::bin::path("ward-proxy");
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(&proxy);
                cmd
            }
            None => Command::new(&proxy),
        };
        let child = cmd
            .args(args)
            .args([mode, "--config"])
            .arg(&path)
            .envs(env.iter().copied())
            .env("WARD_LOG", "info,ward_proxy=debug")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn ward-proxy");
        Self {
            child,
            name: name.to_owned(),
            admin,
            log,
            netns: netns.map(str::to_owned),
        }
    }

    /// Starts the sidecar and waits until `/ready` answers 200.
    pub fn start(dir: &Path, name: &str, config: &str) -> Self {
        let mut proxy = Self::spawn(dir, name, config, &[]);
        proxy.wait_ready();
        proxy
    }

    /// Polls `/ready` until it answers 200; panics (with the logs) if the process exits or
    /// 20 s pass.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((200, _)) = self.get(self.admin, "/ready") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}:\n{}", self.name, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the admin server.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.get(self.admin, path)
            .unwrap_or_else(|| panic!("{}: admin did not answer", self.name))
    }

    /// An HTTP GET from where the proxy runs (its network namespace, if it has one).
    fn get(&self, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
        match &self.netns {
            None => http_get(addr, path),
            Some(ns) => {
                let path = path.to_owned();
                crate::netns::in_named(ns, move || http_get(addr, &path))
            }
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.logs());
        }
    }
}

fn yaml_admin(config: &str) -> Option<SocketAddr> {
    config
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Two sidecars of one trust domain: `web` (client side: an outbound listener) and `orders`
/// (server side: an inbound listener in front of `app`).
pub struct Pair {
    pub pki: TestPki,
    pub web: Proxy,
    pub orders: Proxy,
    /// Where the web app sends plaintext.
    pub outbound: SocketAddr,
    /// The orders sidecar's mTLS listener.
    pub inbound: SocketAddr,
}

/// Options for [`Pair::start`].
#[derive(Debug, Clone)]
pub struct PairOptions {
    pub outbound_protocol: &'static str,
    pub inbound_protocol: &'static str,
    /// Extra `limits:` entries, e.g. `"header_read_timeout: 1s"`.
    pub limits: Vec<String>,
    /// The identity the web sidecar expects of orders (default: orders' own).
    pub expect_identity: Option<String>,
    /// The orders sidecar's policy file (default: a MeshPolicy allowing any authenticated
    /// caller).
    pub policy: Option<String>,
    /// More top-level YAML for both sidecars, e.g. a `tracing:` section.
    pub extra: String,
}

/// A MeshPolicy setting the mesh default.
pub fn mesh_default(default: &str) -> String {
    format!(
        "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{ name: mesh, namespace: ward-system }}\nspec: {{ default: {default} }}\n"
    )
}

impl Default for PairOptions {
    fn default() -> Self {
        Self {
            outbound_protocol: "auto",
            inbound_protocol: "auto",
            limits: Vec::new(),
            expect_identity: None,
            policy: None,
            extra: String::new(),
        }
    }
}

impl Pair {
    /// [`Pair::start`] from async tests: the blocking start runs off the runtime, so the
    /// test's own apps keep serving meanwhile.
    pub async fn launch(app: SocketAddr, options: PairOptions) -> Self {
        tokio::task::spawn_blocking(move || Self::start(app, options))
            .await
            .expect("start pair")
    }

    pub fn start(app: SocketAddr, options: PairOptions) -> Self {
        let pki = TestPki::new("example.org");
        let dir = pki.dir().to_owned();
        for sa in ["web", "orders"] {
            let svid = pki.svid_ttl(&pki.id("default", sa), Duration::from_secs(3600));
            svid.write(
                &dir.join(format!("{sa}.pem")),
                &dir.join(format!("{sa}.key")),
            )
            .expect("write svid");
        }
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).expect("policy dir");
        let policy = options
            .policy
            .clone()
            .unwrap_or_else(|| mesh_default("allow-authenticated"));
        std::fs::write(policies.join("policy.yaml"), policy).expect("write policy");
        let (outbound, inbound) = (free_addr(), free_addr());
        let limits = if options.limits.is_empty() {
            String::new()
        } else {
            format!("limits: {{ {} }}\n", options.limits.join(", "))
        };
        let orders = format!(
            "trust_domain: example.org\n\
             identity: {{ cert: orders.pem, key: orders.key, bundle: ca/bundle.pem }}\n\
             workload: {{ namespace: default, labels: {{ app: orders }} }}\n\
             inbound:\n  - {{ listen: {inbound}, app: {app}, protocol: {} }}\n\
             policy: {{ dir: policies }}\n\
             audit: {{ decisions: all, log: audit.log }}\n\
             admin: {}\naccess_log: true\n{limits}{}",
            options.inbound_protocol,
            free_addr(),
            options.extra,
        );
        let expect = options
            .expect_identity
            .clone()
            .unwrap_or_else(|| pki.id("default", "orders"));
        let web = format!(
            "trust_domain: example.org\n\
             identity: {{ cert: web.pem, key: web.key, bundle: ca/bundle.pem }}\n\
             workload: {{ namespace: default, labels: {{ app: web }} }}\n\
             outbound:\n  - {{ listen: {outbound}, upstream: {inbound}, server_identity: \"{expect}\", protocol: {} }}\n\
             admin: {}\naccess_log: true\n{limits}{}",
            options.outbound_protocol,
            free_addr(),
            options.extra,
        );
        let orders = Proxy::start(&dir, "orders", &orders);
        let web = Proxy::start(&dir, "web", &web);
        Self {
            pki,
            web,
            orders,
            outbound,
            inbound,
        }
    }

    pub fn web_id(&self) -> String {
        self.pki.id("default", "web")
    }

    pub fn orders_id(&self) -> String {
        self.pki.id("default", "orders")
    }

    /// Replaces the orders sidecar's policy file (atomically, as an editor's save would).
    pub fn set_policy(&self, yaml: &str) {
        let dir = self.pki.dir().join("policies");
        let tmp = dir.join(".policy.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write policy");
        std::fs::rename(&tmp, dir.join("policy.yaml")).expect("replace policy");
    }

    /// The orders sidecar's audit log, one JSON value per line.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.pki.dir().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A control plane and two sidecars that got their identities from it with join tokens:
/// `web` (outbound) calling `orders` (inbound, in front of `app`). No certificate files.
pub struct ManagedPair {
    pub dir: tempfile::TempDir,
    pub cp: ControlPlane,
    pub web: Proxy,
    pub orders: Proxy,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
}

/// More top-level YAML for each sidecar of a [`ManagedPair`].
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub web: String,
    pub orders: String,
}

pub const WEB_ID: &str = "spiffe://example.org/ns/default/sa/web";
pub const ORDERS_ID: &str = "spiffe://example.org/ns/default/sa/orders";

impl ManagedPair {
    /// [`ManagedPair::start`] from async tests.
    pub async fn launch(app: SocketAddr, svid_ttl: &'static str, policy: String) -> Self {
        tokio::task::spawn_blocking(move || Self::start(app, svid_ttl, &policy))
            .await
            .expect("start managed pair")
    }

    /// [`ManagedPair::launch`] with a CA made by `ward ca init --intermediate`: leaves are
    /// signed by an intermediate, the root key is kept apart.
    pub async fn launch_with_intermediate(
        app: SocketAddr,
        svid_ttl: &'static str,
        policy: String,
    ) -> Self {
        let extra = Extra::default();
        tokio::task::spawn_blocking(move || Self::start_with(app, svid_ttl, &policy, true, &extra))
            .await
            .expect("start managed pair")
    }

    /// [`ManagedPair::launch`] with more top-level YAML for each sidecar.
    pub async fn launch_with(
        app: SocketAddr,
        svid_ttl: &'static str,
        policy: String,
        extra: Extra,
    ) -> Self {
        tokio::task::spawn_blocking(move || Self::start_with(app, svid_ttl, &policy, false, &extra))
            .await
            .expect("start managed pair")
    }

    pub fn start(app: SocketAddr, svid_ttl: &str, policy: &str) -> Self {
        Self::start_with(app, svid_ttl, policy, false, &Extra::default())
    }

    fn start_with(
        app: SocketAddr,
        svid_ttl: &str,
        policy: &str,
        intermediate: bool,
        extra: &Extra,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if intermediate {
            let data = dir.path().join("cp-data");
            crate::bin::ward([
                "ca",
                "init",
                "--trust-domain",
                "example.org",
                "--intermediate",
                "--dir",
                data.to_str().expect("utf-8"),
            ])
            .ok();
        }
        // The policy is in place before the control plane starts, so the sidecars' first
        // snapshot already holds it.
        let policies = dir.path().join(POLICY_DIR);
        std::fs::create_dir_all(&policies).expect("policy dir");
        std::fs::write(policies.join("policy.yaml"), policy).expect("write policy");
        let cp = ControlPlane::start(dir.path(), svid_ttl);
        // The bootstrap bundle is what an operator hands the proxies out of band.
        std::fs::copy(cp.bundle_path(), dir.path().join("bundle.pem")).expect("bundle");
        for (name, id, labels) in [
            ("web", WEB_ID, "app=web"),
            ("orders", ORDERS_ID, "app=orders"),
        ] {
            let token = cp.token(id, labels, &[]);
            std::fs::write(dir.path().join(format!("{name}.token")), token).expect("token");
        }
        let (outbound, inbound) = (free_addr(), free_addr());
        let identity = |name: &str| {
            format!(
                "identity: {{ control_plane: \"https://{}\", token_file: {name}.token, bundle: bundle.pem }}\n",
                cp.listen
            )
        };
        let orders = format!(
            "trust_domain: example.org\n{}inbound: [ {{ listen: {inbound}, app: {app} }} ]\nadmin: {}\n{}",
            identity("orders"),
            free_addr(),
            extra.orders,
        );
        let web = format!(
            "trust_domain: example.org\n{}outbound: [ {{ listen: {outbound}, upstream: {inbound}, server_identity: \"{ORDERS_ID}\" }} ]\nadmin: {}\n{}",
            identity("web"),
            free_addr(),
            extra.web,
        );
        let orders = Proxy::start(dir.path(), "orders", &orders);
        let web = Proxy::start(dir.path(), "web", &web);
        Self {
            dir,
            cp,
            web,
            orders,
            outbound,
            inbound,
        }
    }
}
