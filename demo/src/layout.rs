//! Where everything of the demo lives: ports, files, the workloads and their policies.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ward_certs::pem::{FileMode, write_atomic};

use crate::apps::AppKind;
use crate::{NAMESPACE, TRUST_DOMAIN};

/// Where one demo workload listens.
pub(crate) struct Workload {
    pub(crate) kind: AppKind,
    pub(crate) app: SocketAddr,
    pub(crate) inbound: SocketAddr,
    pub(crate) admin: SocketAddr,
}

impl Workload {
    pub(crate) fn name(&self) -> &'static str {
        self.kind.name()
    }

    pub(crate) fn spiffe_id(&self) -> String {
        spiffe_id(self.kind)
    }

    pub(crate) fn label(&self) -> String {
        format!("app={}", self.name())
    }
}

pub(crate) fn spiffe_id(kind: AppKind) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{}", kind.name())
}

/// The sidecar outbound listeners: (source, destination) → local address.
pub(crate) struct Outbounds {
    pub(crate) web_accounts: SocketAddr,
    pub(crate) web_ledger: SocketAddr,
    pub(crate) accounts_ledger: SocketAddr,
}

pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
    pub(crate) logs: PathBuf,
    pub(crate) policies: PathBuf,
    pub(crate) cp_data: PathBuf,
    pub(crate) cp_listen: SocketAddr,
    pub(crate) cp_admin: SocketAddr,
    pub(crate) workloads: Vec<Workload>,
    pub(crate) outbounds: Outbounds,
    /// The gateway's public listener and admin.
    pub(crate) gateway_listen: SocketAddr,
    pub(crate) gateway_admin: SocketAddr,
    /// Where every proxy sends its spans (OTLP endpoint, protocol), if anywhere.
    pub(crate) otlp: Option<(String, &'static str)>,
    /// The control plane's dashboard.
    pub(crate) dashboard: SocketAddr,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> anyhow::Result<Self> {
        let mut ports = free_ports(18)?.into_iter();
        let mut next = || ports.next().context("ran out of free ports");
        let workloads = AppKind::ALL
            .into_iter()
            .map(|kind| {
                Ok(Workload {
                    kind,
                    app: next()?,
                    inbound: next()?,
                    admin: next()?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            dir: dir.to_owned(),
            logs: dir.join("logs"),
            policies: dir.join("policies"),
            cp_data: dir.join("control-plane"),
            cp_listen: next()?,
            cp_admin: next()?,
            outbounds: Outbounds {
                web_accounts: next()?,
                web_ledger: next()?,
                accounts_ledger: next()?,
            },
            gateway_listen: next()?,
            gateway_admin: next()?,
            dashboard: next()?,
            workloads,
            otlp: None,
        })
    }

    /// Where everything goes, with the trace collector and dashboard address asked for.
    pub(crate) fn for_demo(args: &crate::DemoArgs, dir: &Path) -> anyhow::Result<Self> {
        let mut layout = Self::new(dir)?;
        let protocol = if args.otlp_protocol == "http" {
            "http"
        } else {
            "grpc"
        };
        layout.otlp = args.otlp.clone().map(|endpoint| (endpoint, protocol));
        if let Some(addr) = args.dashboard {
            layout.dashboard = addr;
        }
        Ok(layout)
    }

    pub(crate) fn workload(&self, kind: AppKind) -> &Workload {
        // ALL holds every kind, so the search cannot fail; index 0 keeps it total.
        self.workloads
            .iter()
            .find(|w| w.kind == kind)
            .unwrap_or(&self.workloads[0])
    }

    /// Where an app's own calls go: web's to accounts, accounts' to the ledger.
    pub(crate) fn calls_of(&self, kind: AppKind) -> Option<SocketAddr> {
        match kind {
            AppKind::Web => Some(self.outbounds.web_accounts),
            AppKind::Accounts => Some(self.outbounds.accounts_ledger),
            AppKind::Ledger => None,
        }
    }

    /// A proxy's `tracing:` section (`service` is its `service.name`), or nothing.
    pub(crate) fn tracing(&self, service: &str) -> String {
        match &self.otlp {
            Some((endpoint, protocol)) => format!(
                "tracing: {{ endpoint: \"{endpoint}\", protocol: {protocol}, interval: 200ms, \
                 service_name: {service} }}\n"
            ),
            None => String::new(),
        }
    }

    pub(crate) fn sidecar_config(&self, w: &Workload) -> String {
        let outbound = |listen: SocketAddr, to: AppKind| {
            format!(
                "  - {{ listen: {listen}, upstream: {}, server_identity: \"{}\" }}\n",
                self.workload(to).inbound,
                spiffe_id(to)
            )
        };
        let outbounds = match w.kind {
            AppKind::Web => {
                outbound(self.outbounds.web_accounts, AppKind::Accounts)
                    + &outbound(self.outbounds.web_ledger, AppKind::Ledger)
            }
            AppKind::Accounts => outbound(self.outbounds.accounts_ledger, AppKind::Ledger),
            AppKind::Ledger => String::new(),
        };
        let outbounds = if outbounds.is_empty() {
            String::new()
        } else {
            format!("outbound:\n{outbounds}")
        };
        format!(
            "# Written by `ward demo`: the sidecar of the `{name}` workload.\n\
             trust_domain: {TRUST_DOMAIN}\n\
             identity:\n  control_plane: \"https://{cp}\"\n  token_file: \"{token}\"\n  bundle: \"{bundle}\"\n  report_every: 1s\n\
             workload: {{ serving: [ {{ address: \"{app}\", inbound_port: {inbound_port} }} ] }}\n\
             inbound:\n  - {{ listen: {inbound}, app: {app} }}\n\
             {outbounds}\
             audit: {{ decisions: denied, log: \"{audit}\" }}\n\
             admin: {admin}\n",
            name = w.name(),
            cp = self.cp_listen,
            token = self.dir.join(format!("{}.token", w.name())).display(),
            bundle = self.cp_data.join("bundle.pem").display(),
            inbound = w.inbound,
            inbound_port = w.inbound.port(),
            app = w.app,
            audit = self.logs.join(format!("{}-audit.log", w.name())).display(),
            admin = w.admin,
        ) + &self.tracing(w.name())
    }
}

/// `n` distinct free loopback ports (all held at once while choosing, so they differ).
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free ports")?;
    listeners
        .iter()
        .map(|l| l.local_addr().context("reading a port"))
        .collect()
}

pub(crate) fn mesh_policy() -> String {
    format!(
        "# The mesh default: a call no policy allows is denied. The gateway may tell sidecars\n\
         # who the end user is (x-ward-end-user); nobody else may.\n\
         apiVersion: ward.dev/v1alpha1\n\
         kind: MeshPolicy\n\
         metadata: {{ name: mesh, namespace: ward-system }}\n\
         spec: {{ default: deny, gateways: [\"{}\"] }}\n",
        crate::edge::spiffe_id()
    )
}

pub(crate) fn web_policy() -> String {
    format!(
        "# The gateway may ask web for accounts (the gateway's own policy says whose).\n\
         apiVersion: ward.dev/v1alpha1\n\
         kind: AuthorizationPolicy\n\
         metadata: {{ name: gateway-reaches-web, namespace: {NAMESPACE} }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: web }} }}\n  action: ALLOW\n  rules:\n\
         \x20 - from: [ {{ principals: [\"{gateway}\"] }} ]\n\
         \x20   to: [ {{ methods: [GET], paths: [\"/accounts/*\"] }} ]\n",
        gateway = crate::edge::spiffe_id(),
    )
}

pub(crate) fn accounts_policy() -> String {
    format!(
        "# web may read accounts; nothing else may call accounts.\n\
         apiVersion: ward.dev/v1alpha1\n\
         kind: AuthorizationPolicy\n\
         metadata: {{ name: web-reads-accounts, namespace: {NAMESPACE} }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: accounts }} }}\n  action: ALLOW\n  rules:\n\
         \x20 - from: [ {{ principals: [\"{web}\"] }} ]\n\
         \x20   to: [ {{ methods: [GET], paths: [\"/accounts/*\"] }} ]\n",
        web = spiffe_id(AppKind::Web),
    )
}

pub(crate) fn ledger_policy() -> String {
    format!(
        "# accounts may read the ledger (Get* methods); nobody may Post.\n\
         apiVersion: ward.dev/v1alpha1\n\
         kind: AuthorizationPolicy\n\
         metadata: {{ name: accounts-reads-ledger, namespace: {NAMESPACE} }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: ledger }} }}\n  action: ALLOW\n  rules:\n\
         \x20 - from: [ {{ principals: [\"{accounts}\"] }} ]\n\
         \x20   to: [ {{ grpc: {{ service: ledger.v1.Ledger, methods: [\"Get*\"] }} }} ]\n",
        accounts = spiffe_id(AppKind::Accounts)
    )
}

/// Writes the demo policies, keeping any file the user already has (and may have edited).
pub(crate) fn write_policies(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        ("mesh.yaml", mesh_policy()),
        ("web.yaml", web_policy()),
        ("accounts.yaml", accounts_policy()),
        ("ledger.yaml", ledger_policy()),
        ("gateway.yaml", crate::edge::gateway_policy()),
    ] {
        let path = dir.join(name);
        if !path.exists() {
            write_atomic(&path, text.as_bytes(), FileMode::Public)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

pub(crate) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the ward binary")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} not found next to {} (build it with `cargo build --bins`, or pass --proxy-bin)",
            name,
            exe.display()
        );
    }
    Ok(path)
}
