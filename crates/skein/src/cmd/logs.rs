//! `skein logs WORKLOAD|POD`: a container's log, optionally followed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use skein_runtime::{StateDir, Status};

#[derive(clap::Args)]
pub struct Args {
    /// A pod name, or a workload name (all its pods).
    target: String,
    /// The container [default: the pod's first]; `proxy` is the sidecar, `app` the application.
    #[arg(short, long)]
    container: Option<String>,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Keep printing new lines.
    #[arg(short, long)]
    follow: bool,
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    let status = Status::read(&state.status_file())
        .with_context(|| format!("nothing has run from {}", state.root().display()))?;
    let pods: Vec<_> = match status.pods.iter().find(|p| p.name == args.target) {
        Some(p) => vec![p],
        None => status
            .pods
            .iter()
            .filter(|p| p.workload == args.target)
            .collect(),
    };
    if pods.is_empty() {
        let names: Vec<&str> = status.pods.iter().map(|p| p.workload.as_str()).collect();
        bail!(
            "no pod or workload named `{}` (workloads: {})",
            args.target,
            names.join(", ")
        );
    }
    let mut files = Vec::new();
    for p in &pods {
        // `proxy` and `app` name a pod's sidecar and its application, whatever they are called.
        let alias = match args.container.as_deref() {
            Some("proxy") => p.containers.iter().find(|c| c.name == "istio-proxy"),
            Some("app") => p.containers.iter().find(|c| c.name != "istio-proxy"),
            _ => None,
        };
        let c = match (&args.container, alias) {
            (_, Some(c)) => c,
            (Some(name), None) => {
                p.containers
                    .iter()
                    .find(|c| &c.name == name)
                    .with_context(|| {
                        let names: Vec<&str> =
                            p.containers.iter().map(|c| c.name.as_str()).collect();
                        format!(
                            "pod {} has no container `{name}` (it has: {})",
                            p.name,
                            names.join(", ")
                        )
                    })?
            }
            (None, None) => p
                .containers
                .first()
                .with_context(|| format!("pod {} has no containers", p.name))?,
        };
        files.push((p.name.clone(), PathBuf::from(&c.logs)));
    }
    let prefix = files.len() > 1;
    let mut out = std::io::stdout().lock();
    let mut offsets = Vec::new();
    for (pod, path) in &files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = args.tail.map_or(0, |n| lines.len().saturating_sub(n));
        for l in &lines[start..] {
            if prefix {
                writeln!(out, "[{pod}] {l}")?;
            } else {
                writeln!(out, "{l}")?;
            }
        }
        offsets.push(text.len() as u64);
    }
    out.flush()?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for ((pod, path), offset) in files.iter().zip(offsets.iter_mut()) {
            let Ok(mut f) = std::fs::File::open(path) else {
                continue;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < *offset {
                *offset = 0; // truncated
            }
            if len == *offset {
                continue;
            }
            f.seek(SeekFrom::Start(*offset))?;
            let mut buf = String::new();
            f.read_to_string(&mut buf)?;
            *offset = len;
            for l in buf.lines() {
                if prefix {
                    writeln!(out, "[{pod}] {l}")?;
                } else {
                    writeln!(out, "{l}")?;
                }
            }
            out.flush()?;
        }
    }
}
