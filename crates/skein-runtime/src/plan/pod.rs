//! One pod of a workload, planned: its downward-API facts, ports, containers (a program, or
//! a MariaDB server for a MySQL image) with their environment, and its readiness probe.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::env::{PodFacts, container_env, expand, lookup, set};
use super::manifests::{Workload, port_ref};
use super::{Check, ContainerPlan, Inputs, NamedPort, PodPlan, Readiness, Run, ServicePortRef};
use crate::mysql::{MariaDbConfig, is_mysql_image};

pub(super) fn plan_pod(
    w: &Workload<'_>,
    name: String,
    ip: Ipv4Addr,
    meshed: bool,
    cx: &Inputs<'_>,
) -> Result<PodPlan, String> {
    let at = |msg: String| format!("{}: {}/{}: {msg}", w.source, w.namespace, w.name);
    // The pod's name (from the workload's) and its containers' names become paths in the
    // state directory: its logs, its hosts file, MariaDB's data directory.
    crate::naming::path_component("workload", &w.name).map_err(at)?;
    for c in &w.spec.containers {
        crate::naming::path_component("container", &c.name).map_err(at)?;
    }
    let facts = pod_facts(w, &name, ip, meshed);
    let mut ports = Vec::new();
    let mut containers = Vec::new();
    for c in &w.spec.containers {
        for p in &c.ports {
            let port = u16::try_from(p.container_port).map_err(|_| {
                at(format!(
                    "container {}: port {} is out of range",
                    c.name, p.container_port
                ))
            })?;
            ports.push(NamedPort {
                name: p.name.clone(),
                port,
            });
        }
        containers.push(container(w, c, &facts, ip, meshed, cx).map_err(at)?);
    }
    let scrape = super::prometheus::pod_scrape(
        &w.pod_annotations,
        meshed,
        ports.first().map(|p: &NamedPort| p.port),
    )
    .map_err(at)?;
    let readiness = w
        .spec
        .containers
        .iter()
        .find_map(|c| c.readiness_probe.as_ref().map(|p| (c, p)))
        .map(|(c, p)| readiness(c, p))
        .transpose()
        .map_err(at)?;
    Ok(PodPlan {
        name,
        namespace: w.namespace.clone(),
        workload: w.name.clone(),
        workload_kind: w.kind,
        labels: w.pod_labels.clone(),
        service_account: facts.service_account.clone(),
        ip,
        probe_ip: ip,
        ports,
        containers,
        readiness,
        grace: std::time::Duration::from_secs(
            w.spec
                .termination_grace_period_seconds
                .unwrap_or(30)
                .clamp(1, 30) as u64,
        ),
        run_to_completion: w.run_to_completion,
        start_after: None,
        proxy: None,
        bootstrap_token_sha256: None,
        scrape: scrape.pod,
        app_metrics: scrape.app,
    })
}

/// What the downward API tells the pod's containers.
fn pod_facts(w: &Workload<'_>, name: &str, ip: Ipv4Addr, meshed: bool) -> PodFacts {
    PodFacts {
        name: name.to_string(),
        namespace: w.namespace.clone(),
        uid: format!("{:016x}", crate::naming::fnv1a(name.as_bytes())),
        labels: w.pod_labels.clone(),
        annotations: w.pod_annotations.clone(),
        service_account: w
            .spec
            .service_account_name
            .clone()
            .or_else(|| w.spec.service_account.clone())
            .unwrap_or_else(|| "default".into()),
        node_name: "localhost".into(),
        // Behind a sidecar the app has its own address; the pod IP is the sidecar's.
        pod_ip: if meshed {
            super::mesh::app_ip(ip).to_string()
        } else {
            ip.to_string()
        },
        host_ip: "127.0.0.1".into(),
    }
}

