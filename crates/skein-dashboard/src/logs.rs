//! A pod's container log, tailed from its file (bounded), each line with its severity and
//! time, and for the proxy's lines the access log entry parsed from Istio's default TEXT
//! format or its JSON format; the `code` and `flags` filters apply to those entries.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::{Map, Value as Json, json};

/// The most bytes read from the end of a log file.
pub const MAX_TAIL_BYTES: u64 = 4 * 1024 * 1024;
/// The longest line kept (longer ones are cut).
pub const MAX_LINE: usize = 16 * 1024;

/// The access log fields the page shows, by Istio's JSON names.
pub const FIELDS: [&str; 16] = [
    "method",
    "uri_path",
    "protocol",
    "response_code",
    "response_flags",
    "upstream_cluster",
    "upstream_host",
    "duration",
    "bytes_received",
    "bytes_sent",
    "request_id",
    "authority",
    "x_forwarded_for",
    "user_agent",
    "route_name",
    "timestamp",
];

/// Splits Istio's TEXT line into its fields: `[...]`, `"..."` and bare words.
fn tokens(line: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (tok, next) = if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            (&r[..end], &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"')?;
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        out.push(tok);
        rest = next.trim_start();
    }
    Some(out)
}

/// Istio's default TEXT format:
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
/// %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
/// "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
/// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
/// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER%
/// %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
/// %REQUESTED_SERVER_NAME% %ROUTE_NAME%`.
pub fn parse_text(line: &str) -> Option<Map<String, Json>> {
    if !line.starts_with('[') {
        return None;
    }
    let t = tokens(line)?;
    if t.len() < 17 {
        return None;
    }
    let ts = t[0];
    if time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_err() {
        return None;
    }
    let mut req = t[1].splitn(3, ' ');
    let (method, path, protocol) = (req.next()?, req.next()?, req.next()?);
    t[2].parse::<u16>().ok()?;
    let mut m = Map::new();
    let mut put = |k: &str, v: &str| {
        m.insert(k.to_string(), v.to_string().into());
    };
    put("timestamp", ts);
    put("method", method);
    put("uri_path", path);
    put("protocol", protocol);
    put("response_code", t[2]);
    put("response_flags", t[3]);
    put("response_code_details", t[4]);
    put("bytes_received", t[7]);
    put("bytes_sent", t[8]);
    put("duration", t[9]);
    put("x_forwarded_for", t[11]);
    put("user_agent", t[12]);
    put("request_id", t[13]);
    put("authority", t[14]);
    put("upstream_host", t[15]);
    put("upstream_cluster", t[16]);
    put("route_name", t.get(21).copied().unwrap_or("-"));
    Some(m)
}

/// Istio's JSON access log (`accessLogEncoding: JSON`): its keys, with `path` as `uri_path`
/// and `start_time` as `timestamp`; numbers are kept as text like the TEXT format's.
pub fn parse_json(line: &str) -> Option<Map<String, Json>> {
    if !line.starts_with('{') {
        return None;
    }
    let v: Map<String, Json> = serde_json::from_str(line).ok()?;
    if !v.contains_key("response_code") {
        return None;
    }
    let mut m = Map::new();
    for (k, val) in v {
        let key = match k.as_str() {
            "path" => "uri_path".to_string(),
            "start_time" => "timestamp".to_string(),
            _ => k,
        };
        let text = match val {
            Json::String(s) => s,
            Json::Null => "-".to_string(),
            other => other.to_string(),
        };
        m.insert(key, text.into());
    }
    Some(m)
}

pub fn parse_access_log(line: &str) -> Option<Map<String, Json>> {
    parse_text(line).or_else(|| parse_json(line))
}

/// Which entries to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// `503`, or a class `5xx`.
    pub code: Option<String>,
    /// A response flag such as `UF` (matches any of a comma-separated set).
    pub flags: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("code: {0:?} is not an HTTP status (200) or class (5xx)")]
    Code(String),
    #[error("flags: {0:?} is not an Envoy response flag (e.g. UF, UH, URX, NR, DC)")]
    Flags(String),
}

