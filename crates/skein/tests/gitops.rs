//! GitOps with Argo CD's Application under `skein up`: the config in force is a commit of a
//! local repository. A commit changing a weight takes effect within 5 s; a `skein apply` that
//! differs from git is reverted by selfHeal after 5 s, with a warning naming the file and the
//! commit, an event in `skein describe` and a line in the control plane's log; without
//! selfHeal it stays as drift (OutOfSync, `skein diff` exits 1); a commit removing the
//! VirtualService under prune removes it and the gateway's route falls back to the Ingress.
//!
//! Traffic is measured as users see it: requests through the ingress gateway, counted by the
//! `x-echo-version` header of the echo pod that answered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const FIXTURE: &str = "crates/skein/tests/fixtures/gitops";

/// A repository holding the fixture, committed.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["echo.yaml", "vs.yaml"] {
        std::fs::copy(repo_root().join(FIXTURE).join(f), dir.path().join(f)).expect("copy");
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-qm", "echo: all to v1"]);
    dir
}

/// vs.yaml with these weights for v1 and v2.
fn vs(v1: u32, v2: u32) -> String {
    std::fs::read_to_string(repo_root().join(FIXTURE).join("vs.yaml"))
        .unwrap()
        .replace("weight: 100", "weight: V1")
        .replace("weight: 0", "weight: V2")
        .replace("V1", &v1.to_string())
        .replace("V2", &v2.to_string())
}

fn commit_weights(repo: &Path, v1: u32, v2: u32) -> String {
    std::fs::write(repo.join("vs.yaml"), vs(v1, v2)).unwrap();
    git(repo, &["commit", "-qam", &format!("echo: {v1}/{v2}")]);
    git(repo, &["rev-parse", "HEAD"])
}

/// The versions that answered `n` requests through the ingress: (v1, v2).
fn shares(base: &str, n: usize) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..n {
        let r = get(&format!("{base}/"));
        match r.header("x-echo-version") {
            Some("v1") => v1 += 1,
            Some("v2") => v2 += 1,
            other => panic!("unexpected reply {} {other:?}: {}", r.status, r.body),
        }
    }
    (v1, v2)
}

/// Waits until `n` requests in a row all reach `version`; returns how long that took.
fn until_all(base: &str, version: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (v1, v2) = shares(base, 10);
        let all = if version == "v1" { v1 == 10 } else { v2 == 10 };
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "traffic did not move to {version} within {within:?} (last 10: v1 {v1}, v2 {v2})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn apply(s: &Skein, yaml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vs-manual.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = s.run(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "skein apply: {}", stderr(&out));
    out
}

fn application(s: &Skein) -> serde_json::Value {
    s.status()["application"].clone()
}

