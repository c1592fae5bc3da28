//! RequestAuthentication end to end: `skein up` on an echo pod whose sidecar checks JWTs
//! (inline JWKS) and an AuthorizationPolicy on the token's `groups` claim; tokens are signed
//! here with the fixture's test key and sent through the ingress.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use support::{Skein, request};

const FIXTURE: &str = "crates/skein/tests/fixtures/jwt";
const KEY: &[u8] = include_bytes!("fixtures/jwt/test-key.pem");
const ISS: &str = "https://issuer.skein.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn sign(claims: &serde_json::Value, key: &EncodingKey) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("test-rsa".into());
    encode(&h, claims, key).expect("signs")
}

fn claims(groups: &[&str]) -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "aud": "echo", "exp": now() + 600, "groups": groups})
}

#[test]
fn jwt_tokens_are_verified_by_the_sidecar_and_claims_drive_authorization() {
    // The fixture is clean for `skein analyze`.
    let skein = Skein::new();
    let analyze = skein.run(&["analyze", FIXTURE]);
    assert!(
        analyze.status.success(),
        "analyze:\n{}{}",
        String::from_utf8_lossy(&analyze.stdout),
        String::from_utf8_lossy(&analyze.stderr)
    );

    skein.up(FIXTURE, &[]);
    let url = format!("{}/hello?x=1", skein.http_base());
    let key = EncodingKey::from_rsa_pem(KEY).expect("test key");
    let send = |token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        request("GET", &url, &headers, b"", None)
    };

    // A good token of an admin: the app sees the payload, not the token.
    let admin = sign(&claims(&["admin"]), &key);
    let ok = send(Some(&admin));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let seen = &ok.json()["headers"];
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert_eq!(
        seen["x-jwt-payload"].as_str(),
        admin.split('.').nth(1),
        "{seen}"
    );

    // A good token without the group, and no token at all: AuthorizationPolicy's 403.
    let dev = send(Some(&sign(&claims(&["dev"]), &key)));
    assert_eq!(
        (dev.status, dev.body.as_str()),
        (403, "RBAC: access denied")
    );
    let none = send(None);
    assert_eq!(
        (none.status, none.body.as_str()),
        (403, "RBAC: access denied")
    );

    // Bad tokens: Envoy's 401s.
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(&["admin"]);
        f(&mut c);
        sign(&c, &key)
    };
    let expired = with(&|c| c["exp"] = json!(now() - 3600));
    let wrong_issuer = with(&|c| c["iss"] = json!("https://elsewhere.test"));
    let wrong_audience = with(&|c| c["aud"] = json!("billing"));
    // A bad signature: the admin token with the signature of other claims.
    let other = sign(&claims(&["dev"]), &key);
    let mut parts: Vec<&str> = admin.split('.').collect();
    parts[2] = other.rsplit('.').next().expect("signature");
    let bad_signature = parts.join(".");
    for (token, body) in [
        (expired.as_str(), "Jwt is expired"),
        (wrong_issuer.as_str(), "Jwt issuer is not configured"),
        (wrong_audience.as_str(), "Audiences in Jwt are not allowed"),
        (bad_signature.as_str(), "Jwt verification fails"),
    ] {
        let r = send(Some(token));
        assert_eq!((r.status, r.body.as_str()), (401, body), "{token}");
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer realm=\"http://")
                && challenge.ends_with("/hello\", error=\"invalid_token\""),
            "{challenge}"
        );
    }

    // The sidecar's access log names the reason (lines are written in batches).
    let pod = skein.pods("echo")[0]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    let found = (0..50).any(|_| {
        let hit = skein
            .proxy_log(&pod)
            .lines()
            .any(|l| l.contains(" 401 - jwt_authn_access_denied{Jwt_is_expired} "));
        if !hit {
            std::thread::sleep(Duration::from_millis(100));
        }
        hit
    });
    assert!(
        found,
        "no 401 line in the proxy's log:\n{}",
        skein.proxy_log(&pod)
    );
}
