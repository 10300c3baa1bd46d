//! Refuses HTTP/1 requests whose framing is ambiguous before the HTTP server sees them.
//!
//! A request carrying both `Content-Length` and `Transfer-Encoding` is the classic request
//! smuggling shape: two parsers may disagree on where it ends. hyper resolves it by dropping
//! `Content-Length`, which is safe for hyper but hides the attempt; we refuse it outright
//! (400, connection closed, nothing forwarded). The guard sits between the socket and hyper,
//! follows each request's framing (head, fixed body, chunked body, trailers) and holds every
//! head back until it is complete and checked. A head that breaks the rule is replaced by
//! one hyper cannot parse, so hyper answers 400 and closes — there is one place that writes
//! error responses. What the guard cannot follow (a malformed head or chunk) is handed to
//! hyper, which refuses it, and nothing after it is read: a guard never stops judging and
//! lets later bytes through unjudged. The one exception is a real protocol switch: after a
//! request that may switch (an `Upgrade` header, or CONNECT) the guard holds everything
//! until the service says how it answered ([`SwitchSignal`]); only a `101` (or a 2xx to
//! CONNECT) makes the rest of the connection a byte stream.
//!
//! Because heads are held back, hyper's own header-read timer would never see a slow head;
//! the guard therefore enforces the header read timeout itself: a head not complete within
//! it ends the connection (slowloris).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use std::future::Future;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

/// What replaces a refused head: an invalid method token, which hyper answers with 400.
const POISON: &[u8] = b"\x00 / HTTP/1.1\r\n\r\n";
const MAX_HEADERS: usize = 128;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
    /// The protocol switched (a `101`): no longer following any framing.
    Passthrough,
    /// What was judged is handed over (a refused or malformed head, a broken chunk);
    /// nothing more is read.
    Closed,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ContentLengthWithTransferEncoding,
    /// A chunk-size line that is not hex, overflows 64 bits, or is too long.
    BadChunkSize,
}

/// The framing decision for one complete head: its length, the state after it, and
/// whether the request may switch protocols.
fn judge(head: &[u8]) -> Result<Option<(usize, State, bool)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        // Malformed: hyper refuses it itself; nothing after its end is handed over.
        Err(_) => {
            let end = head
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(head.len(), |at| at + 4);
            return Ok(Some((end, State::Closed, false)));
        }
    };
    let mut content_length = false;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    // hyper treats a request as wanting to switch on CONNECT or any HTTP/1.1 `Upgrade`.
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
        } else if h.name.eq_ignore_ascii_case("upgrade") && req.version == Some(1) {
            upgrade = true;
        }
    }
    if content_length && chunked.is_some() {
        return Err(Refusal::ContentLengthWithTransferEncoding);
    }
    let next = match (chunked, content_length, length) {
        (Some(true), ..) => State::ChunkSize,
        // A final encoding other than chunked: hyper refuses the request.
        (Some(false), ..) => State::Closed,
        (None, false, _) | (None, true, Some(0)) => State::Head,
        (None, true, Some(n)) => State::Fixed(n),
        // Unparseable length: hyper refuses the request.
        (None, true, None) => State::Closed,
    };
    Ok(Some((len, next, upgrade)))
}

/// Whether hyper may switch protocols after this request (see [`judge`]); the service
/// must then tell the guard how it answered.
pub fn may_switch<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::CONNECT
        || (req.version() == http::Version::HTTP_11
            && req.headers().contains_key(http::header::UPGRADE))
}

/// Whether `response` switched protocols: a `101`, or a 2xx to CONNECT.
pub fn switched<B>(response: &http::Response<B>, connect: bool) -> bool {
    let status = response.status();
    status == http::StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success())
}

/// How a request that may switch protocols was answered, from the service to the guard of
/// its connection; and the streams spliced from the connection after a switch, which keep
/// its place (connection budget, per-peer slot) while they live.
#[derive(Clone)]
pub struct SwitchSignal(Arc<Mutex<Switch>>, Arc<tokio::sync::watch::Sender<usize>>);

