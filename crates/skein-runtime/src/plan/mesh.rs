//! The mesh's part of a local run: which pods get a sidecar, where each piece listens, and the
//! istio-system pods (the control plane `istiod` and the `istio-ingressgateway`).
//!
//! Addresses, per pod with a sidecar (pod IP `127.X.1.N`):
//! - `127.X.1.N:PORT`: the sidecar's inbound listener for each container port (what Services
//!   and other pods reach, as with iptables capture on Kubernetes);
//! - `127.X.3.N`: the app's own address (its `status.podIP`); the sidecar forwards there;
//! - `127.X.4.N`: the sidecar's outbound side: `:15001` is the app's `HTTP_PROXY`, `:15000`
//!   the admin endpoint, and each opaque-TCP Service port (e.g. `:3306`) a listener that the
//!   pod's hosts file points that Service's names at.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::prometheus::PrometheusPlan;
use super::{
    Check, ContainerPlan, MeshPlanOptions, NamedPort, PodPlan, ProxyMode, ProxyPlan, Readiness, Run,
};
use crate::RuntimeError;
use crate::run::state::StateDir;

/// The control plane's port (Istio's plaintext xDS port).
pub const CONTROL_PORT: u16 = 15010;
/// A proxy's admin port (Envoy's).
pub const ADMIN_PORT: u16 = 15000;
/// The sidecar's outbound HTTP port (the app's HTTP_PROXY).
pub const OUTBOUND_HTTP_PORT: u16 = 15001;
/// Istio's root namespace, where the mesh's own pods run.
pub const MESH_NAMESPACE: &str = "istio-system";

/// The app's address in a pod with a sidecar.
pub fn app_ip(pod_ip: Ipv4Addr) -> Ipv4Addr {
    let [a, b, _, d] = pod_ip.octets();
    Ipv4Addr::new(a, b, 3, d)
}

/// The sidecar's outbound address in a pod.
pub fn outbound_ip(pod_ip: Ipv4Addr) -> Ipv4Addr {
    let [a, b, _, d] = pod_ip.octets();
    Ipv4Addr::new(a, b, 4, d)
}

/// Istio's injection rule: the pod's `sidecar.istio.io/inject` label or annotation decides;
/// otherwise the namespace label `istio-injection=enabled`.
pub fn injected(
    namespace_labels: Option<&BTreeMap<String, String>>,
    pod_labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
) -> bool {
    const KEY: &str = "sidecar.istio.io/inject";
    if let Some(v) = pod_labels.get(KEY).or_else(|| pod_annotations.get(KEY)) {
        return v.eq_ignore_ascii_case("true");
    }
    namespace_labels
        .and_then(|l| l.get("istio-injection"))
        .is_some_and(|v| v == "enabled")
}

fn proxy_log_level() -> (String, String) {
    (
        "RUST_LOG".to_string(),
        std::env::var("SKEIN_PROXY_LOG").unwrap_or_else(|_| "info".to_string()),
    )
}

/// Where a pod's proxy writes an `accessLogFile` path of the mesh config: under the pod's
/// own directory in the state dir (`/var/log/a.log` -> `<state>/pods/<pod>/fs/var/log/a.log`).
/// `/dev/stdout` is the proxy's output, the pod's `istio-proxy` log.
fn access_log_root(state: &StateDir, pod: &str) -> String {
    state.pod_dir(pod).join("fs").display().to_string()
}

/// The arguments that connect a proxy to the control plane: its address, the mesh root the
/// proxy pins to verify it, and the pod's bootstrap token (newly issued; its hash goes into
/// the pod's plan, hence the registry).
fn control_args(
    pod: &mut PodPlan,
    state: &StateDir,
    control: SocketAddr,
    root: &Path,
) -> Result<Vec<String>, RuntimeError> {
    pod.bootstrap_token_sha256 = Some(state.issue_bootstrap_token(&pod.name)?);
    Ok(vec![
        "--control".into(),
        control.to_string(),
        "--control-root".into(),
        root.display().to_string(),
        "--bootstrap-token".into(),
        state.bootstrap_token_file(&pod.name).display().to_string(),
    ])
}

