//! `ward cert …`: issue a workload SVID from a CA directory, and inspect certificates.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ward_certs::ca::CertificateAuthority;
use ward_certs::verify::{Purpose, unix_time};
use ward_certs::{CertInfo, SpiffeId, TrustBundle, TrustDomain, pem};

use super::{Outcome, human, parse_duration, parse_spiffe_id, parse_trust_domain, rfc3339};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue an X.509-SVID for a SPIFFE ID, signed by the CA in --ca-dir.
    Issue(IssueArgs),
    /// Show a certificate's identity and validity; with --bundle, check it is a valid SVID.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Directory holding ca.pem and ca.key (from `ward ca init`).
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// The identity to certify, e.g. spiffe://example.org/ns/default/sa/web.
    #[arg(long, value_name = "ID", value_parser = parse_spiffe_id)]
    spiffe_id: SpiffeId,
    /// Lifetime of the certificate (never beyond the CA's own expiry).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    ttl: Duration,
    /// Where to write the chain (PEM, leaf first).
    #[arg(long, value_name = "OUT.pem")]
    cert: PathBuf,
    /// Where to write the new private key (PEM, mode 0600).
    #[arg(
        long,
        value_name = "OUT.key",
        required_unless_present = "csr",
        conflicts_with = "csr"
    )]
    key: Option<PathBuf>,
    /// Sign this PKCS#10 request (PEM or DER) instead of making a key; only its public key
    /// is used.
    #[arg(long, value_name = "IN.csr")]
    csr: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The certificate (PEM; a chain, leaf first).
    #[arg(value_name = "FILE.pem")]
    file: PathBuf,
    /// Check the certificate as an X.509-SVID against this trust bundle (PEM roots).
    #[arg(long, value_name = "BUNDLE.pem")]
    bundle: Option<PathBuf>,
    /// The trust domain the SVID must belong to (default: the bundle roots' trust domain).
    #[arg(long, value_name = "TD", value_parser = parse_trust_domain, requires = "bundle")]
    trust_domain: Option<TrustDomain>,
}

pub fn run(cmd: CertCommand) -> anyhow::Result<Outcome> {
    match cmd {
        CertCommand::Issue(args) => issue(args),
        CertCommand::Inspect(args) => inspect(args),
    }
}

fn issue(args: IssueArgs) -> anyhow::Result<Outcome> {
    let authority = CertificateAuthority::load(&args.ca_dir)
        .with_context(|| format!("loading the CA from {}", args.ca_dir.display()))?;
    let now = SystemTime::now();
    let chain = match (&args.csr, &args.key) {
        (Some(csr_path), _) => {
            let csr = read_csr(csr_path)?;
            let chain = authority
                .sign_csr(&csr, &args.spiffe_id, args.ttl, now)
                .with_context(|| format!("signing {}", csr_path.display()))?;
            pem::write_atomic(
                &args.cert,
                pem::certs_to_pem(&chain).as_bytes(),
                pem::FileMode::Public,
            )?;
            chain
        }
        (None, Some(key_path)) => {
            let svid = authority
                .issue(&args.spiffe_id, args.ttl, now)
                .context("issuing the SVID")?;
            svid.write(&args.cert, key_path)?;
            svid.chain().to_vec()
        }
        (None, None) => bail!("one of --key or --csr is required"),
    };
    let info = CertInfo::parse(&chain[0]).context("reading back the new certificate")?;
    println!("issued {}", args.spiffe_id);
    println!("  serial     {}", info.serial);
    println!(
        "  not after  {} (in {})",
        rfc3339(info.not_after),
        human(info.time_left(now))
    );
    if info.not_after < now + args.ttl - Duration::from_secs(1) {
        println!("  note       lifetime capped at the CA's expiry");
    }
    println!("  chain      {}", args.cert.display());
    if let Some(key) = &args.key {
        println!("  key        {} (0600)", key.display());
    }
    Ok(Outcome::Success)
}

fn read_csr(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        let block =
            ::pem::parse(&bytes).with_context(|| format!("{}: not a PEM file", path.display()))?;
        if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
            bail!(
                "{}: holds a {} block, not a CERTIFICATE REQUEST",
                path.display(),
                block.tag()
            );
        }
        Ok(block.into_contents())
    } else {
        Ok(bytes)
    }
}

fn inspect(args: InspectArgs) -> anyhow::Result<Outcome> {
    let chain = pem::read_certs(&args.file)?;
    let info = CertInfo::parse(&chain[0])
        .with_context(|| format!("{}: first certificate", args.file.display()))?;
    let now = SystemTime::now();
    let spiffe_id = match (&info.spiffe_id, info.uri_sans.as_slice()) {
        (Some(id), _) => id.to_string(),
        (None, []) => "(none: no URI SAN)".to_owned(),
        (None, sans) => format!("(none: URI SANs {sans:?})"),
    };
    println!("spiffe_id:  {spiffe_id}");
    println!("serial:     {}", info.serial);
    println!("not_before: {}", rfc3339(info.not_before));
    println!("not_after:  {}", rfc3339(info.not_after));
    let left = match info.not_after.duration_since(now) {
        Ok(left) => human(left),
        Err(ago) => format!("expired {} ago", human(ago.duration())),
    };
    println!("time_left:  {left}");
    let subject = if info.subject.is_empty() {
        "(empty)"
    } else {
        &info.subject
    };
    println!("subject:    {subject}");
    println!("issuer:     {}", info.issuer);
    println!("chain:      {} certificate(s)", chain.len());

    let Some(bundle_path) = &args.bundle else {
        return Ok(Outcome::Success);
    };
    let trust_domain = match args.trust_domain {
        Some(td) => td,
        None => bundle_trust_domain(bundle_path)?,
    };
    let bundle = TrustBundle::read(trust_domain, bundle_path)
        .with_context(|| format!("loading trust bundle {}", bundle_path.display()))?;
    match ward_certs::verify_svid(&chain, &bundle, unix_time(now), Purpose::Both) {
        Ok(id) => {
            println!(
                "valid:      yes, an X.509-SVID of {} for {id}",
                bundle.trust_domain()
            );
            Ok(Outcome::Success)
        }
        Err(rule) => {
            println!("valid:      no: {rule}");
            Ok(Outcome::Negative)
        }
    }
}

/// The trust domain named by the bundle's roots (`spiffe://td` URI SAN, as `ward ca init`
/// writes it).
fn bundle_trust_domain(path: &Path) -> anyhow::Result<TrustDomain> {
    let roots = pem::read_certs(path)?;
    roots
        .iter()
        .filter_map(|der| CertInfo::parse(der).ok())
        .flat_map(|info| info.uri_sans)
        .find_map(|uri| ward_certs::parse_trust_domain(&uri).ok())
        .with_context(|| {
            format!(
                "{}: the roots name no trust domain; pass --trust-domain",
                path.display()
            )
        })
}
