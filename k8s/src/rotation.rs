//! Root rotation on Kubernetes, driven by the leader: the same three steps as
//! `ward ca rotate` (prepare: a new root joins the bundle; activate: it signs once every
//! proxy trusts it; finish: the old root goes once every leaf chains to the new one), run
//! on a copy of the CA Secret with the replicas' merged status (`crate::status`), and
//! written back to the Secret conditionally on the version read, so that a step happens
//! once even if leadership moves mid-way. Every replica follows the Secret
//! (`crate::ca::follow`) and pushes what it holds.
//!
//! A rotation starts by itself when the CA has less than `--rotate-root-before` left, or
//! when asked: `ward ca rotate --kubernetes` sets the [`REQUEST_ANNOTATION`] on the Secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use ward_certs::ca::CertificateAuthority;
use ward_certs::pem::{FileMode, write_atomic};
use ward_control_plane::rotation::{self as steps, JOURNAL_FILE, Phase, STATUS_FILE};
use ward_runtime::Drain;

use crate::install::names::CA_SECRET;
use crate::status;

/// On the CA Secret: a root rotation is asked for (the value: when, for people).
pub const REQUEST_ANNOTATION: &str = "ward.dev/rotate-root";
/// How often the leader looks for a step to take.
const EVERY: Duration = Duration::from_secs(2);
/// Sub-directories of the rotation's working directory, kept in the Secret as
/// `DIR.FILE` keys (a key cannot hold a `/`).
const SUBDIRS: [&str; 2] = ["next", "previous"];

/// The rotation's phase as the Secret records it.
pub fn phase(secret: &Secret) -> anyhow::Result<Phase> {
    match secret.data.as_ref().and_then(|d| d.get(JOURNAL_FILE)) {
        Some(bytes) => {
            let journal: steps::Journal = serde_json::from_slice(&bytes.0)
                .with_context(|| format!("the CA Secret's {JOURNAL_FILE} does not read"))?;
            Ok(journal.phase)
        }
        None => Ok(Phase::Stable),
    }
}

/// Writes the Secret's files into `dir` (emptied first), as `ward ca rotate` keeps them.
fn materialize(data: &BTreeMap<String, ByteString>, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    ward_control_plane::datadir::create_dir(dir)?;
    for (key, bytes) in data {
        let path = match key.split_once('.') {
            Some((sub, file)) if SUBDIRS.contains(&sub) => {
                ward_control_plane::datadir::create_dir(&dir.join(sub))?;
                dir.join(sub).join(file)
            }
            _ => dir.join(key),
        };
        let mode = if key.ends_with(".key") {
            FileMode::Secret
        } else {
            FileMode::Public
        };
        write_atomic(&path, &bytes.0, mode)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The files of `dir` as Secret data (the status is not kept).
fn collect(dir: &Path) -> anyhow::Result<BTreeMap<String, ByteString>> {
    let mut data = BTreeMap::new();
    let mut read_dir = |sub: Option<&str>| -> anyhow::Result<()> {
        let at = sub.map_or_else(|| dir.to_owned(), |s| dir.join(s));
        if !at.exists() {
            return Ok(());
        }
        for entry in std::fs::read_dir(&at).with_context(|| format!("reading {}", at.display()))? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if sub.is_none() && name == STATUS_FILE {
                continue;
            }
            let key = sub.map_or_else(|| name.clone(), |s| format!("{s}.{name}"));
            data.insert(key, ByteString(std::fs::read(entry.path())?));
        }
        Ok(())
    };
    read_dir(None)?;
    for sub in SUBDIRS {
        read_dir(Some(sub))?;
    }
    Ok(data)
}

/// The signing CA certificate's notAfter, from the Secret's `ca.pem` (its first
/// certificate).
fn ca_not_after(data: &BTreeMap<String, ByteString>) -> anyhow::Result<SystemTime> {
    let pem = data
        .get(ward_certs::ca::CA_CERT_FILE)
        .context("no ca.pem")?;
    let first = pem::parse(&pem.0)?;
    let der = rustls_pki_types::CertificateDer::from(first.contents().to_vec());
    Ok(ward_certs::CertInfo::parse(&der)?.not_after)
}

/// Whether a CA that ends at `not_after` is due for rotation at `now`.
pub fn due(not_after: SystemTime, now: SystemTime, before: Duration) -> bool {
    not_after
        .duration_since(now)
        .map_or(true, |left| left < before)
}

/// The leader's part: takes the next step whenever one is due and ready, until the drain
/// begins. Work happens in `work` (a directory it owns).
pub async fn drive(
    client: kube::Client,
    namespace: String,
    work: PathBuf,
    before: Duration,
    leader: watch::Receiver<bool>,
    drain: Drain,
) {
    let mut last_wait = String::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = drain.signaled() => return,
        }
        if !*leader.borrow() {
            last_wait.clear();
            continue;
        }
        match round(&client, &namespace, &work, before).await {
            Ok(Some(report)) => {
                last_wait.clear();
                // The step taken; the report's other lines are advice for `ward ca rotate`
                // by hand.
                if let Some(step) = report.first() {
                    tracing::info!(target: "ward::rotation", "{step}");
                }
            }
            Ok(None) => last_wait.clear(),
            Err(e) => {
                let why = format!("{e:#}");
                if why != last_wait {
                    tracing::info!(target: "ward::rotation", waiting = %why, "root rotation: next step not taken yet");
                    last_wait = why;
                }
            }
        }
    }
}

