//! The whole plan: Services first (their addresses go into every pod's hosts file), then the
//! mesh's pods and every workload's replicas, then each Service port's endpoints and the
//! ingress routes.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use skein_api::Manifests;

use super::ingress::ingress_routes;
use super::manifests::{
    ConfigData, Naming, ServiceDef, Workload, services, workload_of, workloads,
};
use super::pod::plan_pod;
use super::{
    DatabaseMode, DatabasePlan, Inputs, MeshPlanOptions, Plan, PlanOptions, PodPlan,
    PrometheusState, ServicePlan, ServicePortPlan, dashboard, database, dns_names, mesh,
    prometheus, tracing,
};
use crate::RuntimeError;
use crate::naming::pod_name;
use crate::run::state::{Network, StateDir};

pub fn build(
    manifests: &Manifests,
    state: &StateDir,
    network: &mut Network,
    opts: &PlanOptions,
) -> Result<Plan, RuntimeError> {
    let mut errors = Vec::new();
    let configs = ConfigData::collect(manifests);
    let workloads = workloads(manifests);
    let db_workloads: Vec<&Workload<'_>> = workloads.iter().filter(|w| w.is_database()).collect();
    let mode = database::mode(opts.database, &db_workloads);

    // Services first: pods need the hosts file, and SQLite mode needs the database's names.
    let mut services = services(manifests);
    if opts.mesh.is_some() {
        // The addons' Services, unless the manifests have their own of that name.
        for (source, text) in [
            (tracing::SOURCE, tracing::SERVICES),
            (dashboard::SOURCE, dashboard::SERVICES),
        ] {
            if let Ok(addons) = skein_api::load_str(source, text) {
                for s in super::manifests::services(&addons) {
                    if !services
                        .iter()
                        .any(|u| u.name == s.name && u.namespace == s.namespace)
                    {
                        services.push(s);
                    }
                }
            }
        }
    }
    let mut hosts = Vec::new();
    let mut service_ips = Vec::new();
    for s in &services {
        let ip = network.service_ip(&format!("{}/{}", s.namespace, s.name))?;
        service_ips.push(ip);
        hosts.push((ip, dns_names(&s.name, &s.namespace)));
    }
    let db_services = database::services(&services, &db_workloads);
    if mode == DatabaseMode::Sqlite {
        // Each database Service names an SQLite file.
        for s in &db_services {
            if let Err(e) = crate::naming::path_component("Service", &s.name) {
                errors.push(format!("{}/{}: {e}", s.namespace, s.name));
            }
        }
    }
    let cx = Inputs {
        state,
        opts,
        configs: &configs,
        mode,
        db_services: &db_services,
    };
    let (pods, prometheus, tracing, dashboard) =
        plan_pods(manifests, &workloads, network, &cx, &mut errors)?;
    let services: Vec<ServicePlan> = services
        .iter()
        .zip(service_ips)
        .map(|(s, ip)| service_plan(s, ip))
        .collect();
    let ingress = ingress_routes(manifests, &services, &mut errors);

    if !errors.is_empty() {
        return Err(RuntimeError::Plan(errors));
    }
    let location = database::location(mode, state, &db_services);
    Ok(Plan {
        pods,
        services,
        ingress,
        database: DatabasePlan { mode, location },
        hosts,
        prometheus,
        tracing,
        dashboard,
    })
}

