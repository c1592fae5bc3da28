//! `skein apply -f FILE|DIR`: hand resources to the running control plane, like
//! `kubectl apply`. The files are checked here first (file:line for every error); the control
//! plane then validates the whole config again and either takes it or keeps the last good one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skein_runtime::StateDir;

#[derive(clap::Args)]
pub struct Args {
    /// A manifest file or a directory of them.
    #[arg(short, long)]
    filename: PathBuf,
    /// How long to wait for the control plane to take the change.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

fn control_status(state: &StateDir) -> Option<skein_control::ControlStatus> {
    serde_json::from_slice(&std::fs::read(state.control_status_file()).ok()?).ok()
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    if state.running_supervisor().is_none() {
        bail!(
            "skein is not running from {}; start it with `skein up DIR`",
            state.root().display()
        );
    }
    let manifests = match skein_api::load_path(&args.filename) {
        Ok(m) => m,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    // Validate the change against the config it joins, so every error names the user's own
    // file:line (the control plane only sees its stored copies).
    // kubectl's verdict per object: created, configured or unchanged against the live config.
    let mut verdicts = vec!["configured"; manifests.documents.len()];
    if let Ok(status) = skein_runtime::Status::read(&state.status_file()) {
        let store = skein_control::Store {
            managed: None,
            addons: Some(state.addons_dir()),
            dir: PathBuf::from(&status.manifests),
            applied: Some(state.applied_dir()),
        };
        let (live, _) = store.load_all();
        for (v, d) in verdicts.iter_mut().zip(&manifests.documents) {
            *v = verdict(&live, &d.resource);
        }
        let errors = store.check_apply(&manifests);
        if !errors.is_empty() {
            // The dashboard shows the refused change with its errors.
            if let Err(e) =
                skein_dashboard::refused::record(&state, &manifests, &errors, rfc3339_now())
            {
                eprintln!("warning: cannot record the refused change for the dashboard: {e}");
            }
            eprintln!("error: the change does not validate; nothing was applied:");
            for e in &errors {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    }
    if verdicts.iter().all(|v| *v == "unchanged") {
        // Nothing to hand over: the control plane would not make a new version of it.
        for d in &manifests.documents {
            let kind = d.resource.kind().to_ascii_lowercase();
            println!("{kind}/{} unchanged", d.resource.metadata().name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // GitOps: a change self-heal will revert is said before it is made, with the file to
    // change instead.
    let layout = skein_control::gitops::Layout::new(state.gitops_dir());
    for w in skein_control::gitops::controller::apply_warnings(&layout, &manifests) {
        eprintln!("{w}");
    }
    let before = control_status(&state).context(
        "the control plane has not reported its status yet; is the mesh running (`skein up` without --no-mesh)?",
    )?;

    // Each applied object gets its own file, named after it, so a later apply replaces it.
    let dir = state.applied_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for d in &manifests.documents {
        let meta = d.resource.metadata();
        let ns = meta.namespace_or_default();
        let file = dir.join(format!(
            "{}.{}.{}.yaml",
            d.resource.kind().to_ascii_lowercase(),
            ns,
            meta.name
        ));
        let mut v = d.resource.to_json();
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.insert("namespace".into(), ns.into());
        }
        let text = serde_json::to_string_pretty(&v)?;
        let tmp = file.with_extension("yaml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        written.push((
            tmp,
            file,
            d.resource.kind().to_ascii_lowercase(),
            meta.name.clone(),
        ));
    }
    for (tmp, file, ..) in &written {
        std::fs::rename(tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
    }

    // Wait for the control plane's verdict: a new version, or a new rejection.
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        if let Some(now_status) = control_status(&state) {
            let now = &now_status;
            if now.last_rejection != before.last_rejection && !now.valid {
                // Take the refused files back, so the next change is not blocked by them.
                for (_, file, ..) in &written {
                    let _ = std::fs::remove_file(file);
                }
                let errors: Vec<String> = now_status
                    .last_rejection
                    .iter()
                    .flat_map(|r| r.errors.iter().cloned())
                    .collect();
                let _ =
                    skein_dashboard::refused::record(&state, &manifests, &errors, rfc3339_now());
                eprintln!(
                    "error: the control plane refused the change; the last good config stays:"
                );
                for e in now.last_rejection.iter().flat_map(|r| r.errors.iter()) {
                    eprintln!("  {e}");
                }
                return Ok(ExitCode::FAILURE);
            }
            if now.version != before.version && now.valid {
                skein_dashboard::refused::clear(&state);
                for ((_, _, kind, name), v) in written.iter().zip(&verdicts) {
                    println!("{kind}/{name} {v}");
                }
                return Ok(ExitCode::SUCCESS);
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
}

/// Now, as RFC 3339 (UTC).
fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// kubectl's word for applying `r`: `created` when the live config has no such object,
/// `unchanged` when it has the same one, `configured` otherwise.
fn verdict(live: &skein_api::Manifests, r: &skein_api::Resource) -> &'static str {
    let meta = r.metadata();
    let (kind, ns, name) = (r.kind(), meta.namespace_or_default(), &meta.name);
    let same_object = |d: &&skein_api::Document| {
        let m = d.resource.metadata();
        d.resource.kind() == kind
            && d.resource.group() == r.group()
            && m.namespace_or_default() == ns
            && &m.name == name
    };
    // The last copy wins, as the control plane merges them.
    match live.documents.iter().rev().find(same_object) {
        None => "created",
        Some(d) if normalized(&d.resource) == normalized(r) => "unchanged",
        Some(_) => "configured",
    }
}

/// An object as JSON with its namespace written out (apply writes it into every copy).
fn normalized(r: &skein_api::Resource) -> serde_json::Value {
    let mut v = r.to_json();
    let ns = r.metadata().namespace_or_default().to_string();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.insert("namespace".into(), ns.into());
    }
    v
}
