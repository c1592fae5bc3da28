//! Prometheus as Istio's addon runs it: a `prometheus` pod in istio-system scraping every pod
//! annotated `prometheus.io/scrape: "true"` at its `prometheus.io/port` and
//! `prometheus.io/path`, every 15 s. With Kubernetes, the addon finds pods through service
//! discovery and relabelling (`samples/addons/prometheus.yaml`, job `kubernetes-pods`);
//! here the runtime knows every pod's address, so the generated config lists the same
//! targets with the same labels (`namespace`, `pod` and the pod's labels), and the same
//! annotations work unchanged on a cluster's Prometheus.
//!
//! Injection rewrites the annotations as Istio's metrics merging does
//! (`pkg/kube/inject`, `applyPrometheusMerge`): a sidecar-injected pod is scraped at the
//! sidecar's `:15020/stats/prometheus`, and what the pod's own `prometheus.io/*`
//! annotations said moves to the sidecar, which merges the app's metrics into its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::PodPlan;

/// Prometheus's own port.
pub const PROMETHEUS_PORT: u16 = 9090;
/// Istio's status port, where the sidecar serves the merged metrics.
pub const STATUS_PORT: u16 = 15020;
/// The merged metrics' path.
pub const MERGED_PATH: &str = "/stats/prometheus";
/// Istio's addon scrapes every 15 s.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(15);
/// How to get the binary, said when it is missing.
pub const MISSING: &str = "not running: no `prometheus` program on PATH (on Debian or Ubuntu `sudo apt-get install prometheus` adds it; ./scripts/skein up installs it); everything else runs without it";

const SCRAPE: &str = "prometheus.io/scrape";
const PORT: &str = "prometheus.io/port";
const PATH: &str = "prometheus.io/path";
const MERGE: &str = "prometheus.istio.io/merge-metrics";

/// Where Prometheus scrapes a pod (on the pod's IP), or where a sidecar scrapes its app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub port: u16,
    pub path: String,
}

/// A pod's scraping, after injection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodScrape {
    /// Where Prometheus scrapes the pod (None: it is not scraped).
    pub pod: Option<ScrapeTarget>,
    /// For a sidecar-injected pod: the app's own metrics, which the sidecar merges.
    pub app: Option<ScrapeTarget>,
}

fn port(v: &str) -> Result<u16, String> {
    v.trim()
        .parse::<u16>()
        .map_err(|_| format!("annotation {PORT}: {v:?} is not a port number"))
}

/// The pod's scraping from its annotations, as Istio's injection leaves them. `meshed`: the
/// pod gets a sidecar. `first_port`: the first container port (where Prometheus's pod
/// discovery points when `prometheus.io/port` is absent).
pub fn pod_scrape(
    annotations: &std::collections::BTreeMap<String, String>,
    meshed: bool,
    first_port: Option<u16>,
) -> Result<PodScrape, String> {
    let get = |k: &str| annotations.get(k).map(String::as_str);
    let as_annotated = || -> Result<PodScrape, String> {
        if !get(SCRAPE).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(PodScrape::default());
        }
        let port = match get(PORT) {
            Some(p) => Some(port(p)?),
            None => first_port,
        };
        Ok(PodScrape {
            pod: port.map(|port| ScrapeTarget {
                port,
                path: get(PATH).unwrap_or("/metrics").to_string(),
            }),
            app: None,
        })
    };
    // Istio: scraping is on unless the pod says otherwise; merging is on unless the pod's
    // `prometheus.istio.io/merge-metrics` turns it off.
    let scrape = get(SCRAPE).is_none_or(|v| v.eq_ignore_ascii_case("true"));
    let merge = match get(MERGE) {
        None => true,
        Some(v) => v
            .trim()
            .parse::<bool>()
            .map_err(|_| format!("annotation {MERGE}: {v:?} is not true or false"))?,
    };
    if !meshed || !scrape || !merge {
        return as_annotated();
    }
    if get(PORT).is_some_and(|p| p.trim() == STATUS_PORT.to_string()) {
        // Already pointed at the sidecar (injected before): left as it is.
        return as_annotated();
    }
    let app = if [SCRAPE, PORT, PATH].iter().any(|k| get(k).is_some()) {
        Some(ScrapeTarget {
            // The agent's defaults.
            port: get(PORT).map(port).transpose()?.unwrap_or(80),
            path: get(PATH).unwrap_or("/metrics").to_string(),
        })
    } else {
        None
    };
    Ok(PodScrape {
        pod: Some(merged()),
        app,
    })
}

