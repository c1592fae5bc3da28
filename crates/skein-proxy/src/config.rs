//! The proxy's own configuration: what to bind and where snapshots come from.
//!
//! Everything that changes at run time (routes, clusters, TCP listeners) is in the snapshot
//! (`skein_snapshot::Snapshot`); this is only what the process is started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use skein_snapshot::Snapshot;

use crate::identity::StaticIdentity;

/// Sidecar or gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In front of one workload: outbound HTTP (the app's HTTP_PROXY), inbound, TCP listeners.
    Sidecar,
    /// An ingress gateway: HTTP and HTTPS listeners routed by the `gateway` route config.
    Gateway,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSink {
    /// No access log (Istio's default when `accessLogFile` is empty).
    Off,
    /// Standard output (`accessLogFile: /dev/stdout`, the seed's setting).
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// One inbound listener of a sidecar (one per container port the workload serves).
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// Address to accept on (the pod IP and the service's target port, as a pod sees it).
    pub listen: SocketAddr,
    /// The application's own address; traffic goes there after the proxy.
    pub app: SocketAddr,
    /// Port used in the cluster name `inbound|PORT||` (defaults to the app's port when 0).
    pub port: u16,
}

impl InboundConfig {
    /// The port in the cluster name: `port`, or the app's port when `port` is 0.
    pub fn cluster_port(&self) -> u16 {
        if self.port == 0 {
            self.app.port()
        } else {
            self.port
        }
    }

    /// `inbound|PORT||`.
    pub fn cluster_name(&self) -> String {
        skein_snapshot::inbound_cluster_name(self.cluster_port())
    }
}

/// A gateway HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsListenerConfig {
    /// Address to accept on.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// Where snapshots come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A JSON file, re-read when it changes (polled) and on SIGHUP.
    File {
        /// The snapshot file.
        path: PathBuf,
        /// How often the file's modification time is checked.
        poll_interval: Duration,
    },
    /// One fixed snapshot (tests, `skein proxy` with an inline config).
    Static(Box<Snapshot>),
    /// The control plane's push stream (`skein_snapshot::stream`): the proxy connects, says hello
    /// as `node` in `namespace`, applies every snapshot and ACKs or NACKs it, and reconnects
    /// with backoff while keeping its last config. See [`crate::ControlSource`].
    Control {
        /// The control plane's stream address.
        addr: SocketAddr,
        /// Proxy id: the pod name for a sidecar, the gateway's name for a gateway.
        node: String,
        /// The pod's namespace.
        namespace: String,
    },
    /// Nothing at start: snapshots are pushed through [`crate::ProxyHandle::apply`] or a
    /// custom [`crate::ConfigSource`] given to [`crate::start_with_source`].
    Pushed,
}

/// How the proxy authenticates the control plane and itself on the control stream.
#[derive(Debug, Clone)]
pub struct ControlTls {
    /// The mesh root certificates (PEM) the control plane's serving certificate must chain
    /// to, pinned at start: the file is read once (retried until it can be) and kept.
    pub roots: PathBuf,
    /// The DNS name the control plane's certificate must carry (`istiod.istio-system.svc`).
    pub server_name: String,
    /// The pod's bootstrap token file, sent in the hello while the proxy has no valid
    /// certificate (then its current certificate authenticates it instead).
    pub bootstrap_token: Option<PathBuf>,
}

impl ControlTls {
    /// The control plane's DNS name that proxies check by default.
    pub const SERVER_NAME: &'static str = "istiod.istio-system.svc";
}

