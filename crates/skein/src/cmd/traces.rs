//! `skein traces` (recent traces as a table or JSON) and `skein trace ID` (one trace as a
//! waterfall in the terminal), read from the running tracing store's Jaeger query API, or
//! any Jaeger's (`--url`).

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use skein_runtime::StateDir;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only traces with a span of this service (default: every service).
    #[arg(long)]
    service: Option<String>,
    /// Only traces with a span of this operation (needs --service).
    #[arg(long, requires = "service")]
    operation: Option<String>,
    /// Only traces with a span at least this long (a Go duration: 500ms, 1.5s).
    #[arg(long)]
    min_duration: Option<String>,
    /// The most traces shown.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
    /// A Jaeger query API to read from instead of the running store (`http://ADDR`).
    #[arg(long)]
    url: Option<String>,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The trace id (hex).
    id: String,
    /// A Jaeger query API to read from instead of the running store (`http://ADDR`).
    #[arg(long)]
    url: Option<String>,
    /// Colours: auto (when stdout is a terminal), always or never.
    #[arg(long, value_enum, default_value = "auto")]
    color: Color,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// A trace as Jaeger's query API returns it (the fields read here).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(default)]
    pub spans: Vec<Span>,
    #[serde(default)]
    pub processes: HashMap<String, Process>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    #[serde(rename = "spanID")]
    pub span_id: String,
    #[serde(default)]
    pub operation_name: String,
    #[serde(default)]
    pub references: Vec<Reference>,
    #[serde(default)]
    pub start_time: u64,
    #[serde(default)]
    pub duration: u64,
    #[serde(default)]
    pub tags: Vec<KeyValue>,
    #[serde(rename = "processID", default)]
    pub process_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    pub ref_type: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub service_name: String,
}

#[derive(Debug, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: serde_json::Value,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
    #[serde(default)]
    errors: Option<Vec<ApiError>>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    msg: String,
}

/// The query API's address: `--url`, else the running store's from `skein status`.
fn base(url: Option<&str>, state_dir: Option<&std::path::Path>) -> anyhow::Result<SocketAddr> {
    let url = match url {
        Some(u) => u.to_string(),
        None => {
            let state = StateDir::resolve(state_dir)?;
            let status = skein_runtime::Status::read(&state.status_file()).with_context(|| {
                format!(
                    "nothing has run from {}; start with `skein up DIR`",
                    state.root().display()
                )
            })?;
            if state.running_supervisor().is_none() {
                bail!("skein is not running; start it with `skein up DIR`");
            }
            match status.tracing.and_then(|t| t.url) {
                Some(u) => u,
                None => bail!(
                    "no tracing store runs (it runs with the mesh: `skein up` without --no-mesh)"
                ),
            }
        }
    };
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    host.parse()
        .with_context(|| format!("{url:?} is not http://IP:PORT (the store listens on loopback)"))
}

fn get<T: for<'de> Deserialize<'de>>(addr: SocketAddr, path: &str) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start an async runtime")?;
    let (status, body) = rt
        .block_on(skein_runtime::http_get(addr, path, TIMEOUT))
        .with_context(|| format!("the tracing store at {addr}"))?;
    let env: Envelope<T> = serde_json::from_slice(&body)
        .with_context(|| format!("{path}: {status}: not Jaeger's JSON envelope"))?;
    if let Some(e) = env.errors.as_ref().and_then(|e| e.first()) {
        bail!("{path}: {status}: {}", e.msg);
    }
    env.data
        .with_context(|| format!("{path}: {status}: the reply has no data"))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One row of `skein traces`.
#[derive(Debug, serde::Serialize, PartialEq)]
pub struct Summary {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub root_service: String,
    pub root_operation: String,
    /// µs since the epoch.
    pub start_time: u64,
    /// µs.
    pub duration: u64,
    pub spans: usize,
    pub errors: usize,
}

fn is_error(s: &Span) -> bool {
    s.tags.iter().any(|t| {
        t.key == "error" && (t.value == serde_json::Value::Bool(true) || t.value == "true")
    })
}

