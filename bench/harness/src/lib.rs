//! What the bench's sidecar binary and its snapshot writer share: option parsing and the
//! built-in snapshots (see `main.rs` for the command lines).

use std::collections::HashMap;
use std::net::SocketAddr;

use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::telemetry::{PerMode, TracingProvider};
use skein_snapshot::{
    AuthzAction, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, InboundPolicy, Listener,
    ListenerKind, MtlsMode, Protocol, Snapshot, UpstreamTls,
};

const NS: &str = "bench";

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{NS}/sa/{sa}")
}

pub struct Opts {
    kv: HashMap<String, String>,
    pub plaintext: bool,
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<Opts, String> {
        let mut kv = HashMap::new();
        let mut plaintext = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--plaintext" {
                plaintext = true;
                continue;
            }
            let k = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
            kv.insert(k.to_string(), v.clone());
        }
        Ok(Opts { kv, plaintext })
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.kv.get(k).map(String::as_str)
    }

    pub fn req(&self, k: &str) -> Result<&str, String> {
        self.get(k).ok_or_else(|| format!("--{k} missing"))
    }

    pub fn addr(&self, k: &str) -> Result<SocketAddr, String> {
        let v = self.req(k)?;
        v.parse()
            .map_err(|e| format!("--{k} {v:?}: not an ip:port ({e})"))
    }

    pub fn read(&self, k: &str) -> Result<String, String> {
        let p = self.req(k)?;
        std::fs::read_to_string(p).map_err(|e| format!("--{k} {p}: {e}"))
    }
}

/// The client's built-in snapshot.
fn client_snapshot(o: &Opts) -> Result<Snapshot, String> {
    let ep = o.req("endpoint")?;
    ep.parse::<SocketAddr>()
        .map_err(|e| format!("--endpoint {ep:?}: not an ip:port ({e})"))?;
    let mut snap = SnapshotBuilder::new("v1", NS, "client")
        .http_service("upstream", 8080, &[ep])
        .with_last_cluster(|c| {
            if !o.plaintext {
                c.tls = UpstreamTls::IstioMutual;
                c.identities = vec![spiffe("server")];
            }
        })
        .build();
    snap.node.service_account = "client".into();
    // Optional opaque TCP service `tcpsink.bench:9000` on its own listener.
    if let (Some(_), Some(ep)) = (o.get("tcp-listen"), o.get("tcp-endpoint")) {
        ep.parse::<SocketAddr>()
            .map_err(|e| format!("--tcp-endpoint {ep:?}: not an ip:port ({e})"))?;
        let mut c = cluster(&fqdn("tcpsink", NS), 9000, None, &[ep]);
        c.protocol = Protocol::Tcp;
        if !o.plaintext {
            c.tls = UpstreamTls::IstioMutual;
            c.identities = vec![spiffe("server")];
        }
        let name = c.name.clone();
        snap.clusters.push(c);
        snap.listeners.push(Listener {
            name: name.clone(),
            address: o.addr("tcp-listen")?,
            kind: ListenerKind::Tcp { cluster: name },
        });
    }
    Ok(snap)
}

/// The server's built-in snapshot: STRICT, and what Istio compiles for
/// `AuthorizationPolicy bench/allow-client` (ALLOW, `from.source.principals:
/// [cluster.local/ns/bench/sa/client]`, `to.operation.ports: [HTTP port, TCP port]`).
fn server_snapshot(o: &Opts) -> Result<Snapshot, String> {
    let app = o.addr("app")?;
    let mut snap = SnapshotBuilder::new("v1", NS, "server").build();
    snap.node.service_account = "server".into();
    // An ALLOW policy denies what it does not match on every port of the workload, so the
    // opaque TCP port is allowed too when there is one.
    let mut ports = vec![app.port().to_string()];
    if o.get("tcp-app").is_some() {
        ports.push(o.addr("tcp-app")?.port().to_string());
    }
    let authz = if o.plaintext {
        Vec::new()
    } else {
        vec![AuthzPolicy {
            name: "allow-client".into(),
            namespace: NS.into(),
            action: AuthzAction::Allow,
            rules: vec![AuthzRule {
                from: vec![AuthzSource {
                    principals: vec![format!("cluster.local/ns/{NS}/sa/client")],
                    ..Default::default()
                }],
                to: vec![AuthzOperation {
                    ports,
                    ..Default::default()
                }],
                when: Vec::new(),
            }],
        }]
    };
    snap.inbound = InboundPolicy {
        mtls: if o.plaintext {
            MtlsMode::Permissive
        } else {
            MtlsMode::Strict
        },
        authz,
        ..Default::default()
    };
    Ok(snap)
}

