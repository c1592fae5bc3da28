//! `skein analyze [DIR | -f FILE...]`: istioctl's analyzer over manifests, without running
//! anything. With no argument, what the running system has: its manifests directory and what
//! `skein apply` added.
//!
//! Output and exit status are istioctl's: one line per finding
//! (`Error [IST0101] (VirtualService web-vsvc.blog-system 50-istio-traffic.yaml:40) ...`),
//! `-o json|yaml` with istioctl's fields, exit 79 when a finding is at or above
//! `--failure-threshold` (log output only, as istioctl), 65 when a file cannot be read or
//! parsed. The codes are in `skein_api::codes` and `docs/analyze.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use skein_api::{Code, Diagnostic, Manifests, Severity};
use skein_runtime::StateDir;

/// istioctl's `ExitAnalyzerFoundIssues`.
const EXIT_FOUND_ISSUES: u8 = 79;
/// istioctl's exit status for files it cannot parse (`sysexits` EX_DATAERR).
const EXIT_BAD_INPUT: u8 = 65;
/// The annotation that suppresses codes on one object (istioctl's).
const SUPPRESS_ANNOTATION: &str = "galley.istio.io/analyze-suppress";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Log,
    Json,
    Yaml,
}

#[derive(clap::Args)]
pub struct Args {
    /// A manifests directory or file. Without it (and without -f), the running system's
    /// configuration.
    path: Option<PathBuf>,
    /// Manifest files or directories to analyze (repeatable).
    #[arg(short = 'f', long = "filename", conflicts_with = "path")]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "log")]
    output: Format,
    /// The level at and above which findings make the exit status 79: Error, Warning or Info.
    #[arg(long, default_value = "Error")]
    failure_threshold: Severity,
    /// The level at and above which findings are printed.
    #[arg(long, default_value = "Info")]
    output_threshold: Severity,
    /// Suppress findings: `CODE=Kind name.namespace`, kind and name may use `*` (repeatable),
    /// e.g. `-S "IST0102=Namespace *"`.
    #[arg(short = 'S', long = "suppress")]
    suppress: Vec<String>,
}

/// One `-S` rule.
struct Suppression {
    code: String,
    kind: String,
    name: String,
}

impl Suppression {
    fn parse(s: &str) -> anyhow::Result<Suppression> {
        let Some((code, target)) = s.split_once('=') else {
            bail!(
                "suppression {s:?}: expected CODE=Kind name.namespace, e.g. \"IST0102=Namespace *\""
            );
        };
        let (kind, name) = target
            .trim()
            .split_once(' ')
            .unwrap_or((target.trim(), "*"));
        Ok(Suppression {
            code: code.trim().to_string(),
            kind: kind.to_string(),
            name: name.trim().to_string(),
        })
    }

    /// `origin` is istioctl's `Kind name.namespace`.
    fn matches(&self, code: Code, origin: &str) -> bool {
        let (kind, name) = origin.split_once(' ').unwrap_or((origin, ""));
        glob(&self.code.to_ascii_uppercase(), code.id())
            && glob(&self.kind, kind)
            && glob(&self.name, name)
    }
}

/// `*` matches any run of characters (linear backtracking to the last `*`, so a pattern of
/// many stars stays cheap).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// What is analyzed, and how its files are shown.
struct Input {
    manifests: Manifests,
    /// Load errors (unreadable file, bad YAML, unknown field).
    errors: Vec<String>,
    /// Directories whose files are shown relative to them.
    roots: Vec<PathBuf>,
    /// `namespace: X` or the paths, for the line printed when nothing is found.
    target: String,
}

fn load(paths: &[PathBuf]) -> Input {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    let mut roots = Vec::new();
    for p in paths {
        let (m, e) = skein_api::load_path_partial(p);
        manifests.extend(m);
        errors.extend(e.iter().map(|e| e.to_string()));
        if p.is_dir() {
            roots.push(p.clone());
        }
    }
    let target = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Input {
        manifests,
        errors,
        roots,
        target,
    }
}

fn running(state_dir: Option<&Path>) -> anyhow::Result<Input> {
    let state = StateDir::resolve(state_dir)?;
    let Ok(status) = skein_runtime::Status::read(&state.status_file()) else {
        bail!(
            "skein is not running from {}: give a directory or -f FILE, or start it with `skein up DIR`",
            state.root().display()
        );
    };
    let store = skein_control::Store {
        managed: None,
        addons: None,
        dir: PathBuf::from(&status.manifests),
        applied: Some(state.applied_dir()),
    };
    let (manifests, errors) = store.load_all();
    Ok(Input {
        manifests,
        errors,
        roots: vec![PathBuf::from(&status.manifests), state.applied_dir()],
        target: "the running system".to_string(),
    })
}

/// A finding as istioctl shows it.
struct Item<'a> {
    d: &'a Diagnostic,
    origin: String,
    reference: String,
}

