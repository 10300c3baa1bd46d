//! Protocol detection on a plaintext connection from the app: HTTP/2 (prior knowledge),
//! HTTP/1.x, or opaque TCP.
//!
//! The decision is a pure function of the bytes read so far, so it is tested without
//! sockets. The async shell reads only until the function can decide, and gives up after
//! `detect_timeout` with "opaque TCP": a server-speaks-first protocol (SMTP, MySQL) sends
//! nothing until the server greets it, so waiting longer would only delay it. Detection
//! prefers availability — an ambiguous or silent stream is carried as TCP, never refused —
//! and the bytes read are replayed to whatever handles the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest request line looked at before deciding it is not HTTP/1.
const MAX_REQUEST_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tcp,
}

impl Detected {
    pub fn label(self) -> &'static str {
        match self {
            Detected::Http1 => "http1",
            Detected::Http2 => "http2",
            Detected::Tcp => "tcp",
        }
    }
}

/// What the first bytes of a stream say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Is(Detected),
    /// Could still be HTTP: read more.
    NeedMore,
}

/// Decides from the bytes read so far.
pub fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Is(Detected::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    classify_http1(buf)
}

/// `token SP request-target SP HTTP/1.x CRLF`, judged as far as the bytes go.
fn classify_http1(buf: &[u8]) -> Verdict {
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    // Method: one or more token characters, then a space.
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return if line.iter().all(|&b| is_token(b)) && line.len() < MAX_METHOD && line_end.is_none()
        {
            Verdict::NeedMore
        } else {
            Verdict::Is(Detected::Tcp)
        };
    };
    // The same method-length limit with or without the space seen (found by fuzzing: a
    // 39-character "method" was TCP until its space arrived, then "need more").
    if sp == 0 || sp >= MAX_METHOD || !line[..sp].iter().all(|&b| is_token(b)) {
        return Verdict::Is(Detected::Tcp);
    }
    let Some(end) = line_end else {
        // A CR at the very end may be the first half of the line's CRLF (found by
        // fuzzing: a request line whose CR and LF arrive in two reads was taken for TCP).
        let rest = &buf[sp + 1..];
        let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
        return if buf.len() > MAX_REQUEST_LINE || rest.iter().any(|&b| b.is_ascii_control()) {
            Verdict::Is(Detected::Tcp)
        } else {
            Verdict::NeedMore
        };
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Longer than an unfinished line may grow: TCP, as it was before the LF.
    if end > MAX_REQUEST_LINE {
        return Verdict::Is(Detected::Tcp);
    }
    // Control bytes in the target are not HTTP, complete line or not (found by fuzzing:
    // the verdict changed from TCP to HTTP/1 when the LF came).
    if line[sp + 1..].iter().any(|&b| b.is_ascii_control()) {
        return Verdict::Is(Detected::Tcp);
    }
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Verdict::Is(Detected::Http1)
    } else {
        Verdict::Is(Detected::Tcp)
    }
}

/// The longest method (token before the first space) still read as HTTP.
const MAX_METHOD: usize = 32;