/// Adds a sidecar to `pod`, whose app containers were planned with `app_ip` as their pod IP.
/// `root` is the mesh root the sidecar pins to verify the control plane.
pub fn add_sidecar(
    pod: &mut PodPlan,
    state: &StateDir,
    control: SocketAddr,
    root: &Path,
    skein: &Path,
) -> Result<(), RuntimeError> {
    let out_ip = outbound_ip(pod.ip);
    let app = app_ip(pod.ip);
    let admin = SocketAddr::from((out_ip, ADMIN_PORT));
    let outbound_http = SocketAddr::from((out_ip, OUTBOUND_HTTP_PORT));
    let mut args = vec![
        "proxy".to_string(),
        "--node".into(),
        pod.name.clone(),
        "--namespace".into(),
        pod.namespace.clone(),
    ];
    args.extend(control_args(pod, state, control, root)?);
    args.extend([
        "--outbound-http".into(),
        outbound_http.to_string(),
        "--admin".into(),
        admin.to_string(),
        // The mesh config decides the access log; a file path lands in the pod's directory.
        "--access-log-root".into(),
        access_log_root(state, &pod.name),
    ]);
    for p in &pod.ports {
        args.push("--inbound".into());
        args.push(format!("{}:{}={}:{}", pod.ip, p.port, app, p.port));
    }
    // The merged metrics on the pod's address, as Istio's agent serves them on the pod IP.
    args.push("--metrics".into());
    args.push(SocketAddr::from((pod.ip, super::prometheus::STATUS_PORT)).to_string());
    if let Some(m) = &pod.app_metrics {
        args.push("--app-metrics".into());
        args.push(format!("{}{}", SocketAddr::from((app, m.port)), m.path));
    }
    let env = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        ),
        proxy_log_level(),
    ];
    pod.containers.push(ContainerPlan {
        name: "istio-proxy".into(),
        run: Run::Program {
            program: skein.to_path_buf(),
            args,
        },
        env,
        log: state.container_log(&pod.name, "istio-proxy"),
        mounts: Vec::new(),
    });
    pod.probe_ip = app;
    pod.proxy = Some(ProxyPlan {
        mode: ProxyMode::Sidecar,
        container: pod.containers.len() - 1,
        admin,
        app_ip: Some(app),
        outbound_ip: Some(out_ip),
        outbound_http: Some(outbound_http),
    });
    Ok(())
}

/// The environment an app in a pod with a sidecar gets on top of its own.
pub fn app_env(state: &StateDir, pod_name: &str, pod_ip: Ipv4Addr) -> Vec<(String, String)> {
    let proxy = format!(
        "http://{}",
        SocketAddr::from((outbound_ip(pod_ip), OUTBOUND_HTTP_PORT))
    );
    vec![
        ("HTTP_PROXY".into(), proxy.clone()),
        ("http_proxy".into(), proxy),
        ("NO_PROXY".into(), "localhost,127.0.0.1".into()),
        ("no_proxy".into(), "localhost,127.0.0.1".into()),
        (
            "SKEIN_HOSTS".into(),
            state.pod_hosts_file(pod_name).display().to_string(),
        ),
    ]
}

pub(super) fn mesh_pod(
    name: String,
    ip: Ipv4Addr,
    workload: &str,
    labels: &[(&str, &str)],
) -> PodPlan {
    PodPlan {
        name,
        namespace: MESH_NAMESPACE.into(),
        workload: workload.into(),
        workload_kind: "Deployment",
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: format!("{workload}-service-account"),
        ip,
        probe_ip: ip,
        ports: Vec::new(),
        containers: Vec::new(),
        readiness: None,
        grace: std::time::Duration::from_secs(10),
        run_to_completion: None,
        start_after: None,
        proxy: None,
        bootstrap_token_sha256: None,
        scrape: None,
        app_metrics: None,
    }
}

