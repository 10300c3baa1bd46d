//! Root rotation, staged so that no request fails: `prepare` adds a new root to the bundle,
//! `activate` signs new leaves with it once every proxy trusts it, `finish` drops the old
//! root once every proxy's leaf chains to the new one.
//!
//! The data directory is the only coordination between `ward ca rotate` and the running
//! control plane: the command changes `bundle.pem`, `ca.pem`/`ca.key` and the `rotation.json`
//! journal (each write atomic, each step safe to run again after a crash), the server
//! notices and pushes; the server reports what every proxy has applied in `status.json`,
//! which the command reads before it lets a step proceed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use ward_certs::ca::{self, CaOptions, CertificateAuthority};
use ward_certs::pem::{FileMode, write_atomic};
use ward_certs::{CertInfo, TrustBundle};

pub const JOURNAL_FILE: &str = "rotation.json";
pub const STATUS_FILE: &str = "status.json";
const NEXT_DIR: &str = "next";
const PREVIOUS_DIR: &str = "previous";
/// How old `status.json` may be for a step to trust it.
pub const STATUS_MAX_AGE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Stable,
    Prepared,
    Activated,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Journal {
    pub phase: Phase,
}

/// What the server last saw of the mesh, written every half second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub written_unix: u64,
    pub bundle_version: u64,
    /// Key IDs of the roots in the bundle the server pushes.
    pub roots: Vec<String>,
    /// Key ID of the root that signs new leaves.
    pub active_root: String,
    /// The lifetime of the leaves the server issues (0 when unknown), for certificate ages.
    #[serde(default)]
    pub svid_ttl_secs: u64,
    pub proxies: BTreeMap<String, ProxyStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub bundle_version: u64,
    pub leaf_not_after_unix: i64,
    /// Key ID of the root the proxy's current leaf chains to.
    pub leaf_issuer: String,
    pub last_seen_unix: u64,
}

use ward_runtime::time::unix_secs as unix;

pub fn read_journal(dir: &Path) -> anyhow::Result<Journal> {
    match std::fs::read(dir.join(JOURNAL_FILE)) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal::default()),
        Err(e) => Err(e.into()),
    }
}

fn write_journal(dir: &Path, phase: Phase) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(&Journal { phase })?;
    write_atomic(&dir.join(JOURNAL_FILE), &bytes, FileMode::Public)?;
    Ok(())
}

pub fn write_status(dir: &Path, status: &Status) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(status)?;
    write_atomic(&dir.join(STATUS_FILE), &bytes, FileMode::Public)?;
    Ok(())
}

/// The server's status, if it is fresh enough to act on.
pub fn read_status(dir: &Path) -> anyhow::Result<Status> {
    let bytes = std::fs::read(dir.join(STATUS_FILE)).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (is the control plane running?)",
            dir.join(STATUS_FILE).display()
        )
    })?;
    let status: Status = serde_json::from_slice(&bytes)?;
    let age = unix(SystemTime::now()).saturating_sub(status.written_unix);
    if age > STATUS_MAX_AGE.as_secs() {
        anyhow::bail!(
            "the control plane's status is {age}s old; is it running? (steps advance only with a live control plane)"
        );
    }
    Ok(status)
}

impl Status {
    /// Proxies that count for a rotation step: every identity that still holds a valid
    /// leaf, connected or not. One that has gone away stops counting when its leaf expires
    /// (it could not talk to anyone after that anyway).
    pub fn live_proxies(&self) -> impl Iterator<Item = (&String, &ProxyStatus)> {
        let now = i64::try_from(self.written_unix).unwrap_or(i64::MAX);
        self.proxies
            .iter()
            .filter(move |(_, p)| p.leaf_not_after_unix > now)
    }

    /// Live proxies that have not applied the bundle the server pushes, each with what it
    /// has: what holds `activate` back.
    pub fn lagging_bundle(&self) -> Vec<String> {
        self.live_proxies()
            .filter(|(_, p)| p.bundle_version != self.bundle_version)
            .map(|(id, p)| {
                format!(
                    "{id} (has bundle {:x}, needs {:x})",
                    p.bundle_version, self.bundle_version
                )
            })
            .collect()
    }

    /// Live proxies whose leaf does not chain to `active` (a root's key ID): what holds
    /// `finish` back.
    pub fn lagging_leaves(&self, active: &str) -> Vec<String> {
        self.live_proxies()
            .filter(|(_, p)| p.leaf_issuer != active)
            .map(|(id, p)| format!("{id} (leaf from {})", p.leaf_issuer))
            .collect()
    }
}