fn service<'a>(t: &'a Trace, s: &Span) -> &'a str {
    t.processes
        .get(&s.process_id)
        .map_or("?", |p| p.service_name.as_str())
}

fn parent(s: &Span) -> Option<&str> {
    s.references
        .iter()
        .find(|r| r.ref_type == "CHILD_OF")
        .map(|r| r.span_id.as_str())
}

pub fn summary(t: &Trace) -> Summary {
    let ids: std::collections::HashSet<&str> = t.spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = t
        .spans
        .iter()
        .filter(|s| parent(s).is_none_or(|p| !ids.contains(p)))
        .min_by_key(|s| s.start_time);
    let start = t.spans.iter().map(|s| s.start_time).min().unwrap_or(0);
    let end = t
        .spans
        .iter()
        .map(|s| s.start_time + s.duration)
        .max()
        .unwrap_or(0);
    Summary {
        trace_id: t.trace_id.clone(),
        root_service: root.map_or("?".into(), |r| service(t, r).to_string()),
        root_operation: root.map_or(String::new(), |r| r.operation_name.clone()),
        start_time: start,
        duration: end.saturating_sub(start),
        spans: t.spans.len(),
        errors: t.spans.iter().filter(|s| is_error(s)).count(),
    }
}

/// A duration as Jaeger's UI writes it: `87µs`, `12.34ms`, `4.7s`.
pub fn human(us: u64) -> String {
    fn trim(v: f64) -> String {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{}ms", trim(us as f64 / 1000.0))
    } else if us < 60_000_000 {
        format!("{}s", trim(us as f64 / 1e6))
    } else {
        format!(
            "{}m{}s",
            us / 60_000_000,
            trim((us % 60_000_000) as f64 / 1e6)
        )
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// µs since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
fn when(us: u64) -> String {
    let secs = (us / 1_000_000) as i64;
    let ms = (us % 1_000_000) / 1000;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{ms:03}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => us.to_string(),
    }
}

pub fn list(args: ListArgs, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let addr = base(args.url.as_deref(), state_dir.as_deref())?;
    let services: Vec<String> = match &args.service {
        Some(s) => vec![s.clone()],
        None => get(addr, "/api/services")?,
    };
    let mut traces: BTreeMap<String, Summary> = BTreeMap::new();
    for svc in &services {
        let mut q = format!(
            "/api/traces?service={}&limit={}",
            enc(svc),
            args.limit.max(1)
        );
        if let Some(o) = &args.operation {
            q.push_str(&format!("&operation={}", enc(o)));
        }
        if let Some(d) = &args.min_duration {
            q.push_str(&format!("&minDuration={}", enc(d)));
        }
        let found: Vec<Trace> = get(addr, &q)?;
        for t in &found {
            traces.insert(t.trace_id.clone(), summary(t));
        }
    }
    let mut rows: Vec<Summary> = traces.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.start_time));
    rows.truncate(args.limit);
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => print!("{}", table(&rows)),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn table(rows: &[Summary]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.trace_id.clone(),
                format!("{}: {}", r.root_service, r.root_operation),
                when(r.start_time),
                human(r.duration),
                r.spans.to_string(),
                r.errors.to_string(),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "TRACE ID",
            "ROOT",
            "START (UTC)",
            "DURATION",
            "SPANS",
            "ERRORS",
        ],
        &cells,
    )
}

pub fn show(args: ShowArgs, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let addr = base(args.url.as_deref(), state_dir.as_deref())?;
    if args.id.is_empty() || args.id.len() > 32 || !args.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{:?} is not a trace id (1 to 32 hex digits)", args.id);
    }
    let traces: Vec<Trace> = get(addr, &format!("/api/traces/{}", args.id))?;
    let Some(t) = traces.first() else {
        bail!("trace {} not found", args.id);
    };
    let colour = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    print!("{}", waterfall(t, 40, colour));
    Ok(ExitCode::SUCCESS)
}

