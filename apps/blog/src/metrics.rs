//! The blog's own metrics in Prometheus's text format, named as the seed's Spring Boot
//! services exposed them on `/actuator/prometheus` (Micrometer): requests as
//! `http_server_requests_seconds` (a summary: `_count` and `_sum` per method, route
//! template, status, outcome and exception) and the database pool as `hikaricp_connections*`
//! (pool `HikariPool-1`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Prometheus's text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a connection pool holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub active: u32,
    pub idle: u32,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    method: String,
    uri: String,
    status: u16,
}

/// Request counts and times, by method, route and status.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<Key, (u64, f64)>>,
}

/// Micrometer's `outcome` tag.
fn outcome(status: u16) -> &'static str {
    match status {
        100..=199 => "INFORMATIONAL",
        200..=299 => "SUCCESS",
        300..=399 => "REDIRECTION",
        400..=499 => "CLIENT_ERROR",
        500..=599 => "SERVER_ERROR",
        _ => "UNKNOWN",
    }
}

/// A label value in the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl HttpMetrics {
    /// Records one request; `uri` is the route template (`/api/posts/{id}`), or `UNKNOWN`
    /// for a request no route matched (as Micrometer, so that paths do not explode the
    /// series).
    pub fn record(&self, method: &str, uri: &str, status: u16, took: Duration) {
        let key = Key {
            method: method.to_string(),
            uri: uri.to_string(),
            status,
        };
        if let Ok(mut m) = self.requests.lock() {
            let e = m.entry(key).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += took.as_secs_f64();
        }
    }

    /// The exposition: the requests, then the pool when there is one.
    pub fn render(&self, pool: Option<PoolStats>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP http_server_requests_seconds Duration of HTTP server request handling\n",
        );
        out.push_str("# TYPE http_server_requests_seconds summary\n");
        let requests = self.requests.lock().map(|m| m.clone()).unwrap_or_default();
        for (k, (count, sum)) in &requests {
            let labels = format!(
                "exception=\"none\",method=\"{}\",outcome=\"{}\",status=\"{}\",uri=\"{}\"",
                escape(&k.method),
                outcome(k.status),
                k.status,
                escape(&k.uri)
            );
            let _ = writeln!(
                out,
                "http_server_requests_seconds_count{{{labels}}} {count}"
            );
            let _ = writeln!(out, "http_server_requests_seconds_sum{{{labels}}} {sum}");
        }
        if let Some(p) = pool {
            for (name, help, v) in [
                (
                    "hikaricp_connections_active",
                    "Active connections",
                    p.active,
                ),
                ("hikaricp_connections_idle", "Idle connections", p.idle),
                (
                    "hikaricp_connections",
                    "Total connections",
                    p.active + p.idle,
                ),
                ("hikaricp_connections_max", "Max connections", p.max),
            ] {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{pool=\"HikariPool-1\"}} {v}\n"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_the_pool_render_as_micrometer_names_them() {
        let m = HttpMetrics::default();
        m.record("GET", "/api/posts", 200, Duration::from_millis(250));
        m.record("GET", "/api/posts", 200, Duration::from_millis(750));
        m.record("GET", "/api/posts/{id}", 404, Duration::from_millis(5));
        m.record("POST", "/api/\"x\"", 500, Duration::from_millis(1));
        let text = m.render(Some(PoolStats {
            active: 1,
            idle: 4,
            max: 10,
        }));
        assert!(text.contains(
            "http_server_requests_seconds_count{exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/posts\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "http_server_requests_seconds_sum{exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/posts\"} 1\n"
        ), "{text}");
        assert!(
            text.contains("outcome=\"CLIENT_ERROR\",status=\"404\",uri=\"/api/posts/{id}\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("uri=\"/api/\\\"x\\\"\""), "escaped: {text}");
        assert!(text.contains("hikaricp_connections_active{pool=\"HikariPool-1\"} 1\n"));
        assert!(text.contains("hikaricp_connections{pool=\"HikariPool-1\"} 5\n"));
        assert!(text.contains("hikaricp_connections_max{pool=\"HikariPool-1\"} 10\n"));
        assert!(!HttpMetrics::default().render(None).contains("hikaricp"));
    }
}