fn subject(der: &rustls_pki_types::CertificateDer<'_>) -> String {
    CertInfo::parse(der).map(|i| i.subject).unwrap_or_default()
}

/// How roots are matched: by key, never by name (see `ward_certs::verify::key_id`).
fn key_id(der: &rustls_pki_types::CertificateDer<'_>) -> String {
    ward_certs::verify::key_id(der).unwrap_or_default()
}

/// A root for people: its subject and key ID.
fn named(der: &rustls_pki_types::CertificateDer<'_>) -> String {
    format!("{} ({})", subject(der), key_id(der))
}

fn write_bundle(dir: &Path, bundle: &TrustBundle) -> anyhow::Result<()> {
    write_atomic(
        &dir.join(ca::BUNDLE_FILE),
        bundle.to_pem().as_bytes(),
        FileMode::Public,
    )?;
    Ok(())
}

/// What a step did, for the operator.
pub type Report = Vec<String>;

/// Runs the next step of the rotation (or `step` if given); refuses while a proxy lags.
pub fn advance(dir: &Path, step: Option<Phase>) -> anyhow::Result<Report> {
    let journal = read_journal(dir)?;
    let next = match (journal.phase, step) {
        (Phase::Stable, None | Some(Phase::Prepared)) => Phase::Prepared,
        (Phase::Prepared, None | Some(Phase::Activated)) => Phase::Activated,
        (Phase::Activated, None | Some(Phase::Stable)) => Phase::Stable,
        (now, Some(want)) => anyhow::bail!(
            "the rotation is {now:?}; the next step is {}, not {}",
            step_name(journal.phase),
            step_name_of(want)
        ),
    };
    match next {
        Phase::Prepared => prepare(dir),
        Phase::Activated => activate(dir),
        Phase::Stable => finish(dir),
    }
}

fn step_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Stable => "prepare",
        Phase::Prepared => "activate",
        Phase::Activated => "finish",
    }
}

fn step_name_of(target: Phase) -> &'static str {
    match target {
        Phase::Prepared => "prepare",
        Phase::Activated => "activate",
        Phase::Stable => "finish",
    }
}

/// Adds a new root to the bundle (the old one still signs).
fn prepare(dir: &Path) -> anyhow::Result<Report> {
    let current = CertificateAuthority::load(dir)?;
    let next_dir = dir.join(NEXT_DIR);
    let next = match CertificateAuthority::load(&next_dir) {
        Ok(ca) => ca,
        Err(_) => {
            let ttl = current
                .not_after()
                .duration_since(SystemTime::now())
                .ok()
                .filter(|d| *d > Duration::from_secs(3600))
                .map_or(ca::DEFAULT_CA_TTL, |_| ca::DEFAULT_CA_TTL);
            // The next CA has the shape of the current one (root only, or root and
            // intermediate).
            let options = CaOptions {
                ttl,
                intermediate: current.chain().len() > 1,
            };
            let ca = CertificateAuthority::create(
                current.trust_domain().clone(),
                &options,
                SystemTime::now(),
            )?;
            ca.save(&next_dir, true)?;
            ca
        }
    };
    let mut bundle = TrustBundle::read(current.trust_domain().clone(), &dir.join(ca::BUNDLE_FILE))?;
    bundle.add(next.root().clone())?;
    write_bundle(dir, &bundle)?;
    write_journal(dir, Phase::Prepared)?;
    Ok(vec![
        format!("prepare: added root {} to the bundle", named(next.root())),
        "the control plane pushes it; run `ward ca rotate` again to activate once every proxy has it".into(),
    ])
}

