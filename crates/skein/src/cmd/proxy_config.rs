//! `skein proxy-config POD|WORKLOAD [clusters|listeners|routes|endpoints|all] [-o json]`:
//! what a proxy is running, read from its admin endpoint's `/config_dump`, in tables shaped
//! like `istioctl proxy-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::admin_client::admin_get;
use anyhow::Context;
use skein_runtime::{ProxyStatus, StateDir, Status};
use skein_snapshot::dump::ConfigDump;
use skein_snapshot::{LbPolicy, ListenerKind, RouteAction, StringMatch, UpstreamTls};

#[derive(clap::Args)]
pub struct Args {
    /// A pod name, or a workload name (its first pod).
    target: String,
    /// What to show.
    #[arg(value_enum, default_value = "all")]
    kind: Kind,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Clusters,
    Listeners,
    Routes,
    Endpoints,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

fn fmt_match(m: &Option<StringMatch>) -> String {
    match m {
        Some(StringMatch::Exact(s)) => s.clone(),
        Some(StringMatch::Prefix(s)) => format!("{s}*"),
        Some(StringMatch::Regex(s)) => format!("~{s}"),
        None => "*".into(),
    }
}

fn limit(n: u32) -> String {
    if n == u32::MAX {
        "-".into()
    } else {
        n.to_string()
    }
}

/// Renders one of `istioctl proxy-config`'s tables from a proxy's config dump.
type Table = fn(&ConfigDump, &ProxyStatus) -> String;

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    let status = Status::read(&state.status_file())
        .with_context(|| format!("nothing has run from {}", state.root().display()))?;
    let pod = status
        .pods
        .iter()
        .find(|p| p.name == args.target)
        .or_else(|| status.pods.iter().find(|p| p.workload == args.target))
        .with_context(|| format!("no pod or workload named `{}`", args.target))?;
    let proxy = pod.proxy.as_ref().with_context(|| {
        format!(
            "pod {} has no proxy (it is outside the mesh: sidecar.istio.io/inject is false, or its namespace is not labelled istio-injection=enabled)",
            pod.name
        )
    })?;
    let dump = admin_get(&proxy.admin, "/config_dump")?;
    let dump: ConfigDump =
        serde_json::from_str(&dump).context("/config_dump is not a proxy config dump")?;
    if args.output == Format::Json {
        let part = match args.kind {
            Kind::All => serde_json::to_value(&dump)?,
            Kind::Clusters | Kind::Endpoints => serde_json::to_value(&dump.snapshot.clusters)?,
            Kind::Routes => serde_json::to_value(&dump.snapshot.route_configs)?,
            Kind::Listeners => serde_json::json!({
                "inbound": dump.inbound,
                "snapshot": dump.snapshot.listeners,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&part)?);
        return Ok(ExitCode::SUCCESS);
    }
    let tables: [(Kind, Table); 4] = [
        (Kind::Listeners, listeners_table),
        (Kind::Routes, routes_table),
        (Kind::Clusters, clusters_table),
        (Kind::Endpoints, endpoints_table),
    ];
    let out: Vec<String> = tables
        .iter()
        .filter(|(k, _)| args.kind == Kind::All || args.kind == *k)
        .map(|(_, table)| table(&dump, proxy))
        .collect();
    print!("{}", out.join("\n"));
    Ok(ExitCode::SUCCESS)
}

/// `istioctl proxy-config listeners`: inbound listeners, the app's HTTP proxy, snapshot listeners.
fn listeners_table(dump: &ConfigDump, proxy: &ProxyStatus) -> String {
    let mut rows = Vec::new();
    for ib in &dump.inbound {
        rows.push(vec![
            ib.listen.to_string(),
            "ALL".into(),
            format!("Inline Route -> {}", ib.cluster),
        ]);
    }
    if let Some(out_http) = &proxy.outbound_http {
        rows.push(vec![
            out_http.clone(),
            "HTTP (the app's HTTP_PROXY)".into(),
            "Route: outbound".into(),
        ]);
    }
    for l in &dump.snapshot.listeners {
        let dest = match &l.kind {
            ListenerKind::Tcp { cluster } => format!("Cluster: {cluster}"),
            ListenerKind::Http { route_config } => format!("Route: {route_config}"),
            ListenerKind::TcpWeighted { clusters } => format!(
                "Clusters: {}",
                clusters
                    .iter()
                    .map(|d| format!("{} ({})", d.cluster, d.weight))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        rows.push(vec![l.address.to_string(), "ALL".into(), dest]);
    }
    crate::table::render(&["ADDRESS:PORT", "MATCH", "DESTINATION"], &rows)
}

/// `istioctl proxy-config routes`: one row per route of every virtual host.
fn routes_table(dump: &ConfigDump, _proxy: &ProxyStatus) -> String {
    let mut rows = Vec::new();
    for rc in &dump.snapshot.route_configs {
        for vh in &rc.virtual_hosts {
            for r in &vh.routes {
                let m = if r.matches.is_empty() {
                    "/*".to_string()
                } else {
                    r.matches
                        .iter()
                        .map(|m| {
                            let mut s = fmt_match(&m.path);
                            for h in &m.headers {
                                s.push_str(&format!(" {}={}", h.name, fmt_match(&h.value)));
                            }
                            s
                        })
                        .collect::<Vec<_>>()
                        .join(" | ")
                };
                let dest = match &r.action {
                    RouteAction::Route(d) => d
                        .iter()
                        .map(|w| format!("{} ({})", w.cluster, w.weight))
                        .collect::<Vec<_>>()
                        .join(", "),
                    RouteAction::DirectResponse { status, .. } => format!("direct {status}"),
                    RouteAction::Redirect(_) => "redirect".into(),
                };
                rows.push(vec![
                    rc.name.clone(),
                    vh.name.clone(),
                    r.name.clone(),
                    m,
                    dest,
                ]);
            }
        }
    }
    crate::table::render(
        &[
            "ROUTE CONFIG",
            "VIRTUAL HOST",
            "ROUTE",
            "MATCH",
            "DESTINATION (WEIGHT)",
        ],
        &rows,
    )
}

/// `istioctl proxy-config clusters`: outbound clusters with their policies, then inbound ones.
fn clusters_table(dump: &ConfigDump, _proxy: &ProxyStatus) -> String {
    let mut rows: Vec<Vec<String>> = dump
        .snapshot
        .clusters
        .iter()
        .map(|c| {
            let p = &c.connection_pool;
            let od = c.outlier_detection.as_ref().map_or("-".to_string(), |o| {
                format!(
                    "{}x5xx/{}s eject {}s max {}% minHealth {}%",
                    o.consecutive_5xx_errors,
                    o.interval_ms / 1000,
                    o.base_ejection_time_ms / 1000,
                    o.max_ejection_percent,
                    o.min_health_percent
                )
            });
            vec![
                if c.service.is_empty() {
                    c.name.clone()
                } else {
                    c.service.clone()
                },
                c.port.to_string(),
                c.subset.clone().unwrap_or_else(|| "-".into()),
                "outbound".into(),
                match &c.lb_policy {
                    LbPolicy::RoundRobin => "ROUND_ROBIN".into(),
                    LbPolicy::LeastRequest => "LEAST_REQUEST".into(),
                    LbPolicy::Random => "RANDOM".into(),
                    LbPolicy::ConsistentHash(_) => "RING_HASH".into(),
                },
                match &c.tls {
                    UpstreamTls::Disable => "DISABLE".into(),
                    UpstreamTls::IstioMutual => "ISTIO_MUTUAL".into(),
                    UpstreamTls::Simple { .. } => "SIMPLE".into(),
                    UpstreamTls::Mutual { .. } => "MUTUAL".into(),
                },
                format!(
                    "{}/{}/{}/{}",
                    limit(p.max_connections),
                    limit(p.http1_max_pending_requests),
                    limit(p.http2_max_requests),
                    if p.max_requests_per_connection == 0 {
                        "-".into()
                    } else {
                        p.max_requests_per_connection.to_string()
                    }
                ),
                od,
            ]
        })
        .collect();
    for ib in &dump.inbound {
        let port = ib.cluster.split('|').nth(1).unwrap_or("").to_string();
        rows.push(vec![
            String::new(),
            port,
            "-".into(),
            "inbound".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    crate::table::render(
        &[
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "LB",
            "TLS",
            "MAXCONN/PENDING/MAXREQ/PERCONN",
            "OUTLIER DETECTION",
        ],
        &rows,
    )
}

/// `istioctl proxy-config endpoints`: every endpoint with outlier detection's verdict.
fn endpoints_table(dump: &ConfigDump, _proxy: &ProxyStatus) -> String {
    let mut rows = Vec::new();
    for c in &dump.snapshot.clusters {
        // Outlier detection's view, where the proxy reports one (`endpoint_status`).
        let status = dump.endpoint_status.get(&c.name);
        for e in &c.endpoints {
            let addr = e.address.to_string();
            let st = status.and_then(|list| list.iter().find(|s| s.address == e.address));
            let ejected = st.is_some_and(|s| s.status == "ejected");
            rows.push(vec![
                addr,
                if ejected { "UNHEALTHY" } else { "HEALTHY" }.into(),
                if ejected { "FAILED" } else { "OK" }.into(),
                c.name.clone(),
            ]);
        }
    }
    crate::table::render(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], &rows)
}
