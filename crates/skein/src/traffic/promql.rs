//! Every query `skein stat`, `skein edges` and `skein top` make, in one place: as PromQL for
//! the mesh's Prometheus, and as the same expression evaluated over the proxies' own
//! `/stats/prometheus` when Prometheus does not run (see `local.rs`).
//!
//! The metrics are Istio's standard ones: `istio_requests_total`,
//! `istio_request_duration_milliseconds_bucket` and the `istio_tcp_*` counters. Success is
//! Flagger's and Argo Rollouts' definition: requests whose `response_code` is not 5xx over all
//! requests.

use std::fmt::Write as _;
use std::time::Duration;

pub const REQUESTS: &str = "istio_requests_total";
pub const DURATION_BUCKET: &str = "istio_request_duration_milliseconds_bucket";
pub const TCP_OPENED: &str = "istio_tcp_connections_opened_total";
pub const TCP_CLOSED: &str = "istio_tcp_connections_closed_total";
pub const TCP_SENT: &str = "istio_tcp_sent_bytes_total";
pub const TCP_RECEIVED: &str = "istio_tcp_received_bytes_total";

/// How a label is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    /// Not a regular expression, anchored at both ends as in PromQL.
    Nre,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub label: &'static str,
    pub op: Op,
    pub value: String,
}

impl Matcher {
    pub fn eq(label: &'static str, value: impl Into<String>) -> Matcher {
        Matcher {
            label,
            op: Op::Eq,
            value: value.into(),
        }
    }
}

/// The requests that did not fail on the server: `response_code!~"5.*"` (Flagger's and Argo
/// Rollouts' stock queries).
pub fn not_5xx() -> Matcher {
    Matcher {
        label: "response_code",
        op: Op::Nre,
        value: "5.*".into(),
    }
}

/// One metric with label matchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: &'static str,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    pub fn new(metric: &'static str, matchers: Vec<Matcher>) -> Selector {
        Selector { metric, matchers }
    }

    pub fn with(&self, m: Matcher) -> Selector {
        let mut s = self.clone();
        s.matchers.push(m);
        s
    }

    fn render(&self) -> String {
        let mut out = self.metric.to_string();
        out.push('{');
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let op = match m.op {
                Op::Eq => "=",
                Op::Nre => "!~",
            };
            let _ = write!(out, "{}{op}\"{}\"", m.label, escape(&m.value));
        }
        out.push('}');
        out
    }
}

/// A PromQL string literal's content.
fn escape(v: &str) -> String {
    skein_runtime::prom::escape_label(v)
}

/// The expressions the commands evaluate.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `sum by (BY) (rate(SEL[WINDOW]))` per second over the window.
    Rate {
        sel: Selector,
        by: Vec<&'static str>,
    },
    /// `sum by (BY) (SEL)`: the counters' current totals.
    Total {
        sel: Selector,
        by: Vec<&'static str>,
    },
    /// `histogram_quantile(Q, sum by (le, BY) (rate(SEL[WINDOW])))`, SEL a `_bucket` series.
    Quantile {
        q: f64,
        sel: Selector,
        by: Vec<&'static str>,
    },
}

impl Expr {
    /// The PromQL text, over `window` where it takes one.
    pub fn promql(&self, window: Duration) -> String {
        let w = prom_duration(window);
        match self {
            Expr::Rate { sel, by } => {
                format!("sum by ({}) (rate({}[{w}]))", by.join(", "), sel.render())
            }
            Expr::Total { sel, by } => format!("sum by ({}) ({})", by.join(", "), sel.render()),
            Expr::Quantile { q, sel, by } => {
                let mut labels = vec!["le"];
                labels.extend(by.iter().copied());
                format!(
                    "histogram_quantile({q}, sum by ({}) (rate({}[{w}])))",
                    labels.join(", "),
                    sel.render()
                )
            }
        }
    }
}

/// A window as PromQL writes it: whole seconds (`60s`), milliseconds when there is a rest.
pub fn prom_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flaggers_shapes() {
        let sel = Selector::new(
            REQUESTS,
            vec![
                Matcher::eq("reporter", "destination"),
                Matcher::eq("destination_workload_namespace", "blog-system"),
            ],
        );
        let e = Expr::Rate {
            sel: sel.with(not_5xx()),
            by: vec!["destination_workload_namespace", "destination_workload"],
        };
        assert_eq!(
            e.promql(Duration::from_secs(60)),
            r#"sum by (destination_workload_namespace, destination_workload) (rate(istio_requests_total{reporter="destination", destination_workload_namespace="blog-system", response_code!~"5.*"}[60s]))"#
        );
        let q = Expr::Quantile {
            q: 0.95,
            sel: Selector::new(DURATION_BUCKET, sel.matchers.clone()),
            by: vec!["destination_workload"],
        };
        assert_eq!(
            q.promql(Duration::from_millis(15_500)),
            r#"histogram_quantile(0.95, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket{reporter="destination", destination_workload_namespace="blog-system"}[15500ms])))"#
        );
        let t = Expr::Total {
            sel: Selector::new(TCP_OPENED, vec![Matcher::eq("x", "a\"b")]),
            by: vec!["pod"],
        };
        assert_eq!(
            t.promql(Duration::from_secs(1)),
            r#"sum by (pod) (istio_tcp_connections_opened_total{x="a\"b"})"#
        );
    }
}
