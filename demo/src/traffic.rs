//! The demo's light traffic: each call is sent the way the calling workload's app would send
//! it — in plaintext to that workload's own sidecar outbound listener — and its outcome is
//! compared with what the demo policy says.

use std::net::SocketAddr;
use std::time::Duration;

use crate::pb;
use crate::pb::ledger_client::LedgerClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// How long one call may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the demo policy says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
    /// Allowed until the caller's rate limit runs out, then refused with 429.
    Limit,
}

impl Expect {
    pub fn label(self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
            Expect::Limit => "limit",
        }
    }
}

/// What happened to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The app answered (HTTP 2xx, gRPC OK).
    Allowed(String),
    /// The mesh refused it (HTTP 403, gRPC PERMISSION_DENIED; at the gateway also 401).
    Denied(String),
    /// The gateway's rate limit refused it (429).
    Limited(String),
    /// Anything else: an error status, a reset, a timeout.
    Failed(String),
}

impl Outcome {
    pub fn status(&self) -> &str {
        match self {
            Outcome::Allowed(s) | Outcome::Denied(s) | Outcome::Limited(s) | Outcome::Failed(s) => {
                s
            }
        }
    }

    pub fn matches(&self, expect: Expect) -> bool {
        matches!(
            (self, expect),
            (Outcome::Allowed(_), Expect::Allow)
                | (Outcome::Denied(_), Expect::Deny)
                | (Outcome::Allowed(_) | Outcome::Limited(_), Expect::Limit)
        )
    }
}

/// The gRPC methods of `ledger.v1.Ledger` the demo calls.
#[derive(Debug, Clone, Copy)]
pub enum LedgerCall {
    GetBalance,
    Post,
}

enum Kind {
    Http {
        method: Method,
        via: SocketAddr,
    },
    Grpc {
        client: LedgerClient<Channel>,
        call: LedgerCall,
    },
    /// Through the gateway over public TLS, as a customer: `GET https://HOST/accounts/ID`
    /// with their token, `calls` times a round.
    Edge {
        client: Box<HttpsClient>,
        url: String,
        token: Option<String>,
        calls: u32,
    },
}

/// One kind of call on one edge, and what has happened to it so far.
pub struct Scenario {
    pub source: &'static str,
    pub destination: &'static str,
    pub call: String,
    pub expect: Expect,
    kind: Kind,
    pub allowed: u64,
    pub denied: u64,
    pub limited: u64,
    pub failed: u64,
    /// Calls whose outcome differed from `expect`.
    pub unexpected: u64,
    pub last: Option<Outcome>,
}

impl Scenario {
    /// An HTTP call `method /accounts/{id}` sent through the sidecar outbound at `via`.
    pub fn http(
        source: &'static str,
        destination: &'static str,
        method: Method,
        via: SocketAddr,
        expect: Expect,
    ) -> Self {
        Self::new(
            source,
            destination,
            format!("{method} /accounts/{{id}}"),
            expect,
            Kind::Http { method, via },
        )
    }

    /// A `ledger.v1.Ledger` call sent through the sidecar outbound at `via`.
    pub fn grpc(
        source: &'static str,
        destination: &'static str,
        call: LedgerCall,
        via: SocketAddr,
        expect: Expect,
    ) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{via}"))
            .map_err(|e| anyhow::anyhow!("gRPC endpoint for {via}: {e}"))?
            .connect_timeout(CALL_TIMEOUT)
            .connect_lazy();
        let client = LedgerClient::new(channel);
        let name = match call {
            LedgerCall::GetBalance => "GetBalance",
            LedgerCall::Post => "Post",
        };
        Ok(Self::new(
            source,
            destination,
            format!("ledger.v1.Ledger/{name}"),
            expect,
            Kind::Grpc { client, call },
        ))
    }

    fn new(
        source: &'static str,
        destination: &'static str,
        call: String,
        expect: Expect,
        kind: Kind,
    ) -> Self {
        Self {
            source,
            destination,
            call,
            expect,
            kind,
            allowed: 0,
            denied: 0,
            limited: 0,
            failed: 0,
            unexpected: 0,
            last: None,
        }
    }

    pub fn total(&self) -> u64 {
        self.allowed + self.denied + self.limited + self.failed
    }

    /// A customer's call through the gateway: `GET {base}/accounts/{account}`, `calls`
    /// times a round, with `token` if there is one.
    pub fn edge(
        who: &'static str,
        call: String,
        url: String,
        token: Option<String>,
        calls: u32,
        expect: Expect,
        client: HttpsClient,
    ) -> Self {
        Self::new(
            who,
            "web",
            call,
            expect,
            Kind::Edge {
                client: Box::new(client),
                url,
                token,
                calls,
            },
        )
    }

    /// Whether every call went as the policy says (and a limit was seen when expected).
    pub fn as_expected(&self) -> bool {
        self.unexpected == 0 && (self.expect != Expect::Limit || self.limited > 0)
    }

    /// Makes one round of calls for `account` and records their outcomes.
    pub async fn run(&mut self, http: &HttpClient, account: u32) {
        let calls = match &self.kind {
            Kind::Edge { calls, .. } => *calls,
            _ => 1,
        };
        for _ in 0..calls {
            self.call(http, account).await;
        }
    }

    async fn call(&mut self, http: &HttpClient, account: u32) {
        let outcome = match &mut self.kind {
            Kind::Http { method, via } => {
                http_call(
                    http,
                    method.clone(),
                    &format!("http://{via}/accounts/{account}"),
                )
                .await
            }
            Kind::Grpc { client, call } => grpc_call(client, *call, account).await,
            Kind::Edge {
                client, url, token, ..
            } => edge_call(client, url, token.as_deref()).await,
        };
        match &outcome {
            Outcome::Allowed(_) => self.allowed += 1,
            Outcome::Denied(_) => self.denied += 1,
            Outcome::Limited(_) => self.limited += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
        if !outcome.matches(self.expect) {
            self.unexpected += 1;
            tracing::warn!(
                edge = %format!("{} -> {}", self.source, self.destination),
                call = %self.call,
                expected = self.expect.label(),
                outcome = %outcome.status(),
                "call did not have the outcome the demo policy gives it"
            );
        }
        self.last = Some(outcome);
    }
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CALL_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn http_call(client: &HttpClient, method: Method, uri: &str) -> Outcome {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Empty::new());
    status_of(client, request)
        .await
        .map_or_else(|failed| failed, classify_http)
}

