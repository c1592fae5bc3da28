//! `skein rollouts`: `kubectl argo rollouts` against the runtime's Rollouts controller.
//! Commands go to it as request files in the state directory (only its owner can write
//! there), and its replies and each Rollout's status come back the same way.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skein_runtime::StateDir;
use skein_runtime::rollout::{self, Reply, Request, RolloutStatus};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Show a Rollout: status, step, weights, images, replicas, and the tree of revisions,
    /// their pods and analysis runs.
    Get {
        /// `rollout`.
        kind: String,
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Print again whenever it changes (Ctrl-C stops).
        #[arg(short, long)]
        watch: bool,
        /// `json` for the controller's status document.
        #[arg(short, long)]
        output: Option<String>,
    },
    /// List the Rollouts.
    List {
        /// `rollouts`.
        kind: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Go to the next step (a pause or an analysis is skipped); --full skips every step.
    Promote {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        full: bool,
    },
    /// Abort the update: the canary gets no traffic and is scaled down.
    Abort {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Start an aborted update again from its first step.
    Retry {
        /// `rollout`.
        kind: String,
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Pause the update where it is (promote resumes it).
    Pause {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Roll back to the previous revision (or --to-revision N): its template becomes the
    /// Rollout's, as `skein apply` would hand it over.
    Undo {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        to_revision: Option<u32>,
    },
    /// Set a container's image: `set image ROLLOUT CONTAINER=IMAGE`.
    Set {
        /// `image`.
        what: String,
        name: String,
        /// CONTAINER=IMAGE (`*=IMAGE` for every container).
        image: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Replace the Rollout's pods one at a time, each once the one before is ready (as
    /// `skein rollout restart rollout/NAME`).
    Restart {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Wait until the Rollout is Healthy (exit 0) or Degraded (exit 1), printing its status
    /// as it changes.
    Status {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// How long to wait (`0s`: print once).
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    match args.command {
        Cmd::Get {
            kind,
            name,
            namespace,
            watch,
            output,
        } => {
            kind_is(&kind, &["rollout", "rollouts", "ro"])?;
            get(&state, &namespace, &name, watch, output.as_deref())
        }
        Cmd::List { kind, namespace } => {
            kind_is(&kind, &["rollout", "rollouts", "ro"])?;
            list(&state, namespace.as_deref())
        }
        Cmd::Promote {
            name,
            namespace,
            full,
        } => request(&state, &namespace, &name, "promote", full),
        Cmd::Abort { name, namespace } => request(&state, &namespace, &name, "abort", false),
        Cmd::Retry {
            kind,
            name,
            namespace,
        } => {
            kind_is(&kind, &["rollout", "rollouts", "ro"])?;
            request(&state, &namespace, &name, "retry", false)
        }
        Cmd::Pause { name, namespace } => request(&state, &namespace, &name, "pause", false),
        Cmd::Undo {
            name,
            namespace,
            to_revision,
        } => undo(&state, &namespace, &name, to_revision),
        Cmd::Set {
            what,
            name,
            image,
            namespace,
        } => {
            if what != "image" {
                bail!("`set {what}`: only `set image ROLLOUT CONTAINER=IMAGE` is supported");
            }
            set_image(&state, &namespace, &name, &image)
        }
        Cmd::Status {
            name,
            namespace,
            timeout,
        } => status(&state, &namespace, &name, &timeout),
        Cmd::Restart { name, namespace } => {
            let info = crate::kube::kinds::resolve_one("rollout")?;
            crate::cmd::rollout::restart_workload(&state, info, &namespace, &name)?;
            println!("rollout '{name}' restarts in 0s");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn kind_is(kind: &str, ok: &[&str]) -> anyhow::Result<()> {
    if ok.contains(&kind) {
        Ok(())
    } else {
        bail!("unknown kind `{kind}`: use `rollout`")
    }
}

fn read(state: &StateDir, ns: &str, name: &str) -> anyhow::Result<RolloutStatus> {
    let path = rollout::status_file(state, ns, name);
    let text = std::fs::read(&path).map_err(|_| {
        let known: Vec<String> = rollout::read_statuses(state)
            .iter()
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .collect();
        if state.running_supervisor().is_none() {
            anyhow::anyhow!(
                "skein is not running from {}; start it with `skein up DIR`",
                state.root().display()
            )
        } else if known.is_empty() {
            anyhow::anyhow!("rollouts.argoproj.io \"{name}\" not found in namespace {ns}: the running manifests have no Rollout")
        } else {
            anyhow::anyhow!(
                "rollouts.argoproj.io \"{name}\" not found in namespace {ns} (Rollouts: {})",
                known.join(", ")
            )
        }
    })?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Argo's status icons.
pub fn icon(phase: &str) -> &'static str {
    match phase {
        "Healthy" | "Successful" | "Running" | "Ready" => "✔",
        "Progressing" | "Pending" => "◌",
        "Paused" => "॥",
        "Degraded" | "Failed" | "Error" => "✖",
        "Inconclusive" => "⚠",
        _ => "•",
    }
}

/// The text of `kubectl argo rollouts get rollout NAME`.
pub fn render(r: &RolloutStatus) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: &str| out.push_str(&format!("{k:<17}{v}\n"));
    line(&mut out, "Name:", &r.name);
    line(&mut out, "Namespace:", &r.namespace);
    line(
        &mut out,
        "Status:",
        &format!("{} {}", icon(&r.phase), r.phase),
    );
    if !r.message.is_empty() {
        line(&mut out, "Message:", &r.message);
    }
    line(&mut out, "Strategy:", &r.strategy);
    if let Some(i) = r.current_step_index {
        line(&mut out, "  Step:", &format!("{i}/{}", r.steps.len()));
    }
    line(&mut out, "  SetWeight:", &r.set_weight.to_string());
    line(&mut out, "  ActualWeight:", &r.actual_weight.to_string());
    let mut images: Vec<(String, Vec<&str>)> = Vec::new();
    for rev in &r.revisions {
        if rev.role == "old" {
            continue;
        }
        for i in &rev.images {
            match images.iter_mut().find(|(img, _)| img == i) {
                Some((_, roles)) => roles.push(&rev.role),
                None => images.push((i.clone(), vec![&rev.role])),
            }
        }
    }
    for (n, (img, roles)) in images.iter().enumerate() {
        let mut roles = roles.clone();
        roles.sort();
        let text = format!("{img} ({})", roles.join(", "));
        line(&mut out, if n == 0 { "Images:" } else { "" }, &text);
    }
    out.push_str("Replicas:\n");
    line(&mut out, "  Desired:", &r.replicas.to_string());
    line(&mut out, "  Current:", &r.current.to_string());
    line(&mut out, "  Updated:", &r.updated.to_string());
    line(&mut out, "  Ready:", &r.ready.to_string());
    line(&mut out, "  Available:", &r.available.to_string());
    out.push('\n');

    let mut rows: Vec<[String; 4]> = vec![[
        format!("⟳ {}", r.name),
        "Rollout".into(),
        format!("{} {}", icon(&r.phase), r.phase),
        String::new(),
    ]];
    let n = r.revisions.len();
    for (i, rev) in r.revisions.iter().enumerate() {
        let last = i + 1 == n;
        let (branch, pad) = if last {
            ("└──", "   ")
        } else {
            ("├──", "│  ")
        };
        rows.push([
            format!("{branch}# revision:{}", rev.revision),
            String::new(),
            String::new(),
            String::new(),
        ]);
        let runs: Vec<_> = r
            .analysis_runs
            .iter()
            .filter(|a| a.revision == rev.revision)
            .collect();
        let rs_state = if rev.pods.is_empty() {
            "• ScaledDown".to_string()
        } else if rev.pods.iter().all(|p| p.ready) {
            "✔ Healthy".into()
        } else {
            "◌ Progressing".into()
        };
        let rs_last = runs.is_empty();
        let (b2, p2) = if rs_last {
            ("└──", "   ")
        } else {
            ("├──", "│  ")
        };
        let info = match rev.role.as_str() {
            "old" => String::new(),
            role => role.to_string(),
        };
        rows.push([
            format!("{pad}{b2}⧉ {}-{}", r.name, rev.hash),
            "ReplicaSet".into(),
            rs_state,
            info,
        ]);
        let m = rev.pods.len();
        for (j, p) in rev.pods.iter().enumerate() {
            let b3 = if j + 1 == m { "└──" } else { "├──" };
            let state = if p.ready { "Running" } else { p.state.as_str() };
            let ready = if p.ready { p.containers } else { 0 };
            let mut info = format!("ready:{ready}/{}", p.containers);
            if p.restarts > 0 {
                info.push_str(&format!(",restarts:{}", p.restarts));
            }
            rows.push([
                format!("{pad}{p2}{b3}□ {}", p.name),
                "Pod".into(),
                format!("{} {state}", icon(state)),
                info,
            ]);
        }
        let k = runs.len();
        for (j, a) in runs.iter().enumerate() {
            let b3 = if j + 1 == k { "└──" } else { "├──" };
            rows.push([
                format!("{pad}{b3}α {}", a.name),
                "AnalysisRun".into(),
                format!("{} {}", icon(&a.phase), a.phase),
                a.message.clone(),
            ]);
        }
    }
    let w: Vec<usize> = (0..3)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain(std::iter::once(["NAME", "KIND", "STATUS"][c].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())));
    out.push_str(
        format!(
            "{}  {}  {}  INFO\n",
            pad("NAME", w[0]),
            pad("KIND", w[1]),
            pad("STATUS", w[2])
        )
        .as_str(),
    );
    for row in &rows {
        out.push_str(
            format!(
                "{}  {}  {}  {}",
                pad(&row[0], w[0]),
                pad(&row[1], w[1]),
                pad(&row[2], w[2]),
                row[3]
            )
            .trim_end(),
        );
        out.push('\n');
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("\nError: {e}\n"));
    }
    out
}

fn get(
    state: &StateDir,
    ns: &str,
    name: &str,
    watch: bool,
    output: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let show = |r: &RolloutStatus| -> anyhow::Result<String> {
        Ok(match output {
            Some("json") => serde_json::to_string_pretty(r)? + "\n",
            Some(o) => bail!("unknown output format `{o}`: use json"),
            None => render(r),
        })
    };
    let r = read(state, ns, name)?;
    let mut last = show(&r)?;
    print!("{last}");
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(r) = read(state, ns, name) else {
            continue;
        };
        let text = show(&r)?;
        if text != last {
            println!();
            print!("{text}");
            last = text;
        }
    }
}

fn list(state: &StateDir, ns: Option<&str>) -> anyhow::Result<ExitCode> {
    let all = rollout::read_statuses(state);
    println!(
        "{:<20} {:<10} {:<12} {:<6} {:<10} {:<8} {:<8} {:<10} {:<10} AVAILABLE",
        "NAME", "STRATEGY", "STATUS", "STEP", "SET-WEIGHT", "READY", "DESIRED", "UP-TO-DATE", ""
    );
    for r in all.iter().filter(|r| ns.is_none_or(|n| n == r.namespace)) {
        println!(
            "{:<20} {:<10} {:<12} {:<6} {:<10} {:<8} {:<8} {:<10} {:<10} {}",
            r.name,
            r.strategy,
            r.phase,
            r.current_step_index
                .map_or("-".into(), |i| format!("{i}/{}", r.steps.len())),
            r.set_weight,
            format!("{}/{}", r.ready, r.replicas),
            r.replicas,
            r.updated,
            "",
            r.available
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn request(
    state: &StateDir,
    ns: &str,
    name: &str,
    action: &str,
    full: bool,
) -> anyhow::Result<ExitCode> {
    read(state, ns, name)?;
    let id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        std::process::id()
    );
    let req = Request {
        id: id.clone(),
        namespace: ns.to_string(),
        name: name.to_string(),
        action: action.to_string(),
        full,
    };
    let dir = rollout::requests_dir(state);
    let path = dir.join(format!("{id}.json"));
    let tmp = dir.join(format!(".{id}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&req)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    let reply_path = rollout::replies_dir(state).join(format!("{id}.json"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read(&reply_path) {
            let _ = std::fs::remove_file(&reply_path);
            let reply: Reply = serde_json::from_slice(&text)?;
            if reply.ok {
                println!("rollout '{name}' {}", reply.message);
                return Ok(ExitCode::SUCCESS);
            }
            bail!("rollout '{name}': {}", reply.message);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&path);
    bail!("the Rollouts controller did not answer within 15 s; is `skein up` still running?")
}

/// The live Rollout object (the manifests, or `skein apply`'s copy) as JSON.
fn live_rollout(state: &StateDir, ns: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let status = skein_runtime::Status::read(&state.status_file())?;
    let store = skein_control::Store {
        addons: None,
        dir: PathBuf::from(&status.manifests),
        applied: Some(state.applied_dir()),
        managed: None,
    };
    let (m, _) = store.load_all();
    m.rollouts()
        .find(|r| r.metadata.name == name && r.metadata.namespace_or_default() == ns)
        // Not `Resource::to_json`: it prunes empty objects, and `pause: {}` is a step.
        .map(|r| without_nulls(serde_json::to_value(r).unwrap_or_default()))
        .ok_or_else(|| {
            anyhow::anyhow!("rollouts.argoproj.io \"{name}\" not found in namespace {ns}")
        })
}

fn without_nulls(mut v: serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// Hands a changed Rollout to the control plane and the controller as `skein apply` does.
fn write_applied(
    state: &StateDir,
    ns: &str,
    name: &str,
    mut v: serde_json::Value,
) -> anyhow::Result<()> {
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.insert("namespace".into(), ns.into());
    }
    let dir = state.applied_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(format!("rollout.{ns}.{name}.yaml"));
    let tmp = file.with_extension("yaml.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

fn set_image(state: &StateDir, ns: &str, name: &str, spec: &str) -> anyhow::Result<ExitCode> {
    let Some((container, image)) = spec.split_once('=') else {
        bail!("`{spec}`: give CONTAINER=IMAGE");
    };
    let mut v = live_rollout(state, ns, name)?;
    let mut found = false;
    if let Some(cs) = v
        .pointer_mut("/spec/template/spec/containers")
        .and_then(|c| c.as_array_mut())
    {
        for c in cs {
            if container == "*" || c["name"] == container {
                c["image"] = image.into();
                found = true;
            }
        }
    }
    if !found {
        bail!("rollout {name} has no container `{container}`");
    }
    write_applied(state, ns, name, v)?;
    println!("rollout \"{name}\" image updated");
    Ok(ExitCode::SUCCESS)
}

fn undo(state: &StateDir, ns: &str, name: &str, to: Option<u32>) -> anyhow::Result<ExitCode> {
    let r = read(state, ns, name)?;
    let current = r
        .revisions
        .iter()
        .find(|x| x.hash == r.current_pod_hash)
        .map_or(0, |x| x.revision);
    let target = match to {
        Some(n) => r.revisions.iter().find(|x| x.revision == n),
        None => r
            .revisions
            .iter()
            .filter(|x| x.revision < current)
            .max_by_key(|x| x.revision),
    };
    let Some(target) = target else {
        bail!(
            "no revision to go back to (known: {})",
            r.revisions
                .iter()
                .map(|x| x.revision.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let mut v = live_rollout(state, ns, name)?;
    v["spec"]["template"] = target.template.clone();
    write_applied(state, ns, name, v)?;
    println!("rollout '{name}' undo to revision {}", target.revision);
    Ok(ExitCode::SUCCESS)
}

fn status(state: &StateDir, ns: &str, name: &str, timeout: &str) -> anyhow::Result<ExitCode> {
    let timeout = skein_runtime::rollout::spec::parse_duration(timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let r = read(state, ns, name)?;
        let text = if r.message.is_empty() {
            r.phase.clone()
        } else {
            format!("{} - {}", r.phase, r.message)
        };
        if text != last {
            println!("{text}");
            last = text;
        }
        match r.phase.as_str() {
            "Healthy" => return Ok(ExitCode::SUCCESS),
            "Degraded" => return Ok(ExitCode::from(1)),
            _ => {}
        }
        if Instant::now() >= deadline {
            eprintln!("Error: rollout {name} did not become Healthy within the timeout");
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
