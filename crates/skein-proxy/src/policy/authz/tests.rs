//! AuthorizationPolicy compile and evaluation, against Istio's semantics.

use super::*;
use http::HeaderValue;

use crate::policy::jwt::Principal;

fn peer(ns: &str, sa: &str) -> PeerIdentity {
    PeerIdentity::from_spiffe(
        &format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"),
        String::new(),
    )
    .expect("spiffe")
}

/// One request or connection to evaluate.
struct Req {
    source: IpAddr,
    /// The trusted client address the proxy worked out (default: the source).
    remote: Option<IpAddr>,
    port: u16,
    peer: Option<PeerIdentity>,
    sni: Option<&'static str>,
    http: Option<(&'static str, &'static str, &'static str, HeaderMap)>,
    auth: Option<Principal>,
}

fn http(method: &'static str, host: &'static str, path: &'static str) -> Req {
    Req {
        source: "10.1.2.3".parse().expect("ip"),
        remote: None,
        port: 8080,
        peer: Some(peer("blog", "web")),
        sni: Some("outbound_.8080_._.was.blog.svc.cluster.local"),
        http: Some((method, host, path, HeaderMap::new())),
        auth: None,
    }
}

fn tcp() -> Req {
    Req {
        http: None,
        port: 3306,
        ..http("GET", "", "")
    }
}

impl Req {
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        if let Some(h) = &mut self.http {
            h.3.append(k, HeaderValue::from_static(v));
        }
        self
    }
    fn no_peer(mut self) -> Self {
        self.peer = None;
        self
    }
    fn remote_ip(mut self, ip: &str) -> Self {
        self.remote = Some(ip.parse().expect("ip"));
        self
    }
    fn source_ip(mut self, ip: &str) -> Self {
        self.source = ip.parse().expect("ip");
        self
    }
    fn decide(&self, e: &Engine) -> Decision {
        let a = Attrs {
            source: self.source,
            destination: SocketAddr::from(([10, 9, 9, 9], 15006)),
            workload_port: self.port,
            peer: self.peer.as_ref(),
            sni: self.sni,
            http: self.http.as_ref().map(|(m, h, p, hm)| HttpAttrs {
                host: h,
                method: m,
                path: p,
                headers: hm,
                remote: self.remote.unwrap_or(self.source),
                auth: self.auth.as_ref(),
            }),
        };
        e.evaluate(&a)
    }
}

fn policy(name: &str, action: AuthzAction, rules: Vec<AuthzRule>) -> AuthzPolicy {
    AuthzPolicy {
        name: name.into(),
        namespace: "blog".into(),
        action,
        rules,
    }
}

fn src(f: impl FnOnce(&mut AuthzSource)) -> AuthzRule {
    let mut s = AuthzSource::default();
    f(&mut s);
    AuthzRule {
        from: vec![s],
        ..Default::default()
    }
}

