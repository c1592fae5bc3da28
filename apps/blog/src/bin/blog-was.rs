//! `blog-was`: the blog's REST API. Configuration: `blog-was --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    blog::server::init_tracing();
    let args = blog::was::Args::parse();
    let result = match blog::was::Config::try_from(args) {
        Ok(config) => blog::was::run(config).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "blog-was failed");
            eprintln!("blog-was: {err}");
            ExitCode::FAILURE
        }
    }
}
