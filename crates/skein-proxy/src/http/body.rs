//! The response body streamed downstream: a local reply's bytes, or the upstream's frames
//! passed through untouched (bytes counted) with the request's [`Finish`] run at its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::finish::{End, Finish};
use crate::telemetry::grpc::{self, MessageCounter};

/// The response body sent downstream.
#[derive(Debug)]
pub enum ProxyBody {
    /// A locally generated body (direct response, error reply).
    Full(Option<Bytes>),
    /// The upstream's body, with the bookkeeping to run when it ends.
    Upstream(UpstreamBody),
}

impl ProxyBody {
    /// A locally generated body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ProxyBody::Full((!b.is_empty()).then_some(b))
    }
}

/// An upstream response body. When it ends (or is dropped) the upstream connection goes back
/// to its pool, counters are released, and the access log line and metrics are recorded.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    sent: u64,
    /// gRPC responses: the messages sent so far.
    grpc: Option<(MessageCounter, u64)>,
    finish: Option<Box<Finish>>,
}

impl UpstreamBody {
    /// Wraps an upstream body.
    pub fn new(inner: Incoming, finish: Box<Finish>) -> Self {
        let grpc = finish.received.grpc.then(|| (MessageCounter::default(), 0));
        let mut b = UpstreamBody {
            inner,
            sent: 0,
            grpc,
            finish: Some(finish),
        };
        if b.inner.is_end_stream() {
            b.complete(End::Complete);
        }
        b
    }

    fn complete(&mut self, end: End) {
        if let Some(mut f) = self.finish.take() {
            if let Some((_, n)) = self.grpc {
                f.response_messages = n;
            }
            f.done(end, self.sent);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => {
                let r = Pin::new(&mut u.inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            u.sent += d.len() as u64;
                            if let Some((c, n)) = &mut u.grpc {
                                *n += c.feed(d);
                            }
                        } else if let (Some(t), Some(fin)) = (f.trailers_ref(), &mut u.finish)
                            && let Some(s) = grpc::status(t)
                        {
                            fin.grpc_status = Some(s);
                        }
                        if u.inner.is_end_stream() {
                            u.complete(End::Complete);
                        }
                    }
                    Poll::Ready(None) => u.complete(End::Complete),
                    Poll::Ready(Some(Err(_))) => u.complete(End::UpstreamError),
                    Poll::Pending => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.finish.is_none() || u.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(u) => u.inner.size_hint(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropped before the end: the downstream went away (or the body was never polled
        // because it was empty, which `is_end_stream` tells apart).
        let end = if self.inner.is_end_stream() {
            End::Complete
        } else {
            End::DownstreamGone
        };
        self.complete(end);
    }
}
