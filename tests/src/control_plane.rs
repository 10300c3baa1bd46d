//! A `ward control-plane` process for the tests (with a policy directory, or against a
//! Kubernetes API server), and a gRPC channel to it as a proxy opens one.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_addr;

/// Where [`ControlPlane`] keeps its policy files, under its directory.
pub(crate) const POLICY_DIR: &str = "cp-policies";

/// A running `ward control-plane`.
pub struct ControlPlane {
    child: Option<Child>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub policy_dir: PathBuf,
    svid_ttl: String,
    extra: Vec<String>,
    log: PathBuf,
    /// Set for `--kubernetes`: the cluster's kubeconfig (no policy directory then).
    kubeconfig: Option<PathBuf>,
    /// Extra environment (e.g. `POD_NAME`).
    env: Vec<(String, String)>,
    trust_domain: String,
}

impl ControlPlane {
    /// Starts a control plane for `example.org` with its data and policy directories under
    /// `dir`, and waits until it accepts connections.
    pub fn start(dir: &Path, svid_ttl: &str) -> Self {
        Self::start_with(dir, svid_ttl, &[])
    }

    /// [`ControlPlane::start`] with extra command-line arguments.
    pub fn start_with(dir: &Path, svid_ttl: &str, extra: &[&str]) -> Self {
        let policy_dir = dir.join(POLICY_DIR);
        std::fs::create_dir_all(&policy_dir).expect("policy dir");
        let mut cp = Self {
            child: None,
            listen: free_addr(),
            admin: free_addr(),
            data_dir: dir.join("cp-data"),
            policy_dir,
            svid_ttl: svid_ttl.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: dir.join("control-plane.log"),
            kubeconfig: None,
            env: Vec::new(),
            trust_domain: "example.org".into(),
        };
        cp.spawn();
        cp
    }

    /// `ward control-plane --kubernetes` for `trust_domain` against the cluster of
    /// `kubeconfig`, its data directory under `dir`.
    pub fn start_kubernetes(
        dir: &Path,
        kubeconfig: &Path,
        trust_domain: &str,
        extra: &[&str],
    ) -> Self {
        let mut cp = Self::start_kubernetes_unspawned(dir, kubeconfig, trust_domain, extra);
        cp.spawn();
        cp
    }

    fn start_kubernetes_unspawned(
        dir: &Path,
        kubeconfig: &Path,
        trust_domain: &str,
        extra: &[&str],
    ) -> Self {
        Self {
            child: None,
            listen: free_addr(),
            admin: free_addr(),
            data_dir: dir.join("cp-data"),
            policy_dir: PathBuf::new(),
            svid_ttl: "1h".into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: dir.join("control-plane.log"),
            kubeconfig: Some(kubeconfig.to_owned()),
            env: Vec::new(),
            trust_domain: trust_domain.to_owned(),
        }
    }

    /// [`ControlPlane::start_kubernetes`] as replica `name` (`POD_NAME`), its data and
    /// log in `dir/name`.
    pub fn start_replica(dir: &Path, kubeconfig: &Path, name: &str, extra: &[&str]) -> Self {
        Self::start_replica_on(dir, kubeconfig, name, free_addr(), "1h", extra)
    }

    /// [`ControlPlane::start_replica`] listening on `listen`, issuing SVIDs for `svid_ttl`.
    pub fn start_replica_on(
        dir: &Path,
        kubeconfig: &Path,
        name: &str,
        listen: SocketAddr,
        svid_ttl: &str,
        extra: &[&str],
    ) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("replica dir");
        let mut cp = Self::start_kubernetes_unspawned(&dir, kubeconfig, "cluster.local", extra);
        cp.env.push(("POD_NAME".into(), name.into()));
        cp.listen = listen;
        cp.svid_ttl = svid_ttl.to_owned();
        cp.spawn();
        cp
    }

    /// Sends SIGTERM (a graceful stop) and waits for the exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on our own child's pid; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(crate::bin::path("ward"));
        command
            .args(["control-plane", "--trust-domain", &self.trust_domain])
            .arg("--data-dir")
            .arg(&self.data_dir);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        match &self.kubeconfig {
            Some(kubeconfig) => command.arg("--kubernetes").env("KUBECONFIG", kubeconfig),
            None => command.arg("--policy-dir").arg(&self.policy_dir),
        };
        let child = command
            .args([
                "--listen",
                &self.listen.to_string(),
                "--svid-ttl",
                &self.svid_ttl,
            ])
            .args(["--admin", &self.admin.to_string()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn ward control-plane");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.listen).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("control plane exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "control plane not listening:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ward token create` for `spiffe_id` with `labels` (`k=v,...`).
    pub fn token(&self, spiffe_id: &str, labels: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "token",
            "create",
            "--data-dir",
            self.data_dir.to_str().expect("utf-8"),
            "--spiffe-id",
            spiffe_id,
            "--labels",
            labels,
        ];
        args.extend_from_slice(extra);
        crate::bin::ward(&args).ok().trim().to_owned()
    }

    /// Kills the process at once (no drain), as a node failure would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.data_dir.join("bundle.pem")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes the control plane's policy file (atomically).
    pub fn set_policy(&self, yaml: &str) {
        let tmp = self.policy_dir.join(".policy.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write policy");
        std::fs::rename(&tmp, self.policy_dir.join("policy.yaml")).expect("replace policy");
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- control plane log ----\n{}", self.logs());
        }
    }
}

/// A gRPC channel to a control plane at `addr` whose bundle is the file `bundle` (trust
/// domain `td`), presenting `svid` if given (none: as a new proxy connects).
pub async fn cp_channel(
    addr: SocketAddr,
    bundle: &Path,
    td: &str,
    svid: Option<&ward_certs::Svid>,
) -> tonic::transport::Channel {
    crate::init();
    let td = ward_certs::parse_trust_domain(td).expect("trust domain");
    let bundle = ward_certs::TrustBundle::read(td.clone(), bundle).expect("bundle");
    let cp_id = ward_certs::id::workload_id(&td, "ward-system", "control-plane").expect("id");
    let expected = ward_certs::ExpectedPeer::Exact(cp_id);
    let tls = match svid {
        None => ward_certs::tls::bootstrap_client_config(bundle, expected, &[b"h2"])
            .expect("client config"),
        Some(svid) => ward_certs::MeshIdentity::new(svid, bundle)
            .expect("identity")
            .client_config(expected, &[b"h2"])
            .expect("client config"),
    };
    let connector = tokio_rustls::TlsConnector::from(tls);
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ward_certs::tls::mesh_server_name(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("connect to the control plane")
}

/// Certify with a token as a proxy's first call does (no SVID yet), for the identity the
/// token attests: the control plane at `addr` is trusted through `bundle`.
pub async fn certify_with_token(
    addr: SocketAddr,
    bundle: &Path,
    token: String,
) -> Result<ward_api::v1::CertifyResponse, tonic::Status> {
    let channel = cp_channel(addr, bundle, "cluster.local", None).await;
    ward_api::v1::identity_client::IdentityClient::new(channel)
        .certify(ward_api::v1::CertifyRequest {
            csr: csr_for(None),
            token,
            spiffe_id: String::new(),
            serving: Vec::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A fresh key's CSR, for `id` if given.
pub fn csr_for(id: Option<&str>) -> Vec<u8> {
    let id = id.map(|s| ward_certs::parse_spiffe_id(s).expect("SPIFFE ID"));
    ward_certs::svid::new_key_and_csr(id.as_ref())
        .expect("CSR")
        .1
}
