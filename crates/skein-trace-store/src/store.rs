//! The bounded in-memory store: traces by id, limited by span count and by (estimated)
//! bytes; when a new span does not fit, the oldest traces (by first arrival) go first, as
//! Jaeger's memory storage drops its oldest traces past `max_traces`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::model::{Span, SpanKind, TraceId};

/// What the store may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_spans: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_spans: 200_000,
            max_bytes: 128 << 20,
        }
    }
}

/// What one insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    pub stored: u64,
    /// Spans larger than the whole store.
    pub dropped: u64,
    /// Spans of older traces evicted to make room.
    pub evicted: u64,
}

#[derive(Debug, Default)]
struct Entry {
    spans: Vec<Span>,
    bytes: usize,
}

/// A trace search, as Jaeger's `TraceQueryParameters`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub service: String,
    pub operation: Option<String>,
    pub tags: Vec<(String, String)>,
    pub start_min_us: u64,
    pub start_max_us: u64,
    pub duration_min_us: Option<u64>,
    pub duration_max_us: Option<u64>,
    pub limit: usize,
}

#[derive(Debug, Default)]
pub struct Store {
    limits: Limits,
    traces: HashMap<TraceId, Entry>,
    /// Trace ids by first arrival, oldest first.
    order: VecDeque<TraceId>,
    spans: usize,
    bytes: usize,
    /// Per service, the spans of each (operation, kind).
    operations: BTreeMap<String, BTreeMap<(String, SpanKind), usize>>,
}

impl Store {
    pub fn new(limits: Limits) -> Store {
        Store {
            limits,
            ..Store::default()
        }
    }

    pub fn span_count(&self) -> usize {
        self.spans
    }

    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn insert(&mut self, spans: Vec<Span>) -> Inserted {
        let mut out = Inserted::default();
        for span in spans {
            let size = span.approx_bytes();
            if size > self.limits.max_bytes || self.limits.max_spans == 0 {
                out.dropped += 1;
                continue;
            }
            while self.spans + 1 > self.limits.max_spans
                || self.bytes + size > self.limits.max_bytes
            {
                match self.evict_oldest() {
                    Some(n) => out.evicted += n,
                    None => break,
                }
            }
            let ops = self.operations.entry(span.service.clone()).or_default();
            *ops.entry((span.name.clone(), span.kind)).or_default() += 1;
            let entry = self.traces.entry(span.trace_id).or_insert_with(|| {
                self.order.push_back(span.trace_id);
                Entry::default()
            });
            entry.bytes += size;
            entry.spans.push(span);
            self.spans += 1;
            self.bytes += size;
            out.stored += 1;
        }
        out
    }

