//! RequestAuthentication: the JWT a request carries, checked as Envoy's `jwt_authn` filter
//! does under the configuration istiod generates.
//!
//! - A request with no token passes (its request principal is absent; an AuthorizationPolicy
//!   with `requestPrincipals` is what denies it), unless a rule says `presence: REQUIRED`.
//! - A token is looked for where the rules say (`fromHeaders`, `fromParams`,
//!   `fromCookies`), by default in `Authorization: Bearer ...` and the `access_token` query
//!   parameter; the first one found is checked against the rule of its `iss` that reads that
//!   location.
//! - A token that does not pass gets 401 with Envoy's reason as the body ("Jwt is expired",
//!   "Jwt issuer is not configured", "Audiences in Jwt are not allowed", "Jwt verification
//!   fails", ...): the order of the checks is Envoy's (format, issuer, time with 60 s of
//!   clock skew, audiences, keys, signature).
//! - A verified token gives `request.auth.*` to AuthorizationPolicy; its header is taken off
//!   the request unless `forwardOriginalToken`; `outputPayloadToHeader` and
//!   `outputClaimToHeaders` set headers for the app.
//!
//! Rules are compiled once per snapshot (keys parsed, header names checked); a proxy whose
//! snapshot has no rule never gets here.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use skein_snapshot::JwtRule;

pub(crate) mod keys;
pub(crate) mod remote;
pub(crate) mod token;

use keys::{KeySet, KeySetError};
use remote::RemoteJwks;

/// Envoy's clock skew for `exp` and `nbf`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a token was refused: jwt_verify_lib's status, whose text is the 401's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is missing")]
    Missing,
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt header is an invalid Base64url encoded")]
    HeaderBadBase64,
    #[error("Jwt header is an invalid JSON")]
    HeaderBadJson,
    #[error("Jwt header [alg] field is required and must be a string")]
    HeaderBadAlg,
    #[error("Jwt header [alg] is not supported")]
    HeaderNotImplementedAlg,
    #[error("Jwt header [kid] field is not a string")]
    HeaderBadKid,
    #[error("Jwt payload is an invalid Base64url encoded")]
    PayloadBadBase64,
    #[error("Jwt payload is an invalid JSON")]
    PayloadBadJson,
    #[error("Jwt payload [iss] field is not a string")]
    PayloadIssNotString,
    #[error("Jwt payload [sub] field is not a string")]
    PayloadSubNotString,
    #[error("Jwt payload [aud] field is not a string or string list")]
    PayloadAudNotString,
    #[error("Jwt payload [exp] field is not an integer")]
    PayloadExpNotInteger,
    #[error("Jwt payload [nbf] field is not an integer")]
    PayloadNbfNotInteger,
    #[error("Jwt signature is an invalid Base64url encoded")]
    SignatureBadBase64,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    #[error("Jwks remote fetch is failed")]
    JwksFetchFail,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    KidAlgMismatch,
    #[error("Jwt verification fails")]
    VerificationFail,
}

impl JwtError {
    /// Envoy's RESPONSE_CODE_DETAILS: `jwt_authn_access_denied{Jwt_is_expired}`.
    pub fn details(&self) -> String {
        format!(
            "jwt_authn_access_denied{{{}}}",
            self.to_string().replace(' ', "_")
        )
    }
}

/// A rule that cannot be enforced (the rest of the snapshot still applies; requests this
/// rule would check fail with "Jwt verification fails").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The inline `jwks` cannot be used.
    #[error("RequestAuthentication {policy}: issuer {issuer:?}: jwks: {error}")]
    Jwks {
        policy: String,
        issuer: String,
        error: KeySetError,
    },
    /// A header name that is not one.
    #[error(
        "RequestAuthentication {policy}: issuer {issuer:?}: {field}: {name:?} is not a valid HTTP header name"
    )]
    HeaderName {
        policy: String,
        issuer: String,
        field: &'static str,
        name: String,
    },
}

/// Where a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

#[derive(Debug)]
enum Keys {
    Inline(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
    /// The rule's keys did not compile: every token fails verification.
    Broken,
}

#[derive(Debug)]
struct Provider {
    issuer: String,
    audiences: Vec<String>,
    keys: Keys,
    /// Indices into [`Authn::locations`].
    locations: Vec<usize>,
    forward: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
    space_delimited: Arc<[String]>,
    required: bool,
}

/// The verified token: what AuthorizationPolicy's `request.auth.*` and `requestPrincipals`
/// read.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// `iss/sub`.
    pub principal: String,
    /// The payload.
    pub claims: Map<String, Value>,
    /// `aud`.
    pub audiences: Vec<String>,
    /// `azp` ("" when missing).
    pub presenter: String,
    /// Claims whose string value is a space-separated list (`scope`, `permission` and the
    /// rule's `spaceDelimitedClaims`).
    space_delimited: Arc<[String]>,
}

