//! What the dashboard parses from outside: access-log lines from a pod's proxy (Istio's TEXT
//! format or JSON, any bytes a workload or a forged header could put in them) and the query
//! parameters a caller sends (durations, namespaces, log filters).
//!
//! Invariants: nothing panics; a parsed access log is a flat map of strings; the entries
//! listing of the lines is JSON with at most one entry per line; a duration that parses is
//! within Kiali's bounds (1 s to 1 day); a namespace that passes is a DNS-1123 label, so it
//! can never carry a quote or a brace into PromQL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_dashboard::logs::{Filter, entries, parse_access_log};
use skein_dashboard::params::{is_dns1123_label, parse_duration};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text.lines().take(64).map(str::to_string).collect();
    for line in &lines {
        if let Some(m) = parse_access_log(line) {
            assert!(m.values().all(|v| v.is_string()), "{line:?} -> {m:?}");
        }
    }
    let (a, b) = text.split_once('\u{0}').unwrap_or((&text, ""));
    if let Ok(f) = Filter::new(Some(a).filter(|s| !s.is_empty()), Some(b).filter(|s| !s.is_empty())) {
        let out = entries(&lines, None, &f);
        let n = out["entries"].as_array().map_or(0, Vec::len);
        assert!(n <= lines.len(), "{n} entries from {} lines", lines.len());
    }
    if let Some(secs) = parse_duration(a) {
        assert!((1..=86_400).contains(&secs), "{a:?} -> {secs}");
    }
    if is_dns1123_label(a) {
        assert!(
            a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
            "{a:?}"
        );
    }
});
