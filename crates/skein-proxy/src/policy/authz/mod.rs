//! AuthorizationPolicy evaluation for the sidecar's inbound side. Pure: no I/O, no clock.
//!
//! Order (Istio's): a matching DENY denies; with no ALLOW policy everything else is allowed;
//! a matching ALLOW allows; anything else is denied. AUDIT only marks. A policy without rules
//! matches nothing; a rule with no `from`/`to`/`when` matches everything.
//!
//! On opaque TCP, HTTP-only attributes (hosts, methods, paths, request principals, request
//! headers, `request.auth.*`) do not exist. As Istio generates it: an ALLOW rule that uses one
//! never matches (a smaller allow), while in a DENY or AUDIT rule such a field is dropped,
//! i.e. counts as matching (a wider deny).
//!
//! Policies are compiled once per snapshot (CIDRs parsed, hosts lowercased), so a request
//! with no policies costs one emptiness check.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
use skein_snapshot::{
    AuthzAction, AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource,
};

use crate::identity::PeerIdentity;
use crate::policy::jwt::Principal;

/// Details of a denial when no ALLOW policy matched.
pub const DENIED_NO_MATCH: &str = "rbac_access_denied_matched_policy[none]";

/// A policy that cannot be enforced as written (the snapshot is refused).
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// A `when` key the engine cannot evaluate: refused rather than never matching (which
    /// would make a DENY deny nothing).
    #[error(
        "AuthorizationPolicy {namespace}/{name}: condition key {key:?} is not supported (supported: request.headers[NAME], source.ip, source.namespace, source.principal, remote.ip, destination.ip, destination.port, connection.sni, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[NAME])"
    )]
    UnsupportedKey {
        namespace: String,
        name: String,
        key: String,
    },
    /// An IP block is neither an address nor a CIDR.
    #[error(
        "AuthorizationPolicy {namespace}/{name}: {field} value {value:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)"
    )]
    BadIpBlock {
        namespace: String,
        name: String,
        field: &'static str,
        value: String,
    },
}

/// Istio's string match: exact, `prefix*`, `*suffix`, or `*` (present and non-empty).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    fn new(s: &str, lowercase: bool) -> Pattern {
        let s = if lowercase {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        };
        if s == "*" {
            Pattern::Any
        } else if let Some(rest) = s.strip_prefix('*') {
            Pattern::Suffix(rest.to_string())
        } else if let Some(rest) = s.strip_suffix('*') {
            Pattern::Prefix(rest.to_string())
        } else {
            Pattern::Exact(s)
        }
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => !v.is_empty(),
            Pattern::Exact(s) => v == s,
            Pattern::Prefix(p) => v.starts_with(p.as_str()),
            Pattern::Suffix(p) => v.ends_with(p.as_str()),
        }
    }
}

/// An IP address or CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Treats IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, `x::y` or `x::y/n`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let ip = canonical(ip);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr: ip, prefix })
    }

    /// True when `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What one request or connection looks like to a policy.
#[derive(Debug, Clone, Copy)]
pub struct Attrs<'a> {
    /// The connection's source address.
    pub source: IpAddr,
    /// The address the connection was accepted on (`destination.ip`).
    pub destination: SocketAddr,
    /// The workload (container) port: `ports` and `destination.port`.
    pub workload_port: u16,
    /// The mTLS peer, if any.
    pub peer: Option<&'a PeerIdentity>,
    /// TLS SNI of the connection (`connection.sni`).
    pub sni: Option<&'a str>,
    /// HTTP attributes; None for an opaque TCP connection.
    pub http: Option<HttpAttrs<'a>>,
}

/// The HTTP part of [`Attrs`].
#[derive(Debug, Clone, Copy)]
pub struct HttpAttrs<'a> {
    /// Host / `:authority`.
    pub host: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The trusted client address (Envoy's downstream remote address after its
    /// X-Forwarded-For handling with Istio's `numTrustedProxies`; the proxy works it out,
    /// never from the leftmost XFF entry a client chose).
    pub remote: IpAddr,
    /// The request's verified JWT (RequestAuthentication), if any.
    pub auth: Option<&'a Principal>,
}

