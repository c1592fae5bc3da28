//! Whether a request is traced, as Envoy decides it with Istio's settings
//! (`client_sampling` and `overall_sampling` 100 %, `random_sampling` the configured
//! percentage):
//!
//! 1. The request id's status (`x-request-id`, index 14), when the request id is trusted
//!    (`useRequestIdForTraceSampling`): an id already marked traced stays so; otherwise
//!    `x-client-trace-id` marks it client-forced (`b`), `x-envoy-force-trace` forced (`a`),
//!    and the random percentage, compared with the id's first 32 bits mod 10000, sampled
//!    (`9`). The new status is written back into the id.
//! 2. An incoming decision (B3 sampled state or flags, `traceparent` flags) wins over 1.
//! 3. Health checks are never traced.

use http::header::HeaderMap;

use super::context::{Extracted, RidStatus, Seen, rid_sample_value, rid_status, with_rid_status};

/// A percentage (0–100, in steps of 0.01) as the numerator over 10000 Envoy compares with.
pub(crate) fn per_ten_thousand(percent: f64) -> u64 {
    if percent.is_nan() || percent <= 0.0 {
        return 0;
    }
    (percent.min(100.0) * 100.0).round() as u64
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The request is traced (its spans are recorded).
    pub(crate) sampled: bool,
    /// The status to write into the request id, when it changed.
    pub(crate) request_id: Option<RidStatus>,
}

/// Decides for a request whose tracing headers are `seen` and whose incoming context is
/// `incoming`. `threshold` is [`per_ten_thousand`] of the percentage; `use_rid` is
/// `useRequestIdForTraceSampling`.
pub(crate) fn decide(
    seen: &Seen<'_>,
    incoming: &Extracted,
    threshold: u64,
    use_rid: bool,
) -> Decision {
    let rid = seen.request_id;
    let status = rid.and_then(|v| rid_status(v.as_bytes()));
    let (traced, new_status) = match status {
        Some(s) if use_rid && s.traced() => (true, None),
        Some(_) if use_rid => {
            let value = rid
                .and_then(|v| rid_sample_value(v.as_bytes()))
                .unwrap_or(0);
            match reason(seen, value, threshold) {
                Some(s) => (true, Some(s)),
                None => (false, None),
            }
        }
        // Not a UUID, or the id is not trusted: the headers and a random draw; the id
        // stays as it is.
        _ => (reason(seen, fastrand::u64(..), threshold).is_some(), None),
    };
    Decision {
        sampled: incoming.sampled.unwrap_or(traced),
        request_id: new_status,
    }
}

/// Why an untraced request becomes traced, if it does.
fn reason(seen: &Seen<'_>, value: u64, threshold: u64) -> Option<RidStatus> {
    if seen.client_trace_id {
        Some(RidStatus::Client)
    } else if seen.force_trace {
        Some(RidStatus::Forced)
    } else if value % 10_000 < threshold {
        Some(RidStatus::Sampled)
    } else {
        None
    }
}

/// Writes a changed status into the request id.
pub(crate) fn apply(h: &mut HeaderMap, name: &http::HeaderName, status: RidStatus) {
    if let Some(v) = h.get(name).and_then(|v| with_rid_status(v, status)) {
        h.insert(name.clone(), v);
    }
}

