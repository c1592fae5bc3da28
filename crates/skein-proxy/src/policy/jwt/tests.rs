//! RequestAuthentication against Envoy's jwt_authn behaviour, with keys made for the test
//! (ES256 by rcgen, a fixed RSA test key, an HMAC secret) and an explicit clock.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use skein_snapshot::{JwtHeader, JwtRule};

use super::remote::Fetcher;
use super::*;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://issuer.example";
const RSA_PEM: &[u8] = include_bytes!("testdata/rsa-test-key.pem");
const RSA_JWKS: &str = include_str!("testdata/rsa-test-jwks.json");

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PEM).expect("test key")
}

fn mint(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: serde_json::Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, &claims, key).expect("signs")
}

fn rs256(claims: serde_json::Value) -> String {
    mint(Algorithm::RS256, Some("test-rsa"), &rsa_key(), claims)
}

fn good_claims() -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "aud": "blog", "exp": NOW + 3600, "groups": ["admin"]})
}

fn rule(jwks: &str) -> JwtRule {
    JwtRule {
        policy: "ns/jwt".into(),
        issuer: ISS.into(),
        audiences: vec!["blog".into()],
        jwks: Some(jwks.into()),
        ..Default::default()
    }
}

fn compile(rules: &[JwtRule]) -> Authn {
    let (a, errors) = Authn::compile(rules, &Fetcher { via: None });
    assert!(errors.is_empty(), "{errors:?}");
    a.expect("rules")
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

async fn run(
    a: &Authn,
    headers: &mut HeaderMap,
    query: Option<&str>,
) -> Result<Option<Principal>, JwtError> {
    match a.authenticate(headers, query, NOW).await {
        Outcome::NoToken => Ok(None),
        Outcome::Verified(p) => Ok(Some(*p)),
        Outcome::Denied(e) => Err(e),
    }
}

async fn check(a: &Authn, token: &str) -> Result<Option<Principal>, JwtError> {
    run(a, &mut bearer(token), None).await
}

#[tokio::test]
async fn a_token_signed_with_the_test_key_passes_and_the_app_gets_no_authorization_header() {
    let mut r = rule(RSA_JWKS);
    r.output_payload_to_header = Some("x-jwt-payload".into());
    r.output_claim_to_headers = vec![("x-jwt-sub".into(), "sub".into())];
    let a = compile(&[r]);
    let token = rs256(good_claims());
    let mut h = bearer(&token);
    // What a client sends in the proxy's own headers does not reach the app.
    h.insert("x-jwt-sub", HeaderValue::from_static("mallory"));
    let p = run(&a, &mut h, None)
        .await
        .expect("passes")
        .expect("principal");
    assert_eq!(p.principal, "https://issuer.example/alice");
    assert_eq!(p.audiences, ["blog"]);
    assert!(h.get("authorization").is_none(), "{h:?}");
    let payload = h
        .get("x-jwt-payload")
        .expect("payload header")
        .to_str()
        .unwrap();
    assert_eq!(payload, token.split('.').nth(1).unwrap());
    let decoded: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(decoded["groups"][0], "admin");
    assert_eq!(h.get("x-jwt-sub").unwrap(), "alice");
}

#[tokio::test]
async fn bad_tokens_get_envoys_reasons() {
    let a = compile(&[rule(RSA_JWKS)]);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = good_claims();
        f(&mut c);
        rs256(c)
    };
    let expired = with(&|c| c["exp"] = json!(NOW - 61));
    let wrong_issuer = with(&|c| c["iss"] = json!("https://other.example"));
    let wrong_audience = with(&|c| c["aud"] = json!(["other"]));
    let not_yet = with(&|c| c["nbf"] = json!(NOW + 61));
    // A payload changed after signing.
    let good = rs256(good_claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({"iss": ISS, "sub": "root", "aud": "blog", "exp": NOW + 3600}))
            .unwrap(),
    );
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    let unknown_kid = mint(Algorithm::RS256, Some("other"), &rsa_key(), good_claims());
    for (token, want) in [
        (expired.as_str(), JwtError::Expired),
        (wrong_issuer.as_str(), JwtError::UnknownIssuer),
        (wrong_audience.as_str(), JwtError::AudienceNotAllowed),
        (not_yet.as_str(), JwtError::NotYetValid),
        (forged.as_str(), JwtError::VerificationFail),
        (unknown_kid.as_str(), JwtError::KidAlgMismatch),
        ("not-a-jwt", JwtError::BadFormat),
    ] {
        assert_eq!(check(&a, token).await.unwrap_err(), want, "{token}");
    }
    assert_eq!(JwtError::Expired.to_string(), "Jwt is expired");
    assert_eq!(
        JwtError::Expired.details(),
        "jwt_authn_access_denied{Jwt_is_expired}"
    );
}

