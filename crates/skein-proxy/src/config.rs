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

/// The app's own metrics endpoint, scraped over plain HTTP/1.1 when Prometheus scrapes the
/// merged endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    /// The app's address and port.
    pub addr: SocketAddr,
    /// The path (with its query, if any), e.g. `/metrics`.
    pub path: String,
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
    /// The merged metrics endpoint Prometheus scrapes (Istio's agent on `:15020`,
    /// `/stats/prometheus`): the proxy's metrics followed by the app's own, if
    /// [`ProxyConfig::app_metrics`] is set. None: not served.
    pub metrics: Option<SocketAddr>,
    /// Where the app serves its own Prometheus metrics (what the pod's `prometheus.io/*`
    /// annotations said before injection moved them to the proxy, Istio's
    /// `ISTIO_PROMETHEUS_ANNOTATIONS`), merged into [`ProxyConfig::metrics`].
    pub app_metrics: Option<AppMetrics>,
    /// Where the snapshot comes from.
    pub source: SourceConfig,
    /// Where access log lines go when the `--access-log` flag says so; None: the
    /// snapshot's mesh config (`accessLogFile`) decides.
    pub access_log: Option<AccessLogSink>,
    /// Where an absolute `accessLogFile` path from the snapshot lands: re-rooted under this
    /// directory (under `skein up`, the pod's own directory in the state dir). None: as
    /// written.
    pub access_log_root: Option<PathBuf>,
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
    /// What one downstream client may make the proxy hold: header sizes, timeouts,
    /// connection caps, HTTP/2 settings.
    pub limits: Limits,
}

/// Downstream limits, after Envoy's HTTP connection manager settings and its overload
/// manager's `downstream_connections`. [`Limits::default`] is sized for a sidecar in front of
/// one workload; [`Limits::gateway`] caps connections lower, as a gateway faces clients from
/// outside.
///
/// Memory clients can pin in request heads is bounded by `max_connections` times about twice
/// `max_request_headers_bytes` (the read buffer grows by doubling): about 130 KiB per
/// connection, 128 MiB for a sidecar's 1,024 and 48 MiB for a gateway's 384.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest HTTP/1 request head (request line and headers) and HTTP/2 header list, in
    /// bytes; beyond it the request gets `431` and the connection closes (HTTP/2: the stream
    /// is refused). Envoy's `max_request_headers_kb`, default 60 KiB.
    pub max_request_headers_bytes: usize,
    /// Most headers in an HTTP/1 request (`431` beyond). Envoy's `max_headers_count`,
    /// default 100.
    pub max_request_headers: usize,
    /// How long an HTTP/1 connection may take to send a complete request head: its first
    /// one counted from when it opened, a later one from its first byte (a keep-alive
    /// connection waiting for its next request is closed by `idle_timeout`, not by this:
    /// closing it early would race the client reusing it). Closed between 1 and 1.5 times
    /// this after. Envoy's `request_headers_timeout`, unset in Envoy and Istio; 10 s here.
    pub request_headers_timeout: Duration,
    /// Most downstream connections one listener holds at once. At the cap a new connection
    /// sheds the oldest idle one (no request in flight: a keep-alive connection, or one still
    /// sending its request head); when none is idle the new one is closed at once.
    pub max_connections_per_listener: usize,
    /// Most downstream connections the whole proxy holds at once (Envoy's overload manager
    /// `envoy.resource_monitors.downstream_connections`), shed the same way.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` offered to clients (Envoy's edge
    /// recommendation: 100).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 initial stream window (Envoy's edge recommendation: 64 KiB).
    pub h2_stream_window: u32,
    /// HTTP/2 initial connection window (Envoy's edge recommendation: 1 MiB).
    pub h2_connection_window: u32,
    /// HTTP/2 keep-alive: a PING after this long without frames from the client (Envoy's
    /// `connection_keepalive.interval`); None sends none.
    pub h2_keepalive_interval: Option<Duration>,
    /// HTTP/2 keep-alive: the connection closes when a PING is not answered within this.
    pub h2_keepalive_timeout: Duration,
    /// A downstream HTTP connection with no request in flight for this long is closed
    /// (HTTP/2: GOAWAY first), checked every quarter of it: closed between 1 and 1.25 times
    /// this after its last request. Envoy's `common_http_protocol_options.idle_timeout`,
    /// Istio's default 1 h.
    pub idle_timeout: Duration,
    /// An opaque TCP connection with no bytes either way for this long is closed, checked as
    /// `idle_timeout` is. Istio's default `idle_timeout` on `tcp_proxy`: 1 h.
    pub tcp_idle_timeout: Duration,
    /// How long an inbound connection that started a TLS ClientHello may take to finish it;
    /// then it is closed. Envoy's `listener_filters_timeout` (15 s, with
    /// `continue_on_listener_filters_timeout` false).
    pub client_hello_timeout: Duration,
}

impl Limits {
    /// A gateway's limits: the defaults with at most 256 connections per listener and 384 in
    /// all.
    pub fn gateway() -> Self {
        Limits {
            max_connections_per_listener: 256,
            max_connections: 384,
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_headers_bytes: 60 * 1024,
            max_request_headers: 100,
            request_headers_timeout: Duration::from_secs(10),
            max_connections_per_listener: 512,
            max_connections: 1024,
            h2_max_concurrent_streams: 100,
            h2_stream_window: 64 * 1024,
            h2_connection_window: 1024 * 1024,
            h2_keepalive_interval: Some(Duration::from_secs(300)),
            h2_keepalive_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(3600),
            tcp_idle_timeout: Duration::from_secs(3600),
            client_hello_timeout: Duration::from_secs(15),
        }
    }
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
            metrics: None,
            app_metrics: None,
            source: SourceConfig::Pushed,
            access_log: None,
            access_log_root: None,
            workers: 1,
            drain_timeout: Duration::from_secs(5),
            detect_timeout: Duration::from_millis(100),
            idle_sweep_interval: Duration::from_secs(1),
            identity: None,
            control_tls: None,
            limits: Limits::default(),
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
            limits: Limits::gateway(),
            ..ProxyConfig::sidecar(http)
        }
    }

    /// Sets the snapshot source.
    pub fn with_source(mut self, source: SourceConfig) -> Self {
        self.source = source;
        self
    }

    /// Sets the access log sink (overriding the snapshot's `accessLogFile`).
    pub fn with_access_log(mut self, sink: AccessLogSink) -> Self {
        self.access_log = Some(sink);
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
