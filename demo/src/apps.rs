//! The banking example's three apps (`ward demo-app web|accounts|ledger`): ordinary
//! plaintext servers on loopback that know nothing of the mesh. Their sidecars put mTLS
//! and policy in front of them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pb;
use crate::pb::ledger_server::{Ledger, LedgerServer};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
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

/// Serves `kind` on `listen` until the process is stopped.
pub async fn serve(kind: AppKind, listen: SocketAddr) -> anyhow::Result<()> {
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
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| http_app(kind, req));
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
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let reply = match (kind, req.method(), path.strip_prefix("/accounts/")) {
        (AppKind::Web, &Method::GET, _) if path == "/" => (
            StatusCode::OK,
            "text/html",
            "<!doctype html><title>ward bank</title><h1>ward bank</h1>\
             <p>The frontend of the ward demo. Its sidecar calls accounts for you.</p>\n"
                .to_owned(),
        ),
        (AppKind::Accounts, &Method::GET, Some(id)) if valid_account(id) => (
            StatusCode::OK,
            "application/json",
            format!(
                "{{\"account\":\"{id}\",\"owner\":\"customer-{id}\",\"currency\":\"EUR\",\"status\":\"open\"}}\n"
            ),
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
