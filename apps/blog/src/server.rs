//! Running an axum app in the background with graceful shutdown; shared by was and web.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a signalled server waits for in-flight requests before it stops anyway.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A server serving in a background task.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    /// A server that runs alongside and stops with this one (a metrics listener).
    companion: Option<Box<ServerHandle>>,
    /// Span export, flushed and stopped after the server.
    telemetry: crate::trace::Telemetry,
}

impl ServerHandle {
    /// Serves `app` on `listener` until [`shutdown`](Self::shutdown) is called or the
    /// handle is dropped.
    pub fn spawn(listener: TcpListener, app: Router) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                // Either an explicit shutdown or the handle being dropped.
                let _ = rx.await;
            })
            .await
        });
        Ok(Self {
            local_addr,
            shutdown: Some(tx),
            task,
            companion: None,
            telemetry: crate::trace::Telemetry::disabled(),
        })
    }

    /// Keeps `other` running alongside; it stops when this one does.
    pub fn with_companion(mut self, other: ServerHandle) -> Self {
        self.companion = Some(Box::new(other));
        self
    }

    /// Exports and stops `telemetry` when the server stops.
    pub fn with_telemetry(mut self, telemetry: crate::trace::Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Exports the spans queued so far.
    pub async fn flush_spans(&self) {
        self.telemetry.flush().await;
    }

    /// The companion's address, if there is one.
    pub fn companion_addr(&self) -> Option<SocketAddr> {
        self.companion.as_ref().map(|c| c.local_addr())
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish and waits for the server to end.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(c) = self.companion.take() {
            let _ = Box::pin(c.shutdown()).await;
        }
        let res = join(&mut self.task).await;
        self.telemetry.shutdown().await;
        res
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> io::Result<()> {
        let mut this = self;
        tokio::select! {
            res = join(&mut this.task) => res,
            () = signal => {
                tracing::info!("shutting down: finishing in-flight requests");
                match tokio::time::timeout(SHUTDOWN_GRACE, this.shutdown()).await {
                    Ok(res) => {
                        tracing::info!("stopped");
                        res
                    }
                    Err(_) => {
                        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
                        Ok(())
                    }
                }
            }
        }
    }
}

async fn join(task: &mut JoinHandle<io::Result<()>>) -> io::Result<()> {
    match task.await {
        Ok(res) => res,
        Err(err) => Err(io::Error::other(format!("server task failed: {err}"))),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}

/// The address to listen on: `LISTEN_ADDR` if given, else `POD_IP:default_port` (the local
/// runtime gives each pod its own loopback address), else `0.0.0.0:default_port`.
pub fn listen_addr(
    explicit: Option<SocketAddr>,
    pod_ip: Option<std::net::IpAddr>,
    default_port: u16,
) -> SocketAddr {
    explicit.unwrap_or_else(|| {
        SocketAddr::new(
            pod_ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            default_port,
        )
    })
}

/// Installs a `tracing` subscriber honouring `RUST_LOG` (default `info`). For the binaries.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Pod logs usually go to files: colour only on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}