/// The part of span `i`'s duration that none of its children (`kids`) covers, in µs.
fn self_time(t: &Trace, i: usize, kids: &[usize]) -> u64 {
    let s = &t.spans[i];
    let (a, b) = (s.start_time, s.start_time.saturating_add(s.duration));
    let mut iv: Vec<(u64, u64)> = kids
        .iter()
        .map(|&k| {
            let c = &t.spans[k];
            let start = c.start_time.clamp(a, b);
            (
                start,
                c.start_time.saturating_add(c.duration).clamp(start, b),
            )
        })
        .collect();
    iv.sort_unstable();
    let (mut covered, mut reach) = (0, a);
    for (start, end) in iv {
        let start = start.max(reach);
        if end > start {
            covered += end - start;
            reach = end;
        }
    }
    s.duration.saturating_sub(covered)
}

/// The trace as a waterfall: one line per span, indented by its depth under its parent,
/// with a bar placed and scaled on the root's time span (the whole trace's when it has
/// several roots). The span where the time is spent, the one with the most time of its own
/// (not covered by its children: a slow query, or a proxy waiting on an injected delay), is
/// highlighted: bold red with `colour`, else marked `<< slowest`.
pub fn waterfall(t: &Trace, width: usize, colour: bool) -> String {
    let ids: HashMap<&str, usize> = t
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, s) in t.spans.iter().enumerate() {
        let p = parent(s)
            .and_then(|p| ids.get(p).copied())
            .filter(|p| *p != i);
        children.entry(p).or_default().push(i);
    }
    for v in children.values_mut() {
        v.sort_by_key(|&i| (t.spans[i].start_time, i));
    }
    let roots = children.get(&None).cloned().unwrap_or_default();
    let (t0, total) = match roots.as_slice() {
        [r] => (t.spans[*r].start_time, t.spans[*r].duration),
        _ => {
            let s = summary(t);
            (s.start_time, s.duration)
        }
    };
    let total = total.max(1);
    // Depth-first order, with a guard against reference cycles.
    let mut order: Vec<(usize, usize)> = Vec::new();
    let mut seen = vec![false; t.spans.len()];
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        order.push((i, depth));
        if let Some(c) = children.get(&Some(i)) {
            stack.extend(c.iter().rev().map(|&c| (c, depth + 1)));
        }
    }
    let slowest = order
        .iter()
        .max_by_key(|(i, depth)| {
            let kids = children.get(&Some(*i)).map_or(&[][..], Vec::as_slice);
            (self_time(t, *i, kids), *depth)
        })
        .map(|(i, _)| *i);
    let labels: Vec<String> = order
        .iter()
        .map(|(i, depth)| {
            let s = &t.spans[*i];
            format!(
                "{}{} {}",
                "  ".repeat(*depth),
                service(t, s),
                s.operation_name
            )
        })
        .collect();
    let label_w = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .min(70);
    let sum = summary(t);
    let mut out = format!(
        "trace {}  {}  {}, {}, {}\n",
        t.trace_id,
        human(sum.duration),
        plural(sum.spans, "span"),
        plural(
            t.spans
                .iter()
                .map(|s| service(t, s))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            "service"
        ),
        plural(sum.errors, "error"),
    );
    for ((i, _), label) in order.iter().zip(&labels) {
        let s = &t.spans[*i];
        let off = s.start_time.saturating_sub(t0);
        let a = ((off as u128 * width as u128) / total as u128).min(width as u128) as usize;
        let len = ((s.duration as u128 * width as u128).div_ceil(total as u128)) as usize;
        let len = len.clamp(1, width.saturating_sub(a).max(1));
        let bar: String =
            " ".repeat(a) + &"█".repeat(len) + &" ".repeat(width.saturating_sub(a + len));
        let label: String = if label.chars().count() > label_w {
            label
                .chars()
                .take(label_w.saturating_sub(1))
                .collect::<String>()
                + "…"
        } else {
            label.clone()
        };
        let pad = label_w - label.chars().count();
        let err = if is_error(s) { " !error" } else { "" };
        let line = format!(
            "{label}{}  |{bar}| {:>8} +{}{err}",
            " ".repeat(pad),
            human(s.duration),
            human(off)
        );
        if Some(*i) == slowest {
            if colour {
                out.push_str(&format!("\x1b[1;31m{line}\x1b[0m\n"));
            } else {
                out.push_str(&format!("{line}  << slowest\n"));
            }
        } else {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> Trace {
        let text = include_str!("testdata/trace-blog.json");
        let env: Envelope<Vec<Trace>> = serde_json::from_str(text).unwrap();
        env.data.unwrap().remove(0)
    }

    /// The golden waterfall of a recorded trace (the seed's request: ingress, web, was, and
    /// a slow SQL query). Regenerate with `SKEIN_UPDATE_GOLDEN=1`.
    #[test]
    fn the_waterfall_of_a_recorded_trace_matches_its_golden_file() {
        let t = recorded();
        let got = waterfall(&t, 40, false);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/cmd/testdata/trace-blog.golden"
        );
        if std::env::var_os("SKEIN_UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).unwrap();
        assert_eq!(got, want, "got:\n{got}");
        // With colour, the slowest leaf is bold red and not marked.
        let coloured = waterfall(&t, 40, true);
        let red = coloured
            .lines()
            .find(|l| l.starts_with("\x1b[1;31m"))
            .unwrap();
        assert!(red.contains("was SELECT blog.posts"), "{coloured}");
        assert!(!coloured.contains("slowest"));
    }

    /// A fault delay on the client hop: its span has the time of its own, not the quick query
    /// at the end of the trace, so it is the one marked.
    #[test]
    fn the_span_marked_is_the_one_with_the_most_time_of_its_own() {
        let span = |id: &str, parent: Option<&str>, name: &str, start: u64, duration: u64| {
            let refs = parent.map_or_else(Vec::new, |p| {
                vec![serde_json::json!({"refType": "CHILD_OF", "traceID": "ab", "spanID": p})]
            });
            serde_json::json!({"spanID": id, "operationName": name, "references": refs,
                "startTime": start, "duration": duration, "processID": "p1"})
        };
        let trace = |spans: Vec<serde_json::Value>| -> Trace {
            serde_json::from_value(serde_json::json!({"traceID": "ab", "spans": spans,
                "processes": {"p1": {"serviceName": "web"}}}))
            .unwrap()
        };
        let t = trace(vec![
            span("01", None, "web GET", 0, 710_000),
            span("02", Some("01"), "to was", 1_000, 705_000),
            span("03", Some("02"), "was GET", 704_000, 1_500),
            span("04", Some("03"), "SELECT", 704_200, 400),
            span("05", Some("03"), "SELECT again", 704_700, 60),
        ]);
        let w = waterfall(&t, 20, false);
        let marked: Vec<&str> = w.lines().filter(|l| l.ends_with("<< slowest")).collect();
        assert_eq!(marked.len(), 1, "{w}");
        assert!(marked[0].trim_start().starts_with("web to was"), "{w}");
        // Children that overlap each other, or run past their parent, are counted once.
        let t = trace(vec![
            span("01", None, "root", 0, 100),
            span("02", Some("01"), "a", 10, 50),
            span("03", Some("01"), "b", 30, 200),
        ]);
        assert_eq!(self_time(&t, 0, &[1, 2]), 10);
        assert_eq!(self_time(&t, 1, &[]), 50);
    }

    #[test]
    fn summaries_and_durations() {
        let s = summary(&recorded());
        assert_eq!(s.root_service, "istio-ingressgateway.istio-system");
        assert_eq!((s.spans, s.errors, s.duration), (6, 1, 5_000_000));
        assert_eq!(human(87), "87µs");
        assert_eq!(human(12_340), "12.34ms");
        assert_eq!(human(4_700_000), "4.7s");
        assert_eq!(human(61_000_000), "1m1s");
        assert_eq!(when(1_556_604_172_355_737), "2019-04-30 06:02:52.355");
        let t = table(&[s]);
        assert!(t.starts_with("TRACE ID"), "{t}");
        assert!(t.contains("istio-ingressgateway.istio-system: "), "{t}");
        assert_eq!(enc("GET /a b"), "GET%20%2Fa%20b");
    }
}
