//! gRPC (all four call kinds, large messages, status and deadlines) and opaque TCP through
//! two sidecar processes, and the HTTP/2 rapid-reset defence.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use ward_tests::apps::{self, App, pb};
use ward_tests::mesh::{Pair, PairOptions};

async fn pair(app: &App, options: PairOptions) -> Pair {
    Pair::launch(app.addr, options).await
}

async fn client(mesh: &Pair) -> pb::echo_client::EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.outbound))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the outbound listener");
    pb::echo_client::EchoClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20)
}

fn msg(payload: Vec<u8>, count: u32) -> pb::Message {
    pb::Message {
        payload,
        count,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_all_call_kinds_with_large_messages() {
    let app = apps::grpc_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let mut grpc = client(&mesh).await;

    // Unary with a 4 MiB message both ways; the app sees the caller's verified identity.
    let big = vec![7u8; 4 * 1024 * 1024];
    let reply = grpc
        .unary(msg(big.clone(), 0))
        .await
        .expect("unary")
        .into_inner();
    assert_eq!(reply.payload.len(), big.len());
    assert_eq!(reply.peer, mesh.web_id());

    // Client streaming.
    let parts = (0..8).map(|i| msg(vec![i; 512 * 1024], 0));
    let reply = grpc
        .client_stream(tokio_stream::iter(parts))
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!(reply.count, 8);
    assert_eq!(reply.payload.len(), 8 * 512 * 1024);
    assert_eq!(reply.peer, mesh.web_id());

    // Server streaming.
    let mut stream = grpc
        .server_stream(msg(b"tick".to_vec(), 50))
        .await
        .expect("server stream")
        .into_inner();
    let mut n = 0;
    while let Some(m) = stream.next().await {
        assert_eq!(m.expect("message").count, n);
        n += 1;
    }
    assert_eq!(n, 50);

    // Bidirectional, interleaved.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = grpc
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bidi")
        .into_inner();
    for i in 0..20u32 {
        tx.send(msg(vec![1; 100], i)).await.unwrap();
        let back = replies.next().await.expect("reply").expect("ok");
        assert_eq!(back.count, i + 1);
    }
    drop(tx);
    assert!(
        replies.next().await.is_none(),
        "stream ends after the client's half-close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_trailers_and_deadlines_survive_the_mesh() {
    let app = apps::grpc_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let mut grpc = client(&mesh).await;

    let status = grpc
        .unary(pb::Message {
            fail_with: tonic::Code::NotFound as u32,
            ..Default::default()
        })
        .await
        .expect_err("app fails the call");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "requested failure");

    // A 200 ms deadline on a call the app takes 3 s to answer.
    let mut req = tonic::Request::new(msg(Vec::new(), 3000));
    req.set_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let status = grpc.unary(req).await.expect_err("deadline");
    // tonic's own client timer may fire first and reports that as Cancelled; either way
    // the call ends at the deadline, not when the app answers.
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // The proxy honours grpc-timeout itself: a raw HTTP/2 call with no client-side timer.
    let out = tokio::task::spawn_blocking({
        let url = format!("http://{}/ward.test.Echo/Unary", mesh.outbound);
        move || {
            // Message{count: 3000} = field 2 varint: 0x10 0xb8 0x17.
            let body = [0u8, 0, 0, 0, 3, 0x10, 0xb8, 0x17];
            let path = std::env::temp_dir().join(format!("grpc-body-{}", std::process::id()));
            std::fs::write(&path, body).unwrap();
            let out = ward_tests::bin::run(
                std::path::Path::new("curl"),
                [
                    "-sS",
                    "--http2-prior-knowledge",
                    "-D",
                    "-",
                    "-o",
                    "/dev/null",
                    "-H",
                    "content-type: application/grpc",
                    "-H",
                    "te: trailers",
                    "-H",
                    "grpc-timeout: 300m",
                    "--data-binary",
                    &format!("@{}", path.display()),
                    &url,
                ],
            );
            let _ = std::fs::remove_file(&path);
            out
        }
    })
    .await
    .unwrap();
    let headers = out.ok().to_ascii_lowercase();
    assert!(headers.contains("grpc-status: 4"), "{headers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_half_close_and_server_speaks_first() {
    let app = apps::tcp_echo().await;
    for protocol in ["auto", "tcp"] {
        let mesh = pair(
            &app,
            PairOptions {
                outbound_protocol: protocol,
                inbound_protocol: protocol,
                ..Default::default()
            },
        )
        .await;
        // Two connections: the second resumes the first's TLS session between sidecars.
        for _ in 0..2 {
            let mut tcp = TcpStream::connect(mesh.outbound).await.unwrap();
            // The app greets before the client says anything: detection must give up and
            // carry the connection as TCP.
            let mut greeting = [0u8; 15];
            tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut greeting))
                .await
                .expect("greeting within detect_timeout")
                .unwrap();
            assert_eq!(&greeting, b"220 ward-test\r\n");
            tcp.write_all(b"half-closed hello").await.unwrap();
            tcp.shutdown().await.unwrap();
            let mut reply = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply))
                .await
                .expect("reply after half-close")
                .unwrap();
            assert_eq!(reply, b"HALF-CLOSED HELLO", "{protocol}");
        }
        let inbound = mesh.orders.admin_get("/metrics").1;
        assert!(
            inbound
                .contains("ward_tls_handshakes_total{direction=\"inbound\",result=\"resumed\"} 1"),
            "{inbound}"
        );
        // Bytes each way, by both ends' identities: the client sent 2 × 17, the app 2 × 32.
        let metrics = mesh.web.admin_get("/metrics").1;
        let ends = format!(
            "source=\"{}\",destination=\"{}\"",
            mesh.web_id(),
            mesh.orders_id()
        );
        for (flow, bytes) in [("sent", 34), ("received", 64)] {
            let series = format!(
                "ward_tcp_bytes_total{{direction=\"outbound\",{ends},flow=\"{flow}\"}} {bytes}"
            );
            assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
        }
    }
}

/// One HTTP/2 frame: 9-byte header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// CVE-2023-44487: open a stream and reset it at once, thousands of times, in one burst.
/// The frames are written by hand so nothing in a client library softens the attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_rapid_reset_flood_ends_in_goaway() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, PairOptions::default()).await;
    let tcp = TcpStream::connect(mesh.outbound).await.unwrap();
    let (mut rx, mut tx) = tcp.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.read_to_end(&mut got)).await;
        got
    });

    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    flood.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    for i in 0..5_000u32 {
        let stream = 2 * i + 1;
        // HEADERS (END_STREAM | END_HEADERS): :method GET, :scheme http, :path / from the
        // HPACK static table.
        flood.extend(frame(0x1, 0x5, stream, &[0x82, 0x86, 0x84]));
        flood.extend(frame(0x3, 0, stream, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let _ = tx.write_all(&flood).await;
    let got = reader.await.unwrap();

    let mut goaway = None;
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = (usize::from(got[at]) << 16)
            | (usize::from(got[at + 1]) << 8)
            | usize::from(got[at + 2]);
        if got[at + 3] == 0x7 && at + 9 + 8 <= got.len() {
            let code = &got[at + 9 + 4..at + 9 + 8];
            goaway = Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        }
        at += 9 + len;
    }
    // 0xb: ENHANCE_YOUR_CALM.
    assert_eq!(goaway, Some(0xb), "server frames: {} bytes", got.len());
    assert!(
        app.hits() < 5_000,
        "the flood was cut short ({} reached the app)",
        app.hits()
    );
}
