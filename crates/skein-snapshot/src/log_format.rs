//! Envoy access-log format strings (MeshConfig `accessLogFormat`, an `envoyFileAccessLog`
//! provider's `logFormat.text` and `logFormat.labels`): the command operators skein's
//! access log can fill, parsed once. An operator outside this set is an error naming it, at
//! apply time (validation) and when a proxy compiles its snapshot.

use std::collections::BTreeMap;

/// One command operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    StartTime,
    /// `%REQ(:METHOD)%`.
    Method,
    /// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%` or `%REQ(:PATH)%`.
    Path,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    /// `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`.
    UpstreamServiceTime,
    /// `%REQ(:AUTHORITY)%`.
    Authority,
    /// `%REQ(name)%` of any other request header (lower-cased).
    RequestHeader(String),
    /// `%RESP(name)%` of any other response header (lower-cased).
    ResponseHeader(String),
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamPeerUriSan,
    RequestedServerName,
    RouteName,
}

impl Operator {
    /// Whether Envoy's JSON formatter writes it as a number.
    pub fn is_number(&self) -> bool {
        matches!(
            self,
            Operator::ResponseCode
                | Operator::BytesReceived
                | Operator::BytesSent
                | Operator::Duration
                | Operator::UpstreamServiceTime
        )
    }
}

/// A piece of a format: text, or an operator with an optional `:N` length limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Op(Operator, Option<usize>),
}

/// Why a format was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error(
        "access log format: command operator %{0}% is not supported; skein fills the operators of Istio's default format (START_TIME, REQ(:METHOD), REQ(X-ENVOY-ORIGINAL-PATH?:PATH), PROTOCOL, RESPONSE_CODE, RESPONSE_FLAGS, RESPONSE_CODE_DETAILS, BYTES_RECEIVED, BYTES_SENT, DURATION, REQ(header), RESP(header), UPSTREAM_HOST, UPSTREAM_CLUSTER, DOWNSTREAM_*_ADDRESS, REQUESTED_SERVER_NAME, ROUTE_NAME, ...)"
    )]
    Unsupported(String),
    #[error("access log format: a `%` at byte {0} is not closed (write %% for a literal %)")]
    Unclosed(usize),
}

fn operator(body: &str) -> Option<Operator> {
    use Operator::*;
    if let Some(h) = body.strip_prefix("REQ(").and_then(|r| r.strip_suffix(')')) {
        let h = h.to_ascii_lowercase();
        return Some(match h.as_str() {
            ":method" => Method,
            "x-envoy-original-path?:path" | ":path" => Path,
            ":authority" | "host" => Authority,
            "" => return None,
            _ if h.contains('?') => return None,
            _ => RequestHeader(h),
        });
    }
    if let Some(h) = body.strip_prefix("RESP(").and_then(|r| r.strip_suffix(')')) {
        let h = h.to_ascii_lowercase();
        return Some(match h.as_str() {
            "x-envoy-upstream-service-time" => UpstreamServiceTime,
            "" => return None,
            _ if h.contains('?') => return None,
            _ => ResponseHeader(h),
        });
    }
    Some(match body {
        "START_TIME" => StartTime,
        "PROTOCOL" => Protocol,
        "RESPONSE_CODE" => ResponseCode,
        "RESPONSE_FLAGS" => ResponseFlags,
        "RESPONSE_CODE_DETAILS" => ResponseCodeDetails,
        "CONNECTION_TERMINATION_DETAILS" => ConnectionTerminationDetails,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => UpstreamTransportFailureReason,
        "BYTES_RECEIVED" => BytesReceived,
        "BYTES_SENT" => BytesSent,
        "DURATION" => Duration,
        "UPSTREAM_HOST" => UpstreamHost,
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => UpstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS" => DownstreamLocalAddress,
        "DOWNSTREAM_REMOTE_ADDRESS" => DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => DownstreamRemoteAddressWithoutPort,
        "DOWNSTREAM_PEER_URI_SAN" => DownstreamPeerUriSan,
        "REQUESTED_SERVER_NAME" => RequestedServerName,
        "ROUTE_NAME" => RouteName,
        _ => return None,
    })
}

/// Parses a text format. `%%` is a literal `%`.
pub fn parse(format: &str) -> Result<Vec<Piece>, FormatError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    let mut at = 0;
    while let Some(i) = rest.find('%') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            text.push('%');
            at += i + 2;
            rest = r;
            continue;
        }
        let Some(end) = after.find('%') else {
            return Err(FormatError::Unclosed(at + i));
        };
        let body = &after[..end];
        // `%OP%:N` limits the length.
        let (op_text, limit) = match body.rsplit_once(':') {
            Some((op, n))
                if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !op.ends_with('?') =>
            {
                (op, n.parse().ok())
            }
            _ => (body, None),
        };
        let op = operator(op_text).ok_or_else(|| FormatError::Unsupported(body.to_string()))?;
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Op(op, limit));
        at += i + 1 + end + 1;
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// Parses JSON labels (key -> format string).
pub fn parse_labels(
    labels: &BTreeMap<String, String>,
) -> Result<Vec<(String, Vec<Piece>)>, FormatError> {
    labels
        .iter()
        .map(|(k, v)| Ok((k.clone(), parse(v)?)))
        .collect()
}

/// Istio's default JSON access log (`EnvoyJSONLogFormatIstio`), key -> operator.
pub const ISTIO_JSON: &[(&str, &str)] = &[
    ("authority", "%REQ(:AUTHORITY)%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("duration", "%DURATION%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("route_name", "%ROUTE_NAME%"),
    ("start_time", "%START_TIME%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_default_text_format_parses() {
        let f = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";
        let p = parse(f).unwrap();
        assert_eq!(p[0], Piece::Text("[".into()));
        assert_eq!(p[1], Piece::Op(Operator::StartTime, None));
        assert!(p.contains(&Piece::Op(
            Operator::RequestHeader("x-request-id".into()),
            None
        )));
        for (_, v) in ISTIO_JSON {
            parse(v).unwrap();
        }
    }

    #[test]
    fn limits_percent_and_errors() {
        assert_eq!(
            parse("%REQ(:PATH):10% 100%%").unwrap(),
            vec![
                Piece::Op(Operator::Path, Some(10)),
                Piece::Text(" 100%".into())
            ]
        );
        assert_eq!(
            parse("%RESPONSE_CODE% %DYNAMIC_METADATA(istio.mixer:status)%"),
            Err(FormatError::Unsupported(
                "DYNAMIC_METADATA(istio.mixer:status)".into()
            ))
        );
        assert_eq!(parse("code %RESPONSE_CODE"), Err(FormatError::Unclosed(5)));
        let e = parse("%UPSTREAM_PEER_SUBJECT%").unwrap_err().to_string();
        assert!(
            e.contains("%UPSTREAM_PEER_SUBJECT% is not supported"),
            "{e}"
        );
    }
}
