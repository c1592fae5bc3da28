//! `skein edges` (linkerd viz edges): which workload calls which, and whether the
//! connections are mutual TLS, from the servers' proxies' `connection_security_policy` and
//! principals; edges to servers outside the mesh (was -> mysql) from the clients' proxies.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::traffic::format;
use crate::traffic::{self, EdgesSpec, Resource};

#[derive(clap::Args)]
#[command(after_help = "\
SECURED: √ when the server's proxy saw mutual TLS, × when it saw plain text, - when no proxy
serves the destination (only the client reported it). CLIENT_ID and SERVER_ID (wide) are
the SPIFFE principals of the two sides. Edges are counted since the proxies started.")]
pub struct Args {
    /// deploy or rollout, optionally /NAME.
    pub resource: String,
    #[command(flatten)]
    pub common: super::stat::Common,
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let ctx = super::stat::context(state_dir)?;
    let spec = EdgesSpec {
        resource: Resource::parse(&args.resource)?,
        namespaces: args.common.namespaces(),
    };
    traffic::edges_exprs(&spec)?;
    let mut numbers = super::stat::Numbers::new(&ctx, args.common.proxies)?;
    let (rows, mut origin) =
        numbers.refresh(args.common.window, |b, _, _| traffic::edges(&spec, b))?;
    // Totals, whatever the source: no rates, no window.
    origin.note = None;
    origin.window_seconds = 0.0;
    print!("{}", format::edges(&rows, &origin, args.common.output));
    Ok(ExitCode::SUCCESS)
}
