//! VirtualService retries: the compiled `retryOn` conditions and Envoy's backoff (the
//! per-cluster retry budget is `upstream::budget`).

use std::time::Duration;

/// Errors compiling a retry policy.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// A `retryOn` entry Istio's validation does not accept.
    #[error("retryOn: unknown condition {0:?}")]
    UnknownCondition(String),
    /// A bare status code outside 100..=599.
    #[error("retryOn: status code {0} out of range")]
    BadStatus(u32),
}

/// Request bodies are copied as they stream, up to this many bytes, so that a retry can
/// replay them; a longer body streams on without a copy and is not retried (nor mirrored).
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// Envoy's default retry backoff base interval.
pub const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Envoy's default maximum backoff interval (10 x base).
pub const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// `retryOn` conditions as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    /// Any 5xx, connect failures, resets and per-try timeouts.
    pub const X5XX: RetryOn = RetryOn(1);
    /// 502, 503, 504, connect failures, resets and per-try timeouts.
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    /// The upstream reset (disconnected) before answering; per-try timeouts.
    pub const RESET: RetryOn = RetryOn(1 << 2);
    /// Connecting failed (nothing was sent).
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 3);
    /// An HTTP/2 REFUSED_STREAM (nothing was processed).
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    /// 409.
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    /// The listed status codes.
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    /// gRPC CANCELLED (1).
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 7);
    /// gRPC DEADLINE_EXCEEDED (4).
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 8);
    /// gRPC RESOURCE_EXHAUSTED (8).
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 9);
    /// gRPC INTERNAL (13).
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 10);
    /// gRPC UNAVAILABLE (14).
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 11);

    /// True when any bit of `other` is set.
    pub fn any(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, rhs: Self) -> Self {
        RetryOn(self.0 | rhs.0)
    }
}

/// A compiled VirtualService `retries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (0 disables).
    pub attempts: u32,
    /// `perTryTimeout`.
    pub per_try_timeout: Option<Duration>,
    /// Conditions.
    pub on: RetryOn,
    /// `retriable-status-codes` (and bare codes in `retryOn`).
    pub codes: Vec<u16>,
}

/// What went wrong with one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// The variants are named after the `retryOn` conditions they match.
#[allow(clippy::enum_variant_names)]
pub enum Failure {
    /// Connecting failed; the request was not sent.
    ConnectFailure,
    /// The upstream refused the stream; the request was not processed.
    RefusedStream,
    /// The upstream disconnected before answering.
    Reset,
    /// `perTryTimeout` passed before response headers.
    PerTryTimeout,
    /// A response with this status and (from the headers) gRPC status.
    Status(u16, Option<u32>),
}

impl RetryPolicy {
    /// Istio's policy for a route without `retries`: 2 retries on connect-failure,
    /// refused-stream, unavailable, cancelled and retriable-status-codes (none listed; 503 is
    /// no longer retried by default since Istio 1.24).
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: RetryOn::CONNECT_FAILURE
                | RetryOn::REFUSED_STREAM
                | RetryOn::GRPC_UNAVAILABLE
                | RetryOn::GRPC_CANCELLED
                | RetryOn::RETRIABLE_STATUS_CODES,
            codes: Vec::new(),
        }
    }

    /// Compiles a route's `retries`; None is Istio's default policy.
    pub fn compile(p: Option<&skein_snapshot::RetryPolicy>) -> Result<RetryPolicy, RetryError> {
        let Some(p) = p else {
            return Ok(RetryPolicy::istio_default());
        };
        let (on, codes) = parse_retry_on(&p.retry_on)?;
        Ok(RetryPolicy {
            attempts: p.attempts,
            per_try_timeout: p
                .per_try_timeout_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            on,
            codes,
        })
    }

    /// A policy that never retries (routes with a fault, inbound).
    pub const fn none() -> RetryPolicy {
        RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            on: RetryOn(0),
            codes: Vec::new(),
        }
    }

    /// Whether a try that failed so may be retried under this policy.
    pub fn retriable(&self, f: Failure) -> bool {
        let transport = RetryOn::X5XX | RetryOn::GATEWAY_ERROR | RetryOn::RESET;
        match f {
            Failure::ConnectFailure => self.on.any(transport | RetryOn::CONNECT_FAILURE),
            Failure::RefusedStream => self.on.any(transport | RetryOn::REFUSED_STREAM),
            Failure::Reset | Failure::PerTryTimeout => self.on.any(transport),
            Failure::Status(code, grpc) => {
                (self.on.any(RetryOn::X5XX) && (500..600).contains(&code))
                    || (self.on.any(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504))
                    || (self.on.any(RetryOn::RETRIABLE_4XX) && code == 409)
                    || (self.on.any(RetryOn::RETRIABLE_STATUS_CODES) && self.codes.contains(&code))
                    || grpc.is_some_and(|g| self.on.any(grpc_bit(g)))
            }
        }
    }
}

