//! `skein rollout restart|status`: kubectl's `rollout restart` and `rollout status` for the
//! workloads `skein up --detach` runs (Deployments, and Argo Rollouts too, which kubectl's
//! restart does not handle). The restart is a request to the running supervisor through the
//! state directory; the status is read from the status file, with kubectl's messages.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skein_runtime::{Request, StateDir, Status};

use crate::kube::kinds::{self, KindInfo};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Replace a workload's pods one at a time, each once the one before is ready (like
    /// `kubectl rollout restart`): `deployment/NAME` or `rollout/NAME`.
    Restart(Target),
    /// Wait until a workload's pods are all updated and available (like `kubectl rollout
    /// status`); exit 0 once they are.
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct Target {
    /// `deployment/NAME` or `rollout/NAME` (or the type and the name as two words).
    #[arg(required = true, num_args = 1..=2, value_name = "TYPE/NAME")]
    target: Vec<String>,
    /// The workload's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// How long to wait before giving up (`0s`, the default, waits as long as it takes).
    #[arg(long, default_value = "0s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Print the state once and exit, without waiting.
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set)]
    watch: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    skein_api::Duration::parse(s)
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    match args.command {
        Sub::Restart(t) => restart(&state, &t),
        Sub::Status(s) => status(&state, &s),
    }
}

/// The workload a `TYPE/NAME` names: a Deployment or a Rollout.
fn resolve(t: &Target) -> anyhow::Result<(&'static KindInfo, String)> {
    let (kind, name) = match t.target.as_slice() {
        [one] => match one.split_once('/') {
            Some((k, n)) => (k.to_string(), n.to_string()),
            None => bail!(
                "you must specify the type and the name of the resource, e.g. deployment/{one}"
            ),
        },
        [k, n] => (k.clone(), n.clone()),
        _ => bail!("expected TYPE/NAME"),
    };
    let info = kinds::resolve_one(&kind)?;
    if !matches!(
        info.kind,
        "Deployment" | "Rollout" | "StatefulSet" | "DaemonSet"
    ) {
        bail!(
            "{} \"{name}\" cannot be restarted: skein rolls out Deployments, Rollouts, StatefulSets and DaemonSets",
            info.resource()
        );
    }
    if name.is_empty() {
        bail!("a resource name is required");
    }
    Ok((info, name))
}

fn running_status(state: &StateDir) -> anyhow::Result<Status> {
    let not_running = || {
        format!(
            "skein is not running from {}: start it with `skein up --detach DIR`",
            state.root().display()
        )
    };
    if state.running_supervisor().is_none() {
        bail!(not_running());
    }
    let status = Status::read(&state.status_file()).with_context(not_running)?;
    if !status.running {
        bail!(not_running());
    }
    Ok(status)
}

/// The pods of the workload, or kubectl's NotFound.
fn workload_pods<'s>(
    status: &'s Status,
    info: &KindInfo,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<&'s skein_runtime::PodStatus>> {
    let pods: Vec<_> = status
        .pods
        .iter()
        .filter(|p| p.workload_kind == info.kind && p.namespace == namespace && p.workload == name)
        .collect();
    if pods.is_empty() {
        bail!(crate::cmd::get::not_found(info, name));
    }
    Ok(pods)
}

fn restart(state: &StateDir, t: &Target) -> anyhow::Result<ExitCode> {
    let (info, name) = resolve(t)?;
    restart_workload(state, info, &t.namespace, &name)?;
    println!("{}/{name} restarted", info.qualified_singular());
    Ok(ExitCode::SUCCESS)
}

