//! The banking example's three apps (`ward demo-app web|accounts|ledger`): ordinary
//! plaintext servers on loopback that know nothing of the mesh. Their sidecars put mTLS
//! and policy in front of them.
//!
//! A customer's `GET /accounts/ID` goes through all three: web asks accounts (through
//! web's sidecar, at `--calls`), accounts asks the ledger for the balance (through its
//! own). Like any app instrumented for tracing, each passes the request's trace context
//! (`traceparent`, `tracestate`) and request id on to the call it makes for it, so the
//! sidecars' spans join into one trace.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pb;
use crate::pb::ledger_client::LedgerClient;
use crate::pb::ledger_server::{Ledger, LedgerServer};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

/// Which app to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppKind {
    /// The frontend: serves the bank's web page.
    Web,
    /// The accounts HTTP API: `GET` and `DELETE /accounts/{id}`.
    Accounts,
    /// The gRPC service `ledger.v1.Ledger`.
    Ledger,
}

impl AppKind {
    pub const ALL: [AppKind; 3] = [AppKind::Web, AppKind::Accounts, AppKind::Ledger];

    pub fn name(self) -> &'static str {
        match self {
            AppKind::Web => "web",
            AppKind::Accounts => "accounts",
            AppKind::Ledger => "ledger",
        }
    }
}

/// What web and accounts call for a request: accounts' HTTP API, or the ledger over gRPC,
/// each through the app's sidecar outbound listener.
#[derive(Clone)]
enum Next {
    None,
    Accounts {
        client: Client<HttpConnector, Empty<Bytes>>,
        at: SocketAddr,
    },
    Ledger(LedgerClient<Channel>),
}

impl Next {
    fn new(kind: AppKind, calls: Option<SocketAddr>) -> anyhow::Result<Self> {
        let Some(at) = calls else {
            return Ok(Self::None);
        };
        Ok(match kind {
            AppKind::Web => Self::Accounts {
                client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
                at,
            },
            AppKind::Accounts => {
                let channel = Endpoint::from_shared(format!("http://{at}"))
                    .with_context(|| format!("gRPC endpoint {at}"))?
                    .connect_timeout(Duration::from_secs(5))
                    .connect_lazy();
                Self::Ledger(LedgerClient::new(channel))
            }
            AppKind::Ledger => Self::None,
        })
    }
}

/// The request headers an app passes on to the call it makes for the request.
const CARRIED: [&str; 3] = ["traceparent", "tracestate", "x-request-id"];

/// Serves `kind` on `listen` until the process is stopped; web and accounts make their
/// calls at `calls`.
pub async fn serve(
    kind: AppKind,
    listen: SocketAddr,
    calls: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let next = Next::new(kind, calls)?;
    let mut stop = super::Stop::new()?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(app = kind.name(), %listen, "demo app listening");
    match kind {
        AppKind::Ledger => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tonic::transport::Server::builder()
                .add_service(LedgerServer::new(Books::default()))
                .serve_with_incoming_shutdown(incoming, stop.recv())
                .await
                .context("serving ledger.v1.Ledger")
        }
        AppKind::Web | AppKind::Accounts => loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.context("accepting")?,
                () = stop.recv() => return Ok(()),
            };
            let next = next.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| http_app(kind, req, next.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        },
    }
}