fn grpc_bit(status: u32) -> RetryOn {
    match status {
        1 => RetryOn::GRPC_CANCELLED,
        4 => RetryOn::GRPC_DEADLINE_EXCEEDED,
        8 => RetryOn::GRPC_RESOURCE_EXHAUSTED,
        13 => RetryOn::GRPC_INTERNAL,
        14 => RetryOn::GRPC_UNAVAILABLE,
        _ => RetryOn::default(),
    }
}

/// Parses `retryOn` entries (already split on commas) as Istio does: Envoy and gRPC
/// condition names, and bare status codes, which imply `retriable-status-codes`. Conditions
/// Istio accepts but skein does not act on (`retriable-headers`, `envoy-ratelimited`,
/// `reset-before-request`, `http3-post-connect-failure`) are accepted and ignored.
pub fn parse_retry_on(list: &[String]) -> Result<(RetryOn, Vec<u16>), RetryError> {
    let mut on = RetryOn::default();
    let mut codes = Vec::new();
    for raw in list.iter().flat_map(|s| s.split(',')) {
        let t = raw.trim();
        let bit = match t {
            "" | "retriable-headers" | "envoy-ratelimited" | "http3-post-connect-failure" => {
                RetryOn::default()
            }
            "5xx" => RetryOn::X5XX,
            "gateway-error" => RetryOn::GATEWAY_ERROR,
            "reset" => RetryOn::RESET,
            // A connection that could not be made never carried the request.
            "connect-failure" | "reset-before-request" => RetryOn::CONNECT_FAILURE,
            "refused-stream" => RetryOn::REFUSED_STREAM,
            "retriable-4xx" => RetryOn::RETRIABLE_4XX,
            "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES,
            "cancelled" => RetryOn::GRPC_CANCELLED,
            "deadline-exceeded" => RetryOn::GRPC_DEADLINE_EXCEEDED,
            "resource-exhausted" => RetryOn::GRPC_RESOURCE_EXHAUSTED,
            "internal" => RetryOn::GRPC_INTERNAL,
            "unavailable" => RetryOn::GRPC_UNAVAILABLE,
            other => match other.parse::<u32>() {
                Ok(n) if (100..=599).contains(&n) => {
                    if !codes.contains(&(n as u16)) {
                        codes.push(n as u16);
                    }
                    RetryOn::RETRIABLE_STATUS_CODES
                }
                Ok(n) => return Err(RetryError::BadStatus(n)),
                Err(_) => return Err(RetryError::UnknownCondition(other.to_string())),
            },
        };
        on = on | bit;
    }
    Ok((on, codes))
}

