//! Every answer the proxy makes itself, in one table: [`LocalReply`] gives the status, the
//! response flag, the response-code details, Envoy's body text and any extra header; the
//! response, the access-log record and the metrics are all made from it (see
//! `InFlight::reply`).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

use crate::telemetry::access_log::ResponseFlags;
use crate::upstream::cluster::PoolError;

const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
const CONNECT_FAILURE_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
const TERMINATION_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const NO_HEALTHY_BODY: &str = "no healthy upstream";
const TIMEOUT_BODY: &str = "upstream request timeout";
const CONNECT_BODY: &str = "CONNECT is not supported; send plain HTTP through the proxy";
/// The body of a request AuthorizationPolicy denied.
pub(crate) const DENIED_BODY: &str = "RBAC: access denied";
/// The body of a fault-injected abort.
pub(crate) const ABORT_BODY: &str = "fault filter abort";

const CONNECT_FAILURE: &str = "upstream_reset_before_response_started{connection_failure}";
const TERMINATION: &str = "upstream_reset_before_response_started{connection_termination}";

/// On a 503 from a skein proxy: the request did not reach the app (connect failure).
pub(crate) static NOT_DELIVERED: HeaderName = HeaderName::from_static("x-skein-not-delivered");

/// Why no upstream connection could be made (UPSTREAM_TRANSPORT_FAILURE_REASON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectFailure {
    /// The TCP connect failed (or anything else before the request was sent).
    Refused,
    /// The TCP connect timed out.
    Timeout,
    /// The HTTP handshake failed.
    Handshake,
    /// mTLS failed; the reason is shown in the body and the log.
    Tls(String),
    /// The passthrough authority did not resolve.
    Dns,
}

/// A response the proxy makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalReply {
    /// 405: CONNECT is not proxied.
    ConnectNotSupported,
    /// 503 NC: the route (or the inbound listener) names a cluster the snapshot lacks.
    ClusterNotFound,
    /// 403: AuthorizationPolicy denied the request; `details` names the policy.
    Denied { details: Arc<str> },
    /// 404 NR: no virtual host or route matched.
    RouteNotFound,
    /// A route's `directResponse`.
    Direct { status: u16, body: Bytes },
    /// A route's `redirect`.
    Redirect {
        status: u16,
        location: Option<HeaderValue>,
    },
    /// 502: BlackHoleCluster (REGISTRY_ONLY, or a route to it).
    Blackhole,
    /// A fault-injected abort with its status (flag FI).
    FaultAbort { status: u16 },
    /// 503 UO: a circuit breaker limit was hit.
    Overflow,
    /// 503 UF: no connection to the upstream.
    ConnectFailure(ConnectFailure),
    /// 503 UH: every endpoint is ejected, or there are none.
    NoHealthyUpstream,
    /// 504 UT: the route timeout passed.
    Timeout,
    /// 504 UT: the last try's per-try timeout passed.
    PerTryTimeout,
    /// 503 UC: the connection failed before response headers. `to_app`: the upstream is the
    /// local app (an inbound cluster), so a client sidecar may send a safe request elsewhere.
    Reset { to_app: bool },
}

/// One row of the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parts {
    pub(crate) status: u16,
    pub(crate) flags: ResponseFlags,
    pub(crate) details: Cow<'static, str>,
    pub(crate) body: Bytes,
    pub(crate) header: Option<(&'static HeaderName, HeaderValue)>,
}

impl LocalReply {
    /// Status, flag, details, body and extra header of this reply.
    pub(crate) fn parts(&self) -> Parts {
        use LocalReply as R;
        use ResponseFlags as F;
        let row = |status, flags, details: &'static str, body: &'static str| Parts {
            status,
            flags,
            details: Cow::Borrowed(details),
            body: Bytes::from_static(body.as_bytes()),
            header: None,
        };
        match self {
            R::ConnectNotSupported => row(405, F::NONE, "connect_not_supported", CONNECT_BODY),
            R::ClusterNotFound => row(503, F::NC, "cluster_not_found", ""),
            R::Denied { details } => Parts {
                details: Cow::Owned(details.to_string()),
                ..row(403, F::NONE, "", DENIED_BODY)
            },
            R::RouteNotFound => row(404, F::NR, "route_not_found", ""),
            R::Direct { status, body } => Parts {
                body: body.clone(),
                ..row(*status, F::NONE, "direct_response", "")
            },
            R::Redirect { status, location } => Parts {
                header: location.clone().map(|l| (&http::header::LOCATION, l)),
                ..row(*status, F::NONE, "direct_response", "")
            },
            R::Blackhole => row(502, F::NONE, "direct_response", ""),
            R::FaultAbort { status } => row(*status, F::FI, "fault_filter_abort", ABORT_BODY),
            R::Overflow => row(
                503,
                F::UO,
                "upstream_reset_before_response_started{overflow}",
                OVERFLOW_BODY,
            ),
            R::ConnectFailure(why) => connect_failure(why),
            R::NoHealthyUpstream => row(503, F::UH, "no_healthy_upstream", NO_HEALTHY_BODY),
            R::Timeout => row(504, F::UT, "response_timeout", TIMEOUT_BODY),
            R::PerTryTimeout => row(504, F::UT, "upstream_per_try_timeout", TIMEOUT_BODY),
            R::Reset { to_app } => Parts {
                header: to_app.then(|| (&NOT_DELIVERED, HeaderValue::from_static("reset"))),
                ..row(503, F::UC, TERMINATION, TERMINATION_BODY)
            },
        }
    }

    /// The access log's UPSTREAM_TRANSPORT_FAILURE_REASON, for connect failures.
    pub(crate) fn transport_failure(&self) -> Option<Cow<'static, str>> {
        let LocalReply::ConnectFailure(why) = self else {
            return None;
        };
        Some(match why {
            ConnectFailure::Refused => Cow::Borrowed("connection_failure"),
            ConnectFailure::Timeout => Cow::Borrowed("connect_timeout"),
            ConnectFailure::Handshake => Cow::Borrowed("handshake_failure"),
            ConnectFailure::Tls(reason) => Cow::Owned(reason.clone()),
            ConnectFailure::Dns => Cow::Borrowed("dns_resolution_failure"),
        })
    }

    /// The status line's code (an out-of-range configured status becomes 502).
    pub(crate) fn status_code(status: u16) -> StatusCode {
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)
    }
}

fn connect_failure(why: &ConnectFailure) -> Parts {
    let body = match why {
        ConnectFailure::Tls(reason) => Bytes::from(format!(
            "{CONNECT_FAILURE_BODY}, transport failure reason: {reason}"
        )),
        _ => Bytes::from_static(CONNECT_FAILURE_BODY.as_bytes()),
    };
    // Tells a client sidecar that nothing reached the app, so it may try another host (not
    // for passthrough, whose failures are the client's own).
    let header = (*why != ConnectFailure::Dns)
        .then(|| (&NOT_DELIVERED, HeaderValue::from_static("connect-failure")));
    Parts {
        status: 503,
        flags: ResponseFlags::UF,
        details: Cow::Borrowed(CONNECT_FAILURE),
        body,
        header,
    }
}

impl From<PoolError> for LocalReply {
    fn from(e: PoolError) -> Self {
        LocalReply::ConnectFailure(match e {
            PoolError::Overflow => return LocalReply::Overflow,
            PoolError::ConnectTimeout { .. } => ConnectFailure::Timeout,
            PoolError::Handshake { .. } => ConnectFailure::Handshake,
            PoolError::Tls { reason, .. } => ConnectFailure::Tls(reason),
            PoolError::Connect { .. } => ConnectFailure::Refused,
        })
    }
}
