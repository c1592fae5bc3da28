//! `skein down`: stop the supervisor started by `skein up --detach`, and with it every pod.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use skein_runtime::StateDir;

#[derive(clap::Args)]
pub struct Args {
    /// How long to wait for pods to stop before killing them.
    #[arg(long, default_value = "45", value_name = "SECONDS")]
    timeout: u64,
}

pub fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let state = StateDir::resolve(state_dir.as_deref())?;
    let stopped = crate::runtime()?.block_on(skein_runtime::stop(
        &state,
        Duration::from_secs(args.timeout),
    ))?;
    for n in &stopped.not_ours {
        println!(
            "pid {} was {} but is another process now; not signalled",
            n.pid, n.was
        );
    }
    if !stopped.leftovers.is_empty() {
        let pids: Vec<String> = stopped.leftovers.iter().map(u32::to_string).collect();
        println!(
            "stopped containers a failed supervisor left running (pids {})",
            pids.join(", ")
        );
    }
    match stopped.supervisor {
        Some(pid) => println!(
            "stopped skein (pid {pid}); data kept in {}",
            state.root().display()
        ),
        None => println!("skein is not running from {}", state.root().display()),
    }
    Ok(ExitCode::SUCCESS)
}
