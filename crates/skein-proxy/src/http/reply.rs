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
    /// 404: the path is not origin-form (`OPTIONS *`), as Envoy's `absolute_path_rejected`.
    AbsolutePath,
    /// 400: the path cannot be normalised (a `%00`), as Envoy's `path_normalization_failed`.
    PathNormalizationFailed,
    /// 503 NC: the route (or the inbound listener) names a cluster the snapshot lacks.
    ClusterNotFound,
    /// 403: AuthorizationPolicy denied the request; `details` names the policy.
    Denied { details: Arc<str> },
    /// 401: RequestAuthentication refused the request's token; `www_authenticate` is
    /// Envoy's `Bearer realm="http://HOST/PATH", error="invalid_token"`.
    JwtDenied {
        error: crate::policy::jwt::JwtError,
        www_authenticate: HeaderValue,
    },
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
            R::AbsolutePath => row(404, F::NONE, "absolute_path_rejected", ""),
            R::PathNormalizationFailed => row(400, F::NONE, "path_normalization_failed", ""),
            R::ClusterNotFound => row(503, F::NC, "cluster_not_found", ""),
            R::Denied { details } => Parts {
                details: Cow::Owned(details.to_string()),
                ..row(403, F::NONE, "", DENIED_BODY)
            },
            R::JwtDenied {
                error,
                www_authenticate,
            } => Parts {
                status: 401,
                flags: F::NONE,
                details: Cow::Owned(error.details()),
                body: Bytes::from(error.to_string()),
                header: Some((&http::header::WWW_AUTHENTICATE, www_authenticate.clone())),
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

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (u16, ResponseFlags, String, String, Option<(String, String)>);

    /// Status, flag, details, body and extra header of a reply.
    fn row(r: &LocalReply) -> Owned {
        let p = r.parts();
        let header = p.header.map(|(n, v)| {
            let v = v.to_str().unwrap_or("").to_string();
            (n.to_string(), v)
        });
        let body = String::from_utf8(p.body.to_vec()).unwrap_or_default();
        (p.status, p.flags, p.details.into_owned(), body, header)
    }

    #[test]
    fn every_local_reply_is_envoys() {
        use ResponseFlags as F;
        // (reply, (status, flag, details, body)), as Envoy (and the proxy before this table) sent them.
        type Row = (u16, ResponseFlags, &'static str, &'static str);
        let cases: Vec<(LocalReply, Row)> = vec![
            (
                LocalReply::ConnectNotSupported,
                (
                    405,
                    F::NONE,
                    "connect_not_supported",
                    "CONNECT is not supported; send plain HTTP through the proxy",
                ),
            ),
            (
                LocalReply::ClusterNotFound,
                (503, F::NC, "cluster_not_found", ""),
            ),
            (
                LocalReply::AbsolutePath,
                (404, F::NONE, "absolute_path_rejected", ""),
            ),
            (
                LocalReply::PathNormalizationFailed,
                (400, F::NONE, "path_normalization_failed", ""),
            ),
            (
                LocalReply::Denied {
                    details: Arc::from(
                        "rbac_access_denied_matched_policy[ns[blog]-policy[deny]-rule[0]]",
                    ),
                },
                (
                    403,
                    F::NONE,
                    "rbac_access_denied_matched_policy[ns[blog]-policy[deny]-rule[0]]",
                    "RBAC: access denied",
                ),
            ),
            (
                LocalReply::RouteNotFound,
                (404, F::NR, "route_not_found", ""),
            ),
            (
                LocalReply::Direct {
                    status: 418,
                    body: Bytes::from_static(b"teapot"),
                },
                (418, F::NONE, "direct_response", "teapot"),
            ),
            (LocalReply::Blackhole, (502, F::NONE, "direct_response", "")),
            (
                LocalReply::FaultAbort { status: 503 },
                (503, F::FI, "fault_filter_abort", "fault filter abort"),
            ),
            (
                LocalReply::Overflow,
                (
                    503,
                    F::UO,
                    "upstream_reset_before_response_started{overflow}",
                    "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                ),
            ),
            (
                LocalReply::ConnectFailure(ConnectFailure::Dns),
                (
                    503,
                    F::UF,
                    "upstream_reset_before_response_started{connection_failure}",
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                ),
            ),
            (
                LocalReply::NoHealthyUpstream,
                (503, F::UH, "no_healthy_upstream", "no healthy upstream"),
            ),
            (
                LocalReply::Timeout,
                (504, F::UT, "response_timeout", "upstream request timeout"),
            ),
            (
                LocalReply::PerTryTimeout,
                (
                    504,
                    F::UT,
                    "upstream_per_try_timeout",
                    "upstream request timeout",
                ),
            ),
            (
                LocalReply::Reset { to_app: false },
                (
                    503,
                    F::UC,
                    "upstream_reset_before_response_started{connection_termination}",
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                ),
            ),
        ];
        for (reply, (status, flags, details, body)) in cases {
            assert_eq!(
                row(&reply),
                (status, flags, details.to_string(), body.to_string(), None),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn redirects_carry_their_location() {
        let r = LocalReply::Redirect {
            status: 301,
            location: Some(HeaderValue::from_static("http://b/x")),
        };
        let want = Some(("location".to_string(), "http://b/x".to_string()));
        assert_eq!(
            row(&r),
            (
                301,
                ResponseFlags::NONE,
                "direct_response".into(),
                String::new(),
                want
            )
        );
    }

    #[test]
    fn undelivered_replies_are_marked_for_the_next_proxy() {
        let refused = LocalReply::ConnectFailure(ConnectFailure::Refused);
        let (_, _, _, _, h) = row(&refused);
        let mark = |v: &str| Some(("x-skein-not-delivered".to_string(), v.to_string()));
        assert_eq!(h, mark("connect-failure"));
        assert_eq!(row(&LocalReply::Reset { to_app: true }).4, mark("reset"));
        assert_eq!(
            row(&LocalReply::ConnectFailure(ConnectFailure::Dns)).4,
            None
        );
    }

    #[test]
    fn connect_failures_name_their_transport_failure() {
        let tf = |c: ConnectFailure| LocalReply::ConnectFailure(c).transport_failure();
        assert_eq!(
            tf(ConnectFailure::Refused).as_deref(),
            Some("connection_failure")
        );
        assert_eq!(
            tf(ConnectFailure::Timeout).as_deref(),
            Some("connect_timeout")
        );
        assert_eq!(
            tf(ConnectFailure::Handshake).as_deref(),
            Some("handshake_failure")
        );
        assert_eq!(
            tf(ConnectFailure::Dns).as_deref(),
            Some("dns_resolution_failure")
        );
        let tls = LocalReply::ConnectFailure(ConnectFailure::Tls("TLS_error:bad cert".into()));
        assert_eq!(
            tls.transport_failure().as_deref(),
            Some("TLS_error:bad cert")
        );
        assert_eq!(
            row(&tls).3,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error:bad cert"
        );
        assert_eq!(LocalReply::Overflow.transport_failure(), None);
    }

    #[test]
    fn pool_errors_map_to_replies() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(LocalReply::from(PoolError::Overflow), LocalReply::Overflow);
        let timeout = PoolError::ConnectTimeout {
            addr,
            timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(
            LocalReply::from(timeout),
            LocalReply::ConnectFailure(ConnectFailure::Timeout)
        );
        let refused = PoolError::Connect {
            addr,
            error: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(
            LocalReply::from(refused),
            LocalReply::ConnectFailure(ConnectFailure::Refused)
        );
        assert_eq!(LocalReply::status_code(1000), StatusCode::BAD_GATEWAY);
    }
}
