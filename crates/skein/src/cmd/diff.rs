//! `skein diff -f FILE|DIR`: what `skein apply -f` would change, as kubectl prints it: a
//! unified diff per object of the live object and the one the files hold, as YAML. Exit 0
//! without differences, 1 with, 2 on an error.

use std::path::PathBuf;
use std::process::ExitCode;

use super::get::load_system;
use crate::kube::objects::{self, Object};
use crate::kube::print::to_yaml;
use crate::kube::udiff::unified;

#[derive(clap::Args)]
pub struct Args {
    /// A manifest file or a directory of them. Without it, under GitOps: what differs from
    /// the commit in force (the OutOfSync objects, live against git's).
    #[arg(short, long)]
    filename: Option<PathBuf>,
}

/// kubectl's file name for an object: `group.version.Kind.namespace.name`, here
/// `Kind.namespace.name`.
fn file_name(o: &Object) -> String {
    if o.kind.namespaced {
        format!("{}.{}.{}", o.kind.kind, o.namespace(), o.name())
    } else {
        format!("{}.{}", o.kind.kind, o.name())
    }
}

/// The diff text of `changes` against `live`; empty when nothing would change.
pub fn diff(changes: &[Object], live: &[Object]) -> String {
    let mut out = String::new();
    for c in changes {
        let current = live
            .iter()
            .find(|o| o.kind == c.kind && o.namespace() == c.namespace() && o.name() == c.name());
        let before = current.map(|o| to_yaml(&o.typed)).unwrap_or_default();
        let after = to_yaml(&c.typed);
        let name = file_name(c);
        let (from, to) = (format!("live/{name}"), format!("merged/{name}"));
        let d = unified(&before, &after, &from, &to);
        if !d.is_empty() {
            out.push_str(&format!("diff -u -N {from} {to}\n"));
            out.push_str(&d);
        }
    }
    out
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let Some(filename) = &args.filename else {
        return against_git(state_dir);
    };
    let changes = match objects::from_path(filename) {
        Ok(c) => c,
        Err(e) => {
            for err in e.0.iter() {
                eprintln!("error: {err}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let live = match load_system(state_dir) {
        Ok((_, loaded)) => loaded.objects,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let d = diff(&changes, &live);
    print!("{d}");
    Ok(ExitCode::from(u8::from(!d.is_empty())))
}

/// GitOps: the OutOfSync objects, live against the commit's (what a sync would bring back).
fn against_git(state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (state, loaded) = match load_system(state_dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let layout = skein_control::gitops::Layout::new(state.gitops_dir());
    let Some(status) = layout.read_status() else {
        eprintln!(
            "error: -f FILE is required: this run does not sync an Application (GitOps), so there is no commit to compare with"
        );
        return Ok(ExitCode::from(2));
    };
    let drifted: Vec<(String, String, String)> = status
        .drifted()
        .filter(|r| !r.requires_pruning)
        .map(|r| (r.kind.clone(), r.namespace.clone(), r.name.clone()))
        .collect();
    let git = match objects::from_path(&layout.current()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let changes: Vec<Object> = git
        .into_iter()
        .filter(|o| {
            drifted
                .iter()
                .any(|(k, ns, n)| o.kind.kind == k && o.namespace() == ns && o.name() == n)
        })
        .collect();
    let d = diff(&changes, &loaded.objects);
    print!("{d}");
    for r in status
        .drifted()
        .filter(|r| r.requires_pruning || r.git.is_none())
    {
        println!(
            "# {} {}/{}: {}",
            r.kind,
            r.namespace,
            r.name,
            r.message.as_deref().unwrap_or("OutOfSync")
        );
    }
    Ok(ExitCode::from(u8::from(
        !d.is_empty() || status.drifted().next().is_some(),
    )))
}
