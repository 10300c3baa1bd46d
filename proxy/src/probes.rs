//! The app's probes, run by the sidecar for the kubelet. With inbound capture, a kubelet
//! probe of the app's port would meet the sidecar's mTLS listener and fail; so the
//! injector points each HTTP, TCP and gRPC probe of an app container at the admin port
//! (`/app-health/CONTAINER/KIND`) and hands the original probe to the sidecar
//! (`app_probes`), which runs it against the app on loopback, as the kubelet would have,
//! and answers 200 or 503. Only the probes listed are run: the admin port forwards nothing
//! else. The kubelet's rules: an HTTP answer from 200 to 399 passes; a TCP probe passes
//! when the connection opens; a gRPC probe when the health service says SERVING; each
//! within the probe's timeout. An HTTPS probe, like the kubelet's, does not verify the
//! app's certificate (it proves only that the app answers).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use ward_runtime::admin::{self, Body, PrefixRoute};

/// Where the kubelet asks (the injector rewrites probes to paths under it).
pub const PREFIX: &str = "/app-health/";

/// An app's probe as the pod spec had it: one action and its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "ProbeEntry", into = "ProbeEntry")]
pub struct AppProbe {
    pub action: ProbeAction,
    /// The probe's `timeoutSeconds`.
    pub timeout: Duration,
}

/// What the probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Http(HttpProbe),
    Tcp { port: u16 },
    Grpc { port: u16, service: String },
}

/// An `app_probes` entry as written: exactly one of `http`, `tcp`, `grpc`, and `timeout`
/// in whole seconds (the probe's `timeoutSeconds`, default 1).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ProbeEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<TcpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grpc: Option<GrpcProbe>,
    #[serde(default = "one")]
    timeout: u64,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TcpProbe {
    port: u16,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct GrpcProbe {
    port: u16,
    #[serde(default)]
    service: String,
}

impl TryFrom<ProbeEntry> for AppProbe {
    type Error = String;

    fn try_from(e: ProbeEntry) -> Result<Self, String> {
        let action = match (e.http, e.tcp, e.grpc) {
            (Some(h), None, None) => ProbeAction::Http(h),
            (None, Some(t), None) => ProbeAction::Tcp { port: t.port },
            (None, None, Some(g)) => ProbeAction::Grpc {
                port: g.port,
                service: g.service,
            },
            _ => return Err("a probe has exactly one of http, tcp, grpc".into()),
        };
        if !(1..=300).contains(&e.timeout) {
            return Err("timeout must be 1 to 300 seconds".into());
        }
        Ok(Self {
            action,
            timeout: Duration::from_secs(e.timeout),
        })
    }
}

impl From<AppProbe> for ProbeEntry {
    fn from(p: AppProbe) -> Self {
        let mut entry = ProbeEntry {
            timeout: p.timeout.as_secs(),
            ..ProbeEntry::default()
        };
        match p.action {
            ProbeAction::Http(h) => entry.http = Some(h),
            ProbeAction::Tcp { port } => entry.tcp = Some(TcpProbe { port }),
            ProbeAction::Grpc { port, service } => entry.grpc = Some(GrpcProbe { port, service }),
        }
        entry
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub port: u16,
    #[serde(default = "root")]
    pub path: String,
    #[serde(default)]
    pub https: bool,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

fn root() -> String {
    "/".into()
}

/// The probes by the path the kubelet asks (`/app-health/CONTAINER/KIND`).
pub type AppProbes = BTreeMap<String, AppProbe>;

/// Why an `app_probes` entry cannot be used.
pub fn validate(probes: &AppProbes) -> Result<(), String> {
    for (path, probe) in probes {
        let rest = path
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("app_probes: {path:?} must start with {PREFIX}"))?;
        if rest.is_empty() || rest.contains(|c: char| c.is_whitespace() || c == '?') {
            return Err(format!("app_probes: {path:?} is not a probe path"));
        }
        let port = match &probe.action {
            ProbeAction::Http(h) => {
                if !h.path.starts_with('/') {
                    return Err(format!("app_probes.{path}: path must start with /"));
                }
                for (name, value) in &h.headers {
                    http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("app_probes.{path}: bad header name {name:?}"))?;
                    http::HeaderValue::from_str(value)
                        .map_err(|_| format!("app_probes.{path}: bad value for header {name}"))?;
                }
                h.port
            }
            ProbeAction::Tcp { port } | ProbeAction::Grpc { port, .. } => *port,
        };
        if port == 0 {
            return Err(format!("app_probes.{path}: port must be 1-65535"));
        }
    }
    Ok(())
}

/// The admin route that runs the probes.
pub fn route(probes: AppProbes) -> PrefixRoute {
    let probes = Arc::new(probes);
    Arc::new(move |rest| {
        let probes = probes.clone();
        Box::pin(async move {
            let Some(probe) = probes.get(&format!("{PREFIX}{rest}")) else {
                return admin::text(StatusCode::NOT_FOUND, "no such probe\n");
            };
            match tokio::time::timeout(probe.timeout, run(&probe.action)).await {
                Ok(Ok(())) => admin::text(StatusCode::OK, "ok\n"),
                Ok(Err(why)) => failed(&rest, &why),
                Err(_) => failed(&rest, "timed out"),
            }
        })
    })
}

fn failed(probe: &str, why: &str) -> http::Response<Body> {
    tracing::info!(probe, why, "app probe failed");
    admin::text(StatusCode::SERVICE_UNAVAILABLE, "probe failed\n")
}

fn app(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Runs one probe against the app on loopback.
pub async fn run(action: &ProbeAction) -> Result<(), String> {
    match action {
        ProbeAction::Tcp { port } => tokio::net::TcpStream::connect(app(*port))
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        ProbeAction::Http(probe) => http_probe(probe).await,
        ProbeAction::Grpc { port, service } => grpc(*port, service).await,
    }
}

async fn http_probe(probe: &HttpProbe) -> Result<(), String> {
    let addr = app(probe.port);
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = Request::get(probe.path.as_str())
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "ward-proxy/app-probe")
        .header(http::header::CONNECTION, "close");
    for (name, value) in &probe.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let status = if probe.https {
        let tls = tokio_rustls::TlsConnector::from(unverified_tls()?)
            .connect(
                rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
                tcp,
            )
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(tls), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

async fn send<IO>(io: IO, request: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read (and drop) the body, as the kubelet does with up to 10 KiB of it.
    let _ = response.into_body().collect().await;
    Ok(status)
}

async fn grpc(port: u16, service: &str) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app(port)))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|e| format!("{}: {}", e.code(), e.message()))?
        .into_inner();
    if answer.status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("health status {}", answer.status))
    }
}

/// TLS for an HTTPS probe: the app's certificate is not verified (the kubelet does not
/// either: the probe asks only whether the app answers), but the handshake's signatures
/// are, so a peer without the certificate's key cannot complete it.
fn unverified_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnswersOnly(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnswersOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnswersOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
