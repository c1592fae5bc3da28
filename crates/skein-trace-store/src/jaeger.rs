//! Jaeger's query API as its UI and Grafana's Jaeger data source call it
//! (`jaegertracing/jaeger:cmd/query/app/http_handler.go`, `query_parser.go`,
//! `model/json/model.go`): the parameters, their defaults and error messages, and the JSON
//! of traces (µs times, a `processes` map keyed `p1`, `p2`, ..., `CHILD_OF` references,
//! typed tags) inside the `{data, total, limit, offset, errors}` envelope.

use base64::Engine as _;
use serde_json::{Value as Json, json};

use crate::model::{Span, SpanKind, Tag, TraceId, Value};
use crate::store::Query;

/// Jaeger's default number of traces per search.
pub const DEFAULT_LIMIT: usize = 100;
/// The most traces one search returns here (the UI offers up to 1500).
pub const MAX_LIMIT: usize = 10_000;
/// Searches look back two days unless `start` says otherwise.
pub const DEFAULT_LOOKBACK_US: u64 = 2 * 24 * 3600 * 1_000_000;
/// Dependencies look back a day unless `lookback` says otherwise.
pub const DEFAULT_DEPENDENCY_LOOKBACK_MS: u64 = 24 * 3600 * 1000;

/// A query string's pairs, in order (keys may repeat: `tag`, `traceID`).
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value, as Go's `FormValue` (empty when absent).
    pub fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What a trace search asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Search {
    /// `traceID=` parameters: those traces, whatever else is asked.
    Ids(Vec<TraceId>),
    Query(Query),
}

fn parse_error(param: &str, e: impl std::fmt::Display) -> String {
    format!("unable to parse param '{param}': {e}")
}

fn int(p: &Params, param: &str) -> Result<Option<i64>, String> {
    match p.get(param) {
        "" => Ok(None),
        v => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| parse_error(param, format!("{v:?} is not an integer"))),
    }
}

/// A Go duration string (`time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, `0`) in µs.
pub fn parse_go_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        total_ns += n * scale;
        rest = next;
    }
    if total_ns > 9.3e18 {
        return Err(format!("time: invalid duration {s:?}"));
    }
    Ok(if neg { 0 } else { (total_ns / 1000.0) as u64 })
}

fn duration(p: &Params, param: &str) -> Result<Option<u64>, String> {
    match p.get(param) {
        "" => Ok(None),
        v => parse_go_duration(v)
            .map(Some)
            .map_err(|e| parse_error(param, e)),
    }
}

/// `tag=k:v` (repeatable) and `tags={"k":"v"}` (JSON), as Jaeger parses them.
fn tags(p: &Params) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: String, v: String| {
        out.retain(|(key, _)| *key != k);
        out.push((k, v));
    };
    for t in p.all("tag") {
        match t.split_once(':') {
            Some((k, v)) => put(k.to_string(), v.to_string()),
            None => {
                return Err(format!(
                    "malformed 'tag' parameter, expecting key:value, received: {t}"
                ));
            }
        }
    }
    for t in p.all("tags") {
        let m: std::collections::BTreeMap<String, String> = serde_json::from_str(t)
            .map_err(|e| format!("malformed 'tags' parameter, cannot unmarshal JSON: {e}"))?;
        for (k, v) in m {
            put(k, v);
        }
    }
    Ok(out)
}

/// `GET /api/traces`'s parameters.
pub fn parse_search(p: &Params, now_us: u64) -> Result<Search, String> {
    let start = int(p, "start")?;
    let end = int(p, "end")?;
    let tags = tags(p)?;
    let limit = match int(p, "limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if n <= 0 => DEFAULT_LIMIT,
        Some(n) => (n as u64).min(MAX_LIMIT as u64) as usize,
    };
    let min = duration(p, "minDuration")?;
    let max = duration(p, "maxDuration")?;
    let mut ids = Vec::new();
    for id in p.all("traceID") {
        ids.push(TraceId::parse_hex(id).map_err(|e| format!("cannot parse traceID param: {e}"))?);
    }
    if !ids.is_empty() {
        return Ok(Search::Ids(ids));
    }
    let service = p.get("service");
    if service.is_empty() {
        return Err("parameter 'service' is required".into());
    }
    if let (Some(a), Some(b)) = (min, max)
        && a != 0
        && b != 0
        && b < a
    {
        return Err("'maxDuration' should be greater than 'minDuration'".into());
    }
    let us = |v: Option<i64>, default: u64| v.map_or(default, |v| v.max(0) as u64);
    Ok(Search::Query(Query {
        service: service.to_string(),
        operation: Some(p.get("operation"))
            .filter(|o| !o.is_empty())
            .map(String::from),
        tags,
        start_min_us: us(start, now_us.saturating_sub(DEFAULT_LOOKBACK_US)),
        start_max_us: us(end, now_us),
        duration_min_us: min.filter(|d| *d > 0),
        duration_max_us: max.filter(|d| *d > 0),
        limit,
    }))
}

