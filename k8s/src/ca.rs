//! The CA kept in a Secret (`ward-system/ward-ca`), so that every replica signs with the
//! same key and a restarted pod finds it again. At start a replica copies the Secret into
//! its data directory (memory-backed); the first replica ever creates the CA and the
//! Secret, and if another replica created it at the same moment, takes that one instead.
//! Every replica then follows the Secret, which the leader changes through a root rotation
//! (`crate::rotation`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use ward_certs::TrustDomain;
use ward_certs::ca::{BUNDLE_FILE, CA_CERT_FILE, CA_KEY_FILE};
use ward_certs::pem::{FileMode, write_atomic};

use ward_runtime::Drain;

use crate::install::names::CA_SECRET;

/// How often a replica looks at the Secret again.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// The files the Secret holds, and how each is written.
const FILES: [(&str, FileMode); 3] = [
    (CA_CERT_FILE, FileMode::Public),
    (CA_KEY_FILE, FileMode::Secret),
    (BUNDLE_FILE, FileMode::Public),
];

/// Makes `dir` hold the cluster's CA: from the Secret in `namespace`, or a new one that
/// becomes the Secret.
pub async fn sync(
    client: &kube::Client,
    namespace: &str,
    dir: &Path,
    td: &TrustDomain,
) -> anyhow::Result<()> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    if let Some(secret) = secrets
        .get_opt(CA_SECRET)
        .await
        .with_context(|| format!("reading Secret {namespace}/{CA_SECRET}"))?
    {
        return write_files(&secret, dir, namespace).map(drop);
    }
    ward_control_plane::datadir::open(dir, td)?;
    let mut data = BTreeMap::new();
    for (file, _) in FILES {
        let bytes = std::fs::read(dir.join(file))
            .with_context(|| format!("reading {}", dir.join(file).display()))?;
        data.insert(file.to_owned(), ByteString(bytes));
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "ward".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{CA_SECRET}"), "stored the new CA");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Another replica stored one first: sign with that one.
            let theirs = secrets
                .get(CA_SECRET)
                .await
                .with_context(|| format!("reading Secret {namespace}/{CA_SECRET}"))?;
            write_files(&theirs, dir, namespace).map(drop)
        }
        Err(e) => Err(e).with_context(|| format!("creating Secret {namespace}/{CA_SECRET}")),
    }
}

/// Writes the Secret's CA files into `dir`, each only if it changed (the server reloads on
/// a change). The bundle goes first: a new root is trusted before it signs anything.
fn write_files(secret: &Secret, dir: &Path, namespace: &str) -> anyhow::Result<bool> {
    ward_control_plane::datadir::create_dir(dir)?;
    let data = secret.data.clone().unwrap_or_default();
    let mut changed = false;
    for (file, mode) in FILES {
        let bytes = data
            .get(file)
            .with_context(|| format!("Secret {namespace}/{CA_SECRET} has no {file}"))?;
        let path = dir.join(file);
        if std::fs::read(&path).is_ok_and(|on_disk| on_disk == bytes.0) {
            continue;
        }
        write_atomic(&path, &bytes.0, mode)
            .with_context(|| format!("writing {}", path.display()))?;
        changed = true;
    }
    Ok(changed)
}

/// Keeps `dir` in step with the Secret, which the leader changes through a root rotation
/// (the server follows the directory), until the drain begins.
pub async fn follow(client: kube::Client, namespace: String, dir: PathBuf, drain: Drain) {
    let secrets = Api::<Secret>::namespaced(client, &namespace);
    let mut seen: Option<String> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
            () = drain.signaled() => return,
        }
        let secret = match secrets.get(CA_SECRET).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(secret = %format!("{namespace}/{CA_SECRET}"), error = %e, "cannot read the CA Secret; keeping the CA in use");
                continue;
            }
        };
        if secret.metadata.resource_version.is_some() && secret.metadata.resource_version == seen {
            continue;
        }
        match write_files(&secret, &dir, &namespace) {
            Ok(changed) => {
                if changed {
                    tracing::info!(secret = %format!("{namespace}/{CA_SECRET}"), "the CA Secret changed; loading it");
                }
                seen = secret.metadata.resource_version;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the CA Secret does not load; keeping the CA in use")
            }
        }
    }
}
