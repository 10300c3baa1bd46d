//! Envoy's secret discovery service (SDS) on the Workload API socket, so that an Envoy
//! beside a ward identity (a mixed fleet) needs no certificate files: it asks for secrets
//! by name and gets them inline, again whenever the identity rotates.
//!
//! Names, as SPIRE's agent serves them (so Envoy configurations carry over): `default` or
//! this workload's SPIFFE ID → its TLS certificate (chain and key); `ROOTCA` or
//! `spiffe://<our trust domain>` → our roots as a validation context;
//! `spiffe://<federated domain>` → that domain's roots; `ALL` → every root we trust. A name
//! we do not have is left out of the response (Envoy keeps waiting for it) and logged.
//!
//! Callers are attested like Workload API callers (Envoy does not send the Workload API
//! header, which is not required here). State of the world over `StreamSecrets`: each
//! response carries every secret the stream asked for, with a version that changes with
//! the identity; an ACK changes nothing, a NACK is logged.

use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use ward_api::sds::secret::Type;
use ward_api::sds::secret_discovery_service_server::SecretDiscoveryService;
use ward_api::sds::{
    CertificateValidationContext, DataSource, DiscoveryRequest, DiscoveryResponse, SECRET_TYPE,
    Secret, TlsCertificate, data_source,
};
use ward_certs::{Svid, TrustBundle};

use super::{Service, Streamed};
use crate::identity::{Federated, Snapshot};

/// Nonces of this process's responses.
static NONCE: AtomicU64 = AtomicU64::new(0);

/// The secrets named in `names` that this identity has; the names it does not have.
pub fn secrets(
    names: &[String],
    svid: &Svid,
    bundle: &TrustBundle,
    federated: &Federated,
) -> (Vec<Secret>, Vec<String>) {
    let own_td = format!("spiffe://{}", bundle.trust_domain());
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        let secret = match name.as_str() {
            "default" => Some(certificate(name, svid)),
            n if n == svid.spiffe_id().to_string() => Some(certificate(name, svid)),
            "ROOTCA" => Some(roots(name, [bundle])),
            n if n == own_td => Some(roots(name, [bundle])),
            "ALL" => Some(roots(
                name,
                std::iter::once(bundle).chain(federated.values()),
            )),
            n => n
                .strip_prefix("spiffe://")
                .and_then(|td| federated.get(td))
                .map(|b| roots(name, [b])),
        };
        match secret {
            Some(secret) => found.push(secret),
            None => missing.push(name.clone()),
        }
    }
    (found, missing)
}

fn certificate(name: &str, svid: &Svid) -> Secret {
    let chain = ward_certs::pem::certs_to_pem(svid.chain());
    Secret {
        name: name.to_owned(),
        r#type: Some(Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain)),
            private_key: Some(inline(svid.key_pem())),
        })),
    }
}

fn roots<'a>(name: &str, bundles: impl IntoIterator<Item = &'a TrustBundle>) -> Secret {
    let certs: Vec<_> = bundles
        .into_iter()
        .flat_map(|b| b.roots().cloned())
        .collect();
    Secret {
        name: name.to_owned(),
        r#type: Some(Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(ward_certs::pem::certs_to_pem(&certs))),
        })),
    }
}

fn inline(pem: String) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.into_bytes())),
    }
}

/// One response with `secrets` at `version`.
fn response(secrets: Vec<Secret>, version: &str) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.to_owned(),
        resources: secrets
            .into_iter()
            .map(|s| prost_types::Any {
                type_url: SECRET_TYPE.to_owned(),
                value: s.encode_to_vec(),
            })
            .collect(),
        type_url: SECRET_TYPE.to_owned(),
        nonce: NONCE.fetch_add(1, Ordering::Relaxed).to_string(),
    }
}

impl Service {
    /// The identity in force as SDS answers it: its secrets for `names`, and the version
    /// (the SVID's serial and the bundles' roots, hashed).
    fn answer(now: &Snapshot, names: &[String]) -> (DiscoveryResponse, Vec<String>) {
        let (found, missing) = secrets(names, &now.svid, &now.bundle, &now.federated);
        let version = version(&now.svid, &now.bundle, &now.federated);
        (response(found, &version), missing)
    }

    fn attest_sds<T>(&self, method: &'static str, request: &Request<T>) -> Result<(), Status> {
        self.attest(method, request).map(|_| ())
    }
}

/// A version that changes whenever the SVID or any root does.
fn version(svid: &Svid, bundle: &TrustBundle, federated: &Federated) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    svid.leaf().as_ref().hash(&mut hasher);
    for b in std::iter::once(bundle).chain(federated.values()) {
        for root in b.roots() {
            root.as_ref().hash(&mut hasher);
        }
    }
    format!("{:016x}", hasher.finish())
}

