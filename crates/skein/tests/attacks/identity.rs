//! A local process and the control plane: identity only for the pod it belongs to.
//!
//! The attacker is a process of the same user on the same host: it can reach istiod's control
//! port and read the mesh root (a public certificate), but it is not the web pod's sidecar
//! and does not hold the web pod's bootstrap token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// A 4-byte big-endian length, then the JSON (the control stream's frame).
fn frame(msg: &serde_json::Value) -> Vec<u8> {
    let body = serde_json::to_vec(msg).unwrap();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Every frame the peer sends until it closes the stream (or for at most 3 s).
fn frames(r: &mut impl Read) -> Vec<serde_json::Value> {
    let mut bytes = Vec::new();
    let _ = r.read_to_end(&mut bytes);
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let Some(body) = rest.get(4..4 + len) else {
            break;
        };
        match serde_json::from_slice(body) {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
        rest = &rest[4 + len..];
    }
    out
}

/// A certificate request: a refused stream never reaches the CA, so its content does not
/// matter (an accepted one would be answered with a certificate or a certificate error).
fn csr() -> serde_json::Value {
    let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
    serde_json::json!({"type": "certificate_request", "csr_pem": pem})
}

fn hello(pod: &str, ns: &str, token: Option<&str>) -> serde_json::Value {
    let mut h = serde_json::json!({"type": "hello", "node": pod, "namespace": ns});
    if let Some(t) = token {
        h["bootstrap_token"] = t.into();
    }
    h
}

/// A TLS session to the control port that verifies istiod against the mesh root (as a
/// well-informed attacker would), says `hello` then asks for a certificate; every frame back.
fn over_tls(addr: &str, root_pem: &[u8], hello: &serde_json::Value) -> Vec<serde_json::Value> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("istiod.istio-system.svc").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(&frame(hello)).unwrap();
    let _ = tls.write_all(&frame(&csr()));
    let _ = tls.flush();
    frames(&mut tls)
}

#[test]
fn a_local_process_naming_the_web_pod_gets_no_certificate() {
    let k = Skein::new();
    k.up("examples/blog-system", &[]);
    let status = k.status();
    let pods = status["pods"].as_array().unwrap();
    let istiod = pods.iter().find(|p| p["workload"] == "istiod").unwrap();
    let control = format!("{}:15010", istiod["ip"].as_str().unwrap());
    let web = &k.pods("web")[0];
    let (web_pod, ns) = (
        web["name"].as_str().unwrap(),
        web["namespace"].as_str().unwrap(),
    );
    let was_pod = k.pods("was")[0]["name"].as_str().unwrap().to_string();
    let root = std::fs::read(k.state.path().join("certs/ca/root-cert.pem")).unwrap();

    // Plaintext, as before: the control port now speaks TLS only; nothing comes back.
    let mut raw = TcpStream::connect(&control).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    raw.write_all(&frame(&hello(web_pod, ns, None))).unwrap();
    let _ = raw.write_all(&frame(&csr()));
    assert!(frames(&mut raw).is_empty(), "a plaintext peer got frames");

    // Over TLS with the real root: no token, a guessed one, another pod's (was's token file
    // is readable to this user, as the README says; it is still not web's).
    let was_token =
        std::fs::read_to_string(k.state.path().join("pods").join(&was_pod).join("token")).unwrap();
    for token in [None, Some("0".repeat(64)), Some(was_token)] {
        let got = over_tls(&control, &root, &hello(web_pod, ns, token.as_deref()));
        assert!(
            !got.iter()
                .any(|m| m["type"] == "certificate" || m["type"] == "snapshot"),
            "token {token:?}: {got:?}"
        );
        assert!(
            got.iter().any(|m| m["type"] == "error"),
            "token {token:?}: refused with a message: {got:?}"
        );
    }
    let control_log =
        String::from_utf8_lossy(&k.run(&["logs", istiod["name"].as_str().unwrap()]).stdout)
            .into_owned();
    assert!(control_log.contains("refusing a proxy"), "{control_log}");

    // Meanwhile every real sidecar and the gateway have their certificates, and the site works.
    for p in k.status()["pods"].as_array().unwrap() {
        let Some(admin) = p["proxy"]["admin"].as_str() else {
            continue;
        };
        let name = p["name"].as_str().unwrap();
        let dump = eventually(Duration::from_secs(30), name, || {
            let d = get(&format!("{admin}/config_dump")).json();
            (d["identity"]["loaded"] == true).then_some(d)
        });
        assert!(
            dump["identity"]["identity"]
                .as_str()
                .is_some_and(|i| i.starts_with("spiffe://cluster.local/ns/")),
            "{name}: {}",
            dump["identity"]
        );
        // The token is the pod's own, readable by its owner only.
        use std::os::unix::fs::PermissionsExt;
        let token = k.state.path().join("pods").join(name).join("token");
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", token.display());
    }
    let r = get(&format!("{}/", k.http_base()));
    assert_eq!(r.status, 200, "{}", r.body);
}
