//! Unit tests of the parent module.
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn through(input: &[u8]) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let mut guard = H1Guard::new(
        server,
        64 * 1024,
        Duration::from_secs(10),
        SwitchSignal::default(),
    );
    let mut out = Vec::new();
    guard.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn well_framed_requests_pass_unchanged() {
    let input: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(through(input).await, input);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    for smuggle in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 4\r\n\r\n",
        ] {
            assert_eq!(through(smuggle).await, POISON);
        }
}

#[tokio::test]
async fn a_smuggled_request_hidden_in_a_body_is_never_judged_as_a_head() {
    // The body of the first request contains what looks like a CL+TE head; it is body.
    let input: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n";
    let out = through(input).await;
    assert_eq!(out, input, "body bytes pass as body");
}

#[tokio::test(start_paused = true)]
async fn a_head_that_never_completes_times_out() {
    let (mut client, server) = tokio::io::duplex(1024);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut guard = H1Guard::new(
        server,
        64 * 1024,
        Duration::from_secs(2),
        SwitchSignal::default(),
    );
    let mut buf = [0u8; 64];
    let err = guard.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

/// Reads what the guard hands over until it has `want` bytes (or the stream ends).
async fn read_some(guard: &mut H1Guard<tokio::io::DuplexStream>, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want {
        let n = guard.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

const SMUGGLE: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

#[tokio::test]
async fn an_upgrade_header_answered_without_101_does_not_stop_judging() {
    for upgrade in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    ] {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(upgrade).await.unwrap();
        client.write_all(SMUGGLE).await.unwrap();
        client.shutdown().await.unwrap();
        let switch = SwitchSignal::default();
        let mut guard = H1Guard::new(server, 64 * 1024, Duration::from_secs(10), switch.clone());
        assert_eq!(read_some(&mut guard, upgrade.len()).await, upgrade);
        // Nothing more until the service has answered.
        let mut buf = [0u8; 64];
        let held = tokio::time::timeout(Duration::from_millis(50), guard.read(&mut buf)).await;
        assert!(
            held.is_err(),
            "bytes after a may-switch request wait for the answer"
        );
        switch.answered(false);
        let mut rest = Vec::new();
        guard.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            rest, POISON,
            "CL+TE after a refused switch is still refused"
        );
    }
}

#[tokio::test]
async fn after_a_real_101_the_connection_is_a_byte_stream() {
    let upgrade: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let (mut client, server) = tokio::io::duplex(1 << 16);
    client.write_all(upgrade).await.unwrap();
    client.write_all(SMUGGLE).await.unwrap();
    client.shutdown().await.unwrap();
    let switch = SwitchSignal::default();
    let mut guard = H1Guard::new(server, 64 * 1024, Duration::from_secs(10), switch.clone());
    assert_eq!(read_some(&mut guard, upgrade.len()).await, upgrade);
    switch.answered(true);
    let mut rest = Vec::new();
    guard.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, SMUGGLE, "frames after the 101 are not HTTP");
}

#[tokio::test]
async fn a_chunk_size_that_overflows_or_is_not_hex_is_refused() {
    let head: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    for chunk in [
        &b"10000000000000000\r\n"[..],
        b"fffffffffffffffff\r\nx\r\n",
        b"ffffffffffffffff\r\n",
        b"zz\r\n",
        b"\r\n",
    ] {
        // Head and broken chunk together: the request becomes a 400.
        let mut input = head.to_vec();
        input.extend_from_slice(chunk);
        input.extend_from_slice(SMUGGLE);
        assert_eq!(
            through(&input).await,
            POISON,
            "{:?}",
            String::from_utf8_lossy(chunk)
        );

        // The head already handed over: the connection ends; nothing after is passed.
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(head).await.unwrap();
        let mut guard = H1Guard::new(
            server,
            64 * 1024,
            Duration::from_secs(10),
            SwitchSignal::default(),
        );
        assert_eq!(read_some(&mut guard, head.len()).await, head);
        client.write_all(chunk).await.unwrap();
        client.write_all(SMUGGLE).await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        guard.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing after a broken chunk: {rest:?}");
    }
}

#[tokio::test]
async fn a_malformed_head_ends_what_is_read() {
    let out = through(&[b"GET / HTTP/1.1\r\nBad Header\r\n\r\n" as &[u8], SMUGGLE].concat()).await;
    assert!(
        !out.ends_with(SMUGGLE),
        "bytes after a malformed head are not handed over"
    );
}

#[tokio::test]
async fn an_h2_preface_is_a_malformed_head_unless_allowed() {
    let mut input = H2_PREFACE.to_vec();
    input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let out = through(&input).await;
    assert_eq!(
        out, b"PRI * HTTP/2.0\r\n\r\n",
        "nothing after the malformed head"
    );

    let (mut client, server) = tokio::io::duplex(1 << 16);
    client.write_all(&input).await.unwrap();
    client.shutdown().await.unwrap();
    let mut guard = H1Guard::new(
        server,
        64 * 1024,
        Duration::from_secs(10),
        SwitchSignal::default(),
    )
    .allowing_h2_preface();
    let mut out = Vec::new();
    guard.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, input, "passed whole where both protocols are served");
}

#[test]
fn chunk_sizes() {
    assert_eq!(parse_chunk_size(b"1a\r\n"), Some(26));
    assert_eq!(parse_chunk_size(b"0;ext=1\r\n"), Some(0));
    assert_eq!(parse_chunk_size(b"zz\r\n"), None);
    assert_eq!(parse_chunk_size(b"\r\n"), None);
}
