//! Bench only: the control plane at scale.
//!
//! `skein-bench-control serve ...` runs the control plane (`skein_control::run`, what
//! `skein control` runs) in its own process, so its RSS and CPU are its own.
//! `skein-bench-control run --out DIR --results PREFIX` generates the scenario (Services, pods,
//! a few VirtualServices and DestinationRules, a bootstrap token per proxy pod as the runtime
//! issues them), starts `serve` as a child, connects the simulated proxies over TLS (hello with
//! the pod's token, ACK of every snapshot), measures, writes `PREFIX.md` and `PREFIX.json`,
//! and stops the child by pid.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use skein_snapshot::stream::{ProxyMessage, read_frame_bytes, write_frame};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("run") => run(&args[1..]),
        _ => Err("usage: skein-bench-control serve|run [--flag value ...]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skein-bench-control: {e}");
            ExitCode::FAILURE
        }
    }
}

fn flags(args: &[String]) -> BTreeMap<String, String> {
    args.chunks(2)
        .filter_map(|c| Some((c[0].trim_start_matches("--").to_string(), c.get(1)?.clone())))
        .collect()
}

fn flag<T: std::str::FromStr>(f: &BTreeMap<String, String>, name: &str, default: T) -> T {
    f.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn path_flag(f: &BTreeMap<String, String>, name: &str) -> Result<PathBuf, Error> {
    Ok(PathBuf::from(
        f.get(name).ok_or(format!("--{name} is required"))?,
    ))
}

fn serve(args: &[String]) -> Result<(), Error> {
    let f = flags(args);
    let opts = skein_control::ControlOptions {
        store: skein_control::Store {
            dir: path_flag(&f, "dir")?,
            applied: None,
        },
        registry: path_flag(&f, "registry")?,
        listen: "127.0.0.1:0".parse()?,
        status_file: path_flag(&f, "status")?,
        poll: Duration::from_millis(flag(&f, "poll-ms", 10)),
        ca_dir: path_flag(&f, "ca-dir")?,
        plugin_ca: None,
        cert_ttl: Duration::from_secs(86_400),
    };
    // As `skein control` runs it: two worker threads.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(skein_control::run(opts))?;
    Ok(())
}

/// The scenario's size.
#[derive(Debug, Clone, Copy)]
struct Scale {
    services: usize,
    pods: usize,
    proxies: usize,
    namespaces: usize,
    /// Services with a DestinationRule (two subsets) and a weighted VirtualService.
    routed: usize,
    /// Proxies (the odd-numbered ones, up to this many) whose Sidecar resource scopes them to
    /// their own namespace's Services (`egress: [{hosts: ["./*"]}]`).
    scoped: usize,
}

impl Scale {
    fn is_scoped(&self, proxy: usize) -> bool {
        proxy % 2 == 1 && proxy < 2 * self.scoped
    }

    /// Whether proxy `proxy` sees Service `svc`.
    fn sees(&self, proxy: usize, svc: usize) -> bool {
        !self.is_scoped(proxy) || proxy % self.namespaces == svc % self.namespaces
    }
}

fn ns(scale: &Scale, svc: usize) -> String {
    format!("bench-{}", svc % scale.namespaces)
}

fn svc_name(svc: usize) -> String {
    format!("svc-{svc:04}")
}

fn token(pod: &str) -> String {
    // What the runtime writes into the pod's directory; any secret string works here.
    format!("bench-token-{pod}-{:x}", pod.len() * 7919)
}

/// Pod `j`: of service `j % services`, the `j / services`-th one; the first `proxies` pods
/// (the first pod of each of the first services) have a sidecar.
fn pod(scale: &Scale, j: usize, ready: bool) -> Value {
    let svc = j % scale.services;
    let name = format!("{}-{}", svc_name(svc), j / scale.services);
    let version = if (j / scale.services).is_multiple_of(2) {
        "v1"
    } else {
        "v2"
    };
    let mut p = json!({
        "name": name,
        "namespace": ns(scale, svc),
        "workload": svc_name(svc),
        "labels": {"app": svc_name(svc), "version": version},
        "service_account": "default",
        "ip": format!("10.{}.{}.{}", 1 + (j >> 16), (j >> 8) & 255, j & 255),
        "ready": ready,
    });
    if scale.is_scoped(j) && j < scale.proxies {
        p["labels"]["scope"] = json!("namespace");
    }
    if j < scale.proxies {
        p["proxy"] = json!({"mode": "sidecar"});
        p["bootstrap_token_sha256"] = json!(skein_control::registry::token_sha256(&token(&name)));
    }
    p
}

fn manifests(scale: &Scale, weight: u32) -> String {
    let mut y = String::new();
    for i in 0..scale.services {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: {ns}}}\nspec:\n  selector: {{app: {n}}}\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n---\n",
            n = svc_name(i),
            ns = ns(scale, i)
        );
    }
    if scale.scoped > 0 {
        for n in 0..scale.namespaces {
            let _ = write!(
                y,
                "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: own-namespace, namespace: bench-{n}}}\nspec:\n  workloadSelector: {{labels: {{scope: namespace}}}}\n  egress: [{{hosts: [\"./*\"]}}]\n---\n"
            );
        }
    }
    for i in 0..scale.routed {
        for v in ["v1", "v2"] {
            let _ = write!(
                y,
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {n}-{v}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {n}, version: {v}}}}}\n  template:\n    metadata: {{labels: {{app: {n}, version: {v}}}}}\n    spec:\n      containers: [{{name: app, image: bench, ports: [{{containerPort: 8080}}]}}]\n---\n",
                n = svc_name(i),
                ns = ns(scale, i)
            );
        }
        let w = if i == 0 { weight } else { 90 };
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {n}, namespace: {ns}}}\nspec:\n  host: {n}\n  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {n}, namespace: {ns}}}\nspec:\n  hosts: [{n}]\n  http:\n  - route:\n    - destination: {{host: {n}, subset: v1}}\n      weight: {w}\n    - destination: {{host: {n}, subset: v2}}\n      weight: {r}\n    retries: {{attempts: 2}}\n---\n",
            n = svc_name(i),
            ns = ns(scale, i),
            r = 100 - w
        );
    }
    y
}

