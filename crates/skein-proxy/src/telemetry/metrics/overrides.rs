//! Telemetry `metrics[].overrides`, compiled once per snapshot: per direction and metric,
//! `disabled` and `tagOverrides` (REMOVE, UPSERT with a CEL value).
//!
//! The hook into the metrics is narrow ([`super::metrics::RequestMetrics::record_with`]):
//! overrides that do not read the request (REMOVE, a literal UPSERT) are applied once when a
//! label set is built and cached like the plain ones, so a request costs no allocation; only
//! an UPSERT that reads the request (`request.headers['x']`, `request.host`, ...) builds its
//! label set per request.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;

use http::HeaderName;
use skein_snapshot::cel::{Attr, Attributes, CelError, Program};
use skein_snapshot::telemetry as snap;

use super::{AtomicHistogram, ByteHistogram, Labels};

/// Why overrides were refused.
#[derive(Debug, thiserror::Error)]
#[error("metrics override of tag {tag:?}: {error}")]
pub struct OverrideError {
    pub tag: String,
    pub error: CelError,
}

/// What to do with one label.
#[derive(Debug)]
enum Op {
    Remove,
    /// A value that does not depend on the request.
    Const(String),
    /// A value read from the request.
    Expr(Box<Program>),
}

/// The overrides of one metric in one direction, in the order they apply.
#[derive(Debug, Default)]
pub struct MetricRules {
    /// The metric is not exported.
    pub disabled: bool,
    ops: Vec<(&'static str, Op)>,
}

impl MetricRules {
    /// Whether the label set depends on the request.
    pub fn per_request(&self) -> bool {
        self.ops.iter().any(|(_, o)| matches!(o, Op::Expr(_)))
    }

    /// Applies the overrides to `labels` (request-reading values from `attrs`; without
    /// `attrs` they are left out, as a value that cannot be computed).
    pub fn apply(&self, labels: &mut Labels, attrs: Option<&dyn Attributes>) {
        for (name, op) in &self.ops {
            let value = match op {
                Op::Remove => {
                    labels.retain(|(k, _)| k != name);
                    continue;
                }
                Op::Const(v) => v.clone(),
                Op::Expr(p) => match attrs.and_then(|a| p.eval_string(a)) {
                    Some(v) => v,
                    // CEL error (a missing header): Istio leaves the label as it was.
                    None => continue,
                },
            };
            match labels.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) => *v = value,
                None => labels.push((name, value)),
            }
        }
    }
}

/// One direction's overrides of the HTTP request metrics.
#[derive(Debug, Default)]
pub struct ModeOverrides {
    /// `istio_requests_total`.
    pub requests: MetricRules,
    /// `istio_request_duration_milliseconds`.
    pub duration: MetricRules,
    /// `istio_request_bytes`.
    pub request_bytes: MetricRules,
    /// `istio_response_bytes`.
    pub response_bytes: MetricRules,
    /// `istio_request_messages_total` (gRPC).
    pub request_messages: MetricRules,
    /// `istio_response_messages_total` (gRPC).
    pub response_messages: MetricRules,
}

impl ModeOverrides {
    fn all(&self) -> [&MetricRules; 6] {
        [
            &self.requests,
            &self.duration,
            &self.request_bytes,
            &self.response_bytes,
            &self.request_messages,
            &self.response_messages,
        ]
    }
}

/// Both directions, and the request headers their values read.
#[derive(Debug, Default)]
pub struct MetricOverrides {
    /// Distinguishes one snapshot's overrides from the next (cached label sets are kept per
    /// id).
    id: u64,
    pub client: ModeOverrides,
    pub server: ModeOverrides,
    /// Request headers the UPSERT values read (copied into the request's record).
    pub request_headers: Vec<HeaderName>,
}

/// Label names from the config live as long as the process: interned so that a name seen
/// again (every snapshot repeats them) is not leaked again.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let set = NAMES.get_or_init(Default::default);
    let mut set = set.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = set.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

