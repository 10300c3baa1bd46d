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
