//! A proxy never freezes on an old snapshot: an AuthorizationPolicy it cannot compile denies
//! the traffic it selects (a DENY-all stand-in of the same name) and is reported, while the
//! rest of the snapshot (new endpoints) still applies and later snapshots are ACKed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use skein_proxy::test_util::*;
use skein_proxy::{AccessLogSink, ProxyConfig, ProxyHandle, SourceConfig};
use skein_snapshot::build::SnapshotBuilder;
use skein_snapshot::stream::{ControlMessage, ProxyMessage, read_frame, write_frame};
use skein_snapshot::*;
use tokio::net::{TcpListener, TcpStream};

const NS: &str = "blog-system";
const NODE: &str = "was-0";
const STEP: Duration = Duration::from_secs(5);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .expect("finished within the step timeout")
}

/// The proxy's next answer to a snapshot (certificate requests skipped).
async fn answer(conn: &mut TcpStream) -> ProxyMessage {
    loop {
        let m = within(read_frame(conn)).await.expect("proxy message");
        if !matches!(m, ProxyMessage::CertificateRequest { .. }) {
            return m;
        }
    }
}

async fn push(conn: &mut TcpStream, snap: Snapshot) -> ProxyMessage {
    let msg = ControlMessage::Snapshot {
        snapshot: Box::new(snap),
    };
    within(write_frame(conn, &msg)).await.expect("write");
    answer(conn).await
}

fn ack(version: &str) -> ProxyMessage {
    ProxyMessage::Ack {
        version: version.into(),
    }
}

/// `was-service:8080` to `upstream`, and the inbound policies `authz`.
fn snapshot(version: &str, upstream: &Upstream, authz: Vec<AuthzPolicy>) -> Snapshot {
    let mut s = SnapshotBuilder::new(version, NS, "was")
        .http_service("was-service", 8080, &[&upstream.addr_str()])
        .build();
    s.inbound.authz = authz;
    s
}

/// An ALLOW policy whose ipBlocks value is not a CIDR: it does not compile.
fn bad_policy() -> AuthzPolicy {
    AuthzPolicy {
        name: "bad-cidr".into(),
        namespace: NS.into(),
        action: AuthzAction::Allow,
        rules: vec![AuthzRule {
            from: vec![AuthzSource {
                ip_blocks: vec!["10.0.0.300/8".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn start(cp: SocketAddr, app: SocketAddr) -> (ProxyHandle, PathBuf) {
    let log = temp_path("config-errors");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().unwrap())
        .with_access_log(AccessLogSink::File(log.clone()))
        .with_inbound("127.0.0.1:0".parse().unwrap(), app)
        .with_source(SourceConfig::Control {
            addr: cp,
            node: NODE.into(),
            namespace: NS.into(),
        });
    (within(skein_proxy::start(cfg)).await.unwrap(), log)
}

async fn admin(h: &ProxyHandle, path: &str) -> String {
    let a = h.addrs.admin.unwrap();
    within(get(a, &format!("http://{a}{path}"), &[])).await.body
}

async fn inbound_get(h: &ProxyHandle) -> Resp {
    let inbound = h.addrs.inbound.unwrap();
    within(
        H1Client::connect(inbound)
            .await
            .send("GET", "http://was-service:8080/api", &[]),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_policy_that_does_not_compile_denies_and_the_rest_of_the_snapshot_applies() {
    let app = Upstream::start("app").await;
    let old = Upstream::start("old").await;
    let new = Upstream::start("new").await;
    let cp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (h, log) = start(cp.local_addr().unwrap(), app.addr).await;
    let (mut conn, _) = within(cp.accept()).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let _hello = answer(&mut conn).await;

    assert_eq!(
        push(&mut conn, snapshot("v1", &old, vec![])).await,
        ack("v1")
    );
    assert_eq!(inbound_get(&h).await.status, 200);

    // A bad policy and a new endpoint: ACKed (not NACKed), the endpoint is used, and the
    // workload's traffic is denied by a stand-in named after the policy.
    assert_eq!(
        push(&mut conn, snapshot("v2", &new, vec![bad_policy()])).await,
        ack("v2")
    );
    let r = within(get(outbound(&h), "http://was-service:8080/api", &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream(), "new");
    let r = inbound_get(&h).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let lines = log_lines(&log, 3).await;
    let denied = lines.last().unwrap();
    assert!(
        denied.contains("ns[blog-system]-policy[bad-cidr]-rule[0]"),
        "{denied}"
    );
    let dump = admin(&h, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let errors = dump["config_errors"].to_string();
    assert!(
        errors.contains("bad-cidr") && errors.contains("10.0.0.300/8"),
        "{errors}"
    );
    let metrics = admin(&h, "/stats/prometheus").await;
    assert!(
        metrics.contains("skein_config_policy_errors_total 1"),
        "{metrics}"
    );

    // The next good snapshot is ACKed and the workload is reachable again.
    assert_eq!(
        push(&mut conn, snapshot("v3", &new, vec![])).await,
        ack("v3")
    );
    assert_eq!(inbound_get(&h).await.status, 200);
    let dump = admin(&h, "/config_dump").await;
    assert!(!dump.contains("config_errors"), "{dump}");
}