/// Sends `request` and waits for its status within the call timeout, reading the body so
/// the connection goes back to the pool; what went wrong otherwise, as a failed outcome.
async fn status_of<C>(
    client: &Client<C, Empty<Bytes>>,
    request: Result<Request<Empty<Bytes>>, hyper::http::Error>,
) -> Result<StatusCode, Outcome>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = request.map_err(|e| Outcome::Failed(format!("bad request: {e}")))?;
    let call = async {
        let response = client.request(request).await?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(Outcome::Failed(format!("error: {e}"))),
        Err(_) => Err(Outcome::Failed("timeout".into())),
    }
}

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector<ToGateway>>, Empty<Bytes>>;

/// A resolver that sends every name to the gateway's address: the demo's host names
/// resolve nowhere else (the port is the URL's).
#[derive(Clone)]
pub struct ToGateway(SocketAddr);

impl tower::Service<Name> for ToGateway {
    type Response = std::iter::Once<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(std::iter::once(self.0)))
    }
}

/// An HTTPS client that trusts the demo's public CA (PEM) and connects every name to
/// `gateway`.
pub fn https_client(ca_pem: &[u8], gateway: SocketAddr) -> anyhow::Result<HttpsClient> {
    let mut roots = rustls::RootCertStore::empty();
    for der in pem::parse_many(ca_pem).map_err(|e| anyhow::anyhow!("public CA: {e}"))? {
        roots
            .add(der.contents().to_vec().into())
            .map_err(|e| anyhow::anyhow!("public CA: {e}"))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut resolver = HttpConnector::new_with_resolver(ToGateway(gateway));
    resolver.set_connect_timeout(Some(CALL_TIMEOUT));
    resolver.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(resolver);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn edge_call(client: &HttpsClient, url: &str, token: Option<&str>) -> Outcome {
    let mut request = Request::builder().method(Method::GET).uri(url);
    if let Some(t) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match status_of(client, request.body(Empty::new())).await {
        Ok(StatusCode::UNAUTHORIZED) => Outcome::Denied("401 Unauthorized".into()),
        Ok(StatusCode::TOO_MANY_REQUESTS) => Outcome::Limited("429 Too Many Requests".into()),
        Ok(status) => classify_http(status),
        Err(failed) => failed,
    }
}

fn classify_http(status: StatusCode) -> Outcome {
    let text = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned();
    if status.is_success() {
        Outcome::Allowed(text)
    } else if status == StatusCode::FORBIDDEN {
        Outcome::Denied(text)
    } else {
        Outcome::Failed(text)
    }
}

async fn grpc_call(client: &mut LedgerClient<Channel>, call: LedgerCall, account: u32) -> Outcome {
    let account = format!("{account}");
    let result = match call {
        LedgerCall::GetBalance => {
            let mut request = tonic::Request::new(pb::GetBalanceRequest { account });
            request.set_timeout(CALL_TIMEOUT);
            client.get_balance(request).await.map(|_| ())
        }
        LedgerCall::Post => {
            let mut request = tonic::Request::new(pb::PostRequest {
                entry: Some(pb::Entry {
                    from: account,
                    to: "000000000001".into(),
                    cents: 100,
                }),
            });
            request.set_timeout(CALL_TIMEOUT);
            client.post(request).await.map(|_| ())
        }
    };
    classify_grpc(result.err().map_or(Code::Ok, |s| s.code()))
}

fn classify_grpc(code: Code) -> Outcome {
    let text = format!("grpc {}", code_name(code));
    match code {
        Code::Ok => Outcome::Allowed(text),
        Code::PermissionDenied => Outcome::Denied(text),
        _ => Outcome::Failed(text),
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::Unavailable => "UNAVAILABLE",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        _ => "ERROR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_judged_against_the_policy() {
        assert_eq!(
            classify_http(StatusCode::OK),
            Outcome::Allowed("200 OK".into())
        );
        assert!(classify_http(StatusCode::OK).matches(Expect::Allow));
        assert!(classify_http(StatusCode::FORBIDDEN).matches(Expect::Deny));
        assert!(!classify_http(StatusCode::OK).matches(Expect::Deny));
        // An error is never the expected outcome: a 502 is not a denial.
        assert!(!classify_http(StatusCode::BAD_GATEWAY).matches(Expect::Deny));
        assert!(!classify_http(StatusCode::BAD_GATEWAY).matches(Expect::Allow));
        assert!(classify_grpc(Code::PermissionDenied).matches(Expect::Deny));
        assert!(!classify_grpc(Code::Unavailable).matches(Expect::Deny));
        assert_eq!(
            classify_grpc(Code::Ok).status(),
            "grpc OK",
            "the table shows the gRPC status by name"
        );
    }
}
