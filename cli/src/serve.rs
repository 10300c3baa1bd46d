//! `ward control-plane` and `ward token create`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use ward_certs::{SpiffeId, TrustDomain};
use ward_runtime::telemetry::LogFormat;

use super::{Outcome, parse_duration, parse_spiffe_id, parse_trust_domain};
use ward_control_plane::attest::tokens;
use ward_control_plane::server::{self, Settings};

#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Where the CA, trust bundle and token store live (created on first start).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    #[arg(long, value_name = "TD", value_parser = parse_trust_domain)]
    trust_domain: TrustDomain,
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15012")]
    listen: SocketAddr,
    /// A directory of policy files, watched and pushed to the proxies they apply to.
    #[arg(long, value_name = "DIR", conflicts_with = "kubernetes")]
    policy_dir: Option<PathBuf>,
    /// Run against a Kubernetes cluster (in-cluster config, or KUBECONFIG): the CA in the
    /// ward-ca Secret, policy from the AuthorizationPolicy and MeshPolicy resources, proxies
    /// attested by their pods' service-account tokens (audience ward).
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: serve the sidecar injector webhook here (TLS from the mesh CA).
    #[arg(long, value_name = "ADDR", requires = "kubernetes")]
    webhook: Option<SocketAddr>,
    /// A DNS name or IP the webhook certificate also carries (the Service's names always):
    /// for a webhook configured by URL outside a cluster. Repeatable.
    #[arg(long, value_name = "NAME", requires = "webhook")]
    webhook_name: Vec<String>,
    /// The image injected pods run ward-proxy from.
    #[arg(long, value_name = "IMAGE", requires = "kubernetes")]
    proxy_image: Option<String>,
    /// With --kubernetes: how long the leader's Lease lasts unrenewed before another
    /// replica takes over (renewed every fifth of it).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration, requires = "kubernetes")]
    leader_lease: Duration,
    /// With --kubernetes: the leader rotates the root CA by itself once it has less than
    /// this left (at most 180d, so a new one-year root is not due at once).
    #[arg(long, value_name = "DURATION", default_value = "60d", value_parser = parse_rotate_before, requires = "kubernetes")]
    rotate_root_before: Duration,
    /// Admin address: /live, /ready, /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    admin: SocketAddr,
    /// Serve the read-only dashboard (the mesh as proxies report it) here; `--dashboard`
    /// alone serves it on 127.0.0.1:15015.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:15015")]
    dashboard: Option<SocketAddr>,
    /// Lifetime of the SVIDs issued to proxies.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    svid_ttl: Duration,
    /// Certify calls allowed per peer address per second (a proxy renews about twice per
    /// SVID lifetime; bursts come from restarts).
    #[arg(long, value_name = "N", default_value_t = 200)]
    certify_rate: u32,
    /// Open Watch streams (policy and bundle) allowed per SPIFFE ID; replicas sharing a
    /// service account share it (each proxy holds two).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_watches_per_identity: u64,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = clap::builder::ValueParser::new(str::parse::<LogFormat>))]
    log_format: LogFormat,
}

pub fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<Outcome> {
    ward_runtime::telemetry::init_logs(args.log_format);
    let metrics = ward_control_plane::metrics::install_metrics().context("metrics")?;
    let settings = Settings {
        data_dir: args.data_dir,
        trust_domain: args.trust_domain,
        listen: args.listen,
        policy_dir: args.policy_dir,
        svid_ttl: args.svid_ttl,
        admin: args.admin,
        dashboard: args.dashboard,
        certify_rate: args.certify_rate,
        max_watches_per_identity: usize::try_from(args.max_watches_per_identity)
            .unwrap_or(usize::MAX),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if args.kubernetes {
        let kube = ward_k8s::control_plane::KubeSettings {
            webhook: args.webhook,
            webhook_names: args.webhook_name,
            proxy_image: args
                .proxy_image
                .unwrap_or_else(ward_k8s::install::default_image),
            lease: args.leader_lease,
            rotate_root_before: args.rotate_root_before,
        };
        runtime.block_on(ward_k8s::control_plane::run(settings, kube, Some(metrics)))?;
    } else {
        runtime.block_on(server::run(settings, Some(metrics)))?;
    }
    Ok(Outcome::Success)
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The one identity the token attests.
    #[arg(long, value_name = "ID", value_parser = parse_spiffe_id)]
    spiffe_id: SpiffeId,
    /// The workload's labels (policy selectors match them).
    #[arg(long, value_name = "k=v[,k=v]", value_parser = parse_labels, default_value = "")]
    labels: BTreeMap<String, String>,
    /// How long the token may be used.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// How many times it may be used.
    #[arg(long, default_value_t = 1)]
    uses: u32,
}

pub fn token_create(args: TokenCreateArgs) -> anyhow::Result<Outcome> {
    let td = ward_control_plane::datadir::data_dir_trust_domain(&args.data_dir)?;
    if !args.spiffe_id.is_member_of(&td) {
        eprintln!(
            "ward: warning: {} is not in this control plane's trust domain {td}; Certify will refuse it",
            args.spiffe_id
        );
    }
    let grant = tokens::grant(
        &args.spiffe_id,
        args.labels,
        args.ttl,
        args.uses,
        SystemTime::now(),
    );
    let token = tokens::TokenStore::new(&args.data_dir)
        .create(grant)
        .context("storing the token")?;
    println!("{token}");
    Ok(Outcome::Success)
}

pub(crate) fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("label {pair:?} is not key=value"))
        })
        .collect()
}

/// `--rotate-root-before`: a duration up to half a new root's lifetime.
fn parse_rotate_before(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let most = ward_certs::ca::DEFAULT_CA_TTL / 2;
    if d > most {
        return Err(format!(
            "at most {}d: a new root lives {}d, and must not be due for rotation at once",
            most.as_secs() / 86_400,
            ward_certs::ca::DEFAULT_CA_TTL.as_secs() / 86_400
        ));
    }
    Ok(d)
}
