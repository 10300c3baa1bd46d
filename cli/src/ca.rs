//! `ward ca …`: create a trust domain's certificate authority.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use ward_certs::ca::{self, CaOptions, CertificateAuthority};
use ward_certs::{CertInfo, TrustDomain};

use super::{Outcome, human, parse_duration, parse_trust_domain, rfc3339};

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new root CA (and optionally an intermediate) in a directory.
    Init(InitArgs),
    /// Rotate the root of a running control plane, one step per call: prepare (add the new
    /// root to the bundle) -> activate (sign with it) -> finish (drop the old root). A step
    /// is refused, naming the proxies, while any proxy lags. With --kubernetes, asks the
    /// leader replica to rotate: it takes each step as soon as the proxies allow.
    Rotate {
        /// The control plane's data directory.
        #[arg(long, value_name = "DIR", required_unless_present = "kubernetes")]
        data_dir: Option<PathBuf>,
        /// Insist on this step (default: the next one).
        #[arg(long, value_parser = ["prepare", "activate", "finish"], conflicts_with = "kubernetes")]
        step: Option<String>,
        /// Rotate the root of the control plane on the cluster of KUBECONFIG (or
        /// in-cluster).
        #[arg(long, conflicts_with = "data_dir")]
        kubernetes: bool,
        /// With --kubernetes: the control plane's namespace.
        #[arg(long, value_name = "NS", default_value = ward_policy::ROOT_NAMESPACE, requires = "kubernetes")]
        namespace: String,
    },
    /// Roots, the signing root, the rotation phase, and every proxy's bundle and leaf.
    Status {
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Trust domain, e.g. example.org (lower case).
    #[arg(long, value_name = "TD", value_parser = parse_trust_domain)]
    trust_domain: TrustDomain,
    /// Directory to write ca.pem, ca.key (0600) and bundle.pem into.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Lifetime of the root (and intermediate).
    #[arg(long, value_name = "DURATION", default_value = "8760h", value_parser = parse_duration)]
    ttl: Duration,
    /// Sign workload certificates with an intermediate; the root key goes to root.key.
    #[arg(long)]
    intermediate: bool,
    /// Replace an existing CA in DIR.
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: CaCommand) -> anyhow::Result<Outcome> {
    match cmd {
        CaCommand::Init(args) => init(args),
        CaCommand::Rotate {
            kubernetes: true,
            namespace,
            ..
        } => crate::kube::request_rotation(&namespace),
        CaCommand::Rotate { data_dir, step, .. } => {
            use ward_control_plane::rotation::{Phase, advance};
            let data_dir = data_dir.context("--data-dir is required")?;
            let step = step.map(|s| match s.as_str() {
                "prepare" => Phase::Prepared,
                "activate" => Phase::Activated,
                _ => Phase::Stable,
            });
            for line in advance(&data_dir, step)? {
                println!("{line}");
            }
            Ok(Outcome::Success)
        }
        CaCommand::Status { data_dir } => {
            for line in ward_control_plane::rotation::describe(&data_dir)? {
                println!("{line}");
            }
            Ok(Outcome::Success)
        }
    }
}

fn init(args: InitArgs) -> anyhow::Result<Outcome> {
    let options = CaOptions {
        ttl: args.ttl,
        intermediate: args.intermediate,
    };
    let authority = CertificateAuthority::create(args.trust_domain, &options, SystemTime::now())
        .context("creating the CA")?;
    authority.save(&args.dir, args.force)?;

    let dir = args.dir.display();
    println!(
        "created CA for trust domain {} in {dir}",
        authority.trust_domain()
    );
    let now = SystemTime::now();
    for (der, role) in authority
        .chain()
        .iter()
        .zip(role_names(authority.chain().len()))
    {
        let info = CertInfo::parse(der).context("reading back the new CA")?;
        println!(
            "  {role:<12} {}  serial {}  expires {} (in {})",
            info.subject,
            info.serial,
            rfc3339(info.not_after),
            human(info.time_left(now)),
        );
    }
    println!("  {dir}/{}      signing chain", ca::CA_CERT_FILE);
    println!("  {dir}/{}      signing key (0600)", ca::CA_KEY_FILE);
    if args.intermediate {
        println!(
            "  {dir}/{}    root key (0600; keep it offline)",
            ca::ROOT_KEY_FILE
        );
    }
    println!("  {dir}/{}  trust bundle for proxies", ca::BUNDLE_FILE);
    Ok(Outcome::Success)
}

fn role_names(len: usize) -> impl Iterator<Item = &'static str> {
    let names: &[&str] = if len > 1 {
        &["intermediate", "root"]
    } else {
        &["root"]
    };
    names.iter().copied()
}
