//! kubectl's printers: the default and wide tables (Istio's CRD printer columns and the
//! built-in kinds' columns), `-o yaml|json|name`, `jsonpath=` and `custom-columns=`.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::jsonpath::{JsonPathError, Template, to_text};
use super::kinds::KindInfo;
use super::objects::Object;

/// What the tables need beyond the objects themselves.
pub struct Context<'a> {
    pub now: SystemTime,
    /// The running system's status (pod readiness, Service addresses), if any.
    pub status: Option<&'a skein_runtime::Status>,
}

/// kubectl's `duration.HumanDuration`, as its AGE column prints it.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (m, h) = (s / 60, s / 3600);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s.is_multiple_of(60) {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m.is_multiple_of(60) {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h.is_multiple_of(24) {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let days = h / 24;
        if days.is_multiple_of(365) {
            format!("{}y", days / 365)
        } else {
            format!("{}y{}d", days / 365, days % 365)
        }
    } else {
        format!("{}y", h / 24 / 365)
    }
}

/// Aligned as Go's tabwriter with kubectl's settings for tables (minimum cell width 6,
/// padding 3).
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    tabwrite_with(rows, 6, 3)
}

/// Go's tabwriter: every cell but a row's last is padded to its column's width, a column's
/// width taken over the run of consecutive rows that have that cell (a row with fewer cells
/// ends the run), at least `min` and the widest cell plus `padding`.
pub fn tabwrite_with(rows: &[Vec<String>], min: usize, padding: usize) -> String {
    let len = |s: &str| s.chars().count();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    // widths[r][c]: the width of cell c in row r.
    let mut widths = vec![vec![0usize; cols]; rows.len()];
    for c in 0..cols {
        let mut r = 0;
        while r < rows.len() {
            if rows[r].len() <= c + 1 {
                r += 1;
                continue;
            }
            let start = r;
            while r < rows.len() && rows[r].len() > c + 1 {
                r += 1;
            }
            let w = rows[start..r]
                .iter()
                .map(|row| len(&row[c]) + padding)
                .max()
                .unwrap_or(0)
                .max(min);
            for row in widths.iter_mut().take(r).skip(start) {
                row[c] = w;
            }
        }
    }
    let mut out = String::new();
    for (row, w) in rows.iter().zip(&widths) {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.extend(std::iter::repeat_n(' ', w[i].saturating_sub(len(cell))));
            }
        }
        out.push('\n');
    }
    out
}

fn path<'a>(v: &'a Value, p: &str) -> Option<&'a Value> {
    v.pointer(p)
}

/// A CRD printer column's cell: strings bare, lists and maps as JSON, nothing when missing.
fn cell(v: &Value, p: &str) -> String {
    match path(v, p) {
        None | Some(Value::Null) => String::new(),
        Some(x) => to_text(x),
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn count(v: &Value, p: &str) -> usize {
    match path(v, p) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn selector_text(v: Option<&Value>) -> String {
    let map = super::objects::string_map(v);
    or_none(
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The headers of `kind`'s table (without NAMESPACE).
/// The Gateway API's group (its Gateway has columns of its own).
const GATEWAY_API: &str = "gateway.networking.k8s.io";

pub fn headers(kind: &KindInfo, wide: bool) -> Vec<&'static str> {
    let mut h: Vec<&'static str> = match kind.kind {
        "Pod" => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "Service" => vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        "Deployment" => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "Rollout" => vec![
            "NAME",
            "DESIRED",
            "CURRENT",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
        ],
        "Namespace" => vec!["NAME", "STATUS", "AGE"],
        "ServiceAccount" => vec!["NAME", "SECRETS", "AGE"],
        "ConfigMap" => vec!["NAME", "DATA", "AGE"],
        "Secret" => vec!["NAME", "TYPE", "DATA", "AGE"],
        "Ingress" => vec!["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
        "VirtualService" => vec!["NAME", "GATEWAYS", "HOSTS", "AGE"],
        "DestinationRule" => vec!["NAME", "HOST", "AGE"],
        "ServiceEntry" => vec!["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"],
        "WorkloadEntry" => vec!["NAME", "AGE", "ADDRESS"],
        "AuthorizationPolicy" => vec!["NAME", "ACTION", "AGE"],
        "PeerAuthentication" => vec!["NAME", "MODE", "AGE"],
        // Argo CD's CRD printer columns (REVISION and PROJECT are priority 1: -o wide).
        "Application" => vec!["NAME", "SYNC STATUS", "HEALTH STATUS"],
        "HTTPRoute" | "GRPCRoute" => vec!["NAME", "HOSTNAMES", "AGE"],
        "GatewayClass" => vec!["NAME", "CONTROLLER", "AGE"],
        "Gateway" if kind.group == GATEWAY_API => vec!["NAME", "CLASS", "AGE"],
        "AnalysisRun" => vec!["NAME", "STATUS", "AGE"],
        _ => vec!["NAME", "AGE"],
    };
    if wide {
        match kind.kind {
            "Pod" => h.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]),
            "Service" => h.push("SELECTOR"),
            "Deployment" => h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]),
            "Application" => h.extend(["REVISION", "PROJECT", "OUT OF SYNC"]),
            _ => {}
        }
    }
    h
}

