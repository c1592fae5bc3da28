//! kube-proxy's part: every Service port gets a listener on the service's loopback "cluster
//! IP" that forwards each connection to one ready endpoint, round robin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::RuntimeError;
use crate::run::supervisor::Pods;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Binds every service port now, so an address in use is reported before anything starts.
pub async fn bind(pods: &Pods) -> Result<Vec<(usize, u16, TcpListener)>, RuntimeError> {
    let mut out = Vec::new();
    for (i, s) in pods.plan.services.iter().enumerate() {
        for p in &s.ports {
            let addr = SocketAddr::from((s.cluster_ip, p.port));
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| RuntimeError::Bind {
                    what: format!("service {}/{}", s.namespace, s.name),
                    addr,
                    error: e,
                })?;
            out.push((i, p.port, l));
        }
    }
    Ok(out)
}

pub fn serve(
    pods: Arc<Pods>,
    listeners: Vec<(usize, u16, TcpListener)>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|(service, port, listener)| {
            let pods = pods.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = crate::run::supervisor::stopped(&mut shutdown) => return,
                    };
                    let Ok((inbound, _)) = accepted else { continue };
                    let pods = pods.clone();
                    tokio::spawn(async move {
                        forward(&pods, service, port, inbound).await;
                    });
                }
            })
        })
        .collect()
}

async fn forward(pods: &Pods, service: usize, port: u16, mut inbound: TcpStream) {
    // Try each ready endpoint once: a pod that just died should not fail the connection.
    for addr in pods.endpoints(service, port) {
        if let Ok(Ok(mut upstream)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
        {
            let _ = inbound.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
            return;
        }
    }
    // No ready endpoint: the connection is closed, as with a Service without endpoints.
}