impl Filter {
    pub fn new(code: Option<&str>, flags: Option<&str>) -> Result<Filter, FilterError> {
        if let Some(c) = code {
            let b = c.as_bytes();
            let ok = b.len() == 3
                && (b'1'..=b'5').contains(&b[0])
                && ((b[1].is_ascii_digit() && b[2].is_ascii_digit()) || &c[1..] == "xx");
            if !ok {
                return Err(FilterError::Code(c.chars().take(20).collect()));
            }
        }
        if let Some(f) = flags
            && (f.is_empty() || f.len() > 8 || !f.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(FilterError::Flags(f.chars().take(20).collect()));
        }
        Ok(Filter {
            code: code.map(str::to_string),
            flags: flags.map(str::to_string),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.code.is_none() && self.flags.is_none()
    }

    pub fn matches(&self, entry: &Map<String, Json>) -> bool {
        if let Some(c) = &self.code {
            let got = entry
                .get("response_code")
                .and_then(Json::as_str)
                .unwrap_or("");
            let ok = if let Some(class) = c.strip_suffix("xx") {
                got.len() == 3 && got.starts_with(class)
            } else {
                got == c
            };
            if !ok {
                return false;
            }
        }
        if let Some(f) = &self.flags {
            let got = entry
                .get("response_flags")
                .and_then(Json::as_str)
                .unwrap_or("-");
            if !got.split(',').any(|g| g == f) {
                return false;
            }
        }
        true
    }
}

/// A line's severity: the level word of the proxy's and the apps' log lines, INFO else.
fn severity(line: &str) -> &'static str {
    for (word, sev) in [
        (" ERROR ", "ERROR"),
        (" WARN ", "WARN"),
        (" DEBUG ", "DEBUG"),
        (" TRACE ", "TRACE"),
        (" INFO ", "INFO"),
    ] {
        if line
            .get(..80.min(line.len()))
            .is_some_and(|h| h.contains(word))
        {
            return sev;
        }
    }
    "INFO"
}

/// The time at the start of a line (RFC 3339), if any.
fn line_time(line: &str) -> Option<String> {
    let head = line.trim_start_matches('[');
    let end = head.find([' ', ']'])?;
    let t = &head[..end];
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|_| t.to_string())
}

/// The last `tail` lines of `path` (reading at most [`MAX_TAIL_BYTES`] from its end).
pub fn tail(path: &Path, tail: usize) -> std::io::Result<Vec<String>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(MAX_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(MAX_TAIL_BYTES).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    let from = lines.len().saturating_sub(tail);
    Ok(lines[from..]
        .iter()
        .map(|l| {
            if l.len() > MAX_LINE {
                let mut end = MAX_LINE;
                while !l.is_char_boundary(end) {
                    end -= 1;
                }
                l[..end].to_string()
            } else {
                l.to_string()
            }
        })
        .collect())
}

/// The entries of `lines` newer than `since` (unix seconds), filtered.
pub fn entries(lines: &[String], since: Option<i64>, filter: &Filter) -> Json {
    let mut out = Vec::new();
    for l in lines {
        let access = parse_access_log(l);
        if !filter.is_empty() && !access.as_ref().is_some_and(|a| filter.matches(a)) {
            continue;
        }
        let ts = line_time(l).or_else(|| {
            access.as_ref().and_then(|a| {
                a.get("timestamp")
                    .and_then(Json::as_str)
                    .map(str::to_string)
            })
        });
        if let (Some(since), Some(ts)) = (since, &ts) {
            let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp())
                .unwrap_or(i64::MAX);
            if t < since {
                continue;
            }
        }
        let mut e = json!({"message": l, "severity": severity(l), "timestamp": ts});
        if let Some(a) = access {
            let mut m = Map::new();
            for k in FIELDS {
                m.insert(k.into(), a.get(k).cloned().unwrap_or_else(|| "-".into()));
            }
            e["accessLog"] = Json::Object(m);
        }
        out.push(e);
    }
    json!({"entries": out})
}

#[cfg(test)]
mod tests {
    use super::*;

    // A line as skein's proxy writes it (Istio's TEXT format).
    const TEXT: &str = r#"[2026-12-01T12:34:56.789Z] "GET /api/posts HTTP/1.1" 503 UF,URX upstream_reset_before_response_started{connection_failure} - "-" 0 91 12 - "-" "curl/8.5.0" "7d3c1e5e-0b7a-4c55-9d3e-1f0d3f4b2a11" "was-service:8080" "127.0.1.5:8080" outbound|8080||was-service.blog-system.svc.cluster.local 127.0.1.9:40312 127.0.1.9:15001 127.0.1.3:51234 - default"#;

