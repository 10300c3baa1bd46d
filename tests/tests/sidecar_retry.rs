//! An HTTP/2 app that sends GOAWAY (as nginx does after `keepalive_requests`) must not cost
//! an idempotent request that it never processed: the sidecar sends it again, body and all,
//! on a new connection. A request the app may have processed, and any POST refused by a
//! GOAWAY, is never sent twice.
//!
//! The app here is a hand-written HTTP/2 server so that the GOAWAY lands exactly between
//! two requests it has received.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use ward_tests::mesh::{Pair, PairOptions};

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `:status: 200` (HPACK static table entry 8), ending the stream.
fn ok_response(stream: u32) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &[0x88])
}

/// What the app saw: per connection, the streams it got and their bodies.
#[derive(Default)]
struct Seen {
    connections: Vec<Vec<(u32, Vec<u8>)>>,
}

/// The first connection: once two requests have fully arrived, GOAWAY naming
/// `last_stream(first, second)` as the last it processes, answer the first, and close.
/// Later connections answer every request.
struct GoawayApp {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    first_arrived: Arc<Notify>,
}

async fn goaway_app(last_stream: fn(u32, u32) -> u32) -> GoawayApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let first_arrived = Arc::new(Notify::new());
    let (s, n) = (seen.clone(), first_arrived.clone());
    tokio::spawn(async move {
        let mut index = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            let conn = {
                let mut seen = s.lock().unwrap();
                seen.connections.push(Vec::new());
                seen.connections.len() - 1
            };
            let (s, n) = (s.clone(), n.clone());
            let first = index == 0;
            index += 1;
            tokio::spawn(async move {
                let _ = serve(tcp, conn, first, last_stream, s, n).await;
            });
        }
    });
    GoawayApp {
        addr,
        seen,
        first_arrived,
    }
}

async fn serve(
    mut tcp: TcpStream,
    conn: usize,
    first: bool,
    last_stream: fn(u32, u32) -> u32,
    seen: Arc<Mutex<Seen>>,
    first_arrived: Arc<Notify>,
) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    tcp.read_exact(&mut preface).await?;
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut complete: Vec<u32> = Vec::new();
    loop {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await?;
        match kind {
            SETTINGS if flags & ACK == 0 => tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await?,
            PING if flags & ACK == 0 => tcp.write_all(&frame(PING, ACK, 0, &payload)).await?,
            HEADERS => {
                bodies.entry(stream).or_default();
                first_arrived.notify_one();
            }
            DATA => bodies
                .entry(stream)
                .or_default()
                .extend_from_slice(&payload),
            _ => {}
        }
        if matches!(kind, HEADERS | DATA) && flags & END_STREAM != 0 {
            complete.push(stream);
            let body = bodies.get(&stream).cloned().unwrap_or_default();
            seen.lock().unwrap().connections[conn].push((stream, body));
            if !first {
                tcp.write_all(&ok_response(stream)).await?;
            } else if complete.len() == 2 {
                let last = last_stream(complete[0], complete[1]);
                let mut goaway = last.to_be_bytes().to_vec();
                goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                tcp.write_all(&frame(GOAWAY, 0, 0, &goaway)).await?;
                tcp.write_all(&ok_response(complete[0])).await?;
                // Close our side: whatever is at or below `last` and unanswered is lost
                // with the connection, as when an app crashes after processing it. Then
                // read until the sidecar closes too, so that nothing it still sends turns
                // our close into a reset that could eat the response above.
                tcp.shutdown().await?;
                let mut rest = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
                return Ok(());
            }
        }
    }
}

type Client = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_client(addr: SocketAddr) -> Client {
    let tcp = TcpStream::connect(addr).await.expect("connect outbound");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

async fn call(client: &mut Client, method: &str, path: &str, body: &'static [u8]) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://app{path}"))
        .body(Full::new(Bytes::from_static(body)))
        .expect("request");
    let resp = client.send_request(req).await.expect("response");
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

/// Sends GET /first, waits until the app holds it, then `method` /second with a body.
async fn two_calls(pair: &Pair, app: &GoawayApp, method: &str) -> (StatusCode, StatusCode) {
    let mut client = h2_client(pair.outbound).await;
    let mut c1 = client.clone();
    let first = tokio::spawn(async move { call(&mut c1, "GET", "/first", b"").await });
    app.first_arrived.notified().await;
    let second = call(&mut client, method, "/second", b"replay me, byte for byte").await;
    (first.await.expect("first"), second)
}

/// Streams the app got on any connection after the first (i.e. requests sent again).
fn resent(app: &GoawayApp) -> usize {
    let seen = app.seen.lock().unwrap();
    seen.connections.iter().skip(1).map(Vec::len).sum()
}

async fn launch(app: &GoawayApp) -> Pair {
    Pair::launch(
        app.addr,
        PairOptions {
            inbound_protocol: "http2",
            ..PairOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn an_idempotent_request_refused_by_an_app_goaway_is_sent_again_with_its_body() {
    // GOAWAY names the first request as the last processed: the second was never seen.
    let app = goaway_app(|first, _second| first).await;
    let pair = launch(&app).await;
    let (first, second) = two_calls(&pair, &app, "PUT").await;
    assert_eq!(first, StatusCode::OK);
    assert_eq!(
        second,
        StatusCode::OK,
        "the refused request was not retried:\n{}",
        pair.orders.logs()
    );
    let seen = app.seen.lock().unwrap();
    assert_eq!(seen.connections.len(), 2, "one retry connection");
    assert_eq!(
        seen.connections[1],
        vec![(1, b"replay me, byte for byte".to_vec())],
        "the retry carried the whole body"
    );
    drop(seen);
    let metrics = pair.orders.admin_get("/metrics").1;
    assert!(
        metrics.contains("ward_request_retries_total{reason=\"goaway\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_request_the_app_may_have_processed_is_not_sent_twice() {
    // GOAWAY names the second request as processed, then the connection dies before its
    // response: the sidecar must answer 502, not send it again.
    let app = goaway_app(|_first, second| second).await;
    let pair = launch(&app).await;
    let (first, second) = two_calls(&pair, &app, "PUT").await;
    assert_eq!(first, StatusCode::OK);
    assert_eq!(second, StatusCode::BAD_GATEWAY);
    assert_eq!(
        resent(&app),
        0,
        "a possibly processed request was sent again"
    );
    let metrics = pair.orders.admin_get("/metrics").1;
    assert!(!metrics.contains("ward_request_retries_total"), "{metrics}");
}

#[tokio::test]
async fn a_post_refused_by_a_goaway_is_not_sent_again() {
    // h2 reports a GOAWAY to streams the peer may still process (a race with a graceful
    // two-step GOAWAY), so a non-idempotent request is never retried for one.
    let app = goaway_app(|first, _second| first).await;
    let pair = launch(&app).await;
    let (first, second) = two_calls(&pair, &app, "POST").await;
    assert_eq!(first, StatusCode::OK);
    assert_eq!(second, StatusCode::BAD_GATEWAY);
    assert_eq!(resent(&app), 0, "a POST was sent again after a GOAWAY");
}
