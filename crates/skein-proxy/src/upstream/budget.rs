//! Per-cluster resilience state: the retry budget and mirror admission.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Retry budget: retries in flight per cluster may be at most this percentage of the
/// cluster's active requests...
pub const BUDGET_PERCENT: u32 = 20;
/// ... or this many, whichever is larger (Envoy's `retry_budget` defaults).
pub const BUDGET_MIN_CONCURRENCY: u32 = 3;

/// Per-cluster resilience state: the retry budget and mirror admission. Shared by every
/// route that sends to the cluster; it lives as long as the cluster's run-time state.
#[derive(Debug, Default)]
pub struct ClusterResilience {
    retries_in_flight: AtomicU32,
    /// Retries refused by the budget (Envoy's `upstream_rq_retry_overflow`).
    pub retry_overflow: AtomicU64,
    /// Retries started.
    pub retries: AtomicU64,
    mirrors_in_flight: AtomicU32,
    /// Mirror copies dropped because too many were in flight.
    pub mirrors_dropped: AtomicU64,
    /// Mirror copies sent.
    pub mirrors_sent: AtomicU64,
}

/// The retry budget. Envoy's `retry_budget` (what Istio's DestinationRule `retryBudget`
/// configures): retries in flight to a cluster may be at most 20% of its active requests,
/// but at least 3 are always allowed. Chosen over a token bucket because it scales with load
/// without tuning and needs no clock: when an upstream fails every request, the extra load
/// retries add is bounded to 20%, so retries cannot multiply an outage; at low traffic the
/// floor of 3 still lets sporadic failures be retried. `max_retries` (DestinationRule
/// `http.maxRetries`, Envoy's retry circuit breaker) caps it further.
pub fn budget(active: u32, max_retries: u32) -> u32 {
    (active.saturating_mul(BUDGET_PERCENT) / 100)
        .max(BUDGET_MIN_CONCURRENCY)
        .min(max_retries)
}

impl ClusterResilience {
    /// Takes a retry slot if the budget allows it (`active`: the cluster's active requests).
    pub fn try_retry(self: &Arc<Self>, active: u32, max_retries: u32) -> Option<RetryGuard> {
        let limit = budget(active, max_retries);
        let ok = self
            .retries_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if ok {
            self.retries.fetch_add(1, Ordering::Relaxed);
            Some(RetryGuard(Arc::clone(self)))
        } else {
            self.retry_overflow.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    #[cfg(test)]
    /// Retries in flight now.
    pub fn retries_in_flight(&self) -> u32 {
        self.retries_in_flight.load(Ordering::Relaxed)
    }

    /// Takes a mirror slot (at most `max` in flight); None drops the copy and counts it.
    pub fn try_mirror(self: &Arc<Self>, max: u32) -> Option<MirrorGuard> {
        let ok = self
            .mirrors_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if ok {
            self.mirrors_sent.fetch_add(1, Ordering::Relaxed);
            Some(MirrorGuard(Arc::clone(self)))
        } else {
            self.mirrors_dropped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// A retry in flight; released on drop.
#[derive(Debug)]
pub struct RetryGuard(Arc<ClusterResilience>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retries_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A mirrored request in flight; released on drop.
#[derive(Debug)]
pub struct MirrorGuard(Arc<ClusterResilience>);

impl Drop for MirrorGuard {
    fn drop(&mut self) {
        self.0.mirrors_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_20_percent_with_a_floor_of_3() {
        assert_eq!(budget(0, u32::MAX), 3);
        assert_eq!(budget(10, u32::MAX), 3);
        assert_eq!(budget(100, u32::MAX), 20);
        assert_eq!(budget(100, 5), 5);
        let r = Arc::new(ClusterResilience::default());
        let held: Vec<_> = (0..3).filter_map(|_| r.try_retry(1, u32::MAX)).collect();
        assert_eq!(held.len(), 3);
        assert!(r.try_retry(1, u32::MAX).is_none());
        drop(held);
        assert_eq!(r.retries_in_flight(), 0);
        assert!(r.try_retry(1, u32::MAX).is_some());
    }
}
