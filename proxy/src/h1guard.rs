//! Refuses HTTP/1 requests whose framing is ambiguous before the HTTP server sees them.
//!
//! A request carrying both `Content-Length` and `Transfer-Encoding` is the classic request
//! smuggling shape: two parsers may disagree on where it ends. hyper resolves it by dropping
//! `Content-Length`, which is safe for hyper but hides the attempt; we refuse it outright
//! (400, connection closed, nothing forwarded). The guard sits between the socket and hyper,
//! follows each request's framing (head, fixed body, chunked body, trailers) and holds every
//! head back until it is complete and checked. A head that breaks the rule is replaced by
//! one hyper cannot parse, so hyper answers 400 and closes — there is one place that writes
//! error responses. Anything the guard cannot follow (malformed chunking, an upgrade) is
//! passed through as is; hyper rejects what is malformed.
//!
//! Because heads are held back, hyper's own header-read timer would never see a slow head;
//! the guard therefore enforces the header read timeout itself: a head not complete within
//! it ends the connection (slowloris).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

/// What replaces a refused head: an invalid method token, which hyper answers with 400.
const POISON: &[u8] = b"\x00 / HTTP/1.1\r\n\r\n";
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a body of known length.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Inside chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// No longer following the framing.
    Passthrough,
    /// A refused head was handed over; nothing more is read.
    Refused,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ContentLengthWithTransferEncoding,
}

/// The framing decision for one complete head.
fn judge(head: &[u8]) -> Result<Option<(usize, State)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        // Malformed: hyper will refuse it itself.
        Err(_) => return Ok(Some((head.len(), State::Passthrough))),
    };
    let mut content_length = false;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = true;
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if content_length && chunked.is_some() {
        return Err(Refusal::ContentLengthWithTransferEncoding);
    }
    let next = match (upgrade, chunked, content_length, length) {
        (true, ..) => State::Passthrough,
        (false, Some(true), ..) => State::ChunkSize,
        // A final encoding other than chunked: hyper refuses the request.
        (false, Some(false), ..) => State::Passthrough,
        (false, None, false, _) | (false, None, true, Some(0)) => State::Head,
        (false, None, true, Some(n)) => State::Fixed(n),
        // Unparseable length: hyper refuses the request.
        (false, None, true, None) => State::Passthrough,
    };
    Ok(Some((len, next)))
}

/// How much one read from the connection takes.
const READ_CHUNK: usize = 4096;

