//! `skein control` (hidden): the control plane process (`istiod`), started by the runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use skein_control::{ControlOptions, Store};

#[derive(clap::Args)]
pub struct Args {
    /// The manifests directory to watch.
    #[arg(long)]
    dir: PathBuf,
    /// Where `skein apply` puts its files.
    #[arg(long)]
    applied: Option<PathBuf>,
    /// The runtime's own objects (the addons' Services), overridden by the manifests'.
    #[arg(long)]
    addons: Option<PathBuf>,
    /// Objects the runtime's controllers manage (a Rollout's VirtualServices and
    /// DestinationRules), read last.
    #[arg(long)]
    managed: Option<PathBuf>,
    /// The registry: the runtime's status file.
    #[arg(long)]
    registry: PathBuf,
    /// Where proxies connect.
    #[arg(long)]
    listen: SocketAddr,
    /// The control plane's status file.
    #[arg(long)]
    status: PathBuf,
    /// How often files are checked, in milliseconds.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// Where the generated root CA is kept.
    #[arg(long)]
    ca_dir: PathBuf,
    /// A plug-in CA directory (Istio's cacerts layout) instead of the generated root.
    #[arg(long)]
    plugin_ca: Option<PathBuf>,
    /// Lifetime of workload certificates, in seconds (Istio's default: 24 h).
    #[arg(long, default_value_t = 86_400)]
    cert_ttl_secs: u64,
    /// The GitOps controller's directory (the Application and its exported commits).
    #[arg(long, requires = "git")]
    gitops: Option<PathBuf>,
    /// The `git` program the GitOps controller runs.
    #[arg(long)]
    git: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::init_component_logging();
    let opts = ControlOptions {
        store: Store {
            dir: args.dir,
            applied: args.applied,
            addons: args.addons,
            managed: args.managed,
        },
        registry: args.registry,
        listen: args.listen,
        status_file: args.status,
        poll: Duration::from_millis(args.poll_ms.max(10)),
        ca_dir: args.ca_dir,
        plugin_ca: args.plugin_ca,
        cert_ttl: Duration::from_secs(args.cert_ttl_secs.max(1)),
        gitops: args.gitops.zip(args.git),
    };
    crate::runtime()?.block_on(skein_control::run(opts))?;
    Ok(ExitCode::SUCCESS)
}