#[tokio::test]
async fn exp_and_nbf_allow_sixty_seconds_of_clock_skew() {
    let a = compile(&[rule(RSA_JWKS)]);
    let mut c = good_claims();
    c["exp"] = json!(NOW - 60);
    c["nbf"] = json!(NOW + 60);
    assert!(check(&a, &rs256(c)).await.unwrap().is_some());
}

#[tokio::test]
async fn no_token_passes_unless_required() {
    let a = compile(&[rule(RSA_JWKS)]);
    assert_eq!(run(&a, &mut HeaderMap::new(), None).await, Ok(None));
    // A header without the Bearer prefix is not a token location.
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_static("Basic YTpi"));
    assert_eq!(run(&a, &mut h, None).await, Ok(None));
    let mut r = rule(RSA_JWKS);
    r.presence_required = true;
    let a = compile(&[r]);
    assert_eq!(
        run(&a, &mut HeaderMap::new(), None).await,
        Err(JwtError::Missing)
    );
}

#[tokio::test]
async fn default_locations_include_the_access_token_parameter() {
    let a = compile(&[rule(RSA_JWKS)]);
    let token = rs256(good_claims());
    let q = format!("page=2&access_token={token}");
    let p = run(&a, &mut HeaderMap::new(), Some(&q)).await.unwrap();
    assert_eq!(p.unwrap().principal, "https://issuer.example/alice");
}

