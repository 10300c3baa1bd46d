//! The data directory: the CA (`ca.pem`, `ca.key`, `bundle.pem`, which `ward ca rotate`
//! changes under a running control plane), the token store, the rotation journal and
//! `status.json`. Shared by the server and the `ward` CLI.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use ward_certs::ca::{self, CaOptions, CertificateAuthority};
use ward_certs::{TrustBundle, TrustDomain};

/// Opens the data directory for `td`, creating it (owner only: it holds the CA key and
/// the token store) and a CA on first use. Returns the signer and the trust bundle, which
/// must hold the signer's root.
pub fn open(dir: &Path, td: &TrustDomain) -> anyhow::Result<(CertificateAuthority, TrustBundle)> {
    create_dir(dir)?;
    let ca = if dir.join(ca::CA_CERT_FILE).exists() {
        CertificateAuthority::load(dir).context("loading the CA")?
    } else {
        let ca =
            CertificateAuthority::create(td.clone(), &CaOptions::default(), SystemTime::now())?;
        ca.save(dir, false)?;
        tracing::info!(dir = %dir.display(), "created a new CA");
        ca
    };
    if ca.trust_domain() != td {
        anyhow::bail!(
            "{}: the CA is for trust domain {}, not {td}",
            dir.display(),
            ca.trust_domain(),
        );
    }
    let bundle = read_bundle(dir, td).context("reading bundle.pem")?;
    for w in bundle.root_warnings(SystemTime::now()) {
        tracing::warn!(target: "ward::bundle", "{w}");
    }
    if !bundle.contains(ca.root()) {
        anyhow::bail!("{}: bundle.pem does not hold the CA's root", dir.display());
    }
    Ok((ca, bundle))
}

/// Creates the data directory if it is missing, owner only (it holds the CA key).
pub fn create_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The trust bundle in the data directory.
pub fn read_bundle(
    dir: &Path,
    td: &TrustDomain,
) -> Result<TrustBundle, ward_certs::bundle::BundleError> {
    TrustBundle::read(td.clone(), &dir.join(ca::BUNDLE_FILE))
}

/// Size and modification time of the CA files: what a rotation step shows in.
pub fn ca_fingerprint(dir: &Path) -> [Option<(u64, Option<SystemTime>)>; 3] {
    [ca::BUNDLE_FILE, ca::CA_CERT_FILE, ca::CA_KEY_FILE].map(|f| {
        std::fs::metadata(dir.join(f))
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    })
}

/// The data directory's CA trust domain, for `ward token create`.
pub fn data_dir_trust_domain(dir: &Path) -> anyhow::Result<TrustDomain> {
    let ca = CertificateAuthority::load(dir).with_context(|| {
        format!(
            "{}: no CA (start the control plane or run `ward ca init`)",
            dir.display()
        )
    })?;
    Ok(ca.trust_domain().clone())
}