impl Attrs<'_> {
    /// `remote.ip` / `remoteIpBlocks`: the trusted client address; on opaque TCP (no
    /// X-Forwarded-For, no PROXY protocol) the source.
    fn remote_ip(&self) -> IpAddr {
        self.http.map_or(self.source, |h| h.remote)
    }
}

/// The outcome for one request or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `audit` when an AUDIT policy matched.
    Allow {
        /// An AUDIT policy matched.
        audit: bool,
    },
    /// Denied; `details` is Envoy's RESPONSE_CODE_DETAILS for it.
    Deny {
        /// `rbac_access_denied_matched_policy[...]`.
        details: Arc<str>,
        /// An AUDIT policy matched.
        audit: bool,
    },
}

impl Decision {
    #[cfg(test)]
    /// True when allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// A `when` key.
#[derive(Debug, Clone)]
enum Key {
    Header(String),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationPort,
    DestinationIp,
    ConnectionSni,
    /// `request.auth.principal`: the JWT's `iss/sub`.
    AuthPrincipal,
    /// `request.auth.audiences`: its `aud`.
    AuthAudiences,
    /// `request.auth.presenter`: its `azp`.
    AuthPresenter,
    /// `request.auth.claims[a][b]...`: a claim, nested.
    AuthClaims(Vec<String>),
}

impl Key {
    /// None for a key skein does not know (the policy is refused).
    fn parse(k: &str) -> Option<Key> {
        if let Some(h) = k
            .strip_prefix("request.headers[")
            .and_then(|r| r.strip_suffix(']'))
        {
            return Some(Key::Header(h.to_ascii_lowercase()));
        }
        Some(match k {
            "source.ip" => Key::SourceIp,
            "remote.ip" => Key::RemoteIp,
            "source.namespace" => Key::SourceNamespace,
            "source.principal" => Key::SourcePrincipal,
            "destination.port" => Key::DestinationPort,
            "destination.ip" => Key::DestinationIp,
            "connection.sni" => Key::ConnectionSni,
            "request.auth.principal" => Key::AuthPrincipal,
            "request.auth.audiences" => Key::AuthAudiences,
            "request.auth.presenter" => Key::AuthPresenter,
            k if k.starts_with("request.auth.claims[") => {
                Key::AuthClaims(claim_path(k.strip_prefix("request.auth.claims")?)?)
            }
            _ => return None,
        })
    }

    fn http_only(&self) -> bool {
        matches!(
            self,
            Key::Header(_)
                | Key::AuthPrincipal
                | Key::AuthAudiences
                | Key::AuthPresenter
                | Key::AuthClaims(_)
        )
    }