fn op(f: impl FnOnce(&mut AuthzOperation)) -> AuthzRule {
    let mut o = AuthzOperation::default();
    f(&mut o);
    AuthzRule {
        to: vec![o],
        ..Default::default()
    }
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> AuthzRule {
    AuthzRule {
        when: vec![AuthzCondition {
            key: key.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
            not_values: not_values.iter().map(|s| s.to_string()).collect(),
        }],
        ..Default::default()
    }
}

fn v(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

fn engine(p: Vec<AuthzPolicy>) -> Engine {
    Engine::compile(&p).expect("compiles")
}

/// An ALLOW policy with one rule: does it allow `req`?
fn allows(rule: AuthzRule, req: &Req) -> bool {
    engine(vec![policy("p", AuthzAction::Allow, vec![rule])])
        .evaluate_req(req)
        .allowed()
}

impl Engine {
    fn evaluate_req(&self, r: &Req) -> Decision {
        r.decide(self)
    }
}

#[test]
fn patterns_follow_istio() {
    let cases = [
        ("abc", "abc", true),
        ("abc", "abcd", false),
        ("ab*", "abcd", true),
        ("ab*", "a", false),
        ("*cd", "abcd", true),
        ("*cd", "abc", false),
        ("*", "x", true),
        ("*", "", false),
    ];
    for (p, v, want) in cases {
        assert_eq!(Pattern::new(p, false).matches(v), want, "{p} vs {v}");
    }
}

#[test]
fn cidrs_cover_v4_v6_and_mapped() {
    let cases = [
        ("10.0.0.0/8", "10.200.1.1", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("10.1.2.3", "10.1.2.3", true),
        ("10.1.2.3", "10.1.2.4", false),
        ("0.0.0.0/0", "1.2.3.4", true),
        ("10.0.0.0/8", "::ffff:10.1.1.1", true),
        ("fd00::/8", "fd12::1", true),
        ("fd00::/8", "fe80::1", false),
        ("::1", "::1", true),
        ("::/0", "10.0.0.1", false),
    ];
    for (c, ip, want) in cases {
        let cidr = Cidr::parse(c).expect("cidr");
        assert_eq!(cidr.contains(ip.parse().expect("ip")), want, "{c} vs {ip}");
    }
    for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129"] {
        assert!(Cidr::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn source_fields_and_their_negations() {
    let r = http("GET", "was", "/api");
    let cases: Vec<(&str, AuthzRule, &Req, bool)> = vec![
        (
            "principal exact",
            src(|s| s.principals = v(&["cluster.local/ns/blog/sa/web"])),
            &r,
            true,
        ),
        (
            "principal other",
            src(|s| s.principals = v(&["cluster.local/ns/blog/sa/x"])),
            &r,
            false,
        ),
        (
            "principal prefix",
            src(|s| s.principals = v(&["cluster.local/ns/blog/*"])),
            &r,
            true,
        ),
        (
            "principal suffix",
            src(|s| s.principals = v(&["*/sa/web"])),
            &r,
            true,
        ),
        ("principal any", src(|s| s.principals = v(&["*"])), &r, true),
        (
            "not_principal hit",
            src(|s| s.not_principals = v(&["*/sa/web"])),
            &r,
            false,
        ),
        (
            "not_principal miss",
            src(|s| s.not_principals = v(&["*/sa/x"])),
            &r,
            true,
        ),
        ("namespace", src(|s| s.namespaces = v(&["blog"])), &r, true),
        (
            "namespace other",
            src(|s| s.namespaces = v(&["other"])),
            &r,
            false,
        ),
        (
            "not_namespace hit",
            src(|s| s.not_namespaces = v(&["blog"])),
            &r,
            false,
        ),
        (
            "not_namespace miss",
            src(|s| s.not_namespaces = v(&["other"])),
            &r,
            true,
        ),
        (
            "ip block",
            src(|s| s.ip_blocks = v(&["10.1.0.0/16"])),
            &r,
            true,
        ),
        (
            "ip block miss",
            src(|s| s.ip_blocks = v(&["192.168.0.0/16"])),
            &r,
            false,
        ),
        (
            "not ip block hit",
            src(|s| s.not_ip_blocks = v(&["10.1.2.3"])),
            &r,
            false,
        ),
        (
            "not ip block miss",
            src(|s| s.not_ip_blocks = v(&["10.9.0.0/16"])),
            &r,
            true,
        ),
        (
            "remote ip = source",
            src(|s| s.remote_ip_blocks = v(&["10.1.2.3/32"])),
            &r,
            true,
        ),
        (
            "not remote ip",
            src(|s| s.not_remote_ip_blocks = v(&["10.1.2.3/32"])),
            &r,
            false,
        ),
        // No token: request principals never match, their negation always does.
        (
            "request principal",
            src(|s| s.request_principals = v(&["*"])),
            &r,
            false,
        ),
        (
            "not request principal",
            src(|s| s.not_request_principals = v(&["*"])),
            &r,
            true,
        ),
        (
            "all set fields must match",
            src(|s| {
                s.principals = v(&["*/sa/web"]);
                s.namespaces = v(&["other"]);
            }),
            &r,
            false,
        ),
    ];
    for (name, rule, req, want) in cases {
        assert_eq!(allows(rule, req), want, "{name}");
    }
}

#[test]
fn no_peer_never_matches_principals_but_matches_their_negation() {
    let r = http("GET", "was", "/").no_peer();
    assert!(!allows(src(|s| s.principals = v(&["*"])), &r));
    assert!(!allows(src(|s| s.namespaces = v(&["*"])), &r));
    assert!(allows(src(|s| s.not_principals = v(&["*"])), &r));
    assert!(allows(src(|s| s.not_namespaces = v(&["blog"])), &r));
    assert!(!allows(when("source.principal", &["*"], &[]), &r));
    assert!(allows(when("source.namespace", &[], &["blog"]), &r));
}

#[test]
fn remote_ip_is_the_trusted_client_address_not_the_leftmost_xff() {
    // The client wrote the leftmost entry; the proxy's trusted address is what counts.
    let r = http("GET", "was", "/")
        .header("x-forwarded-for", "192.168.7.7, 10.0.0.1")
        .remote_ip("10.0.0.1");
    assert!(!allows(
        src(|s| s.remote_ip_blocks = v(&["192.168.0.0/16"])),
        &r
    ));
    assert!(allows(src(|s| s.remote_ip_blocks = v(&["10.0.0.1"])), &r));
    assert!(!allows(src(|s| s.remote_ip_blocks = v(&["10.1.2.3"])), &r));
    assert!(allows(src(|s| s.ip_blocks = v(&["10.1.2.3"])), &r));
    assert!(!allows(when("remote.ip", &["192.168.7.7"], &[]), &r));
    assert!(allows(when("remote.ip", &["10.0.0.1"], &[]), &r));
    // A DENY on a remote block cannot be dodged by a forged XFF entry.
    let deny = Engine::compile(&[policy(
        "deny-remote",
        AuthzAction::Deny,
        vec![src(|s| s.remote_ip_blocks = v(&["10.0.0.0/24"]))],
    )])
    .unwrap();
    assert!(!r.decide(&deny).allowed());
    // No trusted address given: the source.
    let g = http("GET", "was", "/").header("x-forwarded-for", "192.168.7.7");
    assert!(allows(when("remote.ip", &["10.1.2.3"], &[]), &g));
    // Opaque TCP: the source.
    assert!(allows(when("remote.ip", &["10.1.2.3"], &[]), &tcp()));
}

#[test]
fn an_unknown_condition_key_is_a_compile_error_not_a_silent_no_match() {
    for (action, rule) in [
        (AuthzAction::Deny, when("experimental.foo", &["*"], &[])),
        (AuthzAction::Allow, when("experimental.foo", &[], &["x"])),
        (AuthzAction::Deny, when("request.header[x]", &["1"], &[])),
    ] {
        let err = Engine::compile(&[policy("p", action, vec![rule])]).unwrap_err();
        assert!(matches!(err, AuthzError::UnsupportedKey { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("blog/p") && msg.contains("is not supported"),
            "{msg}"
        );
    }
}

#[test]
fn operation_fields_and_their_negations() {
    let r = http("POST", "Was.Blog:8080", "/api/posts");
    let cases: Vec<(&str, AuthzRule, bool)> = vec![
        (
            "host, case and port ignored",
            op(|o| o.hosts = v(&["was.blog"])),
            true,
        ),
        (
            "host with port",
            op(|o| o.hosts = v(&["was.blog:8080"])),
            true,
        ),
        ("host suffix", op(|o| o.hosts = v(&["*.blog"])), true),
        ("host other", op(|o| o.hosts = v(&["other"])), false),
        (
            "not host hit",
            op(|o| o.not_hosts = v(&["WAS.BLOG"])),
            false,
        ),
        ("not host miss", op(|o| o.not_hosts = v(&["other"])), true),
        ("port", op(|o| o.ports = v(&["8080"])), true),
        ("port other", op(|o| o.ports = v(&["9090"])), false),
        ("not port hit", op(|o| o.not_ports = v(&["8080"])), false),
        ("not port miss", op(|o| o.not_ports = v(&["9090"])), true),
        ("method", op(|o| o.methods = v(&["GET", "POST"])), true),
        ("method other", op(|o| o.methods = v(&["GET"])), false),
        (
            "not method hit",
            op(|o| o.not_methods = v(&["POST"])),
            false,
        ),
        ("not method miss", op(|o| o.not_methods = v(&["GET"])), true),
        ("path exact", op(|o| o.paths = v(&["/api/posts"])), true),
        ("path prefix", op(|o| o.paths = v(&["/api/*"])), true),
        ("path suffix", op(|o| o.paths = v(&["*/posts"])), true),
        ("path other", op(|o| o.paths = v(&["/admin"])), false),
        ("not path hit", op(|o| o.not_paths = v(&["/api/*"])), false),
        ("not path miss", op(|o| o.not_paths = v(&["/admin*"])), true),
        (
            "all set fields must match",
            op(|o| {
                o.methods = v(&["POST"]);
                o.paths = v(&["/admin"]);
            }),
            false,
        ),
    ];
    for (name, rule, want) in cases {
        assert_eq!(allows(rule, &r), want, "{name}");
    }
    // The path is matched without its query string (the caller strips it).
    let q = http("GET", "was", "/api");
    assert!(allows(op(|o| o.paths = v(&["/api"])), &q));
}

#[test]
fn when_conditions() {
    let r = http("GET", "was", "/")
        .header("x-token", "abc")
        .header("x-multi", "a")
        .header("x-multi", "b");
    let cases: Vec<(&str, AuthzRule, bool)> = vec![
        (
            "header",
            when("request.headers[X-Token]", &["abc"], &[]),
            true,
        ),
        (
            "header prefix",
            when("request.headers[x-token]", &["ab*"], &[]),
            true,
        ),
        (
            "header other",
            when("request.headers[x-token]", &["zzz"], &[]),
            false,
        ),
        (
            "header absent",
            when("request.headers[x-none]", &["*"], &[]),
            false,
        ),
        (
            "header not hit",
            when("request.headers[x-token]", &[], &["abc"]),
            false,
        ),
        (
            "header not, absent",
            when("request.headers[x-none]", &[], &["abc"]),
            true,
        ),
        (
            "header joined",
            when("request.headers[x-multi]", &["a,b"], &[]),
            true,
        ),
        (
            "values and notValues",
            when("request.headers[x-token]", &["*"], &["abc"]),
            false,
        ),
        ("source.ip", when("source.ip", &["10.0.0.0/8"], &[]), true),
        (
            "source.ip not",
            when("source.ip", &[], &["10.1.2.3"]),
            false,
        ),
        (
            "source.namespace",
            when("source.namespace", &["blog"], &[]),
            true,
        ),
        (
            "source.principal",
            when("source.principal", &["*/sa/web"], &[]),
            true,
        ),
        (
            "destination.port",
            when("destination.port", &["8080"], &[]),
            true,
        ),
        (
            "destination.port other",
            when("destination.port", &["80"], &[]),
            false,
        ),
        (
            "destination.ip",
            when("destination.ip", &["10.9.9.9"], &[]),
            true,
        ),
        (
            "connection.sni",
            when("connection.sni", &["outbound_.8080_*"], &[]),
            true,
        ),
        (
            "request.auth absent",
            when("request.auth.claims[iss]", &["*"], &[]),
            false,
        ),
        (
            "request.auth not",
            when("request.auth.principal", &[], &["*"]),
            true,
        ),
    ];
    for (name, rule, want) in cases {
        assert_eq!(allows(rule, &r), want, "{name}");
    }
    // Every `when` must hold.
    let mut both = when("source.ip", &["10.0.0.0/8"], &[]);
    both.when.push(AuthzCondition {
        key: "destination.port".into(),
        values: v(&["9"]),
        not_values: vec![],
    });
    assert!(!allows(both, &r));
}

#[test]
fn from_and_to_lists_are_ored_and_anded_together() {
    let r = http("GET", "was", "/a");
    let rule = AuthzRule {
        from: vec![
            AuthzSource {
                namespaces: v(&["other"]),
                ..Default::default()
            },
            AuthzSource {
                namespaces: v(&["blog"]),
                ..Default::default()
            },
        ],
        to: vec![AuthzOperation {
            methods: v(&["GET"]),
            ..Default::default()
        }],
        when: vec![],
    };
    assert!(allows(rule.clone(), &r));
    let mut no_to = rule;
    no_to.to[0].methods = v(&["PUT"]);
    assert!(!allows(no_to, &r));
}

#[test]
fn action_order() {
    let r = http("GET", "was", "/admin");
    let allow_all = || policy("allow-all", AuthzAction::Allow, vec![AuthzRule::default()]);
    let deny_admin = || {
        policy(
            "deny-admin",
            AuthzAction::Deny,
            vec![
                op(|o| o.paths = v(&["/never"])),
                op(|o| o.paths = v(&["/admin*"])),
            ],
        )
    };
    let allow_other = || {
        policy(
            "allow-other",
            AuthzAction::Allow,
            vec![op(|o| o.paths = v(&["/x"]))],
        )
    };
    let audit = || policy("audit", AuthzAction::Audit, vec![AuthzRule::default()]);

    // No policies: allow.
    assert_eq!(
        engine(vec![]).evaluate_req(&r),
        Decision::Allow { audit: false }
    );
    // DENY wins over a matching ALLOW, and names the rule.
    match engine(vec![allow_all(), deny_admin()]).evaluate_req(&r) {
        Decision::Deny { details, .. } => assert_eq!(
            &*details,
            "rbac_access_denied_matched_policy[ns[blog]-policy[deny-admin]-rule[1]]"
        ),
        d => panic!("expected deny, got {d:?}"),
    }
    // Only DENY policies that do not match: allow.
    let other = http("GET", "was", "/ok");
    assert!(engine(vec![deny_admin()]).evaluate_req(&other).allowed());
    // ALLOW policies exist, none matches: deny with [none].
    match engine(vec![allow_other()]).evaluate_req(&r) {
        Decision::Deny { details, .. } => assert_eq!(&*details, DENIED_NO_MATCH),
        d => panic!("expected deny, got {d:?}"),
    }
    // Any matching ALLOW allows.
    assert!(
        engine(vec![allow_other(), allow_all()])
            .evaluate_req(&r)
            .allowed()
    );
    // AUDIT only marks.
    assert_eq!(
        engine(vec![audit()]).evaluate_req(&r),
        Decision::Allow { audit: true }
    );
    assert!(matches!(
        engine(vec![audit(), allow_other()]).evaluate_req(&r),
        Decision::Deny { audit: true, .. }
    ));
}

#[test]
fn empty_spec_denies_all_and_empty_rule_allows_all() {
    let r = http("GET", "was", "/");
    // `spec: {}`: an ALLOW policy without rules.
    let deny_all = engine(vec![policy("deny-all", AuthzAction::Allow, vec![])]);
    assert!(!deny_all.evaluate_req(&r).allowed());
    assert!(!deny_all.evaluate_req(&tcp()).allowed());
    // `rules: [{}]`.
    let allow_all = engine(vec![policy(
        "allow-all",
        AuthzAction::Allow,
        vec![AuthzRule::default()],
    )]);
    assert!(allow_all.evaluate_req(&r).allowed());
    assert!(allow_all.evaluate_req(&tcp()).allowed());
    // A DENY policy without rules matches nothing.
    let deny_none = engine(vec![policy("d", AuthzAction::Deny, vec![])]);
    assert!(deny_none.evaluate_req(&r).allowed());
}

#[test]
fn http_only_fields_on_tcp() {
    let t = tcp();
    // ALLOW with an HTTP-only field: the rule does not match on TCP, even with a `to`
    // alternative that would.
    let mut allow_get = op(|o| o.methods = v(&["GET"]));
    allow_get.to.push(AuthzOperation {
        ports: v(&["3306"]),
        ..Default::default()
    });
    assert!(!allows(allow_get.clone(), &t));
    assert!(allows(allow_get, &http("GET", "x", "/")));
    assert!(allows(op(|o| o.ports = v(&["3306"])), &t));
    for rule in [
        op(|o| o.hosts = v(&["x"])),
        op(|o| o.paths = v(&["/"])),
        op(|o| o.not_methods = v(&["GET"])),
        src(|s| s.request_principals = v(&["*"])),
        src(|s| s.not_request_principals = v(&["*"])),
        when("request.headers[x]", &["*"], &[]),
        when("request.auth.principal", &[], &["*"]),
    ] {
        assert!(!allows(rule, &t));
    }
    // DENY with an HTTP-only field: the field is dropped, so the rule matches on TCP.
    let deny =
        |rule: AuthzRule| engine(vec![policy("d", AuthzAction::Deny, vec![rule])]).evaluate_req(&t);
    assert!(!deny(op(|o| o.methods = v(&["GET"]))).allowed());
    assert!(!deny(op(|o| o.not_paths = v(&["/x"]))).allowed());
    assert!(!deny(when("request.headers[x-token]", &["abc"], &[])).allowed());
    // ...but the fields TCP has still count.
    let scoped = op(|o| {
        o.methods = v(&["GET"]);
        o.ports = v(&["9999"]);
    });
    assert!(deny(scoped).allowed());
    // DENY with principals on TCP works as on HTTP.
    assert!(!deny(src(|s| s.namespaces = v(&["blog"]))).allowed());
    assert!(deny(src(|s| s.namespaces = v(&["other"]))).allowed());
    assert!(deny(src(|s| s.not_principals = v(&["*"]))).allowed());
}

#[test]
fn ip_policies_on_tcp_without_peer() {
    let t = tcp().no_peer().source_ip("192.168.1.5");
    let e = engine(vec![policy(
        "lan",
        AuthzAction::Allow,
        vec![src(|s| s.ip_blocks = v(&["192.168.0.0/16"]))],
    )]);
    assert!(e.evaluate_req(&t).allowed());
    assert!(!e.evaluate_req(&tcp().source_ip("10.0.0.1")).allowed());
    let deny_no_mtls = engine(vec![policy(
        "require-mtls",
        AuthzAction::Deny,
        vec![src(|s| s.not_principals = v(&["*"]))],
    )]);
    assert!(!deny_no_mtls.evaluate_req(&t).allowed());
    assert!(deny_no_mtls.evaluate_req(&tcp()).allowed());
}

#[test]
fn bad_ip_blocks_are_refused() {
    let p = policy(
        "bad",
        AuthzAction::Allow,
        vec![src(|s| s.ip_blocks = v(&["10.0.0.0/99"]))],
    );
    let e = Engine::compile(&[p]).expect_err("bad cidr");
    assert!(e.to_string().contains("blog/bad"), "{e}");
    assert!(e.to_string().contains("ipBlocks"), "{e}");
    let c = policy(
        "c",
        AuthzAction::Deny,
        vec![when("source.ip", &["nope"], &[])],
    );
    assert!(Engine::compile(&[c]).is_err());
}

fn with_token(claims: serde_json::Value) -> Req {
    let serde_json::Value::Object(map) = claims else {
        panic!("claims are an object")
    };
    Req {
        auth: Some(Principal::from_claims(
            map,
            crate::policy::jwt::space_delimited(&["roles".to_string()]),
        )),
        ..http("GET", "was", "/")
    }
}

#[test]
fn request_auth_attributes_read_the_verified_token() {
    let r = with_token(serde_json::json!({
        "iss": "https://issuer.example",
        "sub": "alice",
        "aud": ["blog", "admin-ui"],
        "azp": "web-client",
        "groups": ["admin", "dev"],
        "team": {"name": "core"},
        "scope": "read write",
        "roles": "a b",
        "level": 3,
        "verified": true,
    }));
    let cases: Vec<(&str, AuthzRule, bool)> = vec![
        (
            "principal",
            src(|s| s.request_principals = v(&["https://issuer.example/alice"])),
            true,
        ),
        (
            "principal any",
            src(|s| s.request_principals = v(&["*"])),
            true,
        ),
        (
            "principal prefix",
            src(|s| s.request_principals = v(&["https://issuer.example/*"])),
            true,
        ),
        (
            "principal other",
            src(|s| s.request_principals = v(&["https://issuer.example/bob"])),
            false,
        ),
        (
            "not principal",
            src(|s| s.not_request_principals = v(&["*/alice"])),
            false,
        ),
        (
            "claims list contains",
            when("request.auth.claims[groups]", &["admin"], &[]),
            true,
        ),
        (
            "claims list lacks",
            when("request.auth.claims[groups]", &["ops"], &[]),
            false,
        ),
        (
            "claims not in list",
            when("request.auth.claims[groups]", &[], &["dev"]),
            false,
        ),
        (
            "claims nested",
            when("request.auth.claims[team][name]", &["core"], &[]),
            true,
        ),
        (
            "claims missing",
            when("request.auth.claims[nope]", &["*"], &[]),
            false,
        ),
        (
            "scope space delimited",
            when("request.auth.claims[scope]", &["write"], &[]),
            true,
        ),
        (
            "extra space delimited",
            when("request.auth.claims[roles]", &["b"], &[]),
            true,
        ),
        (
            "number claim",
            when("request.auth.claims[level]", &["3"], &[]),
            true,
        ),
        (
            "bool claim",
            when("request.auth.claims[verified]", &["true"], &[]),
            true,
        ),
        (
            "principal key",
            when(
                "request.auth.principal",
                &["https://issuer.example/alice"],
                &[],
            ),
            true,
        ),
        (
            "audiences",
            when("request.auth.audiences", &["admin-ui"], &[]),
            true,
        ),
        (
            "audiences no",
            when("request.auth.audiences", &["other"], &[]),
            false,
        ),
        (
            "presenter",
            when("request.auth.presenter", &["web-*"], &[]),
            true,
        ),
    ];
    for (name, rule, want) in cases {
        assert_eq!(allows(rule, &r), want, "{name}");
    }
    // A bad claims key is refused, not silently never matching.
    let bad = engine_err(when("request.auth.claims[]", &["x"], &[]));
    assert!(bad.contains("request.auth.claims[]"), "{bad}");
}

fn engine_err(rule: AuthzRule) -> String {
    Engine::compile(&[policy("p", AuthzAction::Deny, vec![rule])])
        .expect_err("refused")
        .to_string()
}