impl MetricOverrides {
    /// Compiles the snapshot's overrides; None when there are none (the metrics then take
    /// the plain path).
    pub fn compile(m: &snap::Metrics) -> Result<Option<MetricOverrides>, OverrideError> {
        if m.overrides.client.is_empty() && m.overrides.server.is_empty() {
            return Ok(None);
        }
        let mut headers = Vec::new();
        let mut mode = |list: &[snap::MetricOverride]| -> Result<ModeOverrides, OverrideError> {
            let mut out = ModeOverrides::default();
            for o in list {
                let targets: Vec<&mut MetricRules> = match o.metric.as_deref() {
                    None => vec![
                        &mut out.requests,
                        &mut out.duration,
                        &mut out.request_bytes,
                        &mut out.response_bytes,
                        &mut out.request_messages,
                        &mut out.response_messages,
                    ],
                    Some("requests") => vec![&mut out.requests],
                    Some("request_duration_milliseconds") => vec![&mut out.duration],
                    Some("request_bytes") => vec![&mut out.request_bytes],
                    Some("response_bytes") => vec![&mut out.response_bytes],
                    Some("request_messages") => vec![&mut out.request_messages],
                    Some("response_messages") => vec![&mut out.response_messages],
                    // The TCP metrics are not recorded on this path.
                    Some(_) => vec![],
                };
                let mut ops = Vec::new();
                for (tag, t) in &o.tags {
                    let op = match t {
                        snap::TagOverride::Remove => Op::Remove,
                        snap::TagOverride::Upsert(v) => {
                            let p = Program::compile(v).map_err(|error| OverrideError {
                                tag: tag.clone(),
                                error,
                            })?;
                            if p.reads_request() {
                                for a in p.attrs() {
                                    if let Attr::RequestHeader(h) = a
                                        && let Ok(n) = HeaderName::from_bytes(h.as_bytes())
                                    {
                                        headers.push(n);
                                    }
                                }
                                Op::Expr(Box::new(p))
                            } else {
                                let attrs = NoRequest;
                                Op::Const(p.eval_string(&attrs).unwrap_or_default())
                            }
                        }
                    };
                    ops.push((intern(tag), op));
                }
                for t in targets {
                    if o.disabled {
                        t.disabled = true;
                    }
                    for (name, op) in &ops {
                        t.ops.push((name, clone_op(op)));
                    }
                }
            }
            Ok(out)
        };
        let client = mode(&m.overrides.client)?;
        let server = mode(&m.overrides.server)?;
        headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        headers.dedup();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ok(Some(MetricOverrides {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            client,
            server,
            request_headers: headers,
        }))
    }

    /// One direction's overrides.
    pub fn mode(&self, client: bool) -> &ModeOverrides {
        if client { &self.client } else { &self.server }
    }
}

/// The handles of one label set under overrides (None: the metric is disabled).
#[derive(Debug)]
pub struct Handles {
    pub requests: Option<Counter>,
    pub duration: Option<AtomicHistogram>,
    pub request_bytes: Option<ByteHistogram>,
    pub response_bytes: Option<ByteHistogram>,
    /// gRPC series only.
    pub request_messages: Option<Counter>,
    pub response_messages: Option<Counter>,
}

/// The label set of each metric under overrides (None where it is disabled).
pub struct OverriddenLabels {
    pub requests: Option<Labels>,
    pub duration: Option<Labels>,
    pub request_bytes: Option<Labels>,
    pub response_bytes: Option<Labels>,
    pub request_messages: Option<Labels>,
    pub response_messages: Option<Labels>,
}

/// Cached handles for the common codes under one snapshot's overrides.
#[derive(Debug)]
pub struct Slots {
    id: u64,
    client: bool,
    slots: [OnceLock<Handles>; 16],
}

/// Overrides applied to one finished request.
pub struct Applied<'a> {
    pub overrides: &'a MetricOverrides,
    /// The request's direction (Telemetry `match.mode`).
    pub client: bool,
    /// What UPSERT values read.
    pub attrs: &'a dyn Attributes,
}

impl Applied<'_> {
    fn rules(&self) -> &ModeOverrides {
        self.overrides.mode(self.client)
    }

    /// Whether some label is computed from the request (then nothing is cached).
    pub fn per_request(&self) -> bool {
        self.rules().all().iter().any(|r| r.per_request())
    }

    /// The label set of each metric (None where the metric is disabled).
    pub fn labels(&self, full: &Labels) -> OverriddenLabels {
        let one = |r: &MetricRules| {
            (!r.disabled).then(|| {
                let mut l = full.clone();
                r.apply(&mut l, Some(self.attrs));
                l
            })
        };
        let r = self.rules();
        OverriddenLabels {
            requests: one(&r.requests),
            duration: one(&r.duration),
            request_bytes: one(&r.request_bytes),
            response_bytes: one(&r.response_bytes),
            request_messages: one(&r.request_messages),
            response_messages: one(&r.response_messages),
        }
    }

    /// Records through the cached handles of slot `i`, made by `make` the first time under
    /// these overrides.
    pub fn cached(
        &self,
        cell: &arc_swap::ArcSwapOption<Slots>,
        i: usize,
        make: impl FnOnce() -> Handles,
        record: impl Fn(&Handles),
    ) {
        let (id, client) = (self.overrides.id, self.client);
        {
            let cur = cell.load();
            if let Some(s) = cur.as_ref().filter(|s| s.id == id && s.client == client) {
                match s.slots.get(i) {
                    Some(slot) => record(slot.get_or_init(make)),
                    None => record(&make()),
                }
                return;
            }
        }
        // A new snapshot's overrides: a fresh cache (the previous one's label sets stay
        // registered with the values they counted).
        let fresh = Arc::new(Slots {
            id,
            client,
            slots: Default::default(),
        });
        match fresh.slots.get(i) {
            Some(slot) => record(slot.get_or_init(make)),
            None => record(&make()),
        }
        cell.store(Some(fresh));
    }
}