fn age(o: &Object, ctx: &Context<'_>) -> String {
    let created = o.created.or_else(|| {
        o.value
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
            .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    });
    match created {
        None => "<unknown>".into(),
        Some(c) => human_duration(ctx.now.duration_since(c).unwrap_or_default()),
    }
}

fn ready_pods(o: &Object, ctx: &Context<'_>) -> usize {
    ctx.status.map_or(0, |s| {
        s.pods
            .iter()
            .filter(|p| p.namespace == o.namespace() && p.workload == o.name() && p.ready)
            .count()
    })
}

/// A Rollout's pods (not those terminating), and those of its current template (the
/// `rollouts-pod-template-hash` of `spec.template`): CURRENT and UP-TO-DATE.
fn rollout_pods(o: &Object, ctx: &Context<'_>) -> (usize, usize) {
    let hash = path(&o.value, "/spec/template")
        .and_then(|t| serde_json::from_value::<skein_api::k8s::PodTemplateSpec>(t.clone()).ok())
        .map(|t| skein_runtime::rollout_template_hash(&t));
    ctx.status.map_or((0, 0), |s| {
        let pods: Vec<_> = s
            .pods
            .iter()
            .filter(|p| {
                p.namespace == o.namespace() && p.workload == o.name() && p.state != "Terminating"
            })
            .collect();
        let updated = pods
            .iter()
            .filter(|p| p.labels.get("rollouts-pod-template-hash") == hash.as_ref())
            .count();
        (pods.len(), updated)
    })
}

