//! The gateway's public TLS: TLS 1.3 and 1.2 with rustls's suites (every one AEAD with
//! ECDHE: AES-GCM and ChaCha20-Poly1305; no CBC, no RSA key exchange), ALPN `h2` and
//! `http/1.1`, server certificates picked by SNI among each certificate's DNS names (the
//! first certificate answers a client that names no host, or one none is for), and re-read
//! when their files change — a cert-manager Secret mount updates in place — with the last
//! good set kept if the new files do not load. Client certificates are asked for, never
//! required, when `client_ca` is set (for certificate-bound tokens, RFC 8705).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use ward_runtime::Drain;

use super::config::{CertFiles, PublicTls};
use crate::transport::alpn::{ALPN_H2, ALPN_HTTP1};

/// Why the public TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PublicTlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("tls: {0}")]
    Config(String),
}

/// One certificate and the host names it serves.
#[derive(Debug)]
struct Served {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// The certificates in force, swapped whole on reload.
#[derive(Debug)]
pub struct Certificates {
    files: Vec<CertFiles>,
    current: ArcSwap<Vec<Served>>,
}

impl Certificates {
    /// Reads every certificate now; any that does not load stops the start.
    pub fn load(files: &[CertFiles]) -> Result<Arc<Self>, PublicTlsError> {
        let served = read_all(files)?;
        Ok(Arc::new(Self {
            files: files.to_vec(),
            current: ArcSwap::from_pointee(served),
        }))
    }

    /// Re-reads the files when they change, until the drain; a set that does not load is
    /// refused (logged, counted) and the last good one stays.
    pub async fn follow(self: Arc<Self>, drain: Drain) {
        let files = self.files.clone();
        let (fp_files, load_files) = (files.clone(), files);
        let this = self.clone();
        ward_runtime::poll::poll_changes(
            std::time::Duration::from_secs(1),
            Some(fingerprint(&self.files)),
            move || fingerprint(&fp_files),
            move || read_all(&load_files),
            move |loaded| match loaded {
                Ok(served) => {
                    let names: Vec<String> = served.iter().flat_map(|s| s.names.clone()).collect();
                    this.current.store(Arc::new(served));
                    metrics::counter!("ward_gateway_certificate_reloads_total", "result" => "ok")
                        .increment(1);
                    tracing::info!(?names, "public certificates reloaded");
                }
                Err(e) => {
                    metrics::counter!("ward_gateway_certificate_reloads_total", "result" => "error")
                        .increment(1);
                    tracing::error!(error = %e, "public certificates refused; the last good ones stay");
                }
            },
            async move { drain.signaled().await },
        )
        .await
    }
}

impl Certificates {
    /// Whether the certificate served to a client that named `sni` is also for `host`
    /// (both lowercase): a request for `host` may then come on that connection.
    pub fn covers(&self, sni: &str, host: &str) -> bool {
        let served = self.current.load();
        chosen(&served, Some(sni)).is_some_and(|s| s.names.iter().any(|n| name_matches(n, host)))
    }
}

/// The certificate for a client that named `host`: the first one for that name, else the
/// first one.
fn chosen<'s>(served: &'s [Served], host: Option<&str>) -> Option<&'s Served> {
    host.and_then(|host| {
        served
            .iter()
            .find(|s| s.names.iter().any(|n| name_matches(n, host)))
    })
    .or_else(|| served.first())
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.current.load();
        let wanted = hello.server_name().map(|n| n.to_ascii_lowercase());
        chosen(&served, wanted.as_deref()).map(|s| s.key.clone())
    }
}

/// A certificate's DNS name (`*.example.com` takes exactly one label) against a host.
fn name_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    }
}

/// The files' contents, hashed: what changes when a Secret mount is updated.
fn fingerprint(files: &[CertFiles]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        std::fs::read(&f.cert).ok().hash(&mut h);
        std::fs::read(&f.key).ok().hash(&mut h);
    }
    h.finish()
}

fn read_all(files: &[CertFiles]) -> Result<Vec<Served>, PublicTlsError> {
    files.iter().map(read_one).collect()
}

fn read_one(files: &CertFiles) -> Result<Served, PublicTlsError> {
    let err = |path: &PathBuf, reason: String| PublicTlsError::File {
        path: path.clone(),
        reason,
    };
    let chain =
        ward_certs::pem::read_certs(&files.cert).map_err(|e| err(&files.cert, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(err(&files.cert, "no certificate".into()));
    };
    let key = ward_certs::pem::read_key(&files.key).map_err(|e| err(&files.key, e.to_string()))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| err(&files.key, format!("not a usable private key: {e}")))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|e| {
        err(
            &files.key,
            format!("does not match {}: {e}", files.cert.display()),
        )
    })?;
    let names = dns_names(leaf.as_ref()).map_err(|e| err(&files.cert, e))?;
    Ok(Served {
        names,
        key: Arc::new(certified),
    })
}

/// The DNS names of a certificate's subjectAltName, lower case.
fn dns_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.trim_end_matches('.').to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The server configuration for the public listener.
pub fn server_config(
    tls: &PublicTls,
    certs: Arc<Certificates>,
) -> Result<Arc<ServerConfig>, PublicTlsError> {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let builder = ServerConfig::builder_with_protocol_versions(&versions);
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = ward_certs::pem::read_certs(ca).map_err(|e| PublicTlsError::File {
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            for c in certs {
                roots.add(c).map_err(|e| PublicTlsError::File {
                    path: ca.clone(),
                    reason: format!("not a usable root: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()
                .map_err(|e| PublicTlsError::Config(format!("client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_names_take_one_label() {
        assert!(name_matches("*.example.com", "api.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("api.example.com", "api.example.com"));
        assert!(!name_matches("api.example.com", "xapi.example.com"));
    }
}
