//! The control-plane config source against an in-test control plane speaking
//! `skein_snapshot::stream` over real TCP on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use skein_proxy::test_util::*;
use skein_proxy::{ProxyConfig, ProxyHandle, SourceConfig};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::stream::{ControlMessage, ProxyMessage, read_frame, write_frame};
use skein_snapshot::{Snapshot, outbound_cluster_name};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const NS: &str = "blog-system";
const NODE: &str = "web-0";
const URL: &str = "http://was-service:8080/api";
/// Bound on every single wait, so a broken proxy fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(5);

/// The control plane's side of one accepted stream.
struct Stream {
    conn: TcpStream,
}

impl Stream {
    /// The proxy's next message, skipping certificate requests: this control plane does not
    /// sign certificates (tests/mtls.rs has one that does).
    async fn recv(&mut self) -> ProxyMessage {
        loop {
            let m = tokio::time::timeout(STEP, read_frame(&mut self.conn))
                .await
                .expect("proxy message within the step timeout")
                .expect("valid proxy message");
            if !matches!(m, ProxyMessage::CertificateRequest { .. }) {
                return m;
            }
        }
    }

    /// Pushes a snapshot and returns the proxy's ACK or NACK.
    async fn push(&mut self, snap: Snapshot) -> ProxyMessage {
        self.send(&ControlMessage::Snapshot {
            snapshot: Box::new(snap),
        })
        .await;
        self.recv().await
    }

    async fn send(&mut self, msg: &ControlMessage) {
        tokio::time::timeout(STEP, write_frame(&mut self.conn, msg))
            .await
            .expect("write within the step timeout")
            .expect("write");
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, self.conn.write_all(bytes))
            .await
            .expect("write within the step timeout")
            .expect("write");
    }
}

/// Accepts the proxy's next connection and reads its Hello.
async fn accept(cp: &TcpListener) -> (Stream, ProxyMessage) {
    let (conn, _) = tokio::time::timeout(STEP, cp.accept())
        .await
        .expect("proxy connects within the step timeout")
        .expect("accept");
    // No Nagle: a small write held back for a delayed ACK is real time that paused time does
    // not see, and the clock would jump to the step timeout meanwhile.
    conn.set_nodelay(true).expect("nodelay");
    let mut s = Stream { conn };
    let hello = s.recv().await;
    (s, hello)
}

fn hello(current_version: Option<&str>) -> ProxyMessage {
    ProxyMessage::Hello {
        node: NODE.into(),
        namespace: NS.into(),
        current_version: current_version.map(str::to_string),
        bootstrap_token: None,
    }
}

fn ack(version: &str) -> ProxyMessage {
    ProxyMessage::Ack {
        version: version.into(),
    }
}

/// `was-service:8080` routed to one upstream.
fn snapshot(version: &str, upstream: &Upstream) -> Snapshot {
    SnapshotBuilder::new(version, NS, "web")
        .http_service("was-service", 8080, &[&upstream.addr_str()])
        .build()
}

fn was_cluster() -> String {
    outbound_cluster_name(8080, None, &fqdn("was-service", NS))
}

/// A snapshot the proxy must refuse: the service's cluster is defined twice.
fn duplicate_cluster_snapshot(version: &str, a: &Upstream, b: &Upstream) -> Snapshot {
    SnapshotBuilder::new(version, NS, "web")
        .http_service("was-service", 8080, &[&b.addr_str()])
        .cluster(cluster(
            &fqdn("was-service", NS),
            8080,
            None,
            &[&a.addr_str()],
        ))
        .build()
}

async fn control_plane() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind cp");
    let addr = l.local_addr().expect("cp addr");
    (l, addr)
}

async fn start_proxy(cp: SocketAddr) -> ProxyHandle {
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr")).with_source(
        SourceConfig::Control {
            addr: cp,
            node: NODE.into(),
            namespace: NS.into(),
        },
    );
    tokio::time::timeout(STEP, skein_proxy::start(cfg))
        .await
        .expect("start within the step timeout")
        .expect("proxy start")
}

async fn request(h: &ProxyHandle) -> Resp {
    tokio::time::timeout(STEP, get(outbound(h), URL, &[]))
        .await
        .expect("response within the step timeout")
}

async fn admin_json(h: &ProxyHandle, path: &str) -> serde_json::Value {
    let admin = h.addrs.admin.expect("admin bound");
    let r = tokio::time::timeout(STEP, get(admin, &format!("http://{admin}{path}"), &[]))
        .await
        .expect("admin answers within the step timeout");
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).expect("admin JSON")
}

