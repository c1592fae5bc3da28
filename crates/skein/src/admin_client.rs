//! The CLI's GETs to a proxy's admin endpoint (`/ready`, `/config_dump`), made with the
//! runtime's one HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a GET for a command's output may take, from connecting to the last byte.
const TIMEOUT: Duration = Duration::from_secs(7);
/// How long one `/ready` poll may take.
const READY_TIMEOUT: Duration = Duration::from_millis(700);

/// GET on a loopback admin endpoint (`http://ADDR` or `ADDR`): the body of a 200 answer.
pub fn admin_get(admin: &str, path: &str) -> anyhow::Result<String> {
    let addr: SocketAddr = admin
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("bad admin address {admin:?}"))?;
    let (status, body) = block_on(skein_runtime::http_get(addr, path, TIMEOUT))?
        .context("the proxy's admin endpoint")?;
    if status != 200 {
        bail!("{path}: {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Whether the proxy's admin endpoint answers `/ready` with 200.
pub fn ready(admin: SocketAddr) -> bool {
    block_on(skein_runtime::http_get(admin, "/ready", READY_TIMEOUT))
        .is_ok_and(|r| r.is_ok_and(|(status, _)| status == 200))
}

/// Runs one GET on a runtime of its own: the commands that use these are not async.
fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start an async runtime")?;
    Ok(rt.block_on(f))
}
