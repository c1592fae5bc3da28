//! Routing through the sidecar's outbound HTTP listener.

use skein_proxy::test_util::*;
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn, route_to, weighted_route};
use skein_snapshot::*;

const NS: &str = "blog-system";

/// Two upstreams `a` and `b`, each its own cluster of service `svc`, and routes under test.
async fn two_upstream_snapshot(routes: Vec<Route>) -> (Snapshot, Upstream, Upstream) {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let f = fqdn("svc", NS);
    let snap = SnapshotBuilder::new("v1", NS, "web")
        .cluster(cluster(&f, 8080, Some("a"), &[&a.addr_str()]))
        .cluster(cluster(&f, 8080, Some("b"), &[&b.addr_str()]))
        .service_routes("svc", 8080, routes)
        .build();
    (snap, a, b)
}

fn ca() -> String {
    outbound_cluster_name(8080, Some("a"), &fqdn("svc", NS))
}
fn cb() -> String {
    outbound_cluster_name(8080, Some("b"), &fqdn("svc", NS))
}

fn when(m: RouteMatch, cluster: &str) -> Route {
    Route {
        matches: vec![m],
        ..route_to(cluster)
    }
}

const URL: &str = "http://svc:8080";

#[tokio::test(start_paused = true)]
async fn uri_exact_prefix_regex_and_ignore_case() {
    let routes = vec![
        when(
            RouteMatch {
                path: Some(StringMatch::Exact("/exact".into())),
                ..Default::default()
            },
            &ca(),
        ),
        when(
            RouteMatch {
                path: Some(StringMatch::Prefix("/api/".into())),
                ignore_uri_case: true,
                ..Default::default()
            },
            &ca(),
        ),
        when(
            RouteMatch {
                path: Some(StringMatch::Regex("/posts/[0-9]+".into())),
                ..Default::default()
            },
            &ca(),
        ),
        route_to(&cb()),
    ];
    let (snap, _a, _b) = two_upstream_snapshot(routes).await;
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let cases = [
        ("/exact", "a"),
        ("/exact/more", "b"),
        ("/exact?x=1", "a"),
        ("/api/posts", "a"),
        ("/API/Posts", "a"),
        ("/apix", "b"),
        ("/posts/42", "a"),
        ("/posts/42/x", "b"),
        ("/posts/abc", "b"),
    ];
    for (path, want) in cases {
        let r = c.get(&format!("{URL}{path}")).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.upstream(), want, "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn headers_method_authority_query_without_headers() {
    let hm = |name: &str, v: Option<StringMatch>| HeaderMatch {
        name: name.into(),
        value: v,
    };
    let routes = vec![
        // Istio's canary rule: x-canary-test exact "true".
        when(
            RouteMatch {
                headers: vec![hm("x-canary-test", Some(StringMatch::Exact("true".into())))],
                ..Default::default()
            },
            &ca(),
        ),
        // Presence: `headers: {x-present: {}}`.
        when(
            RouteMatch {
                path: Some(StringMatch::Prefix("/presence".into())),
                headers: vec![hm("x-present", None)],
                ..Default::default()
            },
            &ca(),
        ),
        when(
            RouteMatch {
                path: Some(StringMatch::Prefix("/method".into())),
                method: Some(StringMatch::Exact("POST".into())),
                ..Default::default()
            },
            &ca(),
        ),
        when(
            RouteMatch {
                path: Some(StringMatch::Prefix("/authority".into())),
                authority: Some(StringMatch::Prefix("svc.blog-system".into())),
                ..Default::default()
            },
            &ca(),
        ),
        when(
            RouteMatch {
                path: Some(StringMatch::Prefix("/query".into())),
                query_params: vec![QueryParamMatch {
                    name: "user".into(),
                    value: Some(StringMatch::Regex("admin[0-9]".into())),
                }],
                ..Default::default()
            },
            &ca(),
        ),
        when(
            RouteMatch {
                path: Some(StringMatch::Prefix("/without".into())),
                without_headers: vec![hm("x-skip", None)],
                ..Default::default()
            },
            &ca(),
        ),
        route_to(&cb()),
    ];
    let (snap, _a, _b) = two_upstream_snapshot(routes).await;
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "GET",
            "header exact",
            format!("{URL}/"),
            vec![("x-canary-test", "true")],
            "a",
        ),
        (
            "GET",
            "header mismatch",
            format!("{URL}/"),
            vec![("x-canary-test", "false")],
            "b",
        ),
        (
            "GET",
            "presence",
            format!("{URL}/presence"),
            vec![("x-present", "")],
            "a",
        ),
        ("GET", "absence", format!("{URL}/presence"), vec![], "b"),
        ("POST", "method", format!("{URL}/method"), vec![], "a"),
        ("GET", "wrong method", format!("{URL}/method"), vec![], "b"),
        (
            "GET",
            "authority",
            "http://svc.blog-system:8080/authority".into(),
            vec![],
            "a",
        ),
        (
            "GET",
            "other authority",
            format!("{URL}/authority"),
            vec![],
            "b",
        ),
        (
            "GET",
            "query",
            format!("{URL}/query?x=1&user=admin7"),
            vec![],
            "a",
        ),
        (
            "GET",
            "query mismatch",
            format!("{URL}/query?user=bob"),
            vec![],
            "b",
        ),
        ("GET", "no query", format!("{URL}/query"), vec![], "b"),
        (
            "GET",
            "without header",
            format!("{URL}/without"),
            vec![],
            "a",
        ),
        (
            "GET",
            "with header",
            format!("{URL}/without"),
            vec![("x-skip", "1")],
            "b",
        ),
    ];
    for (method, what, url, headers, want) in cases {
        let r = c.send(method, &url, &headers).await;
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.upstream(), want, "{what}");
    }
}

