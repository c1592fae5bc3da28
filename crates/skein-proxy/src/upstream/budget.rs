//! Per-cluster resilience state: the retry budget and mirror admission.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use skein_snapshot::ConnectionPool;

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

/// How many retries may be in flight to a cluster with `active` requests. With no
/// `retryBudget`, Istio's default, `http.maxRetries` (2^32-1 unless set): during a burst of
/// failures (a pod killed) every retriable request is retried, as in Istio. A budget (Envoy's
/// `retry_budget`, in place of the retry circuit breaker) scales with load and bounds the
/// extra load retries add to an upstream that fails every request.
pub fn budget(active: u32, pool: &ConnectionPool) -> u32 {
    match &pool.retry_budget {
        Some(b) => b.limit(active),
        None => pool.max_retries,
    }
}

impl ClusterResilience {
    /// Takes a retry slot if the budget allows it (`active`: the cluster's active requests).
    pub fn try_retry(self: &Arc<Self>, active: u32, pool: &ConnectionPool) -> Option<RetryGuard> {
        let limit = budget(active, pool);
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
    fn no_budget_is_max_retries_and_a_budget_replaces_it() {
        use skein_snapshot::RetryBudget;
        let mut pool = ConnectionPool::default();
        assert_eq!(budget(0, &pool), u32::MAX, "Istio's default: no budget");
        pool.max_retries = 5;
        assert_eq!(budget(100, &pool), 5);
        pool.retry_budget = Some(RetryBudget {
            percent_milli: 20_000,
            min_concurrency: 3,
        });
        assert_eq!(budget(0, &pool), 3);
        assert_eq!(budget(10, &pool), 3);
        assert_eq!(budget(100, &pool), 20, "the budget replaces maxRetries");
        assert_eq!(budget(u32::MAX, &pool), u32::MAX / 5);
        let r = Arc::new(ClusterResilience::default());
        let held: Vec<_> = (0..3).filter_map(|_| r.try_retry(1, &pool)).collect();
        assert_eq!(held.len(), 3);
        assert!(r.try_retry(1, &pool).is_none());
        drop(held);
        assert_eq!(r.retries_in_flight(), 0);
        assert!(r.try_retry(1, &pool).is_some());
    }
}