/// Polls `/control` until `ok` holds (bounded).
async fn wait_control(h: &ProxyHandle, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + STEP;
    loop {
        let v = admin_json(h, "/control").await;
        if ok(&v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn hello_snapshot_ack_then_requests_use_it() {
    let up = Upstream::start("a").await;
    let (cp, cp_addr) = control_plane().await;
    let h = start_proxy(cp_addr).await;
    let (mut s, first) = accept(&cp).await;
    assert_eq!(first, hello(None));
    assert_eq!(s.push(snapshot("v1", &up)).await, ack("v1"));
    assert_eq!(h.version(), "v1");
    let r = request(&h).await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "a"), "{}", r.body);
}

#[tokio::test(start_paused = true)]
async fn invalid_snapshot_is_nacked_and_the_previous_config_stays() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (cp, cp_addr) = control_plane().await;
    let h = start_proxy(cp_addr).await;
    let (mut s, _) = accept(&cp).await;
    assert_eq!(s.push(snapshot("v1", &a)).await, ack("v1"));

    let reply = s.push(duplicate_cluster_snapshot("v2", &a, &b)).await;
    let ProxyMessage::Nack { version, error } = reply else {
        panic!("expected a NACK, got {reply:?}");
    };
    assert_eq!(version, "v2");
    assert!(error.contains(&was_cluster()), "{error}");
    assert_eq!(h.version(), "v1");
    let r = request(&h).await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "a"), "{}", r.body);

    // The stream stays usable after a NACK.
    assert_eq!(s.push(snapshot("v3", &b)).await, ack("v3"));
    assert_eq!(request(&h).await.upstream(), "b");
}

#[tokio::test(start_paused = true)]
async fn a_cluster_update_applies_on_its_base_version_whole_or_not_at_all() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (cp, cp_addr) = control_plane().await;
    let h = start_proxy(cp_addr).await;
    let (mut s, _) = accept(&cp).await;
    assert_eq!(s.push(snapshot("v1", &a)).await, ack("v1"));
    let to_b = || cluster(&fqdn("was-service", NS), 8080, None, &[&b.addr_str()]);
    let update = |version: &str, base: &str, clusters| ControlMessage::Clusters {
        version: version.into(),
        base_version: base.into(),
        clusters,
    };

    // On another base than the version in force: refused, the config stays.
    s.send(&update("v2", "v0", vec![to_b()])).await;
    let reply = s.recv().await;
    assert!(
        matches!(&reply, ProxyMessage::Nack { version, error } if version == "v2" && error.contains("\"v1\" is in force")),
        "{reply:?}"
    );
    // Naming a cluster the snapshot does not have: refused whole, even the known one.
    let unknown = cluster(&fqdn("nope", NS), 80, None, &[&b.addr_str()]);
    s.send(&update("v2", "v1", vec![to_b(), unknown])).await;
    let reply = s.recv().await;
    assert!(
        matches!(&reply, ProxyMessage::Nack { version, error } if version == "v2" && error.contains("nope")),
        "{reply:?}"
    );
    assert_eq!(h.version(), "v1");
    assert_eq!(request(&h).await.upstream(), "a");

    // On the version in force: applied and acked; the rest of the snapshot is unchanged.
    s.send(&update("v2", "v1", vec![to_b()])).await;
    assert_eq!(s.recv().await, ack("v2"));
    assert_eq!(h.version(), "v2");
    assert_eq!(request(&h).await.upstream(), "b");
    let dump = admin_json(&h, "/config_dump").await;
    assert!(dump.to_string().contains(&b.addr_str()), "{dump}");
}

