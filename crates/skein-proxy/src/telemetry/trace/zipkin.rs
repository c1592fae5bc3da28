//! Zipkin v2 JSON (`POST /api/v2/spans`, a JSON array of spans), as Envoy's reporter sends
//! it for Istio: 128-bit trace ids unless the id came in with 64 bits, `shared: false`,
//! `localEndpoint` with the service name and the pod's address, timestamps in µs.

use std::collections::BTreeMap;

use serde::Serialize;

use super::context::{TraceId, hex64};
use super::span::{Kind, Span};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Json<'a> {
    trace_id: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    name: &'a str,
    kind: &'static str,
    timestamp: u64,
    duration: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    debug: bool,
    local_endpoint: Endpoint<'a>,
    tags: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint<'a> {
    service_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<String>,
}

fn trace_hex(t: TraceId) -> String {
    let mut v = Vec::with_capacity(32);
    t.write_hex(&mut v);
    String::from_utf8(v).unwrap_or_default()
}

fn id_hex(id: u64) -> String {
    String::from_utf8_lossy(&hex64(id)).into_owned()
}

/// The request body for `spans`.
pub(crate) fn encode(spans: &[Span]) -> Vec<u8> {
    let json: Vec<Json<'_>> = spans
        .iter()
        .map(|s| Json {
            trace_id: trace_hex(s.trace_id),
            id: id_hex(s.id),
            parent_id: s.parent.map(id_hex),
            name: &s.name,
            kind: match s.kind {
                Kind::Client => "CLIENT",
                Kind::Server => "SERVER",
            },
            timestamp: s.start_us,
            duration: s.duration_us.max(1),
            debug: s.debug,
            local_endpoint: Endpoint {
                service_name: &s.service,
                ipv4: s
                    .local_ip
                    .filter(|ip| ip.is_ipv4())
                    .map(|ip| ip.to_string()),
                ipv6: s
                    .local_ip
                    .filter(|ip| ip.is_ipv6())
                    .map(|ip| ip.to_string()),
            },
            tags: s
                .tags
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_str()))
                .collect(),
        })
        .collect();
    serde_json::to_vec(&json).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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
    }
}