async fn http_app(
    kind: AppKind,
    req: Request<Incoming>,
    next: Next,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let reply = match (kind, req.method(), path.strip_prefix("/accounts/")) {
        (AppKind::Web, &Method::GET, Some(id)) if valid_account(id) => {
            ask_accounts(&next, &req, id).await
        }
        (AppKind::Accounts, &Method::GET, Some(id)) if valid_account(id) => {
            account(&next, &req, id).await
        }
        (AppKind::Web, &Method::GET, _) if path == "/" => (
            StatusCode::OK,
            "text/html",
            "<!doctype html><title>ward bank</title><h1>ward bank</h1>\
             <p>The frontend of the ward demo. Its sidecar calls accounts for you.</p>\n"
                .to_owned(),
        ),
        (AppKind::Accounts, &Method::DELETE, Some(id)) if valid_account(id) => (
            StatusCode::OK,
            "application/json",
            format!("{{\"account\":\"{id}\",\"status\":\"closed\"}}\n"),
        ),
        (AppKind::Accounts, _, Some(id)) if valid_account(id) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let (status, content_type, body) = reply;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

type Reply = (StatusCode, &'static str, String);

/// web: the account as accounts tells it (through web's sidecar).
async fn ask_accounts(next: &Next, req: &Request<Incoming>, id: &str) -> Reply {
    let Next::Accounts { client, at } = next else {
        return (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        );
    };
    let mut call = Request::get(format!("http://{at}/accounts/{id}"));
    for name in CARRIED {
        if let Some(value) = req.headers().get(name) {
            call = call.header(name, value);
        }
    }
    let unavailable = || {
        let body = "{\"error\":\"accounts unavailable\"}\n".to_owned();
        (StatusCode::BAD_GATEWAY, "application/json", body)
    };
    let Ok(call) = call.body(Empty::new()) else {
        return unavailable();
    };
    let answer = async {
        let resp = client.request(call).await.ok()?;
        let status = resp.status();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(Duration::from_secs(5), answer).await {
        Ok(Some((status, body))) => (status, "application/json", body),
        _ => unavailable(),
    }
}

/// accounts: the account, with its balance from the ledger (through accounts' sidecar).
async fn account(next: &Next, req: &Request<Incoming>, id: &str) -> Reply {
    let balance = match next {
        Next::Ledger(client) => {
            let mut call = GrpcRequest::new(pb::GetBalanceRequest {
                account: id.to_owned(),
            });
            for name in CARRIED {
                if let Some(value) = req.headers().get(name).and_then(|v| v.to_str().ok())
                    && let Ok(value) = value.parse()
                {
                    call.metadata_mut().insert(name, value);
                }
            }
            call.set_timeout(Duration::from_secs(5));
            match client.clone().get_balance(call).await {
                Ok(balance) => format!(",\"balance_cents\":{}", balance.into_inner().cents),
                Err(status) => {
                    tracing::debug!(%status, "the ledger refused GetBalance");
                    let body = "{\"error\":\"ledger unavailable\"}\n".to_owned();
                    return (StatusCode::BAD_GATEWAY, "application/json", body);
                }
            }
        }
        _ => String::new(),
    };
    let body = format!(
        "{{\"account\":\"{id}\",\"owner\":\"customer-{id}\",\"currency\":\"EUR\",\"status\":\"open\"{balance}}}\n"
    );
    (StatusCode::OK, "application/json", body)
}

/// Account IDs are 1-12 ASCII digits.
fn valid_account(id: &str) -> bool {
    (1..=12).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// The ledger's books: balances move only through `Post`.
#[derive(Default)]
struct Books {
    sequence: AtomicU64,
    moved: Mutex<HashMap<String, i64>>,
}

impl Books {
    /// Every account opens with a balance derived from its number, so answers are stable.
    fn opening(account: &str) -> i64 {
        let digits: i64 = account
            .bytes()
            .fold(7, |acc, b| (acc * 31 + i64::from(b)) % 1_000_003);
        10_000 + digits * 100
    }

    fn balance(&self, account: &str) -> i64 {
        let moved = self
            .moved
            .lock()
            .map(|m| m.get(account).copied().unwrap_or(0))
            .unwrap_or(0);
        Self::opening(account) + moved
    }
}

fn account_arg(account: &str) -> Result<(), Status> {
    if valid_account(account) {
        Ok(())
    } else {
        Err(Status::invalid_argument("account must be 1-12 digits"))
    }
}

#[tonic::async_trait]
impl Ledger for Books {
    async fn get_balance(
        &self,
        request: GrpcRequest<pb::GetBalanceRequest>,
    ) -> Result<GrpcResponse<pb::Balance>, Status> {
        let account = request.into_inner().account;
        account_arg(&account)?;
        let cents = self.balance(&account);
        Ok(GrpcResponse::new(pb::Balance { account, cents }))
    }

    async fn get_entries(
        &self,
        request: GrpcRequest<pb::GetEntriesRequest>,
    ) -> Result<GrpcResponse<pb::Entries>, Status> {
        let request = request.into_inner();
        account_arg(&request.account)?;
        let entries = (0..request.limit.min(10))
            .map(|i| pb::Entry {
                from: "000000000001".into(),
                to: request.account.clone(),
                cents: 100 * i64::from(i + 1),
            })
            .collect();
        Ok(GrpcResponse::new(pb::Entries { entries }))
    }

    async fn post(
        &self,
        request: GrpcRequest<pb::PostRequest>,
    ) -> Result<GrpcResponse<pb::PostReply>, Status> {
        let entry = request
            .into_inner()
            .entry
            .ok_or_else(|| Status::invalid_argument("entry is required"))?;
        account_arg(&entry.from)?;
        account_arg(&entry.to)?;
        if entry.cents <= 0 {
            return Err(Status::invalid_argument("cents must be positive"));
        }
        let mut moved = self
            .moved
            .lock()
            .map_err(|_| Status::internal("ledger state poisoned"))?;
        *moved.entry(entry.from).or_default() -= entry.cents;
        *moved.entry(entry.to).or_default() += entry.cents;
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(GrpcResponse::new(pb::PostReply { sequence }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_digits_only() {
        assert!(valid_account("42"));
        assert!(valid_account("000000000001"));
        assert!(!valid_account(""));
        assert!(!valid_account("4x"));
        assert!(!valid_account("1234567890123"));
        assert!(!valid_account("../admin"));
    }

    #[tokio::test]
    async fn posting_moves_money_between_accounts() {
        let books = Books::default();
        let before = books.balance("1") + books.balance("2");
        let reply = books
            .post(GrpcRequest::new(pb::PostRequest {
                entry: Some(pb::Entry {
                    from: "1".into(),
                    to: "2".into(),
                    cents: 250,
                }),
            }))
            .await
            .expect("post");
        assert_eq!(reply.into_inner().sequence, 1);
        assert_eq!(books.balance("1") + books.balance("2"), before);
        assert_eq!(books.balance("2"), Books::opening("2") + 250);
        let refused = books
            .post(GrpcRequest::new(pb::PostRequest { entry: None }))
            .await
            .expect_err("no entry");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }
}
