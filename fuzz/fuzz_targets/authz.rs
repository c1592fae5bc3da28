//! The AuthorizationPolicy compiler and engine: arbitrary snapshot policies (`Authz*`, as
//! JSON) compiled as the proxy compiles them, then one request or connection evaluated.
//!
//! Input: JSON `{"policies": [AuthzPolicy...], "request": {...}}`, the request's fields all
//! optional (see `Req`); no `method` makes it an opaque TCP connection, `gateway` evaluates
//! it as a gateway does.
//!
//! Invariants: nothing panics; compiling and evaluating are deterministic; and Istio's
//! order holds whatever the policies say: adding an ALLOW policy that matches everything
//! allows exactly what no DENY policy denied; adding a DENY policy that matches everything
//! denies everything; the order of the policies changes neither the verdict nor the audit
//! mark.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use skein_proxy::fuzzing::{self, Connection, DENIED_NO_MATCH, Decision, Engine, PeerIdentity};
use skein_snapshot::{AuthzAction, AuthzPolicy, AuthzRule};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    policies: Vec<AuthzPolicy>,
    request: Req,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Req {
    source: Option<IpAddr>,
    destination: Option<SocketAddr>,
    peer: Option<String>,
    sni: Option<String>,
    gateway: bool,
    method: Option<String>,
    path: String,
    host: Option<String>,
    headers: Vec<(String, String)>,
}

fn allowed(d: &Decision) -> bool {
    matches!(d, Decision::Allow { .. })
}

fn audit(d: &Decision) -> bool {
    match d {
        Decision::Allow { audit } | Decision::Deny { audit, .. } => *audit,
    }
}

fn with(policies: &[AuthzPolicy], extra: AuthzAction) -> Vec<AuthzPolicy> {
    let mut out = policies.to_vec();
    out.push(AuthzPolicy {
        name: "fuzz-everything".into(),
        namespace: "fuzz".into(),
        action: extra,
        rules: vec![AuthzRule::default()],
    });
    out
}

fn compiled(policies: &[AuthzPolicy]) -> Engine {
    match Engine::compile(policies) {
        Ok(e) => e,
        Err(e) => panic!("policies that compiled alone do not with a rule-less policy added: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Input>(data) else {
        return;
    };
    let engine = match Engine::compile(&input.policies) {
        Ok(e) => e,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let r = &input.request;
    let conn = Connection {
        source: r.source.unwrap_or(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
        destination: r
            .destination
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 15006))),
        peer: r
            .peer
            .as_deref()
            .and_then(|p| PeerIdentity::from_spiffe(p, String::new())),
        sni: r.sni.clone(),
    };
    let req = r.method.as_deref().and_then(|m| {
        let mut headers: Vec<(&[u8], &[u8])> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        if let Some(h) = &r.host {
            headers.push((b"host", h.as_bytes()));
        }
        let path = if r.path.is_empty() {
            "/"
        } else {
            r.path.as_str()
        };
        fuzzing::request(m.as_bytes(), path.as_bytes(), &headers)
    });
    if r.method.is_some() && req.is_none() {
        return; // hyper would have answered 400
    }
    let eval = |e: &Engine| fuzzing::authorize(e, &conn, r.gateway, req.as_ref());

    let decision = eval(&engine);
    assert_eq!(decision, eval(&engine), "evaluation is not deterministic");
    assert_eq!(
        decision,
        eval(&compiled(&input.policies)),
        "compiling is not deterministic"
    );
    if let Decision::Deny { details, .. } = &decision {
        assert!(!details.is_empty());
    }

    let denied_by_policy =
        matches!(&decision, Decision::Deny { details, .. } if &**details != DENIED_NO_MATCH);
    let allow_all = eval(&compiled(&with(&input.policies, AuthzAction::Allow)));
    assert_eq!(
        allowed(&allow_all),
        !denied_by_policy,
        "an ALLOW-everything policy changed {decision:?} to {allow_all:?}"
    );
    assert_eq!(audit(&allow_all), audit(&decision));

    let deny_all = eval(&compiled(&with(&input.policies, AuthzAction::Deny)));
    assert!(
        !allowed(&deny_all),
        "allowed despite a DENY-everything policy"
    );
    assert_eq!(audit(&deny_all), audit(&decision));

    let mut reversed = input.policies.clone();
    reversed.reverse();
    let rev = eval(&compiled(&reversed));
    assert_eq!(
        allowed(&rev),
        allowed(&decision),
        "policy order changed the verdict"
    );
    assert_eq!(
        audit(&rev),
        audit(&decision),
        "policy order changed the audit mark"
    );
});
