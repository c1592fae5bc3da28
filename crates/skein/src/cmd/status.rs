//! `skein status`: what runs where.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use skein_runtime::{StateDir, Status};

#[derive(clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    let path = state.status_file();
    if !path.exists() {
        bail!(
            "nothing has run from {} yet; start with `skein up DIR`",
            state.root().display()
        );
    }
    let mut status = Status::read(&path)?;
    let running = state.running_supervisor().is_some();
    if !running {
        status.supervisor.state = "stopped".into();
    }
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Format::Table => {
            if !running {
                println!("skein is not running; the last known state was:\n");
            }
            println!(
                "ingress:  {}  {}",
                status.ingress.http, status.ingress.https
            );
            println!(
                "database: {} ({})\n",
                status.database.mode, status.database.location
            );
            print!("{}", table(&status));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn table(status: &Status) -> String {
    let rows: Vec<Vec<String>> = status
        .pods
        .iter()
        .map(|p| {
            let ready = p.containers.iter().filter(|c| c.state == "Running").count();
            vec![
                p.namespace.clone(),
                p.name.clone(),
                format!("{}/{}", if p.ready { ready } else { 0 }, p.containers.len()),
                p.state.clone(),
                p.restarts.to_string(),
                p.ip.clone(),
                p.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                if p.pid == 0 {
                    "-".into()
                } else {
                    p.pid.to_string()
                },
            ]
        })
        .collect();
    crate::table::render(
        &[
            "NAMESPACE",
            "POD",
            "READY",
            "STATUS",
            "RESTARTS",
            "IP",
            "PORTS",
            "PID",
        ],
        &rows,
    )
}