/// selfHeal and prune on, from an Application file whose repoURL is the repository's path.
#[test]
fn commits_sync_within_seconds_and_self_heal_reverts_an_apply_loudly() {
    let repo = repo();
    let app_dir = tempfile::tempdir().unwrap();
    let app = app_dir.path().join("application.yaml");
    std::fs::write(
        &app,
        format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: echo\n  namespace: argocd\nspec:\n  project: default\n  source:\n    repoURL: file://{}\n    targetRevision: main\n    path: .\n  destination:\n    server: https://kubernetes.default.svc\n    namespace: echo\n  syncPolicy:\n    automated: {{prune: true, selfHeal: true}}\n",
            repo.path().display()
        ),
    )
    .unwrap();
    let s = Skein::new();
    s.up(app.to_str().unwrap(), &[]);
    let base = s.http_base();
    assert_eq!(shares(&base, 10), (10, 0), "the first commit: all to v1");
    let a = application(&s);
    assert_eq!(a["sync"], "Synced", "{a}");
    assert_eq!(a["revision"]["subject"], "echo: all to v1", "{a}");

    // (a) A commit moving the weight is in force within 5 s (poll 1 s, then the push).
    let sha = commit_weights(repo.path(), 0, 100);
    let took = until_all(&base, "v2", Duration::from_secs(5));
    eprintln!("commit to traffic on v2: {took:?}");
    let a = eventually(
        Duration::from_secs(5),
        "the status names the commit",
        || {
            let a = application(&s);
            (a["revision"]["sha"] == sha.as_str()).then_some(a)
        },
    );
    assert_eq!(a["sync"], "Synced", "{a}");
    assert_eq!(a["health"], "Healthy", "{a}");

    // (b) An apply that differs from git: warned about, in force for a while, reverted.
    let short = &sha[..7];
    let out = apply(&s, &vs(100, 0));
    let warning = stderr(&out);
    assert!(
        warning.contains("Warning: Application \"echo\" has automated selfHeal")
            && warning.contains("VirtualService echo/echo differs from git (vs.yaml:1 at commit ")
            && warning.contains(short)
            && warning.contains("will be reverted in 5s; change that file and commit instead"),
        "{warning}"
    );
    let applied_at = Instant::now();
    until_all(&base, "v1", Duration::from_secs(3));
    let a = eventually(Duration::from_secs(3), "the drift in the status", || {
        let a = application(&s);
        (a["sync"] == "OutOfSync").then_some(a)
    });
    let drift = &a["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "VirtualService")
        .unwrap();
    assert_eq!(drift["status"], "OutOfSync", "{a}");
    assert!(drift["selfHealAt"].is_string(), "{a}");
    until_all(&base, "v2", Duration::from_secs(9));
    let reverted = applied_at.elapsed();
    eprintln!("apply to revert: {reverted:?}");
    assert!(
        reverted >= Duration::from_secs(4),
        "reverted after the 5 s self-heal timeout, not at once: {reverted:?}"
    );
    let described = stdout(&s.run(&["describe", "vs", "echo", "-n", "echo"]));
    assert!(
        described.contains("SelfHeal")
            && described.contains(
                "self-heal reverted VirtualService echo/echo to git (vs.yaml:1 at commit "
            )
            && described.contains(short),
        "{described}"
    );
    let app_described = stdout(&s.run(&["describe", "app", "echo", "-n", "argocd"]));
    assert!(app_described.contains("SelfHeal"), "{app_described}");
    let log = stdout(&s.run(&["logs", "istiod"]));
    assert!(
        log.lines().any(
            |l| l.contains("self-heal reverted VirtualService echo/echo") && l.contains(short)
        ),
        "{log}"
    );
    eventually(Duration::from_secs(3), "Synced again", || {
        (application(&s)["sync"] == "Synced").then_some(())
    });

    // (d) A commit removing the VirtualService prunes it: the gateway's route is the
    // Ingress again, both versions answer.
    git(repo.path(), &["rm", "-q", "vs.yaml"]);
    git(repo.path(), &["commit", "-qm", "echo: no VirtualService"]);
    eventually(Duration::from_secs(5), "the VirtualService pruned", || {
        let out = s.run(&["get", "vs", "-n", "echo", "-o", "name"]);
        stdout(&out).trim().is_empty().then_some(())
    });
    eventually(Duration::from_secs(5), "both versions answer", || {
        let (v1, v2) = shares(&base, 20);
        (v1 > 0 && v2 > 0).then_some(())
    });
    let described = stdout(&s.run(&["describe", "app", "echo", "-n", "argocd"]));
    assert!(described.contains("1 pruned"), "{described}");
}