/// The sidecar's (and the gateway's) merged metrics endpoint.
pub fn merged() -> ScrapeTarget {
    ScrapeTarget {
        port: STATUS_PORT,
        path: MERGED_PATH.to_string(),
    }
}

/// The Prometheus pod, as planned.
#[derive(Debug, Clone)]
pub struct PrometheusPlan {
    /// `http://IP:PORT`.
    pub url: String,
    pub config: PathBuf,
    pub data: PathBuf,
    pub scrape_interval: Duration,
}

/// A Prometheus duration: whole seconds as `15s`, else milliseconds.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A label name as Prometheus's `labelmap` makes it from a Kubernetes label.
fn label_name(k: &str) -> String {
    k.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A YAML string (JSON's quoting is YAML's double-quoted style).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Prometheus's config: Istio's addon's `kubernetes-pods` job over every pod with a scrape
/// target, and Prometheus scraping itself.
pub fn config(pods: &[PodPlan], prometheus: &PrometheusPlan, self_addr: &str) -> String {
    let interval = prometheus.scrape_interval.max(Duration::from_millis(100));
    let timeout = interval.min(Duration::from_secs(10));
    let mut out = String::new();
    out.push_str("# Written by `skein up` at every start: edits are lost.\n");
    out.push_str(&format!(
        "global:\n  scrape_interval: {i}\n  scrape_timeout: {t}\n  evaluation_interval: {i}\n",
        i = duration(interval),
        t = duration(timeout)
    ));
    out.push_str("scrape_configs:\n");
    out.push_str(&format!(
        "- job_name: prometheus\n  static_configs:\n  - targets: [{}]\n",
        quoted(self_addr)
    ));
    // As the addon: pod labels win over nothing, metrics' own labels win over the target's.
    out.push_str("- job_name: kubernetes-pods\n  honor_labels: true\n  static_configs:\n");
    let mut any = false;
    for pod in pods {
        let Some(t) = &pod.scrape else { continue };
        any = true;
        out.push_str(&format!(
            "  - targets: [{}]\n    labels:\n      __metrics_path__: {}\n",
            quoted(&SocketAddr::from((pod.ip, t.port)).to_string()),
            quoted(&t.path)
        ));
        for (k, v) in &pod.labels {
            let name = label_name(k);
            if name.starts_with("__") || name == "namespace" || name == "pod" || name.is_empty() {
                continue;
            }
            out.push_str(&format!("      {name}: {}\n", quoted(v)));
        }
        out.push_str(&format!(
            "      namespace: {}\n      pod: {}\n",
            quoted(&pod.namespace),
            quoted(&pod.name)
        ));
    }
    if !any {
        out.push_str("  - targets: []\n");
    }
    out
}

/// Writes Prometheus's config and makes its data directory (owner-only).
pub fn write_config(pods: &[PodPlan], p: &PrometheusPlan) -> Result<(), crate::RuntimeError> {
    crate::fs::private_dir(&p.data).map_err(|e| crate::RuntimeError::io(&p.data, e))?;
    let addr = p.url.trim_start_matches("http://");
    crate::fs::write_private(&p.config, config(pods, p, addr).as_bytes())
        .map_err(|e| crate::RuntimeError::io(&p.config, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn target(port: u16, path: &str) -> Option<ScrapeTarget> {
        Some(ScrapeTarget {
            port,
            path: path.into(),
        })
    }

    #[test]
    fn injection_points_prometheus_at_the_sidecar_and_moves_the_apps_annotations() {
        let app = ann(&[
            (SCRAPE, "true"),
            (PORT, "8080"),
            (PATH, "/actuator/prometheus"),
        ]);
        assert_eq!(
            pod_scrape(&app, true, Some(8080)).unwrap(),
            PodScrape {
                pod: target(15020, "/stats/prometheus"),
                app: target(8080, "/actuator/prometheus"),
            }
        );
        // No annotations at all: Istio still scrapes the sidecar, with nothing to merge.
        assert_eq!(
            pod_scrape(&ann(&[]), true, Some(8080)).unwrap(),
            PodScrape {
                pod: target(15020, "/stats/prometheus"),
                app: None,
            }
        );
        // Only a port: the agent's default path.
        assert_eq!(
            pod_scrape(&ann(&[(PORT, "9102")]), true, None).unwrap().app,
            target(9102, "/metrics")
        );
        // Only the scrape flag: the agent's default port and path.
        assert_eq!(
            pod_scrape(&ann(&[(SCRAPE, "true")]), true, None)
                .unwrap()
                .app,
            target(80, "/metrics")
        );
    }

    #[test]
    fn opting_out_leaves_the_annotations_as_they_are() {
        let off = ann(&[(SCRAPE, "false"), (PORT, "8080")]);
        assert_eq!(
            pod_scrape(&off, true, Some(8080)).unwrap(),
            PodScrape::default()
        );
        let unmerged = ann(&[(SCRAPE, "true"), (PORT, "8080"), (MERGE, "false")]);
        assert_eq!(
            pod_scrape(&unmerged, true, Some(8080)).unwrap(),
            PodScrape {
                pod: target(8080, "/metrics"),
                app: None
            }
        );
        let reinjected = ann(&[
            (SCRAPE, "true"),
            (PORT, "15020"),
            (PATH, "/stats/prometheus"),
        ]);
        assert_eq!(
            pod_scrape(&reinjected, true, None).unwrap(),
            PodScrape {
                pod: target(15020, "/stats/prometheus"),
                app: None
            }
        );
        assert!(pod_scrape(&ann(&[(MERGE, "maybe")]), true, None).is_err());
    }

    #[test]
    fn pods_without_a_sidecar_are_scraped_only_when_annotated() {
        assert_eq!(
            pod_scrape(&ann(&[]), false, Some(80)).unwrap(),
            PodScrape::default()
        );
        assert_eq!(
            pod_scrape(&ann(&[(SCRAPE, "True")]), false, Some(3000))
                .unwrap()
                .pod,
            target(3000, "/metrics"),
            "the first container port"
        );
        assert_eq!(
            pod_scrape(
                &ann(&[(SCRAPE, "true"), (PORT, "9104"), (PATH, "/m")]),
                false,
                None
            )
            .unwrap()
            .pod,
            target(9104, "/m")
        );
        assert!(pod_scrape(&ann(&[(SCRAPE, "true"), (PORT, "http")]), false, None).is_err());
    }

    fn pod(name: &str, ip: [u8; 4], scrape: Option<ScrapeTarget>) -> PodPlan {
        let mut p = super::super::mesh::mesh_pod(name.into(), ip.into(), "web", &[]);
        p.namespace = "blog-system".into();
        p.labels = [
            ("app".to_string(), "web".to_string()),
            ("version".to_string(), "v1".to_string()),
            (
                "app.kubernetes.io/name".to_string(),
                "blog\"web".to_string(),
            ),
        ]
        .into();
        p.scrape = scrape;
        p
    }

    #[test]
    fn the_config_lists_every_scraped_pod_with_the_addons_labels() {
        let pods = [
            pod("web-1", [127, 9, 1, 3], target(15020, "/stats/prometheus")),
            pod("job-1", [127, 9, 1, 4], None),
        ];
        let p = PrometheusPlan {
            url: "http://127.9.1.9:9090".into(),
            config: "/s/prometheus.yml".into(),
            data: "/s/data/prometheus".into(),
            scrape_interval: Duration::from_secs(15),
        };
        let text = config(&pods, &p, "127.9.1.9:9090");
        let expected = r#"# Written by `skein up` at every start: edits are lost.
global:
  scrape_interval: 15s
  scrape_timeout: 10s
  evaluation_interval: 15s
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: ["127.9.1.9:9090"]
- job_name: kubernetes-pods
  honor_labels: true
  static_configs:
  - targets: ["127.9.1.3:15020"]
    labels:
      __metrics_path__: "/stats/prometheus"
      app: "web"
      app_kubernetes_io_name: "blog\"web"
      version: "v1"
      namespace: "blog-system"
      pod: "web-1"
"#;
        assert_eq!(text, expected);
        // A short interval for tests: the timeout never exceeds it.
        let fast = PrometheusPlan {
            scrape_interval: Duration::from_millis(1500),
            ..p.clone()
        };
        let text = config(&[], &fast, "127.9.1.9:9090");
        assert!(
            text.contains("scrape_interval: 1500ms\n  scrape_timeout: 1500ms\n"),
            "{text}"
        );
        assert!(
            text.ends_with("  static_configs:\n  - targets: []\n"),
            "{text}"
        );
    }
}