    /// Removes the oldest trace; the number of spans it had.
    fn evict_oldest(&mut self) -> Option<u64> {
        let id = self.order.pop_front()?;
        let entry = self.traces.remove(&id)?;
        self.spans -= entry.spans.len();
        self.bytes -= entry.bytes;
        for s in &entry.spans {
            if let Some(ops) = self.operations.get_mut(&s.service) {
                let key = (s.name.clone(), s.kind);
                if let Some(n) = ops.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        ops.remove(&key);
                    }
                }
                if ops.is_empty() {
                    self.operations.remove(&s.service);
                }
            }
        }
        Some(entry.spans.len() as u64)
    }

    /// Service names, sorted.
    pub fn services(&self) -> Vec<String> {
        self.operations.keys().cloned().collect()
    }

    /// A service's operations with their span kinds, sorted; `kind` filters.
    pub fn operations(&self, service: &str, kind: Option<SpanKind>) -> Vec<(String, SpanKind)> {
        self.operations
            .get(service)
            .map(|ops| {
                ops.keys()
                    .filter(|(_, k)| kind.is_none_or(|want| want == *k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn trace(&self, id: TraceId) -> Option<Vec<Span>> {
        self.traces.get(&id).map(|e| e.spans.clone())
    }

    /// The traces with a span that matches every condition, newest (by their first span's
    /// start) first, at most `limit`.
    pub fn find(&self, q: &Query) -> Vec<Vec<Span>> {
        let mut hits: Vec<(u64, &Entry)> = self
            .traces
            .values()
            .filter(|e| e.spans.iter().any(|s| matches(s, q)))
            .map(|e| (e.spans.iter().map(|s| s.start_us).min().unwrap_or(0), e))
            .collect();
        hits.sort_by_key(|h| std::cmp::Reverse(h.0));
        hits.into_iter()
            .take(q.limit)
            .map(|(_, e)| e.spans.clone())
            .collect()
    }

    /// Calls between services (parent span's service -> child's, different services only)
    /// among spans that started in `[end - lookback, end]`.
    pub fn dependencies(&self, end_us: u64, lookback_us: u64) -> Vec<(String, String, u64)> {
        let start = end_us.saturating_sub(lookback_us);
        let mut links: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for e in self.traces.values() {
            let by_id: HashMap<u64, &str> = e
                .spans
                .iter()
                .map(|s| (s.span_id, s.service.as_str()))
                .collect();
            for s in &e.spans {
                if s.start_us < start || s.start_us > end_us {
                    continue;
                }
                let Some(parent) = s.parent_id.and_then(|p| by_id.get(&p)) else {
                    continue;
                };
                if *parent != s.service {
                    *links.entry((parent, &s.service)).or_default() += 1;
                }
            }
        }
        links
            .into_iter()
            .map(|((p, c), n)| (p.to_string(), c.to_string(), n))
            .collect()
    }
}

fn matches(s: &Span, q: &Query) -> bool {
    if s.service != q.service {
        return false;
    }
    if q.operation.as_ref().is_some_and(|o| *o != s.name) {
        return false;
    }
    if s.start_us < q.start_min_us || s.start_us > q.start_max_us {
        return false;
    }
    if q.duration_min_us.is_some_and(|d| s.duration_us < d)
        || q.duration_max_us.is_some_and(|d| s.duration_us > d)
    {
        return false;
    }
    q.tags.iter().all(|(k, v)| {
        let hit = |t: &crate::model::Tag| t.key == *k && t.value.as_text() == *v;
        s.tags.iter().any(hit)
            || s.process_tags.iter().any(hit)
            || s.logs.iter().any(|l| l.fields.iter().any(hit))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Tag, Value};

    pub(crate) fn span(trace: u128, id: u64, parent: Option<u64>, service: &str, op: &str) -> Span {
        Span {
            trace_id: TraceId(trace),
            span_id: id,
            parent_id: parent,
            name: op.into(),
            kind: SpanKind::Server,
            start_us: 1_000_000 + trace as u64 * 1000 + id,
            duration_us: 100 * id,
            service: service.into(),
            process_tags: vec![Tag::str("hostname", "h")],
            tags: vec![Tag::str("http.method", "GET")],
            logs: vec![],
            links: vec![],
            flags: 1,
        }
    }

    fn query(service: &str) -> Query {
        Query {
            service: service.into(),
            operation: None,
            tags: vec![],
            start_min_us: 0,
            start_max_us: u64::MAX,
            duration_min_us: None,
            duration_max_us: None,
            limit: 100,
        }
    }

    #[test]
    fn the_oldest_traces_go_first_by_span_count() {
        let mut st = Store::new(Limits {
            max_spans: 4,
            max_bytes: usize::MAX,
        });
        st.insert(vec![
            span(1, 1, None, "a", "x"),
            span(1, 2, Some(1), "b", "y"),
        ]);
        st.insert(vec![
            span(2, 1, None, "a", "x"),
            span(2, 2, Some(1), "a", "z"),
        ]);
        assert_eq!((st.span_count(), st.trace_count()), (4, 2));
        let r = st.insert(vec![span(3, 1, None, "c", "w")]);
        assert_eq!(
            r,
            Inserted {
                stored: 1,
                dropped: 0,
                evicted: 2
            }
        );
        assert!(st.trace(TraceId(1)).is_none(), "trace 1 was the oldest");
        assert!(st.trace(TraceId(2)).is_some());
        // Service b only had spans in trace 1: gone from the index too.
        assert_eq!(st.services(), vec!["a", "c"]);
        assert_eq!(
            st.operations("a", None),
            vec![
                ("x".to_string(), SpanKind::Server),
                ("z".into(), SpanKind::Server)
            ]
        );
        // Spans arriving later for an old trace join it; the trace keeps its age.
        st.insert(vec![span(2, 3, Some(1), "a", "x")]);
        assert_eq!(st.trace(TraceId(2)).unwrap().len(), 3);
        assert_eq!(st.trace_count(), 2);
    }

    #[test]
    fn the_byte_limit_evicts_and_oversized_spans_are_dropped() {
        let one = span(1, 1, None, "a", "x").approx_bytes();
        let mut st = Store::new(Limits {
            max_spans: 1000,
            max_bytes: one * 3,
        });
        for t in 1..=5 {
            st.insert(vec![span(t, 1, None, "a", "x")]);
        }
        assert_eq!(st.trace_count(), 3);
        assert!(st.bytes() <= one * 3);
        assert!(st.trace(TraceId(2)).is_none() && st.trace(TraceId(3)).is_some());
        let mut big = span(9, 1, None, "a", "x");
        big.tags.push(Tag::str("blob", "x".repeat(one * 4)));
        assert_eq!(st.insert(vec![big]).dropped, 1);
        assert_eq!(st.trace_count(), 3, "nothing was evicted for it");
    }

    #[test]
    fn each_query_parameter_filters() {
        let mut st = Store::new(Limits::default());
        let mut slow = span(1, 5, None, "web", "GET /");
        slow.tags.push(Tag {
            key: "http.status_code".into(),
            value: Value::Int(500),
        });
        st.insert(vec![slow, span(1, 6, Some(5), "was", "SELECT")]);
        st.insert(vec![span(2, 1, None, "web", "GET /health")]);
        st.insert(vec![span(3, 2, None, "web", "GET /")]);
        let ids = |q: &Query| -> Vec<u128> { st.find(q).iter().map(|t| t[0].trace_id.0).collect() };
        assert_eq!(ids(&query("web")), vec![3, 2, 1], "newest first");
        assert_eq!(ids(&query("was")), vec![1]);
        assert_eq!(ids(&query("nobody")), Vec::<u128>::new());
        let q = Query {
            operation: Some("GET /".into()),
            ..query("web")
        };
        assert_eq!(ids(&q), vec![3, 1]);
        let q = Query {
            tags: vec![("http.status_code".into(), "500".into())],
            ..query("web")
        };
        assert_eq!(ids(&q), vec![1]);
        let q = Query {
            tags: vec![("hostname".into(), "h".into())],
            ..query("web")
        };
        assert_eq!(ids(&q).len(), 3, "process tags match too");
        let q = Query {
            duration_min_us: Some(300),
            ..query("web")
        };
        assert_eq!(ids(&q), vec![1], "durations 500, 100, 200");
        let q = Query {
            duration_max_us: Some(150),
            ..query("web")
        };
        assert_eq!(ids(&q), vec![2]);
        let t2 = 1_000_000 + 2 * 1000 + 1;
        let q = Query {
            start_min_us: t2,
            start_max_us: t2,
            ..query("web")
        };
        assert_eq!(ids(&q), vec![2]);
        let q = Query {
            limit: 1,
            ..query("web")
        };
        assert_eq!(ids(&q), vec![3]);
        assert_eq!(
            st.dependencies(u64::MAX, u64::MAX),
            vec![("web".to_string(), "was".to_string(), 1)]
        );
        assert_eq!(st.dependencies(10, 5), vec![], "outside the window");
    }
}
