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
    /// A manifest file or a directory of them.
    #[arg(short, long)]
    filename: PathBuf,
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
    let changes = match objects::from_path(&args.filename) {
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
