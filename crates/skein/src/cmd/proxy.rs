//! `skein proxy` (hidden): one sidecar or gateway proxy process. The runtime starts it in each
//! pod with a sidecar and as the ingress gateway; users do not run it by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use skein_proxy::{
    AccessLogSink, InboundConfig, Mode, ProxyConfig, SourceConfig, TlsListenerConfig,
};

#[derive(clap::Args)]
pub struct Args {
    /// `sidecar` or `gateway`.
    #[arg(long, default_value = "sidecar")]
    mode: String,
    /// The proxy's node id: its pod name.
    #[arg(long)]
    node: String,
    /// The pod's namespace.
    #[arg(long)]
    namespace: String,
    /// The control plane's stream address (TLS; with --control-root).
    #[arg(long, conflicts_with = "snapshot", requires = "control_root")]
    control: Option<SocketAddr>,
    /// The mesh root certificates (PEM) the control plane's certificate must chain to,
    /// pinned at start (the state directory's `certs/ca/root-cert.pem`, or a plug-in CA's
    /// `root-cert.pem`).
    #[arg(long, requires = "control")]
    control_root: Option<PathBuf>,
    /// The DNS name the control plane's certificate must carry.
    #[arg(long, default_value = skein_proxy::ControlTls::SERVER_NAME)]
    control_server_name: String,
    /// The pod's bootstrap token file (written by the runtime, mode 0600): proves to the
    /// control plane which pod this proxy is until it has a certificate.
    #[arg(long, requires = "control")]
    bootstrap_token: Option<PathBuf>,
    /// A snapshot JSON file instead of a control plane (re-read when it changes).
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Sidecar: the app's HTTP_PROXY listener.
    #[arg(long)]
    outbound_http: Option<SocketAddr>,
    /// Sidecar: an inbound listener, `LISTEN=APP` (e.g. 127.1.1.2:8080=127.1.3.2:8080).
    #[arg(long, value_name = "LISTEN=APP")]
    inbound: Vec<String>,
    /// Gateway: the plaintext HTTP listener.
    #[arg(long)]
    gateway_http: Option<SocketAddr>,
    /// Gateway: the HTTPS listener (with --cert and --key).
    #[arg(long, requires_all = ["cert", "key"])]
    gateway_https: Option<SocketAddr>,
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    key: Option<PathBuf>,
    /// The admin endpoint (loopback).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// The merged metrics endpoint Prometheus scrapes (Istio's `:15020/stats/prometheus`).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The app's own metrics, merged into --metrics: `ADDR:PORT/PATH` (e.g.
    /// 127.1.3.2:8080/metrics).
    #[arg(long, requires = "metrics", value_name = "ADDR:PORT/PATH")]
    app_metrics: Option<String>,
    /// Where access log lines go, overriding the mesh config's `accessLogFile`: `stdout`,
    /// `off` or a file path. Without it the snapshot's mesh config decides (Istio's default:
    /// no access log).
    #[arg(long)]
    access_log: Option<String>,
    /// A directory under which an absolute `accessLogFile` path from the mesh config is
    /// written (`skein up` passes the pod's own directory).
    #[arg(long, value_name = "DIR")]
    access_log_root: Option<PathBuf>,
    /// Worker threads (default: 1 for a sidecar, the CPU count for a gateway).
    #[arg(long)]
    workers: Option<usize>,
    /// A fixed workload identity instead of one from the control plane: the certificate
    /// chain (PEM, leaf first), with --identity-key and --identity-roots.
    #[arg(long, requires_all = ["identity_key", "identity_roots"])]
    identity_cert: Option<PathBuf>,
    /// The identity's private key (PEM).
    #[arg(long, requires = "identity_cert")]
    identity_key: Option<PathBuf>,
    /// The trust bundle (PEM root certificates).
    #[arg(long, requires = "identity_cert")]
    identity_roots: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::init_component_logging();
    let mut config = match args.mode.as_str() {
        "sidecar" => {
            let outbound = args
                .outbound_http
                .context("a sidecar needs --outbound-http")?;
            let mut c = ProxyConfig::sidecar(outbound);
            for spec in &args.inbound {
                let (listen, app) = spec
                    .split_once('=')
                    .with_context(|| format!("--inbound {spec:?}: expected LISTEN=APP"))?;
                let listen: SocketAddr = listen
                    .parse()
                    .with_context(|| format!("--inbound {spec:?}: bad listen address"))?;
                let app: SocketAddr = app
                    .parse()
                    .with_context(|| format!("--inbound {spec:?}: bad app address"))?;
                c.inbound.push(InboundConfig {
                    listen,
                    app,
                    port: app.port(),
                });
            }
            c
        }
        "gateway" => {
            let http = args
                .gateway_http
                .context("a gateway needs --gateway-http")?;
            let mut c = ProxyConfig::gateway(http);
            if let (Some(listen), Some(cert), Some(key)) =
                (args.gateway_https, &args.cert, &args.key)
            {
                c.gateway_https = Some(TlsListenerConfig {
                    listen,
                    cert_path: cert.clone(),
                    key_path: key.clone(),
                });
            }
            c
        }
        other => bail!("--mode {other:?}: expected sidecar or gateway"),
    };
    config.mode = if args.mode == "gateway" {
        Mode::Gateway
    } else {
        Mode::Sidecar
    };
    config.admin = Some(args.admin);
    config.metrics = args.metrics;
    if let Some(spec) = &args.app_metrics {
        let (addr, path) = spec.split_at(spec.find('/').unwrap_or(spec.len()));
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("--app-metrics {spec:?}: expected ADDR:PORT/PATH"))?;
        config.app_metrics = Some(skein_proxy::AppMetrics {
            addr,
            path: if path.is_empty() {
                "/metrics".into()
            } else {
                path.into()
            },
        });
    }
    config.access_log = args.access_log.as_deref().map(|a| match a {
        "stdout" | "/dev/stdout" => AccessLogSink::Stdout,
        "off" | "" => AccessLogSink::Off,
        path => AccessLogSink::File(PathBuf::from(path)),
    });
    config.access_log_root = args.access_log_root.clone();
    if let Some(w) = args.workers {
        config.workers = w.max(1);
    }
    if let (Some(cert), Some(key), Some(roots)) = (
        &args.identity_cert,
        &args.identity_key,
        &args.identity_roots,
    ) {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        config.identity = Some(skein_proxy::StaticIdentity {
            cert_chain_pem: read(cert)?,
            key_pem: read(key)?,
            root_pem: read(roots)?,
        });
    }
    if let Some(roots) = args.control_root {
        config.control_tls = Some(skein_proxy::ControlTls {
            roots,
            server_name: args.control_server_name.clone(),
            bootstrap_token: args.bootstrap_token.clone(),
        });
    }
    config.source = match (args.control, args.snapshot) {
        (Some(addr), _) => SourceConfig::Control {
            addr,
            node: args.node.clone(),
            namespace: args.namespace.clone(),
        },
        (None, Some(path)) => SourceConfig::File {
            path,
            poll_interval: Duration::from_millis(200),
        },
        (None, None) => bail!("give --control ADDR or --snapshot FILE"),
    };
    tracing::info!(node = %args.node, mode = %args.mode, "starting proxy");
    skein_proxy::run_blocking(config)?;
    Ok(ExitCode::SUCCESS)
}
