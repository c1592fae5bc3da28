//! What the access log writes, compiled from the snapshot's `telemetry.access_log` once per
//! snapshot (swapped with the rest of [`crate::snapshot::Compiled`]): where lines go (the
//! mesh config's `accessLogFile`, or the `--access-log` flag), the format (Istio's TEXT,
//! `accessLogFormat`, or JSON with Istio's keys or a provider's labels), and per direction
//! whether to log at all and the Telemetry `filter.expression`.
//!
//! The request path only asks [`LogPolicy::gate`] whether its direction logs and copies the
//! headers the format and filter read ([`LogPolicy::capture_request`]); the writer task
//! evaluates the filter and formats the line.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};
use skein_snapshot::cel::{self, Attr, Attributes, Program, Value};
use skein_snapshot::log_format::{self, Operator, Piece};
use skein_snapshot::telemetry as snap;

use crate::config::{AccessLogSink, ProxyConfig};
use crate::telemetry::access_log::{LogRecord, format_time};

/// Why a snapshot's access-log settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum LogPolicyError {
    #[error(transparent)]
    Format(#[from] log_format::FormatError),
    #[error("access log filter of the {mode} side: {error}")]
    Filter {
        mode: &'static str,
        error: cel::CelError,
    },
}

/// One direction's decision.
#[derive(Debug)]
pub enum Gate {
    /// Nothing is logged.
    Off,
    /// Every request is logged.
    All,
    /// Requests for which the expression is true are logged.
    Filter(Box<Program>),
}

/// The line format.
#[derive(Debug)]
pub enum Format {
    /// Istio's default TEXT format (the fast, fixed formatter).
    IstioText,
    /// `accessLogFormat` / `logFormat.text`.
    Text(Vec<Piece>),
    /// JSON: key -> pieces (Istio's default keys, or `logFormat.labels`).
    Json(Vec<(String, Vec<Piece>)>),
}

/// The compiled access-log settings.
#[derive(Debug)]
pub struct LogPolicy {
    /// Outbound (the proxy is the client; gateways too).
    pub client: Gate,
    /// Inbound.
    pub server: Gate,
    pub sink: AccessLogSink,
    pub format: Format,
    /// Request headers (other than those every record holds) the format or filters read.
    pub request_headers: Vec<HeaderName>,
    /// Response headers the format or filters read.
    pub response_headers: Vec<HeaderName>,
}

/// Headers every record holds already.
const RECORDED: &[&str] = &[
    "x-forwarded-for",
    "user-agent",
    "x-request-id",
    "host",
    ":authority",
];