/// RFC 9110 token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads from `io` until [`classify`] decides, EOF, or `timeout` passes (then TCP). Returns
/// the decision and the bytes read, which must be replayed.
pub async fn detect<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> io::Result<(Detected, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match classify(&buf) {
            Verdict::Is(d) => return Ok((d, buf)),
            Verdict::NeedMore => {}
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => return Ok((Detected::Tcp, buf)),
            Ok(Ok(0)) => return Ok((Detected::Tcp, buf)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A stream that first yields `prefix`, then reads from `inner`; writes go to `inner`.
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Release the detection buffer for the rest of the connection's life.
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

crate::transport::io::write_through!(Prefixed);

/// Asks the app at `addr` whether it speaks HTTP/2 with prior knowledge: sends the client
/// preface and an empty SETTINGS frame on a connection of its own and reads the first
/// bytes back. An HTTP/2 server answers with a SETTINGS frame; an HTTP/1.x server with a
/// status line (or by closing). `None`: no answer either way (unreachable, silent).
pub async fn probe_h2(addr: std::net::SocketAddr, timeout: Duration) -> Option<bool> {
    let probe = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut hello = H2_PREFACE.to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        tcp.write_all(&hello).await.ok()?;
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match tcp.read(&mut head[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Some(answers_h2(&head[..got]))
    };
    tokio::time::timeout(timeout, probe).await.ok().flatten()
}

/// Whether the first bytes a server sent after our preface are an HTTP/2 SETTINGS frame
/// (a frame header whose type byte is 4 on stream 0).
fn answers_h2(first: &[u8]) -> bool {
    first.len() == 9 && first[3] == 0x4 && first[5..9] == [0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_split_between_cr_and_lf_is_http1() {
        let line = b"GET / HTTP/1.1\r\n";
        let mut decided = None;
        for end in 1..=line.len() {
            if let Verdict::Is(d) = classify(&line[..end]) {
                assert!(decided.is_none_or(|p| p == d), "changed at {end}");
                decided = Some(d);
            }
        }
        assert_eq!(decided, Some(Detected::Http1));
        assert_eq!(classify(b"GET /\r x"), Verdict::Is(Detected::Tcp));
        // A control byte in the target is TCP before and after the LF.
        let line = b"GET /PO\xa9OO\x01  HTTP/1.0\n";
        assert_eq!(
            classify(&line[..line.len() - 1]),
            Verdict::Is(Detected::Tcp)
        );
        assert_eq!(classify(line), Verdict::Is(Detected::Tcp));
    }

    #[test]
    fn every_prefix_agrees_with_the_final_verdict() {
        let long_method = [&b"M"[..], &[b'K'; 38], b" \r"].concat();
        let long_line = [
            &b"GET /"[..],
            &vec![b'a'; MAX_REQUEST_LINE],
            b" HTTP/1.1\r\n",
        ]
        .concat();
        for input in [&long_method[..], &long_line[..], b"GET / HTTP/1.1\r\n"] {
            let mut decided = None;
            for end in 1..=input.len() {
                match classify(&input[..end]) {
                    Verdict::NeedMore => assert!(decided.is_none(), "undecided again at {end}"),
                    Verdict::Is(d) => {
                        assert!(decided.is_none_or(|p| p == d), "changed at {end}");
                        decided = Some(d);
                    }
                }
            }
        }
    }

    #[test]
    fn an_h2_answer_is_a_settings_frame() {
        assert!(answers_h2(&[0, 0, 6, 4, 0, 0, 0, 0, 0]));
        assert!(!answers_h2(b"HTTP/1.1 "));
        assert!(!answers_h2(b""));
        assert!(!answers_h2(&[0, 0, 6, 4, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn classifies_by_first_bytes() {
        let cases: &[(&[u8], Verdict)] = &[
            (b"", Verdict::NeedMore),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Verdict::Is(Detected::Http2),
            ),
            (b"PRI * HTTP/2", Verdict::NeedMore),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Verdict::Is(Detected::Http1),
            ),
            (b"POST /x?y=1 HTTP/1.0\r\n", Verdict::Is(Detected::Http1)),
            (b"GET / HTTP/1.1\n", Verdict::Is(Detected::Http1)),
            (b"GET", Verdict::NeedMore),
            (b"GET /long/path", Verdict::NeedMore),
            (b"PRI", Verdict::NeedMore),
            (b"GET / SPDY/3\r\n", Verdict::Is(Detected::Tcp)),
            (b"\x16\x03\x01\x02\x00", Verdict::Is(Detected::Tcp)),
            (b"SSH-2.0-OpenSSH_9.2\r\n", Verdict::Is(Detected::Tcp)),
            (b" GET / HTTP/1.1\r\n", Verdict::Is(Detected::Tcp)),
            (b"G(T / HTTP/1.1\r\n", Verdict::Is(Detected::Tcp)),
            (b"\x00\x00\x00\x01", Verdict::Is(Detected::Tcp)),
            (b"hello\n", Verdict::Is(Detected::Tcp)),
            (b"GET /a\x01b", Verdict::Is(Detected::Tcp)),
        ];
        for (input, want) in cases {
            assert_eq!(
                classify(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn an_endless_request_line_is_not_http() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE));
        assert_eq!(classify(&line), Verdict::Is(Detected::Tcp));
    }

    #[tokio::test]
    async fn silence_is_tcp_after_the_timeout_and_bytes_are_replayed() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = server;
        // Server-speaks-first: the client sends nothing.
        let (d, buf) = detect(&mut server, Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(d, Detected::Tcp);
        assert!(buf.is_empty());

        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (d, buf) = detect(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(d, Detected::Http1);
        let mut replay = Prefixed::new(buf, server);
        let mut all = vec![0u8; 27];
        replay.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
}
