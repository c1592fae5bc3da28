//! Distributed tracing as Envoy does it for Istio: propagation ([`context`]), the sampling
//! decision ([`sampling`]), spans ([`span`]) and their export ([`export`], [`zipkin`],
//! [`otlp`]), configured by the snapshot's `telemetry.tracing`.
//!
//! On the request path there are two calls: [`begin`] when the request comes in (decide,
//! propagate, and for a sampled request start its span) and the span's end in the request's
//! single end (`Finish::done`). Upstream tries and mirrors call [`Active::start_try`] and
//! friends only when a span exists. An unsampled request costs the header look-ups, the ids
//! and the propagated headers; nothing about spans is allocated for it.

pub(crate) mod context;
pub(crate) mod export;
pub(crate) mod otlp;
pub(crate) mod sampling;
pub(crate) mod span;
pub(crate) mod zipkin;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::http::headers::X_REQUEST_ID;
use context::{Inject, TRACEPARENT, TraceId, extract};
pub(crate) use span::{Active, Config, Kind};

/// A random non-zero id.
fn new_id() -> u64 {
    fastrand::u64(1..)
}

/// The request came in with headers `h` (after the proxy's own header work) on a listener
/// whose spans are of `kind` (`gateway`: the upstream tries get spans of their own). Writes
/// the request id's new trace status and the trace headers the next hop gets; returns the
/// request's span when it is sampled and reported. `name` gives the span's name.
pub(crate) fn begin(
    cfg: &Arc<Config>,
    kind: Kind,
    gateway: bool,
    h: &mut HeaderMap,
    name: impl FnOnce() -> String,
) -> Option<Box<Active>> {
    if !cfg.enabled || sampling::is_health_check(h) {
        return None;
    }
    let incoming = extract(h);
    let side = cfg.side(kind);
    let d = sampling::decide(
        h,
        h.get(&X_REQUEST_ID),
        &incoming,
        side.threshold,
        cfg.use_rid,
    );
    if let Some(st) = d.request_id {
        sampling::apply(h, &X_REQUEST_ID, st);
    }
    let (trace_id, parent, debug) = match incoming.ctx {
        Some(c) => (c.trace_id, Some(c.span_id), c.debug),
        None => (
            TraceId {
                high: new_id(),
                low: fastrand::u64(..),
            },
            None,
            false,
        ),
    };
    let id = new_id();
    let report = d.sampled && side.report;
    // A gateway's upstream try has a span of its own: its id goes upstream.
    let first_try = (gateway && report).then(new_id);
    let w3c = cfg.w3c() || h.contains_key(&TRACEPARENT);
    let inj = Inject {
        trace_id,
        span_id: first_try.unwrap_or(id),
        parent: if first_try.is_some() {
            Some(id)
        } else {
            parent
        },
        sampled: d.sampled,
        b3: !cfg.w3c(),
        w3c,
    };
    inj.apply(h);
    if !report {
        return None;
    }
    let mut a = Box::new(Active {
        cfg: Arc::clone(cfg),
        kind,
        trace_id,
        id,
        parent,
        debug,
        name: name(),
        header_tags: Vec::new(),
        tries: Vec::new(),
        span_per_try: gateway,
        first_try,
        w3c,
        mirror: None,
    });
    a.read_headers(h);
    Some(a)
}

impl Active {
    /// Before upstream try `attempt` (1-based): a gateway's tries and every retry get a span
    /// of their own, whose id goes upstream in `h`.
    pub(crate) fn start_try(&mut self, attempt: u32, h: &mut HeaderMap) {
        if !self.span_per_try && attempt < 2 {
            return;
        }
        let id = match self.first_try.take() {
            Some(id) if attempt == 1 => id,
            _ => new_id(),
        };
        self.inject_child(id, h);
        self.tries.push(span::Try {
            id,
            start: SystemTime::now(),
            duration: Duration::ZERO,
            upstream: None,
            code: 0,
        });
    }

    /// After a try on `upstream` that took `took` and answered `code` (0: none).
    pub(crate) fn end_try(&mut self, upstream: std::net::SocketAddr, code: u16) {
        if let Some(t) = self.tries.last_mut()
            && t.upstream.is_none()
        {
            t.duration = t.start.elapsed().unwrap_or_default();
            t.upstream = Some(upstream);
            t.code = code;
        }
    }

    /// A mirrored copy with headers `h` to `cluster`: a span of its own.
    pub(crate) fn mirror(&mut self, cluster: &Arc<str>, h: &mut HeaderMap) {
        let id = new_id();
        self.inject_child(id, h);
        self.mirror = Some((id, Arc::clone(cluster)));
    }

    fn inject_child(&self, id: u64, h: &mut HeaderMap) {
        Inject {
            trace_id: self.trace_id,
            span_id: id,
            parent: Some(self.id),
            sampled: true,
            b3: !self.cfg.w3c(),
            w3c: self.w3c,
        }
        .apply(h);
    }
}