impl Default for SwitchSignal {
    fn default() -> Self {
        Self(Arc::default(), Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

/// One stream spliced from a switched connection; the connection counts as open until it
/// is dropped.
pub struct Spliced(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Spliced {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[derive(Default)]
struct Switch {
    answered: Option<bool>,
    waker: Option<Waker>,
}

impl SwitchSignal {
    /// Counts a stream spliced from this connection until the returned guard drops.
    pub fn spliced(&self) -> Spliced {
        self.1.send_modify(|n| *n += 1);
        Spliced(self.1.clone())
    }

    /// Waits until every spliced stream has ended.
    pub async fn splices_done(&self) {
        let mut count = self.1.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// `switched`: the response was a `101` (or a 2xx to CONNECT).
    pub fn answered(&self, switched: bool) {
        if let Ok(mut s) = self.0.lock() {
            s.answered = Some(switched);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }

    /// The answer, if given (taken); else registers `waker` for it.
    fn take(&self, waker: &Waker) -> Option<bool> {
        let mut s = self.0.lock().ok()?;
        let answer = s.answered.take();
        if answer.is_none() {
            s.waker = Some(waker.clone());
        }
        answer
    }
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
    /// Where in `buf` the current request's head starts, while it is still there (not yet
    /// handed over): a broken chunk right behind it can still turn the request into a 400.
    head_at: Option<usize>,
    /// A request that may switch protocols was handed over; nothing after it is judged
    /// until the service answers through `switch`.
    switch_pending: bool,
    switch: SwitchSignal,
    /// No request judged yet (an HTTP/2 preface is only possible now).
    fresh: bool,
    /// Whether an HTTP/2 preface may open the connection (a server that serves both, on a
    /// connection without ALPN). After ALPN `http/1.1` it is a malformed head like any.
    h2_preface: bool,
}

impl<S> H1Guard<S> {
    pub fn new(inner: S, max_head: usize, header_timeout: Duration, switch: SwitchSignal) -> Self {
        Self {
            inner,
            state: State::Head,
            buf: BytesMut::new(),
            judged: 0,
            max_head,
            eof: false,
            header_timeout,
            head_deadline: None,
            head_at: None,
            switch_pending: false,
            switch,
            fresh: true,
            h2_preface: false,
        }
    }

    /// Lets an HTTP/2 preface open the connection and pass unjudged (the server behind
    /// speaks both and no ALPN chose).
    pub fn allowing_h2_preface(mut self) -> Self {
        self.h2_preface = true;
        self
    }

    /// Refuses the current request: if its head has not been handed over it becomes one
    /// hyper answers with 400; else the connection ends after what was judged.
    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(?refusal, "HTTP/1 request refused");
        match self.head_at {
            Some(at) => {
                self.buf.truncate(at);
                self.buf.extend_from_slice(POISON);
            }
            None => self.buf.truncate(self.judged),
        }
        self.judged = self.buf.len();
        self.state = State::Closed;
    }

    /// The bytes not yet judged.
    fn unjudged(&self) -> &[u8] {
        &self.buf[self.judged..]
    }

    /// Arms the head timer when a head has begun but is not complete; disarms it otherwise.
    fn update_deadline(&mut self) {
        let in_head =
            self.state == State::Head && !self.switch_pending && !self.unjudged().is_empty();
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
                State::Closed => {
                    self.buf.truncate(self.judged);
                    return;
                }
                // What follows a request that may switch waits for the service's answer.
                State::Head if self.switch_pending => return,
                // HTTP/2 with prior knowledge (a server that serves both): not HTTP/1 at all.
                State::Head
                    if self.fresh
                        && self.h2_preface
                        && H2_PREFACE.starts_with(&rest[..rest.len().min(24)]) =>
                {
                    if rest.len() >= H2_PREFACE.len() {
                        self.state = State::Passthrough;
                        continue;
                    }
                    return;
                }
                State::Head => match judge(rest) {
                    Ok(Some((len, next, switch))) => {
                        self.fresh = false;
                        self.head_at = Some(self.judged);
                        self.judged += len;
                        self.state = next;
                        self.switch_pending = switch;
                    }
                    Ok(None) => {
                        if rest.len() > self.max_head {
                            // Too large for us to hold: hand it over, hyper answers 431.
                            self.judged = self.buf.len();
                            self.state = State::Closed;
                        }
                        return;
                    }
                    Err(refusal) => {
                        self.head_at = Some(self.judged);
                        self.refuse(refusal);
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
                    if !self.chunk_size_line() {
                        return;
                    }
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
                    if !self.trailer_line() {
                        return;
                    }
                }
            }
        }
    }

    /// Judges a chunk-size line once it is whole; false when more bytes are needed or
    /// the line is refused.
    fn chunk_size_line(&mut self) -> bool {
        let rest = self.unjudged();
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > 1024 {
                self.refuse(Refusal::BadChunkSize);
            }
            return false;
        };
        // The size, plus the CRLF after the data.
        let size = parse_chunk_size(&rest[..=end]).and_then(|size| size.checked_add(2));
        let Some(with_crlf) = size else {
            self.refuse(Refusal::BadChunkSize);
            return false;
        };
        self.judged += end + 1;
        self.state = match with_crlf {
            2 => State::Trailers,
            n => State::ChunkData(n),
        };
        true
    }

    /// Judges a trailer line once it is whole (a blank one ends the message); false when
    /// more bytes are needed.
    fn trailer_line(&mut self) -> bool {
        let rest = self.unjudged();
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > self.max_head {
                self.judged = self.buf.len();
                self.state = State::Closed;
            }
            return false;
        };
        let blank = end == 0 || (end == 1 && rest[0] == b'\r');
        self.judged += end + 1;
        if blank {
            self.state = State::Head;
        }
        true
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
                this.head_at = this.head_at.and_then(|at| at.checked_sub(n));
                if this.buf.is_empty() {
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || this.state == State::Closed {
                return Poll::Ready(Ok(()));
            }
            if this.switch_pending && this.state == State::Head {
                match this.switch.take(cx.waker()) {
                    None => return Poll::Pending,
                    Some(true) => {
                        this.switch_pending = false;
                        this.state = State::Passthrough;
                    }
                    Some(false) => this.switch_pending = false,
                }
                this.advance();
                this.update_deadline();
                continue;
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

crate::transport::io::write_through!(H1Guard);

#[cfg(test)]
mod tests;