/// Envoy's fully jittered exponential backoff before retry number `retry` (1-based): a
/// uniform draw from `[0, (2^retry - 1) * 25 ms)`, capped at 250 ms.
pub fn backoff(retry: u32) -> Duration {
    let base = BACKOFF_BASE.as_millis() as u64;
    let max = BACKOFF_MAX.as_millis() as u64;
    let multiplier = (1u64 << retry.clamp(1, 16)) - 1;
    let span = multiplier.saturating_mul(base).max(1);
    Duration::from_millis(fastrand::u64(0..span).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn retry_on_parses_envoy_grpc_and_codes() {
        let (on, codes) = parse_retry_on(&strs(&[
            "5xx,gateway-error",
            " reset",
            "503",
            "unavailable",
        ]))
        .expect("parses");
        assert!(on.any(RetryOn::X5XX));
        assert!(on.any(RetryOn::GATEWAY_ERROR));
        assert!(on.any(RetryOn::RESET));
        assert!(on.any(RetryOn::RETRIABLE_STATUS_CODES));
        assert!(on.any(RetryOn::GRPC_UNAVAILABLE));
        assert!(!on.any(RetryOn::CONNECT_FAILURE));
        assert_eq!(codes, vec![503]);
        assert!(matches!(
            parse_retry_on(&strs(&["bogus"])),
            Err(RetryError::UnknownCondition(_))
        ));
        assert!(matches!(
            parse_retry_on(&strs(&["700"])),
            Err(RetryError::BadStatus(700))
        ));
        assert!(parse_retry_on(&strs(&["retriable-headers", "envoy-ratelimited"])).is_ok());
    }

    #[test]
    fn conditions_follow_envoy() {
        let p = |list: &[&str]| RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: parse_retry_on(&strs(list)).expect("parses").0,
            codes: parse_retry_on(&strs(list)).expect("parses").1,
        };
        let x5 = p(&["5xx"]);
        assert!(x5.retriable(Failure::Status(500, None)));
        assert!(x5.retriable(Failure::ConnectFailure));
        assert!(x5.retriable(Failure::Reset));
        assert!(x5.retriable(Failure::PerTryTimeout));
        assert!(!x5.retriable(Failure::Status(409, None)));
        let gw = p(&["gateway-error"]);
        assert!(!gw.retriable(Failure::Status(500, None)));
        assert!(gw.retriable(Failure::Status(503, None)));
        assert!(gw.retriable(Failure::PerTryTimeout));
        let cf = p(&["connect-failure"]);
        assert!(cf.retriable(Failure::ConnectFailure));
        assert!(!cf.retriable(Failure::Reset));
        assert!(!cf.retriable(Failure::Status(503, None)));
        assert!(p(&["retriable-4xx"]).retriable(Failure::Status(409, None)));
        assert!(p(&["418"]).retriable(Failure::Status(418, None)));
        assert!(!p(&["418"]).retriable(Failure::Status(419, None)));
        let grpc = p(&["unavailable", "internal"]);
        assert!(grpc.retriable(Failure::Status(200, Some(14))));
        assert!(grpc.retriable(Failure::Status(200, Some(13))));
        assert!(!grpc.retriable(Failure::Status(200, Some(4))));
        let d = RetryPolicy::istio_default();
        assert_eq!(d.attempts, 2);
        assert!(d.retriable(Failure::ConnectFailure));
        assert!(d.retriable(Failure::RefusedStream));
        assert!(
            !d.retriable(Failure::Status(503, None)),
            "no 503 by default"
        );
        assert!(d.retriable(Failure::Status(200, Some(1))));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_bounded_and_jittered() {
        for retry in 1..=8u32 {
            let cap = ((1u64 << retry) - 1) * 25;
            let mut max_seen = 0;
            for _ in 0..200 {
                let d = backoff(retry);
                assert!(d.as_millis() as u64 <= cap.min(250), "retry {retry}: {d:?}");
                max_seen = max_seen.max(d.as_millis() as u64);
                let t0 = tokio::time::Instant::now();
                tokio::time::sleep(d).await;
                assert_eq!(t0.elapsed(), d, "paused time advances exactly");
            }
            assert!(max_seen > 0, "jittered, not always zero");
        }
        assert!(backoff(1) < Duration::from_millis(25));
        assert!(backoff(30) <= BACKOFF_MAX);
    }
}
