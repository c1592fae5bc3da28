//! `skein exec -n NS [--sa SA] [--no-sidecar] -- CMD ARGS...`: runs a one-off command as a pod
//! of the mesh, like `kubectl run test --image=curlimages/curl -- curl ...`.
//!
//! With a sidecar the command gets a workload identity (`spiffe://cluster.local/ns/NS/sa/SA`)
//! and reaches services by name through its sidecar (`HTTP_PROXY`), as an in-mesh pod does.
//! With `--no-sidecar` it is outside the mesh: its requests reach services in plain text (names
//! are still resolved, by a local forward proxy that is not a mesh member).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skein_runtime::{StateDir, Status};

#[derive(clap::Args)]
pub struct Args {
    /// The pod's namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The pod's ServiceAccount (its identity).
    #[arg(long, default_value = "default")]
    sa: String,
    /// Run outside the mesh: no sidecar, no identity.
    #[arg(long)]
    no_sidecar: bool,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Removes the one-off pod's registry entry and token and stops its proxy, whatever happens.
struct Cleanup {
    registry_file: Option<PathBuf>,
    pod_dir: Option<PathBuf>,
    proxy: Option<std::process::Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(f) = &self.registry_file {
            let _ = std::fs::remove_file(f);
        }
        if let Some(d) = &self.pod_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Some(mut child) = self.proxy.take() {
            // SIGTERM for a graceful drain, then make sure it is gone.
            let _ = Command::new("kill")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free address for the one-off pod in this state directory's slice of loopback.
fn pick_ip(subnet: u8) -> anyhow::Result<Ipv4Addr> {
    for _ in 0..64 {
        let ip = Ipv4Addr::new(127, subnet, 5, fastrand::u8(1..=254));
        if std::net::TcpListener::bind((ip, skein_runtime::OUTBOUND_HTTP_PORT)).is_ok() {
            return Ok(ip);
        }
    }
    bail!("no free loopback address for a one-off pod")
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    if state.running_supervisor().is_none() {
        bail!(
            "skein is not running from {}; start it with `skein up DIR`",
            state.root().display()
        );
    }
    let status = Status::read(&state.status_file())?;
    let istiod = status
        .pods
        .iter()
        .find(|p| p.workload == "istiod")
        .context("the mesh is not running (`skein up` without --no-mesh)")?;
    let subnet = istiod
        .ip
        .parse::<Ipv4Addr>()
        .map(|ip| ip.octets()[1])
        .context("istiod has no address")?;
    let control = format!("{}:{}", istiod.ip, skein_runtime::CONTROL_PORT);
    let exe = std::env::current_exe().context("cannot find the skein binary")?;
    let name = format!("exec-{:05x}", fastrand::u32(..0x10_0000));
    let ip = pick_ip(subnet)?;
    let outbound = SocketAddr::from((ip, skein_runtime::OUTBOUND_HTTP_PORT));
    let admin = SocketAddr::from((ip, skein_runtime::ADMIN_PORT));
    let log_path = state.container_log(&name, "istio-proxy");
    if let Some(d) = log_path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let log = std::fs::File::create(&log_path)?;

    let mut cleanup = Cleanup {
        registry_file: None,
        pod_dir: None,
        proxy: None,
    };
    let mut proxy = Command::new(&exe);
    proxy
        .args(["proxy", "--node", &name, "--namespace", &args.namespace])
        .args(["--outbound-http", &outbound.to_string()])
        .args(["--admin", &admin.to_string()])
        .args(["--access-log", "stdout"])
        .env("SKEIN_HOSTS", state.hosts_file())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if args.no_sidecar {
        // Not a mesh member: no identity, no config beyond passing requests through.
        let empty = state.root().join(format!("{name}.snapshot.json"));
        std::fs::write(&empty, r#"{"version":"passthrough"}"#)?;
        proxy.arg("--snapshot").arg(&empty);
    } else {
        let dir = state.root().join("registry.d");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(format!("{name}.json"));
        // Its bootstrap token, as the runtime issues one to each pod with a sidecar.
        cleanup.pod_dir = Some(state.pod_dir(&name));
        let token_sha256 = state.issue_bootstrap_token(&name)?;
        // The root the control plane's certificate must chain to: a plug-in CA's if istiod
        // was started with one.
        let plugin_ca = istiod
            .containers
            .iter()
            .flat_map(|c| c.command.windows(2))
            .find(|w| w[0] == "--plugin-ca")
            .map(|w| PathBuf::from(&w[1]));
        let root = state.mesh_root_file(plugin_ca.as_deref());
        let pod = skein_control::registry::Pod {
            name: name.clone(),
            namespace: args.namespace.clone(),
            workload: name.clone(),
            labels: [("run".to_string(), name.clone())].into(),
            service_account: args.sa.clone(),
            ip: ip.to_string(),
            port_names: Default::default(),
            ready: true,
            proxy: Some(skein_control::registry::ProxyInfo {
                mode: "sidecar".into(),
                outbound_ip: Some(ip.to_string()),
            }),
            bootstrap_token_sha256: Some(token_sha256),
        };
        std::fs::write(&file, serde_json::to_vec(&pod)?)?;
        cleanup.registry_file = Some(file);
        proxy.args(["--control", &control]);
        proxy.arg("--control-root").arg(&root);
        proxy
            .arg("--bootstrap-token")
            .arg(state.bootstrap_token_file(&name));
    }
    cleanup.proxy = Some(proxy.spawn().context("cannot start the pod's proxy")?);

    let deadline = Instant::now() + Duration::from_secs(15);
    while !crate::admin_client::ready(admin) {
        if let Some(Ok(Some(exit))) = cleanup.proxy.as_mut().map(|c| c.try_wait()) {
            bail!(
                "the pod's proxy exited ({exit}); see {}",
                log_path.display()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the pod's proxy did not get its config within 15s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let proxy_url = format!("http://{outbound}");
    let (program, rest) = args
        .command
        .split_first()
        .context("give a command after --")?;
    let status = Command::new(program)
        .args(rest)
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .env("SKEIN_HOSTS", state.hosts_file())
        .env("POD_NAME", &name)
        .env("POD_NAMESPACE", &args.namespace)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    drop(cleanup);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(n) => ExitCode::from(u8::try_from(n).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