/// A working tree's root, selfHeal off (the default skein gives it): the apply stays as
/// drift; `skein get applications` says OutOfSync; `skein diff -f` of git's file exits 1; the
/// next commit changing the object brings git's version back.
#[test]
fn without_self_heal_an_apply_stays_as_drift_until_a_commit() {
    let repo = repo();
    let s = Skein::new();
    s.up(repo.path().to_str().unwrap(), &[]);
    let base = s.http_base();
    assert_eq!(shares(&base, 10), (10, 0));
    let out = apply(&s, &vs(0, 100));
    let note = stderr(&out);
    assert!(
        !note.contains("selfHeal") && !note.contains("Warning"),
        "no self-heal, no warning: {note}"
    );
    assert!(
        note.contains(
            "\" syncs git: VirtualService echo/echo differs from git (vs.yaml:1 at commit "
        ) && note.contains("it stays as drift (OutOfSync) until a commit changes that object"),
        "{note}"
    );
    until_all(&base, "v2", Duration::from_secs(3));
    eventually(Duration::from_secs(3), "OutOfSync", || {
        let out = s.run(&["get", "applications", "-A"]);
        let text = stdout(&out);
        text.lines()
            .any(|l| l.contains("OutOfSync") && l.contains("Healthy"))
            .then_some(())
    });
    let wide = stdout(&s.run(&["get", "app", "-A", "-o", "wide"]));
    assert!(wide.contains("VirtualService/echo/echo"), "{wide}");
    let diff = s.run(&["diff", "-f", repo.path().join("vs.yaml").to_str().unwrap()]);
    assert_eq!(diff.status.code(), Some(1), "{}", stdout(&diff));
    assert!(
        stdout(&diff).contains("-      weight: 100"),
        "{}",
        stdout(&diff)
    );
    // Without -f: the OutOfSync objects, live against the commit's.
    let diff = s.run(&["diff"]);
    assert_eq!(diff.status.code(), Some(1), "{}", stderr(&diff));
    assert!(
        stdout(&diff).contains("live/VirtualService.echo.echo")
            && stdout(&diff).contains("+      weight: 100"),
        "{}",
        stdout(&diff)
    );
    let status = stdout(&s.run(&["status"]));
    assert!(
        status.contains("sync: OutOfSync")
            && status.contains("OutOfSync: VirtualService echo/echo"),
        "{status}"
    );

    // The dashboard's Istio config view says it too.
    let dashboard = s.status()["dashboard"]["url"]
        .as_str()
        .expect("the dashboard runs with the mesh")
        .trim_end_matches('/')
        .to_string();
    let cfg = get(&format!("{dashboard}/api/istio/config")).json();
    assert_eq!(
        cfg["application"]["sync"], "OutOfSync",
        "{}",
        cfg["application"]
    );
    let vs_obj = cfg["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "VirtualService" && o["name"] == "echo")
        .expect("the VirtualService in the dashboard");
    assert_eq!(vs_obj["sync"]["status"], "OutOfSync", "{vs_obj}");

    // Deleting an object of the commit names git's file, not the exported copy.
    let del = s.run(&["delete", "dr", "echo", "-n", "echo"]);
    assert!(!del.status.success());
    assert!(
        stderr(&del).contains("is in git (echo.yaml:") && !stderr(&del).contains("gitops/current"),
        "{}",
        stderr(&del)
    );

    // Past the self-heal timeout it is still there.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(shares(&base, 10), (0, 10), "the apply stays");
    assert_eq!(application(&s)["sync"], "OutOfSync");

    // An uncommitted edit is not in force, and is hinted at.
    std::fs::write(repo.path().join("vs.yaml"), vs(50, 50)).unwrap();
    eventually(Duration::from_secs(8), "the uncommitted hint", || {
        let status = stdout(&s.run(&["status"]));
        status.contains("uncommitted").then_some(())
    });
    assert_eq!(shares(&base, 10), (0, 10), "not committed, not in force");

    // A commit changing the object: git's version (50/50) is in force again.
    commit_weights(repo.path(), 50, 50);
    eventually(Duration::from_secs(5), "git's 50/50 split", || {
        let (v1, v2) = shares(&base, 20);
        (v1 > 0 && v2 > 0).then_some(())
    });
    eventually(Duration::from_secs(3), "Synced", || {
        (application(&s)["sync"] == "Synced").then_some(())
    });
}

/// A remote repoURL is refused before anything starts: skein never fetches over the network.
#[test]
fn a_remote_repository_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("application.yaml");
    std::fs::write(
        &app,
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: blog, namespace: argocd}\nspec:\n  source: {repoURL: 'https://github.com/example/blog.git', path: k8s}\n  destination: {namespace: blog}\n",
    )
    .unwrap();
    let s = Skein::new();
    let out = s.run(&[
        "up",
        app.to_str().unwrap(),
        "--detach",
        "--http-port",
        "0",
        "--https-port",
        "0",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("\"https://github.com/example/blog.git\" is a remote repository; skein reads local repositories only (no network fetch)"),
        "{err}"
    );
    assert!(
        !s.state.path().join("status.json").exists(),
        "nothing started"
    );
}
