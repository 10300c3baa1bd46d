//! The injector's admission webhook: `POST /inject` with an AdmissionReview of a Pod,
//! answered with a JSON patch from [`crate::inject::inject`] (the same function as `ward
//! inject`), or a denial that says why. Served over TLS with a certificate the mesh CA
//! signs for the webhook Service's DNS names, renewed at half-life; the CA's roots are
//! patched into the MutatingWebhookConfiguration's caBundle at start and at each renewal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use ward_certs::ca::CertificateAuthority;
use ward_runtime::Drain;
use ward_runtime::accept::Accept;

use crate::inject::{Injected, Injector, inject};
use crate::install::names::{CONTROL_PLANE, WEBHOOK_CONFIGURATION, WEBHOOK_PATH};

/// The largest AdmissionReview read (the API server's own request limit is 3 MiB).
const MAX_BODY: usize = 6 * 1024 * 1024;
/// Lifetime of the webhook's serving certificate; renewed at half of it.
const CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where the webhook's certificate comes from and what names it carries.
pub struct WebhookTls {
    /// The control plane's data directory (the CA files).
    pub data_dir: PathBuf,
    /// The DNS names (and IPs) the API server reaches the webhook by.
    pub names: Vec<String>,
}

impl WebhookTls {
    /// The Service's names in `namespace`, and `extra` (e.g. `127.0.0.1` for a webhook
    /// configured by URL outside a cluster).
    pub fn new(data_dir: PathBuf, namespace: &str, extra: &[String]) -> Self {
        let mut names = vec![
            format!("{CONTROL_PLANE}.{namespace}.svc"),
            format!("{CONTROL_PLANE}.{namespace}.svc.cluster.local"),
        ];
        names.extend(extra.iter().cloned());
        Self { data_dir, names }
    }

    fn issue(&self) -> anyhow::Result<(Arc<CertifiedKey>, Vec<u8>)> {
        let ca = CertificateAuthority::load(&self.data_dir).context("loading the CA")?;
        let (chain, key) = ca
            .issue_server(&self.names, CERT_TTL, SystemTime::now())
            .context("signing the webhook certificate")?;
        let key =
            rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).context("the webhook key")?;
        let bundle = std::fs::read(self.data_dir.join(ward_certs::ca::BUNDLE_FILE))
            .context("reading the trust bundle")?;
        Ok((Arc::new(CertifiedKey::new(chain, key)), bundle))
    }
}

/// The certificate in use, swapped at each renewal.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Serves the webhook on `listener` until the drain begins.
pub async fn serve(
    listener: TcpListener,
    tls: WebhookTls,
    injector: Injector,
    client: kube::Client,
    drain: Drain,
) -> anyhow::Result<()> {
    let (certified, bundle) = tls.issue()?;
    patch_ca_bundle(&client, &bundle).await;
    let current = Arc::new(Current(ArcSwap::new(certified)));
    tokio::spawn(renew(tls, current.clone(), client, drain.clone()));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(current);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let injector = Arc::new(injector);
    Accept::new("webhook")
        .serve(listener, drain, move |tcp, _| {
            let (acceptor, injector) = (acceptor.clone(), injector.clone());
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let injector = injector.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req, &injector).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            }
        })
        .await;
    Ok(())
}

async fn renew(tls: WebhookTls, current: Arc<Current>, client: kube::Client, drain: Drain) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CERT_TTL / 2) => {}
            () = drain.signaled() => return,
        }
        match tls.issue() {
            Ok((certified, bundle)) => {
                current.0.store(certified);
                patch_ca_bundle(&client, &bundle).await;
                tracing::info!("renewed the webhook certificate");
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "webhook certificate renewal failed; serving the current one")
            }
        }
    }
}

/// Puts the mesh's roots in every webhook of the configuration (a failure is logged: the
/// configuration may not be installed yet, and the API server then calls nothing).
async fn patch_ca_bundle(client: &kube::Client, bundle: &[u8]) {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let result = async {
        let current = api.get(WEBHOOK_CONFIGURATION).await?;
        let count = current.webhooks.map_or(0, |w| w.len());
        let encoded = k8s_openapi::ByteString(bundle.to_vec());
        let ops: Vec<serde_json::Value> = (0..count)
            .map(|i| serde_json::json!({
                "op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded,
            }))
            .collect();
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(kube::Error::SerdeError)?;
        api.patch(WEBHOOK_CONFIGURATION, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .map(drop)
    }
    .await;
    match result {
        Ok(()) => tracing::info!(
            configuration = WEBHOOK_CONFIGURATION,
            "webhook caBundle set"
        ),
        Err(e) => {
            tracing::warn!(configuration = WEBHOOK_CONFIGURATION, error = %e, "cannot set the webhook caBundle")
        }
    }
}

async fn handle(req: Request<hyper::body::Incoming>, injector: &Injector) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::POST || req.uri().path() != WEBHOOK_PATH {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "too large\n"),
    };
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("not an AdmissionReview: {e}\n"),
            );
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("not an AdmissionReview: {e}\n"),
            );
        }
    };
    let response = admit(&request, injector);
    match serde_json::to_vec(&response.into_review()) {
        Ok(json) => Response::builder()
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "error\n")),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "error\n"),
    }
}

/// The answer to one admission request.
fn admit(request: &AdmissionRequest<Pod>, injector: &Injector) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(pod) = &request.object else {
        return response;
    };
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    match inject(pod, injector) {
        Ok(Injected::Pod(injected)) => {
            let (Ok(before), Ok(after)) =
                (serde_json::to_value(pod), serde_json::to_value(&injected))
            else {
                return response.deny("ward: cannot serialize the pod");
            };
            match response
                .clone()
                .with_patch(json_patch::diff(&before, &after))
            {
                Ok(patched) => {
                    tracing::info!(namespace = request.namespace.as_deref().unwrap_or(""), pod = %name, "injected the sidecar");
                    patched
                }
                Err(e) => response.deny(format!("ward: {e}")),
            }
        }
        Ok(Injected::Skipped(why)) => {
            tracing::debug!(pod = %name, why, "not injected");
            response
        }
        Err(e) => {
            tracing::info!(namespace = request.namespace.as_deref().unwrap_or(""), pod = %name, reason = %e, "refused a pod");
            response.deny(format!("ward: {e}"))
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}