/// `GET /api/dependencies`'s `endTs` and `lookback` (ms), as µs.
pub fn parse_dependencies(p: &Params, now_us: u64) -> Result<(u64, u64), String> {
    let end = int(p, "endTs")?.map_or(now_us, |ms| (ms.max(0) as u64).saturating_mul(1000));
    let lookback = int(p, "lookback")?
        .map_or(DEFAULT_DEPENDENCY_LOOKBACK_MS, |ms| ms.max(0) as u64)
        .saturating_mul(1000);
    Ok((end, lookback))
}

/// `spanKind=` of `/api/operations`: Jaeger's names (`server`, `client`, ...); empty is all.
pub fn parse_span_kind(s: &str) -> Result<Option<SpanKind>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    SpanKind::parse(s)
        .map(Some)
        .ok_or_else(|| format!("unsupported span kind: '{s}'"))
}

/// The envelope around every reply.
pub fn envelope(data: Json, total: usize) -> Json {
    json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null})
}

/// The envelope of an error reply.
pub fn error(code: u16, msg: &str) -> Json {
    json!({"data": null, "total": 0, "limit": 0, "offset": 0,
           "errors": [{"code": code, "msg": msg}]})
}

fn kv(t: &Tag) -> Json {
    let (ty, value) = match &t.value {
        Value::Str(s) => ("string", Json::from(s.as_str())),
        Value::Bool(b) => ("bool", Json::from(*b)),
        Value::Int(i) => ("int64", Json::from(*i)),
        Value::Float(f) => ("float64", Json::from(*f)),
        Value::Binary(b) => (
            "binary",
            Json::from(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    };
    json!({"key": t.key, "type": ty, "value": value})
}

/// One trace in Jaeger's JSON. Spans are sorted by start time; processes are numbered in
/// order of first appearance.
pub fn trace_json(spans: &[Span]) -> Json {
    let mut sorted: Vec<&Span> = spans.iter().collect();
    sorted.sort_by_key(|s| (s.start_us, s.span_id));
    let mut processes: Vec<(&str, &[Tag])> = Vec::new();
    let trace_id = sorted
        .first()
        .map(|s| s.trace_id.to_string())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(sorted.len());
    for s in &sorted {
        // A process is a service with its tags; a trace has few of them.
        let idx = match processes
            .iter()
            .position(|(svc, tags)| *svc == s.service && *tags == &s.process_tags[..])
        {
            Some(i) => i,
            None => {
                processes.push((&s.service, &s.process_tags));
                processes.len() - 1
            }
        };
        let mut references: Vec<Json> = Vec::new();
        if let Some(p) = s.parent_id {
            references.push(
                json!({"refType": "CHILD_OF", "traceID": s.trace_id.to_string(),
                                   "spanID": format!("{p:016x}")}),
            );
        }
        for l in &s.links {
            references.push(
                json!({"refType": "FOLLOWS_FROM", "traceID": l.trace_id.to_string(),
                                   "spanID": format!("{:016x}", l.span_id)}),
            );
        }
        out.push(json!({
            "traceID": s.trace_id.to_string(),
            "spanID": format!("{:016x}", s.span_id),
            "flags": s.flags,
            "operationName": s.name,
            "references": references,
            "startTime": s.start_us,
            "duration": s.duration_us,
            "tags": s.tags.iter().map(kv).collect::<Vec<_>>(),
            "logs": s.logs.iter().map(|l| json!({
                "timestamp": l.timestamp_us,
                "fields": l.fields.iter().map(kv).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "processID": format!("p{}", idx + 1),
            "warnings": null,
        }));
    }
    let processes: serde_json::Map<String, Json> = processes
        .iter()
        .enumerate()
        .map(|(i, (svc, tags))| {
            (
                format!("p{}", i + 1),
                json!({"serviceName": svc, "tags": tags.iter().map(kv).collect::<Vec<_>>()}),
            )
        })
        .collect();
    json!({"traceID": trace_id, "spans": out, "processes": processes, "warnings": null})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::span;

    fn params(q: &str) -> Params {
        Params::parse(Some(q))
    }

    fn query(q: &str) -> Query {
        match parse_search(&params(q), 1_000_000_000_000).unwrap() {
            Search::Query(q) => q,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("500ms").unwrap(), 500_000);
        assert_eq!(parse_go_duration("1.5s").unwrap(), 1_500_000);
        assert_eq!(
            parse_go_duration("2h45m").unwrap(),
            (2 * 3600 + 45 * 60) * 1_000_000
        );
        assert_eq!(parse_go_duration("10us").unwrap(), 10);
        assert_eq!(parse_go_duration("10µs").unwrap(), 10);
        assert_eq!(parse_go_duration("1500ns").unwrap(), 1);
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        for bad in ["", "5", "ms", "5x", "1.2.3s", "-", "99999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn search_parameters_as_jaeger_parses_them() {
        let q = query("service=web");
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert_eq!(q.start_max_us, 1_000_000_000_000);
        assert_eq!(q.start_min_us, 1_000_000_000_000 - DEFAULT_LOOKBACK_US);
        assert_eq!(
            (q.operation, q.duration_min_us, q.duration_max_us),
            (None, None, None)
        );
        let q = query(
            "service=web&operation=GET%20%2F&start=5&end=9&limit=3&minDuration=1ms&maxDuration=2s\
             &tag=http.status_code:500&tag=url:http://x&tags=%7B%22error%22%3A%22true%22%7D",
        );
        assert_eq!(q.operation.as_deref(), Some("GET /"));
        assert_eq!((q.start_min_us, q.start_max_us, q.limit), (5, 9, 3));
        assert_eq!(
            (q.duration_min_us, q.duration_max_us),
            (Some(1000), Some(2_000_000))
        );
        assert_eq!(
            q.tags,
            vec![
                ("http.status_code".to_string(), "500".to_string()),
                ("url".into(), "http://x".into()),
                ("error".into(), "true".into())
            ]
        );
        let err = |q: &str| parse_search(&params(q), 0).unwrap_err();
        assert_eq!(err(""), "parameter 'service' is required");
        assert!(err("service=a&start=x").starts_with("unable to parse param 'start'"));
        assert!(err("service=a&limit=1.5").starts_with("unable to parse param 'limit'"));
        assert!(err("service=a&minDuration=5").starts_with("unable to parse param 'minDuration'"));
        assert_eq!(
            err("service=a&minDuration=2s&maxDuration=1s"),
            "'maxDuration' should be greater than 'minDuration'"
        );
        assert!(err("service=a&tag=novalue").starts_with("malformed 'tag' parameter"));
        assert!(err("service=a&tags=%5B%5D").starts_with("malformed 'tags' parameter"));
        assert!(err("traceID=xyz").starts_with("cannot parse traceID param"));
        assert_eq!(
            parse_search(&params("traceID=1&traceID=ab"), 0).unwrap(),
            Search::Ids(vec![TraceId(1), TraceId(0xab)])
        );
        assert_eq!(query("service=a&limit=0").limit, DEFAULT_LIMIT);
        assert_eq!(query("service=a&limit=999999").limit, MAX_LIMIT);
        assert_eq!(
            parse_dependencies(&params("endTs=2000&lookback=500"), 0).unwrap(),
            (2_000_000, 500_000)
        );
        assert_eq!(
            parse_dependencies(&params(""), 7).unwrap(),
            (7, DEFAULT_DEPENDENCY_LOOKBACK_MS * 1000)
        );
        assert_eq!(parse_span_kind("server").unwrap(), Some(SpanKind::Server));
        assert!(parse_span_kind("sideways").is_err());
    }

    #[test]
    fn trace_json_has_jaegers_shape() {
        let mut child = span(1, 2, Some(1), "was", "SELECT");
        child.tags.push(Tag {
            key: "rows".into(),
            value: Value::Int(3),
        });
        child.tags.push(Tag {
            key: "error".into(),
            value: Value::Bool(true),
        });
        let t = trace_json(&[child, span(1, 1, None, "web", "GET /")]);
        assert_eq!(t["traceID"], "0000000000000001");
        assert_eq!(
            t["spans"][0]["spanID"], "0000000000000001",
            "sorted by start"
        );
        assert_eq!(t["spans"][0]["references"], json!([]));
        assert_eq!(t["spans"][0]["processID"], "p1");
        assert_eq!(
            t["spans"][1]["references"],
            json!([{"refType": "CHILD_OF", "traceID": "0000000000000001", "spanID": "0000000000000001"}])
        );
        assert_eq!(t["spans"][1]["processID"], "p2");
        assert_eq!(
            t["spans"][1]["tags"][1],
            json!({"key": "rows", "type": "int64", "value": 3})
        );
        assert_eq!(
            t["spans"][1]["tags"][2],
            json!({"key": "error", "type": "bool", "value": true})
        );
        assert_eq!(t["processes"]["p1"]["serviceName"], "web");
        assert_eq!(
            t["processes"]["p2"],
            json!({"serviceName": "was", "tags": [{"key": "hostname", "type": "string", "value": "h"}]})
        );
        assert_eq!(t["spans"][1]["startTime"], 1_000_000 + 1000 + 2);
        assert_eq!(envelope(json!([]), 0)["errors"], Json::Null);
        assert_eq!(error(404, "trace not found")["errors"][0]["code"], 404);
    }
}
