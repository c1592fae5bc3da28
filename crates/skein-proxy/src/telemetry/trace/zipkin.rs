//! Zipkin v2 JSON (`POST /api/v2/spans`, a JSON array of spans), as Envoy's reporter sends
//! it for Istio: 128-bit trace ids unless the id came in with 64 bits, `shared: false`,
//! `localEndpoint` with the service name and the pod's address, timestamps in µs.

use std::io::Write as _;

use super::context::{hex64, push_hex64};
use super::span::{Kind, Span};

/// The request body for `spans`. Written directly rather than through serde: tag values
/// are plain text almost always, and a per-span serializer costs more than the request the
/// span describes.
pub(crate) fn encode(spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.len() * 1024);
    out.push(b'[');
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        span(&mut out, s);
    }
    out.push(b']');
    out
}

fn span(out: &mut Vec<u8>, s: &Span) {
    out.extend_from_slice(b"{\"traceId\":\"");
    if s.trace_id.high != 0 {
        push_hex64(out, s.trace_id.high);
    }
    push_hex64(out, s.trace_id.low);
    out.extend_from_slice(b"\",\"id\":\"");
    out.extend_from_slice(&hex64(s.id));
    out.push(b'"');
    if let Some(p) = s.parent {
        out.extend_from_slice(b",\"parentId\":\"");
        out.extend_from_slice(&hex64(p));
        out.push(b'"');
    }
    out.extend_from_slice(b",\"name\":");
    string(out, &s.name);
    out.extend_from_slice(match s.kind {
        Kind::Client => b",\"kind\":\"CLIENT\"",
        Kind::Server => b",\"kind\":\"SERVER\"",
    });
    let _ = write!(
        out,
        ",\"timestamp\":{},\"duration\":{}",
        s.start_us,
        s.duration_us.max(1)
    );
    if s.debug {
        out.extend_from_slice(b",\"debug\":true");
    }
    out.extend_from_slice(b",\"localEndpoint\":{\"serviceName\":");
    string(out, &s.service);
    match s.local_ip {
        Some(ip @ std::net::IpAddr::V4(_)) => {
            let _ = write!(out, ",\"ipv4\":\"{ip}\"");
        }
        Some(ip @ std::net::IpAddr::V6(_)) => {
            let _ = write!(out, ",\"ipv6\":\"{ip}\"");
        }
        None => {}
    }
    out.extend_from_slice(b"},\"tags\":{");
    for (i, (k, v)) in s.tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.extend_from_slice(b"}}");
}

/// A JSON string: plain text is copied as is; quotes, backslashes and control characters
/// are escaped.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut plain = true;
    for &c in b {
        if c < 0x20 || c == b'"' || c == b'\\' {
            plain = false;
            break;
        }
    }
    if plain {
        out.extend_from_slice(b);
    } else {
        for &c in b {
            match c {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                c if c < 0x20 => {
                    let _ = write!(out, "\\u{c:04x}");
                }
                c => out.push(c),
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::telemetry::trace::context::TraceId;
    use std::sync::Arc;

    /// The span of zipkin-api's example (`zipkin2-api.yaml`), as this proxy would hold it.
    pub(crate) fn example() -> Span {
        Span {
            trace_id: TraceId {
                high: 0x5982fe77008310cc,
                low: 0x80f1da5e10147517,
            },
            id: 0x90394f6bcffb5d13,
            parent: Some(0x5982fe77008310cc),
            kind: Kind::Server,
            name: "get /api".into(),
            start_us: 1_502_787_600_000_000,
            duration_us: 150_000,
            debug: false,
            service: Arc::from("backend"),
            local_ip: Some([192, 168, 99, 101].into()),
            tags: vec![("http.status_code".into(), "200".into())],
        }
    }

    #[test]
    fn spans_are_zipkin_v2_json() {
        let mut root = example();
        root.parent = None;
        root.trace_id.high = 0;
        root.debug = true;
        let body = encode(&[example(), root]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[0],
            serde_json::json!({
                "traceId": "5982fe77008310cc80f1da5e10147517",
                "id": "90394f6bcffb5d13",
                "parentId": "5982fe77008310cc",
                "name": "get /api",
                "kind": "SERVER",
                "timestamp": 1502787600000000u64,
                "duration": 150000,
                "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.101"},
                "tags": {"http.status_code": "200"}
            })
        );
        assert_eq!(
            a[1]["traceId"], "80f1da5e10147517",
            "a 64-bit id stays 16 digits"
        );
        assert!(a[1].get("parentId").is_none(), "a root has no parentId");
        assert_eq!(a[1]["debug"], true);
        let v6 = Span {
            local_ip: Some("::1".parse().unwrap()),
            duration_us: 0,
            ..example()
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&[v6])).unwrap();
        assert_eq!(v[0]["localEndpoint"]["ipv6"], "::1");
        assert_eq!(v[0]["duration"], 1, "duration is at least 1 µs");
        // Whatever a tag holds (a header custom tag is the client's text) stays valid JSON.
        let mut odd = example();
        odd.tags = vec![("k\"\\".into(), "a\"b\\c\n\u{1}é/</x>".into())];
        odd.local_ip = None;
        let v: serde_json::Value = serde_json::from_slice(&encode(&[odd])).unwrap();
        assert_eq!(v[0]["tags"]["k\"\\"], "a\"b\\c\n\u{1}é/</x>");
        assert!(v[0]["localEndpoint"].get("ipv4").is_none());
        assert_eq!(encode(&[]), b"[]");
    }
}
