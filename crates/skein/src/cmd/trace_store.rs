//! `skein trace-store` (hidden): the tracing store, started by `skein up` as istio-system's
//! Jaeger stand-in (Zipkin 9411, OTLP/HTTP 4318, query API 16686).

use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Where the Zipkin v2 receiver listens (`POST /api/v2/spans`).
    #[arg(long)]
    zipkin: Option<SocketAddr>,
    /// Where the OTLP/HTTP receiver listens (`POST /v1/traces`).
    #[arg(long)]
    otlp: Option<SocketAddr>,
    /// Where Jaeger's query API and `/metrics` listen.
    #[arg(long)]
    query: Option<SocketAddr>,
    /// The most spans held; the oldest traces go first.
    #[arg(long, default_value_t = 200_000)]
    max_spans: usize,
    /// The most (estimated) bytes of spans held.
    #[arg(long, default_value_t = 128 << 20)]
    max_bytes: usize,
    /// The largest request body, after decompression (413 past it).
    #[arg(long, default_value_t = skein_trace_store::DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// The most spans, tags, events and values in one request (413 past it).
    #[arg(long, default_value_t = 100_000)]
    max_items: usize,
    /// Also send every span received to this OTLP/HTTP traces URL
    /// (e.g. `http://127.0.0.1:4318/v1/traces`), in batches; never blocks the receivers.
    #[arg(long)]
    forward: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::init_component_logging();
    let config = skein_trace_store::Config {
        zipkin: args.zipkin,
        otlp: args.otlp,
        query: args.query,
        limits: skein_trace_store::Limits {
            max_spans: args.max_spans,
            max_bytes: args.max_bytes,
        },
        max_body_bytes: args.max_body_bytes,
        max_items: args.max_items,
        forward: args.forward,
        ..skein_trace_store::Config::default()
    };
    crate::runtime()?.block_on(async move {
        let running = skein_trace_store::start(config).await?;
        let show = |a: Option<SocketAddr>| a.map_or("-".to_string(), |a| a.to_string());
        tracing::info!(
            zipkin = %show(running.zipkin),
            otlp = %show(running.otlp),
            query = %show(running.query),
            "trace store listening"
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        running.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