/// Signs new leaves with the new root, once every connected proxy trusts it.
fn activate(dir: &Path) -> anyhow::Result<Report> {
    let next_dir = dir.join(NEXT_DIR);
    let next = CertificateAuthority::load(&next_dir)?;
    let next_subject = named(next.root());
    let status = read_status(dir)?;
    if !status.roots.contains(&key_id(next.root())) {
        anyhow::bail!("the control plane does not push the new root yet; try again in a moment");
    }
    let lagging = status.lagging_bundle();
    if !lagging.is_empty() {
        anyhow::bail!(
            "not activating: proxies lag behind the bundle: {}",
            lagging.join(", ")
        );
    }
    // Keep the old signer, then make the new one current (copies: safe to redo).
    let previous = dir.join(PREVIOUS_DIR);
    if !previous.join(ca::CA_CERT_FILE).exists() {
        std::fs::create_dir_all(&previous)?;
        for f in [ca::CA_CERT_FILE, ca::CA_KEY_FILE] {
            let bytes = std::fs::read(dir.join(f))?;
            let mode = if f == ca::CA_KEY_FILE {
                FileMode::Secret
            } else {
                FileMode::Public
            };
            write_atomic(&previous.join(f), &bytes, mode)?;
        }
    }
    // The key first: a crash between the two leaves the old cert with... the new key,
    // which CertificateAuthority::load refuses; re-running activate repairs it.
    // The offline root key (intermediate CAs only) goes with its root.
    if next_dir.join(ca::ROOT_KEY_FILE).exists() {
        let bytes = std::fs::read(next_dir.join(ca::ROOT_KEY_FILE))?;
        write_atomic(&dir.join(ca::ROOT_KEY_FILE), &bytes, FileMode::Secret)?;
    }
    for f in [ca::CA_KEY_FILE, ca::CA_CERT_FILE] {
        let bytes = std::fs::read(next_dir.join(f))?;
        let mode = if f == ca::CA_KEY_FILE {
            FileMode::Secret
        } else {
            FileMode::Public
        };
        write_atomic(&dir.join(f), &bytes, mode)?;
    }
    write_journal(dir, Phase::Activated)?;
    Ok(vec![
        format!("activate: new leaves are signed by {next_subject}"),
        "proxies renew now; run `ward ca rotate` again to finish once every leaf chains to the new root".into(),
    ])
}

/// Drops the old root once every connected proxy's leaf chains to the new one.
fn finish(dir: &Path) -> anyhow::Result<Report> {
    let current = CertificateAuthority::load(dir)?;
    let active = key_id(current.root());
    let status = read_status(dir)?;
    if status.active_root != active {
        anyhow::bail!(
            "the control plane does not sign with the new root yet; try again in a moment"
        );
    }
    let lagging = status.lagging_leaves(&active);
    if !lagging.is_empty() {
        anyhow::bail!(
            "not finishing: proxies still hold leaves of the old root: {}",
            lagging.join(", ")
        );
    }
    let bundle = TrustBundle::new(current.trust_domain().clone(), [current.root().clone()])?;
    write_bundle(dir, &bundle)?;
    write_journal(dir, Phase::Stable)?;
    for sub in [PREVIOUS_DIR, NEXT_DIR] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    Ok(vec![format!(
        "finish: the bundle holds only {}; rotation complete",
        named(current.root())
    )])
}

/// Lines for `ward ca status`.
pub fn describe(dir: &Path) -> anyhow::Result<Report> {
    let journal = read_journal(dir)?;
    let ca = CertificateAuthority::load(dir)?;
    let bundle = TrustBundle::read(ca.trust_domain().clone(), &dir.join(ca::BUNDLE_FILE))?;
    let mut out = vec![
        format!("trust domain: {}", ca.trust_domain()),
        format!(
            "rotation:     {:?} (next step: {})",
            journal.phase,
            step_name(journal.phase)
        ),
        format!("signing root: {}", named(ca.root())),
        "bundle roots:".into(),
    ];
    for w in bundle.root_warnings(SystemTime::now()) {
        out.push(format!("  warning: {w}"));
    }
    for root in bundle.roots() {
        let info = CertInfo::parse(root)?;
        out.push(format!(
            "  {} ({})  expires {}",
            info.subject,
            key_id(root),
            ward_runtime::time::rfc3339(info.not_after)
        ));
    }
    match read_status(dir) {
        Ok(status) => {
            out.push(format!("bundle version pushed: {}", status.bundle_version));
            out.push(format!("proxies ({}):", status.proxies.len()));
            for (id, p) in &status.proxies {
                let expiry = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(p.leaf_not_after_unix.max(0) as u64);
                out.push(format!(
                    "  {id}  bundle v{}  leaf from {}  leaf expires {}",
                    p.bundle_version,
                    p.leaf_issuer,
                    ward_runtime::time::rfc3339(expiry)
                ));
            }
        }
        Err(e) => out.push(format!("proxies: unknown ({e})")),
    }
    Ok(out)
}