    fn is_ip(&self) -> bool {
        matches!(self, Key::SourceIp | Key::RemoteIp | Key::DestinationIp)
    }
}

/// `[a][b]` -> `["a", "b"]` (None when not that form, or a name is empty).
fn claim_path(mut rest: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        if end == 0 {
            return None;
        }
        out.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

/// Values of a list field: strings or IP blocks.
#[derive(Debug, Clone)]
enum Values {
    Str(Vec<Pattern>),
    Ip(Vec<Cidr>),
}

impl Values {
    fn is_empty(&self) -> bool {
        match self {
            Values::Str(v) => v.is_empty(),
            Values::Ip(v) => v.is_empty(),
        }
    }
}

/// An attribute's value for one request.
enum Value<'a> {
    Str(Cow<'a, str>),
    /// Several strings (a list claim): matches when one does.
    Many(Vec<Cow<'a, str>>),
    /// Host: lowercase, and the same without its port; a pattern may match either.
    Host(String),
    Ip(IpAddr),
    /// Not there (no mTLS peer, missing header, no SNI).
    Absent,
    /// Only exists for HTTP, and this is opaque TCP.
    NotApplicable,
}

impl Value<'_> {
    /// Does any of `vals` match? None: not applicable.
    fn any(&self, vals: &Values) -> Option<bool> {
        Some(match (self, vals) {
            (Value::NotApplicable, _) => return None,
            (Value::Absent, _) => false,
            (Value::Str(s), Values::Str(p)) => p.iter().any(|p| p.matches(s)),
            (Value::Many(list), Values::Str(p)) => {
                list.iter().any(|s| p.iter().any(|p| p.matches(s)))
            }
            (Value::Host(h), Values::Str(p)) => {
                let bare = crate::authority::strip_port(h);
                p.iter().any(|p| p.matches(h) || p.matches(bare))
            }
            (Value::Ip(ip), Values::Ip(c)) => c.iter().any(|c| c.contains(*ip)),
            // Mismatched kinds cannot come out of compile; never match rather than panic.
            _ => false,
        })
    }
}

/// One positive/negative pair (`principals` + `notPrincipals`, `values` + `notValues`).
#[derive(Debug, Clone)]
struct Field {
    attr: Attr,
    yes: Values,
    no: Values,
}

/// Which attribute a field tests.
#[derive(Debug, Clone)]
enum Attr {
    Principal,
    RequestPrincipal,
    Namespace,
    SourceIp,
    RemoteIp,
    Host,
    Port,
    Method,
    Path,
    Key(Key),
}

impl Attr {
    fn http_only(&self) -> bool {
        match self {
            Attr::RequestPrincipal | Attr::Host | Attr::Method | Attr::Path => true,
            Attr::Key(k) => k.http_only(),
            _ => false,
        }
    }

    fn value<'a>(&self, a: &Attrs<'a>) -> Value<'a> {
        let http = |f: fn(&HttpAttrs<'a>) -> &'a str| match &a.http {
            Some(h) => Value::Str(Cow::Borrowed(f(h))),
            None => Value::NotApplicable,
        };
        let peer = |f: fn(&'a PeerIdentity) -> &'a str| match a.peer {
            Some(p) => Value::Str(Cow::Borrowed(f(p))),
            None => Value::Absent,
        };
        match self {
            Attr::Principal => peer(|p| p.principal.as_str()),
            Attr::Namespace => peer(|p| p.namespace.as_str()),
            Attr::RequestPrincipal => auth(a, |p| Value::Str(Cow::Borrowed(p.principal.as_str()))),
            Attr::SourceIp => Value::Ip(a.source),
            Attr::RemoteIp => Value::Ip(a.remote_ip()),
            Attr::Host => match &a.http {
                Some(h) => Value::Host(h.host.to_ascii_lowercase()),
                None => Value::NotApplicable,
            },
            Attr::Method => http(|h| h.method),
            Attr::Path => http(|h| h.path),
            Attr::Port => Value::Str(Cow::Owned(a.workload_port.to_string())),
            Attr::Key(k) => match k {
                Key::Header(name) => match &a.http {
                    None => Value::NotApplicable,
                    Some(h) => {
                        let mut vals = h.headers.get_all(name.as_str()).iter();
                        match (vals.next(), vals.next()) {
                            (None, _) => Value::Absent,
                            (Some(v), None) => Value::Str(String::from_utf8_lossy(v.as_bytes())),
                            // Repeated headers are matched joined, as Envoy does.
                            (Some(_), Some(_)) => Value::Str(Cow::Owned(
                                h.headers
                                    .get_all(name.as_str())
                                    .iter()
                                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                    .collect::<Vec<_>>()
                                    .join(","),
                            )),
                        }
                    }
                },
                Key::SourceIp => Value::Ip(a.source),
                Key::RemoteIp => Value::Ip(a.remote_ip()),
                Key::DestinationIp => Value::Ip(a.destination.ip()),
                Key::SourceNamespace => peer(|p| p.namespace.as_str()),
                Key::SourcePrincipal => peer(|p| p.principal.as_str()),
                Key::DestinationPort => Value::Str(Cow::Owned(a.workload_port.to_string())),
                Key::ConnectionSni => match a.sni {
                    Some(s) => Value::Str(Cow::Borrowed(s)),
                    None => Value::Absent,
                },
                Key::AuthPrincipal => auth(a, |p| Value::Str(Cow::Borrowed(p.principal.as_str()))),
                Key::AuthPresenter => auth(a, |p| match p.presenter.as_str() {
                    "" => Value::Absent,
                    s => Value::Str(Cow::Borrowed(s)),
                }),
                Key::AuthAudiences => auth(a, |p| {
                    Value::Many(
                        p.audiences
                            .iter()
                            .map(|s| Cow::Borrowed(s.as_str()))
                            .collect(),
                    )
                }),
                Key::AuthClaims(path) => auth(a, |p| match p.claim(path) {
                    v if v.is_empty() => Value::Absent,
                    v => Value::Many(v),
                }),
            },
        }
    }
}

/// A `request.auth.*` value: absent without a verified token, not applicable on TCP.
fn auth<'a>(a: &Attrs<'a>, f: impl FnOnce(&'a Principal) -> Value<'a>) -> Value<'a> {
    match &a.http {
        None => Value::NotApplicable,
        Some(h) => h.auth.map_or(Value::Absent, f),
    }
}

impl Field {
    /// `na` is what a field that does not apply (HTTP-only on TCP) counts as.
    fn matches(&self, a: &Attrs<'_>, na: bool) -> bool {
        let v = self.attr.value(a);
        let yes = self.yes.is_empty() || v.any(&self.yes).unwrap_or(na);
        let no = self.no.is_empty() || v.any(&self.no).map_or(na, |m| !m);
        yes && no
    }
}

#[derive(Debug, Clone)]
struct Rule {
    from: Vec<Vec<Field>>,
    to: Vec<Vec<Field>>,
    when: Vec<Field>,
    /// Uses an attribute that only HTTP has.
    http_only: bool,
    /// `rbac_access_denied_matched_policy[ns[..]-policy[..]-rule[N]]`.
    details: Arc<str>,
}

impl Rule {
    fn matches(&self, a: &Attrs<'_>, deny_like: bool) -> bool {
        if a.http.is_none() && self.http_only && !deny_like {
            return false;
        }
        let all = |fs: &[Field]| fs.iter().all(|f| f.matches(a, deny_like));
        (self.from.is_empty() || self.from.iter().any(|s| all(s)))
            && (self.to.is_empty() || self.to.iter().any(|o| all(o)))
            && all(&self.when)
    }
}

#[derive(Debug, Clone)]
struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    fn first_match(&self, a: &Attrs<'_>, deny_like: bool) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(a, deny_like))
    }
}

