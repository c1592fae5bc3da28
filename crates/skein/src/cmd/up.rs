//! `skein up DIR`: run the manifests' workloads here, in the foreground or detached.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skein_runtime::{DatabaseMode, LogRotation, StateDir, Status, UpOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The manifests directory (or file).
    #[arg(default_value = "examples/blog-system")]
    dir: PathBuf,
    /// Return once every pod is ready and keep running in the background (`skein down` stops it).
    #[arg(short, long)]
    detach: bool,
    /// The ingress's HTTP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// The ingress's HTTPS port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8443)]
    https_port: u16,
    /// How the manifests' MySQL runs: an SQLite file (the default) or a local MariaDB server.
    /// Without the flag, the annotation `skein.io/local-database: mysql` on the database's
    /// Deployment chooses MariaDB.
    #[arg(long, value_enum)]
    database: Option<Database>,
    /// Run without the mesh: no sidecars, no control plane; the ingress forwards straight to
    /// the Services (the seed's system before Istio).
    #[arg(long)]
    no_mesh: bool,
    /// Lifetime of workload certificates in seconds (default 86400, Istio's 24 h); they are
    /// renewed at about 80% of it.
    #[arg(long, value_name = "SECONDS")]
    cert_ttl: Option<u64>,
    /// Sign workload certificates with your own CA: a directory in Istio's plug-in CA layout
    /// (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).
    #[arg(long, value_name = "DIR")]
    plugin_ca: Option<PathBuf>,
    /// How often the mesh's Prometheus scrapes the pods, in seconds (Istio's addon: 15).
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0, value_parser = scrape_interval)]
    scrape_interval: f64,
    /// How long to wait for every pod to become ready.
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    timeout: u64,
    /// Read a git working tree's files as they are, not its HEAD commit (GitOps is off).
    #[arg(long)]
    no_gitops: bool,
    /// GitOps: how often the repository is polled for a new commit, in milliseconds (Argo CD
    /// polls every 3 minutes and relies on webhooks; here a commit is in force within this).
    #[arg(long, value_name = "MS", default_value_t = skein_control::gitops::state::DEFAULT_POLL_MS)]
    gitops_poll_ms: u64,
    /// GitOps: how long a change that differs from git stays before selfHeal reverts it, in
    /// seconds (Argo CD's --self-heal-timeout-seconds, 5 by default).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    self_heal_timeout: u64,
    /// Internal: run as the detached supervisor.
    #[arg(long, hide = true)]
    supervise: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Database {
    Sqlite,
    Mysql,
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    if !args.dir.exists() {
        bail!("{}: no such file or directory", args.dir.display());
    }
    let application = if args.no_gitops {
        None
    } else {
        skein_control::gitops::state::detect(&args.dir)?
    };
    let application = match application {
        Some(cfg) if args.no_mesh => {
            // The control plane runs the GitOps controller; without it a working tree's files
            // are read as they are, and an Application cannot run.
            if !args.dir.join(".git").exists() {
                bail!(
                    "{}: an Application is synced by the mesh's control plane; run without --no-mesh",
                    cfg.origin
                );
            }
            if !args.supervise {
                eprintln!(
                    "warning: --no-mesh runs without the control plane, so without GitOps: {} is read as it is, not synced from {}",
                    args.dir.display(),
                    cfg.repo.display()
                );
            }
            None
        }
        other => other,
    };
    if let Some(pid) = state.running_supervisor() {
        // Before anything in the state directory is touched (the running one's commits).
        bail!(
            "skein is already running from {} (pid {pid}); run `skein down` first",
            state.root().display()
        );
    }
    if application.is_none() {
        // A GitOps run before this one left its Application: it is not this run's.
        let _ = std::fs::remove_dir_all(state.gitops_dir());
    }
    if args.detach && !args.supervise {
        if let Some(cfg) = &application {
            // Said in this terminal: the supervisor syncs it again as it starts.
            gitops_git(cfg)?.resolve(&cfg.revision)?;
        }
        return detach(&args, &state);
    }
    init_logging(args.supervise);
    let mut manifests = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
    let mut gitops = None;
    if let Some(mut cfg) = application {
        cfg.poll_ms = args.gitops_poll_ms.max(100);
        cfg.self_heal_timeout_ms = args.self_heal_timeout.saturating_mul(1000);
        state.create()?;
        let git = gitops_git(&cfg)?;
        let layout = skein_control::gitops::Layout::new(state.gitops_dir());
        manifests = skein_control::gitops::state::prepare(&cfg, &git, &layout)?;
        if let Some(m) = layout.current_export() {
            eprintln!(
                "gitops: Application {:?} syncs {} ({} at {} {:?}){}",
                cfg.name,
                cfg.repo.display(),
                cfg.revision,
                m.commit.sha.chars().take(7).collect::<String>(),
                m.commit.subject,
                if cfg.self_heal { ", selfHeal on" } else { "" }
            );
        }
        gitops = Some((layout.root.clone(), git.program));
    }
    let opts = UpOptions {
        manifests,
        gitops,
        state: state.clone(),
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, args.http_port)),
        https: SocketAddr::from((Ipv4Addr::LOCALHOST, args.https_port)),
        database: args.database.map(|d| match d {
            Database::Sqlite => DatabaseMode::Sqlite,
            Database::Mysql => DatabaseMode::Mysql,
        }),
        program_dirs: program_dirs(),
        cert_ttl: args.cert_ttl.map(Duration::from_secs),
        plugin_ca: args
            .plugin_ca
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        skein: if args.no_mesh {
            None
        } else {
            Some(std::env::current_exe().context("cannot find the skein binary")?)
        },
        // SKEIN_LOG_MAX_SIZE and SKEIN_LOG_FILES; the detached supervisor inherits them.
        log_rotation: LogRotation::from_env()?,
        scrape_interval: Duration::from_secs_f64(args.scrape_interval),
    };
    crate::runtime()?.block_on(async move {
        let started = Instant::now();
        let running = skein_runtime::up(opts).await?;
        if !args.supervise {
            let ready = tokio::select! {
                r = running.wait_ready(Duration::from_secs(args.timeout)) => Some(r),
                _ = shutdown_signal() => None,
            };
            if ready.is_some() {
                // Errors stopped the run before it started, with file:line; the warnings
                // are shown once it runs.
                super::analyze::print_warnings(&args.dir);
            }
            match ready {
                Some(true) => print!("{}", summary(&running.status(), started.elapsed(), &state)),
                Some(false) => {
                    eprintln!(
                        "warning: not every pod became ready within {}s:",
                        args.timeout
                    );
                    print!("{}", super::status::table(&running.status()));
                }
                None => {
                    running.shutdown().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            println!("Press Ctrl-C to stop.");
        } else {
            tracing::info!("supervisor running");
        }
        shutdown_signal().await;
        eprintln!("stopping...");
        running.shutdown().await;
        eprintln!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts the supervisor in the background and waits until the pods are ready, or it fails.
fn detach(args: &Args, state: &StateDir) -> anyhow::Result<ExitCode> {
    if let Some(pid) = state.running_supervisor() {
        bail!(
            "skein is already running from {} (pid {pid}); run `skein down` first",
            state.root().display()
        );
    }
    // Checked here too, so a bad setting is said in this terminal.
    LogRotation::from_env()?;
    for (dir, mode) in state.create()? {
        eprintln!(
            "warning: {} was open to other users (mode {mode:04o}); it is now 0700",
            dir.display()
        );
    }
    let log_path = state.supervisor_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().context("cannot find the skein binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--state-dir")
        .arg(state.root())
        .arg("up")
        .arg(&args.dir)
        .args(["--http-port", &args.http_port.to_string()])
        .args(["--https-port", &args.https_port.to_string()])
        .args(["--scrape-interval", &args.scrape_interval.to_string()])
        .arg("--supervise");
    if args.no_mesh {
        cmd.arg("--no-mesh");
    }
    if args.no_gitops {
        cmd.arg("--no-gitops");
    }
    cmd.args(["--gitops-poll-ms", &args.gitops_poll_ms.to_string()])
        .args(["--self-heal-timeout", &args.self_heal_timeout.to_string()]);
    if let Some(ttl) = args.cert_ttl {
        cmd.args(["--cert-ttl", &ttl.to_string()]);
    }
    if let Some(dir) = &args.plugin_ca {
        cmd.arg("--plugin-ca").arg(dir);
    }
    if let Some(d) = args.database {
        cmd.args([
            "--database",
            match d {
                Database::Sqlite => "sqlite",
                Database::Mysql => "mysql",
            },
        ]);
    }
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in this terminal must not reach it.
        .process_group(0)
        .spawn()
        .context("cannot start the supervisor")?;
    let pid = child.id();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    loop {
        if let Some(exit) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail = text.get(log_start as usize..).unwrap_or("");
            let reason: Vec<&str> = tail
                .lines()
                .filter_map(|l| l.strip_prefix("error: "))
                .collect();
            if reason.is_empty() {
                bail!("the supervisor exited ({exit}); see {}", log_path.display());
            }
            bail!("{}", reason.join("\n"));
        }
        if let Ok(status) = Status::read(&state.status_file())
            && status.supervisor.pid == pid
        {
            if status.all_ready() && skein_runtime::mesh_synced(state, &status) {
                super::analyze::print_warnings(&args.dir);
                print!("{}", summary(&status, started.elapsed(), state));
                println!("Running in the background (pid {pid}); `skein down` stops it.");
                return Ok(ExitCode::SUCCESS);
            }
            if Instant::now() >= deadline {
                super::analyze::print_warnings(&args.dir);
                eprintln!(
                    "warning: not every pod became ready within {}s; skein keeps running (pid {pid}):",
                    args.timeout
                );
                print!("{}", super::status::table(&status));
                return Ok(ExitCode::FAILURE);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn summary(status: &Status, took: Duration, state: &StateDir) -> String {
    let mut s = format!(
        "skein is up: {} pods ready in {:.1}s (state in {})\n",
        status.pods.len(),
        took.as_secs_f64(),
        state.root().display()
    );
    s.push_str(&format!(
        "  ingress:  {}  {}\n",
        status.ingress.http, status.ingress.https
    ));
    s.push_str(&format!(
        "  database: {} ({})\n",
        status.database.mode, status.database.location
    ));
    if let Some(line) = super::status::prometheus_line(status) {
        s.push_str(&format!("  {line}\n"));
    }
    if let Some(line) = super::status::tracing_line(status) {
        s.push_str(&format!("  {line}\n"));
    }
    if let Some(line) = super::status::dashboard_line(status) {
        s.push_str(&format!("  {line}\n"));
    }
    s.push('\n');
    if let Some(a) = skein_control::gitops::Layout::new(state.gitops_dir()).read_status() {
        s.push_str(&super::status::application_lines(&a));
        s.push('\n');
    }
    s.push_str(&super::status::table(status));
    s.push_str(&format!("\nTry: curl {}/api/posts\n", status.ingress.http));
    s
}

/// The git of an Application's repository.
fn gitops_git(
    cfg: &skein_control::gitops::Config,
) -> anyhow::Result<skein_control::gitops::git::Git> {
    let program = skein_control::gitops::git::find_program().context(
        "GitOps needs the `git` program and it is not on PATH; install git, or run with --no-gitops to read the files as they are",
    )?;
    Ok(skein_control::gitops::git::Git {
        program,
        repo: cfg.repo.clone(),
    })
}

/// A scrape interval between 0.1 s and an hour.
fn scrape_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if (0.1..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0.1 to 3600 seconds"))
    }
}

/// Container programs are looked up beside the skein binary first (where cargo puts the
/// blog's binaries too), then on PATH.
fn program_dirs() -> Vec<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .into_iter()
        .collect()
}

fn init_logging(supervise: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKEIN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if supervise { "info" } else { "warn" })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
