//! `skein get KIND [NAME...]`: kubectl's `get` on the running system (what its control plane
//! reads, and its pods) or on files with `-f`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::bail;
use skein_runtime::StateDir;

use crate::kube::jsonpath::Template;
use crate::kube::kinds::{self, KindInfo};
use crate::kube::objects::{self, Object};
use crate::kube::print::{self, Context};
use crate::kube::selector::Selector;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// KIND[,KIND...] [NAME...] or KIND/NAME...
    resources: Vec<String>,
    /// The namespace [default: default].
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// A label selector (`app=web,version!=canary`, `tier in (a,b)`, `!tier`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// wide, yaml, json, name, jsonpath=TEMPLATE, custom-columns=SPEC.
    #[arg(short, long)]
    output: Option<String>,
    /// Leave out the header row.
    #[arg(long)]
    no_headers: bool,
    /// Add a LABELS column.
    #[arg(long)]
    show_labels: bool,
    /// Sort by a JSONPath (`.metadata.name`, `{.spec.host}`).
    #[arg(long)]
    sort_by: Option<String>,
    /// Read objects from a file or a directory instead of the running system.
    #[arg(short, long)]
    filename: Option<PathBuf>,
    /// Missing fields in a template print nothing (false: they are an error).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    allow_missing_template_keys: bool,
}

/// Where the objects come from and what else the printers need.
pub struct Loaded {
    pub objects: Vec<Object>,
    pub status: Option<skein_runtime::Status>,
}

/// The running system's objects (for get, describe, delete and diff).
pub fn load_system(state_dir: Option<PathBuf>) -> anyhow::Result<(StateDir, Loaded)> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    let status = match skein_runtime::Status::read(&state.status_file()) {
        Ok(s) => s,
        Err(_) => bail!(
            "skein is not running from {}; start it with `skein up DIR`, or read files with -f",
            state.root().display()
        ),
    };
    let mut objects = objects::from_system(
        &state.addons_dir(),
        &PathBuf::from(&status.manifests),
        &state.applied_dir(),
        Some(&status),
    );
    // GitOps: the Application the run syncs, with Argo CD's status.
    objects.extend(crate::kube::application::objects(&state.gitops_dir()));
    objects::add_analysis_status(&mut objects, state.root());
    Ok((
        state,
        Loaded {
            objects,
            status: Some(status),
        },
    ))
}

/// The kinds asked for, and the (kind, name) pairs when names were given.
pub type Requested = (Vec<&'static KindInfo>, Vec<(&'static KindInfo, String)>);

/// `KIND[,KIND] NAME...` or `KIND/NAME...` into kinds and (kind, name) requests.
pub fn parse_resources(args: &[String]) -> Result<Requested, kinds::UnknownType> {
    if args.first().is_some_and(|a| a.contains('/')) {
        let mut ks: Vec<&'static KindInfo> = Vec::new();
        let mut names = Vec::new();
        for a in args {
            let (k, n) = a.split_once('/').unwrap_or((a.as_str(), ""));
            let kind = kinds::resolve_one(k)?;
            if !ks.contains(&kind) {
                ks.push(kind);
            }
            names.push((kind, n.to_string()));
        }
        return Ok((ks, names));
    }
    let Some(first) = args.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let ks = kinds::resolve(first)?;
    let names = args[1..]
        .iter()
        .flat_map(|n| ks.iter().map(move |k| (*k, n.clone())))
        .collect();
    Ok((ks, names))
}

/// kubectl's NotFound line.
pub fn not_found(kind: &KindInfo, name: &str) -> String {
    format!(
        "Error from server (NotFound): {} \"{name}\" not found",
        kind.resource()
    )
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let loaded = match &args.filename {
        Some(f) => match objects::from_path(f) {
            Ok(objects) => Loaded {
                objects,
                status: None,
            },
            Err(e) => {
                for err in e.0.iter() {
                    eprintln!("error: {err}");
                }
                return Ok(ExitCode::FAILURE);
            }
        },
        None => load_system(state_dir)?.1,
    };
    let (out, err, code) = get(&args, &loaded, SystemTime::now());
    print!("{out}");
    eprint!("{err}");
    Ok(ExitCode::from(code))
}

