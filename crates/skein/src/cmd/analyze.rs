//! `skein analyze DIR`: load and validate manifests without running anything.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A manifests directory or file.
    path: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let manifests = match skein_api::load_path(&args.path) {
        Ok(m) => m,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let diagnostics = skein_api::validate(&manifests);
    let mut failed = false;
    for d in &diagnostics {
        failed |= d.is_error();
        println!("{d}");
    }
    if diagnostics.is_empty() {
        println!(
            "✔ No validation issues found when analyzing {} ({} resources).",
            args.path.display(),
            manifests.documents.len()
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
