//! The identity from files (`ward cert issue`, or a certificate manager's Secret mount):
//! the SVID chain, its key and the bundle, checked against each other at start and again
//! whenever one of them changes. A change that does not check out (a half-written file, a
//! key from another certificate, a chain the bundle does not sign) is refused with an
//! error and the identity in force stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ward_certs::verify::{Purpose, unix_time};
use ward_certs::{Svid, TrustBundle, TrustDomain, verify_svid};

use super::{IdentityError, Issued, Publisher, Source};
use crate::config::IdentityFiles;

/// How often the files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// SVID and bundle files.
pub struct Files {
    cert: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
    trust_domain: TrustDomain,
    every: Duration,
    /// The files as they were when first loaded: a change after that is followed.
    first_seen: std::sync::Mutex<Option<Fingerprint>>,
}

/// Size and modification time of each of the three files.
type Fingerprint = [Option<(u64, Option<SystemTime>)>; 3];

impl Files {
    pub fn new(files: &IdentityFiles, trust_domain: &TrustDomain) -> Result<Self, IdentityError> {
        let (Some(cert), Some(key), Some(bundle)) = (&files.cert, &files.key, &files.bundle) else {
            return Err(IdentityError::ControlPlane(
                "no static identity configured".into(),
            ));
        };
        Ok(Self {
            cert: cert.clone(),
            key: key.clone(),
            bundle: bundle.clone(),
            trust_domain: trust_domain.clone(),
            every: RELOAD_EVERY,
            first_seen: std::sync::Mutex::new(None),
        })
    }

    /// Looks at the files every `every` instead.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// Reads and cross-checks the three files.
    fn load(&self) -> Result<(Svid, TrustBundle), IdentityError> {
        let svid = Svid::read(&self.cert, &self.key)?;
        let bundle = TrustBundle::read(self.trust_domain.clone(), &self.bundle)?;
        verify_svid(
            svid.chain(),
            &bundle,
            unix_time(SystemTime::now()),
            Purpose::Both,
        )
        .map_err(|rule| IdentityError::Invalid {
            path: self.cert.display().to_string(),
            rule,
        })?;
        // The key must belong to the certificate.
        svid.certified_key()?;
        Ok((svid, bundle))
    }

    /// Size and modification time of each file: what a change shows in.
    fn fingerprint(&self) -> Fingerprint {
        [&self.cert, &self.key, &self.bundle].map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().ok()))
        })
    }
}

impl Source for Files {
    async fn first(&self) -> Result<Issued, IdentityError> {
        let seen = self.fingerprint();
        let (svid, bundle) = self.load()?;
        if let Ok(mut first) = self.first_seen.lock() {
            *first = Some(seen);
        }
        Ok(Issued {
            svid,
            bundle,
            federated: Default::default(),
            workload: None,
        })
    }

    async fn follow(self: Arc<Self>, publisher: Publisher) {
        let (fp, load) = (self.clone(), self.clone());
        let seen = self.first_seen.lock().ok().and_then(|mut s| s.take());
        let apply = move |loaded: Result<(Svid, TrustBundle), IdentityError>| match loaded {
            Ok((svid, bundle)) => {
                let id = svid.spiffe_id().clone();
                // The bundle first: a new SVID may chain to a root only the new bundle has.
                publisher.bundle(bundle);
                match publisher.svid(svid) {
                    Ok(()) => tracing::info!(spiffe_id = %id, "identity files reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "identity files refused; the SVID in force stays")
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "identity files refused; the identity in force stays")
            }
        };
        ward_runtime::poll::poll_changes(
            self.every,
            seen,
            move || fp.fingerprint(),
            move || load.load(),
            apply,
            std::future::pending(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use ward_certs::SpiffeId;
    use ward_certs::ca::{CaOptions, CertificateAuthority};

    use super::*;

    struct Setup {
        dir: tempfile::TempDir,
        ca: CertificateAuthority,
        files: IdentityFiles,
        id: SpiffeId,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let ca =
            CertificateAuthority::create(td, &CaOptions::default(), SystemTime::now()).unwrap();
        let id = SpiffeId::new("spiffe://example.org/ns/shop/sa/web").unwrap();
        let files: IdentityFiles = yaml_serde::from_str(&format!(
            "{{ cert: {0}/svid.pem, key: {0}/key.pem, bundle: {0}/bundle.pem }}",
            dir.path().display()
        ))
        .unwrap();
        write(&ca, &id, &files);
        std::fs::write(
            files.bundle.as_ref().unwrap(),
            ca.bundle().unwrap().to_pem(),
        )
        .unwrap();
        Setup { dir, ca, files, id }
    }

    fn write(ca: &CertificateAuthority, id: &SpiffeId, files: &IdentityFiles) -> Svid {
        let svid = ca
            .issue(id, Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        svid.write(files.cert.as_ref().unwrap(), files.key.as_ref().unwrap())
            .unwrap();
        svid
    }

    fn source(s: &Setup) -> Files {
        let td = TrustDomain::new("example.org").unwrap();
        Files::new(&s.files, &td)
            .unwrap()
            .every(Duration::from_millis(10))
    }

    #[tokio::test]
    async fn a_new_svid_on_disk_is_put_in_force_and_a_broken_one_is_refused() {
        let s = setup();
        let (identity, workload) = crate::identity::start(source(&s)).await.unwrap();
        assert!(workload.is_none(), "files attest no workload");
        assert_eq!(identity.id, s.id);
        let mut svids = identity.svid();
        svids.borrow_and_update();

        let renewed = write(&s.ca, &s.id, &s.files);
        let wanted = renewed.leaf_info().unwrap().serial;
        tokio::time::timeout(
            Duration::from_secs(10),
            svids.wait_for(|svid| svid.leaf_info().unwrap().serial == wanted),
        )
        .await
        .expect("reloaded")
        .unwrap();
        assert_eq!(identity.mesh.svid.current_chain()[0], renewed.chain()[0]);

        // A certificate that is not one, then a key of another certificate: both refused,
        // the renewed SVID stays in force.
        std::fs::write(s.files.cert.as_ref().unwrap(), "not a certificate").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let other =
            s.ca.issue(&s.id, Duration::from_secs(3600), SystemTime::now())
                .unwrap();
        renewed
            .write(
                s.files.cert.as_ref().unwrap(),
                &s.dir.path().join("unused.pem"),
            )
            .unwrap();
        other
            .write(
                &s.dir.path().join("unused.pem"),
                s.files.key.as_ref().unwrap(),
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(identity.mesh.svid.current_chain()[0], renewed.chain()[0]);
        assert_eq!(svids.borrow().leaf_info().unwrap().serial, wanted);
    }

    #[tokio::test]
    async fn files_that_do_not_belong_together_fail_the_start() {
        let s = setup();
        let other =
            s.ca.issue(&s.id, Duration::from_secs(3600), SystemTime::now())
                .unwrap();
        other
            .write(
                &s.dir.path().join("unused.pem"),
                s.files.key.as_ref().unwrap(),
            )
            .unwrap();
        let err = crate::identity::start(source(&s)).await.err().unwrap();
        assert!(err.to_string().starts_with("identity.cert"), "{err}");
    }
}
