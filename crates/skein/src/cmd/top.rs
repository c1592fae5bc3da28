//! `skein top` (linkerd viz top, from metrics rather than tap): a refreshing table of the
//! edges between workloads with their request rate, success and latency over the window,
//! and TCP bytes. On a terminal it redraws every `--interval` seconds until `q` or Ctrl-C;
//! otherwise it prints once and exits.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::screen::Screen;
use crate::traffic::format::{self, Format};
use crate::traffic::{self, Resource, TopSpec};

#[derive(clap::Args)]
#[command(after_help = "\
HTTP and gRPC edges are as their servers' proxies report them (reporter=\"destination\": no
network time in the latency), TCP edges as their clients' do (a server outside the mesh
reports nothing): wide's TCP_REQ/SEC is client to server, TCP_RESP/SEC server to client. COUNT is requests in the window. Without Prometheus the proxies are read
at every refresh and the rates are over the time between readings.")]
pub struct Args {
    /// Only edges from or to deploy[/NAME], rollout[/NAME] or ns[/NAME].
    pub resource: Option<String>,
    #[command(flatten)]
    pub common: super::stat::Common,
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let ctx = super::stat::context(state_dir)?;
    let mut spec = TopSpec {
        resource: args.resource.as_deref().map(Resource::parse).transpose()?,
        namespaces: args.common.namespaces(),
        window: args.common.window,
    };
    // `top ns/NAME` is that namespace's edges, whatever -n says.
    if let Some(Resource {
        kind: traffic::Kind::Ns,
        name: Some(ns),
    }) = &spec.resource
    {
        spec.namespaces = traffic::Namespaces::One(ns.clone());
    }
    traffic::top_exprs(&spec)?;
    let mut numbers = super::stat::Numbers::new(&ctx, args.common.proxies)?;
    let live = std::io::stdout().is_terminal();
    let mut screen = Screen::new(live);
    let proxies = matches!(numbers, super::stat::Numbers::Proxies { .. });
    if proxies {
        // A first reading to take rates from.
        numbers.refresh(spec.window, |_, _, _| Ok(()))?;
        if !screen.wait(args.common.interval)? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    loop {
        let (rows, origin) =
            numbers.refresh(spec.window, |b, _, secs| traffic::top(&spec, b, secs))?;
        let text = format::top(&rows, &origin, args.common.output);
        let note = origin
            .note
            .as_ref()
            .filter(|_| args.common.output != Format::Json);
        if !screen.show(&text, note.map(String::as_str))? || !live {
            break;
        }
        if !screen.wait(args.common.interval)? {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