/// One look: the step taken (if any).
async fn round(
    client: &kube::Client,
    namespace: &str,
    work: &Path,
    before: Duration,
) -> anyhow::Result<Option<steps::Report>> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(CA_SECRET)
        .await
        .with_context(|| format!("reading Secret {namespace}/{CA_SECRET}"))?;
    let now = SystemTime::now();
    let replicas = status::read_all(client, namespace)
        .await
        .context("reading the replicas' status")?;
    status::forget_gone(client, namespace, &replicas, now).await;
    let requested = secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(REQUEST_ANNOTATION));
    let data = secret.data.clone().unwrap_or_default();
    // Nothing is written out (keys included) unless a step may be due.
    if phase(&secret)? == Phase::Stable && !requested {
        let not_after = ca_not_after(&data).context("the CA Secret's ca.pem does not read")?;
        if !due(not_after, now, before) {
            return Ok(None);
        }
    }
    materialize(&data, work)?;
    CertificateAuthority::load(work).context("the CA Secret's CA does not load")?;
    let merged = status::merge(&status::fresh(replicas, now), now)?;
    steps::write_status(work, &merged)?;
    let report = steps::advance(work, None)?;
    let mut next = secret;
    next.data = Some(collect(work)?);
    if let Some(a) = next.metadata.annotations.as_mut() {
        a.remove(REQUEST_ANNOTATION);
    }
    // Conditional on the version read (it is in the metadata): a replica that lost the
    // Lease meanwhile cannot overwrite the new leader's step.
    secrets
        .replace(CA_SECRET, &PostParams::default(), &next)
        .await
        .with_context(|| format!("writing Secret {namespace}/{CA_SECRET}"))?;
    Ok(Some(report))
}

/// Asks the leader of the cluster of KUBECONFIG (or in-cluster) for a root rotation
/// (`ward ca rotate --kubernetes`); returns the phase it found.
pub async fn request_default(namespace: &str) -> anyhow::Result<Phase> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG, or in-cluster config)")?;
    request(&client, namespace).await
}

/// Asks the leader for a root rotation unless one is under way; returns the phase found.
pub async fn request(client: &kube::Client, namespace: &str) -> anyhow::Result<Phase> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(CA_SECRET)
        .await
        .with_context(|| format!("reading Secret {namespace}/{CA_SECRET} (is ward installed?)"))?;
    let now = phase(&secret)?;
    if now != Phase::Stable {
        return Ok(now);
    }
    let patch = serde_json::json!({
        "metadata": { "annotations": {
            REQUEST_ANNOTATION: ward_runtime::time::rfc3339(SystemTime::now()),
        } }
    });
    secrets
        .patch(CA_SECRET, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("annotating Secret {namespace}/{CA_SECRET}"))?;
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_directory_round_trips_through_secret_keys() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let data: BTreeMap<String, ByteString> = [
            ("ca.pem", "cert"),
            ("ca.key", "key"),
            ("bundle.pem", "roots"),
            ("rotation.json", "{\"phase\":\"prepared\"}"),
            ("next.ca.pem", "next cert"),
            ("next.ca.key", "next key"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        materialize(&data, &work).unwrap();
        assert_eq!(
            std::fs::read_to_string(work.join("next/ca.key")).unwrap(),
            "next key"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(work.join("next/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(work.join(STATUS_FILE), "{}").unwrap();
        assert_eq!(
            collect(&work).unwrap(),
            data,
            "status.json stays out of the Secret"
        );
        // A second materialization starts from nothing: a dropped key does not linger.
        let fewer: BTreeMap<_, _> = data
            .into_iter()
            .filter(|(k, _)| !k.starts_with("next."))
            .collect();
        materialize(&fewer, &work).unwrap();
        assert!(!work.join("next/ca.pem").exists());
    }

    #[test]
    fn the_ca_expiry_is_read_from_the_secret_without_writing_it_out() {
        let ca = CertificateAuthority::create(
            ward_certs::parse_trust_domain("cluster.local").unwrap(),
            &ward_certs::ca::CaOptions::default(),
            SystemTime::now(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        ca.save(dir.path(), false).unwrap();
        let pem = std::fs::read(dir.path().join(ward_certs::ca::CA_CERT_FILE)).unwrap();
        let data = BTreeMap::from([("ca.pem".to_owned(), ByteString(pem))]);
        assert_eq!(ca_not_after(&data).unwrap(), ca.not_after());
        assert!(ca_not_after(&BTreeMap::new()).is_err());
    }

    #[test]
    fn a_rotation_is_due_inside_the_window_and_after_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        assert!(!due(now + 90 * day, now, 60 * day));
        assert!(due(now + 59 * day, now, 60 * day));
        assert!(due(now - day, now, 60 * day));
    }
}
