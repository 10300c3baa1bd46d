//! The Kubernetes commands: `ward install`.

use clap::Args;
use ward_k8s::install::{InstallOptions, render, to_yaml};

use super::Outcome;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The image holding `ward` and `ward-proxy` (control plane and injected sidecars).
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// The mesh's trust domain (SPIFFE IDs are spiffe://TD/ns/NS/sa/SA).
    #[arg(long, value_name = "TD", default_value = "cluster.local", value_parser = super::parse_trust_domain)]
    trust_domain: ward_certs::TrustDomain,
    /// Control-plane replicas (one leader; all serve).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    replicas: u32,
}

/// Prints the manifests, for `ward install | kubectl apply -f -`.
pub fn install(args: InstallArgs) -> anyhow::Result<Outcome> {
    let defaults = InstallOptions::default();
    let options = InstallOptions {
        image: args.image.unwrap_or(defaults.image),
        trust_domain: args.trust_domain.to_string(),
        replicas: args.replicas,
    };
    print!("{}", to_yaml(&render(&options)));
    Ok(Outcome::Success)
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The control plane's namespace.
    #[arg(long, value_name = "NS", default_value = ward_policy::ROOT_NAMESPACE)]
    namespace: String,
}

/// Checks ward on the cluster of KUBECONFIG (or in-cluster): a line per check; exit 1 if
/// any failed.
pub fn check(args: CheckArgs) -> anyhow::Result<Outcome> {
    use anyhow::Context;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let checks = runtime.block_on(ward_k8s::check::run_default(&args.namespace));
    for c in &checks {
        println!("{c}");
    }
    let failed = checks
        .iter()
        .filter(|c| c.status == ward_k8s::check::Status::Fail)
        .count();
    if failed == 0 {
        println!("ward is healthy");
        Ok(Outcome::Success)
    } else {
        println!("{failed} checks failed");
        Ok(Outcome::Negative)
    }
}

/// `ward ca rotate --kubernetes`: asks the leader to rotate the root.
pub fn request_rotation(namespace: &str) -> anyhow::Result<Outcome> {
    use anyhow::Context;
    use ward_control_plane::rotation::Phase;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let phase = runtime.block_on(ward_k8s::rotation::request_default(namespace))?;
    if phase == Phase::Stable {
        println!(
            "root rotation requested: the leader adds a new root, signs with it once every proxy trusts it, and drops the old one once every leaf chains to the new root"
        );
    } else {
        println!("a root rotation is already under way (phase: {phase:?})");
    }
    println!("follow it with `ward check`");
    Ok(Outcome::Success)
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The manifests (`-` for stdin): Pods, and the pod templates of Deployments,
    /// StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs; other objects pass through.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: std::path::PathBuf,
    /// The image injected pods run ward-proxy from (as the control plane's --proxy-image).
    #[arg(long, value_name = "IMAGE")]
    proxy_image: Option<String>,
    /// The mesh's trust domain.
    #[arg(long, value_name = "TD", default_value = "cluster.local", value_parser = super::parse_trust_domain)]
    trust_domain: ward_certs::TrustDomain,
    /// The control plane's namespace.
    #[arg(long, value_name = "NS", default_value = ward_policy::ROOT_NAMESPACE)]
    control_plane_namespace: String,
}

/// Prints the manifests with the sidecar injected, as the webhook would store them.
pub fn inject(args: InjectArgs) -> anyhow::Result<Outcome> {
    use anyhow::Context;
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let injector = ward_k8s::inject::Injector::new(
        args.proxy_image
            .unwrap_or_else(ward_k8s::install::default_image),
        args.trust_domain.to_string(),
        &args.control_plane_namespace,
    );
    let (objects, report) = ward_k8s::inject::inject_manifests(&text, &injector)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    for line in report {
        eprintln!("ward inject: {line}");
    }
    print!("{}", to_yaml(&objects));
    Ok(Outcome::Success)
}
