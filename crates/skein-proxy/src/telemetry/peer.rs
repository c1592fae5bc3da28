//! Istio's peer metadata exchange formats: the node metadata as a protobuf
//! `google.protobuf.Struct`, base64 in the `x-envoy-peer-metadata` header, and the Envoy node
//! id in `x-envoy-peer-metadata-id`.
//!
//! The Struct is encoded deterministically (map entries sorted by key, as Envoy's proxies
//! serialise it), so the header a sidecar sends is the same bytes every time and a peer can
//! cache what it decoded by those bytes. Decoding takes input a peer controls: it is bounded
//! in size ([`MAX_HEADER_BYTES`]) and nesting ([`MAX_DEPTH`]), skips unknown fields, and
//! never panics.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use skein_snapshot::Node;

/// The request and response header with the base64 node metadata.
pub(crate) static PEER_METADATA: http::HeaderName =
    http::HeaderName::from_static("x-envoy-peer-metadata");
/// The request and response header with the Envoy node id.
pub(crate) static PEER_METADATA_ID: http::HeaderName =
    http::HeaderName::from_static("x-envoy-peer-metadata-id");

/// The longest `x-envoy-peer-metadata` value decoded (base64 bytes). Istio's own headers are
/// about 1 KiB; anything longer is ignored.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The deepest nesting of Structs and lists decoded (Istio's metadata nests two levels).
pub const MAX_DEPTH: usize = 8;

/// A `google.protobuf.Value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null_value`, also what a Value without a kind decodes to.
    Null,
    /// `number_value`.
    Number(f64),
    /// `string_value`.
    String(String),
    /// `bool_value`.
    Bool(bool),
    /// `struct_value`.
    Struct(Struct),
    /// `list_value`.
    List(Vec<Value>),
}

/// A `google.protobuf.Struct`: fields by name, kept sorted (deterministic encoding).
pub type Struct = BTreeMap<String, Value>;

/// Why peer metadata was not decoded (the peer's labels then stay `unknown`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Over [`MAX_HEADER_BYTES`].
    #[error("peer metadata is {0} bytes, more than the {MAX_HEADER_BYTES} accepted")]
    TooLarge(usize),
    /// Not standard base64.
    #[error("peer metadata is not base64")]
    Base64,
    /// A field or length runs past the end.
    #[error("peer metadata is truncated: a field runs past the end")]
    Truncated,
    /// Structs or lists nested deeper than [`MAX_DEPTH`].
    #[error("peer metadata nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A protobuf wire type a Struct cannot hold (groups, or not a wire type at all).
    #[error("peer metadata has protobuf wire type {0}, which a Struct never uses")]
    WireType(u8),
    /// A key or string value is not UTF-8.
    #[error("peer metadata has a string that is not UTF-8")]
    Utf8,
}

// --- encoding ---------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The protobuf encoding of `s` (fields sorted by key).
pub fn encode_struct(s: &Struct) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in s {
        let mut entry = Vec::with_capacity(k.len() + 16);
        put_bytes(&mut entry, 0x0A, k.as_bytes());
        put_bytes(&mut entry, 0x12, &encode_value(v));
        put_bytes(&mut out, 0x0A, &entry);
    }
    out
}

fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Null => out.extend_from_slice(&[0x08, 0x00]),
        Value::Number(n) => {
            out.push(0x11);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Value::String(s) => put_bytes(&mut out, 0x1A, s.as_bytes()),
        Value::Bool(b) => out.extend_from_slice(&[0x20, u8::from(*b)]),
        Value::Struct(s) => put_bytes(&mut out, 0x2A, &encode_struct(s)),
        Value::List(l) => {
            let mut list = Vec::new();
            for item in l {
                put_bytes(&mut list, 0x0A, &encode_value(item));
            }
            put_bytes(&mut out, 0x32, &list);
        }
    }
    out
}

// --- decoding ---------------------------------------------------------------------------

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn done(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
            self.buf = rest;
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field's number and wire type.
    pub(super) fn key(&mut self) -> Result<(u64, u8), DecodeError> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    pub(super) fn len_delimited(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated)?;
        self.take(n)
    }

    /// Skips a field of wire type `wt`.
    pub(super) fn skip(&mut self, wt: u8) -> Result<(), DecodeError> {
        match wt {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.len_delimited().map(drop),
            5 => self.take(4).map(drop),
            other => Err(DecodeError::WireType(other)),
        }
    }
}

pub(super) fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| DecodeError::Utf8)
}

