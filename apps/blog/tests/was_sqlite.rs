//! blog-was in-process on an ephemeral port against a temporary SQLite file, over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use blog::hosts::Resolver;
use blog::server::ServerHandle;
use blog::was::{self, AppState, Config, Db, DbError, WasError};
use common::{Expect, Http};

fn expect() -> Expect {
    Expect {
        pod: "blog-was-6d9f7c-x2x4q".into(),
        version: "v2".into(),
        max_body_bytes: 4096,
    }
}

fn config(url: String, e: &Expect) -> Config {
    Config {
        listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        pod_name: e.pod.clone(),
        version: e.version.clone(),
        max_body_bytes: e.max_body_bytes,
        db_connect_timeout: Duration::from_secs(5),
        ..Config::new(url)
    }
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("data/blog.db").display())
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn crud_over_http() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let e = expect();
    let server = was::start(config(sqlite_url(&dir), &e)).await?;
    ensure!(
        dir.path().join("data/blog.db").exists(),
        "the SQLite file was not created"
    );
    let c = Http::new(format!("http://{}", server.local_addr()));
    common::crud_suite(&c, &e).await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn data_survives_a_restart_and_is_seeded_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let e = expect();
    let server = was::start(config(sqlite_url(&dir), &e)).await?;
    let c = Http::new(format!("http://{}", server.local_addr()));
    let r = c
        .json(
            http::Method::POST,
            "/api/posts",
            &serde_json::json!({"title": "Kept"}),
        )
        .await?;
    ensure!(
        r.status == http::StatusCode::CREATED,
        "create: {}",
        r.text()
    );
    server.shutdown().await?;

    let server = was::start(config(sqlite_url(&dir), &e)).await?;
    let c = Http::new(format!("http://{}", server.local_addr()));
    let r = c.get("/api/posts").await?;
    ensure!(
        r.header("x-total-count") == Some("2"),
        "after restart: {}",
        r.text()
    );
    let v = r.json();
    ensure!(
        v[0]["title"] == "Kept" && v[1]["title"] == "First Post",
        "{v}"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn down_when_the_pool_is_closed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let e = expect();
    let server = was::start(config(sqlite_url(&dir), &e)).await?;
    let c = Http::new(format!("http://{}", server.local_addr()));
    ensure!(
        c.get("/actuator/health").await?.status == http::StatusCode::OK,
        "UP first"
    );
    server.db().close().await;
    common::expect_db_down(&c, &e).await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn down_when_mysql_is_unreachable() -> Result<()> {
    let e = expect();
    let url = format!("mysql://blog:pw@127.0.0.1:{}/blog", closed_port());
    let db = Db::connect_lazy(&url, &Resolver::default())?;
    let app = was::router(AppState::new(db, &e.pod, &e.version, e.max_body_bytes));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let server = ServerHandle::spawn(listener, app)?;
    let c = Http::new(format!("http://{}", server.local_addr()));
    common::expect_db_down(&c, &e).await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn start_retries_then_gives_up_clearly() -> Result<()> {
    let e = expect();
    let url = format!("mysql://blog:pw@127.0.0.1:{}/blog", closed_port());
    let mut cfg = config(url, &e);
    cfg.db_connect_timeout = Duration::from_millis(1500);
    let started = std::time::Instant::now();
    let err = was::start(cfg).await.err().context("start should fail")?;
    let waited = started.elapsed();
    ensure!(
        waited >= Duration::from_millis(1400),
        "gave up too early: {waited:?}"
    );
    ensure!(
        waited < Duration::from_secs(10),
        "gave up too late: {waited:?}"
    );
    match &err {
        WasError::Db(DbError::GaveUp { attempts, .. }) => {
            ensure!(*attempts >= 2, "retried only {attempts} times")
        }
        other => anyhow::bail!("unexpected error: {other}"),
    }
    let msg = err.to_string();
    ensure!(msg.contains("gave up connecting to the database"), "{msg}");
    ensure!(!msg.contains(":pw@"), "password in the error: {msg}");
    Ok(())
}

#[tokio::test]
async fn bad_database_urls_fail_at_once() -> Result<()> {
    let e = expect();
    for url in ["postgres://x@y/z", "nonsense"] {
        let started = std::time::Instant::now();
        let err = was::start(config(url.into(), &e))
            .await
            .err()
            .context("should fail")?;
        ensure!(
            started.elapsed() < Duration::from_secs(1),
            "{url}: retried a permanent error"
        );
        ensure!(err.to_string().contains("DATABASE_URL"), "{url}: {err}");
    }
    Ok(())
}

#[tokio::test]
async fn busy_port_is_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let e = expect();
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut cfg = config(sqlite_url(&dir), &e);
    cfg.listen_addr = taken.local_addr()?;
    let err = was::start(cfg).await.err().context("should fail")?;
    ensure!(matches!(err, WasError::Bind { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_was_exports_its_requests_and_pool_for_prometheus() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let e = expect();
    let server = was::start(config(sqlite_url(&dir), &e)).await?;
    let c = Http::new(format!("http://{}", server.local_addr()));
    for _ in 0..3 {
        ensure!(c.get("/api/posts").await?.status == 200);
    }
    ensure!(c.get("/api/posts/999999").await?.status == 404);
    ensure!(c.get("/no/such/route").await?.status == 404);
    let r = c.get("/actuator/prometheus").await?;
    ensure!(r.status == 200, "{}", r.text());
    ensure!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    for line in [
        "http_server_requests_seconds_count{exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/posts\"} 3",
        "http_server_requests_seconds_count{exception=\"none\",method=\"GET\",outcome=\"CLIENT_ERROR\",status=\"404\",uri=\"/api/posts/{id}\"} 1",
        "http_server_requests_seconds_count{exception=\"none\",method=\"GET\",outcome=\"CLIENT_ERROR\",status=\"404\",uri=\"UNKNOWN\"} 1",
        "# TYPE hikaricp_connections_active gauge",
    ] {
        ensure!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    let max = text
        .lines()
        .find_map(|l| l.strip_prefix("hikaricp_connections_max{pool=\"HikariPool-1\"} "))
        .context("no pool maximum")?;
    ensure!(max.parse::<u32>()? >= 1, "{max}");
    server.shutdown().await?;
    Ok(())
}
