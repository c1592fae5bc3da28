//! Health as Kiali computes it with its default tolerances: per protocol and code class, the
//! share of failed requests (HTTP 5xx: degraded from 0.1 %, failure from 10 %; 4xx: degraded
//! from 10 %, failure from 20 %), combined with the pods' state (no replica available is a
//! failure, fewer than desired or a proxy out of sync is degraded). The worst wins.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value as Json, json};
use skein_runtime::prom::{Sample, escape_label};

/// Kiali's health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    NoHealth,
    Healthy,
    Degraded,
    Failure,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NoHealth => "No health information",
            Status::Healthy => "Healthy",
            Status::Degraded => "Degraded",
            Status::Failure => "Failure",
        }
    }
}

/// One tolerance: a code class and the percentages from which it degrades or fails.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// The first digit of the HTTP code (`5` for 5xx).
    pub class: char,
    pub degraded: f64,
    pub failure: f64,
}

/// Kiali's defaults for HTTP.
pub const TOLERANCES: [Tolerance; 2] = [
    Tolerance {
        class: '5',
        degraded: 0.1,
        failure: 10.0,
    },
    Tolerance {
        class: '4',
        degraded: 10.0,
        failure: 20.0,
    },
];

/// Kiali's `workloadStatuses` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    pub name: String,
    pub desired_replicas: usize,
    pub current_replicas: usize,
    pub available_replicas: usize,
    /// -1 when the workload has no proxies (Kiali's convention).
    pub synced_proxies: i64,
}

/// The pods' part of the health.
pub fn pods_status(w: &WorkloadStatus) -> Status {
    if w.desired_replicas == 0 {
        return Status::NoHealth;
    }
    if w.available_replicas == 0 {
        return Status::Failure;
    }
    if w.available_replicas < w.desired_replicas
        || (w.synced_proxies >= 0 && (w.synced_proxies as usize) < w.desired_replicas)
    {
        return Status::Degraded;
    }
    Status::Healthy
}

/// Request rates by code, per protocol: `{"http": {"200": 1.2, "503": 0.1}}`.
pub type Rates = BTreeMap<String, BTreeMap<String, f64>>;

/// The requests' part of the health, and the error ratio (failed / all, 0..1) it came from.
pub fn requests_status(rates: &Rates) -> (Status, f64) {
    let mut worst = Status::NoHealth;
    let mut ratio: f64 = 0.0;
    for codes in rates.values() {
        let total: f64 = codes.values().sum();
        if total <= 0.0 {
            continue;
        }
        worst = worst.max(Status::Healthy);
        let mut failed = 0.0;
        for t in TOLERANCES {
            let r: f64 = codes
                .iter()
                .filter(|(c, _)| c.len() == 3 && c.starts_with(t.class))
                .map(|(_, v)| v)
                .sum();
            failed += r;
            let pct = r / total * 100.0;
            if pct >= t.failure {
                worst = worst.max(Status::Failure);
            } else if pct >= t.degraded {
                worst = worst.max(Status::Degraded);
            }
        }
        ratio = ratio.max(failed / total);
    }
    (worst, ratio)
}

/// The worst of the parts; "no health information" only when every part has none.
pub fn combine(parts: &[Status]) -> Status {
    parts.iter().copied().max().unwrap_or(Status::NoHealth)
}

/// What the health of a namespace is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    App,
    Workload,
    Service,
}

impl Kind {
    pub fn parse(s: &str) -> Kind {
        match s {
            "workload" => Kind::Workload,
            "service" => Kind::Service,
            _ => Kind::App,
        }
    }
    /// The label naming the object on the inbound (destination) side and the outbound
    /// (source) side; services have no outbound side.
    fn labels(self) -> (&'static str, Option<&'static str>) {
        match self {
            Kind::App => (
                "destination_canonical_service",
                Some("source_canonical_service"),
            ),
            Kind::Workload => ("destination_workload", Some("source_workload")),
            Kind::Service => ("destination_service_name", None),
        }
    }
}

/// The two queries of a namespace's health: inbound (destination-reported) and outbound
/// (source-reported) request rates over `rate_interval` seconds.
pub fn queries(ns: &str, kind: Kind, rate_interval: u64) -> (String, Option<String>) {
    let ns = escape_label(ns);
    let (inb, out) = kind.labels();
    let inbound = format!(
        "sum(rate(istio_requests_total{{reporter=\"destination\",destination_service_namespace=\"{ns}\"}}[{rate_interval}s])) by ({inb},request_protocol,response_code)"
    );
    let outbound = out.map(|o| {
        format!(
            "sum(rate(istio_requests_total{{reporter=\"source\",source_workload_namespace=\"{ns}\"}}[{rate_interval}s])) by ({o},request_protocol,response_code)"
        )
    });
    (inbound, outbound)
}