/// The output, the error text and the exit code of `get` on `loaded`.
pub fn get(args: &Args, loaded: &Loaded, now: SystemTime) -> (String, String, u8) {
    let fail = |msg: String| (String::new(), format!("{msg}\n"), 1);
    let (mut kinds, names) = match parse_resources(&args.resources) {
        Ok(x) => x,
        Err(e) => return fail(format!("error: {e}")),
    };
    let from_file = args.filename.is_some();
    if kinds.is_empty() {
        if !from_file {
            return fail(
                "error: You must specify the type of resource to get. Use \"skein get -f DIR\" to list what files hold, or a type such as vs, dr, gw, po, svc, deploy.".into(),
            );
        }
        for o in &loaded.objects {
            if !kinds.contains(&o.kind) {
                kinds.push(o.kind);
            }
        }
    }
    let namespace: Option<String> = if args.all_namespaces {
        None
    } else if let Some(n) = &args.namespace {
        Some(n.clone())
    } else if from_file {
        None
    } else {
        Some(skein_api::DEFAULT_NAMESPACE.to_string())
    };
    let selector = match args.selector.as_deref().map(Selector::parse).transpose() {
        Ok(s) => s,
        Err(e) => return fail(format!("error: {e}")),
    };
    let in_scope = |o: &&Object| {
        (!o.kind.namespaced || namespace.as_deref().is_none_or(|n| o.namespace() == n))
            && selector.as_ref().is_none_or(|s| s.matches(&o.labels()))
    };
    let mut errors = String::new();
    let mut groups: Vec<(&'static KindInfo, Vec<&Object>)> = Vec::new();
    for kind in &kinds {
        let mut objs: Vec<&Object> = loaded
            .objects
            .iter()
            .filter(|o| o.kind == *kind)
            .filter(in_scope)
            .collect();
        // The API server lists by namespace and name; `kubectl get -f` keeps the files' order.
        if !from_file {
            objs.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        }
        groups.push((kind, objs));
    }
    if !names.is_empty() {
        let mut found: Vec<(&'static KindInfo, Vec<&Object>)> = Vec::new();
        let mut missing = Vec::new();
        for (kind, name) in &names {
            let hit = groups
                .iter()
                .find(|(k, _)| k == kind)
                .and_then(|(_, objs)| objs.iter().find(|o| o.name() == name).copied());
            match hit {
                Some(o) => match found.iter_mut().find(|(k, _)| k == kind) {
                    Some((_, v)) => v.push(o),
                    None => found.push((kind, vec![o])),
                },
                None => missing.push(not_found(kind, name)),
            }
        }
        // `get vs,dr NAME` finds NAME in either kind; only when no kind has it is it missing.
        let distinct_names: std::collections::BTreeSet<&String> =
            names.iter().map(|(_, n)| n).collect();
        for n in distinct_names {
            let any = found
                .iter()
                .any(|(_, objs)| objs.iter().any(|o| o.name() == n));
            if !any {
                for m in missing
                    .iter()
                    .filter(|m| m.ends_with(&format!("\"{n}\" not found")))
                {
                    errors.push_str(m);
                    errors.push('\n');
                }
            }
        }
        groups = found;
    }
    if let Some(expr) = &args.sort_by {
        for (_, objs) in &mut groups {
            if let Err(e) = print::sort_by(objs, expr) {
                return fail(format!(
                    "error: couldn't find any field with path \"{expr}\": {e}"
                ));
            }
        }
    }
    let all: Vec<&Object> = groups.iter().flat_map(|(_, o)| o.iter().copied()).collect();
    let single = (names.len() == 1 || (from_file && args.resources.is_empty() && all.len() == 1))
        && all.len() == 1;
    let root = if single {
        all[0].value.clone()
    } else {
        print::list(&all)
    };
    let ctx = Context {
        now,
        status: loaded.status.as_ref(),
    };
    let code = u8::from(!errors.is_empty());
    let output = args.output.as_deref().unwrap_or("");
    let out = match output {
        "" | "wide" => {
            if all.is_empty() {
                if names.is_empty() {
                    errors.push_str(&match &namespace {
                        Some(n) => format!("No resources found in {n} namespace.\n"),
                        None => "No resources found\n".into(),
                    });
                }
                String::new()
            } else {
                // kubectl names the kind when what it prints has several kinds.
                let qualified = groups.iter().filter(|(_, o)| !o.is_empty()).count() > 1;
                print::tables(
                    &groups,
                    &print::Layout {
                        all_namespaces: args.all_namespaces,
                        wide: output == "wide",
                        no_headers: args.no_headers,
                        qualified,
                        show_labels: args.show_labels,
                    },
                    &ctx,
                )
            }
        }
        "yaml" => print::to_yaml(&root),
        "json" => print::to_json(&root),
        "name" => all
            .iter()
            .map(|o| format!("{}/{}\n", o.kind.qualified_singular(), o.name()))
            .collect(),
        o if o.starts_with("jsonpath=") || o.starts_with("jsonpath-as-json=") => {
            let as_json = o.starts_with("jsonpath-as-json=");
            let t = o.split_once('=').map(|x| x.1).unwrap_or_default();
            let mut template = match Template::parse(t) {
                Ok(t) => t,
                Err(e) => return fail(format!("error: error parsing jsonpath {t}, {e}")),
            };
            template.allow_missing = args.allow_missing_template_keys;
            let rendered = if as_json {
                template
                    .find(&root)
                    .map(|found| print::to_json(&serde_json::Value::Array(found)))
            } else {
                template.render(&root)
            };
            match rendered {
                Ok(s) => s,
                Err(e) => {
                    return fail(format!(
                        "error: error executing jsonpath \"{}\": Error executing template: {e}.",
                        template.source()
                    ));
                }
            }
        }
        o if o.starts_with("custom-columns=") => {
            let spec = &o["custom-columns=".len()..];
            let columns = match print::parse_columns(spec) {
                Ok(c) => c,
                Err(e) => return fail(format!("error: {e}")),
            };
            let columns: Vec<_> = columns
                .into_iter()
                .map(|(h, mut t)| {
                    t.allow_missing = true;
                    (h, t)
                })
                .collect();
            if all.is_empty() && names.is_empty() {
                errors.push_str(&match &namespace {
                    Some(n) => format!("No resources found in {n} namespace.\n"),
                    None => "No resources found\n".into(),
                });
                String::new()
            } else {
                match print::custom_columns(&columns, &all, args.no_headers) {
                    Ok(s) => s,
                    Err(e) => return fail(format!("error: {e}")),
                }
            }
        }
        other => {
            return fail(format!(
                "error: unable to match a printer suitable for the output format \"{other}\", allowed formats are: custom-columns,json,jsonpath,name,wide,yaml"
            ));
        }
    };
    (out, errors, code)
}
