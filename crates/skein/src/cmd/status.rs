//! `skein status`: what runs where.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use skein_runtime::{StateDir, Status};

#[derive(clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    let path = state.status_file();
    if !path.exists() {
        bail!(
            "nothing has run from {} yet; start with `skein up DIR`",
            state.root().display()
        );
    }
    let mut status = Status::read(&path)?;
    let running = state.running_supervisor().is_some();
    let mut control = control_plane(&state, &mut status);
    let application = skein_control::gitops::Layout::new(state.gitops_dir()).read_status();
    if running {
        // A status file from before `running` was recorded.
        status.running = true;
    } else {
        // The supervisor stopped, or died without saying so: nothing of it runs.
        status.mark_stopped(None);
        if let Some(c) = &mut control {
            c.pid = 0;
        }
    }
    match args.output {
        Format::Json => {
            let mut v = serde_json::to_value(&status)?;
            if let (Some(obj), Some(c)) = (v.as_object_mut(), &control) {
                obj.insert("control_plane".into(), serde_json::to_value(c)?);
            }
            if let (Some(obj), Some(a)) = (v.as_object_mut(), &application) {
                obj.insert("application".into(), serde_json::to_value(a)?);
            }
            let rollouts = skein_runtime::rollout::read_statuses(&state);
            if let (Some(obj), true) = (v.as_object_mut(), !rollouts.is_empty()) {
                obj.insert("rollouts".into(), serde_json::to_value(&rollouts)?);
            }
            println!("{}", serde_json::to_string_pretty(&v)?)
        }
        Format::Table => {
            if !running {
                match &status.stopped_at {
                    Some(at) => println!(
                        "skein is stopped (since {at}); it is not running. The last known state was:\n"
                    ),
                    None => {
                        println!("skein is stopped; it is not running. The last known state was:\n")
                    }
                }
            }
            println!(
                "ingress:  {}  {}",
                status.ingress.http, status.ingress.https
            );
            println!(
                "database: {} ({})",
                status.database.mode, status.database.location
            );
            if let Some(line) = prometheus_line(&status) {
                println!("{line}");
            }
            if let Some(line) = tracing_line(&status) {
                println!("{line}");
            }
            if let Some(line) = dashboard_line(&status) {
                println!("{line}");
            }
            println!();
            if let Some(c) = &control {
                println!(
                    "control plane: pid {} at {}, config version {}{}",
                    c.pid,
                    c.address,
                    c.version,
                    if c.valid {
                        ""
                    } else {
                        " (the newest change was refused)"
                    }
                );
                if let Some(r) = &c.last_rejection {
                    println!("last refused change ({}):", r.at);
                    for e in &r.errors {
                        println!("  {e}");
                    }
                }
                println!();
            }
            if let Some(a) = &application {
                print!("{}", application_lines(a));
                println!();
            }
            let rollouts = skein_runtime::rollout::read_statuses(&state);
            if running && !rollouts.is_empty() {
                for line in rollout_lines(&rollouts) {
                    println!("{line}");
                }
                println!();
            }
            print!("{}", table(&status));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per Rollout: its phase (with Argo's icon), step, weight and message.
pub fn rollout_lines(rollouts: &[skein_runtime::rollout::RolloutStatus]) -> Vec<String> {
    rollouts
        .iter()
        .map(|r| {
            let step = r
                .current_step_index
                .map_or(String::new(), |i| format!(", step {i}/{}", r.steps.len()));
            let msg = if r.message.is_empty() {
                String::new()
            } else {
                format!(": {}", r.message)
            };
            format!(
                "rollout {}/{}: {} {}{step}, canary weight {}{msg}",
                r.namespace,
                r.name,
                super::rollouts::icon(&r.phase),
                r.phase,
                if r.stable_rs == r.current_pod_hash {
                    0
                } else {
                    r.actual_weight
                },
            )
        })
        .collect()
}

/// What the control plane reports: its own state, and each proxy's acknowledged version
/// (merged into the pods' `proxy` entries).
#[derive(serde::Serialize)]
pub struct ControlPlane {
    pub pid: u32,
    pub address: String,
    pub version: String,
    pub valid: bool,
    pub last_rejection: Option<skein_control::server::RejectionStatus>,
}

pub fn control_plane(state: &StateDir, status: &mut Status) -> Option<ControlPlane> {
    let text = std::fs::read(state.control_status_file()).ok()?;
    let c: skein_control::ControlStatus = serde_json::from_slice(&text).ok()?;
    for pod in &mut status.pods {
        if let (Some(proxy), Some(p)) = (pod.proxy.as_mut(), c.proxies.get(&pod.name)) {
            proxy.config_version = p.acked.clone();
            proxy.connected = p.connected;
        }
    }
    let pid = status
        .pods
        .iter()
        .find(|p| p.workload == "istiod")
        .map_or(c.pid, |p| p.pid);
    Some(ControlPlane {
        pid,
        address: c.address,
        version: c.version,
        valid: c.valid,
        last_rejection: c.last_rejection,
    })
}

/// GitOps: the Application, its commit, sync status and health, and what differs from git.
pub fn application_lines(a: &skein_control::gitops::AppStatus) -> String {
    let mut s = format!(
        "application: {} (namespace {})  sync: {}  health: {}{}\n",
        a.name,
        a.namespace,
        a.sync,
        a.health,
        a.health_message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    let path = if a.path.trim_matches('/').is_empty() {
        String::new()
    } else {
        format!(", path {}", a.path)
    };
    s.push_str(&format!(
        "  repo: {} ({}{path}); automated: {}, prune: {}, selfHeal: {}\n",
        a.repo, a.target_revision, a.automated, a.prune, a.self_heal
    ));
    if let Some(r) = &a.revision {
        s.push_str(&format!(
            "  revision: {} {:?} ({}, {})\n",
            r.sha.chars().take(7).collect::<String>(),
            r.subject,
            r.author,
            r.date
        ));
    }
    for r in a.drifted() {
        s.push_str(&format!(
            "  OutOfSync: {} {}/{}: {}{}{}\n",
            r.kind,
            r.namespace,
            r.name,
            r.message.as_deref().unwrap_or("differs from git"),
            r.git
                .as_deref()
                .map(|g| format!(" (git: {g})"))
                .unwrap_or_default(),
            r.self_heal_at
                .as_deref()
                .map(|t| format!("; self-heal reverts it at {t}"))
                .unwrap_or_default()
        ));
    }
    for c in &a.conditions {
        s.push_str(&format!("  {}: {}\n", c.kind, c.message));
    }
    if !a.uncommitted.is_empty() {
        s.push_str(&format!(
            "  hint: {} uncommitted change(s) in the working tree are not in force until committed: {}\n",
            a.uncommitted.len(),
            a.uncommitted.join("; ")
        ));
    }
    s
}

/// The Prometheus line of the summary and the status table: its URL, or why it does not
/// run and how to get it.
pub fn prometheus_line(status: &Status) -> Option<String> {
    let p = status.prometheus.as_ref()?;
    Some(match (&p.url, &p.note) {
        (Some(url), _) => format!(
            "prometheus: {url}  (scrapes every {}; data in {})",
            p.scrape_interval.as_deref().unwrap_or("15s"),
            p.data.as_deref().unwrap_or("the state directory")
        ),
        (None, Some(note)) => format!("prometheus: {note}"),
        (None, None) => "prometheus: not running".to_string(),
    })
}

/// The tracing store's line: its query API (Jaeger's) and where spans go.
pub fn tracing_line(status: &Status) -> Option<String> {
    let t = status.tracing.as_ref()?;
    Some(format!(
        "tracing: {}  (Jaeger query API; spans to {}, OTLP {}; `skein traces`)",
        t.url.as_deref().unwrap_or("not running"),
        t.zipkin.as_deref().unwrap_or("-"),
        t.otlp.as_deref().unwrap_or("-"),
    ))
}

/// The dashboard's line: its URL (the page and Kiali's API under `/api`).
pub fn dashboard_line(status: &Status) -> Option<String> {
    let d = status.dashboard.as_ref()?;
    Some(format!(
        "dashboard: {}  (Kiali's graph API under /api; `skein dashboard`)",
        d.url.as_deref().unwrap_or("not running"),
    ))
}

pub fn table(status: &Status) -> String {
    let rows: Vec<Vec<String>> = status
        .pods
        .iter()
        .map(|p| {
            let ready = p.containers.iter().filter(|c| c.state == "Running").count();
            vec![
                p.namespace.clone(),
                p.name.clone(),
                format!("{}/{}", if p.ready { ready } else { 0 }, p.containers.len()),
                p.state.clone(),
                p.restarts.to_string(),
                p.ip.clone(),
                p.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                if p.pid == 0 {
                    "-".into()
                } else {
                    p.pid.to_string()
                },
            ]
        })
        .collect();
    crate::table::render(
        &[
            "NAMESPACE",
            "POD",
            "READY",
            "STATUS",
            "RESTARTS",
            "IP",
            "PORTS",
            "PID",
        ],
        &rows,
    )
}
