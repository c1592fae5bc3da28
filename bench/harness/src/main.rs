//! Bench-only stand-in for `skein proxy --identity ...`: the `skein proxy` CLI cannot load a
//! static workload identity from files, so this runs the same library entry point
//! (`skein_proxy::run_blocking`) with `ProxyConfig::identity` set from PEM files and a fixed
//! snapshot (built in process, or read from `--snapshot FILE`).
//!
//! ```text
//! client --outbound ADDR --endpoint SERVER_INBOUND --admin ADDR --cert F --key F --ca F [--plaintext]
//! server --inbound LISTEN --app ADDR --admin ADDR --cert F --key F --ca F [--plaintext]
//!   opaque TCP: client --tcp-listen ADDR --tcp-endpoint ADDR; server --tcp-inbound ADDR --tcp-app ADDR
//!   --snapshot FILE     use this snapshot (JSON) instead of the built-in one
//!   --access-log FILE   Istio's TEXT access log to FILE (default: off)
//!   --alloc-addr ADDR   serve the allocation counters (needs --features count-alloc)
//! snapshot client|server [the role's options] [--blog DIR] --out FILE
//!   writes the role's snapshot; with --blog, the snapshot the control plane compiles for the
//!   example's web (client) or was (server) pod, with the bench's own merged in
//! ```
//!
//! The built-in snapshots: the client has `upstream.bench:8080` (HTTP, ISTIO_MUTUAL, server
//! identity checked) and optionally `tcpsink.bench:9000` (opaque TCP); the server is STRICT with
//! one ALLOW AuthorizationPolicy for principal `cluster.local/ns/bench/sa/client` on the HTTP
//! port (and the opaque TCP port, which the policy would otherwise deny). One worker (as an
//! Istio sidecar with one core).

mod blog;
#[cfg(feature = "count-alloc")]
mod count_alloc;

#[cfg(feature = "count-alloc")]
#[global_allocator]
static GLOBAL: count_alloc::Counting = count_alloc::Counting;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use skein_proxy::{AccessLogSink, ProxyConfig, SourceConfig, StaticIdentity};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::{
    AuthzAction, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, InboundPolicy, Listener,
    ListenerKind, MtlsMode, Protocol, Snapshot, UpstreamTls,
};

const NS: &str = "bench";

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{NS}/sa/{sa}")
}

struct Opts {
    kv: HashMap<String, String>,
    plaintext: bool,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
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

    fn get(&self, k: &str) -> Option<&str> {
        self.kv.get(k).map(String::as_str)
    }

    fn req(&self, k: &str) -> Result<&str, String> {
        self.get(k).ok_or_else(|| format!("--{k} missing"))
    }

    fn addr(&self, k: &str) -> Result<SocketAddr, String> {
        let v = self.req(k)?;
        v.parse()
            .map_err(|e| format!("--{k} {v:?}: not an ip:port ({e})"))
    }

    fn read(&self, k: &str) -> Result<String, String> {
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

fn built_in(role: &str, o: &Opts) -> Result<Snapshot, String> {
    match role {
        "client" => client_snapshot(o),
        "server" => server_snapshot(o),
        other => Err(format!("role {other:?}: expected client or server")),
    }
}

fn write_snapshot(role: &str, o: &Opts) -> Result<(), String> {
    let mut snap = built_in(role, o)?;
    if let Some(dir) = o.get("blog") {
        let blog = blog::compile(Path::new(dir), blog::pod_for(role))?;
        snap = blog::merge(blog, snap)?;
    }
    let out = o.req("out")?;
    let json = serde_json::to_vec_pretty(&snap).map_err(|e| format!("snapshot to JSON: {e}"))?;
    std::fs::write(out, json).map_err(|e| format!("--out {out}: {e}"))?;
    eprintln!(
        "{out}: {} listeners, {} route configs ({} virtual hosts), {} clusters, {} endpoints, {} authorization policies",
        snap.listeners.len(),
        snap.route_configs.len(),
        snap.route_configs
            .iter()
            .map(|r| r.virtual_hosts.len())
            .sum::<usize>(),
        snap.clusters.len(),
        snap.clusters
            .iter()
            .map(|c| c.endpoints.len())
            .sum::<usize>(),
        snap.inbound.authz.len(),
    );
    Ok(())
}

fn run(role: &str, o: &Opts) -> Result<(), String> {
    let snap = match o.get("snapshot") {
        Some(p) => {
            let text = std::fs::read(p).map_err(|e| format!("--snapshot {p}: {e}"))?;
            serde_json::from_slice::<Snapshot>(&text)
                .map_err(|e| format!("--snapshot {p}: not a snapshot: {e}"))?
        }
        None => built_in(role, o)?,
    };
    let mut cfg = match role {
        "client" => ProxyConfig::sidecar(o.addr("outbound")?),
        _ => {
            // The outbound listener is unused on the server side; bind it anywhere.
            let any: SocketAddr = ([127, 0, 0, 1], 0).into();
            let mut c = ProxyConfig::sidecar(any).with_inbound(o.addr("inbound")?, o.addr("app")?);
            if o.get("tcp-inbound").is_some() {
                c = c.with_inbound(o.addr("tcp-inbound")?, o.addr("tcp-app")?);
            }
            c
        }
    }
    .with_source(SourceConfig::Static(Box::new(snap)));
    if !o.plaintext {
        cfg.identity = Some(StaticIdentity {
            cert_chain_pem: o.read("cert")?,
            key_pem: o.read("key")?,
            root_pem: o.read("ca")?,
        });
    }
    cfg.admin = Some(o.addr("admin")?);
    cfg.access_log = match o.get("access-log") {
        Some(p) => AccessLogSink::File(PathBuf::from(p)),
        None => AccessLogSink::Off,
    };
    cfg.workers = 1;
    if o.get("alloc-addr").is_some() {
        serve_alloc_counters(o.addr("alloc-addr")?)?;
    }
    skein_proxy::run_blocking(cfg).map_err(|e| e.to_string())
}

#[cfg(feature = "count-alloc")]
fn serve_alloc_counters(addr: SocketAddr) -> Result<(), String> {
    count_alloc::serve(addr).map_err(|e| format!("--alloc-addr {addr}: {e}"))
}

#[cfg(not(feature = "count-alloc"))]
fn serve_alloc_counters(_: SocketAddr) -> Result<(), String> {
    Err("--alloc-addr needs a build with --features count-alloc".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let res = match args.get(1).map(String::as_str) {
        Some("snapshot") => {
            let role = args.get(2).cloned().unwrap_or_default();
            Opts::parse(args.get(3..).unwrap_or_default()).and_then(|o| write_snapshot(&role, &o))
        }
        Some(role @ ("client" | "server")) => {
            Opts::parse(args.get(2..).unwrap_or_default()).and_then(|o| run(role, &o))
        }
        _ => Err("usage: skein-bench-proxy client|server OPTIONS, or snapshot client|server OPTIONS --out FILE (see src/main.rs)".into()),
    };
    if let Err(e) = res {
        eprintln!("skein-bench-proxy: {e}");
        std::process::exit(1);
    }
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
    fn bad_options_are_errors() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(Opts::parse(&v(&["--app"])).is_err());
        assert!(Opts::parse(&v(&["app", "x"])).is_err());
        let e = server_snapshot(&opts(&["--app", "nope"])).unwrap_err();
        assert!(e.contains("--app"), "{e}");
    }
}