fn quick(check: Check) -> Option<Readiness> {
    Some(Readiness {
        check,
        initial_delay: std::time::Duration::ZERO,
        period: std::time::Duration::from_secs(2),
        timeout: std::time::Duration::from_secs(1),
        failure_threshold: 3,
    })
}

/// The control plane pod (`istiod`).
pub fn control_pod(
    name: String,
    ip: Ipv4Addr,
    state: &StateDir,
    opts: &MeshPlanOptions,
    control: SocketAddr,
) -> PodPlan {
    let mut pod = mesh_pod(name, ip, "istiod", &[("app", "istiod"), ("istio", "pilot")]);
    let args = vec![
        "control".to_string(),
        "--dir".into(),
        opts.manifests.display().to_string(),
        "--applied".into(),
        state.applied_dir().display().to_string(),
        "--addons".into(),
        state.addons_dir().display().to_string(),
        "--managed".into(),
        state.managed_dir().display().to_string(),
        "--registry".into(),
        state.status_file().display().to_string(),
        "--listen".into(),
        control.to_string(),
        "--status".into(),
        state.control_status_file().display().to_string(),
        "--ca-dir".into(),
        state.certs().join("ca").display().to_string(),
    ];
    let mut args = args;
    if let Some(ttl) = opts.cert_ttl {
        args.push("--cert-ttl-secs".into());
        args.push(ttl.as_secs().max(1).to_string());
    }
    if let Some(dir) = &opts.plugin_ca {
        args.push("--plugin-ca".into());
        args.push(dir.display().to_string());
    }
    if let Some((dir, git)) = &opts.gitops {
        args.extend([
            "--gitops".into(),
            dir.display().to_string(),
            "--git".into(),
            git.display().to_string(),
        ]);
    }
    pod.containers.push(ContainerPlan {
        name: "discovery".into(),
        run: Run::Program {
            program: opts.skein.clone(),
            args,
        },
        env: vec![proxy_log_level()],
        log: state.container_log(&pod.name, "discovery"),
        mounts: Vec::new(),
    });
    pod.ports.push(NamedPort {
        name: Some("grpc-xds".into()),
        port: control.port(),
    });
    pod.readiness = quick(Check::Tcp {
        port: control.port(),
    });
    pod
}

/// The ingress gateway pod (`istio-ingressgateway`), serving on the ingress addresses.
pub fn gateway_pod(
    name: String,
    ip: Ipv4Addr,
    state: &StateDir,
    opts: &MeshPlanOptions,
    control: SocketAddr,
) -> Result<PodPlan, RuntimeError> {
    let mut pod = mesh_pod(
        name,
        ip,
        "istio-ingressgateway",
        &[("app", "istio-ingressgateway"), ("istio", "ingressgateway")],
    );
    let admin = SocketAddr::from((ip, ADMIN_PORT));
    let certs = state.certs();
    let mut args = vec![
        "proxy".to_string(),
        "--mode".into(),
        "gateway".into(),
        "--node".into(),
        pod.name.clone(),
        "--namespace".into(),
        MESH_NAMESPACE.into(),
    ];
    let root = state.mesh_root_file(opts.plugin_ca.as_deref());
    args.extend(control_args(&mut pod, state, control, &root)?);
    args.extend([
        "--gateway-http".into(),
        opts.http.to_string(),
        "--gateway-https".into(),
        opts.https.to_string(),
        "--cert".into(),
        certs.join("ingress.crt").display().to_string(),
        "--key".into(),
        certs.join("ingress.key").display().to_string(),
        "--admin".into(),
        admin.to_string(),
        "--metrics".into(),
        SocketAddr::from((ip, super::prometheus::STATUS_PORT)).to_string(),
        "--access-log-root".into(),
        access_log_root(state, &pod.name),
    ]);
    // Istio's gateway chart annotates the pod for scraping at its status port.
    pod.scrape = Some(super::prometheus::merged());
    pod.containers.push(ContainerPlan {
        name: "istio-proxy".into(),
        run: Run::Program {
            program: opts.skein.clone(),
            args,
        },
        env: vec![proxy_log_level()],
        log: state.container_log(&pod.name, "istio-proxy"),
        mounts: Vec::new(),
    });
    pod.readiness = quick(Check::Http {
        port: ADMIN_PORT,
        path: "/ready".into(),
    });
    pod.proxy = Some(ProxyPlan {
        mode: ProxyMode::Gateway,
        container: 0,
        admin,
        app_ip: None,
        outbound_ip: None,
        outbound_http: None,
    });
    Ok(pod)
}