impl LogPolicy {
    /// Nothing logged.
    #[cfg(test)]
    pub fn off() -> Self {
        LogPolicy {
            client: Gate::Off,
            server: Gate::Off,
            sink: AccessLogSink::Off,
            format: Format::IstioText,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }

    /// Compiles the snapshot's settings for this proxy. The `--access-log` flag
    /// ([`ProxyConfig::access_log`]) overrides where lines go; without it `file` decides,
    /// an absolute path landing under [`ProxyConfig::access_log_root`] when that is set.
    pub fn compile(t: &snap::AccessLog, proxy: &ProxyConfig) -> Result<LogPolicy, LogPolicyError> {
        let sink = match &proxy.access_log {
            Some(s) => s.clone(),
            None => sink_of(&t.file, proxy.access_log_root.as_deref()),
        };
        let format = match t.encoding {
            snap::AccessLogEncoding::Json if t.json_format.is_empty() => Format::Json(
                log_format::ISTIO_JSON
                    .iter()
                    .map(|(k, v)| Ok((k.to_string(), log_format::parse(v)?)))
                    .collect::<Result<_, log_format::FormatError>>()?,
            ),
            snap::AccessLogEncoding::Json => {
                Format::Json(log_format::parse_labels(&t.json_format)?)
            }
            snap::AccessLogEncoding::Text if t.format.is_empty() => Format::IstioText,
            snap::AccessLogEncoding::Text => {
                let mut f = t.format.clone();
                // Istio ends a custom format with a line break when it has none.
                if !f.ends_with('\n') {
                    f.push('\n');
                }
                Format::Text(log_format::parse(&f)?)
            }
        };
        let on = sink != AccessLogSink::Off;
        let gate = |rule: &Option<snap::AccessLogRule>, mode| -> Result<Gate, LogPolicyError> {
            Ok(match rule {
                _ if !on => Gate::Off,
                None => Gate::All,
                Some(r) if r.disabled => Gate::Off,
                Some(r) if r.filter.trim().is_empty() => Gate::All,
                Some(r) => Gate::Filter(Box::new(
                    Program::compile_bool(&r.filter)
                        .map_err(|error| LogPolicyError::Filter { mode, error })?,
                )),
            })
        };
        let client = gate(&t.rules.client, "client")?;
        let server = gate(&t.rules.server, "server")?;
        let mut req: Vec<String> = Vec::new();
        let mut resp: Vec<String> = Vec::new();
        let mut ops = |pieces: &[Piece]| {
            for p in pieces {
                match p {
                    Piece::Op(Operator::RequestHeader(h), _) => req.push(h.clone()),
                    Piece::Op(Operator::ResponseHeader(h), _) => resp.push(h.clone()),
                    _ => {}
                }
            }
        };
        match &format {
            Format::IstioText => {}
            Format::Text(p) => ops(p),
            Format::Json(kv) => kv.iter().for_each(|(_, p)| ops(p)),
        }
        for g in [&client, &server] {
            if let Gate::Filter(p) = g {
                for a in p.attrs() {
                    match a {
                        Attr::RequestHeader(h) => req.push(h.clone()),
                        Attr::RequestReferer => req.push("referer".into()),
                        Attr::ResponseHeader(h) => resp.push(h.clone()),
                        _ => {}
                    }
                }
            }
        }
        let names = |mut v: Vec<String>| -> Vec<HeaderName> {
            v.retain(|h| !RECORDED.contains(&h.as_str()));
            v.sort();
            v.dedup();
            v.iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect()
        };
        Ok(LogPolicy {
            client,
            server,
            sink,
            format,
            request_headers: names(req),
            response_headers: names(resp),
        })
    }

    /// The gate of a direction.
    pub fn gate(&self, client: bool) -> &Gate {
        if client { &self.client } else { &self.server }
    }

    /// Whether a direction logs anything.
    pub fn logs(&self, client: bool) -> bool {
        !matches!(self.gate(client), Gate::Off)
    }

    /// Copies the request headers the policy reads into the record (nothing when none).
    pub fn capture_request(&self, headers: &HeaderMap, rec: &mut LogRecord) {
        capture(&self.request_headers, headers, &mut rec.request_headers);
    }

    /// Copies the response headers the policy reads into the record.
    pub fn capture_response(&self, headers: &HeaderMap, rec: &mut LogRecord) {
        capture(&self.response_headers, headers, &mut rec.response_headers);
    }

    /// The writer's verdict on one record (the filter runs here, off the request path).
    pub fn admits(&self, rec: &LogRecord) -> bool {
        match self.gate(rec.client) {
            Gate::Off => false,
            Gate::All => true,
            Gate::Filter(p) => p.matches(rec),
        }
    }

    /// Formats one line (with its line break) into `out`.
    pub fn format_into(&self, rec: &LogRecord, out: &mut String) {
        match &self.format {
            Format::IstioText => rec.format_into(out),
            Format::Text(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Text(t) => out.push_str(t),
                        Piece::Op(op, limit) => text_of(op, *limit, rec, out),
                    }
                }
            }
            Format::Json(kv) => {
                out.push('{');
                for (i, (k, pieces)) in kv.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_str(k, out);
                    out.push(':');
                    match pieces.as_slice() {
                        [Piece::Op(op, limit)] => {
                            let mut v = String::new();
                            text_of(op, *limit, rec, &mut v);
                            if v == "-" {
                                out.push_str("null");
                            } else if op.is_number() && v.bytes().all(|b| b.is_ascii_digit()) {
                                out.push_str(&v);
                            } else {
                                json_str(&v, out);
                            }
                        }
                        _ => {
                            let mut v = String::new();
                            for p in pieces {
                                match p {
                                    Piece::Text(t) => v.push_str(t),
                                    Piece::Op(op, limit) => text_of(op, *limit, rec, &mut v),
                                }
                            }
                            json_str(&v, out);
                        }
                    }
                }
                out.push_str("}\n");
            }
        }
    }
}

