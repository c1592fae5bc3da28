//! `skein delete -f FILE|DIR` and `skein delete KIND NAME...`: takes back what `skein apply`
//! added, like `kubectl delete`, and waits for the control plane's verdict. Objects that live
//! in the user's manifests directory are refused: skein never writes the user's files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skein_runtime::StateDir;

use super::get::{load_system, not_found, parse_resources};
use crate::kube::objects::{self, Object};

#[derive(clap::Args)]
pub struct Args {
    /// KIND NAME... or KIND/NAME...
    resources: Vec<String>,
    /// The objects of a manifest file or a directory.
    #[arg(short, long)]
    filename: Option<PathBuf>,
    /// The namespace of KIND NAME [default: default].
    #[arg(short, long)]
    namespace: Option<String>,
    /// Succeed when an object is not there.
    #[arg(long)]
    ignore_not_found: bool,
    /// How long to wait for the control plane to take the change.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

fn control_status(state: &StateDir) -> Option<skein_control::ControlStatus> {
    serde_json::from_slice(&std::fs::read(state.control_status_file()).ok()?).ok()
}

/// What one requested object comes to.
enum Verdict<'a> {
    /// In the apply directory: its file goes.
    Remove(&'a Object, PathBuf),
    /// Only in the user's files.
    Refuse(String),
    Missing(String),
}

fn decide<'a>(
    found: Option<&'a Object>,
    kind: &crate::kube::kinds::KindInfo,
    name: &str,
    applied_dir: &Path,
) -> Verdict<'a> {
    let Some(o) = found else {
        return Verdict::Missing(not_found(kind, name));
    };
    let label = format!("{} \"{name}\"", kind.qualified_singular());
    match &o.source {
        Some(src) if o.applied && src.file.starts_with(applied_dir) => {
            Verdict::Remove(o, src.file.clone())
        }
        Some(_) => Verdict::Refuse(format!(
            "error: {label} is defined in {}, in the manifests skein up runs; skein never writes your files: edit or remove it there (the control plane takes the change as it does an apply)",
            o.defined_at
                .as_ref()
                .or(o.source.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default()
        )),
        None => Verdict::Refuse(format!(
            "error: {label} is run by skein up from its manifests; change them or use `skein down`"
        )),
    }
}

/// Under GitOps, the refusal for an object of the commit in force: where git has it.
fn in_git(
    state: &skein_runtime::StateDir,
    o: &Object,
    kind: &crate::kube::kinds::KindInfo,
    name: &str,
) -> Option<String> {
    let layout = skein_control::gitops::Layout::new(state.gitops_dir());
    let cfg = layout.read_config()?;
    let meta = layout.current_export()?;
    let src = o.source.as_ref()?;
    let at = meta.git_location(&cfg, &layout, src)?;
    Some(format!(
        "error: {} \"{name}\" is in git ({at} at commit {}) and Application {:?} syncs it; remove it from {} and commit (with prune the object goes), or `skein apply` a change",
        kind.qualified_singular(),
        meta.commit.sha.chars().take(7).collect::<String>(),
        cfg.name,
        cfg.repo.display(),
    ))
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (state, loaded) = load_system(state_dir)?;
    if state.running_supervisor().is_none() {
        bail!(
            "skein is not running from {}; start it with `skein up DIR`",
            state.root().display()
        );
    }
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| skein_api::DEFAULT_NAMESPACE.to_string());
    // (kind, namespace, name) of every object asked for.
    let mut wanted = Vec::new();
    match &args.filename {
        Some(f) => {
            if !args.resources.is_empty() {
                bail!("give either -f or KIND NAME, not both");
            }
            match objects::from_path(f) {
                Ok(objs) => {
                    for o in objs {
                        wanted.push((o.kind, o.namespace().to_string(), o.name().to_string()));
                    }
                }
                Err(e) => {
                    for err in e.0.iter() {
                        eprintln!("error: {err}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        None => {
            let (kinds, names) = match parse_resources(&args.resources) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            if kinds.is_empty() || names.is_empty() {
                eprintln!(
                    "error: resource(s) were provided, but no name was specified: use KIND NAME or -f FILE"
                );
                return Ok(ExitCode::FAILURE);
            }
            for (k, n) in names {
                wanted.push((k, namespace.clone(), n));
            }
        }
    }
    let applied_dir = state.applied_dir();
    let mut failed = false;
    let mut removals = Vec::new();
    for (kind, ns, name) in &wanted {
        let found = loaded.objects.iter().find(|o| {
            o.kind == *kind && o.name() == name && (!kind.namespaced || o.namespace() == ns)
        });
        match decide(found, kind, name, &applied_dir) {
            Verdict::Remove(o, file) => removals.push((o, file)),
            Verdict::Refuse(msg) => {
                // GitOps: the object is a commit's; the file to change is in the repository.
                let msg = found
                    .and_then(|o| in_git(&state, o, kind, name))
                    .unwrap_or(msg);
                eprintln!("{msg}");
                failed = true;
            }
            Verdict::Missing(msg) => {
                if !args.ignore_not_found {
                    eprintln!("{msg}");
                    failed = true;
                }
            }
        }
    }
    if removals.is_empty() {
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let before = control_status(&state).context(
        "the control plane has not reported its status yet; is the mesh running (`skein up` without --no-mesh)?",
    )?;
    // Keep the files' text to put it back if the control plane refuses the result.
    let mut taken = Vec::new();
    for (o, file) in &removals {
        let text =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let docs = skein_api::load_path(file)
            .map(|m| m.documents.len())
            .unwrap_or(1);
        if docs > 1 {
            eprintln!(
                "error: {} \"{}\" shares {} with other objects; delete them with -f {}",
                o.kind.qualified_singular(),
                o.name(),
                file.display(),
                file.display()
            );
            failed = true;
            continue;
        }
        std::fs::remove_file(file).with_context(|| format!("cannot remove {}", file.display()))?;
        taken.push((*o, file.clone(), text));
    }
    if taken.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        if let Some(now) = control_status(&state) {
            if now.last_rejection != before.last_rejection && !now.valid {
                for (_, file, text) in &taken {
                    let _ = std::fs::write(file, text);
                }
                eprintln!(
                    "error: the control plane refused the config without them; nothing was deleted:"
                );
                for e in now.last_rejection.iter().flat_map(|r| r.errors.iter()) {
                    eprintln!("  {e}");
                }
                return Ok(ExitCode::FAILURE);
            }
            if now.version != before.version && now.valid {
                break;
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the control plane did not take the change within {}s; see `skein logs istiod`",
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // An applied copy may have stood in for an object of the user's files: that one is in
    // force again, and saying so avoids a surprise.
    let manifests = loaded.status.as_ref().map(|s| PathBuf::from(&s.manifests));
    let underneath = manifests
        .map(|m| objects::from_system(&state.addons_dir(), &m, Path::new(""), None))
        .unwrap_or_default();
    for (o, ..) in &taken {
        println!("{} \"{}\" deleted", o.kind.qualified_singular(), o.name());
        if let Some(src) = underneath
            .iter()
            .find(|u| u.kind == o.kind && u.name() == o.name() && u.namespace() == o.namespace())
            .and_then(|u| u.defined_at.as_ref().or(u.source.as_ref()))
        {
            println!("  (the copy in {src} is in force again)");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
