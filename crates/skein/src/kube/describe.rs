//! `kubectl describe`'s generic form: Name, Namespace, Labels, Annotations, then every field
//! with kubectl's labels ("Per Try Timeout"), then the Events the control plane recorded.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use skein_control::events::{Event, object_key};

use super::objects::Object;
use super::print::{go_value, human_duration, tabwrite_with};

/// kubectl's `smartLabelFor`: camelCase split into title-cased words, common acronyms upper
/// case; names with characters other than letters and `-` stay as they are.
pub fn smart_label(field: &str) -> String {
    if field.chars().any(|c| !c.is_alphabetic() && c != '-') {
        return field.to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let class = |c: char| {
        if c.is_lowercase() {
            0
        } else if c.is_uppercase() {
            1
        } else {
            2
        }
    };
    // fatih/camelcase: split at each change of character class, then move the last upper
    // case letter of a run of capitals to the lower case word that follows it.
    let mut runs: Vec<String> = Vec::new();
    let mut last = None;
    for c in field.chars() {
        let k = class(c);
        if Some(k) != last && !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
        current.push(c);
        last = Some(k);
    }
    if !current.is_empty() {
        runs.push(current);
    }
    for i in 0..runs.len().saturating_sub(1) {
        let upper = runs[i].chars().all(char::is_uppercase);
        let lower_next = runs[i + 1].chars().all(char::is_lowercase);
        if upper && lower_next && !runs[i].is_empty() {
            let moved = runs[i].pop();
            if let Some(m) = moved {
                runs[i + 1].insert(0, m);
            }
        }
    }
    for r in runs.into_iter().filter(|r| !r.is_empty()) {
        let upper = r.to_uppercase();
        if ["API", "URL", "UID", "OSB", "GUID"].contains(&upper.as_str()) {
            parts.push(upper);
        } else {
            let mut cs = r.chars();
            let title: String = cs
                .next()
                .map(|f| f.to_uppercase().chain(cs).collect())
                .unwrap_or_default();
            parts.push(title);
        }
    }
    parts.join(" ")
}

/// Rows of (indented label cell, value) or a lone label line, as kubectl's
/// `printUnstructuredContent` writes them.
fn content(
    level: usize,
    map: &serde_json::Map<String, Value>,
    prefix: &str,
    skip: &[&str],
    rows: &mut Vec<Vec<String>>,
) {
    let indent = "  ".repeat(level);
    for (field, value) in map {
        let path = format!("{prefix}.{field}");
        if skip.contains(&path.as_str()) {
            continue;
        }
        match value {
            Value::Object(m) => {
                rows.push(vec![format!("{indent}{}:", smart_label(field))]);
                content(level + 1, m, &path, skip, rows);
            }
            Value::Array(items) => {
                rows.push(vec![format!("{indent}{}:", smart_label(field))]);
                for item in items {
                    match item {
                        Value::Object(m) => content(level + 1, m, &path, skip, rows),
                        other => rows.push(vec![format!("{indent}  {}", go_value(other))]),
                    }
                }
            }
            other => rows.push(vec![
                format!("{indent}{}:", smart_label(field)),
                go_value(other),
            ]),
        }
    }
}

fn multiline(
    title: &str,
    map: &std::collections::BTreeMap<String, String>,
    sep: &str,
    rows: &mut Vec<Vec<String>>,
) {
    if map.is_empty() {
        rows.push(vec![format!("{title}:"), "<none>".into()]);
        return;
    }
    for (i, (k, v)) in map.iter().enumerate() {
        let v = if sep == ": " && v.chars().count() > 140 {
            format!("{}...", v.chars().take(137).collect::<String>())
        } else {
            v.clone()
        };
        let head = if i == 0 {
            format!("{title}:")
        } else {
            String::new()
        };
        rows.push(vec![head, format!("{k}{sep}{v}")]);
    }
}

/// The events of `o`: those that name it, the pushes and acks of the versions that changed
/// it, and refusals whose errors name it. The newest 30, oldest first.
pub fn events_for<'a>(o: &Object, events: &'a [Event]) -> Vec<&'a Event> {
    // Versions count from 1 again at each start of the control plane: only this run's.
    let start = events
        .iter()
        .rposition(|e| e.message.contains(" at start"))
        .unwrap_or(0);
    let events = &events[start..];
    let key = object_key(o.kind.kind, o.namespace(), o.name());
    let label = if o.kind.namespaced {
        format!("{} {}/{}", o.kind.kind, o.namespace(), o.name())
    } else {
        format!("{} {}", o.kind.kind, o.name())
    };
    let versions: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.objects.contains(&key))
        .filter_map(|e| e.version.as_deref())
        .collect();
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.objects.contains(&key)
                || (e.objects.is_empty()
                    && e.version.as_deref().is_some_and(|v| versions.contains(v))
                    && e.reason != "Applied")
                || (e.reason == "Refused" && e.message.contains(&label))
        })
        .collect();
    mine[mine.len().saturating_sub(30)..].to_vec()
}