#[tokio::test]
async fn from_headers_with_a_prefix_from_params_and_forward_original_token() {
    let mut r = rule(RSA_JWKS);
    r.from_headers = vec![JwtHeader {
        name: "x-jwt".into(),
        prefix: "Token ".into(),
    }];
    r.from_params = vec!["jwt".into()];
    r.forward_original_token = true;
    let a = compile(&[r]);
    let token = rs256(good_claims());
    let mut h = HeaderMap::new();
    h.insert(
        "x-jwt",
        HeaderValue::from_str(&format!("Token {token}")).unwrap(),
    );
    assert!(run(&a, &mut h, None).await.unwrap().is_some());
    assert!(h.get("x-jwt").is_some(), "forwardOriginalToken keeps it");
    // The default locations are not read when the rule names its own.
    assert_eq!(check(&a, &token).await, Ok(None));
    let q = format!("jwt={token}");
    assert!(
        run(&a, &mut HeaderMap::new(), Some(&q))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn es256_hs256_and_ps256_keys_verify() {
    let kp = rcgen::KeyPair::generate().expect("P-256 key");
    let raw = kp.public_key_raw();
    let (x, y) = (&raw[1..33], &raw[33..65]);
    let ec_jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec",
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]})
    .to_string();
    let ec = EncodingKey::from_ec_der(&kp.serialize_der());
    let a = compile(&[rule(&ec_jwks)]);
    let t = mint(Algorithm::ES256, Some("ec"), &ec, good_claims());
    assert!(check(&a, &t).await.unwrap().is_some());
    // The same token re-signed by another P-256 key fails.
    let other = rcgen::KeyPair::generate().expect("key");
    let t2 = mint(
        Algorithm::ES256,
        Some("ec"),
        &EncodingKey::from_ec_der(&other.serialize_der()),
        good_claims(),
    );
    assert_eq!(check(&a, &t2).await, Err(JwtError::VerificationFail));

    let secret = b"a shared secret of some length!!";
    let oct = json!({"keys": [{"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret)}]}).to_string();
    let a = compile(&[rule(&oct)]);
    let t = mint(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(secret),
        good_claims(),
    );
    assert!(check(&a, &t).await.unwrap().is_some());
    // An RSA key may not verify an HMAC token (no algorithm confusion).
    let a = compile(&[rule(RSA_JWKS)]);
    assert_eq!(check(&a, &t).await, Err(JwtError::KidAlgMismatch));

    // PS256 with an RSA key that does not pin its algorithm.
    let mut jwks: serde_json::Value = serde_json::from_str(RSA_JWKS).unwrap();
    jwks["keys"][0].as_object_mut().unwrap().remove("alg");
    let a = compile(&[rule(&jwks.to_string())]);
    let t = mint(
        Algorithm::PS256,
        Some("test-rsa"),
        &rsa_key(),
        good_claims(),
    );
    assert!(check(&a, &t).await.unwrap().is_some());
    // The pinned key refuses PS256.
    let a = compile(&[rule(RSA_JWKS)]);
    assert_eq!(check(&a, &t).await, Err(JwtError::KidAlgMismatch));
}

#[tokio::test]
async fn a_token_is_checked_against_the_rule_of_its_issuer() {
    let secret = b"second issuer's secret, 32 bytes";
    let oct = json!({"keys": [{"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret)}]}).to_string();
    let mut second = rule(&oct);
    second.issuer = "https://second.example".into();
    second.audiences = vec!["https://api.example/".into()];
    let a = compile(&[rule(RSA_JWKS), second]);
    let mut c = good_claims();
    c["iss"] = json!("https://second.example");
    // Audiences match without their scheme and trailing slash, as jwt_verify_lib's.
    c["aud"] = json!("api.example");
    let t = mint(Algorithm::HS256, None, &EncodingKey::from_secret(secret), c);
    let p = check(&a, &t).await.unwrap().unwrap();
    assert_eq!(p.principal, "https://second.example/alice");
    assert!(check(&a, &rs256(good_claims())).await.unwrap().is_some());
}

#[test]
fn a_rule_that_does_not_compile_is_reported_and_fails_its_tokens() {
    let (a, errors) = Authn::compile(&[rule("{\"keys\": []}")], &Fetcher { via: None });
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().starts_with("RequestAuthentication ns/jwt: issuer \"https://issuer.example\": jwks: the key set has no usable key"),
        "{}",
        errors[0]
    );
    let a = a.unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(check(&a, &rs256(good_claims()))),
        Err(JwtError::VerificationFail)
    );
}

/// A one-route HTTP server on loopback that answers `body` with `status`, counting hits.
async fn key_server(
    status: u16,
    body: String,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let h = std::sync::Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn jwks_uri_is_fetched_once_and_shared() {
    use std::sync::atomic::Ordering;
    let (addr, hits) = key_server(200, RSA_JWKS.to_string()).await;
    let mut r = rule(RSA_JWKS);
    r.jwks = None;
    r.jwks_uri = Some(format!("http://{addr}/jwks.json"));
    let a = compile(std::slice::from_ref(&r));
    assert!(check(&a, &rs256(good_claims())).await.unwrap().is_some());
    // A second snapshot naming the same URI uses the cached keys.
    let b = compile(&[r]);
    assert!(check(&b, &rs256(good_claims())).await.unwrap().is_some());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_jwks_fetch_with_no_keys_is_jwks_remote_fetch_is_failed() {
    let (addr, _) = key_server(500, "oops".to_string()).await;
    let mut r = rule(RSA_JWKS);
    r.jwks = None;
    r.jwks_uri = Some(format!("http://{addr}/jwks.json"));
    let a = compile(&[r]);
    assert_eq!(
        check(&a, &rs256(good_claims())).await,
        Err(JwtError::JwksFetchFail)
    );
    assert_eq!(
        super::remote::fetch(&format!("http://{addr}/"), None)
            .await
            .unwrap_err()
            .to_string(),
        "answered 500 Internal Server Error"
    );
    assert!(matches!(
        super::remote::fetch("https://keys.example/", None).await,
        Err(super::remote::FetchError::Uri(_))
    ));
}
