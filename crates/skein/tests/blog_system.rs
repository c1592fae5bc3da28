//! End to end: `skein up examples/blog-system`, then everything a user does through the
//! ingress, then the failures a user can cause.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::time::Duration;

use support::*;

const EXAMPLE: &str = "examples/blog-system";

fn titles(base: &str) -> Vec<String> {
    let r = get(&format!("{base}/api/posts?size=100"));
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
        .as_array()
        .expect("a JSON array of posts")
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Creates, reads, updates and deletes a post through the ingress, and checks that every bad
/// input is refused with its status and changes nothing.
fn crud_through_ingress(base: &str) {
    let before = titles(base);
    assert!(
        before.iter().any(|t| t == "First Post"),
        "seeded post missing: {before:?}"
    );

    let created = send_json(
        "POST",
        &format!("{base}/api/posts"),
        r#"{"title":"Hello mesh","content":"Body text","author":"e2e"}"#,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let location = created
        .header("location")
        .expect("Location header")
        .to_string();
    let id = created.json()["id"].as_i64().expect("id");
    assert_eq!(location, format!("/api/posts/{id}"));
    assert!(
        created
            .header("x-was-pod")
            .is_some_and(|p| p.starts_with("was-")),
        "{created:?}"
    );
    assert!(
        created
            .header("x-web-pod")
            .is_some_and(|p| p.starts_with("web-")),
        "{created:?}"
    );

    let got = get(&format!("{base}{location}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["title"], "Hello mesh");
    assert_eq!(titles(base)[0], "Hello mesh", "newest first");

    let updated = send_json(
        "PUT",
        &format!("{base}{location}"),
        r#"{"title":"Hello again","content":"Edited","author":"e2e"}"#,
    );
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(
        get(&format!("{base}{location}")).json()["content"],
        "Edited"
    );

    // Bad input: each refused with its status, and nothing changes.
    let snapshot = titles(base);
    let posts = format!("{base}/api/posts");
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("POST", posts.clone(), b"{not json".to_vec(), 400),
        (
            "POST",
            posts.clone(),
            br#"{"content":"no title"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            posts.clone(),
            br#"{"title":"   ","content":"blank"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            posts.clone(),
            format!(r#"{{"title":"big","content":"{}"}}"#, "x".repeat(200_000)).into_bytes(),
            413,
        ),
        (
            "PUT",
            format!("{base}/api/posts/999999"),
            br#"{"title":"ghost"}"#.to_vec(),
            404,
        ),
        ("PUT", format!("{base}{location}"), b"[]".to_vec(), 400),
        (
            "DELETE",
            format!("{base}/api/posts/999999"),
            Vec::new(),
            404,
        ),
        ("GET", format!("{base}/api/posts/999999"), Vec::new(), 404),
        (
            "GET",
            format!("{base}/api/posts?size=100000"),
            Vec::new(),
            400,
        ),
    ];
    for (method, url, body, want) in cases {
        let r = request(
            method,
            &url,
            &[("Content-Type", "application/json")],
            &body,
            None,
        );
        assert_eq!(r.status, want, "{method} {url}: {r:?}");
        assert!(
            r.json()["error"].is_string(),
            "errors are JSON with an `error` field: {}",
            r.body
        );
        assert!(
            !r.body.to_lowercase().contains("sql"),
            "no internals in errors: {}",
            r.body
        );
    }
    assert_eq!(titles(base), snapshot, "bad input changed nothing");

    let deleted = request("DELETE", &format!("{base}{location}"), &[], b"", None);
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(get(&format!("{base}{location}")).status, 404);
    assert_eq!(titles(base), before);
}

#[test]
fn blog_system_runs_locally_with_one_command() {
    let skein = Skein::new();
    let out = skein.up(EXAMPLE, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let base = skein.http_base();
    assert!(
        stdout.contains(&base),
        "up prints the ingress URL: {stdout}"
    );

    let status = skein.status();
    let pods = status["pods"].as_array().expect("pods");
    for field in [
        "name",
        "namespace",
        "workload",
        "labels",
        "ip",
        "ports",
        "pid",
        "state",
        "restarts",
        "logs",
    ] {
        assert!(
            pods.iter().all(|p| !p[field].is_null()),
            "every pod has `{field}`: {status}"
        );
    }
    assert_eq!(skein.pods("was").len(), 2, "was has two replicas");
    // web is a Rollout: with no update running its two pods are the stable revision,
    // labelled with its template hash.
    let hashes: Vec<&str> = pods
        .iter()
        .filter(|p| p["labels"]["app"] == "web")
        .filter_map(|p| p["labels"]["rollouts-pod-template-hash"].as_str())
        .collect();
    assert_eq!(hashes.len(), 2, "{status}");
    assert!(
        !hashes[0].is_empty() && hashes.iter().all(|h| *h == hashes[0]),
        "{hashes:?}"
    );
    assert_eq!(skein.pods("web").len(), 2, "web has two replicas");
    assert!(
        pods.iter()
            .all(|p| p["ip"].as_str().is_some_and(|ip| ip.starts_with("127.")))
    );
    assert_eq!(status["database"]["mode"], "sqlite");

    // The site.
    for path in ["/", "/board", "/health", "/posts/1"] {
        let r = get(&format!("{base}{path}"));
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        assert!(
            r.header("x-web-pod").is_some(),
            "GET {path} is served by web: {r:?}"
        );
    }
    assert!(
        get(&format!("{base}/"))
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );

    crud_through_ingress(&base);

    // HTTPS with the certificate skein generated.
    let ca = skein.state.path().join("certs/ingress.crt");
    let r = request(
        "GET",
        &format!("{}/api/posts", skein.https_base()),
        &[],
        b"",
        Some(&ca),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("First Post"));

    // A was pod that dies is restarted, and the site keeps answering meanwhile.
    let victim = skein.pods("was")[0].clone();
    let (name, pid) = (
        victim["name"].as_str().unwrap().to_string(),
        victim["pid"].as_u64().unwrap(),
    );
    assert!(pid > 0 && pid_alive(pid));
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    for _ in 0..20 {
        assert_eq!(
            get(&format!("{base}/api/posts")).status,
            200,
            "the other was pod serves"
        );
    }
    let restarted = eventually(
        Duration::from_secs(30),
        "the killed was pod to be restarted and ready",
        || {
            skein.pods("was").into_iter().find(|p| {
                p["name"] == name.as_str()
                    && p["restarts"].as_u64() >= Some(1)
                    && p["ready"] == true
            })
        },
    );
    assert_ne!(restarted["pid"].as_u64(), Some(pid), "a new process");

    // `skein logs` shows what the workload printed.
    let logs = skein.run(&["logs", &name, "--tail", "50"]);
    assert!(logs.status.success());
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("exited"),
        "the restart is in the pod's log"
    );

    // Data survives down and up.
    let created = send_json(
        "POST",
        &format!("{base}/api/posts"),
        r#"{"title":"Kept","content":"across restarts","author":"e2e"}"#,
    );
    assert_eq!(created.status, 201);
    let pids: Vec<u64> = skein.status()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    skein.down();
    for pid in &pids {
        assert!(!pid_alive(*pid), "pod process {pid} stopped by down");
    }
    assert_eq!(skein.status()["supervisor"]["state"], "stopped");
    skein.up(EXAMPLE, &[]);
    let base = skein.http_base();
    assert!(
        titles(&base).contains(&"Kept".to_string()),
        "data kept across down/up"
    );
}

#[test]
fn bad_manifests_ports_and_programs_fail_clearly_and_leave_nothing_running() {
    let skein = Skein::new();
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    for entry in std::fs::read_dir(repo_root().join(EXAMPLE)).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let dir_s = dir.path().to_str().unwrap();

    // An invalid manifest: file:line and the field.
    copy(
        "99-bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: bad\n  namespace: blog-system\nspec:\n  hosts: [web-service]\n  http:\n  - route:\n    - destination:\n        host: web-service\n      wieght: 10\n",
    );
    let out = skein.run(&[
        "up",
        dir_s,
        "--detach",
        "--http-port",
        "0",
        "--https-port",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("99-bad.yaml:12"), "names file:line: {err}");
    assert!(err.contains("wieght"), "names the field: {err}");
    assert!(
        skein.run(&["status"]).status.code() != Some(0)
            || !skein.status()["pods"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["pid"].as_u64() > Some(0)))
    );
    std::fs::remove_file(dir.path().join("99-bad.yaml")).unwrap();

    // A missing program.
    let web = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains(r#"command: ["blog-web"]"#)
        })
        .expect("the web manifest");
    let original = std::fs::read_to_string(&web).unwrap();
    std::fs::write(
        &web,
        original.replace(r#"["blog-web"]"#, r#"["blog-web-missing"]"#),
    )
    .unwrap();
    let out = skein.run(&[
        "up",
        dir_s,
        "--detach",
        "--http-port",
        "0",
        "--https-port",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("blog-web-missing") && err.contains("not found"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:", web.file_name().unwrap().to_str().unwrap())),
        "names the file: {err}"
    );
    std::fs::write(&web, original).unwrap();

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = skein.run(&[
        "up",
        dir_s,
        "--detach",
        "--http-port",
        &port,
        "--https-port",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    // Nothing was left running by any of these.
    let pid_file = skein.state.path().join("supervisor.pid");
    assert!(!pid_file.exists(), "no supervisor left behind");
}