/// Consecutive acks of one version as one line (`acked by 3 pods: a, b, c`), as kubectl
/// folds repeated events.
pub fn fold_acks(events: &[&Event]) -> Vec<Event> {
    let mut out: Vec<(Event, Vec<String>)> = Vec::new();
    for e in events {
        let pod = e
            .message
            .rsplit_once(" acked by pod ")
            .map(|(_, p)| p.to_string());
        if let (Some(pod), Some((last, pods))) = (&pod, out.last_mut())
            && e.reason == "Acked"
            && last.reason == "Acked"
            && last.version == e.version
        {
            pods.push(pod.clone());
            last.at = e.at.clone();
            continue;
        }
        out.push(((*e).clone(), pod.into_iter().collect()));
    }
    out.into_iter()
        .map(|(mut e, pods)| {
            if pods.len() > 1 {
                e.message = format!(
                    "config version {} acked by {} pods: {}",
                    e.version.as_deref().unwrap_or("?"),
                    pods.len(),
                    pods.join(", ")
                );
            }
            e
        })
        .collect()
}

fn age(at: &str, now: SystemTime) -> String {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
        .map(|t| human_duration(now.duration_since(t).unwrap_or_default()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// One object, described.
pub fn describe(o: &Object, events: &[&Event], now: SystemTime) -> String {
    let events = fold_acks(events);
    let mut rows: Vec<Vec<String>> = vec![vec!["Name:".into(), o.name().into()]];
    if o.kind.namespaced {
        rows.push(vec!["Namespace:".into(), o.namespace().into()]);
    }
    multiline("Labels", &o.labels(), "=", &mut rows);
    let annotations = super::objects::string_map(o.value.pointer("/metadata/annotations"));
    multiline("Annotations", &annotations, ": ", &mut rows);
    if let Value::Object(m) = &o.value {
        content(
            0,
            m,
            "",
            &[
                ".metadata.managedFields",
                ".metadata.name",
                ".metadata.namespace",
                ".metadata.labels",
                ".metadata.annotations",
            ],
            &mut rows,
        );
    }
    if events.is_empty() {
        rows.push(vec!["Events:".into(), "<none>".into()]);
    } else {
        rows.push(vec!["Events:".into()]);
        rows.push(
            ["  Type", "Reason", "Age", "From", "Message"]
                .map(String::from)
                .to_vec(),
        );
        rows.push(
            ["  ----", "------", "----", "----", "-------"]
                .map(String::from)
                .to_vec(),
        );
        for e in events {
            rows.push(vec![
                format!("  {}", e.kind),
                e.reason.clone(),
                age(&e.at, now),
                if e.objects.iter().any(|k| k.starts_with("Application/")) {
                    "argocd-application-controller".into()
                } else {
                    "istiod".into()
                },
                e.message.trim().to_string(),
            ]);
        }
    }
    tabwrite_with(&rows, 0, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_kubectl_makes_them() {
        for (field, want) in [
            ("apiVersion", "API Version"),
            ("perTryTimeout", "Per Try Timeout"),
            ("http", "Http"),
            ("x-canary-test", "X - Canary - Test"),
            ("maxRequestsPerConnection", "Max Requests Per Connection"),
            ("http1MaxPendingRequests", "http1MaxPendingRequests"),
            ("trafficPolicy", "Traffic Policy"),
            ("app.kubernetes.io/name", "app.kubernetes.io/name"),
            ("uid", "UID"),
            ("consecutive5xxErrors", "consecutive5xxErrors"),
        ] {
            assert_eq!(smart_label(field), want, "{field}");
        }
    }
}
