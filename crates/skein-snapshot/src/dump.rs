//! What a proxy's admin endpoint serves at `/config_dump` (and `/control`), as types: the
//! proxy serialises a [`ConfigDump`], `skein proxy-config` deserialises it. The JSON is read
//! by users' scripts: field names and shapes are a contract.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Snapshot;

/// The whole of `/config_dump`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigDump {
    /// The version of the snapshot in force.
    pub version: String,
    /// True once a snapshot was applied.
    pub loaded: bool,
    /// The snapshot in force, as received.
    pub snapshot: Snapshot,
    /// The sidecar's inbound listeners (empty for a gateway).
    pub inbound: Vec<InboundListener>,
    /// Per cluster (outbound and inbound), the status of each endpoint.
    pub endpoint_status: BTreeMap<String, Vec<EndpointStatus>>,
    /// The workload certificate.
    pub identity: IdentityStatus,
    /// The control-plane stream.
    pub control: ControlStatus,
    /// Parts of the snapshot in force that did not compile and what stands in for them
    /// (an AuthorizationPolicy that did not compile denies the traffic it selects).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config_errors: Vec<String>,
}

/// One inbound listener of a sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundListener {
    /// The bound address.
    pub listen: SocketAddr,
    /// The application's address behind it.
    pub app: SocketAddr,
    /// Its cluster (`inbound|PORT||`).
    pub cluster: String,
}

/// Status of one endpoint for /config_dump's `endpoint_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// `ip:port`.
    pub address: SocketAddr,
    /// `healthy` or `ejected`.
    pub status: Cow<'static, str>,
    /// Times ejected.
    pub ejections: u64,
    /// Milliseconds until the ejection ends (None: not ejected).
    pub ejected_until_ms: Option<u64>,
    /// Consecutive 5xx (connect failures and resets included).
    pub consecutive_5xx: u32,
    /// Consecutive gateway errors (502, 503, 504, connect failures).
    pub consecutive_gateway_errors: u32,
    /// The ejection time multiplier (the next ejection lasts base x (this + 1), capped).
    pub multiplier: u32,
}

/// The proxy's workload certificate, as `/config_dump` and `/control` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentityStatus {
    /// True when a certificate is installed.
    pub loaded: bool,
    /// The SPIFFE URI of the installed certificate.
    pub identity: Option<String>,
    /// Its `notAfter` (Unix seconds).
    pub not_after: Option<i64>,
    /// True when `notAfter` has passed.
    pub expired: bool,
    /// Where it came from.
    pub source: Option<IdentitySource>,
    /// Lowercase hex SHA-256 of the leaf.
    pub cert_sha256: Option<String>,
    /// How many certificates were installed since start.
    pub installs: u64,
    /// Certificate requests sent to the control plane.
    pub requests: u64,
    /// When the next renewal is due (Unix seconds), for a control-plane identity.
    pub next_renewal: Option<i64>,
    /// The last failure to obtain or install a certificate (cleared by the next install).
    pub last_error: Option<String>,
}

/// Where the installed identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// Given to the proxy (its config, or installed through its handle).
    Static,
    /// Signed by the control plane from this proxy's CSR.
    Control,
}

/// A snapshot the proxy refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlNack {
    /// The refused snapshot's version.
    pub version: String,
    /// Why (the error's Display, as sent in the NACK).
    pub error: String,
}

/// The control-plane stream as `/control` and `/config_dump` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// The control plane's address; `None` when the proxy has no control-plane source.
    pub address: Option<SocketAddr>,
    /// The node id sent in Hello.
    pub node: String,
    /// The namespace sent in Hello.
    pub namespace: String,
    /// True while the stream is up (connected and Hello sent).
    pub connected: bool,
    /// The last snapshot version applied and ACKed.
    pub last_ack_version: Option<String>,
    /// The last snapshot refused (kept after later ACKs; compare versions).
    pub last_nack: Option<ControlNack>,
    /// How many times the stream came back up after the first connection.
    pub reconnects: u64,
    /// Why the stream last went down or could not be set up.
    pub last_error: Option<String>,
    /// The workload certificate (whether it came from the control plane or not).
    #[serde(default)]
    pub identity: IdentityStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConfigDump {
        let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let status = EndpointStatus {
            address: addr,
            status: Cow::Borrowed("ejected"),
            ejections: 1,
            ejected_until_ms: Some(30_000),
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            multiplier: 1,
        };
        ConfigDump {
            version: "v1".into(),
            loaded: true,
            snapshot: Snapshot {
                version: "v1".into(),
                ..Default::default()
            },
            inbound: vec![InboundListener {
                listen: addr,
                app: "127.0.0.1:9080".parse().unwrap(),
                cluster: "inbound|9080||".into(),
            }],
            endpoint_status: [("outbound|80||a".to_string(), vec![status])].into(),
            identity: IdentityStatus {
                loaded: true,
                source: Some(IdentitySource::Control),
                ..Default::default()
            },
            control: ControlStatus {
                node: "web-0".into(),
                last_nack: Some(ControlNack {
                    version: "v0".into(),
                    error: "bad".into(),
                }),
                ..Default::default()
            },
            config_errors: Vec::new(),
        }
    }

    /// The shape `/config_dump` had when it was built with `json!`: the typed dump
    /// serialises to the same JSON value, and reads back as itself.
    #[test]
    fn same_json_as_the_untyped_dump() {
        let d = sample();
        let untyped = serde_json::json!({
            "version": d.version,
            "loaded": d.loaded,
            "snapshot": &d.snapshot,
            "inbound": [{"listen": "10.0.0.1:8080", "app": "127.0.0.1:9080", "cluster": "inbound|9080||"}],
            "endpoint_status": {"outbound|80||a": [{
                "address": "10.0.0.1:8080", "status": "ejected", "ejections": 1,
                "ejected_until_ms": 30000, "consecutive_5xx": 0,
                "consecutive_gateway_errors": 0, "multiplier": 1,
            }]},
            "identity": &d.identity,
            "control": &d.control,
        });
        let typed = serde_json::to_value(&d).unwrap();
        assert_eq!(typed, untyped);
        assert_eq!(
            serde_json::to_string_pretty(&typed).unwrap(),
            serde_json::to_string_pretty(&untyped).unwrap()
        );
        let back: ConfigDump = serde_json::from_value(typed).unwrap();
        assert_eq!(back, d);
    }
}