fn replicas(o: &Object) -> u64 {
    path(&o.value, "/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1)
}

/// One object's cells for `headers(kind, wide)`.
pub fn row(o: &Object, wide: bool, ctx: &Context<'_>) -> Vec<String> {
    let v = &o.value;
    let mut r = vec![o.name().to_string()];
    let age = age(o, ctx);
    match o.kind.kind {
        "Pod" => {
            let st = path(v, "/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = st
                .iter()
                .filter(|c| c.get("ready") == Some(&Value::Bool(true)))
                .count();
            let restarts: u64 = st
                .iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_u64))
                .sum();
            r.extend([
                format!("{ready}/{}", st.len()),
                cell(v, "/status/phase"),
                restarts.to_string(),
                age,
            ]);
            if wide {
                r.extend([
                    or_none(cell(v, "/status/podIP")),
                    or_none(cell(v, "/spec/nodeName")),
                    "<none>".into(),
                    "<none>".into(),
                ]);
            }
        }
        "Service" => {
            let ty = path(v, "/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_string();
            let ip = path(v, "/spec/clusterIP")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    ctx.status.and_then(|s| {
                        s.services
                            .iter()
                            .find(|x| x.namespace == o.namespace() && x.name == o.name())
                            .map(|x| x.cluster_ip.clone())
                    })
                })
                .unwrap_or_else(|| "<none>".into());
            let ports: Vec<String> = path(v, "/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let port = p.get("port").map(to_text).unwrap_or_default();
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort") {
                        Some(n) => format!("{port}:{}/{proto}", to_text(n)),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect();
            r.extend([ty, ip, "<none>".into(), or_none(ports.join(",")), age]);
            if wide {
                r.push(selector_text(path(v, "/spec/selector")));
            }
        }
        "AnalysisRun" => r.extend([cell(v, "/status/phase"), age]),
        "Deployment" | "Rollout" => {
            let want = replicas(o);
            let ready = ready_pods(o, ctx);
            if o.kind.kind == "Deployment" {
                r.extend([
                    format!("{ready}/{want}"),
                    ready.to_string(),
                    ready.to_string(),
                    age,
                ]);
            } else {
                let (current, updated) = rollout_pods(o, ctx);
                r.extend([
                    want.to_string(),
                    current.to_string(),
                    updated.to_string(),
                    ready.to_string(),
                    age,
                ]);
            }
            if wide && o.kind.kind == "Deployment" {
                let containers = path(v, "/spec/template/spec/containers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let names: Vec<String> = containers.iter().map(|c| cell(c, "/name")).collect();
                let images: Vec<String> = containers.iter().map(|c| cell(c, "/image")).collect();
                r.extend([
                    or_none(names.join(",")),
                    or_none(images.join(",")),
                    selector_text(path(v, "/spec/selector/matchLabels")),
                ]);
            }
        }
        "Namespace" => r.extend(["Active".into(), age]),
        "ServiceAccount" => r.extend([count(v, "/secrets").to_string(), age]),
        "ConfigMap" => r.extend([
            (count(v, "/data") + count(v, "/binaryData")).to_string(),
            age,
        ]),
        "Secret" => r.extend([
            path(v, "/type")
                .and_then(Value::as_str)
                .unwrap_or("Opaque")
                .to_string(),
            (count(v, "/data") + count(v, "/stringData")).to_string(),
            age,
        ]),
        "Ingress" => {
            let hosts: Vec<String> = path(v, "/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| r.get("host").map(to_text).unwrap_or_else(|| "*".into()))
                .collect();
            let ports = if count(v, "/spec/tls") > 0 {
                "80, 443"
            } else {
                "80"
            };
            r.extend([
                or_none(cell(v, "/spec/ingressClassName")),
                if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                },
                String::new(),
                ports.into(),
                age,
            ]);
        }
        "VirtualService" => r.extend([cell(v, "/spec/gateways"), cell(v, "/spec/hosts"), age]),
        "DestinationRule" => r.extend([cell(v, "/spec/host"), age]),
        "ServiceEntry" => r.extend([
            cell(v, "/spec/hosts"),
            cell(v, "/spec/location"),
            cell(v, "/spec/resolution"),
            age,
        ]),
        "WorkloadEntry" => r.extend([age, cell(v, "/spec/address")]),
        "AuthorizationPolicy" => r.extend([cell(v, "/spec/action"), age]),
        "PeerAuthentication" => r.extend([cell(v, "/spec/mtls/mode"), age]),
        "Application" => {
            r.extend([
                cell(v, "/status/sync/status"),
                cell(v, "/status/health/status"),
            ]);
            if wide {
                // Which objects differ: what `argocd app get` lists as OutOfSync.
                let out: Vec<String> = path(v, "/status/resources")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|r| r["status"] == "OutOfSync")
                    .map(|r| {
                        format!(
                            "{}/{}/{}{}",
                            to_text(&r["kind"]),
                            to_text(&r["namespace"]),
                            to_text(&r["name"]),
                            if r["requiresPruning"] == true {
                                " (requires pruning)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                r.extend([
                    cell(v, "/status/sync/revision"),
                    cell(v, "/spec/project"),
                    or_none(out.join(",")),
                ]);
            }
        }
        "HTTPRoute" | "GRPCRoute" => r.extend([cell(v, "/spec/hostnames"), age]),
        "GatewayClass" => r.extend([cell(v, "/spec/controllerName"), age]),
        "Gateway" if o.kind.group == GATEWAY_API => {
            r.extend([cell(v, "/spec/gatewayClassName"), age])
        }
        _ => r.push(age),
    }
    r
}

/// How tables are laid out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    /// A NAMESPACE column first (`-A`).
    pub all_namespaces: bool,
    /// `-o wide`'s extra columns.
    pub wide: bool,
    pub no_headers: bool,
    /// Names as `kind.group/name` (several kinds printed).
    pub qualified: bool,
    /// A LABELS column last (`--show-labels`).
    pub show_labels: bool,
}

/// The tables for `objects` (grouped by kind, in the order given), kubectl's way: a
/// NAMESPACE column with `-A`, `kind.group/name` names when several kinds are printed, a
/// blank line between tables.
pub fn tables(
    groups: &[(&'static KindInfo, Vec<&Object>)],
    layout: &Layout,
    ctx: &Context<'_>,
) -> String {
    let Layout {
        all_namespaces,
        wide,
        no_headers,
        qualified,
        show_labels,
    } = *layout;
    let mut out = Vec::new();
    for (kind, objs) in groups.iter().filter(|(_, o)| !o.is_empty()) {
        let mut rows = Vec::new();
        if !no_headers {
            let mut h: Vec<String> = headers(kind, wide).iter().map(|s| s.to_string()).collect();
            if all_namespaces && kind.namespaced {
                h.insert(0, "NAMESPACE".into());
            }
            if show_labels {
                h.push("LABELS".into());
            }
            rows.push(h);
        }
        for o in objs {
            let mut r = row(o, wide, ctx);
            if qualified {
                r[0] = format!("{}/{}", kind.qualified_singular(), r[0]);
            }
            if all_namespaces && kind.namespaced {
                r.insert(0, o.namespace().to_string());
            }
            if show_labels {
                let labels: Vec<String> =
                    o.labels().iter().map(|(k, v)| format!("{k}={v}")).collect();
                r.push(or_none(labels.join(",")));
            }
            rows.push(r);
        }
        out.push(tabwrite(&rows));
    }
    // A blank line between tables only when they have headers, as kubectl.
    out.join(if no_headers { "" } else { "\n" })
}

/// kubectl's `List` wrapper for `-o json|yaml|jsonpath` of several objects.
pub fn list(objs: &[&Object]) -> Value {
    json!({
        "apiVersion": "v1",
        "items": objs.iter().map(|o| o.value.clone()).collect::<Vec<_>>(),
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

/// JSON as kubectl prints it: four-space indents, a final newline.
pub fn to_json(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if serde::Serialize::serialize(v, &mut ser).is_err() {
        return String::new();
    }
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    s.push('\n');
    s
}

/// YAML as kubectl prints it (keys sorted, lists not indented under their key, strings that
/// need quotes in double quotes).
pub fn to_yaml(v: &Value) -> String {
    let text = serde_norway::to_string(v).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(&requote(line));
        out.push('\n');
    }
    out
}

/// A single-quoted scalar at the start of `s` (`'it''s'`): its value and what follows.
fn single_quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('\'')?;
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                chars.next();
                value.push('\'');
                continue;
            }
            return Some((value, &body[i + 1..]));
        }
        value.push(c);
    }
    None
}

fn double_quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One line of serde's YAML with its single-quoted key or value double-quoted, as Go's YAML
/// writes them (`resourceVersion: ""`, `exact: "true"`).
fn requote(line: &str) -> String {
    let trimmed = line.trim_start_matches(' ');
    let mut prefix = line[..line.len() - trimmed.len()].to_string();
    let mut rest = trimmed;
    while let Some(r) = rest.strip_prefix("- ") {
        prefix.push_str("- ");
        rest = r;
    }
    let mut out = prefix;
    if let Some((key, after)) = single_quoted(rest)
        && (after.is_empty() || after.starts_with(':'))
    {
        out.push_str(&double_quoted(&key));
        rest = after;
        if after.is_empty() {
            return out;
        }
    }
    match rest.find(": ") {
        Some(i) if rest[i + 2..].starts_with('\'') => {
            let (key, value) = (&rest[..i + 2], &rest[i + 2..]);
            match single_quoted(value) {
                Some((v, "")) => {
                    out.push_str(key);
                    out.push_str(&double_quoted(&v));
                }
                _ => out.push_str(rest),
            }
        }
        _ => out.push_str(rest),
    }
    out
}

/// A `-o custom-columns=` spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnsError {
    #[error("unexpected custom-columns spec: {0}, expected <header>:<json-path-expr>")]
    Spec(String),
    #[error("{0}")]
    Path(#[from] JsonPathError),
}

/// kubectl's relaxed path: `{...}` added, and a leading `.` when missing.
pub fn relaxed(expr: &str) -> String {
    let e = expr.trim();
    let inner = e
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(e);
    if inner.starts_with('.') || inner.starts_with('$') || inner.starts_with('[') {
        format!("{{{inner}}}")
    } else {
        format!("{{.{inner}}}")
    }
}

/// Parses `HEADER:PATH,HEADER:PATH` (split at every comma, as kubectl does).
pub fn parse_columns(spec: &str) -> Result<Vec<(String, Template)>, ColumnsError> {
    spec.split(',')
        .map(|part| {
            let (h, p) = part
                .split_once(':')
                .ok_or_else(|| ColumnsError::Spec(spec.to_string()))?;
            Ok((h.to_string(), Template::parse(&relaxed(p))?))
        })
        .collect()
}

/// A value as Go's `%v` prints a decoded JSON value: `[a b]`, `map[k:v]`, `<nil>`.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_value(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Value::Number(n) if n.is_f64() => n.as_f64().map(|f| format!("{f}")).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// One row per object; several matches joined with commas (each as Go's `%v`), none as
/// `<none>`.
pub fn custom_columns(
    columns: &[(String, Template)],
    objs: &[&Object],
    no_headers: bool,
) -> Result<String, JsonPathError> {
    let mut rows = Vec::new();
    if !no_headers {
        rows.push(columns.iter().map(|(h, _)| h.clone()).collect());
    }
    for o in objs {
        let mut r = Vec::new();
        for (_, t) in columns {
            let vals = t.find(&o.value)?;
            let text: Vec<String> = vals.iter().map(go_value).collect();
            r.push(or_none(text.join(",")));
        }
        rows.push(r);
    }
    Ok(tabwrite(&rows))
}

/// `--sort-by`: a stable sort by the path's first value (numbers by value, then text).
pub fn sort_by(objs: &mut [&Object], expr: &str) -> Result<(), JsonPathError> {
    let t = Template::parse(&relaxed(expr))?;
    let mut keyed: Vec<(Option<Value>, usize)> = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        keyed.push((t.find(&o.value)?.into_iter().next(), i));
    }
    let original: Vec<&Object> = objs.to_vec();
    keyed.sort_by(|(a, ia), (b, ib)| {
        let ord = match (a, b) {
            (Some(Value::Number(x)), Some(Value::Number(y))) => x
                .as_f64()
                .partial_cmp(&y.as_f64())
                .unwrap_or(std::cmp::Ordering::Equal),
            (Some(x), Some(y)) => to_text(x).cmp(&to_text(y)),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        ord.then(ia.cmp(ib))
    });
    for (slot, (_, i)) in objs.iter_mut().zip(keyed) {
        *slot = original[i];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quotes_as_gos_yaml() {
        let v = json!({"a": "true", "b": "", "c": ["it's", "1"], "d": {"8080": "x"}, "e": "plain"});
        assert_eq!(
            to_yaml(&v),
            "a: \"true\"\nb: \"\"\nc:\n- it's\n- \"1\"\nd:\n  \"8080\": x\ne: plain\n"
        );
    }

    #[test]
    fn ages_print_as_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(s)), want);
        }
    }

    #[test]
    fn tables_pad_as_gos_tabwriter_with_kubectls_settings() {
        let t = tabwrite(&[
            vec!["NAME".into(), "A".into(), "AGE".into()],
            vec!["web-dest-rule".into(), "".into(), "5s".into()],
        ]);
        assert_eq!(t, "NAME            A     AGE\nweb-dest-rule         5s\n");
    }

    #[test]
    fn custom_column_specs_parse_and_refuse_as_kubectl() {
        let c = parse_columns("NAME:.metadata.name,HOST:spec.host").unwrap();
        assert_eq!(c[1].1.source(), "{.spec.host}");
        assert_eq!(
            parse_columns("NAME").unwrap_err().to_string(),
            "unexpected custom-columns spec: NAME, expected <header>:<json-path-expr>"
        );
    }
}