/// Prometheus's port on its pod's address: 9090, unless something (a system-wide
/// Prometheus on `*:9090`, say) holds it, then a free one.
fn free_port(ip: Ipv4Addr) -> u16 {
    use super::prometheus::PROMETHEUS_PORT;
    let try_bind = |p: u16| {
        std::net::TcpListener::bind(SocketAddr::from((ip, p)))
            .ok()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    };
    try_bind(PROMETHEUS_PORT)
        .or_else(|| try_bind(0))
        .unwrap_or(PROMETHEUS_PORT)
}

/// The Prometheus pod: its program, config file and data directory in the state
/// directory, and its readiness (`/-/ready`). The config is written by
/// [`write_config`] once every pod is planned.
pub fn prometheus_pod(
    name: String,
    ip: Ipv4Addr,
    program: &Path,
    state: &StateDir,
    scrape_interval: Duration,
) -> (PodPlan, PrometheusPlan) {
    let port = free_port(ip);
    let config = state.root().join("prometheus.yml");
    let data = state.data().join("prometheus");
    let mut pod = mesh_pod(
        name,
        ip,
        "prometheus",
        &[("app", "prometheus"), ("component", "server")],
    );
    pod.service_account = "prometheus".into();
    pod.ports.push(NamedPort {
        name: Some("http".into()),
        port,
    });
    pod.containers.push(ContainerPlan {
        name: "prometheus-server".into(),
        run: Run::Program {
            program: program.to_path_buf(),
            args: vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address={}", SocketAddr::from((ip, port))),
                "--storage.tsdb.retention.time=6h".into(),
            ],
        },
        env: vec![(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        )],
        log: state.container_log(&pod.name, "prometheus-server"),
        mounts: Vec::new(),
    });
    pod.readiness = Some(Readiness {
        check: Check::Http {
            port,
            path: "/-/ready".into(),
        },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        failure_threshold: 3,
    });
    let plan = PrometheusPlan {
        url: format!("http://{}", SocketAddr::from((ip, port))),
        config,
        data,
        scrape_interval,
    };
    (pod, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_follows_istio() {
        let ns: BTreeMap<String, String> =
            [("istio-injection".to_string(), "enabled".to_string())].into();
        let none = BTreeMap::new();
        let off: BTreeMap<String, String> =
            [("sidecar.istio.io/inject".to_string(), "false".to_string())].into();
        let on: BTreeMap<String, String> =
            [("sidecar.istio.io/inject".to_string(), "true".to_string())].into();
        assert!(injected(Some(&ns), &none, &none));
        assert!(!injected(Some(&ns), &none, &off), "the annotation opts out");
        assert!(!injected(Some(&ns), &off, &none), "so does the label");
        assert!(!injected(None, &none, &none));
        assert!(injected(None, &on, &none));
        assert_eq!(
            app_ip(Ipv4Addr::new(127, 9, 1, 7)),
            Ipv4Addr::new(127, 9, 3, 7)
        );
        assert_eq!(
            outbound_ip(Ipv4Addr::new(127, 9, 1, 7)),
            Ipv4Addr::new(127, 9, 4, 7)
        );
    }
}