#[tokio::test(start_paused = true)]
async fn bad_frames_are_nacked_ignored_or_end_the_stream_without_harm() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (cp, cp_addr) = control_plane().await;
    let h = start_proxy(cp_addr).await;
    let (mut s, _) = accept(&cp).await;
    assert_eq!(s.push(snapshot("v1", &a)).await, ack("v1"));

    // A snapshot that does not parse is refused by its version.
    let body = br#"{"type":"snapshot","snapshot":{"version":"v2","clusters":"nope"}}"#;
    s.send_raw(&(body.len() as u32).to_be_bytes()).await;
    s.send_raw(body).await;
    let reply = s.recv().await;
    assert!(
        matches!(&reply, ProxyMessage::Nack { version, .. } if version == "v2"),
        "{reply:?}"
    );

    // A message type the proxy does not know is skipped; the next snapshot still works.
    let body = br#"{"type":"ping"}"#;
    s.send_raw(&(body.len() as u32).to_be_bytes()).await;
    s.send_raw(body).await;
    assert_eq!(s.push(snapshot("v3", &b)).await, ack("v3"));

    // An absurd frame length cannot be resynchronised: the proxy hangs up and comes back.
    s.send_raw(&u32::MAX.to_be_bytes()).await;
    let (mut s2, again) = accept(&cp).await;
    assert_eq!(again, hello(Some("v3")));
    assert_eq!(request(&h).await.upstream(), "b");
    assert_eq!(s2.push(snapshot("v4", &a)).await, ack("v4"));

    // The control plane refusing the proxy: it reconnects later.
    s2.send(&ControlMessage::Error {
        message: "unknown node".into(),
    })
    .await;
    drop(s2);
    let (_s3, again) = accept(&cp).await;
    assert_eq!(again, hello(Some("v4")));
    let status = h.control_status();
    assert_eq!(status.reconnects, 2, "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn control_plane_restart_keeps_config_then_reconnects_with_current_version() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (cp, cp_addr) = control_plane().await;
    let h = start_proxy(cp_addr).await;
    let (mut s, _) = accept(&cp).await;
    assert_eq!(s.push(snapshot("v1", &a)).await, ack("v1"));

    // The control plane goes away: requests keep using the last config.
    drop(s);
    drop(cp);
    wait_control(&h, "disconnect", |v| v["connected"] == false).await;
    for _ in 0..3 {
        let r = request(&h).await;
        assert_eq!((r.status, r.upstream().as_str()), (200, "a"), "{}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // It comes back on the same port: the proxy reconnects and says what it runs.
    let cp = TcpListener::bind(cp_addr).await.expect("rebind cp");
    let t0 = Instant::now();
    let (mut s, again) = accept(&cp).await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(again, hello(Some("v1")));
    assert_eq!(s.push(snapshot("v2", &b)).await, ack("v2"));
    let r = request(&h).await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "b"), "{}", r.body);
    let status = h.control_status();
    assert!(status.connected, "{status:?}");
    assert_eq!(status.reconnects, 1, "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn admin_control_endpoint_reflects_connection_ack_and_nack() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (cp, cp_addr) = control_plane().await;
    let h = start_proxy(cp_addr).await;

    let (mut s, _) = accept(&cp).await;
    wait_control(&h, "connected", |v| v["connected"] == true).await;
    let v = admin_json(&h, "/control").await;
    assert_eq!(v["address"], cp_addr.to_string());
    assert_eq!(v["node"], NODE);
    assert_eq!(v["namespace"], NS);
    assert!(v["last_ack_version"].is_null(), "{v}");
    assert!(v["last_nack"].is_null(), "{v}");

    assert_eq!(s.push(snapshot("v1", &a)).await, ack("v1"));
    let v = admin_json(&h, "/control").await;
    assert_eq!(v["last_ack_version"], "v1", "{v}");

    assert!(matches!(
        s.push(duplicate_cluster_snapshot("v2", &a, &b)).await,
        ProxyMessage::Nack { .. }
    ));
    let v = admin_json(&h, "/control").await;
    assert_eq!(v["connected"], true, "{v}");
    assert_eq!(v["last_ack_version"], "v1", "{v}");
    assert_eq!(v["last_nack"]["version"], "v2", "{v}");
    let err = v["last_nack"]["error"].as_str().unwrap_or_default();
    assert!(err.contains(&was_cluster()), "{v}");
    assert_eq!(v["reconnects"], 0, "{v}");

    // /config_dump: the snapshot where it always was, the control state next to it.
    let dump = admin_json(&h, "/config_dump").await;
    assert_eq!(dump["version"], "v1");
    assert_eq!(dump["snapshot"]["version"], "v1");
    assert_eq!(dump["loaded"], true);
    assert_eq!(dump["control"]["last_nack"]["version"], "v2", "{dump}");

    drop(s);
    drop(cp);
    wait_control(&h, "disconnect", |v| {
        v["connected"] == false && v["last_error"].is_string()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn unreachable_control_plane_leaves_the_proxy_up_and_not_ready() {
    // Take a free port and close it: nothing listens there.
    let (cp, cp_addr) = control_plane().await;
    drop(cp);
    let h = start_proxy(cp_addr).await;
    wait_control(&h, "a connect error", |v| {
        v["connected"] == false && v["last_error"].is_string()
    })
    .await;
    let admin = h.addrs.admin.expect("admin");
    let r = get(admin, &format!("http://{admin}/ready"), &[]).await;
    assert_eq!(r.status, 503);

    // The control plane appears: the proxy finds it without a restart.
    let cp = TcpListener::bind(cp_addr).await.expect("bind cp");
    let up = Upstream::start("a").await;
    let (mut s, first) = accept(&cp).await;
    assert_eq!(first, hello(None));
    assert_eq!(s.push(snapshot("v1", &up)).await, ack("v1"));
    // Config alone is not enough: a proxy fed by a control plane also waits for its workload
    // certificate (this fake control plane never signs one).
    let r = get(admin, &format!("http://{admin}/ready"), &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("certificate"), "{}", r.body);
    let dump = get(admin, &format!("http://{admin}/config_dump"), &[]).await;
    assert_eq!(dump.json()["loaded"], true);
}
