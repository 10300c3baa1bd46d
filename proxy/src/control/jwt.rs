//! JWT-SVIDs from the ward control plane, for the app's Workload API: each fetch is a
//! `JwtSvids.Sign` over the proxy's mTLS channel (the control plane signs for the identity
//! the SVID proves), and the JWT bundle is followed by asking `JwtSvids.Bundle` every
//! [`BUNDLE_EVERY`] (and taken from every signing answer).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;
use ward_api::v1;
use ward_certs::{MeshIdentity, TrustDomain};

use super::ControlPlane;
use crate::identity::jwt::{Fetched, Issue, JwtBundles, JwtSource};

/// How often the JWT bundle is asked for.
pub const BUNDLE_EVERY: Duration = Duration::from_secs(30);

struct Signer {
    client: ControlPlane,
    identity: MeshIdentity,
    key: String,
    bundles: Arc<watch::Sender<Arc<JwtBundles>>>,
}

impl Issue for Signer {
    fn fetch(&self, _own: &ward_certs::SpiffeId, audience: Vec<String>) -> Fetched {
        // The control plane signs for the identity the mTLS SVID proves: this one's.
        let channel = self.client.mtls_channel(&self.identity);
        let (key, bundles) = (self.key.clone(), self.bundles.clone());
        Box::pin(async move {
            let mut client = v1::jwt_svids_client::JwtSvidsClient::new(channel?);
            let answer = client
                .sign(v1::JwtSvidRequest { audience })
                .await?
                .into_inner();
            publish(&bundles, &key, answer.jwks);
            Ok(answer.token)
        })
    }
}

/// Puts `jwks` in force as the trust domain's JWT bundle, if it changed.
fn publish(bundles: &watch::Sender<Arc<JwtBundles>>, key: &str, jwks: Vec<u8>) {
    bundles.send_if_modified(|current| {
        if current.get(key) == Some(&jwks) {
            return false;
        }
        let mut next = (**current).clone();
        next.insert(key.to_owned(), jwks);
        *current = Arc::new(next);
        true
    });
}

/// The JWT side of a control-plane identity; follows the JWT bundle from now on.
pub fn source(client: ControlPlane, identity: MeshIdentity, td: &TrustDomain) -> JwtSource {
    let key = format!("spiffe://{td}");
    let (tx, rx) = watch::channel(Arc::new(JwtBundles::new()));
    let bundles = Arc::new(tx);
    tokio::spawn(follow_bundle(
        client.clone(),
        identity.clone(),
        key.clone(),
        bundles.clone(),
    ));
    JwtSource {
        issuer: Arc::new(Signer {
            client,
            identity,
            key,
            bundles,
        }),
        bundles: rx,
    }
}

async fn follow_bundle(
    client: ControlPlane,
    identity: MeshIdentity,
    key: String,
    bundles: Arc<watch::Sender<Arc<JwtBundles>>>,
) {
    loop {
        let asked: Result<Vec<u8>, Status> = async {
            let channel = client.mtls_channel(&identity)?;
            let mut grpc = v1::jwt_svids_client::JwtSvidsClient::new(channel);
            Ok(grpc
                .bundle(v1::JwtBundleRequest {})
                .await?
                .into_inner()
                .jwks)
        }
        .await;
        match asked {
            Ok(jwks) => publish(&bundles, &key, jwks),
            Err(status) => tracing::debug!(code = ?status.code(), message = status.message(),
                "JWT bundle not fetched; the one held stays"),
        }
        tokio::time::sleep(BUNDLE_EVERY).await;
    }
}
