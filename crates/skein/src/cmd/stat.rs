//! `skein stat` (linkerd viz stat): success rate, request rate, latency percentiles and open
//! TCP connections per deploy, pod, service, namespace or rollout, from the mesh's
//! Prometheus, or from the proxies themselves when it does not run. Also the plumbing
//! `skein edges` and `skein top` share: the status, the backend, the inventory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use skein_runtime::{StateDir, Status};

use crate::traffic::format::{self, Format};
use crate::traffic::source::{self, Local, Prometheus, Target};
use crate::traffic::{self, Inventory, Kind, Meshed, Namespaces, Origin, Resource, StatSpec};

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  skein stat deploy -n blog-system                 every Deployment's inbound traffic
  skein stat deploy/was -n blog-system -t 5m       one, over five minutes
  skein stat deploy --from deploy/web -n blog-system   what web's proxies saw outbound
  skein stat po --to svc/was-service -n blog-system    per calling pod
  skein stat ns                                    per namespace

Numbers: SUCCESS is non-5xx requests over all (Flagger's request-success-rate), RPS and the
latency percentiles are over the window (-t), TCP_CONN is connections open now. Without
--from/--to the servers' proxies report (reporter=\"destination\"); with them, the clients'
(reporter=\"source\"). Without Prometheus the proxies' own counters are read: totals since
they started, until `-w` has two readings to take rates between.")]
pub struct Args {
    /// deploy, po, svc, ns or rollout, optionally /NAME.
    pub resource: String,
    #[command(flatten)]
    pub common: Common,
    /// Only traffic from this resource (TYPE[/NAME]); the clients' proxies report.
    #[arg(long, value_name = "RESOURCE")]
    pub from: Option<String>,
    /// Only traffic to this resource (TYPE[/NAME]); the rows are the clients.
    #[arg(long, value_name = "RESOURCE")]
    pub to: Option<String>,
    /// Refresh until interrupted.
    #[arg(short, long)]
    pub watch: bool,
}

/// The flags `stat`, `edges` and `top` share.
#[derive(clap::Args)]
pub struct Common {
    /// The namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The window rates and percentiles are over (at least 15s, as linkerd requires).
    #[arg(short = 't', long = "time-window", default_value = "1m", value_parser = window)]
    pub window: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
    /// Read the proxies' own counters even when Prometheus runs.
    #[arg(long)]
    pub proxies: bool,
    /// Seconds between refreshes (`-w`, and `skein top`).
    #[arg(long, default_value_t = 2.0, value_parser = interval)]
    pub interval: f64,
}

impl Common {
    pub fn namespaces(&self) -> Namespaces {
        if self.all_namespaces {
            Namespaces::All
        } else {
            Namespaces::One(self.namespace.clone())
        }
    }
}

fn window(s: &str) -> Result<Duration, String> {
    let d = traffic::parse_window(s)?;
    if d < Duration::from_secs(15) {
        return Err(format!(
            "{s}: the window must be at least 15s (Prometheus needs two scrapes in it)"
        ));
    }
    Ok(d)
}

fn interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.1..=3600.0).contains(&v) {
        return Err("between 0.1 and 3600 seconds".into());
    }
    Ok(v)
}

/// What the commands read before asking: the status, and where the numbers are.
pub struct Context {
    pub status: Status,
    pub prometheus: Option<String>,
}

pub fn context(state_dir: Option<PathBuf>) -> anyhow::Result<Context> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    let path = state.status_file();
    if !path.exists() {
        bail!(
            "nothing has run from {} yet; start with `skein up DIR`",
            state.root().display()
        );
    }
    let status = Status::read(&path)?;
    if state.running_supervisor().is_none() {
        bail!("skein is not running: start it with `skein up DIR`");
    }
    let prometheus = status.prometheus.as_ref().and_then(|p| p.url.clone());
    Ok(Context { status, prometheus })
}

/// The proxies to read when Prometheus does not run.
pub fn targets(status: &Status) -> anyhow::Result<Vec<Target>> {
    status
        .pods
        .iter()
        .filter_map(|p| Some((p, p.proxy.as_ref()?)))
        .filter(|(_, proxy)| proxy.pid != 0)
        .map(|(p, proxy)| {
            Ok(Target {
                admin: proxy
                    .admin
                    .trim_start_matches("http://")
                    .parse()
                    .with_context(|| format!("bad admin address {:?}", proxy.admin))?,
                namespace: p.namespace.clone(),
                pod: p.name.clone(),
            })
        })
        .collect()
}