/// Asks the running supervisor to replace the workload's pods one at a time, and waits
/// until it has taken the request (`skein rollouts restart` uses it too).
pub fn restart_workload(
    state: &StateDir,
    info: &KindInfo,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    let status = running_status(state)?;
    workload_pods(&status, info, namespace, name)?;
    let id = skein_runtime::submit_request(
        state,
        &Request::Restart {
            kind: info.kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(reason) = skein_runtime::request_refusal(state, &id) {
            bail!("{reason}");
        }
        if let Ok(s) = Status::read(&state.status_file())
            && s.restarts.iter().any(|r| r.request == id)
        {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "the supervisor did not take the restart request within 15s: is `skein up` still running from {}?",
                state.root().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// What kubectl's rollout status says of the workload now, and whether it is done.
fn progress(
    status: &Status,
    info: &KindInfo,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(String, bool)> {
    let pods = workload_pods(status, info, namespace, name)?;
    let restart = status
        .restarts
        .iter()
        .find(|r| r.kind == info.kind && r.namespace == namespace && r.name == name);
    let word = info.singular;
    if let Some(r) = restart
        && r.state == "Failed"
    {
        bail!(
            "{word} \"{name}\" exceeded its progress deadline{}",
            r.events
                .last()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    let target = restart.map_or(0, |r| r.generation);
    let replicas = pods.len();
    let updated = pods.iter().filter(|p| p.generation >= target).count();
    let available = pods
        .iter()
        .filter(|p| p.generation >= target && p.ready)
        .count();
    let in_progress = restart.is_some_and(|r| r.state == "Progressing");
    Ok(if updated < replicas {
        (
            format!(
                "Waiting for {word} \"{name}\" rollout to finish: {updated} out of {replicas} new replicas have been updated..."
            ),
            false,
        )
    } else if available < updated || in_progress {
        (
            format!(
                "Waiting for {word} \"{name}\" rollout to finish: {available} of {updated} updated replicas are available..."
            ),
            false,
        )
    } else {
        (format!("{word} \"{name}\" successfully rolled out"), true)
    })
}

fn status(state: &StateDir, s: &StatusArgs) -> anyhow::Result<ExitCode> {
    let (info, name) = resolve(&s.target)?;
    let ns = &s.target.namespace;
    let deadline = (!s.timeout.is_zero()).then(|| Instant::now() + s.timeout);
    let mut last = String::new();
    loop {
        let status = running_status(state)?;
        let (message, done) = progress(&status, info, ns, &name)?;
        if message != last {
            println!("{message}");
            last = message;
        }
        if done {
            return Ok(ExitCode::SUCCESS);
        }
        if !s.watch {
            return Ok(ExitCode::FAILURE);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!("timed out waiting for the condition");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_runtime::{PodStatus, RestartStatus};

    fn pod(generation: u64, ready: bool) -> PodStatus {
        PodStatus {
            workload: "web".into(),
            workload_kind: "Deployment".into(),
            namespace: "ns".into(),
            generation,
            ready,
            ..PodStatus::default()
        }
    }

    fn with(pods: Vec<PodStatus>, restart: Option<(&str, u64)>) -> Status {
        Status {
            pods,
            restarts: restart
                .map(|(state, generation)| RestartStatus {
                    kind: "Deployment".into(),
                    namespace: "ns".into(),
                    name: "web".into(),
                    generation,
                    state: state.into(),
                    ..RestartStatus::default()
                })
                .into_iter()
                .collect(),
            ..Status::default()
        }
    }

    #[test]
    fn kubectls_messages_as_the_pods_are_replaced() {
        let info = kinds::resolve_one("deploy").ok();
        let Some(info) = info else {
            panic!("deploy resolves");
        };
        let p = |s: &Status| progress(s, info, "ns", "web").map_err(|e| e.to_string());
        let s = with(vec![pod(1, false), pod(0, true)], Some(("Progressing", 1)));
        assert_eq!(
            p(&s),
            Ok((
                "Waiting for deployment \"web\" rollout to finish: 1 out of 2 new replicas have been updated...".into(),
                false
            ))
        );
        let s = with(vec![pod(1, true), pod(1, false)], Some(("Progressing", 1)));
        assert_eq!(
            p(&s),
            Ok((
                "Waiting for deployment \"web\" rollout to finish: 1 of 2 updated replicas are available...".into(),
                false
            ))
        );
        let s = with(vec![pod(1, true), pod(1, true)], Some(("Complete", 1)));
        assert_eq!(
            p(&s),
            Ok(("deployment \"web\" successfully rolled out".into(), true))
        );
        // Never restarted: rolled out once every pod is ready.
        let s = with(vec![pod(0, true), pod(0, true)], None);
        assert!(p(&s).is_ok_and(|(_, done)| done));
        let s = with(vec![pod(1, true)], Some(("Failed", 1)));
        assert!(p(&s).is_err_and(|e| e.contains("exceeded its progress deadline")));
        let err = progress(&s, info, "ns", "nope").map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("Error from server (NotFound): deployments.apps \"nope\" not found".into())
        );
    }

    #[test]
    fn targets_are_kubectls() {
        let t = |v: &[&str]| Target {
            target: v.iter().map(|s| s.to_string()).collect(),
            namespace: "default".into(),
        };
        let ok = |v: &[&str]| resolve(&t(v)).map(|(k, n)| (k.kind, n)).ok();
        assert_eq!(ok(&["deployment/web"]), Some(("Deployment", "web".into())));
        assert_eq!(ok(&["deploy", "web"]), Some(("Deployment", "web".into())));
        assert_eq!(ok(&["rollout/web"]), Some(("Rollout", "web".into())));
        assert_eq!(ok(&["ro/web"]), Some(("Rollout", "web".into())));
        assert_eq!(ok(&["sts/db"]), Some(("StatefulSet", "db".into())));
        assert!(resolve(&t(&["svc/web"])).is_err());
        assert!(resolve(&t(&["web"])).is_err());
    }
}
