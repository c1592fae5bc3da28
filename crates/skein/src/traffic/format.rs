//! The outputs of `skein stat`, `skein edges` and `skein top`: linkerd viz's columns and
//! number formats (`100.00%`, `2.0rps`, `12ms`), `-` where there is no value.

use super::{EdgeRow, Origin, StatRow, TopRow};
use crate::table::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Wide,
}

fn dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

pub fn success(v: Option<f64>) -> String {
    dash(v, |v| format!("{:.2}%", v * 100.0))
}

pub fn rps(v: Option<f64>) -> String {
    dash(v, |v| format!("{v:.1}rps"))
}

/// Milliseconds: whole ones from 10 ms up, one decimal below (the proxies' histograms start
/// at 0.5 ms).
pub fn ms(v: Option<f64>) -> String {
    dash(v, |v| {
        // 9.96 is "10ms", not "10.0ms".
        if v >= 9.95 {
            format!("{v:.0}ms")
        } else {
            format!("{v:.1}ms")
        }
    })
}

pub fn bytes_per_sec(v: Option<f64>) -> String {
    dash(v, |v| {
        if v >= 1024.0 * 1024.0 {
            format!("{:.1}MiB/s", v / (1024.0 * 1024.0))
        } else if v >= 1024.0 {
            format!("{:.1}KiB/s", v / 1024.0)
        } else {
            format!("{v:.1}B/s")
        }
    })
}

fn count(v: Option<f64>) -> String {
    dash(v, |v| format!("{:.0}", v))
}

/// `skein stat`.
pub fn stat(rows: &[StatRow], origin: &Origin, format: Format, namespace_column: bool) -> String {
    if format == Format::Json {
        return json(origin, rows);
    }
    if rows.is_empty() {
        return "No traffic found.\n".into();
    }
    let mut headers = vec![];
    if namespace_column {
        headers.push("NAMESPACE");
    }
    headers.extend([
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ]);
    if format == Format::Wide {
        headers.extend(["READ_BYTES/SEC", "WRITE_BYTES/SEC"]);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![];
            if namespace_column {
                row.push(r.namespace.clone());
            }
            row.extend([
                r.name.clone(),
                dash(r.meshed.as_ref(), |m| format!("{}/{}", m.meshed, m.total)),
                success(r.success),
                rps(r.rps),
                ms(r.latency_ms_p50),
                ms(r.latency_ms_p95),
                ms(r.latency_ms_p99),
                count(r.tcp_open_connections),
            ]);
            if format == Format::Wide {
                row.push(bytes_per_sec(r.tcp_read_bytes_per_sec));
                row.push(bytes_per_sec(r.tcp_write_bytes_per_sec));
            }
            row
        })
        .collect();
    render(&headers, &table)
}

fn json<T: serde::Serialize>(origin: &Origin, rows: &[T]) -> String {
    let mut v = serde_json::to_value(origin).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "rows".into(),
            serde_json::to_value(rows).unwrap_or_default(),
        );
    }
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn secured(v: Option<bool>) -> String {
    match v {
        Some(true) => "√".into(),
        Some(false) => "×".into(),
        None => "-".into(),
    }
}

/// `skein edges`.
pub fn edges(rows: &[EdgeRow], origin: &Origin, format: Format) -> String {
    if format == Format::Json {
        return json(origin, rows);
    }
    if rows.is_empty() {
        return "No edges found.\n".into();
    }
    let mut headers = vec!["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"];
    if format == Format::Wide {
        headers.extend(["CLIENT_ID", "SERVER_ID"]);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.src.clone(),
                r.dst.clone(),
                r.src_namespace.clone(),
                r.dst_namespace.clone(),
                secured(r.secured),
            ];
            if format == Format::Wide {
                row.push(r.client_id.clone());
                row.push(r.server_id.clone());
            }
            row
        })
        .collect();
    render(&headers, &table)
}

/// `skein top`.
pub fn top(rows: &[TopRow], origin: &Origin, format: Format) -> String {
    if format == Format::Json {
        return json(origin, rows);
    }
    if rows.is_empty() {
        return "No traffic found.\n".into();
    }
    let wide = format == Format::Wide;
    let mut headers = vec!["SRC", "DST"];
    if wide {
        headers.extend(["SRC_NS", "DST_NS"]);
    }
    headers.extend([
        "PROTO",
        "COUNT",
        "RPS",
        "SUCCESS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
    ]);
    if wide {
        headers.extend(["TCP_REQ/SEC", "TCP_RESP/SEC"]);
    } else {
        headers.push("TCP_BYTES/SEC");
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![r.src.clone(), r.dst.clone()];
            if wide {
                row.push(r.src_namespace.clone());
                row.push(r.dst_namespace.clone());
            }
            row.extend([
                r.protocol.clone(),
                count(r.count),
                rps(r.rps),
                success(r.success),
                ms(r.latency_ms_p50),
                ms(r.latency_ms_p95),
                ms(r.latency_ms_p99),
            ]);
            if wide {
                row.push(bytes_per_sec(r.tcp_request_bytes_per_sec));
                row.push(bytes_per_sec(r.tcp_response_bytes_per_sec));
            } else {
                let total = match (r.tcp_request_bytes_per_sec, r.tcp_response_bytes_per_sec) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
                };
                row.push(bytes_per_sec(total));
            }
            row
        })
        .collect();
    render(&headers, &table)
}