#[tokio::test(start_paused = true)]
async fn first_match_wins_and_no_route_is_404() {
    let routes = vec![
        when(
            RouteMatch {
                path: Some(StringMatch::Prefix("/".into())),
                method: Some(StringMatch::Exact("GET".into())),
                ..Default::default()
            },
            &cb(),
        ),
        // Would also match /x but comes second.
        when(
            RouteMatch {
                path: Some(StringMatch::Prefix("/x".into())),
                ..Default::default()
            },
            &ca(),
        ),
    ];
    let (snap, _a, _b) = two_upstream_snapshot(routes).await;
    let (h, log) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    assert_eq!(c.get(&format!("{URL}/x")).await.upstream(), "b");
    assert_eq!(
        c.send("POST", &format!("{URL}/x"), &[]).await.upstream(),
        "a"
    );
    let r = c.send("POST", &format!("{URL}/y"), &[]).await;
    assert_eq!(r.status, 404);
    let lines = log_lines(&log, 3).await;
    let nr = lines
        .iter()
        .find(|l| l.contains("\"POST /y HTTP/1.1\""))
        .expect("NR line");
    assert!(nr.contains(" 404 NR route_not_found "), "{nr}");
}

#[tokio::test(start_paused = true)]
async fn weighted_split_80_20_and_100_0() {
    let (snap, _a, _b) =
        two_upstream_snapshot(vec![weighted_route(&[(&ca(), 80), (&cb(), 20)])]).await;
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let mut names = Vec::new();
    for _ in 0..1000 {
        names.push(c.get(&format!("{URL}/")).await.upstream());
    }
    let t = tally(names);
    let a = t.get("a").copied().unwrap_or(0);
    assert!((740..=860).contains(&a), "80/20 split gave {t:?}");
    assert_eq!(a + t.get("b").copied().unwrap_or(0), 1000);

    let (snap, _a2, _b2) =
        two_upstream_snapshot(vec![weighted_route(&[(&ca(), 100), (&cb(), 0)])]).await;
    h.apply(snap).expect("apply");
    let mut c = H1Client::connect(outbound(&h)).await;
    for _ in 0..200 {
        assert_eq!(c.get(&format!("{URL}/")).await.upstream(), "a");
    }
}

