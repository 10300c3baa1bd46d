//! The workload's identity: an SVID (chain and key; the key is made in this process and
//! never leaves it) and the trust bundle.
//!
//! It comes from a [`Source`]: static files, hot-reloaded when they change ([`files`]), or
//! the control plane with a join token ([`crate::control::identity`]); a SPIRE agent or a
//! Kubernetes service-account token are further sources. A source gets the first SVID,
//! then keeps it current through a [`Publisher`], which puts each new SVID or bundle in
//! force for TLS at once (the [`MeshIdentity`] the listeners' configs read) and publishes
//! it on a `watch` for anything else that follows the identity ([`Identity`]).

pub mod files;
pub mod jwt;
pub mod spire;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use metrics::gauge;
use tokio::sync::watch;
use ward_certs::{MeshIdentity, SpiffeId, Svid, TrustBundle};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity.cert: {0}")]
    Svid(#[from] ward_certs::svid::SvidFileError),
    #[error("identity.bundle: {0}")]
    Bundle(#[from] ward_certs::bundle::BundleError),
    #[error("identity.cert: {path}: not a valid SVID for identity.bundle: {rule}")]
    Invalid {
        path: String,
        rule: ward_certs::SvidError,
    },
    #[error("control plane: {0}")]
    ControlPlane(String),
    #[error("identity.spire: {0}")]
    Spire(String),
}

/// The workload an identity was issued for, when the source attests it (the control
/// plane does; with static files the configuration says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// A source's first identity.
pub struct Issued {
    pub svid: Svid,
    pub bundle: TrustBundle,
    /// Foreign trust domains' bundles (from SPIRE's federation), by trust domain.
    pub federated: Federated,
    pub workload: Option<Workload>,
}

/// Bundles of federated trust domains, by trust domain name.
pub type Federated = ward_certs::tls::Federation;

/// Where the identity comes from.
pub trait Source: Send + Sync + 'static {
    /// The first SVID and bundle. A source that can wait for them (the control plane)
    /// retries until it has them; one that cannot (files) fails.
    fn first(&self) -> impl Future<Output = Result<Issued, IdentityError>> + Send;

    /// Keeps the identity current, for ever: each new SVID or bundle goes to `publisher`.
    fn follow(self: Arc<Self>, publisher: Publisher) -> impl Future<Output = ()> + Send;
}

/// The identity as the rest of the proxy holds it.
#[derive(Clone)]
pub struct Identity {
    /// What TLS configs read: always the SVID and bundle in force.
    pub mesh: MeshIdentity,
    pub id: SpiffeId,
    svid: watch::Receiver<Arc<Svid>>,
    bundle: watch::Receiver<Arc<TrustBundle>>,
    federated: watch::Receiver<Arc<Federated>>,
    /// JWT-SVIDs, when the source signs them.
    pub jwt: Option<jwt::JwtSource>,
}

impl Identity {
    /// The whole identity, followed from now on.
    pub fn follow(&self) -> Followed {
        Followed {
            svid: self.svid(),
            bundle: self.bundle(),
            federated: self.federated(),
        }
    }

    /// The federated trust domains' bundles in force, and each set after them.
    pub fn federated(&self) -> watch::Receiver<Arc<Federated>> {
        self.federated.clone()
    }

    /// The SVID in force, and each one after it.
    pub fn svid(&self) -> watch::Receiver<Arc<Svid>> {
        self.svid.clone()
    }

    /// The trust bundle in force, and each one after it.
    pub fn bundle(&self) -> watch::Receiver<Arc<TrustBundle>> {
        self.bundle.clone()
    }
}

/// The SVID, the bundle and the federated bundles followed together: for what hands the
/// whole identity out again on every change (the Workload API, SDS).
pub struct Followed {
    svid: watch::Receiver<Arc<Svid>>,
    bundle: watch::Receiver<Arc<TrustBundle>>,
    federated: watch::Receiver<Arc<Federated>>,
}

/// The identity at one moment.
pub struct Snapshot {
    pub svid: Arc<Svid>,
    pub bundle: Arc<TrustBundle>,
    pub federated: Arc<Federated>,
}

impl Followed {
    /// The identity in force; what [`Followed::changed`] waits to change.
    pub fn current(&mut self) -> Snapshot {
        Snapshot {
            svid: self.svid.borrow_and_update().clone(),
            bundle: self.bundle.borrow_and_update().clone(),
            federated: self.federated.borrow_and_update().clone(),
        }
    }

