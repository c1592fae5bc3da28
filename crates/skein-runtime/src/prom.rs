//! The one Prometheus HTTP API client of the CLI (`skein stat`, `edges`, `top`) and the
//! dashboard: instant queries (`/api/v1/query`) and range queries (`/api/v1/query_range`)
//! over [`http_get`](crate::http_get), the answers as plain rows, and the escaping every
//! label value goes through before it is put into PromQL.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::client::http_get;

/// One row of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The label's value, empty when the row has none.
    pub fn get(&self, label: &str) -> &str {
        self.labels.get(label).map_or("", String::as_str)
    }
}

/// One series of a range query: its labels and `(unix seconds, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// Why a query failed; every message names the server and the query.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("prometheus URL {0:?} is not http://IP:PORT")]
    BadUrl(String),
    #[error("prometheus at {url}: {query}: {reason}")]
    Query {
        url: String,
        query: String,
        reason: String,
    },
}

/// A Prometheus server on a loopback address.
#[derive(Debug, Clone)]
pub struct PromClient {
    addr: SocketAddr,
    url: String,
    /// A path prefix (`/prometheus`) before `/api/v1/...`; empty for most servers.
    prefix: String,
    timeout: Duration,
}

/// An instant query's answer, of whichever type the query gives.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Scalar(f64),
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
}

impl PromClient {
    /// A client of `url` (`http://IP:PORT`), each query bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<PromClient, PromError> {
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|_| PromError::BadUrl(url.to_string()))?;
        Ok(PromClient {
            addr,
            url: url.to_string(),
            prefix: String::new(),
            timeout,
        })
    }

    /// A client of the server at `addr` under the path `prefix` (empty, or `/prefix`), for a
    /// URL that named it some other way (`url`, shown in errors).
    pub fn at(addr: SocketAddr, prefix: &str, url: &str, timeout: Duration) -> PromClient {
        PromClient {
            addr,
            url: url.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
            timeout,
        }
    }

    /// An instant query at `time` (unix seconds), answered as a scalar, a vector or a matrix
    /// (Argo's Prometheus provider takes all three).
    pub async fn query_value(&self, promql: &str, time: f64) -> Result<QueryValue, PromError> {
        let path = format!("/api/v1/query?query={}&time={time:.3}", encode(promql));
        let data = self.get(promql, &path).await?;
        let parsed = match data["resultType"].as_str() {
            Some("scalar") => number(&data["result"][1])
                .map(QueryValue::Scalar)
                .ok_or_else(|| format!("a scalar without a number: {}", data["result"])),
            Some("matrix") => parse_matrix(&data).map(QueryValue::Matrix),
            _ => parse_vector(&data).map(QueryValue::Vector),
        };
        parsed.map_err(|reason| self.fail(promql, reason))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// An instant query's vector at `time` (unix seconds).
    pub async fn query(&self, promql: &str, time: f64) -> Result<Vec<Sample>, PromError> {
        let path = format!("/api/v1/query?query={}&time={time:.3}", encode(promql));
        let data = self.get(promql, &path).await?;
        parse_vector(&data).map_err(|reason| self.fail(promql, reason))
    }

    /// A range query's matrix from `start` to `end` every `step` seconds.
    pub async fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RangeSeries>, PromError> {
        let path = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
            encode(promql)
        );
        let data = self.get(promql, &path).await?;
        parse_matrix(&data).map_err(|reason| self.fail(promql, reason))
    }

    fn fail(&self, query: &str, reason: String) -> PromError {
        PromError::Query {
            url: self.url.clone(),
            query: query.to_string(),
            reason,
        }
    }

    async fn get(&self, promql: &str, path: &str) -> Result<serde_json::Value, PromError> {
        let path = format!("{}{path}", self.prefix);
        let (status, body) = http_get(self.addr, &path, self.timeout)
            .await
            .map_err(|e| self.fail(promql, e.to_string()))?;
        let mut v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.fail(promql, format!("HTTP {status}, not JSON: {e}")))?;
        if v["status"] != "success" {
            return Err(self.fail(promql, format!("HTTP {status}: {}", v["error"])));
        }
        Ok(v["data"].take())
    }
}

/// The rows of a Prometheus `data` object of result type `vector`.
pub fn parse_vector(data: &serde_json::Value) -> Result<Vec<Sample>, String> {
    if data["resultType"] != "vector" {
        return Err(format!("expected a vector, got {}", data["resultType"]));
    }
    let mut out = Vec::new();
    for r in data["result"].as_array().into_iter().flatten() {
        let value =
            number(&r["value"][1]).ok_or_else(|| format!("a sample without a number: {r}"))?;
        out.push(Sample {
            labels: labels(&r["metric"]),
            value,
        });
    }
    Ok(out)
}

/// The series of a Prometheus `data` object of result type `matrix`.
pub fn parse_matrix(data: &serde_json::Value) -> Result<Vec<RangeSeries>, String> {
    if data["resultType"] != "matrix" {
        return Err(format!("expected a matrix, got {}", data["resultType"]));
    }
    let mut out = Vec::new();
    for r in data["result"].as_array().into_iter().flatten() {
        let mut points = Vec::new();
        for p in r["values"].as_array().into_iter().flatten() {
            let (Some(t), Some(v)) = (p[0].as_f64(), number(&p[1])) else {
                return Err(format!("a point without a time and a number: {p}"));
            };
            points.push((t, v));
        }
        out.push(RangeSeries {
            labels: labels(&r["metric"]),
            points,
        });
    }
    Ok(out)
}

fn labels(metric: &serde_json::Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Prometheus writes sample values as strings (`"NaN"`, `"+Inf"` included).
fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_str().and_then(|s| s.parse::<f64>().ok())
}

/// A PromQL string literal's content: backslashes and double quotes escaped, so a value can
/// never end the literal it is put in.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query parameter.
pub fn encode(q: &str) -> String {
    let mut out = String::with_capacity(q.len() * 2);
    for b in q.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_and_matrices_parse() {
        let v = serde_json::json!({"resultType": "vector", "result": [
            {"metric": {"a": "1"}, "value": [10.5, "2.5"]},
        ]});
        let s = parse_vector(&v).unwrap();
        assert_eq!(s[0].get("a"), "1");
        assert_eq!(s[0].value, 2.5);
        assert!(parse_vector(&serde_json::json!({"resultType": "matrix"})).is_err());
        let m = serde_json::json!({"resultType": "matrix", "result": [
            {"metric": {"b": "x"}, "values": [[1.0, "1"], [2.0, "NaN"]]},
        ]});
        let r = parse_matrix(&m).unwrap();
        assert_eq!(r[0].points.len(), 2);
        assert!(r[0].points[1].1.is_nan());
        let bad = serde_json::json!({"resultType": "matrix", "result": [{"values": [["x", 1]]}]});
        assert!(parse_matrix(&bad).is_err());
    }

    #[test]
    fn a_value_cannot_leave_its_literal() {
        assert_eq!(
            escape_label(r#"a"} or vector(1) #"#),
            r#"a\"} or vector(1) #"#
        );
        assert_eq!(escape_label("a\\\"b\n"), "a\\\\\\\"b\\n");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
