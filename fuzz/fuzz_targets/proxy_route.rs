//! The proxy's request path up to the upstream: a snapshot compiled as the proxy compiles
//! it, then one request through the route table (virtual host by authority, the first
//! matching route, its action: rewrites, header operations, the destination) and through
//! the AuthorizationPolicy engine, without sockets.
//!
//! Input: one flags byte (bit 0: a gateway, else a sidecar; bit 1: an mTLS peer), then a
//! request head as text (`METHOD TARGET`, then `name: value` lines; `x-fuzz-peer` and
//! `x-fuzz-source` set the connection's peer and address instead of being headers), a blank
//! line, and the snapshot's JSON.
//!
//! Invariants: nothing panics; the compile refuses exactly the snapshots that do not
//! validate, or whose routes or policies do not compile; with the same random draw a request
//! is routed the same way twice; a forwarded request goes to a cluster of the snapshot by a
//! route of the snapshot, carries `x-envoy-original-path` when its path was rewritten, and a
//! passthrough authority is lowercase; authorization is deterministic and, when every policy
//! compiles, agrees with the engine compiled from the snapshot's policies alone.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use skein_proxy::fuzzing::{self, CompileError, Connection, Engine, PeerIdentity, Routed};
use skein_snapshot::{GATEWAY_ROUTE, SIDECAR_OUTBOUND_ROUTE, Snapshot};

struct Head<'a> {
    method: &'a [u8],
    target: &'a [u8],
    headers: Vec<(&'a [u8], &'a [u8])>,
    peer: Option<&'a str>,
    source: Option<IpAddr>,
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

fn parse_head(head: &[u8]) -> Option<Head<'_>> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let mut parts = first.splitn(3, |&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next().unwrap_or(b"/");
    let mut out = Head {
        method,
        target,
        headers: Vec::new(),
        peer: None,
        source: None,
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"x-fuzz-peer") {
            out.peer = std::str::from_utf8(value).ok();
        } else if name.eq_ignore_ascii_case(b"x-fuzz-source") {
            out.source = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else {
            out.headers.push((name, value));
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let gateway = flags & 1 == 1;
    let Some(split) = rest.windows(2).position(|w| w == b"\n\n") else {
        return;
    };
    let (head, json) = (&rest[..split], &rest[split + 2..]);
    let Some(head) = parse_head(head) else {
        return;
    };
    let Ok(snap) = serde_json::from_slice::<Snapshot>(json) else {
        return;
    };

    let valid = snap.validate().is_ok();
    // Policies that do not compile become DENY-all stand-ins in the proxy's engine; when they
    // all compile, the two engines are the same.
    let policies = Engine::compile(&snap.inbound.authz).ok();
    let compiled = match fuzzing::compile(snap.clone(), gateway) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            match e {
                CompileError::Snapshot { .. } => assert!(!valid, "a valid snapshot refused: {e}"),
                CompileError::Authz { .. } => panic!("the DENY-all stand-ins do not compile: {e}"),
                // A route, an access-log format or filter, or a metric override that does
                // not compile: refused as a whole, whatever `validate` said.
                CompileError::Route { .. }
                | CompileError::AccessLog { .. }
                | CompileError::Metrics { .. } => {}
            }
            return;
        }
    };
    assert!(valid, "a snapshot that does not validate compiled");

    let Some(req) = fuzzing::request(head.method, head.target, &head.headers) else {
        return;
    };

    // Routing, twice with the same weighted draw.
    let route_config = if gateway {
        GATEWAY_ROUTE
    } else {
        SIDECAR_OUTBOUND_ROUTE
    };
    let seed = u64::from(flags);
    fastrand::seed(seed);
    let routed = fuzzing::route(&compiled, route_config, gateway, req.clone());
    fastrand::seed(seed);
    let again = fuzzing::route(&compiled, route_config, gateway, req.clone());
    assert_eq!(routed, again, "the same request routed two ways");
    let route_names = || {
        snap.route_config(route_config)
            .into_iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .flat_map(|vh| &vh.routes)
            .map(|r| r.name.as_str())
    };
    match &routed {
        Routed::Forward {
            route,
            cluster,
            uri,
            headers,
            ..
        } => {
            assert!(
                snap.cluster(cluster).is_some(),
                "forwarded to {cluster:?}, not in the snapshot"
            );
            assert!(
                route_names().any(|n| n == route),
                "route {route:?} not in the snapshot"
            );
            if uri.path_and_query() != req.uri().path_and_query() {
                assert!(
                    headers.contains_key("x-envoy-original-path")
                        || req.uri().path_and_query().is_none()
                );
            }
        }
        Routed::Direct { route, .. } | Routed::Redirect { route, .. } => {
            assert!(
                route_names().any(|n| n == route),
                "route {route:?} not in the snapshot"
            );
        }
        Routed::Passthrough(authority) => {
            assert!(
                !authority.bytes().any(|b| b.is_ascii_uppercase()),
                "{authority:?}"
            );
        }
        Routed::Blackhole | Routed::RouteNotFound | Routed::ClusterNotFound => {}
    }

    // Authorization of the same request on the sidecar's inbound side.
    let conn = Connection {
        source: head
            .source
            .unwrap_or(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
        destination: SocketAddr::from(([127, 0, 0, 1], 15006)),
        peer: (flags & 2 == 2)
            .then(|| {
                PeerIdentity::from_spiffe(
                    head.peer
                        .unwrap_or("spiffe://cluster.local/ns/blog-system/sa/default"),
                    String::new(),
                )
            })
            .flatten(),
        sni: None,
    };
    let decision = fuzzing::authorize(&compiled.authz, &conn, gateway, Some(&req));
    let again = fuzzing::authorize(&compiled.authz, &conn, gateway, Some(&req));
    assert_eq!(decision, again);
    if let Some(policies) = &policies {
        assert_eq!(
            decision,
            fuzzing::authorize(policies, &conn, gateway, Some(&req))
        );
    }
    let _ = fuzzing::authorize(&compiled.authz, &conn, gateway, None);
});