    /// Waits until any part changes; `false` once the source is gone.
    pub async fn changed(&mut self) -> bool {
        tokio::select! {
            r = self.svid.changed() => r.is_ok(),
            r = self.bundle.changed() => r.is_ok(),
            r = self.federated.changed() => r.is_ok(),
        }
    }
}

/// What a source puts new SVIDs and bundles in force through.
#[derive(Clone)]
pub struct Publisher {
    mesh: MeshIdentity,
    svid: Arc<watch::Sender<Arc<Svid>>>,
    bundle: Arc<watch::Sender<Arc<TrustBundle>>>,
    federated: Arc<watch::Sender<Arc<Federated>>>,
}

impl Publisher {
    /// Puts `first` in force.
    pub fn new(first: Issued) -> Result<(Self, Identity), IdentityError> {
        let mesh = MeshIdentity::new(&first.svid, first.bundle.clone())?;
        if !first.federated.is_empty() {
            mesh.bundle.swap_federated(first.federated.clone());
        }
        report_expiry(&first.svid);
        report_roots(&first.bundle);
        let id = first.svid.spiffe_id().clone();
        let (svid_tx, svid) = watch::channel(Arc::new(first.svid));
        let (bundle_tx, bundle) = watch::channel(Arc::new(first.bundle));
        let (federated_tx, federated) = watch::channel(Arc::new(first.federated));
        let identity = Identity {
            mesh: mesh.clone(),
            id,
            svid,
            bundle,
            federated,
            jwt: None,
        };
        let publisher = Self {
            mesh,
            svid: Arc::new(svid_tx),
            bundle: Arc::new(bundle_tx),
            federated: Arc::new(federated_tx),
        };
        Ok((publisher, identity))
    }

    /// The identity in force (what a renewal authenticates with).
    pub fn current(&self) -> &MeshIdentity {
        &self.mesh
    }

    /// Puts a new SVID in force; refused (and the current one kept) if its key does not
    /// belong to its certificate.
    pub fn svid(&self, svid: Svid) -> Result<(), IdentityError> {
        self.mesh.svid.swap(&svid)?;
        report_expiry(&svid);
        self.svid.send_replace(Arc::new(svid));
        Ok(())
    }

    /// Puts a new trust bundle in force.
    pub fn bundle(&self, bundle: TrustBundle) {
        report_roots(&bundle);
        self.mesh.bundle.swap(bundle.clone());
        self.bundle.send_replace(Arc::new(bundle));
    }

    /// Puts a new set of federated bundles in force (only if it differs).
    pub fn federated(&self, federated: Federated) {
        self.federated.send_if_modified(|current| {
            let same = current.len() == federated.len()
                && current
                    .iter()
                    .zip(&federated)
                    .all(|((a, x), (b, y))| a == b && x.roots().eq(y.roots()));
            if !same {
                self.mesh.bundle.swap_federated(federated.clone());
                *current = Arc::new(federated);
            }
            !same
        });
    }
}

/// Gets a source's first identity, then follows it in a task of its own.
pub async fn start<S: Source>(source: S) -> Result<(Identity, Option<Workload>), IdentityError> {
    let source = Arc::new(source);
    let mut first = source.first().await?;
    let workload = first.workload.take();
    let (publisher, identity) = Publisher::new(first)?;
    tokio::spawn(source.follow(publisher));
    Ok((identity, workload))
}

/// Reports what is wrong (or soon will be) with a bundle's roots: one WARN each, and
/// `ward_bundle_root_warnings` holds how many the bundle in force has.
pub fn report_roots(bundle: &TrustBundle) {
    let warnings = bundle.root_warnings(SystemTime::now());
    for w in &warnings {
        tracing::warn!(target: "ward::bundle", "{w}");
    }
    gauge!("ward_bundle_root_warnings").set(warnings.len() as f64);
}

/// Sets `ward_cert_issued_timestamp_seconds` and `ward_cert_expiry_timestamp_seconds` from
/// the SVID in force.
fn report_expiry(svid: &Svid) {
    if let Ok(info) = svid.leaf_info() {
        crate::metrics::cert_validity(info.not_before, info.not_after);
    }
}
