//! `skein dashboard`: where the dashboard is (and a browser on it, when there is one), and
//! `skein dashboard-server` (hidden): the server itself, started by `skein up` as
//! istio-system's `kiali` pod.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use skein_runtime::{StateDir, Status};

#[derive(clap::Args)]
pub struct Args {
    /// Print the URL only; do not open a browser.
    #[arg(long)]
    no_browser: bool,
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    let path = state.status_file();
    if !path.exists() || state.running_supervisor().is_none() {
        bail!(
            "skein is not running from {}; start it with `skein up DIR` (the dashboard runs with the mesh)",
            state.root().display()
        );
    }
    let status = Status::read(&path)?;
    let Some(url) = status.dashboard.as_ref().and_then(|d| d.url.clone()) else {
        bail!(
            "the dashboard does not run: skein was started without the mesh (`--no-mesh`) or by an older skein; restart with `skein up DIR`"
        );
    };
    println!("{url}");
    let display = std::env::var_os("DISPLAY").is_some_and(|v| !v.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty());
    if !args.no_browser && display {
        match std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(_) => eprintln!("opened in your browser"),
            Err(e) => eprintln!("cannot open a browser (xdg-open: {e}); open the URL above"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Where to listen (a loopback address).
    #[arg(long)]
    listen: SocketAddr,
    /// The state directory to read (status files, manifests, logs).
    #[arg(long)]
    state: PathBuf,
    /// Prometheus's HTTP API (`http://IP:PORT`).
    #[arg(long)]
    prometheus: Option<String>,
    /// The tracing store's Jaeger query API (`http://IP:PORT`).
    #[arg(long)]
    tracing: Option<String>,
}

pub fn serve(args: ServerArgs) -> anyhow::Result<ExitCode> {
    crate::init_component_logging();
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the dashboard binds to loopback addresses only",
            args.listen
        );
    }
    let cfg = skein_dashboard::Config {
        state: args.state,
        prometheus: args.prometheus,
        tracing: args.tracing,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    crate::runtime()?.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tracing::info!(listen = %args.listen, "dashboard listening");
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        skein_dashboard::serve(args.listen, cfg, shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
