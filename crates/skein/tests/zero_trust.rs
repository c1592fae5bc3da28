//! End to end: the seed's zero-trust setup on `skein up`. mTLS between sidecars with SPIFFE
//! identities, was-authz and web-authz enforced as Istio enforces them, PERMISSIVE and STRICT
//! PeerAuthentication, and `skein exec` as the seed's `kubectl run test-authz`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const EXAMPLE: &str = "examples/blog-system";

/// `curl` must be there: the test command installs it.
fn curl() -> Command {
    let c = Command::new("curl");
    assert!(
        Command::new("curl")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "curl is missing: ./scripts/test installs it"
    );
    c
}

/// Plain HTTP straight to a pod address, from outside the mesh: (status, body), or None when
/// the connection was refused or closed without an answer.
fn plain_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let out = curl()
        .args(["-s", "-m", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (code != 0).then(|| (code, body.to_string()))
}

fn exec(skein: &Skein, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    let out = skein.run(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn metrics(skein: &Skein, pod: &serde_json::Value) -> String {
    let admin = pod["proxy"]["admin"].as_str().expect("admin");
    let out = curl()
        .args(["-s", "-m", "5"])
        .arg(format!("{admin}/stats/prometheus"))
        .output()
        .expect("curl");
    let _ = skein;
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_seed_zero_trust_setup_holds() {
    let skein = Skein::new();
    let dir = manifests_copy(EXAMPLE);
    skein.up(dir.path().to_str().expect("path"), &[]);
    let base = skein.http_base();

    // Through the gateway: 200.
    let r = get(&format!("{base}/api/posts"));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("First Post"));

    // The seed's `kubectl run test-authz -n default ... curl was-service`: 403, as in Istio.
    let (ok, out, err) = exec(
        &skein,
        &[
            "-n",
            "default",
            "--",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "http://was-service.blog-system.svc.cluster.local:8080/api/posts",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.ends_with("\n403"), "{out}");
    assert!(out.starts_with("RBAC: access denied"), "{out}");

    // The same from blog-system's default ServiceAccount (web's identity) is allowed.
    let (ok, out, err) = exec(
        &skein,
        &[
            "-n",
            "blog-system",
            "--",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://was-service:8080/api/posts",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "200");

    // Plaintext from outside the mesh straight to a was pod: 403 under PERMISSIVE (no
    // principal, so was-authz cannot match).
    let was = skein.pods("was")[0].clone();
    let was_addr = format!("{}:8080", was["ip"].as_str().expect("ip"));
    let (code, body) = plain_get(&was_addr, "/api/posts").expect("PERMISSIVE answers");
    assert_eq!(code, 403);
    assert_eq!(body, "RBAC: access denied");
    // Access-log lines are written in batches (within 100 ms).
    eventually(
        Duration::from_secs(5),
        "the was proxy logs the denial",
        || {
            String::from_utf8_lossy(
                &skein
                    .run(&["logs", was["name"].as_str().expect("name"), "-c", "proxy"])
                    .stdout,
            )
            .contains("rbac_access_denied_matched_policy[none]")
            .then_some(())
        },
    );

    // A capture of the web -> was hop shows TLS and no plaintext HTTP.
    let pcap = tempfile::NamedTempFile::new().expect("pcap file");
    let filter = format!(
        "tcp port 8080 and host {} and not host 127.0.0.1",
        was["ip"].as_str().expect("ip")
    );
    let mut dump = Command::new("tcpdump")
        .args(["-i", "lo", "-U", "-s", "0", "-w"])
        .arg(pcap.path())
        .arg(&filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump is missing: ./scripts/test installs it");
    std::thread::sleep(Duration::from_millis(800));
    for _ in 0..20 {
        assert_eq!(get(&format!("{base}/api/posts")).status, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").arg(dump.id().to_string()).status();
    let _ = dump.wait();
    let text = Command::new("tcpdump")
        .args(["-r"])
        .arg(pcap.path())
        .args(["-A", "-nn"])
        .output()
        .expect("tcpdump -r");
    let text = String::from_utf8_lossy(&text.stdout);
    let packets = text.lines().filter(|l| l.contains(" IP ")).count();
    assert!(
        packets > 10,
        "the capture saw the hop ({packets} packets):\n{text}"
    );
    assert!(
        !text.contains("GET /api/posts") && !text.contains("HTTP/1.1"),
        "plaintext HTTP on the web -> was hop:\n{text}"
    );

    // The was sidecar saw web's calls over mTLS with web's SPIFFE identity.
    let m = metrics(&skein, &was);
    assert!(
        m.lines().any(|l| l.starts_with("istio_requests_total")
            && l.contains("reporter=\"destination\"")
            && l.contains("source_principal=\"spiffe://cluster.local/ns/blog-system/sa/default\"")
            && l.contains("connection_security_policy=\"mutual_tls\"")
            && l.contains("response_code=\"200\"")),
        "was's inbound metrics:\n{m}"
    );

    // STRICT in the namespace: plaintext to a was pod is refused; the site still answers
    // through the in-mesh gateway (the seed's 502 pitfall cannot happen).
    let path = dir.path().join("60-istio-security.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replacen("mode: PERMISSIVE", "mode: STRICT", 1)).expect("write");
    eventually(
        Duration::from_secs(5),
        "plaintext refused under STRICT",
        || plain_get(&was_addr, "/api/posts").is_none().then_some(()),
    );
    for _ in 0..10 {
        let r = get(&format!("{base}/api/posts"));
        assert_eq!(r.status, 200, "{r:?}");
    }
    let web = skein.pods("web")[0].clone();
    let web_addr = format!("{}:80", web["ip"].as_str().expect("ip"));
    assert!(
        plain_get(&web_addr, "/health").is_none(),
        "web is STRICT too"
    );
}
