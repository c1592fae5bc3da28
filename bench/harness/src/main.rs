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
//!   --trace-zipkin ADDR Zipkin v2 spans to ADDR (ip:port) [--trace-sampling PCT, default 100]
//!   --alloc-addr ADDR   serve the allocation counters (needs --features count-alloc)
//! skein-bench-snapshot client|server [the role's options] [--blog DIR] --out FILE
//!   writes the role's snapshot; with --blog, the snapshot the control plane compiles for the
//!   example's web (client) or was (server) pod, with the bench's own merged in (a binary of
//!   its own, so that the sidecar's binary, whose code pages count in its RSS, does not carry
//!   the control plane's compiler)
//! ```
//!
//! The built-in snapshots: the client has `upstream.bench:8080` (HTTP, ISTIO_MUTUAL, server
//! identity checked) and optionally `tcpsink.bench:9000` (opaque TCP); the server is STRICT with
//! one ALLOW AuthorizationPolicy for principal `cluster.local/ns/bench/sa/client` on the HTTP
//! port (and the opaque TCP port, which the policy would otherwise deny). One worker (as an
//! Istio sidecar with one core).

#[cfg(feature = "count-alloc")]
mod count_alloc;

#[cfg(feature = "count-alloc")]
#[global_allocator]
static GLOBAL: count_alloc::Counting = count_alloc::Counting;

use std::net::SocketAddr;
use std::path::PathBuf;

use skein_bench_proxy::{Opts, built_in, with_tracing};
use skein_proxy::{AccessLogSink, ProxyConfig, SourceConfig, StaticIdentity};
use skein_snapshot::Snapshot;

fn run(role: &str, o: &Opts) -> Result<(), String> {
    let snap = match o.get("snapshot") {
        Some(p) => {
            let text = std::fs::read(p).map_err(|e| format!("--snapshot {p}: {e}"))?;
            let mut snap = serde_json::from_slice::<Snapshot>(&text)
                .map_err(|e| format!("--snapshot {p}: not a snapshot: {e}"))?;
            with_tracing(&mut snap, role, o)?;
            snap
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
    // Only where `--access-log` says: the blog snapshots' mesh config would log to stdout.
    cfg.access_log = Some(match o.get("access-log") {
        Some(p) => AccessLogSink::File(PathBuf::from(p)),
        None => AccessLogSink::Off,
    });
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
        Some(role @ ("client" | "server")) => {
            Opts::parse(args.get(2..).unwrap_or_default()).and_then(|o| run(role, &o))
        }
        _ => Err("usage: skein-bench-proxy client|server OPTIONS (see src/main.rs)".into()),
    };
    if let Err(e) = res {
        eprintln!("skein-bench-proxy: {e}");
        std::process::exit(1);
    }
}