/// The compiled AuthorizationPolicies of one workload.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
}

struct Compiler<'a> {
    policy: &'a AuthzPolicy,
}

impl Compiler<'_> {
    fn strs(&self, v: &[String], lowercase: bool) -> Values {
        Values::Str(v.iter().map(|s| Pattern::new(s, lowercase)).collect())
    }

    fn ips(&self, v: &[String], field: &'static str) -> Result<Values, AuthzError> {
        v.iter()
            .map(|s| {
                Cidr::parse(s).ok_or_else(|| AuthzError::BadIpBlock {
                    namespace: self.policy.namespace.clone(),
                    name: self.policy.name.clone(),
                    field,
                    value: s.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Values::Ip)
    }

    fn push_str(&self, out: &mut Vec<Field>, attr: Attr, yes: &[String], no: &[String], lc: bool) {
        if !yes.is_empty() || !no.is_empty() {
            out.push(Field {
                attr,
                yes: self.strs(yes, lc),
                no: self.strs(no, lc),
            });
        }
    }

    fn source(&self, s: &AuthzSource) -> Result<Vec<Field>, AuthzError> {
        let mut f = Vec::new();
        self.push_str(
            &mut f,
            Attr::Principal,
            &s.principals,
            &s.not_principals,
            false,
        );
        self.push_str(
            &mut f,
            Attr::RequestPrincipal,
            &s.request_principals,
            &s.not_request_principals,
            false,
        );
        self.push_str(
            &mut f,
            Attr::Namespace,
            &s.namespaces,
            &s.not_namespaces,
            false,
        );
        if !s.ip_blocks.is_empty() || !s.not_ip_blocks.is_empty() {
            f.push(Field {
                attr: Attr::SourceIp,
                yes: self.ips(&s.ip_blocks, "ipBlocks")?,
                no: self.ips(&s.not_ip_blocks, "notIpBlocks")?,
            });
        }
        if !s.remote_ip_blocks.is_empty() || !s.not_remote_ip_blocks.is_empty() {
            f.push(Field {
                attr: Attr::RemoteIp,
                yes: self.ips(&s.remote_ip_blocks, "remoteIpBlocks")?,
                no: self.ips(&s.not_remote_ip_blocks, "notRemoteIpBlocks")?,
            });
        }
        Ok(f)
    }

    fn operation(&self, o: &AuthzOperation) -> Vec<Field> {
        let mut f = Vec::new();
        self.push_str(&mut f, Attr::Host, &o.hosts, &o.not_hosts, true);
        self.push_str(&mut f, Attr::Port, &o.ports, &o.not_ports, false);
        self.push_str(&mut f, Attr::Method, &o.methods, &o.not_methods, false);
        self.push_str(&mut f, Attr::Path, &o.paths, &o.not_paths, false);
        f
    }

    fn condition(&self, c: &AuthzCondition) -> Result<Field, AuthzError> {
        let Some(key) = Key::parse(&c.key) else {
            return Err(AuthzError::UnsupportedKey {
                namespace: self.policy.namespace.clone(),
                name: self.policy.name.clone(),
                key: c.key.clone(),
            });
        };
        let (yes, no) = if key.is_ip() {
            (
                self.ips(&c.values, "when.values")?,
                self.ips(&c.not_values, "when.notValues")?,
            )
        } else {
            (self.strs(&c.values, false), self.strs(&c.not_values, false))
        };
        Ok(Field {
            attr: Attr::Key(key),
            yes,
            no,
        })
    }

    fn rule(&self, i: usize, r: &AuthzRule) -> Result<Rule, AuthzError> {
        let from = r
            .from
            .iter()
            .map(|s| self.source(s))
            .collect::<Result<Vec<_>, _>>()?;
        let to: Vec<Vec<Field>> = r.to.iter().map(|o| self.operation(o)).collect();
        let when = r
            .when
            .iter()
            .map(|c| self.condition(c))
            .collect::<Result<Vec<_>, _>>()?;
        let http_only = from
            .iter()
            .chain(to.iter())
            .flatten()
            .chain(when.iter())
            .any(|f| f.attr.http_only());
        Ok(Rule {
            from,
            to,
            when,
            http_only,
            details: Arc::from(format!(
                "rbac_access_denied_matched_policy[{}]",
                self.policy.rule_id(i)
            )),
        })
    }
}

impl Engine {
    /// Compiles a workload's policies.
    pub fn compile(policies: &[AuthzPolicy]) -> Result<Engine, AuthzError> {
        let mut e = Engine::default();
        for p in policies {
            let c = Compiler { policy: p };
            let rules = p
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| c.rule(i, r))
                .collect::<Result<Vec<_>, _>>()?;
            let compiled = Policy { rules };
            match p.action {
                AuthzAction::Allow => e.allow.push(compiled),
                AuthzAction::Deny => e.deny.push(compiled),
                AuthzAction::Audit => e.audit.push(compiled),
            }
        }
        Ok(e)
    }

    /// True when no policy applies (everything is allowed, nothing to evaluate).
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty()
    }

    /// Evaluates one request (HTTP) or connection (TCP).
    pub fn evaluate(&self, a: &Attrs<'_>) -> Decision {
        if self.is_empty() {
            return Decision::Allow { audit: false };
        }
        let audit = self.audit.iter().any(|p| p.first_match(a, true).is_some());
        for p in &self.deny {
            if let Some(r) = p.first_match(a, true) {
                return Decision::Deny {
                    details: Arc::clone(&r.details),
                    audit,
                };
            }
        }
        if self.allow.is_empty() || self.allow.iter().any(|p| p.first_match(a, false).is_some()) {
            return Decision::Allow { audit };
        }
        Decision::Deny {
            details: Arc::from(DENIED_NO_MATCH),
            audit,
        }
    }
}

#[cfg(test)]
mod tests;
