//! A real Kubernetes API server for the Kubernetes tests: etcd and kube-apiserver built
//! from their Go modules (`scripts/k8s-peers.sh`, cached under `target/k8s/bin`), started
//! on loopback with their own PKI, and kubectl pointed at them. No kubelet runs: pods stay
//! Pending unless a test plays the node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

use crate::bin::Run;

/// The peers' binaries: `WARD_K8S_BIN`, else `target/k8s/bin` of this workspace.
pub fn peers_dir() -> PathBuf {
    let dir = std::env::var_os("WARD_K8S_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/k8s/bin"),
        PathBuf::from,
    );
    for name in ["etcd", "kube-apiserver", "kubectl"] {
        assert!(
            dir.join(name).exists(),
            "{} is missing: run scripts/k8s-peers.sh (make test does)",
            dir.join(name).display()
        );
    }
    dir
}

/// Calls `check` until it returns `Some`, or panics naming `what` after `timeout`.
#[track_caller]
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// etcd and kube-apiserver, stopped on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Child,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// An admin kubeconfig (system:masters).
    pub kubeconfig: PathBuf,
    /// The CA that signed the API server's certificate and its clients'.
    pub ca_pem: String,
    /// How long the API server took to report ready.
    pub started_in: Duration,
}

impl Cluster {
    /// Starts etcd and the API server and waits until `/readyz` answers ok.
    pub fn start() -> Self {
        let bin = peers_dir();
        let dir = tempfile::tempdir().expect("cluster dir");
        let pki = Pki::write(dir.path());
        let (client, peer) = (crate::net::free_addr(), crate::net::free_addr());
        let etcd = Command::new(bin.join("etcd"))
            .args(["--data-dir", &dir.path().join("etcd").to_string_lossy()])
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &format!("default=http://{peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "etcd.log"))
            .spawn()
            .expect("starting etcd");
        let secure = crate::net::free_addr();
        let started = Instant::now();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let apiserver = Command::new(bin.join("kube-apiserver"))
            .args(["--etcd-servers", &format!("http://{client}")])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &secure.port().to_string()])
            .args(["--tls-cert-file", &path("apiserver.crt")])
            .args(["--tls-private-key-file", &path("apiserver.key")])
            .args(["--client-ca-file", &path("ca.crt")])
            .args(["--service-account-key-file", &path("sa.pub")])
            .args(["--service-account-signing-key-file", &path("sa.key")])
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .args(["--authorization-mode", "RBAC"])
            // Token Secrets need kube-controller-manager, which does not run here.
            .args(["--disable-admission-plugins", "ServiceAccount"])
            .args(["--service-cluster-ip-range", "10.96.0.0/16"])
            .args(["--enable-priority-and-fairness=false"])
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "apiserver.log"))
            .spawn()
            .expect("starting kube-apiserver");
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, &format!("https://{secure}"), dir.path());
        let mut cluster = Self {
            url: format!("https://{secure}"),
            kubeconfig,
            ca_pem: pki.ca_pem,
            started_in: Duration::ZERO,
            dir,
            etcd,
            apiserver,
        };
        eventually(Duration::from_secs(60), "kube-apiserver /readyz", || {
            if let Ok(Some(status)) = cluster.apiserver.try_wait() {
                panic!(
                    "kube-apiserver exited with {status}: {}",
                    cluster.log("apiserver.log")
                );
            }
            let run = cluster.kubectl(["get", "--raw", "/readyz"]);
            (run.code == 0 && run.stdout.trim() == "ok").then_some(())
        });
        cluster.started_in = started.elapsed();
        cluster
    }

    /// The tail of one of the peers' logs (for failure messages).
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `ward` against this cluster as admin (`ward check`, `ward ca rotate
    /// --kubernetes`).
    pub fn ward<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let output = std::process::Command::new(crate::bin::path("ward"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("running ward");
        Run::from_output(output)
    }

    /// A token (TokenRequest) for service account `account` in `namespace`, bound to its
    /// pod `pod`, for `audience`, living 10 minutes: what a pod's projected volume holds.
    pub fn pod_token(&self, namespace: &str, account: &str, pod: &str, audience: &str) -> String {
        self.kubectl([
            "create",
            "token",
            account,
            "-n",
            namespace,
            "--audience",
            audience,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
            "--duration",
            "10m",
        ])
        .ok()
        .trim()
        .to_owned()
    }

    /// A file of the CA Secret `ward-system/ward-ca`, decoded ("" if there is none).
    pub fn ca_secret_file(&self, file: &str) -> String {
        self.kubectl([
            "get",
            "secret",
            "ward-ca",
            "-n",
            "ward-system",
            "-o",
            &format!("go-template={{{{index .data \"{file}\" | base64decode}}}}"),
        ])
        .stdout
    }

    /// Runs kubectl against this cluster as admin.
    pub fn kubectl<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.kubectl_with_input(args, "")
    }

    /// Runs kubectl with `input` on stdin (`apply -f -`).
    pub fn kubectl_with_input<I, S>(&self, args: I, input: &str) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::Write;
        let mut child = Command::new(peers_dir().join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut stdin = child.stdin.take().expect("kubectl stdin");
        stdin.write_all(input.as_bytes()).expect("kubectl input");
        drop(stdin);
        Run::from_output(child.wait_with_output().expect("kubectl output"))
    }

    /// Applies `deploy/base` (kustomize) and waits until the CRDs are established.
    pub fn install_ward(&self) -> String {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base");
        let applied = self
            .kubectl(["apply", "-k", &base.to_string_lossy()])
            .ok()
            .to_owned();
        self.kubectl([
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/authorizationpolicies.ward.dev",
            "crd/meshpolicies.ward.dev",
        ])
        .ok();
        applied
    }

    /// Points the injector's webhook at `https://ADDR/inject` (no kube-proxy routes to its
    /// Service here), once the control plane has set the caBundle.
    pub fn route_webhook(&self, addr: std::net::SocketAddr) {
        eventually(
            Duration::from_secs(20),
            "the control plane sets the caBundle",
            || {
                let run = self.kubectl([
                    "get",
                    "mutatingwebhookconfiguration",
                    "ward-injector",
                    "-o",
                    "jsonpath={.webhooks[0].clientConfig.caBundle}",
                ]);
                (!run.stdout.is_empty()).then_some(())
            },
        );
        let names = self
            .kubectl([
                "get",
                "mutatingwebhookconfiguration",
                "ward-injector",
                "-o",
                "jsonpath={.webhooks[*].name}",
            ])
            .ok()
            .to_owned();
        let ops: Vec<String> = (0..names.split_whitespace().count())
            .map(|i| {
                format!(
                    r#"{{"op":"remove","path":"/webhooks/{i}/clientConfig/service"}},{{"op":"add","path":"/webhooks/{i}/clientConfig/url","value":"https://{addr}/inject"}}"#
                )
            })
            .collect();
        let patch = format!("[{}]", ops.join(","));
        self.kubectl([
            "patch",
            "mutatingwebhookconfiguration",
            "ward-injector",
            "--type=json",
            "-p",
            &patch,
        ])
        .ok();
    }

    /// A kubeconfig that authenticates as service account `namespace/account` (a token
    /// from the TokenRequest API), so a process runs with that account's RBAC alone.
    pub fn kubeconfig_for(&self, namespace: &str, account: &str) -> PathBuf {
        let token = self
            .kubectl([
                "create",
                "token",
                account,
                "-n",
                namespace,
                "--duration",
                "1h",
            ])
            .ok()
            .trim()
            .to_owned();
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-{namespace}-{account}"));
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "test", "cluster": {
                "server": self.url,
                "certificate-authority": self.dir.path().join("ca.crt").to_string_lossy() } }],
            "users": [{ "name": account, "user": { "token": token } }],
            "contexts": [{ "name": "test", "context": { "cluster": "test", "user": account } }],
            "current-context": "test",
        });
        std::fs::write(&path, config.to_string()).expect("kubeconfig");
        path
    }

    /// Who holds the control plane's leader Lease ("" if no one).
    pub fn lease_holder(&self) -> String {
        self.kubectl([
            "get",
            "lease",
            "ward-control-plane",
            "-n",
            "ward-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .stdout
        .trim()
        .to_owned()
    }

    /// Waits for the trust bundle ConfigMap in `namespace` and returns its PEM.
    pub fn trust_bundle(&self, namespace: &str) -> String {
        eventually(
            Duration::from_secs(20),
            "the trust bundle ConfigMap",
            || {
                let run = self.kubectl([
                    "get",
                    "configmap",
                    "ward-trust-bundle",
                    "-n",
                    namespace,
                    "-o",
                    "jsonpath={.data.bundle\\.pem}",
                ]);
                (run.code == 0 && run.stdout.contains("BEGIN CERTIFICATE")).then_some(run.stdout)
            },
        )
    }

    /// `kubectl apply -f -` of `yaml`, which must succeed.
    #[track_caller]
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_with_input(["apply", "-f", "-"], yaml)
            .ok()
            .to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(name)).expect("log file")
}

