//! `skein`: the one binary. Each subcommand lives in its own module under `cmd/`.

#![forbid(unsafe_code)]

mod admin_client;
mod cmd;
mod kube;
mod screen;
mod table;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skein",
    version,
    about = "A service mesh that speaks Istio's API."
)]
struct Cli {
    /// The state directory (status, logs, data, certificates) [default: ./.skein]
    #[arg(long, global = true, env = "SKEIN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every workload of a manifests directory on this machine.
    Up(cmd::up::Args),
    /// Stop what `skein up --detach` started.
    Down(cmd::down::Args),
    /// Show pods, their addresses and states.
    Status(cmd::status::Args),
    /// Print a workload's or pod's logs.
    Logs(cmd::logs::Args),
    /// Check manifests: load errors with file:line, then Istio's validation messages.
    Analyze(cmd::analyze::Args),
    /// Run a one-off command as a pod of the mesh (like `kubectl run --rm -it ... -- CMD`).
    Exec(cmd::exec::Args),
    /// Hand resources to the running control plane (like `kubectl apply -f`).
    Apply(cmd::apply::Args),
    /// Show resources as kubectl does: tables, -o yaml|json|name|wide|jsonpath|custom-columns.
    Get(cmd::get::Args),
    /// Describe resources as kubectl does, with the control plane's history as Events.
    Describe(cmd::describe::Args),
    /// Take back what `skein apply` added (like `kubectl delete -f` or `delete KIND NAME`).
    Delete(cmd::delete::Args),
    /// What `skein apply -f` would change, as a unified diff (exit 0 none, 1 some, 2 error).
    Diff(cmd::diff::Args),
    /// Restart a Deployment or Rollout pod by pod, or wait for its rollout (like `kubectl
    /// rollout restart|status`).
    Rollout(cmd::rollout::Args),
    /// Traffic per deploy, pod, service, namespace or rollout: success, RPS, latency
    /// percentiles, TCP connections (like `linkerd viz stat`), from the mesh's Prometheus.
    Stat(cmd::stat::Args),
    /// Which workload calls which, and whether it is mutual TLS (like `linkerd viz edges`).
    Edges(cmd::edges::Args),
    /// A live view of the edges between workloads: rate, success, latency, TCP bytes; the
    /// same numbers as `stat` (q or Ctrl-C quits; prints once when not on a terminal).
    Top(cmd::top::Args),
    /// Show a proxy's listeners, routes, clusters and endpoints (like `istioctl proxy-config`).
    #[command(name = "proxy-config", visible_alias = "pc")]
    ProxyConfig(cmd::proxy_config::Args),
    /// List recent traces from the tracing store (id, root, start, duration, spans, errors).
    Traces(cmd::traces::ListArgs),
    /// Show one trace as a waterfall: spans by parent, bars on the root's time span.
    Trace(cmd::traces::ShowArgs),
    /// Argo Rollouts' commands (like `kubectl argo rollouts`): get rollout, promote, abort,
    /// retry rollout, pause, undo, set image, status.
    Rollouts(cmd::rollouts::Args),
    /// Print the dashboard's URL (Kiali's graph, workloads, Istio config, traces, logs) and
    /// open it in a browser when one is available.
    Dashboard(cmd::dashboard::Args),
    /// Run the dashboard's server (started by `skein up` as istio-system's Kiali).
    #[command(name = "dashboard-server", hide = true)]
    DashboardServer(cmd::dashboard::ServerArgs),
    /// Run the tracing store (started by `skein up` as istio-system's Jaeger).
    #[command(name = "trace-store", hide = true)]
    TraceStore(cmd::trace_store::Args),
    /// Run one proxy (started by `skein up` for each sidecar and the gateway).
    #[command(hide = true)]
    Proxy(Box<cmd::proxy::Args>),
    /// Run the control plane (started by `skein up`).
    #[command(hide = true)]
    Control(cmd::control::Args),
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(a) => cmd::up::run(a, cli.state_dir),
        Command::Down(a) => cmd::down::run(a, cli.state_dir),
        Command::Status(a) => cmd::status::run(a, cli.state_dir),
        Command::Logs(a) => cmd::logs::run(a, cli.state_dir),
        Command::Analyze(a) => cmd::analyze::run(a, cli.state_dir),
        Command::Apply(a) => cmd::apply::run(a, cli.state_dir),
        Command::Exec(a) => cmd::exec::run(a, cli.state_dir),
        Command::Get(a) => cmd::get::run(a, cli.state_dir),
        Command::Describe(a) => cmd::describe::run(a, cli.state_dir),
        Command::Delete(a) => cmd::delete::run(a, cli.state_dir),
        Command::Diff(a) => cmd::diff::run(a, cli.state_dir),
        Command::Rollout(a) => cmd::rollout::run(a, cli.state_dir),
        Command::Stat(a) => cmd::stat::run(a, cli.state_dir),
        Command::Edges(a) => cmd::edges::run(a, cli.state_dir),
        Command::Top(a) => cmd::top::run(a, cli.state_dir),
        Command::ProxyConfig(a) => cmd::proxy_config::run(a, cli.state_dir),
        Command::Traces(a) => cmd::traces::list(a, cli.state_dir),
        Command::Trace(a) => cmd::traces::show(a, cli.state_dir),
        Command::TraceStore(a) => cmd::trace_store::run(a),
        Command::Rollouts(a) => cmd::rollouts::run(a, cli.state_dir),
        Command::Dashboard(a) => cmd::dashboard::run(a, cli.state_dir),
        Command::DashboardServer(a) => cmd::dashboard::serve(a),
        Command::Proxy(a) => cmd::proxy::run(*a),
        Command::Control(a) => cmd::control::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging for the components `skein up` starts (proxies, control plane): `RUST_LOG` or info,
/// to stderr (the container log), without colours.
fn init_component_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// The tokio runtime every subcommand that does I/O uses.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `skein status | head` closes the pipe early; `println!` then panics with "Broken pipe".
/// Exit quietly instead, with the status a shell gives a process killed by SIGPIPE, as other
/// command-line tools do.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