/// Rates by object name from a query's rows.
pub fn rates_by(rows: &[Sample], label: &str) -> BTreeMap<String, Rates> {
    let mut out: BTreeMap<String, Rates> = BTreeMap::new();
    for r in rows {
        let name = r.get(label);
        if name.is_empty() || name == "unknown" || !r.value.is_finite() {
            continue;
        }
        let code = match r.get("response_code") {
            "0" | "" => "-",
            c => c,
        };
        let proto = match r.get("request_protocol") {
            "" => "http",
            p => p,
        };
        *out.entry(name.to_string())
            .or_default()
            .entry(proto.to_string())
            .or_default()
            .entry(code.to_string())
            .or_default() += r.value;
    }
    out
}

/// One object's entry of `GET /api/namespaces/{ns}/health`.
pub fn entry(inbound: &Rates, outbound: &Rates, pods: Option<&WorkloadStatus>) -> Json {
    let (in_status, in_ratio) = requests_status(inbound);
    let (out_status, out_ratio) = requests_status(outbound);
    let pod_status = pods.map_or(Status::NoHealth, pods_status);
    let status = combine(&[in_status, out_status, pod_status]);
    let mut v = json!({
        "requests": {"inbound": inbound, "outbound": outbound, "healthAnnotations": {}},
        "status": {"status": status.as_str(), "errorRatio": in_ratio.max(out_ratio)},
    });
    if let Some(p) = pods {
        v["workloadStatuses"] = json!([p]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(codes: &[(&str, f64)]) -> Rates {
        [(
            "http".to_string(),
            codes.iter().map(|(c, v)| (c.to_string(), *v)).collect(),
        )]
        .into()
    }

    #[test]
    fn kialis_default_tolerances() {
        assert_eq!(requests_status(&Rates::new()).0, Status::NoHealth);
        assert_eq!(requests_status(&rates(&[("200", 10.0)])).0, Status::Healthy);
        // 5xx: 0.1 % degrades, 10 % fails.
        assert_eq!(
            requests_status(&rates(&[("200", 999.5), ("503", 0.5)])).0,
            Status::Healthy,
            "0.05 % 5xx is under the 0.1 % tolerance"
        );
        assert_eq!(
            requests_status(&rates(&[("200", 999.0), ("503", 1.0)])).0,
            Status::Degraded
        );
        assert_eq!(
            requests_status(&rates(&[("200", 91.0), ("503", 9.0)])).0,
            Status::Degraded
        );
        let (s, r) = requests_status(&rates(&[("200", 90.0), ("500", 10.0)]));
        assert_eq!(s, Status::Failure);
        assert!((r - 0.1).abs() < 1e-9);
        // 4xx: 10 % degrades, 20 % fails.
        assert_eq!(
            requests_status(&rates(&[("200", 91.0), ("404", 9.0)])).0,
            Status::Healthy
        );
        assert_eq!(
            requests_status(&rates(&[("200", 90.0), ("404", 10.0)])).0,
            Status::Degraded
        );
        assert_eq!(
            requests_status(&rates(&[("200", 80.0), ("403", 20.0)])).0,
            Status::Failure
        );
        // Requests without a response ("-") are not a code class of the tolerances.
        assert_eq!(
            requests_status(&rates(&[("200", 50.0), ("-", 50.0)])).0,
            Status::Healthy
        );
    }

    #[test]
    fn pods_and_requests_combine_to_the_worst() {
        let w = |desired, available, synced| WorkloadStatus {
            name: "was".into(),
            desired_replicas: desired,
            current_replicas: desired,
            available_replicas: available,
            synced_proxies: synced,
        };
        assert_eq!(pods_status(&w(2, 2, 2)), Status::Healthy);
        assert_eq!(pods_status(&w(2, 1, 2)), Status::Degraded);
        assert_eq!(pods_status(&w(2, 0, 0)), Status::Failure);
        assert_eq!(
            pods_status(&w(2, 2, 1)),
            Status::Degraded,
            "a proxy out of sync"
        );
        assert_eq!(pods_status(&w(1, 1, -1)), Status::Healthy, "no sidecar");
        let e = entry(
            &rates(&[("200", 90.0), ("503", 10.0)]),
            &Rates::new(),
            Some(&w(2, 2, 2)),
        );
        assert_eq!(e["status"]["status"], "Failure");
        assert_eq!(e["requests"]["inbound"]["http"]["503"], 10.0);
        assert_eq!(e["workloadStatuses"][0]["availableReplicas"], 2);
        let e = entry(&Rates::new(), &Rates::new(), None);
        assert_eq!(e["status"]["status"], "No health information");
    }

    #[test]
    fn the_queries_are_kialis_and_escaped() {
        let (i, o) = queries("blog-system", Kind::App, 60);
        assert_eq!(
            i,
            "sum(rate(istio_requests_total{reporter=\"destination\",destination_service_namespace=\"blog-system\"}[60s])) by (destination_canonical_service,request_protocol,response_code)"
        );
        assert!(
            o.unwrap()
                .contains("source_workload_namespace=\"blog-system\"")
        );
        let (i, o) = queries("a\"b", Kind::Service, 60);
        assert!(i.contains("\"a\\\"b\""));
        assert!(o.is_none());
    }
}