/// Wraps the app- or peer-facing stream of an HTTP/1 server connection.
pub struct H1Guard<S> {
    inner: S,
    state: State,
    /// Bytes read from `inner`: the first `judged` may go to hyper, the rest wait for
    /// more (a partial head or line). Emptied buffers are released, so an idle keep-alive
    /// connection holds no buffer here.
    buf: BytesMut,
    judged: usize,
    max_head: usize,
    eof: bool,
    header_timeout: Duration,
    /// Armed while a head is incomplete.
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> H1Guard<S> {
    pub fn new(inner: S, max_head: usize, header_timeout: Duration) -> Self {
        Self {
            inner,
            state: State::Head,
            buf: BytesMut::new(),
            judged: 0,
            max_head,
            eof: false,
            header_timeout,
            head_deadline: None,
        }
    }

    /// The bytes not yet judged.
    fn unjudged(&self) -> &[u8] {
        &self.buf[self.judged..]
    }

    /// Arms the head timer when a head has begun but is not complete; disarms it otherwise.
    fn update_deadline(&mut self) {
        let in_head = self.state == State::Head && !self.unjudged().is_empty();
        match (in_head, self.head_deadline.is_some()) {
            (true, false) => {
                self.head_deadline = Some(Box::pin(tokio::time::sleep(self.header_timeout)));
            }
            (false, true) => self.head_deadline = None,
            _ => {}
        }
    }

    /// Judges as many unjudged bytes as the framing allows.
    fn advance(&mut self) {
        loop {
            let rest = self.unjudged();
            if rest.is_empty() {
                return;
            }
            match self.state.clone() {
                State::Passthrough => {
                    self.judged = self.buf.len();
                    return;
                }
                State::Refused => {
                    self.buf.truncate(self.judged);
                    return;
                }
                State::Head => match judge(rest) {
                    Ok(Some((len, next))) => {
                        self.judged += len;
                        self.state = next;
                    }
                    Ok(None) => {
                        if rest.len() > self.max_head {
                            // Too large for us to hold: hand it over, hyper answers 431.
                            self.state = State::Passthrough;
                            continue;
                        }
                        return;
                    }
                    Err(refusal) => {
                        tracing::debug!(?refusal, "HTTP/1 request refused before parsing");
                        self.buf.truncate(self.judged);
                        self.buf.extend_from_slice(POISON);
                        self.judged = self.buf.len();
                        self.state = State::Refused;
                        return;
                    }
                },
                State::Fixed(n) => {
                    let take = n.min(rest.len() as u64);
                    self.judged += take as usize;
                    self.state = match n - take {
                        0 => State::Head,
                        left => State::Fixed(left),
                    };
                }
                State::ChunkSize => {
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > 1024 {
                            self.state = State::Passthrough;
                            continue;
                        }
                        return;
                    };
                    let size = parse_chunk_size(&rest[..=end]);
                    self.judged += end + 1;
                    self.state = match size {
                        Some(0) => State::Trailers,
                        // Data plus its CRLF.
                        Some(n) => State::ChunkData(n + 2),
                        None => State::Passthrough,
                    };
                }
                State::ChunkData(n) => {
                    let take = n.min(rest.len() as u64);
                    self.judged += take as usize;
                    self.state = match n - take {
                        0 => State::ChunkSize,
                        left => State::ChunkData(left),
                    };
                }
                State::Trailers => {
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > self.max_head {
                            self.state = State::Passthrough;
                            continue;
                        }
                        return;
                    };
                    let blank = end == 0 || (end == 1 && rest[0] == b'\r');
                    self.judged += end + 1;
                    if blank {
                        self.state = State::Head;
                    }
                }
            }
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|&b| b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

impl<S: AsyncRead + Unpin> AsyncRead for H1Guard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.judged > 0 {
                let n = this.judged.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.judged -= n;
                if this.buf.is_empty() {
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || this.state == State::Refused {
                return Poll::Ready(Ok(()));
            }
            // Read into the stack and copy what arrived: a read that waits (an idle
            // keep-alive connection, almost always) then holds no heap buffer.
            let mut chunk = [0u8; READ_CHUNK];
            let mut chunk = ReadBuf::new(&mut chunk);
            let read = Pin::new(&mut this.inner).poll_read(cx, &mut chunk);
            if let Poll::Ready(Ok(())) = read {
                this.buf.extend_from_slice(chunk.filled());
            }
            match read.map_ok(|()| chunk.filled().len()) {
                Poll::Ready(Ok(0)) => {
                    this.eof = true;
                    // Whatever is left unjudged goes to hyper, which sees it truncated.
                    this.judged = this.buf.len();
                }
                Poll::Ready(Ok(_)) => {
                    this.advance();
                    this.update_deadline();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let timed_out = this
                        .head_deadline
                        .as_mut()
                        .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                    if timed_out {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request head not received within the header read timeout",
                        )));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

crate::io::write_through!(H1Guard);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn through(input: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut guard = H1Guard::new(server, 64 * 1024, Duration::from_secs(10));
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
        let mut guard = H1Guard::new(server, 64 * 1024, Duration::from_secs(2));
        let mut buf = [0u8; 64];
        let err = guard.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a\r\n"), Some(26));
        assert_eq!(parse_chunk_size(b"0;ext=1\r\n"), Some(0));
        assert_eq!(parse_chunk_size(b"zz\r\n"), None);
        assert_eq!(parse_chunk_size(b"\r\n"), None);
    }
}
