//! The trace headers an app copies from the request it serves to the requests it makes, as
//! Istio requires of applications: without them the sidecars' spans cannot be joined.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// Every header Istio's documentation asks applications to propagate: Envoy's request id,
/// W3C trace context, B3 (multi and single), Lightstep's `x-ot-span-context`, and the
/// OpenCensus/Stackdriver headers. The one list of them in the blog.
pub const TRACE_HEADERS: [HeaderName; 12] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-b3-traceid"),
    HeaderName::from_static("x-b3-spanid"),
    HeaderName::from_static("x-b3-parentspanid"),
    HeaderName::from_static("x-b3-sampled"),
    HeaderName::from_static("x-b3-flags"),
    HeaderName::from_static("b3"),
    HeaderName::from_static("x-ot-span-context"),
    HeaderName::from_static("x-cloud-trace-context"),
    HeaderName::from_static("grpc-trace-bin"),
];

/// The trace headers of a request being served, taken before anything else touches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders(Vec<(HeaderName, HeaderValue)>);

impl TraceHeaders {
    /// Every value of every [`TRACE_HEADERS`] entry in `headers`, in order.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut out = Vec::new();
        for name in &TRACE_HEADERS {
            for value in headers.get_all(name) {
                out.push((name.clone(), value.clone()));
            }
        }
        Self(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Makes the trace headers of `to` exactly these: any it had are replaced, every value
    /// is kept (a header sent twice stays twice), and a header the request served did not
    /// carry is not sent.
    pub fn apply(&self, to: &mut HeaderMap) {
        for name in &TRACE_HEADERS {
            to.remove(name);
        }
        for (name, value) in &self.0 {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Copies the trace headers of the request served (`from`) to a request being made (`to`).
pub fn copy_trace_headers(from: &HeaderMap, to: &mut HeaderMap) {
    TraceHeaders::from_headers(from).apply(to);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn every_listed_header_is_copied() {
        let incoming: Vec<(String, String)> = TRACE_HEADERS
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str().to_owned(), format!("value-{i}")))
            .collect();
        let pairs: Vec<(&str, &str)> = incoming
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("cookie", "secret"), ("authorization", "Bearer x")])
            .collect();
        let from = map(&pairs);
        let mut to = map(&[("host", "was-service")]);
        copy_trace_headers(&from, &mut to);
        for (i, name) in TRACE_HEADERS.iter().enumerate() {
            assert_eq!(
                to.get(name).and_then(|v| v.to_str().ok()),
                Some(format!("value-{i}").as_str()),
                "{name}"
            );
        }
        assert!(!to.contains_key("cookie"), "only trace headers are copied");
        assert!(!to.contains_key("authorization"));
        assert_eq!(to.get("host").unwrap(), "was-service");
        assert_eq!(to.len(), TRACE_HEADERS.len() + 1);
        // The list as Istio's FAQ gives it, plus the OpenCensus ones.
        for required in [
            "x-request-id",
            "traceparent",
            "tracestate",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
            "x-b3-flags",
            "b3",
            "x-ot-span-context",
        ] {
            assert!(TRACE_HEADERS.iter().any(|n| n == required), "{required}");
        }
    }

    #[test]
    fn multiple_values_are_all_kept_in_order() {
        let from = map(&[
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
            ("x-request-id", "r1"),
        ]);
        let mut to = HeaderMap::new();
        copy_trace_headers(&from, &mut to);
        let states: Vec<&str> = to
            .get_all("tracestate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(states, ["a=1", "b=2"]);
        assert_eq!(to.get("x-request-id").unwrap(), "r1");
    }

    #[test]
    fn none_in_means_none_out_and_stale_ones_are_replaced() {
        let from = map(&[("accept", "application/json")]);
        assert!(TraceHeaders::from_headers(&from).is_empty());
        let mut to = map(&[
            ("traceparent", "00-stale-stale-01"),
            ("accept", "text/html"),
        ]);
        copy_trace_headers(&from, &mut to);
        assert!(!to.contains_key("traceparent"), "{to:?}");
        assert_eq!(to.len(), 1);

        let from = map(&[("traceparent", "00-new-new-01")]);
        let mut to = map(&[("traceparent", "00-old-old-01"), ("traceparent", "x")]);
        copy_trace_headers(&from, &mut to);
        let all: Vec<_> = to.get_all("traceparent").iter().collect();
        assert_eq!(all, ["00-new-new-01"]);
    }
}