fn capture(names: &[HeaderName], headers: &HeaderMap, out: &mut Vec<(HeaderName, HeaderValue)>) {
    for n in names {
        if let Some(v) = headers.get(n) {
            out.push((n.clone(), v.clone()));
        }
    }
}

/// Where `file` writes: `""` nowhere, `/dev/stdout` the proxy's output, a path a file (an
/// absolute one re-rooted under `root` when given: under `skein up`, the pod's own
/// directory).
pub fn sink_of(file: &str, root: Option<&Path>) -> AccessLogSink {
    match file {
        "" => AccessLogSink::Off,
        "/dev/stdout" => AccessLogSink::Stdout,
        path => match root {
            Some(root) => AccessLogSink::File(root.join(path.trim_start_matches('/'))),
            None => AccessLogSink::File(PathBuf::from(path)),
        },
    }
}

fn json_str(s: &str, out: &mut String) {
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("null"),
    }
}

fn header<'a>(list: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(n, _)| n.as_str() == name)
        .and_then(|(_, v)| v.to_str().ok())
}

fn request_header<'a>(rec: &'a LogRecord, name: &str) -> Option<&'a str> {
    let v = match name {
        "x-forwarded-for" => &rec.xff,
        "user-agent" => &rec.user_agent,
        "x-request-id" => &rec.request_id,
        "host" | ":authority" => &rec.authority,
        _ => return header(&rec.request_headers, name),
    };
    v.as_ref().and_then(|v| v.to_str().ok())
}

/// One operator's text (`-` when absent), cut to `limit` characters.
fn text_of(op: &Operator, limit: Option<usize>, rec: &LogRecord, out: &mut String) {
    let start = out.len();
    let s: Option<Cow<'_, str>> = match op {
        Operator::StartTime => {
            format_time(rec.start, out);
            None
        }
        Operator::Method => rec.method.as_ref().map(|m| Cow::Borrowed(m.as_str())),
        Operator::Path => rec.path.as_ref().map(|p| Cow::Borrowed(p.as_str())),
        Operator::Protocol => rec.protocol.map(Cow::Borrowed),
        Operator::ResponseCode => Some(Cow::Owned(rec.code.to_string())),
        Operator::ResponseFlags => Some(Cow::Owned(rec.flags.to_string())),
        Operator::ResponseCodeDetails => Some(Cow::Borrowed(&rec.details)),
        Operator::ConnectionTerminationDetails => None,
        Operator::UpstreamTransportFailureReason => {
            rec.transport_failure.as_deref().map(Cow::Borrowed)
        }
        Operator::BytesReceived => Some(Cow::Owned(rec.bytes_received.to_string())),
        Operator::BytesSent => Some(Cow::Owned(rec.bytes_sent.to_string())),
        Operator::Duration => Some(Cow::Owned(rec.duration_ms.to_string())),
        Operator::UpstreamServiceTime => {
            rec.upstream_service_time.map(|t| Cow::Owned(t.to_string()))
        }
        Operator::Authority => request_header(rec, ":authority").map(Cow::Borrowed),
        Operator::RequestHeader(h) => request_header(rec, h).map(Cow::Borrowed),
        Operator::ResponseHeader(h) => header(&rec.response_headers, h).map(Cow::Borrowed),
        Operator::UpstreamHost => rec.upstream_host.map(|a| Cow::Owned(a.to_string())),
        Operator::UpstreamCluster => rec.upstream_cluster.as_deref().map(Cow::Borrowed),
        Operator::UpstreamLocalAddress => rec.upstream_local.map(|a| Cow::Owned(a.to_string())),
        Operator::DownstreamLocalAddress => Some(Cow::Owned(rec.downstream_local.to_string())),
        Operator::DownstreamRemoteAddress => Some(Cow::Owned(rec.downstream_remote.to_string())),
        Operator::DownstreamRemoteAddressWithoutPort => {
            Some(Cow::Owned(rec.downstream_remote.ip().to_string()))
        }
        Operator::DownstreamPeerUriSan => {
            rec.peer.as_ref().map(|p| Cow::Owned(p.spiffe_id.clone()))
        }
        Operator::RequestedServerName => rec.sni.as_deref().map(Cow::Borrowed),
        Operator::RouteName => rec.route_name.as_deref().map(Cow::Borrowed),
    };
    match s {
        Some(s) if !s.is_empty() => out.push_str(&s),
        Some(_) => out.push('-'),
        None if out.len() == start => out.push('-'),
        None => {}
    }
    if let Some(n) = limit
        && let Some((i, _)) = out[start..].char_indices().nth(n)
    {
        out.truncate(start + i);
    }
}

