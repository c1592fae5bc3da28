//! The tracing store as Istio's Jaeger addon (`samples/addons/jaeger.yaml`) runs it: a
//! `jaeger` pod in istio-system without a sidecar, keeping its data in memory, behind the
//! addon's Services: `jaeger-collector` (Zipkin 9411 and OTLP/HTTP 4318, where proxies send
//! spans: Istio's mesh config `zipkin.address` is `jaeger-collector.istio-system.svc:9411`),
//! `zipkin` (9411) and `tracing` (80 -> the query API on 16686).
//!
//! The Services are the runtime's own objects: written for the control plane into the
//! state directory's addons directory (the user's manifests may replace them), and planned
//! here like the manifests' Services.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{Check, ContainerPlan, NamedPort, PodPlan, Readiness, Run};
use crate::run::state::StateDir;

pub const ZIPKIN_PORT: u16 = 9411;
pub const OTLP_HTTP_PORT: u16 = 4318;
pub const QUERY_PORT: u16 = 16686;

/// The addon's Services, as the control plane and the runtime read them. Only the ports
/// the store serves: Jaeger's own collector protocols (14250, 14268) and OTLP/gRPC (4317)
/// are left out.
pub const SERVICES: &str = r#"# Written by `skein up` at every start: edits are lost. The tracing store's Services, as
# Istio's Jaeger addon (samples/addons/jaeger.yaml) defines them, for the ports it serves.
apiVersion: v1
kind: Service
metadata:
  name: jaeger-collector
  namespace: istio-system
  labels: {app: jaeger}
spec:
  selector: {app: jaeger}
  ports:
  - {name: http-zipkin, port: 9411, targetPort: 9411}
  - {name: http-otel, port: 4318, targetPort: 4318}
---
apiVersion: v1
kind: Service
metadata:
  name: zipkin
  namespace: istio-system
  labels: {name: zipkin}
spec:
  selector: {app: jaeger}
  ports:
  - {name: http-query, port: 9411, targetPort: 9411}
---
apiVersion: v1
kind: Service
metadata:
  name: tracing
  namespace: istio-system
  labels: {app: jaeger}
spec:
  selector: {app: jaeger}
  ports:
  - {name: http-query, port: 80, targetPort: 16686}
"#;

/// The name the Services are loaded under (errors would point here).
pub const SOURCE: &str = "skein-addons/tracing.yaml";

/// The tracing store, as planned.
#[derive(Debug, Clone)]
pub struct TracingPlan {
    /// `http://IP:16686`: the query API.
    pub url: String,
    pub zipkin: SocketAddr,
    pub otlp: SocketAddr,
}

/// Writes the Services for the control plane.
pub fn write_services(state: &StateDir) -> Result<(), crate::RuntimeError> {
    let dir = state.addons_dir();
    std::fs::create_dir_all(&dir).map_err(|e| crate::RuntimeError::io(&dir, e))?;
    let file = dir.join("tracing.yaml");
    std::fs::write(&file, SERVICES).map_err(|e| crate::RuntimeError::io(&file, e))
}

/// The `jaeger` pod: `skein trace-store` on the pod's address.
pub fn tracing_pod(
    name: String,
    ip: Ipv4Addr,
    skein: &Path,
    state: &StateDir,
) -> (PodPlan, TracingPlan) {
    let mut pod = super::mesh::mesh_pod(name, ip, "jaeger", &[("app", "jaeger")]);
    pod.service_account = "default".into();
    let zipkin = SocketAddr::from((ip, ZIPKIN_PORT));
    let otlp = SocketAddr::from((ip, OTLP_HTTP_PORT));
    let query = SocketAddr::from((ip, QUERY_PORT));
    for (n, port) in [
        ("zipkin", ZIPKIN_PORT),
        ("otlp-http", OTLP_HTTP_PORT),
        ("query", QUERY_PORT),
    ] {
        pod.ports.push(NamedPort {
            name: Some(n.into()),
            port,
        });
    }
    pod.containers.push(ContainerPlan {
        name: "jaeger".into(),
        run: Run::Program {
            program: skein.to_path_buf(),
            args: vec![
                "trace-store".into(),
                "--zipkin".into(),
                zipkin.to_string(),
                "--otlp".into(),
                otlp.to_string(),
                "--query".into(),
                query.to_string(),
            ],
        },
        env: vec![(
            "RUST_LOG".to_string(),
            std::env::var("SKEIN_PROXY_LOG").unwrap_or_else(|_| "info".to_string()),
        )],
        log: state.container_log(&pod.name, "jaeger"),
        mounts: Vec::new(),
    });
    pod.readiness = Some(Readiness {
        check: Check::Http {
            port: QUERY_PORT,
            path: "/status".into(),
        },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        failure_threshold: 3,
    });
    // Prometheus scrapes the store's counters, as the addon annotates its pod.
    pod.scrape = Some(super::prometheus::ScrapeTarget {
        port: QUERY_PORT,
        path: "/metrics".into(),
    });
    let plan = TracingPlan {
        url: format!("http://{query}"),
        zipkin,
        otlp,
    };
    (pod, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_are_the_addons() {
        let m = skein_api::load_str(SOURCE, SERVICES).unwrap();
        let names: Vec<String> = m.services().map(|s| s.metadata.name.clone()).collect();
        assert_eq!(names, ["jaeger-collector", "zipkin", "tracing"]);
        assert!(
            skein_api::validate(&m).iter().all(|d| !d.is_error()),
            "{:?}",
            skein_api::validate(&m)
        );
        let tracing = m.services().nth(2).unwrap();
        assert_eq!(tracing.spec.ports[0].port, 80);
    }
}
