//! Bench-only stand-in for `skein proxy --identity ...`: the `skein proxy` CLI cannot load a
//! static workload identity from files, so this runs the same library entry point
//! (`skein_proxy::run_blocking`) with `ProxyConfig::identity` set from PEM files and a fixed
//! snapshot built in process.
//!
//! client --outbound ADDR --endpoint SERVER_INBOUND --admin ADDR --cert F --key F --ca F [--plaintext]
//! server --inbound LISTEN --app ADDR --admin ADDR --cert F --key F --ca F [--plaintext]
//! (optional opaque TCP: client --tcp-listen ADDR --tcp-endpoint ADDR; server --tcp-inbound ADDR --tcp-app ADDR)
//!
//! Access log off, one worker (as an Istio sidecar with one core).

use std::collections::HashMap;
use std::net::SocketAddr;

use skein_proxy::{AccessLogSink, ProxyConfig, SourceConfig, StaticIdentity};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::{InboundPolicy, Listener, ListenerKind, MtlsMode, Protocol, UpstreamTls};

const NS: &str = "bench";

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{NS}/sa/{sa}")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = args.get(1).cloned().unwrap_or_default();
    let mut opts: HashMap<String, String> = HashMap::new();
    let mut plaintext = false;
    let mut i = 2;
    while i < args.len() {
        if args[i] == "--plaintext" {
            plaintext = true;
            i += 1;
            continue;
        }
        let k = args[i].trim_start_matches("--").to_string();
        let v = args.get(i + 1).cloned().expect("option value");
        opts.insert(k, v);
        i += 2;
    }
    let addr = |k: &str| -> SocketAddr {
        opts.get(k)
            .unwrap_or_else(|| panic!("--{k} missing"))
            .parse()
            .expect("ip:port")
    };
    let read = |k: &str| -> String {
        let p = opts.get(k).unwrap_or_else(|| panic!("--{k} missing"));
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let identity = (!plaintext).then(|| StaticIdentity {
        cert_chain_pem: read("cert"),
        key_pem: read("key"),
        root_pem: read("ca"),
    });
    let mut cfg = match role.as_str() {
        "client" => {
            let ep = opts.get("endpoint").expect("--endpoint").clone();
            let snap = SnapshotBuilder::new("v1", NS, "client")
                .http_service("upstream", 8080, &[&ep])
                .with_last_cluster(|c| {
                    if !plaintext {
                        c.tls = UpstreamTls::IstioMutual;
                        c.identities = vec![spiffe("server")];
                    }
                })
                .build();
            let mut snap = snap;
            snap.node.service_account = "client".into();
            // Optional opaque TCP service `tcpsink.bench:9000` on its own listener.
            if let (Some(listen), Some(ep)) = (opts.get("tcp-listen"), opts.get("tcp-endpoint")) {
                let mut c = cluster(&fqdn("tcpsink", NS), 9000, None, &[ep.as_str()]);
                c.protocol = Protocol::Tcp;
                if !plaintext {
                    c.tls = UpstreamTls::IstioMutual;
                    c.identities = vec![spiffe("server")];
                }
                let name = c.name.clone();
                snap.clusters.push(c);
                snap.listeners.push(Listener {
                    name: name.clone(),
                    address: listen.parse().expect("ip:port"),
                    kind: ListenerKind::Tcp { cluster: name },
                });
            }
            ProxyConfig::sidecar(addr("outbound"))
                .with_source(SourceConfig::Static(Box::new(snap)))
        }
        "server" => {
            // The outbound listener is unused on the server side; bind it anywhere.
            let mut snap = SnapshotBuilder::new("v1", NS, "server").build();
            snap.node.service_account = "server".into();
            snap.inbound = InboundPolicy {
                mtls: if plaintext {
                    MtlsMode::Permissive
                } else {
                    MtlsMode::Strict
                },
                ..Default::default()
            };
            let mut c = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
                .with_inbound(addr("inbound"), addr("app"));
            if opts.contains_key("tcp-inbound") {
                c = c.with_inbound(addr("tcp-inbound"), addr("tcp-app"));
            }
            c.with_source(SourceConfig::Static(Box::new(snap)))
        }
        other => panic!("role {other:?}: expected client or server"),
    };
    cfg.identity = identity;
    cfg.admin = Some(addr("admin"));
    cfg.access_log = AccessLogSink::Off;
    cfg.workers = 1;
    if let Err(e) = skein_proxy::run_blocking(cfg) {
        eprintln!("skein-bench-proxy: {e}");
        std::process::exit(1);
    }
}