/// One container: its environment, then what runs.
fn container(
    w: &Workload<'_>,
    c: &skein_api::k8s::Container,
    facts: &PodFacts,
    ip: Ipv4Addr,
    meshed: bool,
    cx: &Inputs<'_>,
) -> Result<ContainerPlan, String> {
    let mut env = container_env(c, facts, cx).map_err(|e| format!("container {}: {e}", c.name))?;
    if meshed {
        for (k, v) in super::mesh::app_env(cx.state, &facts.name, ip) {
            set(&mut env, k, v);
        }
    }
    let mounts = super::volumes::materialise(w, c, &facts.name, cx)
        .map_err(|e| format!("container {}: {e}", c.name))?;
    for (_, v) in env.iter_mut() {
        *v = super::volumes::rewrite(v, &mounts);
    }
    let run = if is_mysql_image(c.image.as_deref().unwrap_or("")) {
        let port = c
            .ports
            .first()
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(3306);
        Run::MariaDb(MariaDbConfig::from_env(
            cx.state.data().join(&w.name),
            ip.into(),
            port,
            &env,
        ))
    } else {
        match program(w, c, &env, &cx.opts.program_dirs)? {
            Run::Program { program, args } => Run::Program {
                program,
                args: args
                    .iter()
                    .map(|a| super::volumes::rewrite(a, &mounts))
                    .collect(),
            },
            other => other,
        }
    };
    Ok(ContainerPlan {
        name: c.name.clone(),
        run,
        env,
        log: cx.state.container_log(&facts.name, &c.name),
        mounts,
    })
}

/// The container's program and arguments: the `skein.io/command.NAME` annotation, else its
/// `command`, then its `args`, each with `$(VAR)` expanded.
fn program(
    w: &Workload<'_>,
    c: &skein_api::k8s::Container,
    env: &[(String, String)],
    program_dirs: &[PathBuf],
) -> Result<Run, String> {
    let annotated = w
        .pod_annotations
        .get(&format!("skein.io/command.{}", c.name))
        .map(|a| serde_json::from_str::<Vec<String>>(a))
        .transpose()
        .map_err(|e| {
            format!(
                "annotation skein.io/command.{}: not a JSON array of strings: {e}",
                c.name
            )
        })?;
    let mut argv: Vec<String> = annotated.unwrap_or_else(|| c.command.clone());
    argv.extend(c.args.iter().cloned());
    let argv: Vec<String> = argv.iter().map(|a| expand(a, |k| lookup(env, k))).collect();
    let Some((program, args)) = argv.split_first() else {
        return Err(format!(
            "container {} has no command; give it `command` or the annotation skein.io/command.{} so it can run locally",
            c.name, c.name
        ));
    };
    let program = find_program(program, program_dirs).ok_or_else(|| {
        format!(
            "container {}: program `{program}` not found in {} or on PATH",
            c.name,
            program_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    Ok(Run::Program {
        program,
        args: args.to_vec(),
    })
}

fn readiness(
    c: &skein_api::k8s::Container,
    p: &skein_api::k8s::Probe,
) -> Result<Readiness, String> {
    let resolve = |port: &skein_api::k8s::IntOrString| -> Result<u16, String> {
        match port_ref(port) {
            ServicePortRef::Number(n) => Ok(n),
            ServicePortRef::Name(n) => c
                .ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(n.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| {
                    format!(
                        "container {}: readinessProbe names port `{n}`, which no containerPort has",
                        c.name
                    )
                }),
        }
    };
    let check = if let Some(h) = &p.http_get {
        Check::Http {
            port: resolve(&h.port)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(t) = &p.tcp_socket {
        Check::Tcp {
            port: resolve(&t.port)?,
        }
    } else {
        return Err(format!(
            "container {}: only httpGet and tcpSocket readiness probes run locally",
            c.name
        ));
    };
    let secs =
        |v: Option<i32>, d: u64| std::time::Duration::from_secs(v.map_or(d, |v| v.max(0) as u64));
    Ok(Readiness {
        check,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10),
        timeout: secs(p.timeout_seconds, 1),
        failure_threshold: p.failure_threshold.map_or(3, |v| v.max(1) as u32),
    })
}

/// A program name with a `/` is a path; otherwise it is looked up in `dirs`, then on `PATH`.
pub(super) fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return crate::fs::is_executable(&p).then_some(p);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(name))
        .find(|p| crate::fs::is_executable(p))
}
