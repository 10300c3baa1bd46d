//! Request bodies that can be sent a second time, for the one case where that is always
//! safe: the upstream refused the stream without processing it. An HTTP/2 server that
//! sends GOAWAY names the last stream it will process; every stream above it gets an error
//! and was never seen by the application (RFC 9113 §6.8), as does a stream reset with
//! REFUSED_STREAM (§8.7). nginx, for one, sends GOAWAY after `keepalive_requests`
//! requests on a connection, refusing whatever was in flight behind the last one.
//!
//! The body copies what it passes on, up to [`REPLAY_LIMIT`] bytes, into a record that
//! lives only while the sender waits for the response head; a body that ended within the
//! limit can be rebuilt from it. A connection going away (GOAWAY) is retried only for
//! idempotent methods, REFUSED_STREAM for any (see [`Refusal`]).
//!
//! Every request body ward forwards is one of these (without a record where no retry can
//! happen), so it is also where trailers lose the headers only ward may set, and where a
//! request with a [`BodyLimit`] is cut off once its body passes it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The most body bytes kept for a replay; larger bodies are streamed without a record.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// A request extension: the most body bytes the request may carry, however it is framed
/// (a declared `Content-Length` is judged before it is sent; this catches the rest).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub u64);

/// Why a forwarded request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Read(#[from] hyper::Error),
    #[error("request body over its limit")]
    TooLarge,
}

#[derive(Default)]
struct Record {
    /// A copy of the body so far: copied, not referenced, so that a recorded frame never
    /// keeps the (much larger) connection read buffer it was cut from alive.
    data: BytesMut,
    trailers: Option<HeaderMap>,
    /// Past the limit: no replay.
    overflow: bool,
    ended: bool,
    /// The body went past its [`BodyLimit`] and was cut off.
    over_limit: bool,
}

impl Record {
    /// Keeps what one poll of the live body produced.
    fn note(&mut self, frame: &Option<Result<Frame<Bytes>, BodyError>>, at_end: bool) {
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if self.overflow || self.data.len() + data.len() > REPLAY_LIMIT {
                        self.overflow = true;
                        self.data = BytesMut::new();
                    } else {
                        self.data.extend_from_slice(data);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    // Trailers end a body; hyper polls no further after them.
                    self.trailers = Some(trailers.clone());
                    self.ended = true;
                }
            }
            None => self.ended = true,
            Some(Err(e)) => {
                self.overflow = true;
                self.over_limit |= matches!(e, BodyError::TooLarge);
            }
        }
        if at_end {
            self.ended = true;
        }
    }
}

/// A request body that keeps what it sent (see the module docs).
pub struct ReplayBody {
    inner: Inner,
}

enum Inner {
    Live {
        body: Incoming,
        /// Weak: once the sender has its response (or gave up) the record is dropped and
        /// a long upload or stream stops recording.
        record: Weak<Mutex<Record>>,
        /// Body bytes it may still carry.
        budget: u64,
    },
    Replay {
        data: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

/// What is needed to send a request again: its head and the record of its body.
pub struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeaderMap,
    record: Arc<Mutex<Record>>,
}

impl ReplayBody {
    /// Wraps `req`'s body; the returned [`Replay`] can rebuild the request later.
    pub fn wrap(req: Request<Incoming>) -> (Request<ReplayBody>, Replay) {
        let (parts, body) = req.into_parts();
        // hyper stops polling a body once it says it has ended, so "ended" is learnt from
        // `is_end_stream` as well as from the final `None`.
        let record = Arc::new(Mutex::new(Record {
            ended: body.is_end_stream(),
            // A body announced as larger than the limit is never recorded.
            overflow: body.size_hint().lower() > REPLAY_LIMIT as u64,
            ..Record::default()
        }));
        let replay = Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            record: record.clone(),
        };
        // A body that has already ended has nothing left to record: the body holds no
        // link then, and neither polls nor `is_end_stream` touch the record.
        let link = if body.is_end_stream() {
            Weak::new()
        } else {
            Arc::downgrade(&record)
        };
        let budget = parts
            .extensions
            .get::<BodyLimit>()
            .map_or(u64::MAX, |l| l.0);
        let body = ReplayBody {
            inner: Inner::Live {
                body,
                record: link,
                budget,
            },
        };
        (Request::from_parts(parts, body), replay)
    }
}

impl ReplayBody {
    /// A body passed on without a record (a hop that never retries).
    pub fn pass(body: Incoming) -> Self {
        ReplayBody {
            inner: Inner::Live {
                body,
                record: Weak::new(),
                budget: u64::MAX,
            },
        }
    }
}