/// A health check (kubelet probes, Envoy's own): never traced.
pub(crate) fn is_health_check(seen: &Seen<'_>) -> bool {
    seen.user_agent.is_some_and(|ua| {
        let b = ua.as_bytes();
        b.starts_with(b"kube-probe/") || b == b"Envoy/HC"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    use super::super::context::extract;
    use http::HeaderValue;

    static X_ENVOY_FORCE_TRACE: HeaderName = HeaderName::from_static("x-envoy-force-trace");
    static X_CLIENT_TRACE_ID: HeaderName = HeaderName::from_static("x-client-trace-id");

    /// `decide` on a map, with `rid` as its request id.
    fn decide_h(
        h: &HeaderMap,
        rid: Option<&HeaderValue>,
        e: &Extracted,
        t: u64,
        use_rid: bool,
    ) -> Decision {
        let mut h = h.clone();
        if let Some(r) = rid {
            h.insert("x-request-id", r.clone());
        }
        decide(&Seen::scan(&h), e, t, use_rid)
    }

    fn rid(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    /// First 32 bits 0x00000063 = 99: sampled at 1 % (99 < 100), not at 0.99 %.
    const ID_99: &str = "00000063-2fa1-41d2-883f-0016d3cca427";
    /// 0x00002710 = 10000, mod 10000 = 0: sampled at any percentage above 0.
    const ID_0: &str = "00002710-2fa1-41d2-883f-0016d3cca427";
    /// 0x0000270f = 9999: sampled only at 100 %.
    const ID_9999: &str = "0000270f-2fa1-41d2-883f-0016d3cca427";

    fn go(h: &HeaderMap, id: &'static str, pct: f64) -> Decision {
        decide_h(h, Some(&rid(id)), &extract(h), per_ten_thousand(pct), true)
    }

    #[test]
    fn percentages_in_hundredths() {
        assert_eq!(per_ten_thousand(1.0), 100);
        assert_eq!(per_ten_thousand(0.01), 1);
        assert_eq!(per_ten_thousand(100.0), 10_000);
        assert_eq!(per_ten_thousand(250.0), 10_000);
        assert_eq!(per_ten_thousand(-1.0), 0);
        assert_eq!(per_ten_thousand(f64::NAN), 0);
    }

    #[test]
    fn the_request_id_decides_by_the_percentage() {
        let h = HeaderMap::new();
        let d = go(&h, ID_99, 1.0);
        assert!(d.sampled);
        assert_eq!(d.request_id, Some(RidStatus::Sampled));
        assert!(!go(&h, ID_99, 0.99).sampled);
        assert_eq!(go(&h, ID_99, 0.99).request_id, None);
        assert!(go(&h, ID_0, 0.01).sampled);
        assert!(!go(&h, ID_0, 0.0).sampled);
        assert!(!go(&h, ID_9999, 99.99).sampled);
        assert!(go(&h, ID_9999, 100.0).sampled);
    }

    #[test]
    fn a_marked_request_id_stays_traced() {
        let h = HeaderMap::new();
        for id in [
            "00002711-2fa1-91d2-883f-0016d3cca427",
            "00002711-2fa1-a1d2-883f-0016d3cca427",
            "00002711-2fa1-b1d2-883f-0016d3cca427",
        ] {
            let d = go(&h, id, 0.0);
            assert!(d.sampled, "{id}");
            assert_eq!(d.request_id, None, "{id}");
        }
        // Unless the id is not trusted.
        let id = rid("00002711-2fa1-91d2-883f-0016d3cca427");
        assert!(!decide_h(&h, Some(&id), &Extracted::default(), 0, false).sampled);
    }

    #[test]
    fn forced_and_client_traces() {
        let mut h = HeaderMap::new();
        h.insert(X_ENVOY_FORCE_TRACE.clone(), rid("true"));
        let d = go(&h, ID_9999, 0.0);
        assert!(d.sampled);
        assert_eq!(d.request_id, Some(RidStatus::Forced));
        h.insert(X_CLIENT_TRACE_ID.clone(), rid("abc"));
        assert_eq!(go(&h, ID_9999, 0.0).request_id, Some(RidStatus::Client));
        // Without a trusted request id the headers still force.
        assert!(decide_h(&h, None, &Extracted::default(), 0, false).sampled);
    }

    #[test]
    fn an_incoming_decision_wins() {
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static("x-b3-sampled"), rid("0"));
        let d = go(&h, ID_0, 100.0);
        assert!(!d.sampled, "sampled=0 wins over 100 %");
        // The request id is still marked, as Envoy does before the tracer looks.
        assert_eq!(d.request_id, Some(RidStatus::Sampled));
        h.insert(X_ENVOY_FORCE_TRACE.clone(), rid("true"));
        assert!(!go(&h, ID_0, 100.0).sampled, "and over a forced trace");
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static("b3"), rid("1"));
        assert!(go(&h, ID_9999, 0.0).sampled, "b3: 1 wins over 0 %");
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("traceparent"),
            rid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert!(go(&h, ID_9999, 0.0).sampled, "traceparent flags win");
        // A malformed header carries no decision.
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static("b3"), rid("x"));
        assert!(!go(&h, ID_9999, 0.0).sampled);
    }

    #[test]
    fn the_new_status_is_written_back() {
        let name = HeaderName::from_static("x-request-id");
        let mut h = HeaderMap::new();
        h.insert(name.clone(), rid(ID_99));
        let d = go(&h, ID_99, 1.0);
        apply(&mut h, &name, d.request_id.unwrap());
        assert_eq!(h[&name], "00000063-2fa1-91d2-883f-0016d3cca427");
    }

    #[test]
    fn health_checks() {
        let mut h = HeaderMap::new();
        assert!(!is_health_check(&Seen::scan(&h)));
        h.insert(http::header::USER_AGENT, rid("kube-probe/1.31"));
        assert!(is_health_check(&Seen::scan(&h)));
        h.insert(http::header::USER_AGENT, rid("curl/8"));
        assert!(!is_health_check(&Seen::scan(&h)));
    }
}