#[tokio::test(start_paused = true)]
async fn rewrite_uri_authority_and_regex() {
    let routes = vec![
        Route {
            matches: vec![RouteMatch {
                path: Some(StringMatch::Prefix("/old".into())),
                ..Default::default()
            }],
            rewrite: Some(Rewrite {
                uri: Some("/new".into()),
                authority: Some("rewritten.example".into()),
                uri_regex: None,
            }),
            ..route_to(&ca())
        },
        Route {
            matches: vec![RouteMatch {
                path: Some(StringMatch::Regex("/v1/.*".into())),
                ..Default::default()
            }],
            rewrite: Some(Rewrite {
                uri_regex: Some(RegexRewrite {
                    pattern: "^/v1/([^/]+)/(.*)$".into(),
                    substitution: r"/v2/\2/\1".into(),
                }),
                ..Default::default()
            }),
            ..route_to(&ca())
        },
    ];
    let (snap, _a, _b) = two_upstream_snapshot(routes).await;
    let (h, log) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let r = c.get(&format!("{URL}/old/page?q=1")).await;
    let j = r.json();
    assert_eq!(j["path"], "/new/page?q=1");
    assert_eq!(j["host"], "rewritten.example");
    assert_eq!(r.seen_header("x-envoy-original-path"), ["/old/page?q=1"]);
    let r = c.get(&format!("{URL}/v1/users/42")).await;
    assert_eq!(r.json()["path"], "/v2/42/users");
    // The access log shows the original path.
    let lines = log_lines(&log, 1).await;
    assert!(
        lines[0].contains("\"GET /old/page?q=1 HTTP/1.1\""),
        "{}",
        lines[0]
    );
}

#[tokio::test(start_paused = true)]
async fn header_operations_request_and_response() {
    let mut ops = HeaderOps::default();
    ops.request.set.insert("x-set".into(), "route".into());
    ops.request.add.insert("x-add".into(), "added".into());
    ops.request.remove.push("x-remove".into());
    ops.response.set.insert("x-resp-set".into(), "yes".into());
    ops.response.add.insert("x-resp-add".into(), "more".into());
    ops.response.remove.push("x-upstream".into());
    let mut dest_ops = HeaderOps::default();
    dest_ops.request.set.insert("x-dest".into(), "a".into());
    let mut route = route_to(&ca());
    route.headers = ops;
    if let RouteAction::Route(d) = &mut route.action {
        d[0].headers = dest_ops;
    }
    let (snap, _a, _b) = two_upstream_snapshot(vec![route]).await;
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let r = c
        .send(
            "GET",
            &format!("{URL}/"),
            &[
                ("x-set", "client"),
                ("x-add", "client"),
                ("x-remove", "gone"),
            ],
        )
        .await;
    assert_eq!(r.seen_header("x-set"), ["route"]);
    assert_eq!(r.seen_header("x-add"), ["client", "added"]);
    assert!(r.seen_header("x-remove").is_empty());
    assert_eq!(r.seen_header("x-dest"), ["a"]);
    assert_eq!(header(&r.headers, "x-resp-set").as_deref(), Some("yes"));
    assert_eq!(header(&r.headers, "x-resp-add").as_deref(), Some("more"));
    assert!(r.headers.get("x-upstream").is_none());
    assert!(r.headers.get("x-envoy-upstream-service-time").is_some());
    // x-request-id was generated.
    assert_eq!(r.seen_header("x-request-id")[0].len(), 36);
}

#[tokio::test(start_paused = true)]
async fn every_authority_form_reaches_the_service() {
    let up = Upstream::start("was").await;
    let snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&up.addr_str()])
        .build();
    let (h, log) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let forms = [
        "was-service",
        "was-service.blog-system",
        "was-service.blog-system.svc",
        "was-service.blog-system.svc.cluster.local",
        "WAS-SERVICE.Blog-System.svc.cluster.local",
    ];
    for f in forms {
        for port in ["", ":8080"] {
            let r = c.get(&format!("http://{f}{port}/api/posts")).await;
            assert_eq!(r.status, 200, "{f}{port}");
            assert_eq!(r.upstream(), "was", "{f}{port}");
        }
    }
    // Origin-form with a Host header works too (what nginx's proxy_set_header Host does).
    let stream = tokio::net::TcpStream::connect(outbound(&h))
        .await
        .expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Full<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(stream))
    .await
    .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/api/posts")
        .header("host", "was-service")
        .body(Default::default())
        .expect("req");
    let resp = tx.send_request(req).await.expect("send");
    assert_eq!(
        resp.headers().get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"was"[..])
    );
    let lines = log_lines(&log, 1).await;
    assert!(
        lines[0].contains(" outbound|8080||was-service.blog-system.svc.cluster.local "),
        "{}",
        lines[0]
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_host_passthrough_forwards_to_asked_address() {
    let outside = Upstream::start("outside").await;
    let snap = SnapshotBuilder::new("v1", NS, "web").build();
    let (h, log) = sidecar(snap).await;
    let r = get(outbound(&h), &format!("http://{}/hello", outside.addr), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream(), "outside");
    assert_eq!(r.json()["path"], "/hello");
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].contains(" PassthroughCluster "), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("\"{}\"", outside.addr)),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(" allow_any"), "{}", lines[0]);
}

