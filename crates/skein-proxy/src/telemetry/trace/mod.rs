//! Distributed tracing as Envoy does it for Istio: propagation ([`context`]), the sampling
//! decision ([`sampling`]), spans ([`span`]) and their export ([`export`], [`zipkin`],
//! [`otlp`]), configured by the snapshot's `telemetry.tracing`.
//!
//! On the request path there are two calls: [`begin`] when the request comes in (decide,
//! propagate, and for a sampled request start its span) and the span's end in the request's
//! single end (`Finish::done`). Upstream tries and mirrors call [`Active::start_try`] and
//! friends only when a span exists. An unsampled request costs one pass over its headers and
//! its trace headers with `x-b3-sampled: 0` for the next hop (a caller's ids as they came, or
//! new ones as Envoy writes them); nothing about spans is allocated for it.

pub(crate) mod context;
pub(crate) mod export;
pub(crate) mod otlp;
pub(crate) mod sampling;
pub(crate) mod span;
pub(crate) mod zipkin;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use crate::http::headers::X_REQUEST_ID;
use context::{Inject, Seen, TraceId};
pub(crate) use span::{Active, Config, Kind, MirrorDone};

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
    if !cfg.enabled {
        return None;
    }
    let seen = Seen::scan(h);
    if sampling::is_health_check(&seen) {
        return None;
    }
    let incoming = seen.extract();
    let side = cfg.side(kind);
    let d = sampling::decide(&seen, &incoming, side.threshold, cfg.use_rid);
    let w3c = cfg.w3c() || seen.traceparent.is_some();
    // Nobody records an unsampled trace: only the decision joins the caller's ids, which
    // pass as they came, unless a header the next hop reads first would say otherwise
    // (`b3`, or a `traceparent` that is not marked unsampled). Without a caller's context
    // the next hop gets new ids with the decision, as Envoy sends them: a bare
    // `x-b3-sampled: 0` is no parent to an OpenTelemetry SDK, which starts a sampled trace
    // of its own under a parent-based sampler.
    let decision_only = !d.sampled
        && incoming.ctx.is_some()
        && seen.b3.is_none()
        && (!w3c
            || seen
                .traceparent
                .and_then(|v| context::parse_traceparent(v.as_bytes()))
                .is_some_and(|e| e.sampled == Some(false)));
    if let Some(st) = d.request_id {
        sampling::apply(h, &X_REQUEST_ID, st);
    }
    if decision_only {
        if !cfg.w3c() {
            h.insert(&context::X_B3_SAMPLED, HeaderValue::from_static("0"));
        }
        return None;
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

    /// A mirrored copy with headers `h` to `cluster`, sent now: a span of its own, which
    /// the copy's task ends through the handle returned.
    pub(crate) fn mirror(&mut self, cluster: &Arc<str>, h: &mut HeaderMap) -> Arc<MirrorDone> {
        let id = new_id();
        self.inject_child(id, h);
        let done = Arc::new(MirrorDone::default());
        self.mirror = Some(span::MirrorSpan {
            id,
            cluster: Arc::clone(cluster),
            start: SystemTime::now(),
            done: Arc::clone(&done),
        });
        done
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use skein_snapshot::Snapshot;
    use skein_snapshot::telemetry::TracingProvider;

    use crate::telemetry::access_log::LogRecord;
    use context::{X_B3_PARENT_SPAN_ID, X_B3_SAMPLED, X_B3_SPAN_ID, X_B3_TRACE_ID};

    fn cfg(pct: f64) -> Arc<Config> {
        let mut snap = Snapshot::default();
        snap.telemetry.tracing.provider = Some(TracingProvider::Zipkin {
            address: "127.0.0.1:9411".into(),
            max_tag_length: 0,
        });
        snap.telemetry.tracing.sampling.client = pct;
        snap.telemetry.tracing.sampling.server = pct;
        Arc::new(Config::compile(&snap, false))
    }

    fn request(rid: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static(rid));
        h
    }

    fn hex(h: &HeaderMap, n: &http::HeaderName) -> u64 {
        u64::from_str_radix(h[n].to_str().unwrap(), 16).unwrap()
    }

    #[test]
    fn unsampled_requests_propagate_without_a_span() {
        let mut h = request("0000270f-2fa1-41d2-883f-0016d3cca427");
        let a = begin(&cfg(1.0), Kind::Client, false, &mut h, || {
            unreachable!("no name")
        });
        assert!(a.is_none());
        assert_eq!(h[&X_B3_SAMPLED], "0");
        // New ids, so that the app behind sees a parent that says "not sampled".
        let trace_id = h[&X_B3_TRACE_ID].to_str().unwrap();
        assert_eq!(trace_id.len(), 32, "{trace_id}");
        assert_ne!(u128::from_str_radix(trace_id, 16).unwrap(), 0);
        assert_ne!(hex(&h, &X_B3_SPAN_ID), 0);
        assert!(h.get(&X_B3_PARENT_SPAN_ID).is_none());
        assert_eq!(h[&X_REQUEST_ID], "0000270f-2fa1-41d2-883f-0016d3cca427");
        // A caller's context passes as it came, with the decision.
        let mut h = request("0000270f-2fa1-41d2-883f-0016d3cca427");
        h.insert(&X_B3_TRACE_ID, HeaderValue::from_static("64fe8b2a57d3eff7"));
        h.insert(&X_B3_SPAN_ID, HeaderValue::from_static("e457b5a2e4d86bd1"));
        assert!(begin(&cfg(1.0), Kind::Server, false, &mut h, String::new).is_none());
        assert_eq!(h[&X_B3_TRACE_ID], "64fe8b2a57d3eff7");
        assert_eq!(h[&X_B3_SPAN_ID], "e457b5a2e4d86bd1");
        assert_eq!(h[&X_B3_SAMPLED], "0");
        // A `b3` the next hop would read first is rewritten to carry the decision.
        let mut h = request("0000270f-2fa1-41d2-883f-0016d3cca427");
        h.insert(
            "b3",
            HeaderValue::from_static("64fe8b2a57d3eff7-e457b5a2e4d86bd1"),
        );
        assert!(begin(&cfg(1.0), Kind::Server, false, &mut h, String::new).is_none());
        assert!(h.get("b3").is_none());
        assert_eq!(h[&X_B3_SAMPLED], "0");
        assert_eq!(hex(&h, &X_B3_PARENT_SPAN_ID), 0xe457b5a2e4d86bd1);
        // A sampled traceparent under an unsampled B3 decision is rewritten too.
        let mut h = request("0000270f-2fa1-41d2-883f-0016d3cca427");
        h.insert("x-b3-sampled", HeaderValue::from_static("0"));
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert!(begin(&cfg(1.0), Kind::Server, false, &mut h, String::new).is_none());
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn disabled_tracing_and_health_checks_touch_nothing() {
        let mut snap = Snapshot::default();
        snap.telemetry.tracing.enabled = false;
        let off = Arc::new(Config::compile(&snap, false));
        let mut h = request("00000000-2fa1-41d2-883f-0016d3cca427");
        assert!(begin(&off, Kind::Server, false, &mut h, String::new).is_none());
        assert_eq!(h.len(), 1);
        // Enabled, but no provider at all: an Envoy without a tracer writes no trace headers.
        let no_provider = Arc::new(Config::compile(&Snapshot::default(), false));
        assert!(begin(&no_provider, Kind::Server, false, &mut h, String::new).is_none());
        assert_eq!(h.len(), 1, "{h:?}");
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("kube-probe/1.30"),
        );
        assert!(begin(&cfg(100.0), Kind::Server, false, &mut h, String::new).is_none());
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn disabled_reporting_still_propagates_the_decision() {
        let mut snap = Snapshot::default();
        snap.telemetry.tracing.sampling.server = 100.0;
        snap.telemetry.tracing.disable_span_reporting.server = true;
        snap.telemetry.tracing.provider = Some(TracingProvider::Zipkin {
            address: "127.0.0.1:9411".into(),
            max_tag_length: 0,
        });
        let c = Arc::new(Config::compile(&snap, false));
        let mut h = request("00000000-2fa1-41d2-883f-0016d3cca427");
        assert!(begin(&c, Kind::Server, false, &mut h, String::new).is_none());
        assert_eq!(h[&X_B3_SAMPLED], "1");
        assert_eq!(h[&X_REQUEST_ID], "00000000-2fa1-91d2-883f-0016d3cca427");
    }

    #[test]
    fn a_gateway_sends_its_upstream_span_and_reports_both() {
        let mut h = request("00000000-2fa1-41d2-883f-0016d3cca427");
        h.insert(
            &X_B3_TRACE_ID,
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7"),
        );
        h.insert(&X_B3_SPAN_ID, HeaderValue::from_static("e457b5a2e4d86bd1"));
        let mut a = begin(&cfg(100.0), Kind::Server, true, &mut h, || "gw".into()).unwrap();
        assert_eq!(
            a.parent,
            Some(0xe457b5a2e4d86bd1),
            "the caller's span is the parent"
        );
        let upstream = hex(&h, &X_B3_SPAN_ID);
        assert_ne!(upstream, a.id);
        assert_eq!(hex(&h, &X_B3_PARENT_SPAN_ID), a.id);
        a.start_try(1, &mut h);
        assert_eq!(
            hex(&h, &X_B3_SPAN_ID),
            upstream,
            "the first try is that span"
        );
        a.end_try("10.0.0.1:80".parse().unwrap(), 503);
        a.start_try(2, &mut h);
        let retry = hex(&h, &X_B3_SPAN_ID);
        a.end_try("10.0.0.2:80".parse().unwrap(), 200);
        let mut mh = HeaderMap::new();
        let before_mirror = SystemTime::now();
        let done = a.mirror(
            &Arc::from("outbound|80||shadow.ns.svc.cluster.local"),
            &mut mh,
        );
        // The copy's task says when it was answered: the span lasts as long as the copy.
        done.end(Duration::from_millis(2), 200);
        let mirror = hex(&mh, &X_B3_SPAN_ID);
        let a_id = a.id;
        let local = "127.0.0.1:1".parse().unwrap();
        let mut rec = LogRecord::new(local, local);
        rec.code = 200;
        let spans = a.finish(&rec, Duration::from_millis(3));
        assert_eq!(spans.len(), 4);
        let by_id = |id: u64| spans.iter().find(|s| s.id == id).unwrap();
        for id in [upstream, retry, mirror] {
            assert_eq!(by_id(id).parent, Some(a_id));
            assert_eq!(by_id(id).kind, Kind::Client);
        }
        let tag = |id: u64, k: &str| {
            by_id(id)
                .tags
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(tag(upstream, "http.status_code").unwrap(), "503");
        assert_eq!(tag(upstream, "error").unwrap(), "true");
        assert_eq!(tag(retry, "upstream_address").unwrap(), "10.0.0.2:80");
        assert_eq!(tag(retry, "error"), None);
        assert_eq!(by_id(mirror).name, "shadow.ns.svc.cluster.local:80/*");
        assert_eq!(by_id(mirror).duration_us, 2000);
        assert!(by_id(mirror).start_us >= span::micros(before_mirror));
        assert_eq!(tag(mirror, "http.status_code").unwrap(), "200");
        let server = by_id(a_id);
        assert_eq!((server.kind, server.duration_us), (Kind::Server, 3000));
        assert_eq!(server.trace_id.high, 0x80f198ee56343ba8);
        assert!(
            server.tags.windows(2).all(|w| w[0].0 <= w[1].0),
            "tags sorted"
        );
    }
}