impl Principal {
    /// The principal of a token with these claims; `space_delimited` adds to `scope` and
    /// `permission`.
    pub fn from_claims(claims: Map<String, Value>, space_delimited: Arc<[String]>) -> Principal {
        let s = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let audiences = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(l)) => l
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Principal {
            principal: format!("{}/{}", s("iss"), s("sub")),
            presenter: s("azp"),
            audiences,
            space_delimited,
            claims,
        }
    }

    /// The values of claim `path` (`request.auth.claims[a][b]` is `["a", "b"]`): a string
    /// (split on spaces for space-delimited claims), each string of a list, a number or a
    /// boolean as text; empty when the claim is missing or an object.
    pub fn claim(&self, path: &[String]) -> Vec<Cow<'_, str>> {
        let Some((first, rest)) = path.split_first() else {
            return Vec::new();
        };
        let mut v = self.claims.get(first.as_str());
        for p in rest {
            v = v.and_then(|x| x.get(p.as_str()));
        }
        let split = path.len() == 1 && self.space_delimited.iter().any(|c| c == first);
        match v {
            Some(Value::String(s)) if split => s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(Cow::Borrowed)
                .collect(),
            Some(Value::Array(list)) => list.iter().filter_map(scalar).collect(),
            Some(other) => scalar(other).into_iter().collect(),
            None => Vec::new(),
        }
    }
}

/// `scope`, `permission` and `extra`: the claims read as space-separated lists.
pub fn space_delimited(extra: &[String]) -> Arc<[String]> {
    let mut v = vec!["scope".to_string(), "permission".to_string()];
    v.extend(extra.iter().cloned());
    v.into()
}

fn scalar(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// The compiled RequestAuthentication rules of one workload.
#[derive(Debug)]
pub struct Authn {
    providers: Vec<Provider>,
    /// Every location some rule reads, each once, in rule order.
    locations: Vec<Location>,
    /// Headers the proxy sets for the app (payload, claims): removed from every request
    /// first, so a client cannot send its own.
    output_headers: Vec<HeaderName>,
}

/// The outcome for one request.
#[derive(Debug)]
pub enum Outcome {
    /// No token (and none required).
    NoToken,
    /// A token that passed.
    Verified(Box<Principal>),
    /// 401.
    Denied(JwtError),
}

fn header_name(r: &JwtRule, field: &'static str, name: &str) -> Result<HeaderName, RuleError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| RuleError::HeaderName {
        policy: r.policy.clone(),
        issuer: r.issuer.clone(),
        field,
        name: name.to_string(),
    })
}

