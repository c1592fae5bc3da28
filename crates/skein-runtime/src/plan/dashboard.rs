//! The dashboard as Istio's Kiali addon (`samples/addons/kiali.yaml`) runs it: a `kiali` pod
//! in istio-system without a sidecar, behind the addon's Service `kiali` (port 20001,
//! `http-kiali`), running `skein dashboard-server` on the pod's address. It reads the state
//! directory, the mesh's Prometheus and the tracing store's query API.
//!
//! Like the tracing store's, the Service is the runtime's own object: written for the control
//! plane into the state directory's addons directory, and planned with the manifests'
//! Services.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{Check, ContainerPlan, NamedPort, PodPlan, Readiness, Run};
use crate::run::state::StateDir;

/// Kiali's port.
pub const PORT: u16 = 20001;

/// The addon's Service.
pub const SERVICES: &str = r#"# Written by `skein up` at every start: edits are lost. The dashboard's Service, as
# Istio's Kiali addon (samples/addons/kiali.yaml) defines it.
apiVersion: v1
kind: Service
metadata:
  name: kiali
  namespace: istio-system
  labels: {app: kiali}
spec:
  selector: {app: kiali}
  ports:
  - {name: http-kiali, port: 20001, targetPort: 20001}
"#;

/// The name the Service is loaded under (errors would point here).
pub const SOURCE: &str = "skein-addons/dashboard.yaml";

/// The dashboard, as planned.
#[derive(Debug, Clone)]
pub struct DashboardPlan {
    /// `http://IP:20001/`.
    pub url: String,
}

/// Writes the Service for the control plane.
pub fn write_services(state: &StateDir) -> Result<(), crate::RuntimeError> {
    let dir = state.addons_dir();
    std::fs::create_dir_all(&dir).map_err(|e| crate::RuntimeError::io(&dir, e))?;
    let file = dir.join("dashboard.yaml");
    std::fs::write(&file, SERVICES).map_err(|e| crate::RuntimeError::io(&file, e))
}

/// The `kiali` pod: `skein dashboard-server` on the pod's address.
pub fn dashboard_pod(
    name: String,
    ip: Ipv4Addr,
    skein: &Path,
    state: &StateDir,
    prometheus: Option<&str>,
    tracing: &str,
) -> (PodPlan, DashboardPlan) {
    let mut pod = super::mesh::mesh_pod(name, ip, "kiali", &[("app", "kiali")]);
    pod.service_account = "kiali".into();
    let listen = SocketAddr::from((ip, PORT));
    pod.ports.push(NamedPort {
        name: Some("http-kiali".into()),
        port: PORT,
    });
    let mut args = vec![
        "dashboard-server".to_string(),
        "--listen".into(),
        listen.to_string(),
        "--state".into(),
        state.root().display().to_string(),
        "--tracing".into(),
        tracing.to_string(),
    ];
    if let Some(p) = prometheus {
        args.extend(["--prometheus".to_string(), p.to_string()]);
    }
    pod.containers.push(ContainerPlan {
        name: "kiali".into(),
        run: Run::Program {
            program: skein.to_path_buf(),
            args,
        },
        env: vec![(
            "RUST_LOG".to_string(),
            std::env::var("SKEIN_PROXY_LOG").unwrap_or_else(|_| "info".to_string()),
        )],
        log: state.container_log(&pod.name, "kiali"),
        mounts: Vec::new(),
    });
    pod.readiness = Some(Readiness {
        check: Check::Http {
            port: PORT,
            path: "/healthz".into(),
        },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        failure_threshold: 3,
    });
    let plan = DashboardPlan {
        url: format!("http://{listen}/"),
    };
    (pod, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_the_addons() {
        let m = skein_api::load_str(SOURCE, SERVICES).unwrap();
        let s = m.services().next().unwrap();
        assert_eq!(s.metadata.name, "kiali");
        assert_eq!(s.spec.ports[0].port, i32::from(PORT));
        assert_eq!(s.spec.ports[0].name.as_deref(), Some("http-kiali"));
        assert!(skein_api::validate(&m).iter().all(|d| !d.is_error()));
    }
}