/// Configuration of one proxy process.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Sidecar or gateway.
    pub mode: Mode,
    /// Sidecar outbound HTTP listener (the app's HTTP_PROXY), routed by authority.
    pub outbound_http: Option<SocketAddr>,
    /// Route config used by the outbound HTTP listener.
    pub outbound_route: String,
    /// Sidecar inbound listeners, one per container port; each forwards to its own cluster
    /// `inbound|PORT||`. Ports must be distinct.
    pub inbound: Vec<InboundConfig>,
    /// Gateway plaintext HTTP listener.
    pub gateway_http: Option<SocketAddr>,
    /// Gateway HTTPS listener.
    pub gateway_https: Option<TlsListenerConfig>,
    /// Route config used by the gateway listeners.
    pub gateway_route: String,
    /// Admin endpoint (/ready, /config_dump, /control, /stats/prometheus, /clusters,
    /// /quitquitquit).
    /// Loopback by default; the proxy refuses nothing, but binding elsewhere is the caller's
    /// explicit choice.
    pub admin: Option<SocketAddr>,
    /// Where the snapshot comes from.
    pub source: SourceConfig,
    /// Access log destination.
    pub access_log: AccessLogSink,
    /// Worker threads for [`crate::run_blocking`]. Default 1 for a sidecar: one core handles
    /// thousands of requests per second for one workload, and each extra worker costs memory
    /// and cross-thread wakeups (Istio runs Envoy sidecars with `--concurrency 2`; ztunnel uses
    /// 2 workers for a whole node). Gateways default to the number of CPUs.
    pub workers: usize,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    pub drain_timeout: Duration,
    /// How long inbound protocol detection waits for the client's first bytes before
    /// treating the connection as opaque TCP (server-first protocols such as MySQL).
    pub detect_timeout: Duration,
    /// How often idle upstream connections are checked against their idle timeout.
    pub idle_sweep_interval: Duration,
    /// A fixed workload identity (certificate, key, trust bundle) for mTLS. None: with a
    /// [`SourceConfig::Control`] source the proxy asks the control plane to sign one; with
    /// other sources it has none until [`crate::ProxyHandle::install_identity`].
    pub identity: Option<StaticIdentity>,
    /// TLS for a [`SourceConfig::Control`] stream (the `skein` CLI always sets it). None: the
    /// stream is plaintext and unauthenticated, for in-process tests and embedding only.
    pub control_tls: Option<ControlTls>,
}

impl ProxyConfig {
    /// A sidecar listening for the app's outbound HTTP on `outbound`, with the admin endpoint
    /// on an ephemeral loopback port and no access log.
    pub fn sidecar(outbound: SocketAddr) -> Self {
        ProxyConfig {
            mode: Mode::Sidecar,
            outbound_http: Some(outbound),
            outbound_route: skein_snapshot::SIDECAR_OUTBOUND_ROUTE.to_string(),
            inbound: Vec::new(),
            gateway_http: None,
            gateway_https: None,
            gateway_route: skein_snapshot::GATEWAY_ROUTE.to_string(),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            source: SourceConfig::Pushed,
            access_log: AccessLogSink::Off,
            workers: 1,
            drain_timeout: Duration::from_secs(5),
            detect_timeout: Duration::from_millis(100),
            idle_sweep_interval: Duration::from_secs(1),
            identity: None,
            control_tls: None,
        }
    }

    /// A gateway with a plaintext HTTP listener on `http`.
    pub fn gateway(http: SocketAddr) -> Self {
        ProxyConfig {
            mode: Mode::Gateway,
            outbound_http: None,
            gateway_http: Some(http),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            ..ProxyConfig::sidecar(http)
        }
    }

    /// Sets the snapshot source.
    pub fn with_source(mut self, source: SourceConfig) -> Self {
        self.source = source;
        self
    }

    /// Sets the access log sink.
    pub fn with_access_log(mut self, sink: AccessLogSink) -> Self {
        self.access_log = sink;
        self
    }

    /// Sets a fixed workload identity (see [`ProxyConfig::identity`]).
    pub fn with_identity(mut self, identity: StaticIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Adds an inbound listener whose cluster is named after the app's port.
    pub fn with_inbound(mut self, listen: SocketAddr, app: SocketAddr) -> Self {
        self.inbound.push(InboundConfig {
            listen,
            app,
            port: app.port(),
        });
        self
    }
}