impl Authn {
    /// Compiles the rules; None when there are none. A rule that does not compile still
    /// checks its issuer's tokens, and fails them (fail closed), and is reported.
    pub fn compile(rules: &[JwtRule], fetch: &remote::Fetcher) -> (Option<Authn>, Vec<RuleError>) {
        if rules.is_empty() {
            return (None, Vec::new());
        }
        let mut errors = Vec::new();
        let mut a = Authn {
            providers: Vec::with_capacity(rules.len()),
            locations: Vec::new(),
            output_headers: Vec::new(),
        };
        for r in rules {
            let mut locs = Vec::new();
            let mut broken = false;
            for h in &r.from_headers {
                match header_name(r, "fromHeaders", &h.name) {
                    Ok(name) => locs.push(Location::Header {
                        name,
                        prefix: h.prefix.clone(),
                    }),
                    Err(e) => {
                        errors.push(e);
                        broken = true;
                    }
                }
            }
            locs.extend(r.from_params.iter().cloned().map(Location::Param));
            locs.extend(r.from_cookies.iter().cloned().map(Location::Cookie));
            if r.from_headers.is_empty() && r.from_params.is_empty() && r.from_cookies.is_empty() {
                locs.push(Location::Header {
                    name: http::header::AUTHORIZATION,
                    prefix: "Bearer ".to_string(),
                });
                locs.push(Location::Param("access_token".to_string()));
            }
            let locations = locs
                .into_iter()
                .map(|l| match a.locations.iter().position(|x| *x == l) {
                    Some(i) => i,
                    None => {
                        a.locations.push(l);
                        a.locations.len() - 1
                    }
                })
                .collect();
            let payload_header = match &r.output_payload_to_header {
                Some(h) => match header_name(r, "outputPayloadToHeader", h) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        errors.push(e);
                        broken = true;
                        None
                    }
                },
                None => None,
            };
            let mut claim_headers = Vec::new();
            for (h, c) in &r.output_claim_to_headers {
                match header_name(r, "outputClaimToHeaders", h) {
                    Ok(n) => claim_headers.push((n, c.clone())),
                    Err(e) => {
                        errors.push(e);
                        broken = true;
                    }
                }
            }
            for n in payload_header
                .iter()
                .chain(claim_headers.iter().map(|(n, _)| n))
            {
                if !a.output_headers.contains(n) {
                    a.output_headers.push(n.clone());
                }
            }
            let keys = if broken {
                Keys::Broken
            } else if let Some(jwks) = &r.jwks {
                match KeySet::parse(jwks) {
                    Ok(k) => Keys::Inline(Arc::new(k)),
                    Err(error) => {
                        errors.push(RuleError::Jwks {
                            policy: r.policy.clone(),
                            issuer: r.issuer.clone(),
                            error,
                        });
                        Keys::Broken
                    }
                }
            } else if let Some(uri) = &r.jwks_uri {
                Keys::Remote(fetch.get(uri, r.jwks_timeout_ms))
            } else {
                Keys::Broken
            };
            let space_delimited = space_delimited(&r.space_delimited_claims);
            a.providers.push(Provider {
                issuer: r.issuer.clone(),
                audiences: r.audiences.clone(),
                keys,
                locations,
                forward: r.forward_original_token,
                payload_header,
                claim_headers,
                space_delimited,
                required: r.presence_required,
            });
        }
        (Some(a), errors)
    }

    /// The first token in the request: where it was and the text.
    fn find<'h>(&self, headers: &'h HeaderMap, query: Option<&'h str>) -> Option<(usize, &'h str)> {
        for (i, l) in self.locations.iter().enumerate() {
            let found = match l {
                Location::Header { name, prefix } => headers.get_all(name).iter().find_map(|v| {
                    let v = v.to_str().ok()?.trim();
                    let t = v.strip_prefix(prefix.as_str())?.trim();
                    (!t.is_empty()).then_some(t)
                }),
                Location::Param(p) => query.and_then(|q| {
                    q.split('&').find_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        (k == p && !v.is_empty()).then_some(v)
                    })
                }),
                Location::Cookie(c) => headers.get_all(http::header::COOKIE).iter().find_map(|v| {
                    v.to_str().ok()?.split(';').find_map(|kv| {
                        let (k, v) = kv.trim().split_once('=')?;
                        (k == c && !v.is_empty()).then_some(v.trim_matches('"'))
                    })
                }),
            };
            if let Some(t) = found {
                return Some((i, t));
            }
        }
        None
    }

    /// Checks the request's token at `now` (seconds since the epoch) and, when it passes,
    /// edits the request's headers for the app.
    pub async fn authenticate(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Outcome {
        for n in &self.output_headers {
            headers.remove(n);
        }
        let Some((at, text)) = self.find(headers, query) else {
            if self.providers.iter().any(|p| p.required) {
                return Outcome::Denied(JwtError::Missing);
            }
            return Outcome::NoToken;
        };
        let verified = match self.check(at, text, now).await {
            Ok(v) => v,
            Err(e) => return Outcome::Denied(e),
        };
        let (p, principal, payload) = verified;
        if !p.forward
            && let Location::Header { name, .. } = &self.locations[at]
        {
            headers.remove(name);
        }
        if let Some(h) = &p.payload_header
            && let Ok(v) = HeaderValue::from_str(&payload)
        {
            headers.insert(h.clone(), v);
        }
        for (h, claim) in &p.claim_headers {
            let v = principal.claims.get(claim.as_str()).and_then(scalar);
            if let Some(v) = v.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(h.clone(), v);
            }
        }
        Outcome::Verified(principal)
    }

    async fn check(
        &self,
        at: usize,
        text: &str,
        now: u64,
    ) -> Result<(&Provider, Box<Principal>, String), JwtError> {
        let t = token::parse(text)?;
        let mut first_err = None;
        for p in self
            .providers
            .iter()
            .filter(|p| p.issuer == t.iss && p.locations.contains(&at))
        {
            match p.check(&t, now).await {
                Ok(()) => {
                    let principal = Box::new(Principal::from_claims(
                        t.claims,
                        Arc::clone(&p.space_delimited),
                    ));
                    return Ok((p, principal, t.payload_b64.to_string()));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(JwtError::UnknownIssuer))
    }
}

impl Provider {
    async fn check(&self, t: &token::Token<'_>, now: u64) -> Result<(), JwtError> {
        if let Some(nbf) = t.nbf
            && now.saturating_add(CLOCK_SKEW_SECS) < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        if let Some(exp) = t.exp
            && now > exp.saturating_add(CLOCK_SKEW_SECS)
        {
            return Err(JwtError::Expired);
        }
        if !self.audiences.is_empty() && !t.aud.iter().any(|a| audience_allowed(&self.audiences, a))
        {
            return Err(JwtError::AudienceNotAllowed);
        }
        match &self.keys {
            Keys::Inline(k) => k.verify(t),
            Keys::Remote(r) => match r.keys().await {
                Some(k) => k.verify(t),
                None => Err(JwtError::JwksFetchFail),
            },
            Keys::Broken => Err(JwtError::VerificationFail),
        }
    }
}

/// jwt_verify_lib compares audiences without a scheme and a trailing slash.
fn audience_allowed(allowed: &[String], aud: &str) -> bool {
    fn bare(a: &str) -> &str {
        let a = a
            .strip_prefix("https://")
            .or_else(|| a.strip_prefix("http://"))
            .unwrap_or(a);
        a.strip_suffix('/').unwrap_or(a)
    }
    allowed.iter().any(|x| bare(x) == bare(aud))
}

#[cfg(test)]
mod tests;
