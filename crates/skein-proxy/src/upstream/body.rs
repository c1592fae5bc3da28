//! The request body streamed upstream: hyper frames passed through untouched, bytes
//! counted, and optionally copied (the tee that retries and mirrors replay).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::telemetry::grpc::MessageCounter;

/// What a request brought from downstream, for its metrics: the head's size (fixed when the
/// request arrives), whether it is gRPC, and the body's bytes and gRPC messages (counted as
/// the body streams).
#[derive(Debug, Default)]
pub struct ReqCounts {
    /// The request head's wire size.
    pub head_bytes: u64,
    /// `content-type: application/grpc*`: messages are counted.
    pub grpc: bool,
    /// Body bytes received.
    pub body_bytes: AtomicU64,
    /// gRPC messages received.
    pub messages: AtomicU64,
}

/// The downstream request body on its way upstream, counting bytes (and gRPC messages);
/// optionally copying them (up to a bound) so that a retry or a mirror can send them again.
#[derive(Debug)]
pub struct ReqBody {
    inner: Option<Incoming>,
    received: Arc<ReqCounts>,
    grpc: Option<MessageCounter>,
    tee: Option<Tee>,
    replay: Option<Bytes>,
    replay_trailers: Option<HeaderMap>,
}

/// Where a copied body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStatus {
    /// Still streaming.
    Streaming,
    /// Fully copied.
    Complete,
    /// Longer than the bound: no copy.
    TooLarge,
}

#[derive(Debug, Default)]
struct CopyData {
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
}

#[derive(Debug)]
struct Tee {
    data: Arc<Mutex<CopyData>>,
    status: watch::Sender<CopyStatus>,
    limit: usize,
}

impl Tee {
    fn frame(&self, f: &Frame<Bytes>) {
        if *self.status.borrow() != CopyStatus::Streaming {
            return;
        }
        let Ok(mut d) = self.data.lock() else {
            self.status.send_replace(CopyStatus::TooLarge);
            return;
        };
        if let Some(b) = f.data_ref() {
            d.len += b.len();
            if d.len > self.limit {
                d.chunks = Vec::new();
                drop(d);
                self.status.send_replace(CopyStatus::TooLarge);
                return;
            }
            d.chunks.push(b.clone());
        } else if let Some(t) = f.trailers_ref() {
            d.trailers = Some(t.clone());
        }
    }

    fn complete(&self) {
        if *self.status.borrow() == CopyStatus::Streaming {
            self.status.send_replace(CopyStatus::Complete);
        }
    }
}

/// A handle on the copy a [`ReqBody::teed`] body makes.
#[derive(Debug, Clone)]
pub struct BodyCopy {
    data: Arc<Mutex<CopyData>>,
    status: watch::Receiver<CopyStatus>,
}

impl BodyCopy {
    /// Where the copy stands now.
    pub fn status(&self) -> CopyStatus {
        *self.status.borrow()
    }

    /// A body that replays the copy, if the whole body was copied.
    pub fn replay(&self) -> Option<ReqBody> {
        if self.status() != CopyStatus::Complete {
            return None;
        }
        let d = self.data.lock().ok()?;
        let bytes = match d.chunks.len() {
            0 => Bytes::new(),
            1 => d.chunks[0].clone(),
            _ => Bytes::from(d.chunks.concat()),
        };
        Some(ReqBody::replay(bytes, d.trailers.clone()))
    }

    /// Waits until the body is fully copied (None: too large, or the body was dropped
    /// before its end).
    pub async fn wait_replay(mut self) -> Option<ReqBody> {
        let st = *self
            .status
            .wait_for(|s| *s != CopyStatus::Streaming)
            .await
            .ok()?;
        (st == CopyStatus::Complete)
            .then(|| self.replay())
            .flatten()
    }
}

impl ReqBody {
    /// Wraps a downstream body.
    pub fn new(inner: Incoming, received: Arc<ReqCounts>) -> Self {
        ReqBody {
            inner: Some(inner),
            grpc: received.grpc.then(MessageCounter::default),
            received,
            tee: None,
            replay: None,
            replay_trailers: None,
        }
    }

    /// Wraps a downstream body and copies it as it streams, up to `limit` bytes (a body
    /// announcing a longer length is not copied at all).
    pub fn teed(inner: Incoming, received: Arc<ReqCounts>, limit: usize) -> (Self, BodyCopy) {
        let initial = if inner.is_end_stream() {
            CopyStatus::Complete
        } else if inner.size_hint().lower() > limit as u64 {
            CopyStatus::TooLarge
        } else {
            CopyStatus::Streaming
        };
        let (tx, rx) = watch::channel(initial);
        let data = Arc::new(Mutex::new(CopyData::default()));
        let copy = BodyCopy {
            data: Arc::clone(&data),
            status: rx,
        };
        let body = ReqBody {
            inner: Some(inner),
            grpc: received.grpc.then(MessageCounter::default),
            received,
            tee: Some(Tee {
                data,
                status: tx,
                limit,
            }),
            replay: None,
            replay_trailers: None,
        };
        (body, copy)
    }

    /// A body replaying copied bytes (not counted as received again).
    pub fn replay(bytes: Bytes, trailers: Option<HeaderMap>) -> Self {
        ReqBody {
            inner: None,
            received: Arc::new(ReqCounts::default()),
            grpc: None,
            tee: None,
            replay: (!bytes.is_empty()).then_some(bytes),
            replay_trailers: trailers,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ReqBody::replay(Bytes::new(), None)
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(b) = this.replay.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if let Some(t) = this.replay_trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.received
                        .body_bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                    if let Some(g) = &mut this.grpc {
                        let n = g.feed(d);
                        if n > 0 {
                            this.received.messages.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
                if let Some(t) = &this.tee {
                    t.frame(f);
                }
            }
            Poll::Ready(None) => {
                if let Some(t) = &this.tee {
                    t.complete();
                }
            }
            _ => {}
        }
        if let (Some(t), Some(i)) = (&this.tee, &this.inner)
            && i.is_end_stream()
        {
            t.complete();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_none()
            && self.replay_trailers.is_none()
            && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(b) = &self.replay {
            return SizeHint::with_exact(b.len() as u64);
        }
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}
