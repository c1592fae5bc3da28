//! Outlier detection: DestinationRule `outlierDetection` as Envoy runs it for Istio.
//!
//! Per endpoint, two counters (atomics, on the request path): consecutive 5xx and consecutive
//! gateway errors (502, 503, 504). Connect failures and resets count as 503, connect timeouts
//! as 504 (Envoy's mapping of local-origin errors when they are not split); for opaque TCP a
//! connect failure is an error and a connect success resets the counters. A counter reaching
//! its threshold ejects the endpoint at once, if the ejected share of the cluster stays within
//! `maxEjectionPercent` (`100 * (ejected + 1) / hosts <= max`, but one host may always go).
//!
//! An ejection lasts `baseEjectionTime x multiplier`, capped at `max(300 s, baseEjectionTime)`
//! (Envoy's `max_ejection_time`, which Istio does not expose). The multiplier grows by one per
//! ejection (while below the cap) and shrinks by one per `interval` the endpoint spent in
//! service. Un-ejection is checked lazily when the load balancer picks (and when the admin
//! endpoint reports), so it is exact to the millisecond rather than rounded up to Envoy's next
//! interval sweep; the multiplier's decrease is computed from the time since the endpoint came
//! back.
//!
//! Below `minHealthPercent` of endpoints in service the cluster is in panic: the load balancer
//! ignores ejections (Istio's default 0 never panics).
//!
//! Ejection bookkeeping (times, multipliers) sits behind one mutex per cluster that is taken only
//! when a counter trips or an ejection ends, never per request. The load balancer reads one
//! `AtomicBool` per endpoint (`skipped`) and one per cluster.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;

use skein_snapshot::OutlierDetection;
pub use skein_snapshot::dump::EndpointStatus;

use crate::upstream::endpoint::EndpointState;

/// Envoy's default `max_ejection_time` (300 s); Istio does not set it.
pub const DEFAULT_MAX_EJECTION_MS: u64 = 300_000;

/// Milliseconds on a monotonic clock. `Tokio` follows `tokio::time` (so `tokio::time::pause`
/// drives it in tests); `Manual` is set by hand.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Time since the epoch instant, on tokio's clock.
    Tokio(tokio::time::Instant),
    /// A hand-driven clock (milliseconds).
    #[cfg(test)]
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A tokio clock starting now.
    pub fn tokio() -> Clock {
        Clock::Tokio(tokio::time::Instant::now())
    }

    #[cfg(test)]
    /// A manual clock at 0 and the handle that moves it.
    pub fn manual() -> (Clock, Arc<AtomicU64>) {
        let t = Arc::new(AtomicU64::new(0));
        (Clock::Manual(Arc::clone(&t)), t)
    }

    /// Now, in milliseconds since the clock's epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::Tokio(epoch) => epoch.elapsed().as_millis() as u64,
            #[cfg(test)]
            Clock::Manual(t) => t.load(Ordering::Acquire),
        }
    }
}