/// One pod of `template` planned while the run lasts (a Rollout's new revision), named
/// `name`, with a sidecar when its namespace is injected, as at start. Its address is
/// assigned in `network` (saved by the caller).
pub fn extra_pod(
    manifests: &Manifests,
    state: &StateDir,
    network: &mut Network,
    opts: &PlanOptions,
    (namespace, workload): (&str, &str),
    template: &skein_api::k8s::PodTemplateSpec,
    name: String,
) -> Result<PodPlan, RuntimeError> {
    let configs = ConfigData::collect(manifests);
    let workloads = workloads(manifests);
    let db_workloads: Vec<&Workload<'_>> = workloads.iter().filter(|w| w.is_database()).collect();
    let mode = database::mode(opts.database, &db_workloads);
    let services = services(manifests);
    let db_services = database::services(&services, &db_workloads);
    let cx = Inputs {
        state,
        opts,
        configs: &configs,
        mode,
        db_services: &db_services,
    };
    let source = workloads
        .iter()
        .find(|w| w.name == workload && w.namespace == namespace)
        .map(|w| w.source.clone())
        .unwrap_or_else(|| skein_api::Source {
            file: state.root().to_path_buf(),
            line: 0,
        });
    let w = workload_of(workload, namespace, template, source);
    let ns_labels = manifests
        .namespaces()
        .find(|n| n.metadata.name == namespace)
        .map(|n| n.metadata.labels.clone());
    let meshed = opts.mesh.is_some()
        && mesh::injected(ns_labels.as_ref(), &w.pod_labels, &w.pod_annotations);
    let ip = network.pod_ip(&name)?;
    let mut pod = plan_pod(&w, name, ip, meshed, &cx).map_err(|e| RuntimeError::Plan(vec![e]))?;
    if let (true, Some(m)) = (meshed, &opts.mesh) {
        let istiod = network.pod_ip(&pod_name("istiod", b"istiod", 0))?;
        let control = SocketAddr::from((istiod, mesh::CONTROL_PORT));
        let root = state.mesh_root_file(m.plugin_ca.as_deref());
        mesh::add_sidecar(&mut pod, state, control, &root, &m.skein)?;
    }
    Ok(pod)
}

/// The mesh's own pods, planned before the workloads' (every sidecar is told the control
/// plane's address).
struct MeshPods<'a> {
    control: SocketAddr,
    /// The mesh root the proxies pin to verify the control plane.
    root: std::path::PathBuf,
    skein: &'a Path,
    istiod: PodPlan,
    gateway: PodPlan,
    prometheus: Option<(PodPlan, prometheus::PrometheusPlan)>,
    tracing: (PodPlan, tracing::TracingPlan),
    dashboard: (PodPlan, dashboard::DashboardPlan),
}

fn mesh_pods<'a>(
    m: &'a MeshPlanOptions,
    program_dirs: &[std::path::PathBuf],
    state: &StateDir,
    network: &mut Network,
    live_names: &mut Vec<String>,
) -> Result<MeshPods<'a>, RuntimeError> {
    let istiod = pod_name("istiod", b"istiod", 0);
    let gateway = pod_name("istio-ingressgateway", b"istio-ingressgateway", 0);
    let (istiod_ip, gateway_ip) = (network.pod_ip(&istiod)?, network.pod_ip(&gateway)?);
    live_names.extend([istiod.clone(), gateway.clone()]);
    let control = SocketAddr::from((istiod_ip, mesh::CONTROL_PORT));
    // Prometheus runs when its program is installed (Debian's `prometheus`).
    let prometheus = match super::pod::find_program("prometheus", program_dirs) {
        Some(program) => {
            let name = pod_name("prometheus", b"prometheus", 0);
            let ip = network.pod_ip(&name)?;
            live_names.push(name.clone());
            Some(mesh::prometheus_pod(
                name,
                ip,
                &program,
                state,
                m.scrape_interval,
            ))
        }
        None => None,
    };
    let name = pod_name("jaeger", b"jaeger", 0);
    let ip = network.pod_ip(&name)?;
    live_names.push(name.clone());
    let tracing = tracing::tracing_pod(name, ip, &m.skein, state);
    let name = pod_name("kiali", b"kiali", 0);
    let ip = network.pod_ip(&name)?;
    live_names.push(name.clone());
    let dashboard = dashboard::dashboard_pod(
        name,
        ip,
        &m.skein,
        state,
        prometheus.as_ref().map(|(_, p)| p.url.as_str()),
        &tracing.1.url,
    );
    Ok(MeshPods {
        control,
        root: state.mesh_root_file(m.plugin_ca.as_deref()),
        skein: &m.skein,
        istiod: mesh::control_pod(istiod, istiod_ip, state, m, control),
        gateway: mesh::gateway_pod(gateway, gateway_ip, state, m, control)?,
        prometheus,
        tracing,
        dashboard,
    })
}