/// Decodes a protobuf `Struct` (unknown fields skipped; a repeated key keeps the last value).
pub fn decode_struct(buf: &[u8]) -> Result<Struct, DecodeError> {
    struct_at(buf, 0)
}

fn struct_at(buf: &[u8], depth: usize) -> Result<Struct, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let mut r = Reader { buf };
    let mut out = Struct::new();
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                let entry = r.len_delimited()?;
                let (k, v) = entry_at(entry, depth)?;
                out.insert(k, v);
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(out)
}

fn entry_at(buf: &[u8], depth: usize) -> Result<(String, Value), DecodeError> {
    let mut r = Reader { buf };
    let (mut key, mut value) = (String::new(), Value::Null);
    while !r.done() {
        match r.key()? {
            (1, 2) => key = utf8(r.len_delimited()?)?,
            (2, 2) => value = value_at(r.len_delimited()?, depth)?,
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok((key, value))
}

fn value_at(buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let mut r = Reader { buf };
    let mut value = Value::Null;
    while !r.done() {
        value = match r.key()? {
            (1, 0) => {
                r.varint()?;
                Value::Null
            }
            (2, 1) => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Number(f64::from_le_bytes(a))
            }
            (3, 2) => Value::String(utf8(r.len_delimited()?)?),
            (4, 0) => Value::Bool(r.varint()? != 0),
            (5, 2) => Value::Struct(struct_at(r.len_delimited()?, depth + 1)?),
            (6, 2) => Value::List(list_at(r.len_delimited()?, depth + 1)?),
            (_, wt) => {
                r.skip(wt)?;
                continue;
            }
        };
    }
    Ok(value)
}

fn list_at(buf: &[u8], depth: usize) -> Result<Vec<Value>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while !r.done() {
        match r.key()? {
            (1, 2) => out.push(value_at(r.len_delimited()?, depth)?),
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(out)
}

// --- Istio's node metadata ---------------------------------------------------------------

/// The label keys of the node metadata's `LABELS` that telemetry reads.
const LABEL_APP: &str = "app";
const LABEL_VERSION: &str = "version";
use skein_snapshot::{LABEL_CANONICAL_NAME, LABEL_CANONICAL_REVISION};

/// The `CLUSTER_ID` of a proxy whose node names none (Istio's default).
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// What one side of a connection says about its workload (Istio's node metadata keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    /// `NAME`: the pod.
    pub name: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `WORKLOAD_NAME`.
    pub workload: String,
    /// `CLUSTER_ID`.
    pub cluster_id: String,
    /// `OWNER`.
    pub owner: String,
    /// `LABELS["app"]`.
    pub app: String,
    /// `LABELS["version"]`.
    pub version: String,
    /// `LABELS["service.istio.io/canonical-name"]`.
    pub canonical_service: String,
    /// `LABELS["service.istio.io/canonical-revision"]`.
    pub canonical_revision: String,
}

impl PeerMetadata {
    /// The proxy's own metadata from the snapshot's node. Canonical service and revision
    /// follow Istio's injector: the canonical labels, else `app.kubernetes.io/name` / `app`
    /// (else the workload name), and `app.kubernetes.io/version` / `version` (else `latest`).
    pub fn from_node(node: &Node) -> Self {
        let l = &node.labels;
        let canonical_service = skein_snapshot::canonical_service(l, &node.workload).to_string();
        let canonical_revision = skein_snapshot::canonical_revision(l).to_string();
        PeerMetadata {
            name: node.pod.clone(),
            namespace: node.namespace.clone(),
            workload: node.workload.clone(),
            // Istio's agent reports `CLUSTER_ID` `Kubernetes` unless told otherwise.
            cluster_id: if node.cluster_id.is_empty() {
                DEFAULT_CLUSTER_ID.to_string()
            } else {
                node.cluster_id.clone()
            },
            owner: node.owner.clone(),
            app: l.get(LABEL_APP).cloned().unwrap_or_default(),
            version: l.get(LABEL_VERSION).cloned().unwrap_or_default(),
            canonical_service,
            canonical_revision,
        }
    }

    /// What the control plane says about an endpoint's workload (Istio's
    /// `extractEndpointMetadata`): no pod name, app or version.
    pub fn from_endpoint(w: &skein_snapshot::EndpointWorkload) -> Self {
        PeerMetadata {
            workload: w.name.clone(),
            namespace: w.namespace.clone(),
            canonical_service: w.canonical_service.clone(),
            canonical_revision: w.canonical_revision.clone(),
            cluster_id: w.cluster.clone(),
            ..Default::default()
        }
    }

    /// The node-metadata Struct (empty values left out).
    pub fn to_struct(&self) -> Struct {
        let mut s = Struct::new();
        let put = |s: &mut Struct, k: &str, v: &str| {
            if !v.is_empty() {
                s.insert(k.to_string(), Value::String(v.to_string()));
            }
        };
        put(&mut s, "NAME", &self.name);
        put(&mut s, "NAMESPACE", &self.namespace);
        put(&mut s, "WORKLOAD_NAME", &self.workload);
        put(&mut s, "CLUSTER_ID", &self.cluster_id);
        put(&mut s, "OWNER", &self.owner);
        let mut labels = Struct::new();
        put(&mut labels, LABEL_APP, &self.app);
        put(&mut labels, LABEL_VERSION, &self.version);
        put(&mut labels, LABEL_CANONICAL_NAME, &self.canonical_service);
        put(
            &mut labels,
            LABEL_CANONICAL_REVISION,
            &self.canonical_revision,
        );
        if !labels.is_empty() {
            s.insert("LABELS".to_string(), Value::Struct(labels));
        }
        s
    }

    /// Reads the keys telemetry needs from a node-metadata Struct (others are ignored).
    pub fn from_struct(s: &Struct) -> Self {
        let get = |s: &Struct, k: &str| match s.get(k) {
            Some(Value::String(v)) => v.clone(),
            _ => String::new(),
        };
        let empty = Struct::new();
        let labels = match s.get("LABELS") {
            Some(Value::Struct(l)) => l,
            _ => &empty,
        };
        PeerMetadata {
            name: get(s, "NAME"),
            namespace: get(s, "NAMESPACE"),
            workload: get(s, "WORKLOAD_NAME"),
            cluster_id: get(s, "CLUSTER_ID"),
            owner: get(s, "OWNER"),
            app: get(labels, LABEL_APP),
            version: get(labels, LABEL_VERSION),
            canonical_service: get(labels, LABEL_CANONICAL_NAME),
            canonical_revision: get(labels, LABEL_CANONICAL_REVISION),
        }
    }

    /// The `x-envoy-peer-metadata` value: base64 of the deterministic Struct encoding.
    pub fn header_value(&self) -> String {
        STANDARD.encode(encode_struct(&self.to_struct()))
    }

    /// Decodes an `x-envoy-peer-metadata` value a peer sent.
    pub fn from_header(value: &[u8]) -> Result<Self, DecodeError> {
        if value.len() > MAX_HEADER_BYTES {
            return Err(DecodeError::TooLarge(value.len()));
        }
        let bytes = STANDARD.decode(value).map_err(|_| DecodeError::Base64)?;
        Ok(Self::from_struct(&decode_struct(&bytes)?))
    }
}

/// The Envoy node id Istio's proxies send in `x-envoy-peer-metadata-id`:
/// `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` (`router~...` for a gateway).
pub fn node_id(node: &Node, gateway: bool) -> String {
    let kind = if gateway { "router" } else { "sidecar" };
    let ip = node.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let ns = &node.namespace;
    format!("{kind}~{ip}~{}.{ns}~{ns}.svc.cluster.local", node.pod)
}

/// Removes both exchange headers; the metadata value, if there was one.
pub fn take_headers(headers: &mut http::HeaderMap) -> Option<http::HeaderValue> {
    headers.remove(&PEER_METADATA_ID);
    headers.remove(&PEER_METADATA)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn string(v: &str) -> Value {
        Value::String(v.to_string())
    }

    #[test]
    fn a_struct_encodes_to_the_canonical_protobuf_bytes() {
        // Struct{fields: {"NAME": string_value "a"}}: entry(key "NAME", value {3: "a"}).
        let s: Struct = [("NAME".to_string(), string("a"))].into();
        assert_eq!(
            encode_struct(&s),
            hex("0a0b 0a04 4e414d45 1203 1a01 61"),
            "one string field"
        );
        // Nested: {"LABELS": struct_value {"app": "x"}}.
        let inner: Struct = [("app".to_string(), string("x"))].into();
        let s: Struct = [("LABELS".to_string(), Value::Struct(inner))].into();
        assert_eq!(
            encode_struct(&s),
            hex("0a18 0a06 4c4142454c53 120e 2a0c 0a0a 0a03 617070 1203 1a01 78")
        );
        // Every kind of Value; keys sorted whatever the insertion order.
        let s: Struct = [
            ("n".to_string(), Value::Number(1.0)),
            ("b".to_string(), Value::Bool(true)),
            ("z".to_string(), Value::Null),
            ("l".to_string(), Value::List(vec![Value::Bool(false)])),
        ]
        .into();
        assert_eq!(
            encode_struct(&s),
            hex(concat!(
                "0a07 0a0162 1202 2001",                // b: bool true
                "0a0b 0a016c 1206 3204 0a02 2000",      // l: [false]
                "0a0e 0a016e 1209 11 000000000000f03f", // n: 1.0 (double, little-endian)
                "0a07 0a017a 1202 0800",                // z: null
            ))
        );
        assert_eq!(decode_struct(&encode_struct(&s)).unwrap(), s);
    }

    /// The request header of an Istio 1.14.5 sidecar (bookinfo reviews-v3 calling ratings).
    const ISTIO_1_14_REVIEWS: &str = "ChsKDkFQUF9DT05UQUlORVJTEgkaB3Jldmlld3MKGgoKQ0xVU1RFUl9JRBIMGgpLdWJlcm5ldGVzCh4KDElOU1RBTkNFX0lQUxIOGgwxNzIuMTYuMC4xMzMKGQoNSVNUSU9fVkVSU0lPThIIGgYxLjE0LjUK0wEKBkxBQkVMUxLIASrFAQoQCgNhcHASCRoHcmV2aWV3cwofChFwb2QtdGVtcGxhdGUtaGFzaBIKGgg1OGI2NDc5YgokChlzZWN1cml0eS5pc3Rpby5pby90bHNNb2RlEgcaBWlzdGlvCiwKH3NlcnZpY2UuaXN0aW8uaW8vY2Fub25pY2FsLW5hbWUSCRoHcmV2aWV3cworCiNzZXJ2aWNlLmlzdGlvLmlvL2Nhbm9uaWNhbC1yZXZpc2lvbhIEGgJ2MwoPCgd2ZXJzaW9uEgQaAnYzChoKB01FU0hfSUQSDxoNY2x1c3Rlci5sb2NhbAojCgROQU1FEhsaGXJldmlld3MtdjMtNThiNjQ3OWItNjJydjUKFgoJTkFNRVNQQUNFEgkaB2RlZmF1bHQKTgoFT1dORVISRRpDa3ViZXJuZXRlczovL2FwaXMvYXBwcy92MS9uYW1lc3BhY2VzL2RlZmF1bHQvZGVwbG95bWVudHMvcmV2aWV3cy12MwoXChFQTEFURk9STV9NRVRBREFUQRICKgAKHQoNV09SS0xPQURfTkFNRRIMGgpyZXZpZXdzLXYz";

    #[test]
    fn an_istio_sidecars_header_decodes_and_reencodes_byte_for_byte() {
        let peer = PeerMetadata::from_header(ISTIO_1_14_REVIEWS.as_bytes()).unwrap();
        assert_eq!(
            peer,
            PeerMetadata {
                name: "reviews-v3-58b6479b-62rv5".into(),
                namespace: "default".into(),
                workload: "reviews-v3".into(),
                cluster_id: "Kubernetes".into(),
                owner: "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v3".into(),
                app: "reviews".into(),
                version: "v3".into(),
                canonical_service: "reviews".into(),
                canonical_revision: "v3".into(),
            }
        );
        // Envoy serialises deterministically (sorted keys), as this encoder does.
        let raw = STANDARD.decode(ISTIO_1_14_REVIEWS).unwrap();
        let s = decode_struct(&raw).unwrap();
        assert_eq!(
            s.get("PLATFORM_METADATA"),
            Some(&Value::Struct(Struct::new()))
        );
        assert_eq!(encode_struct(&s), raw);
    }

    #[test]
    fn own_metadata_comes_from_the_node_and_round_trips() {
        let node = Node {
            pod: "was-1".into(),
            namespace: "blog-system".into(),
            workload: "was".into(),
            labels: [
                ("app", "was"),
                ("version", "v1"),
                ("pod-template-hash", "x"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ip: Some("127.9.1.3".parse().unwrap()),
            owner: "kubernetes://apis/apps/v1/namespaces/blog-system/deployments/was".into(),
            cluster_id: "Kubernetes".into(),
            ..Node::default()
        };
        let me = PeerMetadata::from_node(&node);
        assert_eq!(
            (
                me.canonical_service.as_str(),
                me.canonical_revision.as_str()
            ),
            ("was", "v1")
        );
        let s = me.to_struct();
        let keys: Vec<&str> = s.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "CLUSTER_ID",
                "LABELS",
                "NAME",
                "NAMESPACE",
                "OWNER",
                "WORKLOAD_NAME"
            ]
        );
        let Some(Value::Struct(labels)) = s.get("LABELS") else {
            panic!("LABELS is a Struct")
        };
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "app",
                "service.istio.io/canonical-name",
                "service.istio.io/canonical-revision",
                "version"
            ]
        );
        assert_eq!(
            PeerMetadata::from_header(me.header_value().as_bytes()).unwrap(),
            me
        );
        assert_eq!(
            node_id(&node, false),
            "sidecar~127.9.1.3~was-1.blog-system~blog-system.svc.cluster.local"
        );
        assert!(node_id(&node, true).starts_with("router~127.9.1.3~"));
    }

    #[test]
    fn canonical_labels_fall_back_as_istio_does() {
        let mut node = Node {
            workload: "w".into(),
            ..Node::default()
        };
        let me = PeerMetadata::from_node(&node);
        assert_eq!(
            (
                me.canonical_service.as_str(),
                me.canonical_revision.as_str()
            ),
            ("w", "latest")
        );
        // No cluster id: Istio's agent default.
        assert_eq!(me.cluster_id, "Kubernetes");
        node.cluster_id = "east".into();
        assert_eq!(PeerMetadata::from_node(&node).cluster_id, "east");
        node.labels.insert("app".into(), "a".into());
        node.labels
            .insert("app.kubernetes.io/name".into(), "k".into());
        node.labels.insert("version".into(), "v2".into());
        let me = PeerMetadata::from_node(&node);
        assert_eq!(
            (
                me.canonical_service.as_str(),
                me.canonical_revision.as_str()
            ),
            ("k", "v2")
        );
        node.labels.insert(LABEL_CANONICAL_NAME.into(), "c".into());
        node.labels
            .insert(LABEL_CANONICAL_REVISION.into(), "r".into());
        let me = PeerMetadata::from_node(&node);
        assert_eq!(
            (
                me.canonical_service.as_str(),
                me.canonical_revision.as_str()
            ),
            ("c", "r")
        );
    }

    #[test]
    fn hostile_input_is_refused_without_panicking() {
        let too_big = vec![b'A'; MAX_HEADER_BYTES + 4];
        assert_eq!(
            PeerMetadata::from_header(&too_big),
            Err(DecodeError::TooLarge(MAX_HEADER_BYTES + 4))
        );
        assert_eq!(
            PeerMetadata::from_header(b"%%% not base64"),
            Err(DecodeError::Base64)
        );
        // A length past the end; a varint that never ends; a group wire type.
        assert_eq!(
            decode_struct(&hex("0a05 0a01")),
            Err(DecodeError::Truncated)
        );
        assert_eq!(decode_struct(&[0xFF; 12]), Err(DecodeError::Truncated));
        assert_eq!(decode_struct(&hex("0b")), Err(DecodeError::WireType(3)));
        assert_eq!(
            decode_struct(&hex("0a06 0a02 ff fe 1200")),
            Err(DecodeError::Utf8)
        );
        // Deep nesting: struct_value inside struct_value, far past the cap.
        let mut v = encode_struct(&Struct::new());
        for _ in 0..200 {
            let mut value = Vec::new();
            put_bytes(&mut value, 0x2A, &v);
            let mut entry = Vec::new();
            put_bytes(&mut entry, 0x0A, b"k");
            put_bytes(&mut entry, 0x12, &value);
            v.clear();
            put_bytes(&mut v, 0x0A, &entry);
        }
        assert_eq!(decode_struct(&v), Err(DecodeError::TooDeep));
        // Unknown fields are skipped; wrong kinds read as empty.
        let s = decode_struct(&hex("10 05 0a0c 0a04 4e414d45 1204 2001 3800")).unwrap();
        assert_eq!(s.get("NAME"), Some(&Value::Bool(true)));
        assert_eq!(PeerMetadata::from_struct(&s).name, "");
        // Every prefix of a valid encoding decodes or fails cleanly.
        let raw = STANDARD.decode(ISTIO_1_14_REVIEWS).unwrap();
        for n in 0..raw.len() {
            let _ = decode_struct(&raw[..n]);
        }
    }
}
