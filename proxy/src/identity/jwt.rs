//! JWT-SVIDs as an identity source provides them (a SPIRE agent does; files and the ward
//! control plane do not): something that signs them for this workload, and the JWT bundles
//! (each trust domain's JWKS) to check them with.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

/// JWT bundles: each trust domain's JWKS document, by `spiffe://<trust domain>`.
pub type JwtBundles = BTreeMap<String, Vec<u8>>;

/// A JWT-SVID being fetched: the compact JWS, or the status to give the app.
pub type Fetched = Pin<Box<dyn Future<Output = Result<String, tonic::Status>> + Send>>;

/// Something that signs JWT-SVIDs for this workload's identity.
pub trait Issue: Send + Sync {
    /// A JWT-SVID (compact JWS) of `own` (the identity in force) for `audience`.
    fn fetch(&self, own: &ward_certs::SpiffeId, audience: Vec<String>) -> Fetched;
}

/// An identity source's JWT side.
#[derive(Clone)]
pub struct JwtSource {
    pub issuer: Arc<dyn Issue>,
    pub bundles: watch::Receiver<Arc<JwtBundles>>,
}