/// The resources of `kind` that run, with how many of their pods have a proxy.
pub fn inventory(status: &Status, kind: Kind) -> Inventory {
    let mut inv = Inventory::new();
    fn add(inv: &mut Inventory, ns: &str, name: &str, meshed: bool) {
        let m: &mut Meshed = inv.entry((ns.to_string(), name.to_string())).or_default();
        m.total += 1;
        m.meshed += usize::from(meshed);
    }
    for p in &status.pods {
        let meshed = p.proxy.is_some();
        match kind {
            Kind::Deploy | Kind::Rollout => add(&mut inv, &p.namespace, &p.workload, meshed),
            Kind::Pod => add(&mut inv, &p.namespace, &p.name, meshed),
            Kind::Ns => add(&mut inv, &p.namespace, &p.namespace, meshed),
            Kind::Svc => {}
        }
    }
    if kind == Kind::Svc {
        for s in &status.services {
            let ips: Vec<&str> = s
                .endpoints
                .iter()
                .map(|e| e.rsplit_once(':').map_or(e.as_str(), |(ip, _)| ip))
                .collect();
            inv.entry((s.namespace.clone(), s.name.clone()))
                .or_default();
            for p in status.pods.iter().filter(|p| ips.contains(&p.ip.as_str())) {
                add(&mut inv, &s.namespace, &s.name, p.proxy.is_some());
            }
        }
    }
    inv
}

/// Where one refresh reads: Prometheus, or the proxies (keeping the last reading, so that a
/// second refresh has rates).
pub enum Numbers {
    Prometheus(String),
    Proxies {
        targets: Vec<Target>,
        last: Option<source::Snapshot>,
    },
}

impl Numbers {
    pub fn new(ctx: &Context, proxies: bool) -> anyhow::Result<Numbers> {
        Ok(match &ctx.prometheus {
            Some(url) if !proxies => Numbers::Prometheus(url.clone()),
            _ => Numbers::Proxies {
                targets: targets(&ctx.status)?,
                last: None,
            },
        })
    }

    /// Runs `f` on a backend for this refresh.
    pub fn refresh<T>(
        &mut self,
        window: Duration,
        f: impl FnOnce(&mut dyn source::Backend, bool, f64) -> Result<T, traffic::TrafficError>,
    ) -> anyhow::Result<(T, Origin)> {
        match self {
            Numbers::Prometheus(url) => {
                let mut p = Prometheus::new(url, None)?;
                let out = f(&mut p, true, window.as_secs_f64())?;
                Ok((
                    out,
                    Origin {
                        source: "prometheus",
                        time: Some(p.time),
                        window_seconds: window.as_secs_f64(),
                        note: None,
                    },
                ))
            }
            Numbers::Proxies { targets, last } => {
                let cur = source::scrape(targets)?;
                let mut local = Local {
                    prev: last.take(),
                    cur,
                };
                let rates = local.has_rates();
                let elapsed = local.elapsed().unwrap_or(0.0);
                let out = f(&mut local, rates, elapsed)?;
                *last = Some(local.cur);
                Ok((
                    out,
                    Origin {
                        source: "proxies",
                        time: None,
                        window_seconds: elapsed,
                        note: Some(if rates {
                            format!(
                                "from the proxies' own counters: rates over the {elapsed:.1}s between two readings"
                            )
                        } else {
                            "from the proxies' own counters: totals since each proxy started, no rates (`-w` or `skein top` take rates between readings)".into()
                        }),
                    },
                ))
            }
        }
    }
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let ctx = context(state_dir)?;
    let resource = Resource::parse(&args.resource)?;
    let spec = StatSpec {
        resource: resource.clone(),
        namespaces: args.common.namespaces(),
        from: args.from.as_deref().map(Resource::parse).transpose()?,
        to: args.to.as_deref().map(Resource::parse).transpose()?,
        window: args.common.window,
        wide: args.common.output == Format::Wide,
    };
    // Checked before anything is read.
    traffic::stat_exprs(&spec)?;
    let inv = inventory(&ctx.status, resource.kind);
    let mut numbers = Numbers::new(&ctx, args.common.proxies)?;
    let ns_column = resource.kind != Kind::Ns;
    let mut screen = crate::screen::Screen::new(args.watch);
    loop {
        let (rows, origin) = numbers.refresh(spec.window, |b, rates, _| {
            traffic::stat(&spec, b, &inv, rates)
        })?;
        let text = format::stat(&rows, &origin, args.common.output, ns_column);
        let note = origin
            .note
            .as_ref()
            .filter(|_| args.common.output != Format::Json);
        if !screen.show(&text, note.map(String::as_str))? {
            break;
        }
        if !args.watch || !screen.wait(args.common.interval)? {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
