//! VirtualService fault injection (Envoy's fault filter, client side): a fixed delay before
//! forwarding (flag DI) and a local abort (flag FI), each for a percentage of requests.

use std::time::Duration;

/// A compiled `fault`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// `delay.fixedDelay` and its percentage (0..=100).
    pub delay: Option<(Duration, f64)>,
    /// `abort.httpStatus` and its percentage (0..=100).
    pub abort: Option<(u16, f64)>,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Delay before forwarding.
    pub delay: Option<Duration>,
    /// Answer locally with this status.
    pub abort: Option<u16>,
}

impl Fault {
    /// Compiles a route's `fault`. A missing percentage means 0% (as Istio translates it); an
    /// abort status outside 200..=599 is ignored (Istio's validation rejects it).
    pub fn compile(f: &skein_snapshot::Fault) -> Fault {
        Fault {
            delay: f
                .delay_ms
                .map(|ms| (Duration::from_millis(ms), pct(f.delay_percentage))),
            abort: f
                .abort_status
                .filter(|s| (200..=599).contains(s))
                .map(|s| (s, pct(f.abort_percentage))),
        }
    }

    /// Draws this request's faults (independently, as Envoy does).
    pub fn decide(&self) -> Decision {
        Decision {
            delay: self.delay.and_then(|(d, p)| hit(p).then_some(d)),
            abort: self.abort.and_then(|(s, p)| hit(p).then_some(s)),
        }
    }
}

fn pct(p: Option<f64>) -> f64 {
    match p {
        Some(v) if v.is_finite() => v.clamp(0.0, 100.0),
        _ => 0.0,
    }
}

fn hit(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && fastrand::f64() * 100.0 < percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_percentage_is_zero_and_100_always_hits() {
        let f = Fault::compile(&skein_snapshot::Fault {
            delay_ms: Some(5),
            delay_percentage: None,
            abort_status: Some(418),
            abort_percentage: Some(100.0),
        });
        for _ in 0..100 {
            let d = f.decide();
            assert_eq!(d.delay, None);
            assert_eq!(d.abort, Some(418));
        }
    }
}