/// The detector's settings, from `OutlierDetection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// `consecutive5xxErrors` (0: off).
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors` (0: off).
    pub consecutive_gateway: u32,
    /// `interval` (ms).
    pub interval_ms: u64,
    /// `baseEjectionTime` (ms).
    pub base_ms: u64,
    /// Envoy `max_ejection_time` (ms).
    pub max_ejection_ms: u64,
    /// `maxEjectionPercent` (clamped to 100).
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (Envoy `healthy_panic_threshold`).
    pub min_health_percent: u32,
}

impl From<&OutlierDetection> for Params {
    fn from(o: &OutlierDetection) -> Params {
        Params {
            consecutive_5xx: o.consecutive_5xx_errors,
            consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
            interval_ms: o.interval_ms,
            base_ms: o.base_ejection_time_ms,
            max_ejection_ms: DEFAULT_MAX_EJECTION_MS,
            max_ejection_percent: o.max_ejection_percent.min(100),
            min_health_percent: o.min_health_percent.min(100),
        }
    }
}

impl Params {
    /// The longest an ejection lasts: `max(max_ejection_time, baseEjectionTime)`.
    pub fn cap_ms(&self) -> u64 {
        self.base_ms.max(self.max_ejection_ms)
    }

    /// Whether one more ejection keeps the ejected share within `maxEjectionPercent`
    /// (`100 * (ejected + 1) / hosts <= max_ejection_percent`), except that one host may
    /// always be ejected when none is: Envoy documents "at least one host regardless of the
    /// value", and without it Istio's default of 10% would never eject in a service of fewer
    /// than ten pods.
    pub fn may_eject(&self, ejected: usize, hosts: usize) -> bool {
        hosts > 0
            && self.max_ejection_percent > 0
            && (ejected == 0
                || (ejected as u64 + 1) * 100
                    <= u64::from(self.max_ejection_percent) * hosts as u64)
    }

    /// Whether the cluster is in panic: fewer than `minHealthPercent` of hosts in service.
    pub fn panic(&self, ejected: usize, hosts: usize) -> bool {
        hosts > 0
            && (hosts.saturating_sub(ejected) as u64) * 100
                < u64::from(self.min_health_percent) * hosts as u64
    }
}

/// Ejection history of one endpoint (under the cluster's mutex).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostBook {
    /// When the current ejection started (None: in service).
    pub ejected_at: Option<u64>,
    /// When the current ejection ends.
    pub ejected_until: u64,
    /// When the endpoint last came back.
    pub last_unejected: Option<u64>,
    /// The ejection time multiplier as of the last ejection.
    pub multiplier: u32,
    /// Times ejected.
    pub ejections: u64,
}

impl HostBook {
    /// The multiplier at `now`: one less for each whole `interval` spent in service since
    /// the last un-ejection, down to 0.
    pub fn multiplier_at(&self, now: u64, interval_ms: u64) -> u32 {
        match (self.ejected_at, self.last_unejected) {
            (None, Some(back)) if interval_ms > 0 => {
                let healthy = now.saturating_sub(back) / interval_ms;
                self.multiplier
                    .saturating_sub(u32::try_from(healthy).unwrap_or(u32::MAX))
            }
            _ => self.multiplier,
        }
    }

    /// Ejects at `now`; returns how long the ejection lasts (ms).
    pub fn eject(&mut self, now: u64, p: &Params) -> u64 {
        let mut m = self.multiplier_at(now, p.interval_ms);
        if p.base_ms.saturating_mul(u64::from(m)) < p.cap_ms() {
            m = m.saturating_add(1);
        }
        self.multiplier = m;
        self.ejections += 1;
        let d = p.base_ms.saturating_mul(u64::from(m)).min(p.cap_ms());
        self.ejected_at = Some(now);
        self.ejected_until = now.saturating_add(d);
        d
    }

    /// Returns the endpoint to service at `now`.
    pub fn uneject(&mut self, now: u64) {
        self.ejected_at = None;
        self.last_unejected = Some(now);
    }

    /// True while ejected.
    pub fn is_ejected(&self) -> bool {
        self.ejected_at.is_some()
    }
}

/// Which counter tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// `consecutive5xxErrors`.
    Consecutive5xx,
    /// `consecutiveGatewayErrors`.
    ConsecutiveGateway,
}

/// One cluster's outlier detector.
#[derive(Debug)]
pub struct Detector {
    params: Params,
    clock: Clock,
    /// Earliest end of an ejection (u64::MAX: none ejected).
    next_uneject: AtomicU64,
    /// Some endpoint is skipped by the load balancer.
    skipping: AtomicBool,
    books: Mutex<Vec<HostBook>>,
    ejections_total: AtomicU64,
    overflows: AtomicU64,
    counter: OnceLock<Counter>,
}

impl Detector {
    /// A detector for `hosts` endpoints on tokio's clock.
    pub fn new(config: &OutlierDetection, hosts: usize) -> Detector {
        Detector::with_clock(Params::from(config), hosts, Clock::tokio())
    }

    /// A detector with explicit settings and clock.
    pub fn with_clock(params: Params, hosts: usize, clock: Clock) -> Detector {
        Detector {
            params,
            clock,
            next_uneject: AtomicU64::new(u64::MAX),
            skipping: AtomicBool::new(false),
            books: Mutex::new(vec![HostBook::default(); hosts]),
            ejections_total: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            counter: OnceLock::new(),
        }
    }

    /// Ejections so far.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Counts ejections in `counter` too (`skein_outlier_ejections_total`); the first call
    /// wins, so a cluster reused across pushes keeps its counter.
    pub fn attach_counter(&self, counter: impl FnOnce() -> Counter) {
        let _ = self.counter.get_or_init(counter);
    }

    /// True when the load balancer must skip some endpoints.
    pub fn skipping(&self) -> bool {
        self.skipping.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HostBook>> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a response (or a local error mapped to a status: connect failure and reset
    /// 503, connect timeout 504; a TCP connect success 200) from `ep`.
    pub fn record(&self, eps: &[Arc<EndpointState>], ep: &EndpointState, status: u16) {
        let h = &ep.outlier;
        if !(500..600).contains(&status) {
            h.reset();
            return;
        }
        let p = &self.params;
        let mut trip = None;
        if matches!(status, 502..=504) {
            let n = h.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
            if p.consecutive_gateway > 0 && n == p.consecutive_gateway {
                trip = Some(Trip::ConsecutiveGateway);
            }
        } else if h.consecutive_gateway.load(Ordering::Relaxed) != 0 {
            h.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        let n = h.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        if p.consecutive_5xx > 0 && n == p.consecutive_5xx {
            trip = trip.or(Some(Trip::Consecutive5xx));
        }
        if let Some(t) = trip {
            self.trip(eps, h.index, t, self.clock.now_ms());
        }
    }

    /// A counter reached its threshold at `now`: eject the endpoint if allowed. Returns true
    /// when it was ejected.
    pub fn trip(&self, eps: &[Arc<EndpointState>], index: usize, t: Trip, now: u64) -> bool {
        let Some(ep) = eps.get(index) else {
            return false;
        };
        // Envoy resets the counter that tripped, ejected or not, so another full run of
        // errors is needed to try again.
        match t {
            Trip::Consecutive5xx => ep.outlier.consecutive_5xx.store(0, Ordering::Relaxed),
            Trip::ConsecutiveGateway => ep.outlier.consecutive_gateway.store(0, Ordering::Relaxed),
        }
        let mut books = self.lock();
        self.uneject_expired(eps, &mut books, now);
        let Some(book) = books.get(index) else {
            return false;
        };
        if book.is_ejected() {
            return false;
        }
        let ejected = books.iter().filter(|b| b.is_ejected()).count();
        if !self.params.may_eject(ejected, books.len()) {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(host = %ep.addr, ?t, ejected, "outlier: not ejected, maxEjectionPercent reached");
            return false;
        }
        let d = books[index].eject(now, &self.params);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.counter.get() {
            c.inc();
        }
        ep.outlier.ejected.store(true, Ordering::Relaxed);
        tracing::info!(host = %ep.addr, ?t, ejection_ms = d, "outlier: endpoint ejected");
        self.settle(eps, &books);
        true
    }

    /// Returns endpoints whose ejection ended to service (cheap when none is due).
    pub fn refresh(&self, eps: &[Arc<EndpointState>]) {
        if self.next_uneject.load(Ordering::Relaxed) == u64::MAX {
            return;
        }
        self.refresh_at(eps, self.clock.now_ms());
    }

    /// [`Detector::refresh`] at `now`.
    pub fn refresh_at(&self, eps: &[Arc<EndpointState>], now: u64) {
        if now < self.next_uneject.load(Ordering::Relaxed) {
            return;
        }
        let mut books = self.lock();
        self.uneject_expired(eps, &mut books, now);
    }

    fn uneject_expired(&self, eps: &[Arc<EndpointState>], books: &mut [HostBook], now: u64) {
        let mut changed = false;
        for (i, b) in books.iter_mut().enumerate() {
            if b.is_ejected() && b.ejected_until <= now {
                b.uneject(now);
                changed = true;
                if let Some(ep) = eps.get(i) {
                    ep.outlier.ejected.store(false, Ordering::Relaxed);
                    // A fresh start: old errors do not count towards the next ejection.
                    ep.outlier.consecutive_5xx.store(0, Ordering::Relaxed);
                    ep.outlier.consecutive_gateway.store(0, Ordering::Relaxed);
                    tracing::info!(host = %ep.addr, "outlier: endpoint back in service");
                }
            }
        }
        if changed {
            self.settle(eps, books);
        }
    }

    /// Recomputes the skip flags (panic or not) and the next un-ejection time.
    fn settle(&self, eps: &[Arc<EndpointState>], books: &[HostBook]) {
        let ejected = books.iter().filter(|b| b.is_ejected()).count();
        let panic = self.params.panic(ejected, books.len());
        for (ep, b) in eps.iter().zip(books) {
            ep.outlier
                .skipped
                .store(b.is_ejected() && !panic, Ordering::Relaxed);
        }
        self.skipping
            .store(ejected > 0 && !panic, Ordering::Relaxed);
        let next = books
            .iter()
            .filter(|b| b.is_ejected())
            .map(|b| b.ejected_until)
            .min()
            .unwrap_or(u64::MAX);
        self.next_uneject.store(next, Ordering::Relaxed);
    }

    /// Per-endpoint status (expired ejections are ended first).
    pub fn status(&self, eps: &[Arc<EndpointState>]) -> Vec<EndpointStatus> {
        let now = self.clock.now_ms();
        let mut books = self.lock();
        self.uneject_expired(eps, &mut books, now);
        eps.iter()
            .zip(books.iter())
            .map(|(ep, b)| EndpointStatus {
                address: ep.addr,
                status: Cow::Borrowed(if b.is_ejected() { "ejected" } else { "healthy" }),
                ejections: b.ejections,
                ejected_until_ms: b.is_ejected().then(|| b.ejected_until.saturating_sub(now)),
                consecutive_5xx: ep.outlier.consecutive_5xx(),
                consecutive_gateway_errors: ep.outlier.consecutive_gateway(),
                multiplier: b.multiplier_at(now, self.params.interval_ms),
            })
            .collect()
    }

    /// Takes over the state of endpoints that stay (same address) from the detector of the
    /// cluster's previous definition; `self` must not be in use yet. Returns a detector on
    /// the previous one's clock, so that times compare.
    pub fn carried_from(
        mut self,
        eps: &[Arc<EndpointState>],
        prev: &Detector,
        prev_eps: &[Arc<EndpointState>],
    ) -> Detector {
        self.clock = prev.clock.clone();
        self.ejections_total
            .store(prev.ejections_total(), Ordering::Relaxed);
        {
            let old = prev.lock();
            let mut books = self.lock();
            for (i, ep) in eps.iter().enumerate() {
                let Some(j) = prev_eps.iter().position(|p| p.addr == ep.addr) else {
                    continue;
                };
                let (Some(b), Some(ob), Some(oep)) =
                    (books.get_mut(i), old.get(j), prev_eps.get(j))
                else {
                    continue;
                };
                *b = *ob;
                let h = &ep.outlier;
                h.consecutive_5xx
                    .store(oep.outlier.consecutive_5xx(), Ordering::Relaxed);
                h.consecutive_gateway
                    .store(oep.outlier.consecutive_gateway(), Ordering::Relaxed);
                h.ejected.store(ob.is_ejected(), Ordering::Relaxed);
            }
            self.settle(eps, &books);
        }
        self
    }
}

/// Status of endpoints of a cluster without outlier detection: all healthy.
pub fn healthy_status(eps: &[Arc<EndpointState>]) -> Vec<EndpointStatus> {
    eps.iter()
        .map(|ep| EndpointStatus {
            address: ep.addr,
            status: Cow::Borrowed("healthy"),
            ejections: 0,
            ejected_until_ms: None,
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            multiplier: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn params(base_ms: u64, interval_ms: u64) -> Params {
        Params {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            interval_ms,
            base_ms,
            max_ejection_ms: DEFAULT_MAX_EJECTION_MS,
            max_ejection_percent: 100,
            min_health_percent: 0,
        }
    }

    fn eps(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                Arc::new(
                    EndpointState::new(SocketAddr::from(([127, 0, 0, 1], 2000 + i as u16)), 1)
                        .with_index(i),
                )
            })
            .collect()
    }

    #[test]
    fn ejection_time_grows_with_each_ejection() {
        let p = params(30_000, 10_000);
        let mut b = HostBook::default();
        assert_eq!(b.eject(0, &p), 30_000);
        b.uneject(30_000);
        // Back and ejected again before a healthy interval passed: twice as long.
        assert_eq!(b.eject(35_000, &p), 60_000);
        b.uneject(95_000);
        assert_eq!(b.eject(95_001, &p), 90_000);
        assert_eq!(b.ejections, 3);
    }

    #[test]
    fn ejection_time_is_capped_at_300s_or_base() {
        let p = params(100_000, 1_000_000);
        let mut b = HostBook::default();
        let mut t = 0;
        let mut got = Vec::new();
        for _ in 0..5 {
            let d = b.eject(t, &p);
            got.push(d);
            t += d;
            b.uneject(t);
        }
        assert_eq!(got, [100_000, 200_000, 300_000, 300_000, 300_000]);
        assert_eq!(b.multiplier, 3);
        // A base above 300 s is its own cap.
        let p = params(400_000, 1_000_000);
        let mut b = HostBook::default();
        assert_eq!(b.eject(0, &p), 400_000);
        b.uneject(400_000);
        assert_eq!(b.eject(400_000, &p), 400_000);
    }

    #[test]
    fn multiplier_decreases_per_healthy_interval() {
        let p = params(1_000, 10_000);
        let mut b = HostBook::default();
        b.eject(0, &p);
        b.uneject(1_000);
        b.eject(1_000, &p);
        b.uneject(3_000);
        b.eject(3_000, &p);
        assert_eq!(b.multiplier, 3);
        b.uneject(6_000);
        assert_eq!(b.multiplier_at(6_000 + 9_999, 10_000), 3);
        assert_eq!(b.multiplier_at(6_000 + 10_000, 10_000), 2);
        assert_eq!(b.multiplier_at(6_000 + 25_000, 10_000), 1);
        assert_eq!(b.multiplier_at(6_000 + 1_000_000, 10_000), 0);
        // Two healthy intervals: 3 -> 1, so the next ejection is 2 x base.
        assert_eq!(b.eject(6_000 + 20_000, &p), 2_000);
    }

    #[test]
    fn max_ejection_percent_and_panic_rules() {
        let mut p = params(1_000, 1_000);
        p.max_ejection_percent = 50;
        assert!(p.may_eject(0, 3));
        assert!(!p.may_eject(1, 3));
        p.max_ejection_percent = 10;
        // Istio's default still ejects one host of a small service, and only one.
        assert!(p.may_eject(0, 3));
        assert!(!p.may_eject(1, 9));
        assert!(p.may_eject(0, 10));
        p.max_ejection_percent = 0;
        assert!(!p.may_eject(0, 3));
        p.max_ejection_percent = 100;
        assert!(p.may_eject(2, 3));
        p.min_health_percent = 50;
        assert!(!p.panic(1, 3));
        assert!(p.panic(2, 3));
        p.min_health_percent = 0;
        assert!(!p.panic(3, 3));
    }

    #[test]
    fn detector_ejects_returns_and_doubles_on_a_manual_clock() {
        let (clock, t) = Clock::manual();
        let d = Detector::with_clock(params(300, 100), 3, clock);
        let e = eps(3);
        for _ in 0..4 {
            d.record(&e, &e[1], 500);
        }
        assert!(!e[1].outlier.ejected());
        d.record(&e, &e[1], 503);
        assert!(e[1].outlier.ejected() && e[1].outlier.skipped() && d.skipping());
        t.store(299, Ordering::Release);
        d.refresh(&e);
        assert!(e[1].outlier.ejected());
        t.store(300, Ordering::Release);
        d.refresh(&e);
        assert!(!e[1].outlier.ejected() && !d.skipping());
        for _ in 0..5 {
            d.record(&e, &e[1], 500);
        }
        let st = d.status(&e);
        assert_eq!(st[1].status, "ejected");
        assert_eq!(st[1].ejections, 2);
        assert_eq!(st[1].ejected_until_ms, Some(600));
        t.store(899, Ordering::Release);
        d.refresh(&e);
        assert!(e[1].outlier.ejected());
        t.store(900, Ordering::Release);
        d.refresh(&e);
        assert!(!e[1].outlier.ejected());
    }

    #[test]
    fn success_resets_and_gateway_counter_ignores_500() {
        let (clock, _t) = Clock::manual();
        let mut p = params(300, 100);
        p.consecutive_5xx = 0;
        p.consecutive_gateway = 3;
        let d = Detector::with_clock(p, 3, clock);
        let e = eps(3);
        for _ in 0..10 {
            d.record(&e, &e[0], 500);
        }
        assert!(!e[0].outlier.ejected());
        d.record(&e, &e[0], 502);
        d.record(&e, &e[0], 504);
        d.record(&e, &e[0], 200);
        d.record(&e, &e[0], 503);
        d.record(&e, &e[0], 503);
        assert!(!e[0].outlier.ejected());
        d.record(&e, &e[0], 503);
        assert!(e[0].outlier.ejected());
    }

    #[test]
    fn panic_clears_skip_flags() {
        let (clock, _t) = Clock::manual();
        let mut p = params(300, 100);
        p.min_health_percent = 50;
        let d = Detector::with_clock(p, 3, clock);
        let e = eps(3);
        for _ in 0..5 {
            d.record(&e, &e[0], 500);
        }
        assert!(e[0].outlier.skipped());
        for _ in 0..5 {
            d.record(&e, &e[1], 500);
        }
        assert!(e[0].outlier.ejected() && e[1].outlier.ejected());
        assert!(!e[0].outlier.skipped() && !e[1].outlier.skipped() && !d.skipping());
    }
}
