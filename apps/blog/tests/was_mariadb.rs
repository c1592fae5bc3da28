//! The same CRUD suite as `was_sqlite.rs`, against a real MariaDB started through
//! `skein_runtime::mysql::TestServer`. MariaDB must be installed (`apt-get install
//! mariadb-server`): this test fails, never skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, ensure};
use blog::was::{self, Config};
use common::{Expect, Http};
use skein_runtime::mysql::TestServer;

fn start_mariadb() -> TestServer {
    match TestServer::start() {
        Ok(s) => s,
        Err(e) => panic!(
            "\n\nthis test needs a real MariaDB server and could not start one:\n{e}\n\n\
             Install it with `apt-get install -y mariadb-server` (the system service need not run).\n"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_over_http_on_mariadb() -> Result<()> {
    let mut db = tokio::task::spawn_blocking(start_mariadb).await?;
    let e = Expect {
        pod: "blog-was-mariadb-0".into(),
        version: "v1".into(),
        max_body_bytes: 8192,
    };

    // Reach the server by a Service-like name that only the SKEIN_HOSTS file knows.
    let dir = tempfile::tempdir()?;
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 mysql-service mysql-service.blog-system.svc.cluster.local\n",
    )?;
    let url = db.url().replace(
        "@127.0.0.1:",
        "@mysql-service.blog-system.svc.cluster.local:",
    );
    ensure!(url.contains("mysql-service"), "{url}");

    let cfg = Config {
        listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        pod_name: e.pod.clone(),
        version: e.version.clone(),
        max_body_bytes: e.max_body_bytes,
        hosts_file: Some(hosts),
        db_connect_timeout: Duration::from_secs(30),
        ..Config::new(url)
    };
    let server = match was::start(cfg).await {
        Ok(s) => s,
        Err(err) => anyhow::bail!(
            "blog-was did not start on MariaDB: {err}\nserver log:\n{}",
            db.log_tail()
        ),
    };
    ensure!(
        server.db().backend() == "MySQL",
        "backend {}",
        server.db().backend()
    );
    let c = Http::new(format!("http://{}", server.local_addr()));
    if let Err(err) = common::crud_suite(&c, &e).await {
        anyhow::bail!("{err:#}\nMariaDB log:\n{}", db.log_tail());
    }

    // The database goes away: health DOWN (within its 1 s budget) and 503s.
    db.stop();
    common::expect_db_down(&c, &e).await?;
    server.shutdown().await?;
    Ok(())
}