fn clone_op(op: &Op) -> Op {
    match op {
        Op::Remove => Op::Remove,
        Op::Const(v) => Op::Const(v.clone()),
        Op::Expr(p) => Op::Expr(p.clone()),
    }
}

/// The attributes of no request (for values that read none).
struct NoRequest;

impl Attributes for NoRequest {
    fn get(&self, _: &Attr) -> Option<skein_snapshot::cel::Value<'_>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ov(
        metric: Option<&str>,
        disabled: bool,
        tags: &[(&str, Option<&str>)],
    ) -> snap::MetricOverride {
        snap::MetricOverride {
            metric: metric.map(str::to_string),
            disabled,
            tags: tags
                .iter()
                .map(|(k, v)| {
                    let t = match v {
                        Some(v) => snap::TagOverride::Upsert(v.to_string()),
                        None => snap::TagOverride::Remove,
                    };
                    (k.to_string(), t)
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn static_overrides_apply_without_the_request() {
        let mut m = snap::Metrics::default();
        m.overrides.client = vec![
            ov(
                None,
                false,
                &[("destination_port", None), ("team", Some("'blog'"))],
            ),
            ov(Some("request_duration_milliseconds"), true, &[]),
        ];
        let o = MetricOverrides::compile(&m).unwrap().unwrap();
        let c = o.mode(true);
        assert!(!c.requests.disabled);
        assert!(c.duration.disabled);
        assert!(!c.requests.per_request());
        let mut labels: Labels = vec![
            ("reporter", "source".into()),
            ("destination_port", "80".into()),
        ];
        c.requests.apply(&mut labels, None);
        assert_eq!(
            labels,
            vec![("reporter", "source".into()), ("team", "blog".into())]
        );
        // The server side has none.
        assert!(!o.mode(false).requests.disabled);
        assert!(
            MetricOverrides::compile(&snap::Metrics::default())
                .unwrap()
                .is_none()
        );
    }

    struct Host;
    impl Attributes for Host {
        fn get(&self, a: &Attr) -> Option<skein_snapshot::cel::Value<'_>> {
            match a {
                Attr::RequestHost => {
                    Some(skein_snapshot::cel::Value::Str("was-service:8080".into()))
                }
                _ => None,
            }
        }
    }

    #[test]
    fn recorded_metrics_carry_the_overrides() {
        use super::super::{Metrics, RequestMetrics};
        let mut m = snap::Metrics::default();
        m.overrides.client = vec![
            ov(
                Some("requests"),
                false,
                &[
                    ("request_host", Some("request.host")),
                    ("source_cluster", None),
                ],
            ),
            ov(Some("request_duration_milliseconds"), true, &[]),
        ];
        m.overrides.server = vec![ov(None, false, &[("team", Some("'blog'"))])];
        let o = MetricOverrides::compile(&m).unwrap().unwrap();
        let metrics = Metrics::new();
        let base: Labels = vec![
            ("reporter", "source".into()),
            ("source_cluster", "Kubernetes".into()),
        ];
        let rm = RequestMetrics::new(base);
        let d = std::time::Duration::from_millis(3);
        let flags = super::super::ResponseFlags::NONE;
        for client in [true, true, false, false] {
            let applied = Applied {
                overrides: &o,
                client,
                attrs: &Host,
            };
            let f = super::super::Finished {
                code: 200,
                flags,
                duration: d,
                request_bytes: 100,
                response_bytes: 200,
                grpc: None,
            };
            rm.record_with(&metrics, &f, &applied);
        }
        let text = metrics.encode();
        assert!(
            text.contains("istio_requests_total{reporter=\"source\",response_code=\"200\",response_flags=\"-\",grpc_response_status=\"\",request_host=\"was-service:8080\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("istio_requests_total{reporter=\"source\",source_cluster=\"Kubernetes\",response_code=\"200\",response_flags=\"-\",grpc_response_status=\"\",team=\"blog\"} 2"),
            "{text}"
        );
        // The duration is disabled on the client side only.
        let durations = text
            .lines()
            .filter(|l| l.starts_with("istio_request_duration_milliseconds_count"))
            .collect::<Vec<_>>();
        assert_eq!(durations.len(), 1, "{text}");
        assert!(durations[0].contains("team=\"blog\""), "{text}");
    }

    #[test]
    fn request_values_and_a_bad_expression() {
        let mut m = snap::Metrics::default();
        m.overrides.server = vec![ov(
            Some("requests"),
            false,
            &[
                ("request_host", Some("request.host")),
                ("user", Some("request.headers['x-user']")),
            ],
        )];
        let o = MetricOverrides::compile(&m).unwrap().unwrap();
        assert_eq!(o.request_headers, vec![HeaderName::from_static("x-user")]);
        assert!(o.mode(false).requests.per_request());
        m.overrides.server = vec![ov(None, false, &[("x", Some("request.hots"))])];
        let e = MetricOverrides::compile(&m).unwrap_err().to_string();
        assert!(e.contains("request.hots"), "{e}");
    }
}
