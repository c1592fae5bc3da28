//! Writes a bench sidecar's snapshot: `skein-bench-snapshot client|server OPTIONS [--blog DIR]
//! --out FILE` (see `main.rs`).

#[path = "../blog.rs"]
mod blog;

use std::path::Path;

use skein_bench_proxy::{Opts, built_in};

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = args.get(1).cloned().unwrap_or_default();
    let res =
        Opts::parse(args.get(2..).unwrap_or_default()).and_then(|o| write_snapshot(&role, &o));
    if let Err(e) = res {
        eprintln!("skein-bench-snapshot: {e}");
        std::process::exit(1);
    }
}
