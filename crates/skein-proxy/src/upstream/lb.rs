//! Load balancers: round robin, least request (power of two choices), random, ring hash.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderMap;
use skein_snapshot::{HashKey, LbPolicy};

use crate::upstream::endpoint::EndpointState;

/// What a hash key can be taken from.
#[derive(Debug, Clone, Copy)]
pub struct PickCtx<'a> {
    /// Request headers (None for TCP).
    pub headers: Option<&'a HeaderMap>,
    /// Query string.
    pub query: Option<&'a str>,
    /// Downstream source address.
    pub source_ip: IpAddr,
}

/// A compiled load balancer for one cluster.
#[derive(Debug)]
pub enum Balancer {
    /// ROUND_ROBIN.
    RoundRobin(AtomicUsize),
    /// LEAST_REQUEST: two random choices, fewer active requests wins (Envoy's default with
    /// equal weights).
    LeastRequest,
    /// RANDOM.
    Random,
    /// Consistent hash on a ring.
    Ring(Ring),
}

/// A ring hash over endpoints (Envoy's ring_hash, simplified).
#[derive(Debug)]
pub struct Ring {
    key: HashKey,
    /// (hash, endpoint index), sorted by hash.
    points: Vec<(u64, u32)>,
}

/// FNV-1a 64 followed by a splitmix64 finalizer: stable across processes and releases.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Ring {
    fn new(key: HashKey, min_size: u32, endpoints: &[Arc<EndpointState>]) -> Ring {
        let mut points = Vec::new();
        if !endpoints.is_empty() {
            let total_weight: u64 = endpoints.iter().map(|e| u64::from(e.weight.max(1))).sum();
            let min_size = u64::from(min_size.clamp(1, 1 << 23));
            for (i, ep) in endpoints.iter().enumerate() {
                let share = (min_size * u64::from(ep.weight.max(1))).div_ceil(total_weight);
                let name = ep.addr.to_string();
                for r in 0..share.max(1) {
                    let h = hash64(format!("{name}_{r}").as_bytes());
                    points.push((h, i as u32));
                }
            }
            points.sort_unstable();
        }
        Ring { key, points }
    }

    fn key_hash(&self, ctx: &PickCtx<'_>) -> Option<u64> {
        match &self.key {
            HashKey::Header(name) => ctx
                .headers?
                .get(name.as_str())
                .map(|v| hash64(v.as_bytes())),
            HashKey::Cookie { name, .. } => {
                let headers = ctx.headers?;
                for v in headers.get_all(http::header::COOKIE) {
                    let Ok(s) = v.to_str() else { continue };
                    for pair in s.split(';') {
                        if let Some((k, val)) = pair.trim().split_once('=')
                            && k == name
                        {
                            return Some(hash64(val.as_bytes()));
                        }
                    }
                }
                None
            }
            HashKey::SourceIp => Some(hash64(ctx.source_ip.to_string().as_bytes())),
            HashKey::QueryParam(name) => {
                let q = ctx.query?;
                q.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == name).then(|| hash64(v.as_bytes()))
                })
            }
        }
    }

    /// The first endpoint in service at or after `h` on the ring.
    fn lookup_healthy(&self, h: u64, endpoints: &[Arc<EndpointState>]) -> Option<usize> {
        let len = self.points.len();
        let start = self.points.partition_point(|(p, _)| *p < h);
        (0..len).find_map(|k| {
            let (_, ep) = self.points[(start + k) % len];
            let i = ep as usize;
            endpoints
                .get(i)
                .is_some_and(|e| !e.outlier.skipped())
                .then_some(i)
        })
    }

    fn lookup(&self, h: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|(p, _)| *p < h);
        let (_, ep) = self.points[if i == self.points.len() { 0 } else { i }];
        Some(ep as usize)
    }
}

