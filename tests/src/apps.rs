//! Apps that stand behind the sidecars in end-to-end tests: an HTTP echo server (HTTP/1.1
//! and HTTP/2, with upgrades), a TCP server that speaks first and answers after the client
//! half-closes, and a gRPC service with all four call kinds. Each runs in the test process
//! on an ephemeral loopback port and counts what reached it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};

/// Generated from `proto/echo.proto`.
pub mod pb {
    tonic::include_proto!("ward.test");
}

/// A running test app.
pub struct App {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl App {
    /// Requests (or connections) that reached the app.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// HTTP echo: answers every request with JSON describing it (method, path, version,
/// `:authority`, headers, body length, trailers). `/slow?ms=N` waits first; `/ws` accepts an upgrade and then echoes
/// raw bytes.
pub async fn http_echo() -> App {
    echo_server(false).await
}

/// The same echo, but an HTTP/1.1-only server: HTTP/2 with prior knowledge gets the
/// `400` an HTTP/1 server answers a preface with.
pub async fn http1_only_echo() -> App {
    echo_server(true).await
}

async fn echo_server(http1_only: bool) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    echo(req)
                });
                let io = TokioIo::new(tcp);
                let _ = if http1_only {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(io, service)
                        .await
                        .map_err(|e| e.to_string())
                };
            });
        }
    });
    App { addr, hits }
}

async fn echo(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/ws" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::new()))
            .expect("response"));
    }
    if let Some(ms) = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let list = headers.entry(name.as_str()).or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(json!(String::from_utf8_lossy(value.as_bytes())));
        }
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let version = format!("{:?}", req.version());
    let host = req.uri().authority().map(|a| a.to_string());
    let (body, trailers) = match req.into_body().collect().await {
        Ok(collected) => {
            let trailers: serde_json::Map<String, serde_json::Value> = collected
                .trailers()
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_owned(),
                                json!(String::from_utf8_lossy(v.as_bytes())),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (collected.to_bytes().len(), trailers)
        }
        Err(_) => (0, serde_json::Map::new()),
    };
    let reply = json!({
        "method": method, "path": path, "version": version, "authority": host,
        "headers": headers, "body_len": body, "trailers": trailers,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.to_string())))
        .expect("response"))
}

/// TCP: greets first (`220 ward-test\r\n`, like SMTP), then reads until the client
/// half-closes and answers with what it got, upper-cased, then closes.
pub async fn tcp_echo() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if tcp.write_all(b"220 ward-test\r\n").await.is_err() {
                    return;
                }
                let mut got = Vec::new();
                if tcp.read_to_end(&mut got).await.is_err() {
                    return;
                }
                let _ = tcp.write_all(&got.to_ascii_uppercase()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    App { addr, hits }
}

/// The gRPC echo service.
#[derive(Default)]
pub struct EchoService;

type MessageStream = Pin<Box<dyn Stream<Item = Result<pb::Message, tonic::Status>> + Send>>;

fn peer_of<T>(req: &tonic::Request<T>) -> String {
    req.metadata()
        .get("x-ward-peer-identity")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tonic::async_trait]
impl pb::echo_server::Echo for EchoService {
    async fn unary(
        &self,
        req: tonic::Request<pb::Message>,
    ) -> Result<tonic::Response<pb::Message>, tonic::Status> {
        let peer = peer_of(&req);
        let msg = req.into_inner();
        if msg.count > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(msg.count))).await;
        }
        if msg.fail_with != 0 {
            return Err(tonic::Status::new(
                tonic::Code::from(msg.fail_with as i32),
                "requested failure",
            ));
        }
        Ok(tonic::Response::new(pb::Message { peer, ..msg }))
    }

    async fn client_stream(
        &self,
        req: tonic::Request<tonic::Streaming<pb::Message>>,
    ) -> Result<tonic::Response<pb::Message>, tonic::Status> {
        let peer = peer_of(&req);
        let mut stream = req.into_inner();
        let mut payload = Vec::new();
        let mut count = 0;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            payload.extend_from_slice(&msg.payload);
            count += 1;
        }
        Ok(tonic::Response::new(pb::Message {
            payload,
            count,
            fail_with: 0,
            peer,
        }))
    }

    type ServerStreamStream = MessageStream;

    async fn server_stream(
        &self,
        req: tonic::Request<pb::Message>,
    ) -> Result<tonic::Response<Self::ServerStreamStream>, tonic::Status> {
        let msg = req.into_inner();
        let replies = (0..msg.count).map(move |i| {
            Ok(pb::Message {
                payload: msg.payload.clone(),
                count: i,
                fail_with: 0,
                peer: String::new(),
            })
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(replies))))
    }

    type BidiStream = MessageStream;

    async fn bidi(
        &self,
        req: tonic::Request<tonic::Streaming<pb::Message>>,
    ) -> Result<tonic::Response<Self::BidiStream>, tonic::Status> {
        let stream = req.into_inner();
        let out = stream.map(|m| {
            m.map(|m| pb::Message {
                count: m.count + 1,
                ..m
            })
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

/// Serves [`EchoService`] on an ephemeral port (messages up to 16 MiB).
pub async fn grpc_echo() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = pb::echo_server::EchoServer::new(EchoService)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    App {
        addr,
        hits: Arc::new(AtomicUsize::new(0)),
    }
}

/// Answers each HTTP/1 request on `listener` (a thread of its own) with `200` and the
/// request head, lower-cased, as the body: what reached the app, headers included.
pub fn echo_heads(listener: std::net::TcpListener) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut conn, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let body = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut conn, reply.as_bytes());
        }
    });
}
