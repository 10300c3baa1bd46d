//! The X.509 messages of the Workload API, made from the identity in force.

use std::collections::HashMap;

use ward_api::workload::{X509BundlesResponse, X509svid, X509svidResponse};
use ward_certs::{Svid, TrustBundle};

use crate::identity::Federated;

/// A trust domain as the Workload API keys bundles: its SPIFFE ID, `spiffe://<name>`.
pub fn trust_domain_key(bundle: &TrustBundle) -> String {
    format!("spiffe://{}", bundle.trust_domain())
}

/// A bundle's roots as the API carries them: concatenated DER certificates.
pub fn roots_der(bundle: &TrustBundle) -> Vec<u8> {
    bundle
        .roots()
        .flat_map(|r| r.as_ref().iter().copied())
        .collect()
}

/// The SVID (chain leaf first, PKCS#8 key) with its own bundle, and the federated bundles.
pub fn svid_response(svid: &Svid, bundle: &TrustBundle, federated: &Federated) -> X509svidResponse {
    X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: svid.spiffe_id().to_string(),
            x509_svid: svid
                .chain()
                .iter()
                .flat_map(|c| c.as_ref().iter().copied())
                .collect(),
            x509_svid_key: svid.key_pkcs8().unwrap_or_else(|e| {
                tracing::error!(target: "ward::workload_api", error = %e,
                    "the SVID's key cannot be handed out as PKCS#8");
                Vec::new()
            }),
            bundle: roots_der(bundle),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: federated
            .values()
            .map(|b| (trust_domain_key(b), roots_der(b)))
            .collect(),
    }
}

/// Every trust domain's roots: the workload's own and the federated ones.
pub fn bundles_response(bundle: &TrustBundle, federated: &Federated) -> X509BundlesResponse {
    let mut bundles: HashMap<String, Vec<u8>> = federated
        .values()
        .map(|b| (trust_domain_key(b), roots_der(b)))
        .collect();
    bundles.insert(trust_domain_key(bundle), roots_der(bundle));
    X509BundlesResponse {
        crl: Vec::new(),
        bundles,
    }
}
