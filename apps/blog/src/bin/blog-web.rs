//! `blog-web`: the blog's static site and `/api` reverse proxy. Configuration: `blog-web --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    blog::server::init_tracing();
    let args = blog::web::Args::parse();
    let result = match blog::web::Config::try_from(args) {
        Ok(config) => blog::web::run(config).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "blog-web failed");
            eprintln!("blog-web: {err}");
            ExitCode::FAILURE
        }
    }
}
