//! Drives the `skein` binary the way a user does, and talks to what it runs over loopback with
//! a small blocking HTTP/1.1 client (plain, or TLS trusting the ingress's certificate).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod argo;
pub mod load;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn skein_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_skein"));
    // The workloads run from beside the skein binary; without them nothing can start.
    for app in ["blog-was", "blog-web", "echo"] {
        let p = bin.with_file_name(app);
        assert!(
            p.exists(),
            "{} is missing: build every binary first (`cargo build --workspace --bins`, as scripts/test does)",
            p.display()
        );
    }
    bin
}

/// One isolated local cluster: its own state directory, stopped on drop.
pub struct Skein {
    pub state: tempfile::TempDir,
    bin: PathBuf,
}

impl Skein {
    pub fn new() -> Skein {
        Skein {
            state: tempfile::tempdir().expect("tempdir"),
            bin: skein_bin(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--state-dir")
            .arg(self.state.path())
            .current_dir(repo_root());
        c.env_remove("SKEIN_STATE_DIR")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run skein")
    }

    /// `skein up DIR --detach` on free ports; panics with the output if it fails.
    pub fn up(&self, dir: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "up",
            dir,
            "--detach",
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--timeout",
            "180",
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "skein up failed:\nstdout:\n{}\nstderr:\n{}\nsupervisor log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.state.path().join("skein.log")).unwrap_or_default()
        );
        out
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "-o", "json"]);
        assert!(
            out.status.success(),
            "skein status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    pub fn http_base(&self) -> String {
        self.status()["ingress"]["http"]
            .as_str()
            .expect("ingress.http")
            .to_string()
    }

    pub fn https_base(&self) -> String {
        self.status()["ingress"]["https"]
            .as_str()
            .expect("ingress.https")
            .to_string()
    }

    pub fn pods(&self, workload: &str) -> Vec<serde_json::Value> {
        self.status()["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .filter(|p| p["workload"] == workload)
            .cloned()
            .collect()
    }

    /// `skein apply -f` of `yaml` (written to a file named `name`); panics if it is refused.
    pub fn apply_yaml(&self, name: &str, yaml: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(name);
        std::fs::write(&file, yaml).expect("write manifest");
        let out = self.run(&["apply", "-f", file.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "skein apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The sidecar (or gateway) log of a pod: its access log and its own messages.
    pub fn proxy_log(&self, pod: &str) -> String {
        String::from_utf8_lossy(&self.run(&["logs", pod, "-c", "proxy"]).stdout).into_owned()
    }

    pub fn down(&self) {
        let out = self.run(&["down"]);
        assert!(
            out.status.success(),
            "skein down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Skein {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--timeout", "20"]);
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request on a fresh connection. `url` is `http://` or `https://host:port/path`.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    ca: Option<&Path>,
) -> Reply {
    let (tls, rest) = match url.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("http://").expect("http(s) URL")),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let tcp = TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut raw = Vec::new();
    if tls {
        let ca = ca.expect("a CA certificate for https");
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).expect("read CA");
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.expect("PEM")).expect("add root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(req.as_bytes()).expect("write");
        s.write_all(body).expect("write body");
        let _ = s.read_to_end(&mut raw);
    } else {
        let mut s = tcp;
        s.write_all(req.as_bytes()).expect("write");
        s.write_all(body).expect("write body");
        let _ = s.read_to_end(&mut raw);
    }
    parse(&raw)
}

pub fn get(url: &str) -> Reply {
    request("GET", url, &[], b"", None)
}

pub fn send_json(method: &str, url: &str, body: &str) -> Reply {
    request(
        method,
        url,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
        None,
    )
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
}

/// A copy of a manifests directory's YAML files, which a test may edit.
pub fn manifests_copy(dir: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(repo_root().join(dir)).expect("manifests dir") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            std::fs::copy(&p, copy.path().join(p.file_name().expect("name"))).expect("copy");
        }
    }
    copy
}

/// `git -C repo ARGS...` with a committer set, which must succeed; its trimmed stdout.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git is installed (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