#[tokio::test(start_paused = true)]
async fn registry_only_blackholes_with_502() {
    let outside = Upstream::start("outside").await;
    let snap = SnapshotBuilder::new("v1", NS, "web")
        .registry_only()
        .build();
    let (h, log) = sidecar(snap).await;
    let r = get(outbound(&h), &format!("http://{}/hello", outside.addr), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        outside.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].contains(" 502 - direct_response "), "{}", lines[0]);
    assert!(lines[0].contains(" BlackHoleCluster "), "{}", lines[0]);
    assert!(lines[0].ends_with(" block_all"), "{}", lines[0]);
}

#[tokio::test(start_paused = true)]
async fn direct_response_and_redirect() {
    let routes = vec![
        Route {
            name: "health".into(),
            matches: vec![RouteMatch {
                path: Some(StringMatch::Exact("/health".into())),
                ..Default::default()
            }],
            action: RouteAction::DirectResponse {
                status: 200,
                body: Some("ok".into()),
            },
            ..Default::default()
        },
        Route {
            name: "moved".into(),
            matches: vec![RouteMatch {
                path: Some(StringMatch::Prefix("/old".into())),
                ..Default::default()
            }],
            action: RouteAction::Redirect(Redirect {
                uri: Some("/new".into()),
                authority: Some("example.com".into()),
                scheme: Some("https".into()),
                port: None,
                code: Some(302),
                ..Default::default()
            }),
            ..Default::default()
        },
        // Gateway API's scheme redirect: the new scheme's own port, not the request's.
        Route {
            name: "secure".into(),
            matches: vec![RouteMatch {
                path: Some(StringMatch::Prefix("/login".into())),
                ..Default::default()
            }],
            action: RouteAction::Redirect(Redirect {
                scheme: Some("https".into()),
                scheme_port: true,
                ..Default::default()
            }),
            ..Default::default()
        },
        // Gateway API's ReplacePrefixMatch: the matched prefix replaced, the rest kept.
        Route {
            name: "renamed".into(),
            matches: vec![RouteMatch {
                path: Some(StringMatch::Prefix("/docs/".into())),
                ..Default::default()
            }],
            action: RouteAction::Redirect(Redirect {
                prefix_rewrite: Some("/manual/".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let (snap, _a, _b) = two_upstream_snapshot(routes).await;
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let r = c.get(&format!("{URL}/health")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = c.get(&format!("{URL}/old/x")).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        header(&r.headers, "location").as_deref(),
        Some("https://example.com/new")
    );
    let r = c.get(&format!("{URL}/login")).await;
    let location = header(&r.headers, "location").unwrap_or_default();
    let host = URL
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    assert_eq!(location, format!("https://{host}/login"));
    let r = c.get(&format!("{URL}/docs/a/b?q=1")).await;
    assert_eq!(r.status, 301);
    let location = header(&r.headers, "location").unwrap_or_default();
    assert!(location.ends_with("/manual/a/b?q=1"), "{location}");
}

#[tokio::test(start_paused = true)]
async fn undefined_destination_cluster_is_503_nc() {
    // A VirtualService subset without a DestinationRule: Istio answers 503 NC.
    let (snap, _a, _b) = two_upstream_snapshot(vec![route_to(&outbound_cluster_name(
        8080,
        Some("missing"),
        &fqdn("svc", NS),
    ))])
    .await;
    assert_eq!(snap.dangling_references().len(), 1);
    let (h, log) = sidecar(snap).await;
    let r = get(outbound(&h), &format!("{URL}/"), &[]).await;
    assert_eq!(r.status, 503);
    let lines = log_lines(&log, 1).await;
    assert!(
        lines[0].contains(" 503 NC cluster_not_found "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(" outbound|8080|missing|svc.blog-system.svc.cluster.local "),
        "{}",
        lines[0]
    );
}