#[tonic::async_trait]
impl SecretDiscoveryService for Service {
    type StreamSecretsStream = Streamed<DiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        self.attest_sds("StreamSecrets", &request)?;
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let service = self.clone();
        tokio::spawn(async move {
            let mut identity = service.identity.follow();
            let drain = service.drain.clone();
            let mut names: Option<Vec<String>> = None;
            // The version last sent, and for which names.
            let mut sent = (String::new(), Vec::new());
            loop {
                let changed = tokio::select! {
                    next = requests.next() => match next {
                        Some(Ok(req)) => {
                            if let Some(error) = &req.error_detail {
                                tracing::warn!(target: "ward::sds", names = ?req.resource_names,
                                    error = %error.message, "Envoy refused the secrets (NACK)");
                            }
                            // An ACK of what was sent, for the same names, needs no answer.
                            let same = names.as_deref() == Some(&req.resource_names[..]);
                            names = Some(req.resource_names);
                            !(same && req.version_info == sent.0)
                        }
                        _ => return,
                    },
                    changed = identity.changed() => if changed { true } else { return },
                    () = drain.signaled() => return,
                };
                let Some(names) = names.as_ref().filter(|_| changed) else {
                    continue;
                };
                let (response, missing) = Service::answer(&identity.current(), names);
                if !missing.is_empty() {
                    tracing::warn!(target: "ward::sds", ?missing,
                        "Envoy asked for secrets this identity does not have");
                }
                // The same secrets at the same version for the same names were sent already.
                if response.version_info == sent.0 && *names == sent.1 {
                    continue;
                }
                sent = (response.version_info.clone(), names.clone());
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        self.attest_sds("FetchSecrets", &request)?;
        let now = self.identity.follow().current();
        let (response, _) = Service::answer(&now, &request.into_inner().resource_names);
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use ward_certs::ca::{CaOptions, CertificateAuthority};
    use ward_certs::{SpiffeId, TrustDomain};

    use super::*;

    fn ca(td: &str) -> CertificateAuthority {
        let td = TrustDomain::new(td).unwrap();
        CertificateAuthority::create(td, &CaOptions::default(), SystemTime::now()).unwrap()
    }

    fn pem_of(secret: &Secret) -> String {
        let source = match &secret.r#type {
            Some(Type::TlsCertificate(c)) => c.certificate_chain.as_ref(),
            Some(Type::ValidationContext(v)) => v.trusted_ca.as_ref(),
            None => None,
        };
        match source.and_then(|s| s.specifier.as_ref()) {
            Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into(),
            _ => String::new(),
        }
    }

    #[test]
    fn names_map_to_the_certificate_and_each_trust_domains_roots() {
        let (ours, partner) = (ca("example.org"), ca("partner.org"));
        let id = SpiffeId::new("spiffe://example.org/ns/shop/sa/envoy").unwrap();
        let svid = ours
            .issue(&id, Duration::from_secs(600), SystemTime::now())
            .unwrap();
        let bundle = ours.bundle().unwrap();
        let mut federated = Federated::new();
        federated.insert("partner.org".into(), partner.bundle().unwrap());
        const KNOWN: [&str; 6] = [
            "default",
            "spiffe://example.org/ns/shop/sa/envoy",
            "ROOTCA",
            "spiffe://example.org",
            "spiffe://partner.org",
            "ALL",
        ];
        let unknown = [
            "spiffe://example.org/ns/shop/sa/other",
            "spiffe://stranger.org",
        ];
        let names: Vec<String> = KNOWN
            .iter()
            .chain(&unknown)
            .map(|n| n.to_string())
            .collect();
        let (found, missing) = secrets(&names, &svid, &bundle, &federated);
        assert_eq!(missing, unknown);
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, KNOWN);
        // The certificate carries the chain and the key; roots carry no key.
        let Some(Type::TlsCertificate(cert)) = &found[0].r#type else {
            panic!("default is a TLS certificate")
        };
        assert!(pem_of(&found[0]).contains("BEGIN CERTIFICATE"));
        assert!(matches!(
            cert.private_key.as_ref().and_then(|k| k.specifier.as_ref()),
            Some(data_source::Specifier::InlineBytes(k)) if k.starts_with(b"-----BEGIN PRIVATE KEY")
        ));
        let ours_pem = ward_certs::pem::certs_to_pem(bundle.roots());
        let partner_pem = ward_certs::pem::certs_to_pem(federated["partner.org"].roots());
        assert_eq!(pem_of(&found[2]), ours_pem);
        assert_eq!(pem_of(&found[3]), ours_pem);
        assert_eq!(pem_of(&found[4]), partner_pem);
        assert_eq!(pem_of(&found[5]), format!("{ours_pem}{partner_pem}"));
        for roots in &found[2..] {
            assert!(!pem_of(roots).contains("PRIVATE KEY"));
        }
        // The version follows the SVID.
        let renewed = ours
            .issue(&id, Duration::from_secs(600), SystemTime::now())
            .unwrap();
        assert_ne!(
            version(&svid, &bundle, &federated),
            version(&renewed, &bundle, &federated)
        );
    }
}