impl Item<'_> {
    fn message(&self) -> String {
        match self.d.code {
            Code::Ist0106 => format!("Schema validation error: {}", self.d.message),
            Code::Ist0133 => format!("Schema validation warning: {}", self.d.message),
            _ => self.d.message.clone(),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} [{}] ({} {}) {}",
            self.d.severity.istio_name(),
            self.d.code,
            self.origin,
            self.reference,
            self.message()
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.d.code.id(),
            "documentationUrl": self.d.code.documentation_url(),
            "level": self.d.severity.istio_name(),
            "message": self.message(),
            "origin": self.origin,
            "reference": self.reference,
        })
    }
}

fn shown_file(file: &Path, roots: &[PathBuf]) -> String {
    roots
        .iter()
        .find_map(|r| file.strip_prefix(r).ok())
        .unwrap_or(file)
        .display()
        .to_string()
}

/// Codes the object's `galley.istio.io/analyze-suppress` annotation names (`*` for all).
fn annotation_suppresses(m: &Manifests, d: &Diagnostic) -> bool {
    m.iter()
        .filter(|doc| doc.resource.display_name() == d.object)
        .filter_map(|doc| doc.resource.metadata().annotations.get(SUPPRESS_ANNOTATION))
        .any(|v| {
            v.split(',')
                .map(str::trim)
                .any(|c| c == "*" || c.eq_ignore_ascii_case(d.code.id()))
        })
}

/// The warnings (and the errors that do not refuse the config) `skein analyze DIR` would
/// print, on stderr in istioctl's format, for `skein up`; what does not load or is refused
/// is reported by the run itself.
pub fn print_warnings(path: &Path) {
    let input = load(&[path.to_path_buf()]);
    if !input.errors.is_empty() {
        return;
    }
    let diagnostics = skein_api::validate(&input.manifests);
    // Errors that refuse the config stop the run with their own message; the rest are shown.
    for d in diagnostics
        .iter()
        .filter(|d| d.severity <= Severity::Warning && !d.refuses())
    {
        let i = item(d, &input.roots);
        if !annotation_suppresses(&input.manifests, d) {
            eprintln!("{}", i.line());
        }
    }
}

fn item<'a>(d: &'a Diagnostic, roots: &[PathBuf]) -> Item<'a> {
    let origin = d.origin(&shown_file(&d.source.file, roots));
    let (object, reference) = origin.rsplit_once(' ').unwrap_or((&origin, ""));
    Item {
        d,
        origin: object.to_string(),
        reference: reference.to_string(),
    }
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let suppressions = args
        .suppress
        .iter()
        .map(|s| Suppression::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut paths = args.files.clone();
    paths.extend(args.path.clone());
    let input = if paths.is_empty() {
        running(state_dir.as_deref())?
    } else {
        load(&paths)
    };
    if !input.errors.is_empty() {
        for e in &input.errors {
            eprintln!("Error: {e}");
        }
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let diagnostics = skein_api::validate(&input.manifests);
    let items: Vec<Item<'_>> = diagnostics
        .iter()
        .map(|d| item(d, &input.roots))
        .filter(|i| !suppressions.iter().any(|s| s.matches(i.d.code, &i.origin)))
        .filter(|i| !annotation_suppresses(&input.manifests, i.d))
        .filter(|i| i.d.severity <= args.output_threshold)
        .collect();
    let failed = items.iter().any(|i| i.d.severity <= args.failure_threshold);
    match args.output {
        Format::Log => {
            for i in &items {
                println!("{}", i.line());
            }
            if items.is_empty() {
                eprintln!(
                    "\u{2714} No validation issues found when analyzing {}.",
                    input.target
                );
            }
        }
        Format::Json => {
            let v: Vec<_> = items.iter().map(Item::json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Yaml => {
            let v: Vec<_> = items.iter().map(Item::json).collect();
            print!("{}", serde_norway::to_string(&v)?);
        }
    }
    // As istioctl: only the log format sets the exit status from the findings.
    Ok(if failed && args.output == Format::Log {
        ExitCode::from(EXIT_FOUND_ISSUES)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressions_glob_kind_and_name() {
        let s = Suppression::parse("IST0102=Namespace *").unwrap();
        assert!(s.matches(Code::Ist0102, "Namespace blog-system"));
        assert!(!s.matches(Code::Ist0101, "Namespace blog-system"));
        let s = Suppression::parse("IST0101=VirtualService web-*.blog-system").unwrap();
        assert!(s.matches(Code::Ist0101, "VirtualService web-vsvc.blog-system"));
        assert!(!s.matches(Code::Ist0101, "VirtualService was-vsvc.blog-system"));
        assert!(Suppression::parse("IST0101").is_err());
        assert!(glob("*", "") && glob("a*b*c", "aXbYc") && !glob("a*b", "ab-c"));
        assert!(!glob(&"*a".repeat(40), &"a".repeat(30)));
    }
}