fn borrowed(v: &str) -> Option<Value<'_>> {
    Some(Value::Str(Cow::Borrowed(v)))
}

impl Attributes for LogRecord {
    fn get(&self, a: &Attr) -> Option<Value<'_>> {
        let s = borrowed;
        let owned = |v: String| Some(Value::Str(Cow::Owned(v)));
        let int = |v: u64| Some(Value::Int(i64::try_from(v).unwrap_or(i64::MAX)));
        match a {
            Attr::RequestMethod => s(self.method.as_ref()?.as_str()),
            Attr::RequestPath => s(self.path.as_ref()?.as_str()),
            Attr::RequestUrlPath => s(self.path.as_ref()?.path()),
            Attr::RequestHost => s(request_header(self, ":authority")?),
            Attr::RequestScheme => s(if self.sni.is_some() && self.peer.is_none() {
                "https"
            } else {
                "http"
            }),
            Attr::RequestProtocol => s(self.protocol?),
            Attr::RequestId => s(request_header(self, "x-request-id")?),
            Attr::RequestUserAgent => s(request_header(self, "user-agent")?),
            Attr::RequestReferer => s(header(&self.request_headers, "referer")?),
            Attr::RequestSize => int(self.bytes_received),
            Attr::RequestHeader(h) => s(request_header(self, h)?),
            Attr::ResponseCode => int(u64::from(self.code)),
            Attr::ResponseCodeDetails => s(&self.details),
            Attr::ResponseFlags => owned(self.flags.to_string()),
            Attr::ResponseSize => int(self.bytes_sent),
            Attr::ResponseGrpcStatus => None,
            Attr::ResponseHeader(h) => match h.as_str() {
                "x-envoy-upstream-service-time" => owned(self.upstream_service_time?.to_string()),
                _ => s(header(&self.response_headers, h)?),
            },
            Attr::ConnectionMtls => Some(Value::Bool(self.peer.is_some())),
            Attr::ConnectionRequestedServerName => s(self.sni.as_deref()?),
            Attr::SourceAddress => owned(self.downstream_remote.to_string()),
            Attr::SourcePort => int(u64::from(self.downstream_remote.port())),
            Attr::DestinationAddress => owned(self.downstream_local.to_string()),
            Attr::DestinationPort => int(u64::from(self.downstream_local.port())),
            Attr::UpstreamAddress => owned(self.upstream_host?.to_string()),
            Attr::UpstreamPort => int(u64::from(self.upstream_host?.port())),
            Attr::UpstreamCluster => s(self.upstream_cluster.as_deref()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::UNIX_EPOCH;

    fn rec(code: u16, client: bool) -> LogRecord {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let mut r = LogRecord::new(a, b);
        r.start = UNIX_EPOCH;
        r.method = Some(http::Method::GET);
        r.path = Some(http::uri::PathAndQuery::from_static("/api/posts?x=1"));
        r.protocol = Some("HTTP/1.1");
        r.code = code;
        r.client = client;
        r.authority = Some(HeaderValue::from_static("was-service:8080"));
        r
    }

    fn proxy() -> ProxyConfig {
        ProxyConfig::sidecar("127.0.0.1:0".parse().unwrap())
    }

    fn section(file: &str) -> snap::AccessLog {
        snap::AccessLog {
            file: file.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_mesh_config_file_decides_and_the_flag_overrides() {
        let p = LogPolicy::compile(&section(""), &proxy()).unwrap();
        assert_eq!(p.sink, AccessLogSink::Off);
        assert!(
            !p.logs(true) && !p.logs(false),
            "Istio's default: no access log"
        );
        let p = LogPolicy::compile(&section("/dev/stdout"), &proxy()).unwrap();
        assert_eq!(p.sink, AccessLogSink::Stdout);
        assert!(p.logs(true) && p.logs(false));
        let mut px = proxy();
        px.access_log_root = Some(PathBuf::from("/state/pods/was-1/fs"));
        let p = LogPolicy::compile(&section("/var/log/access.log"), &px).unwrap();
        assert_eq!(
            p.sink,
            AccessLogSink::File(PathBuf::from("/state/pods/was-1/fs/var/log/access.log"))
        );
        let px = proxy().with_access_log(AccessLogSink::Stdout);
        let p = LogPolicy::compile(&section(""), &px).unwrap();
        assert_eq!(
            p.sink,
            AccessLogSink::Stdout,
            "the flag overrides the mesh config"
        );
        assert!(p.logs(false));
    }

    #[test]
    fn filters_and_disabled_per_direction() {
        let mut t = section("/dev/stdout");
        t.rules.server = Some(snap::AccessLogRule {
            disabled: false,
            filter: "response.code >= 400".into(),
        });
        t.rules.client = Some(snap::AccessLogRule {
            disabled: true,
            filter: String::new(),
        });
        let p = LogPolicy::compile(&t, &proxy()).unwrap();
        assert!(!p.logs(true));
        assert!(p.admits(&rec(503, false)));
        assert!(p.admits(&rec(404, false)));
        assert!(!p.admits(&rec(200, false)));
        assert!(!p.admits(&rec(503, true)));
        t.rules.server = Some(snap::AccessLogRule {
            disabled: false,
            filter: "response.cod >= 400".into(),
        });
        let e = LogPolicy::compile(&t, &proxy()).unwrap_err().to_string();
        assert!(
            e.contains("attribute `response.cod` is not supported"),
            "{e}"
        );
    }

    #[test]
    fn json_with_istios_keys_and_typed_numbers() {
        let mut t = section("/dev/stdout");
        t.encoding = snap::AccessLogEncoding::Json;
        let p = LogPolicy::compile(&t, &proxy()).unwrap();
        let mut out = String::new();
        p.format_into(&rec(200, false), &mut out);
        assert!(out.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/api/posts?x=1");
        assert_eq!(v["authority"], "was-service:8080");
        assert_eq!(v["start_time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["upstream_host"], serde_json::Value::Null);
        assert_eq!(v["bytes_sent"], 0);
        assert_eq!(v.as_object().unwrap().len(), log_format::ISTIO_JSON.len());
        // A provider's labels.
        t.json_format = [
            ("code".to_string(), "%RESPONSE_CODE%".to_string()),
            ("who".to_string(), "user=%REQ(X-USER)%".to_string()),
        ]
        .into();
        let p = LogPolicy::compile(&t, &proxy()).unwrap();
        assert_eq!(p.request_headers, vec![HeaderName::from_static("x-user")]);
        let mut r = rec(503, true);
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        p.capture_request(&h, &mut r);
        let mut out = String::new();
        p.format_into(&r, &mut out);
        assert_eq!(out, "{\"code\":503,\"who\":\"user=alice\"}\n");
    }

    #[test]
    fn a_custom_text_format_and_an_unknown_operator() {
        let mut t = section("/dev/stdout");
        t.format = "%REQ(:METHOD)% %REQ(:PATH):4% %RESPONSE_CODE% %UPSTREAM_HOST%".into();
        let p = LogPolicy::compile(&t, &proxy()).unwrap();
        let mut out = String::new();
        p.format_into(&rec(201, true), &mut out);
        assert_eq!(out, "GET /api 201 -\n");
        t.format = "%RESPONSE_CODE% %FILTER_STATE(x)%".into();
        let e = LogPolicy::compile(&t, &proxy()).unwrap_err().to_string();
        assert!(e.contains("%FILTER_STATE(x)% is not supported"), "{e}");
    }

    #[test]
    fn filters_read_captured_headers() {
        let mut t = section("/dev/stdout");
        t.rules.client = Some(snap::AccessLogRule {
            disabled: false,
            filter: "request.headers['x-debug'] == '1' || response.code >= 500".into(),
        });
        let p = LogPolicy::compile(&t, &proxy()).unwrap();
        assert_eq!(p.request_headers, vec![HeaderName::from_static("x-debug")]);
        let mut r = rec(200, true);
        assert!(!p.admits(&r));
        let mut h = HeaderMap::new();
        h.insert("x-debug", HeaderValue::from_static("1"));
        p.capture_request(&h, &mut r);
        assert!(p.admits(&r));
        assert!(p.admits(&rec(502, true)));
    }
}