/// Every workload's replicas (each with a sidecar when injected), then the mesh's pods. A
/// pod that cannot be planned is an error in `errors`; the others are still planned.
fn plan_pods(
    manifests: &Manifests,
    workloads: &[Workload<'_>],
    network: &mut Network,
    cx: &Inputs<'_>,
    errors: &mut Vec<String>,
) -> Result<PlannedPods, RuntimeError> {
    let namespace_labels: BTreeMap<String, BTreeMap<String, String>> = manifests
        .namespaces()
        .map(|n| (n.metadata.name.clone(), n.metadata.labels.clone()))
        .collect();
    let mut live_names = Vec::new();
    let mesh_pods = match &cx.opts.mesh {
        Some(m) => Some(mesh_pods(
            m,
            &cx.opts.program_dirs,
            cx.state,
            network,
            &mut live_names,
        )?),
        None => None,
    };
    let mut pods = Vec::new();
    for w in workloads {
        if cx.mode == DatabaseMode::Sqlite && w.is_database() {
            continue;
        }
        for ordinal in 0..w.replicas {
            let name = match w.naming {
                Naming::Generated => pod_name(&w.name, &w.template_key, ordinal),
                Naming::Ordinal | Naming::OrdinalParallel => format!("{}-{ordinal}", w.name),
                Naming::Own => w.name.clone(),
            };
            live_names.push(name.clone());
            let ip = network.pod_ip(&name)?;
            let meshed = mesh_pods.is_some()
                && mesh::injected(
                    namespace_labels.get(&w.namespace),
                    &w.pod_labels,
                    &w.pod_annotations,
                );
            // OrderedReady: after the previous ordinal.
            let start_after = (w.naming == Naming::Ordinal && ordinal > 0)
                .then(|| format!("{}-{}", w.name, ordinal - 1));
            let planned = plan_pod(w, name, ip, meshed, cx).map(|mut p| {
                p.start_after = start_after;
                p
            });
            match (planned, &mesh_pods) {
                (Ok(mut p), Some(m)) if meshed => {
                    mesh::add_sidecar(&mut p, cx.state, m.control, &m.root, m.skein)?;
                    pods.push(p);
                }
                (Ok(p), _) => pods.push(p),
                (Err(e), _) => errors.push(e),
            }
        }
    }
    network.retain_pods(&live_names);
    let mut state = PrometheusState::Off;
    let mut tracing = None;
    let mut dashboard = None;
    if let Some(m) = mesh_pods {
        pods.extend([m.istiod, m.gateway, m.tracing.0, m.dashboard.0]);
        tracing = Some(m.tracing.1);
        dashboard = Some(m.dashboard.1);
        state = match m.prometheus {
            Some((pod, plan)) => {
                pods.push(pod);
                PrometheusState::Planned(plan)
            }
            None => PrometheusState::Missing,
        };
    }
    Ok((pods, state, tracing, dashboard))
}

/// The pods, and the addons' plans.
type PlannedPods = (
    Vec<PodPlan>,
    PrometheusState,
    Option<tracing::TracingPlan>,
    Option<dashboard::DashboardPlan>,
);

fn service_plan(s: &ServiceDef, ip: Ipv4Addr) -> ServicePlan {
    let ports = s
        .ports
        .iter()
        .map(|sp| ServicePortPlan {
            name: sp.name.clone(),
            port: sp.port,
            opaque: sp.name.as_deref().is_some_and(is_opaque),
            target: sp.target.clone(),
        })
        .collect();
    ServicePlan {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        cluster_ip: ip,
        ports,
        selector: s.selector.clone(),
    }
}

/// Istio's protocol selection by port name: these ports carry opaque TCP.
fn is_opaque(port_name: &str) -> bool {
    matches!(
        port_name.split('-').next().unwrap_or(port_name),
        "tcp" | "tls" | "https" | "mysql" | "mongo" | "redis"
    )
}
