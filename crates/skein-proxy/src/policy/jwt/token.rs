//! A compact JWS (`header.payload.signature`) taken apart: the three segments decoded, the
//! header's `alg` and `kid`, the payload's registered claims. Nothing is trusted yet: the
//! signature is checked by [`super::keys`]. Errors are Envoy's (jwt_verify_lib's) texts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::JwtError;

/// The longest token the proxy decodes (the request's headers are bounded anyway; this
/// bounds a query parameter's too).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token whose segments decode.
#[derive(Debug, Clone)]
pub struct Token<'a> {
    /// `header.payload`: what the signature signs.
    pub signed: &'a str,
    /// The signature segment, base64url.
    pub signature: &'a str,
    /// The payload segment, base64url (what `outputPayloadToHeader` forwards).
    pub payload_b64: &'a str,
    /// `alg`.
    pub alg: Algorithm,
    /// `kid`.
    pub kid: Option<String>,
    /// The payload's claims.
    pub claims: Map<String, Value>,
    /// `iss` ("" when missing).
    pub iss: String,
    /// `aud`, a string or a list of strings.
    pub aud: Vec<String>,
    /// `exp` in seconds since the epoch.
    pub exp: Option<u64>,
    /// `nbf`.
    pub nbf: Option<u64>,
}

fn b64(seg: &str) -> Option<Vec<u8>> {
    // Padding is tolerated, as jwt_verify_lib's decoder does.
    URL_SAFE_NO_PAD.decode(seg.trim_end_matches('=')).ok()
}

/// A numeric date: an integer (or a float, truncated) that is not negative.
fn numeric_date(v: Option<&Value>, err: JwtError) -> Result<Option<u64>, JwtError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(err),
        Some(_) => Err(err),
    }
}

/// Takes `text` apart.
pub fn parse(text: &str) -> Result<Token<'_>, JwtError> {
    if text.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::BadFormat);
    }
    let mut parts = text.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    let header = b64(h).ok_or(JwtError::HeaderBadBase64)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|_| JwtError::HeaderBadJson)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(JwtError::HeaderBadAlg),
    };
    let alg = match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(JwtError::HeaderNotImplementedAlg),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::HeaderBadKid),
    };
    let payload = b64(p).ok_or(JwtError::PayloadBadBase64)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| JwtError::PayloadBadJson)?;
    let string = |k: &str, err: JwtError| match claims.get(k) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(err),
    };
    let iss = string("iss", JwtError::PayloadIssNotString)?;
    string("sub", JwtError::PayloadSubNotString)?;
    let aud = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(JwtError::PayloadAudNotString)?,
        Some(_) => return Err(JwtError::PayloadAudNotString),
    };
    let exp = numeric_date(claims.get("exp"), JwtError::PayloadExpNotInteger)?;
    let nbf = numeric_date(claims.get("nbf"), JwtError::PayloadNbfNotInteger)?;
    if b64(s).is_none() {
        return Err(JwtError::SignatureBadBase64);
    }
    Ok(Token {
        signed: &text[..h.len() + 1 + p.len()],
        signature: s,
        payload_b64: p,
        alg,
        kid,
        claims,
        iss,
        aud,
        exp,
        nbf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn segments_are_decoded_and_claims_read() {
        let t = format!(
            "{}.{}.{}",
            enc(r#"{"alg":"RS256","kid":"k1"}"#),
            enc(r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":10,"nbf":1.5,"groups":["admin"]}"#),
            enc("sig")
        );
        let tok = parse(&t).unwrap();
        assert_eq!(tok.alg, Algorithm::RS256);
        assert_eq!(tok.kid.as_deref(), Some("k1"));
        assert_eq!(tok.iss, "i");
        assert_eq!(tok.aud, ["a", "b"]);
        assert_eq!((tok.exp, tok.nbf), (Some(10), Some(1)));
        assert_eq!(tok.signed, &t[..t.rfind('.').unwrap()]);
        assert_eq!(tok.claims["groups"][0], "admin");
    }

    #[test]
    fn malformed_tokens_get_envoys_reasons() {
        let h = enc(r#"{"alg":"ES256"}"#);
        let p = enc(r#"{"iss":"i"}"#);
        for (t, want) in [
            ("abc".to_string(), JwtError::BadFormat),
            ("a.b.c.d".to_string(), JwtError::BadFormat),
            (format!("!!.{p}.x"), JwtError::HeaderBadBase64),
            (format!("{}.{p}.x", enc("{")), JwtError::HeaderBadJson),
            (format!("{}.{p}.x", enc("{}")), JwtError::HeaderBadAlg),
            (
                format!("{}.{p}.x", enc(r#"{"alg":"none"}"#)),
                JwtError::HeaderNotImplementedAlg,
            ),
            (format!("{h}.!!.x"), JwtError::PayloadBadBase64),
            (format!("{h}.{}.x", enc("[1]")), JwtError::PayloadBadJson),
            (
                format!("{h}.{}.x", enc(r#"{"iss":1}"#)),
                JwtError::PayloadIssNotString,
            ),
            (
                format!("{h}.{}.x", enc(r#"{"aud":[1]}"#)),
                JwtError::PayloadAudNotString,
            ),
            (
                format!("{h}.{}.x", enc(r#"{"exp":"soon"}"#)),
                JwtError::PayloadExpNotInteger,
            ),
            (
                format!("{h}.{}.x", enc(r#"{"exp":-1}"#)),
                JwtError::PayloadExpNotInteger,
            ),
            (format!("{h}.{p}.*"), JwtError::SignatureBadBase64),
            ("a".repeat(MAX_TOKEN_BYTES + 1), JwtError::BadFormat),
        ] {
            assert_eq!(parse(&t).unwrap_err(), want, "{t}");
        }
    }
}
