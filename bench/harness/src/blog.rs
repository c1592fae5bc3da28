//! The blog example's config for a bench sidecar: the snapshot the control plane compiles for
//! a blog-system pod (`skein_control::Compiler` over `examples/blog-system` and a registry of
//! the example's pods), with the bench's own services, listeners and policy merged in so the
//! bench load still flows. Peak RSS with this config is the figure the RSS budget is about.

use std::collections::BTreeMap;
use std::path::Path;

use skein_control::registry::{Pod, ProxyInfo, Registry};
use skein_snapshot::Snapshot;

/// The example's pods, as `skein up` registers them (one per replica), on loopback addresses
/// of their own (127.77.x.x: nothing else on the machine uses them, and the bench never sends
/// traffic to them; the outbound TCP listeners bind there).
fn registry() -> Registry {
    let pod = |name: &str, labels: &[(&str, &str)], n: u8, port: (&str, u16), mode: &str| Pod {
        name: name.into(),
        namespace: "blog-system".into(),
        workload: name.rsplit_once('-').map_or(name, |x| x.0).into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        service_account: "default".into(),
        ip: format!("127.77.1.{n}"),
        port_names: [(port.0.to_string(), port.1)].into(),
        ready: true,
        proxy: (!mode.is_empty()).then(|| ProxyInfo {
            mode: mode.into(),
            outbound_ip: Some(format!("127.77.4.{n}")),
        }),
        ..Pod::default()
    };
    let web = |v: &'static str| [("app", "web"), ("version", v)];
    let was = [("app", "was"), ("version", "v1")];
    let mut gw = pod(
        "istio-ingressgateway-1",
        &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
        9,
        ("http", 8080),
        "gateway",
    );
    gw.namespace = "istio-system".into();
    Registry {
        pods: vec![
            pod("web-stable-1", &web("stable"), 1, ("http", 80), "sidecar"),
            pod("web-stable-2", &web("stable"), 2, ("http", 80), "sidecar"),
            pod("web-canary-1", &web("canary"), 3, ("http", 80), "sidecar"),
            pod("was-1", &was, 4, ("http", 8080), "sidecar"),
            pod("was-2", &was, 5, ("http", 8080), "sidecar"),
            pod("mysql-1", &[("app", "mysql")], 6, ("mysql", 3306), ""),
            gw,
        ],
    }
}

/// The pod whose sidecar config a bench role gets: web's for the client (web calls was, so its
/// outbound side has the routes, subsets, mirror and retries), was's for the server (its
/// AuthorizationPolicy).
pub fn pod_for(role: &str) -> &'static str {
    if role == "client" {
        "web-stable-1"
    } else {
        "was-1"
    }
}

/// Compiles pod `pod`'s snapshot from the manifests in `dir`.
pub fn compile(dir: &Path, pod: &str) -> Result<Snapshot, String> {
    let manifests = skein_api::load_path(dir)
        .map_err(|e| format!("{}: the manifests do not load: {e}", dir.display()))?;
    let reg = registry();
    skein_control::Compiler::new(&manifests, &reg)
        .snapshot(pod, "blog")
        .map_err(|e| format!("compiling {pod}'s snapshot: {e}"))
}

/// `blog` with `bench` merged in: the bench's node (identity and metric labels), listeners,
/// virtual hosts, clusters and mTLS mode; the AuthorizationPolicies of both.
pub fn merge(blog: Snapshot, bench: Snapshot) -> Result<Snapshot, String> {
    let mut s = blog;
    s.version = format!("{}+{}", bench.version, s.version);
    s.node = bench.node;
    s.listeners.extend(bench.listeners);
    for rc in bench.route_configs {
        match s.route_configs.iter_mut().find(|r| r.name == rc.name) {
            Some(r) => r.virtual_hosts.extend(rc.virtual_hosts),
            None => s.route_configs.push(rc),
        }
    }
    s.clusters.extend(bench.clusters);
    s.inbound.mtls = bench.inbound.mtls;
    s.inbound.port_mtls.extend(bench.inbound.port_mtls);
    s.inbound.authz.extend(bench.inbound.authz);
    s.validate()
        .map_err(|e| format!("the merged snapshot is not valid: {e}"))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blog_snapshots_compile_and_merge() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/blog-system");
        for role in ["client", "server"] {
            let blog = compile(&dir, pod_for(role)).unwrap();
            assert!(
                blog.clusters.len() > 3,
                "{role}: {} clusters",
                blog.clusters.len()
            );
            let (n, authz) = (blog.clusters.len(), blog.inbound.authz.len());
            let mut bench = skein_snapshot::build::SnapshotBuilder::new("v1", "bench", role)
                .http_service("upstream", 8080, &["127.0.0.1:1"])
                .build();
            bench.inbound.authz.push(Default::default());
            let m = merge(blog, bench).unwrap();
            assert_eq!(m.clusters.len(), n + 1);
            assert_eq!(m.inbound.authz.len(), authz + 1);
            assert_eq!(m.node.namespace, "bench");
        }
    }
}