/// The cluster's CA, the API server's serving certificate (a CA:false leaf for
/// 127.0.0.1, as rustls requires), an admin client certificate and the service-account
/// signing key.
struct Pki {
    ca_pem: String,
}

impl Pki {
    fn write(dir: &Path) -> Self {
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect(name);
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.distinguished_name
            .push(DnType::CommonName, "ward-test-cluster-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |cn: &str, org: Option<&str>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            if let Some(org) = org {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, org);
            }
            params.is_ca = IsCa::ExplicitNoCa;
            params.extended_key_usages = vec![usage];
            if cn == "kube-apiserver" {
                params.subject_alt_names = vec![
                    SanType::IpAddress([127, 0, 0, 1].into()),
                    SanType::DnsName("localhost".try_into().expect("dns name")),
                ];
            }
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) =
            leaf("kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth);
        let (admin, admin_key) = leaf(
            "ward-test-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let sa_key = KeyPair::generate().expect("service-account key");
        write("ca.crt", &ca_cert.pem());
        write("apiserver.crt", &server);
        write("apiserver.key", &server_key);
        write("admin.crt", &admin);
        write("admin.key", &admin_key);
        write("sa.key", &sa_key.serialize_pem());
        write("sa.pub", &sa_key.public_key_pem());
        Self {
            ca_pem: ca_cert.pem(),
        }
    }
}

fn write_kubeconfig(path: &Path, server: &str, dir: &Path) {
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": {
            "server": server, "certificate-authority": file("ca.crt") } }],
        "users": [{ "name": "admin", "user": {
            "client-certificate": file("admin.crt"), "client-key": file("admin.key") } }],
        "contexts": [{ "name": "test", "context": { "cluster": "test", "user": "admin" } }],
        "current-context": "test",
    });
    std::fs::write(path, config.to_string()).expect("kubeconfig");
}