pub fn built_in(role: &str, o: &Opts) -> Result<Snapshot, String> {
    let mut snap = match role {
        "client" => client_snapshot(o)?,
        "server" => server_snapshot(o)?,
        other => return Err(format!("role {other:?}: expected client or server")),
    };
    with_tracing(&mut snap, role, o)?;
    Ok(snap)
}

/// `--trace-zipkin ADDR [--trace-sampling PCT]`: Zipkin v2 spans to `ADDR` (an `ip:port`) at
/// `PCT` % sampling (default 100), as the mesh config's `zipkin.address` and Telemetry's
/// `randomSamplingPercentage` set it.
pub fn with_tracing(snap: &mut Snapshot, role: &str, o: &Opts) -> Result<(), String> {
    let Some(addr) = o.get("trace-zipkin") else {
        return Ok(());
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("--trace-zipkin {addr}: not an ip:port: {e}"))?;
    let pct: f64 = match o.get("trace-sampling") {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| format!("--trace-sampling {p}: expected a percentage, 0 to 100"))?,
        None => 100.0,
    };
    let t = &mut snap.telemetry.tracing;
    t.enabled = true;
    t.provider = Some(TracingProvider::Zipkin {
        address: addr.to_string(),
        max_tag_length: 0,
    });
    t.sampling = PerMode {
        client: pct,
        server: pct,
    };
    t.service_name = format!("bench-{role}.bench");
    t.mesh_id = "cluster.local".into();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(a: &[&str]) -> Opts {
        let v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        Opts::parse(&v).unwrap()
    }

    #[test]
    fn server_policy_allows_the_client_on_both_ports() {
        let s = server_snapshot(&opts(&[
            "--app",
            "127.0.0.1:18080",
            "--tcp-app",
            "127.0.0.1:19000",
        ]))
        .unwrap();
        assert_eq!(s.inbound.mtls, MtlsMode::Strict);
        let [p] = s.inbound.authz.as_slice() else {
            panic!("{:?}", s.inbound.authz)
        };
        assert_eq!(p.action, AuthzAction::Allow);
        assert_eq!(
            p.rules[0].from[0].principals,
            ["cluster.local/ns/bench/sa/client"]
        );
        assert_eq!(p.rules[0].to[0].ports, ["18080", "19000"]);
    }

    #[test]
    fn tracing_options_set_a_zipkin_provider_and_the_sampling() {
        let mut s = server_snapshot(&opts(&["--app", "127.0.0.1:18080"])).unwrap();
        with_tracing(&mut s, "server", &opts(&[])).unwrap();
        assert_eq!(s.telemetry.tracing.provider, None, "no spans sent unless asked");
        let o = opts(&[
            "--trace-zipkin",
            "127.0.0.1:19411",
            "--trace-sampling",
            "10",
        ]);
        with_tracing(&mut s, "server", &o).unwrap();
        let t = &s.telemetry.tracing;
        assert!(t.enabled);
        assert_eq!(
            t.provider,
            Some(TracingProvider::Zipkin {
                address: "127.0.0.1:19411".into(),
                max_tag_length: 0
            })
        );
        assert_eq!((t.sampling.client, t.sampling.server), (10.0, 10.0));
        for bad in [
            &["--trace-zipkin", "collector:9411"][..],
            &["--trace-zipkin", "127.0.0.1:1", "--trace-sampling", "101"],
            &["--trace-zipkin", "127.0.0.1:1", "--trace-sampling", "x"],
        ] {
            assert!(
                with_tracing(&mut s, "server", &opts(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_options_are_errors() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(Opts::parse(&v(&["--app"])).is_err());
        assert!(Opts::parse(&v(&["app", "x"])).is_err());
        let e = server_snapshot(&opts(&["--app", "nope"])).unwrap_err();
        assert!(e.contains("--app"), "{e}");
    }
}