impl Replay {
    /// The request again, if its whole body was recorded.
    fn request(&self) -> Option<Request<ReplayBody>> {
        let record = self.record.lock().ok()?;
        if record.overflow || !record.ended {
            return None;
        }
        let data = if record.data.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([Bytes::copy_from_slice(&record.data)])
        };
        let body = ReplayBody {
            inner: Inner::Replay {
                data,
                trailers: record.trailers.clone(),
            },
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().inner {
            Inner::Live {
                body,
                record,
                budget,
            } => {
                let mut polled = Pin::new(&mut *body).poll_frame(cx).map_err(BodyError::Read);
                if let Poll::Ready(Some(Ok(frame))) = &polled
                    && let Some(data) = frame.data_ref()
                {
                    match budget.checked_sub(data.len() as u64) {
                        Some(left) => *budget = left,
                        None => polled = Poll::Ready(Some(Err(BodyError::TooLarge))),
                    }
                }
                // Every hop ward sends on goes through here: no trailer may carry a header
                // only ward sets (HTTP/1.1 chunked and HTTP/2 trailers alike).
                if let Poll::Ready(Some(Ok(frame))) = &mut polled
                    && let Some(trailers) = frame.trailers_mut()
                {
                    crate::http::strip_mesh_only(trailers);
                }
                if let Poll::Ready(frame) = &polled
                    && let Some(record) = record.upgrade()
                    && let Ok(mut record) = record.lock()
                {
                    record.note(frame, body.is_end_stream());
                }
                polled
            }
            Inner::Replay { data, trailers } => Poll::Ready(match data.pop_front() {
                Some(chunk) => Some(Ok(Frame::data(chunk))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Live { body, record, .. } => {
                let ended = body.is_end_stream();
                // hyper may learn that the body ended from here and never poll it again.
                if ended
                    && let Some(record) = record.upgrade()
                    && let Ok(mut record) = record.lock()
                {
                    record.ended = true;
                }
                ended
            }
            Inner::Replay { data, trailers } => data.is_empty() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Live { body, .. } => body.size_hint(),
            Inner::Replay { data, trailers: _ } => {
                SizeHint::with_exact(data.iter().map(|d| d.len() as u64).sum())
            }
        }
    }
}

/// Why an upstream error allows sending the request again, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The stream was reset with REFUSED_STREAM: that stream was not processed (RFC 9113
    /// §8.7), whatever the method.
    RefusedStream,
    /// The connection is going away (a remote NO_ERROR GOAWAY). h2 reports it both to the
    /// streams above the GOAWAY's last-stream-id, which were not processed, and — in a
    /// narrow race with a graceful two-step GOAWAY — to a stream the peer may still
    /// process; so only idempotent requests (RFC 9110 §9.2.2) are sent again for it.
    GoingAway,
}

/// Whether `err` lets a request be sent again, and why.
pub fn refusal(err: &hyper::Error) -> Option<Refusal> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if !h2.is_remote() {
                return None;
            }
            if h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(Refusal::RefusedStream);
            }
            if h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR) {
                return Some(Refusal::GoingAway);
            }
            return None;
        }
        source = e.source();
    }
    None
}

impl Replay {
    /// Whether the body was cut off at its [`BodyLimit`].
    pub fn over_limit(&self) -> bool {
        self.record.lock().is_ok_and(|r| r.over_limit)
    }

    /// The request again, if `why` allows it for this request and its whole body was
    /// recorded.
    pub fn again(&self, why: Refusal) -> Option<Request<ReplayBody>> {
        if why == Refusal::GoingAway && !self.method.is_idempotent() {
            return None;
        }
        self.request()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn replay_of(record: Record) -> Replay {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        Replay {
            method: http::Method::POST,
            uri: "http://app/ledger.v1.Ledger/Post".parse().unwrap(),
            version: http::Version::HTTP_2,
            headers,
            record: Arc::new(Mutex::new(record)),
        }
    }

    #[tokio::test]
    async fn a_recorded_body_is_sent_again_whole() {
        let mut record = Record::default();
        record.note(&Some(Ok(Frame::data(Bytes::from_static(b"abc")))), false);
        record.note(&Some(Ok(Frame::data(Bytes::from_static(b"def")))), true);
        let replay = replay_of(record);
        let req = replay.request().expect("replayable");
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().path(), "/ledger.v1.Ledger/Post");
        assert_eq!(req.headers()["content-type"], "application/grpc");
        assert_eq!(req.body().size_hint().exact(), Some(6));
        let body = req.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"abcdef");
        // A second replay is possible too (a refused retry can be refused again).
        assert!(replay.request().is_some());
        // A POST is sent again for REFUSED_STREAM only, never for a connection going away.
        assert!(replay.again(Refusal::RefusedStream).is_some());
        assert!(replay.again(Refusal::GoingAway).is_none());
    }

    #[tokio::test]
    async fn trailers_are_replayed_after_the_data() {
        let mut record = Record::default();
        record.note(&Some(Ok(Frame::data(Bytes::from_static(b"x")))), false);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        record.note(&Some(Ok(Frame::trailers(trailers))), false);
        record.note(&None, false);
        let collected = replay_of(record)
            .request()
            .expect("replayable")
            .into_body()
            .collect()
            .await
            .expect("body");
        assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
        assert_eq!(&collected.to_bytes()[..], b"x");
    }

    #[test]
    fn unfinished_or_oversized_bodies_are_not_replayed() {
        let mut unfinished = Record::default();
        unfinished.note(&Some(Ok(Frame::data(Bytes::from_static(b"part")))), false);
        assert!(replay_of(unfinished).request().is_none());

        let mut big = Record::default();
        let chunk = Bytes::from(vec![0u8; REPLAY_LIMIT / 2 + 1]);
        big.note(&Some(Ok(Frame::data(chunk.clone()))), false);
        big.note(&Some(Ok(Frame::data(chunk))), true);
        assert!(
            big.overflow && big.data.is_empty(),
            "nothing kept past the limit"
        );
        assert!(replay_of(big).request().is_none());
    }
}
