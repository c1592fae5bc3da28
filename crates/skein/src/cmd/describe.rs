//! `skein describe KIND [NAME...]`: kubectl's describe of the running system's objects (or
//! of files with `-f`), with the control plane's history of each as its Events.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use super::get::{load_system, not_found, parse_resources};
use crate::kube::describe::{describe, events_for};
use crate::kube::objects::{self, Object};

#[derive(clap::Args)]
pub struct Args {
    /// KIND [NAME...] or KIND/NAME...
    resources: Vec<String>,
    /// The namespace [default: default].
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Read objects from a file or a directory instead of the running system.
    #[arg(short, long)]
    filename: Option<PathBuf>,
}

/// The text, the errors and the exit code.
pub fn describe_all(
    args: &Args,
    objects: &[Object],
    events: &[skein_control::events::Event],
    now: SystemTime,
) -> (String, String, u8) {
    let (kinds, names) = match parse_resources(&args.resources) {
        Ok(x) => x,
        Err(e) => return (String::new(), format!("error: {e}\n"), 1),
    };
    let from_file = args.filename.is_some();
    if kinds.is_empty() && !from_file {
        return (
            String::new(),
            "error: You must specify the type of resource to describe.\n".into(),
            1,
        );
    }
    let namespace = match (&args.namespace, args.all_namespaces || from_file) {
        (Some(n), _) => Some(n.as_str()),
        (None, true) => None,
        (None, false) => Some(skein_api::DEFAULT_NAMESPACE),
    };
    let mut picked: Vec<&Object> = Vec::new();
    let mut errors = String::new();
    let in_ns = |o: &&Object| !o.kind.namespaced || namespace.is_none_or(|n| o.namespace() == n);
    if names.is_empty() {
        for o in objects.iter().filter(in_ns) {
            if kinds.is_empty() || kinds.contains(&o.kind) {
                picked.push(o);
            }
        }
        if !kinds.is_empty() {
            picked.sort_by_key(|o| {
                (
                    kinds.iter().position(|k| *k == o.kind),
                    o.namespace().to_string(),
                    o.name().to_string(),
                )
            });
        }
    } else {
        for (kind, name) in &names {
            match objects
                .iter()
                .filter(in_ns)
                .find(|o| o.kind == *kind && o.name() == name)
            {
                Some(o) => picked.push(o),
                None => {
                    errors.push_str(&not_found(kind, name));
                    errors.push('\n');
                }
            }
        }
    }
    if picked.is_empty() && names.is_empty() {
        errors.push_str(&match namespace {
            Some(n) => format!("No resources found in {n} namespace.\n"),
            None => "No resources found\n".into(),
        });
    }
    let texts: Vec<String> = picked
        .iter()
        .map(|o| describe(o, &events_for(o, events), now))
        .collect();
    let code = u8::from(errors.contains("(NotFound)"));
    (texts.join("\n\n"), errors, code)
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (objects, events) = match &args.filename {
        Some(f) => match objects::from_path(f) {
            Ok(o) => (o, Vec::new()),
            Err(e) => {
                for err in e.0.iter() {
                    eprintln!("error: {err}");
                }
                return Ok(ExitCode::FAILURE);
            }
        },
        None => {
            let (state, loaded) = load_system(state_dir)?;
            let events = skein_control::events::read(&skein_control::events::path_beside(
                &state.control_status_file(),
            ));
            (loaded.objects, events)
        }
    };
    let (out, err, code) = describe_all(&args, &objects, &events, SystemTime::now());
    print!("{out}");
    eprint!("{err}");
    Ok(ExitCode::from(code))
}