impl Balancer {
    /// Compiles a policy for a fixed endpoint list.
    pub fn new(policy: &LbPolicy, endpoints: &[Arc<EndpointState>]) -> Balancer {
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(AtomicUsize::new(0)),
            LbPolicy::LeastRequest => Balancer::LeastRequest,
            LbPolicy::Random => Balancer::Random,
            LbPolicy::ConsistentHash(ch) => {
                Balancer::Ring(Ring::new(ch.key.clone(), ch.minimum_ring_size, endpoints))
            }
        }
    }

    #[cfg(test)]
    /// Picks an endpoint index, skipping endpoints that outlier detection ejected (their
    /// `skipped` flag, which is off while the cluster is in panic); None when there is no
    /// endpoint to pick. Scans the flags; [`crate::upstream::cluster::ClusterState::pick`] knows
    /// whether any is set without a scan.
    pub fn pick(&self, endpoints: &[Arc<EndpointState>], ctx: &PickCtx<'_>) -> Option<usize> {
        let skipping = endpoints.iter().any(|e| e.outlier.skipped());
        self.pick_with(endpoints, ctx, skipping)
    }

    /// Picks an endpoint index. With `skipping`, endpoints whose `outlier.skipped()` is set
    /// are left out (every policy picks among the others as it would among all).
    pub fn pick_with(
        &self,
        endpoints: &[Arc<EndpointState>],
        ctx: &PickCtx<'_>,
        skipping: bool,
    ) -> Option<usize> {
        if skipping {
            return self.pick_healthy(endpoints, ctx);
        }
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(0);
        }
        Some(match self {
            Balancer::RoundRobin(next) => next.fetch_add(1, Ordering::Relaxed) % n,
            Balancer::Random => fastrand::usize(..n),
            Balancer::LeastRequest => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (la, lb) = (endpoints[a].active(), endpoints[b].active());
                if lb < la { b } else { a }
            }
            Balancer::Ring(ring) => match ring.key_hash(ctx) {
                Some(h) => ring.lookup(h).unwrap_or(0),
                // No key in the request: Envoy picks at random.
                None => fastrand::usize(..n),
            },
        })
    }

    /// The slow path while some endpoints are ejected: the policy runs over the endpoints in
    /// service (the k-th one found by a scan, no allocation); the ring walks on from an
    /// ejected endpoint's point to the next one in service, so other keys keep their host.
    fn pick_healthy(&self, endpoints: &[Arc<EndpointState>], ctx: &PickCtx<'_>) -> Option<usize> {
        let healthy = endpoints.iter().filter(|e| !e.outlier.skipped()).count();
        if healthy == 0 {
            return None;
        }
        // Flags can change between the count and the scan: fall back to any endpoint in
        // service.
        let nth = |k: usize| {
            endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.outlier.skipped())
                .nth(k)
                .or_else(|| {
                    endpoints
                        .iter()
                        .enumerate()
                        .find(|(_, e)| !e.outlier.skipped())
                })
                .map(|(i, _)| i)
        };
        match self {
            Balancer::RoundRobin(next) => nth(next.fetch_add(1, Ordering::Relaxed) % healthy),
            Balancer::Random => nth(fastrand::usize(..healthy)),
            Balancer::LeastRequest => {
                if healthy == 1 {
                    return nth(0);
                }
                let a = fastrand::usize(..healthy);
                let mut b = fastrand::usize(..healthy - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (nth(a)?, nth(b)?);
                let (la, lb) = (endpoints[a].active(), endpoints[b].active());
                Some(if lb < la { b } else { a })
            }
            Balancer::Ring(ring) => match ring.key_hash(ctx) {
                Some(h) => ring.lookup_healthy(h, endpoints).or_else(|| nth(0)),
                None => nth(fastrand::usize(..healthy)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                Arc::new(EndpointState::new(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                    1,
                ))
            })
            .collect()
    }

    fn ctx(h: &HeaderMap) -> PickCtx<'_> {
        PickCtx {
            headers: Some(h),
            query: None,
            source_ip: IpAddr::from([127, 0, 0, 1]),
        }
    }

    #[test]
    fn round_robin_alternates() {
        let e = eps(3);
        let b = Balancer::new(&LbPolicy::RoundRobin, &e);
        let h = HeaderMap::new();
        let picks: Vec<_> = (0..6).filter_map(|_| b.pick(&e, &ctx(&h))).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn ring_is_stable_and_spreads() {
        let e = eps(4);
        let policy = LbPolicy::ConsistentHash(skein_snapshot::ConsistentHash {
            key: HashKey::Header("x-user".into()),
            minimum_ring_size: 1024,
        });
        let b = Balancer::new(&policy, &e);
        let b2 = Balancer::new(&policy, &e);
        let mut seen = std::collections::HashSet::new();
        for u in 0..200 {
            let mut h = HeaderMap::new();
            h.insert("x-user", http::HeaderValue::from(u));
            let p = b.pick(&e, &ctx(&h));
            assert_eq!(p, b.pick(&e, &ctx(&h)));
            assert_eq!(p, b2.pick(&e, &ctx(&h)));
            seen.insert(p);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn every_policy_skips_ejected_endpoints() {
        use crate::upstream::outlier::{Clock, DEFAULT_MAX_EJECTION_MS, Detector, Params, Trip};
        let e: Vec<_> = (0..4)
            .map(|i| {
                Arc::new(
                    EndpointState::new(
                        std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                        1,
                    )
                    .with_index(i),
                )
            })
            .collect();
        let params = Params {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            interval_ms: 1000,
            base_ms: 1000,
            max_ejection_ms: DEFAULT_MAX_EJECTION_MS,
            max_ejection_percent: 100,
            min_health_percent: 0,
        };
        let (clock, _t) = Clock::manual();
        let d = Detector::with_clock(params, 4, clock);
        let ring = LbPolicy::ConsistentHash(skein_snapshot::ConsistentHash {
            key: HashKey::Header("x-user".into()),
            minimum_ring_size: 1024,
        });
        let policies = [
            LbPolicy::RoundRobin,
            LbPolicy::LeastRequest,
            LbPolicy::Random,
            ring.clone(),
        ];
        // Where each user hashes with every endpoint in service.
        let rb = Balancer::new(&ring, &e);
        let before: Vec<_> = (0..200)
            .map(|u| {
                let mut h = HeaderMap::new();
                h.insert("x-user", http::HeaderValue::from(u));
                rb.pick(&e, &ctx(&h))
            })
            .collect();
        assert!(d.trip(&e, 1, Trip::Consecutive5xx, 0));
        for p in &policies {
            let b = Balancer::new(p, &e);
            let mut seen = std::collections::HashSet::new();
            for u in 0..200 {
                let mut h = HeaderMap::new();
                h.insert("x-user", http::HeaderValue::from(u));
                let got = b.pick(&e, &ctx(&h));
                assert_ne!(got, Some(1), "{p:?}");
                if matches!(p, LbPolicy::ConsistentHash(_)) {
                    assert_eq!(got, b.pick_with(&e, &ctx(&h), d.skipping()));
                }
                seen.insert(got);
            }
            assert_eq!(seen.len(), 3, "{p:?} spreads over the rest");
        }
        // The ring moves only the ejected endpoint's keys.
        for (u, was) in before.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert("x-user", http::HeaderValue::from(u));
            if *was != Some(1) {
                assert_eq!(rb.pick(&e, &ctx(&h)), *was);
            }
        }
        // All ejected, no panic: nothing to pick.
        for i in [0, 2, 3] {
            assert!(d.trip(&e, i, Trip::Consecutive5xx, 0));
        }
        for p in &policies {
            assert_eq!(Balancer::new(p, &e).pick(&e, &ctx(&HeaderMap::new())), None);
        }
    }
}