    #[test]
    fn istios_text_format() {
        let m = parse_access_log(TEXT).unwrap();
        assert_eq!(m["method"], "GET");
        assert_eq!(m["uri_path"], "/api/posts");
        assert_eq!(m["protocol"], "HTTP/1.1");
        assert_eq!(m["response_code"], "503");
        assert_eq!(m["response_flags"], "UF,URX");
        assert_eq!(m["bytes_received"], "0");
        assert_eq!(m["bytes_sent"], "91");
        assert_eq!(m["duration"], "12");
        assert_eq!(m["user_agent"], "curl/8.5.0");
        assert_eq!(m["authority"], "was-service:8080");
        assert_eq!(m["upstream_host"], "127.0.1.5:8080");
        assert_eq!(
            m["upstream_cluster"],
            "outbound|8080||was-service.blog-system.svc.cluster.local"
        );
        assert_eq!(m["route_name"], "default");
        assert_eq!(m["timestamp"], "2026-12-01T12:34:56.789Z");
        // Not access log lines.
        assert!(parse_access_log("2026-12-01T12:34:56Z INFO skein_proxy: started").is_none());
        assert!(parse_access_log("[not a time] \"GET / HTTP/1.1\" 200").is_none());
        assert!(parse_access_log("[2026-12-01T12:34:56.789Z] \"GET").is_none());
    }

    #[test]
    fn istios_json_format() {
        let line = r#"{"authority":"web-service","bytes_received":0,"bytes_sent":512,"duration":3,"method":"GET","path":"/","protocol":"HTTP/1.1","request_id":"abc","response_code":200,"response_flags":"-","start_time":"2026-12-01T12:00:00.000Z","upstream_cluster":"inbound|8080||","upstream_host":null,"user_agent":"x","x_forwarded_for":null,"route_name":"default"}"#;
        let m = parse_access_log(line).unwrap();
        assert_eq!(m["response_code"], "200");
        assert_eq!(m["uri_path"], "/");
        assert_eq!(m["timestamp"], "2026-12-01T12:00:00.000Z");
        assert_eq!(m["upstream_host"], "-");
        assert!(parse_access_log(r#"{"level":"info"}"#).is_none());
    }

    #[test]
    fn filters_by_code_and_flags() {
        let ok = TEXT.replace("503 UF,URX", "200 -");
        let lines = vec![
            TEXT.to_string(),
            ok.clone(),
            "2026-12-01T12:00:00Z WARN x: y".to_string(),
        ];
        let all = entries(&lines, None, &Filter::default());
        assert_eq!(all["entries"].as_array().unwrap().len(), 3);
        assert_eq!(all["entries"][2]["severity"], "WARN");
        assert!(all["entries"][2].get("accessLog").is_none());
        assert_eq!(all["entries"][0]["accessLog"]["response_flags"], "UF,URX");
        let only = |code: Option<&str>, flags: Option<&str>| {
            entries(&lines, None, &Filter::new(code, flags).unwrap())["entries"]
                .as_array()
                .unwrap()
                .len()
        };
        assert_eq!(only(Some("503"), None), 1);
        assert_eq!(only(Some("5xx"), None), 1);
        assert_eq!(only(Some("2xx"), None), 1);
        assert_eq!(only(Some("404"), None), 0);
        assert_eq!(only(None, Some("UF")), 1);
        assert_eq!(only(None, Some("URX")), 1);
        assert_eq!(only(None, Some("UH")), 0);
        assert_eq!(only(Some("2xx"), Some("UF")), 0);
        assert!(Filter::new(Some("5x"), None).is_err());
        assert!(Filter::new(Some("abc"), None).is_err());
        assert!(Filter::new(None, Some("uf")).is_err());
        assert!(Filter::new(None, Some("U\"F")).is_err());
        // sinceTime drops older lines.
        let newer = entries(&lines, Some(1_900_000_000), &Filter::default());
        assert_eq!(newer["entries"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn the_tail_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let long = "y".repeat(MAX_LINE * 2);
        std::fs::write(&p, format!("a\nb\n{long}\nc\n")).unwrap();
        let t = tail(&p, 2).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].len(), MAX_LINE);
        assert_eq!(t[1], "c");
        assert_eq!(tail(&p, 100).unwrap().len(), 4);
    }
}