/// Writes `path` atomically (the control plane polls it).
fn write_atomic(path: &Path, body: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn write_registry(path: &Path, scale: &Scale, unready: Option<usize>) -> Result<(), Error> {
    let pods: Vec<Value> = (0..scale.pods)
        .map(|j| pod(scale, j, Some(j) != unready))
        .collect();
    write_atomic(path, &serde_json::to_vec(&json!({ "pods": pods }))?)
}

/// What a simulated proxy saw: a config frame of `version`.
#[derive(Debug)]
struct Event {
    proxy: usize,
    version: u64,
    kind: String,
    bytes: usize,
    at: Instant,
}

/// The parts of a control frame a simulated proxy reads (the rest is skipped, not built).
#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    snapshot: Option<PeekVersion>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct PeekVersion {
    #[serde(default)]
    version: String,
}

fn tls_config(root_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// One simulated proxy: TLS to the control plane (verified against the mesh root), hello as
/// pod `name` with its bootstrap token, then an ACK for every config frame.
async fn proxy(
    i: usize,
    name: String,
    namespace: String,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let server = rustls::pki_types::ServerName::try_from("istiod.istio-system.svc")?;
    let conn = tokio_rustls::TlsConnector::from(tls)
        .connect(server, tcp)
        .await?;
    let (mut rd, mut wr) = tokio::io::split(conn);
    let hello = ProxyMessage::Hello {
        node: name.clone(),
        namespace,
        current_version: None,
        bootstrap_token: Some(token(&name)),
    };
    write_frame(&mut wr, &hello).await?;
    loop {
        let frame = read_frame_bytes(&mut rd).await?;
        let at = Instant::now();
        // A real proxy parses and compiles what it gets; on a machine this bench shares with
        // the control plane, the simulated proxies only read the version at the frame's
        // start (where the control plane writes it), and parse the whole frame otherwise.
        if let Some((kind, version)) = version_at_start(&frame) {
            write_frame(
                &mut wr,
                &ProxyMessage::Ack {
                    version: version.to_string(),
                },
            )
            .await?;
            let version = version.parse().unwrap_or(0);
            let _ = events.send(Event {
                proxy: i,
                version,
                kind: kind.to_string(),
                bytes: frame.len() + 4,
                at,
            });
            continue;
        }
        let peek: Peek = serde_json::from_slice(&frame)?;
        let version = match (peek.kind.as_str(), peek.snapshot, peek.version) {
            ("snapshot", Some(s), _) => s.version,
            ("error", _, _) => {
                return Err(format!("{name} refused: {}", String::from_utf8_lossy(&frame)).into());
            }
            (_, _, Some(v)) => v,
            _ => continue,
        };
        write_frame(
            &mut wr,
            &ProxyMessage::Ack {
                version: version.clone(),
            },
        )
        .await?;
        let version = version.parse().unwrap_or(0);
        let _ = events.send(Event {
            proxy: i,
            version,
            kind: peek.kind,
            bytes: frame.len() + 4,
            at,
        });
    }
}

/// The kind and version of a snapshot or cluster-update frame whose JSON starts with them.
fn version_at_start(frame: &[u8]) -> Option<(&'static str, &str)> {
    const STARTS: [(&str, &[u8]); 2] = [
        ("snapshot", br#"{"type":"snapshot","snapshot":{"version":""#),
        ("clusters", br#"{"type":"clusters","version":""#),
    ];
    let (kind, rest) = STARTS
        .iter()
        .find_map(|(k, p)| frame.strip_prefix(*p).map(|r| (*k, r)))?;
    let end = rest.iter().take(32).position(|b| *b == b'"')?;
    Some((kind, std::str::from_utf8(&rest[..end]).ok()?))
}

/// Per proxy, the newest version it acked; and every event.
struct Fleet {
    rx: mpsc::UnboundedReceiver<Event>,
    acked: Vec<u64>,
    log: Vec<Event>,
}

impl Fleet {
    /// Waits until every proxy in `which` acked a version above `above[i]`; the last ack's time.
    async fn wait_all(
        &mut self,
        which: &[usize],
        above: &[u64],
        limit: Duration,
    ) -> Result<Instant, Error> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = Instant::now();
        loop {
            if which.iter().all(|&i| self.acked[i] > above[i]) {
                let newest = self
                    .log
                    .iter()
                    .filter(|e| which.contains(&e.proxy) && e.version > above[e.proxy]);
                if let Some(t) = newest.map(|e| e.at).max() {
                    last = t;
                }
                return Ok(last);
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => {
                    self.acked[e.proxy] = self.acked[e.proxy].max(e.version);
                    self.log.push(e);
                }
                Ok(None) => return Err("every simulated proxy has stopped".into()),
                Err(_) => {
                    let missing = which.iter().filter(|&&i| self.acked[i] <= above[i]).count();
                    return Err(format!(
                        "{missing} proxies did not get the change within {limit:?}"
                    )
                    .into());
                }
            }
        }
    }

    /// Takes what arrives within `d` (frames that were not expected show up here).
    async fn settle(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.acked[e.proxy] = self.acked[e.proxy].max(e.version);
            self.log.push(e);
        }
    }
}

/// `VmHWM` and `VmRSS` (KiB) of `pid`.
fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// utime + stime of this process (the simulated proxies), in ms.
fn own_cpu_ms() -> u64 {
    cpu_ms(std::process::id())
}

/// utime + stime of `pid`, in ms.
fn cpu_ms(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command's ')'.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    ticks * 1000 / clock_ticks()
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn status(path: &Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn compiles(status: &Value) -> BTreeMap<String, u64> {
    status["proxies"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["compiles"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn stats(v: &[f64]) -> Value {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    json!({"median": median(v), "min": min, "max": max, "all": v})
}

/// Stops the child by its pid however `run` ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let f = flags(args);
    let scale = Scale {
        services: flag(&f, "services", 1000),
        pods: flag(&f, "pods", 5000),
        proxies: flag(&f, "proxies", 100),
        namespaces: flag(&f, "namespaces", 10),
        routed: flag(&f, "routed", 10),
        scoped: 0,
    };
    if scale.proxies > scale.services
        || scale.pods < scale.services
        || scale.routed > scale.services
    {
        return Err("need proxies <= services <= pods and routed <= services".into());
    }
    let rounds: usize = flag(&f, "rounds", 5);
    let poll_ms: u64 = flag(&f, "poll-ms", 10);
    let scoped: usize = flag(&f, "scoped", scale.proxies / 2);
    let out = path_flag(&f, "out")?;
    let results = path_flag(&f, "results")?;
    // Every proxy sees every Service; then half of them scoped to their own namespace.
    // Full pushes may be left out (`--full-rounds 0`) to profile endpoint changes alone.
    let rounds = (flag(&f, "full-rounds", rounds), rounds);
    let all = scenario(&scale, rounds, poll_ms, &out.join("all"))?;
    let scoped = scenario(
        &Scale { scoped, ..scale },
        rounds,
        poll_ms,
        &out.join("scoped"),
    )?;
    let report = json!({"all_see_all": all, "scoped": scoped});

    let machine = json!({
        "date": std::process::Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ").output().ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()).map(|s| s.trim().to_string()),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "git": std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()).map(|s| s.trim().to_string()),
    });
    let mut report = report;
    report["machine"] = machine;
    std::fs::write(
        results.with_extension("json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(results.with_extension("md"), markdown(&report))?;
    print!("{}", markdown(&report));
    Ok(())
}

/// One scenario: its files, the control plane started, the proxies connected, the
/// measurements, the control plane stopped.
fn scenario(
    scale: &Scale,
    (full_rounds, rounds): (usize, usize),
    poll_ms: u64,
    out: &Path,
) -> Result<Value, Error> {
    let scale = *scale;
    let _ = std::fs::remove_dir_all(out);
    let manifests_dir = out.join("manifests");
    std::fs::create_dir_all(&manifests_dir)?;
    let registry = out.join("registry.json");
    let status_file = out.join("control.json");
    let ca_dir = out.join("ca");
    let mesh = manifests_dir.join("mesh.yaml");
    let mut weight = 90;
    write_atomic(&mesh, manifests(&scale, weight).as_bytes())?;
    write_registry(&registry, &scale, None)?;

    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(out.join("control.log"))?;
    let child = Child(
        std::process::Command::new(exe)
            .arg("serve")
            .args(["--dir".as_ref(), manifests_dir.as_os_str()])
            .args(["--registry".as_ref(), registry.as_os_str()])
            .args(["--status".as_ref(), status_file.as_os_str()])
            .args(["--ca-dir".as_ref(), ca_dir.as_os_str()])
            .args(["--poll-ms", &poll_ms.to_string()])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let pid = child.0.id();

    // The proxies run on their own two worker threads (the machine's cores, shared).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        // Started: the status file names the address, and the root is on disk.
        let started = Instant::now();
        let addr: SocketAddr = loop {
            let s = status(&status_file);
            if let (Some(a), true) = (s["address"].as_str(), ca_dir.join("root-cert.pem").exists()) {
                break a.parse()?;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err::<Value, Error>("the control plane did not start within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let start_ms = started.elapsed().as_secs_f64() * 1e3;
        let s = status(&status_file);
        if s["valid"] != Value::Bool(true) {
            return Err(format!("the control plane refused the scenario's config: {}", s["last_rejection"]).into());
        }
        let tls = tls_config(&std::fs::read(ca_dir.join("root-cert.pem"))?)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut fleet = Fleet { rx, acked: vec![0; scale.proxies], log: Vec::new() };
        let all: Vec<usize> = (0..scale.proxies).collect();
        let cpu0 = cpu_ms(pid);

        // 1. Connect: every proxy's first snapshot.
        let t0 = Instant::now();
        for i in 0..scale.proxies {
            let name = format!("{}-0", svc_name(i));
            let (tls, tx) = (Arc::clone(&tls), tx.clone());
            let namespace = ns(&scale, i);
            tokio::spawn(async move {
                match proxy(i, name.clone(), namespace, addr, tls, tx).await {
                    // The control plane is stopped at the end.
                    Err(e) if e.to_string().contains("closed by the peer") => {}
                    Err(e) => eprintln!("proxy {name}: {e}"),
                    Ok(()) => {}
                }
            });
        }
        drop(tx);
        let last = fleet.wait_all(&all, &vec![0; scale.proxies], Duration::from_secs(300)).await?;
        let connect_ms = (last - t0).as_secs_f64() * 1e3;
        let snapshot_bytes = fleet.log.iter().map(|e| e.bytes).max().unwrap_or(0);
        let cpu_connect = cpu_ms(pid) - cpu0;
        fleet.settle(Duration::from_millis(500)).await;

        // 2. Full pushes: a VirtualService (of svc-0000) changes its weights; every proxy that
        // sees svc-0000 gets a new snapshot.
        let vs_users: Vec<usize> = (0..scale.proxies).filter(|&i| scale.sees(i, 0)).collect();
        let mut full = Vec::new();
        let mut full_cpu = Vec::new();
        let mut full_proxies_cpu = Vec::new();
        for _ in 0..full_rounds {
            let above = fleet.acked.clone();
            weight = if weight == 90 { 80 } else { 90 };
            let c = cpu_ms(pid);
            let own = own_cpu_ms();
            let t = Instant::now();
            write_atomic(&mesh, manifests(&scale, weight).as_bytes())?;
            let last = fleet.wait_all(&vs_users, &above, Duration::from_secs(300)).await?;
            full.push((last - t).as_secs_f64() * 1e3);
            fleet.settle(Duration::from_millis(300)).await;
            full_cpu.push((cpu_ms(pid) - c) as f64);
            full_proxies_cpu.push((own_cpu_ms() - own) as f64);
        }

        // 3. Endpoint changes: one pod of a Service turns unready, then ready; the proxies that
        // see the Service get it.
        // In namespace bench-1 (with the defaults), where some scoped proxies live too.
        let target = scale.services / 2 + 1 + scale.services * (scale.pods / scale.services - 1);
        let target_svc = svc_name(target % scale.services);
        let users: Vec<usize> = (0..scale.proxies)
            .filter(|&i| scale.sees(i, target % scale.services))
            .collect();
        let mut to_others = 0;
        let mut ep = Vec::new();
        let mut ep_cpu = Vec::new();
        let mut ep_bytes = Vec::new();
        let mut ep_kinds = BTreeMap::<String, usize>::new();
        let mut ep_compiles = Vec::new();
        let mut ep_recompiled = Vec::new();
        for r in 0..rounds {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = compiles(&status(&status_file));
            let above = fleet.acked.clone();
            let first = fleet.log.len();
            let c = cpu_ms(pid);
            let t = Instant::now();
            write_registry(&registry, &scale, r.is_multiple_of(2).then_some(target))?;
            let last = fleet.wait_all(&users, &above, Duration::from_secs(300)).await?;
            ep.push((last - t).as_secs_f64() * 1e3);
            fleet.settle(Duration::from_millis(300)).await;
            ep_cpu.push((cpu_ms(pid) - c) as f64);
            let events = &fleet.log[first..];
            ep_bytes.push(events.iter().map(|e| e.bytes).max().unwrap_or(0) as f64);
            for e in events {
                *ep_kinds.entry(e.kind.clone()).or_default() += 1;
            }
            to_others += events.iter().filter(|e| !users.contains(&e.proxy)).count();
            tokio::time::sleep(Duration::from_millis(250)).await;
            let after = compiles(&status(&status_file));
            let d: Vec<u64> = after.iter().map(|(k, v)| v - before.get(k).copied().unwrap_or(0)).collect();
            ep_compiles.push(d.iter().sum::<u64>() as f64);
            ep_recompiled.push(d.iter().filter(|n| **n > 0).count() as f64);
        }
        let (hwm, rss) = rss_kib(pid);
        let final_status = status(&status_file);
        let acked_all = final_status["proxies"].as_object().is_some_and(|m| {
            m.len() == scale.proxies && m.values().all(|p| p["acked"] == p["sent"])
        });
        Ok(json!({
            "scale": {"services": scale.services, "pods": scale.pods, "proxies": scale.proxies,
                      "namespaces": scale.namespaces, "routed": scale.routed, "scoped": scale.scoped},
            "full_push_proxies": vs_users.len(),
            "rounds": rounds,
            "poll_ms": poll_ms,
            "control_start_ms": start_ms,
            "connect_and_first_push_ms": connect_ms,
            "connect_cpu_ms": cpu_connect,
            "snapshot_frame_bytes": snapshot_bytes,
            "full_push_ms": stats(&full),
            "full_push_cpu_ms": stats(&full_cpu),
            "full_push_simulated_proxies_cpu_ms": stats(&full_proxies_cpu),
            "load_average": std::fs::read_to_string("/proc/loadavg").ok().map(|l| l.trim().to_string()),
            "endpoint_change": {
                "service": target_svc,
                "proxies_using_it": users.len(),
                "frames_to_proxies_not_using_it": to_others,
                "ms": stats(&ep),
                "cpu_ms": stats(&ep_cpu),
                "largest_frame_bytes": stats(&ep_bytes),
                "frames_by_kind": ep_kinds,
                "compiles": stats(&ep_compiles),
                "proxies_recompiled": stats(&ep_recompiled),
            },
            "control_plane": {"vm_hwm_kib": hwm, "vm_rss_kib": rss, "cpu_ms_total": cpu_ms(pid),
                              "service_cluster_compiles": final_status["service_cluster_compiles"].clone()},
            "all_acked_in_status": acked_all,
        }))
    })?;
    drop(child);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

fn markdown(report: &Value) -> String {
    let s = |v: &Value| {
        format!(
            "{:.1} ({:.1}–{:.1})",
            v["median"].as_f64().unwrap_or(0.0),
            v["min"].as_f64().unwrap_or(0.0),
            v["max"].as_f64().unwrap_or(0.0)
        )
    };
    let a = &report["all_see_all"];
    let mach = &report["machine"];
    let mut m = String::new();
    let _ = writeln!(m, "# Control plane at scale\n");
    let _ = writeln!(
        m,
        "{} Services over {} namespaces, {} pods (endpoints), {} simulated proxies (one pod each) over TLS verified against the mesh root, hello with the pod's bootstrap token, an ACK for each config frame; {} Services with a DestinationRule (two subsets) and a weighted VirtualService. Times run from the file write to the last ACK and include the control plane's poll interval ({} ms). Median (min–max) of {} rounds. {} CPUs shared with other work, {} (git {}). `bench/control-plane/run`.\n",
        a["scale"]["services"],
        a["scale"]["namespaces"],
        a["scale"]["pods"],
        a["scale"]["proxies"],
        a["scale"]["routed"],
        a["poll_ms"],
        a["rounds"],
        mach["cpus"],
        mach["date"].as_str().unwrap_or(""),
        mach["git"].as_str().unwrap_or("")
    );
    for (title, r) in [
        ("Every proxy sees every Service", a),
        (
            "Half the proxies scoped to their namespace (Sidecar egress `./*`)",
            &report["scoped"],
        ),
    ] {
        let e = &r["endpoint_change"];
        let c = &r["control_plane"];
        let _ = writeln!(m, "## {title}\n");
        let _ = writeln!(m, "| measure | value |\n|---|---|");
        let _ = writeln!(
            m,
            "| connect + first snapshot to all {} proxies | {:.1} ms |",
            r["scale"]["proxies"],
            r["connect_and_first_push_ms"].as_f64().unwrap_or(0.0)
        );
        let _ = writeln!(
            m,
            "| largest snapshot frame | {} bytes |",
            r["snapshot_frame_bytes"]
        );
        let _ = writeln!(
            m,
            "| full push (a VirtualService changes) to the last of {} proxies that see it | {} ms |",
            r["full_push_proxies"],
            s(&r["full_push_ms"])
        );
        let _ = writeln!(
            m,
            "| full push: control-plane CPU | {} ms |",
            s(&r["full_push_cpu_ms"])
        );
        let _ = writeln!(
            m,
            "| full push: simulated proxies' CPU (TLS, read the version) | {} ms |",
            s(&r["full_push_simulated_proxies_cpu_ms"])
        );
        let _ = writeln!(
            m,
            "| endpoint change ({} pod readiness) to the last of {} proxies that see it | {} ms |",
            e["service"].as_str().unwrap_or(""),
            e["proxies_using_it"],
            s(&e["ms"])
        );
        let _ = writeln!(
            m,
            "| endpoint change: frames to proxies that do not see it | {} |",
            e["frames_to_proxies_not_using_it"]
        );
        let _ = writeln!(
            m,
            "| endpoint change: control-plane CPU | {} ms |",
            s(&e["cpu_ms"])
        );
        let _ = writeln!(
            m,
            "| endpoint change: largest frame | {} bytes |",
            s(&e["largest_frame_bytes"])
        );
        let _ = writeln!(
            m,
            "| endpoint change: frames by kind, all rounds | {} |",
            e["frames_by_kind"]
        );
        let _ = writeln!(
            m,
            "| endpoint change: proxy snapshots compiled | {} |",
            s(&e["compiles"])
        );
        let _ = writeln!(
            m,
            "| endpoint change: proxies recompiled | {} |",
            s(&e["proxies_recompiled"])
        );
        let _ = writeln!(
            m,
            "| control plane peak RSS (VmHWM) | {:.1} MiB |",
            c["vm_hwm_kib"].as_f64().unwrap_or(0.0) / 1024.0
        );
        let _ = writeln!(
            m,
            "| control plane CPU, whole scenario | {} ms |",
            c["cpu_ms_total"]
        );
        let _ = writeln!(
            m,
            "| Service cluster sets compiled, whole scenario | {} |",
            c["service_cluster_compiles"]
        );
        let _ = writeln!(
            m,
            "| every proxy's sent == acked in the status | {} |",
            r["all_acked_in_status"]
        );
        let _ = writeln!(
            m,
            "| load average at the end | {} |\n",
            r["load_average"].as_str().unwrap_or("")
        );
    }
    m
}
