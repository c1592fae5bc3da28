//! The runtime protects its state: owner-only state directory and secrets, logs bounded by
//! rotation, `stop` that signals only the processes it started, a status that says when
//! nothing runs, and names that cannot lead a path out of the state directory. These run the
//! real supervisor on small manifests (programs from `PATH`: `sh`, `sleep`, `seq`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skein_runtime::{
    ContainerStatus, LogRotation, PodStatus, StateDir, Status, SupervisorStatus, UpOptions,
};

const SECRET: &str = "s3cr3t-hunter2-value";

fn options(manifests: &Path, state: &Path, log_rotation: LogRotation) -> UpOptions {
    UpOptions {
        gitops: None,
        manifests: manifests.to_path_buf(),
        state: StateDir::resolve(Some(state)).unwrap(),
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        https: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        database: None,
        program_dirs: Vec::new(),
        skein: None,
        cert_ttl: None,
        plugin_ca: None,
        log_rotation,
        scrape_interval: skein_runtime::DEFAULT_SCRAPE_INTERVAL,
    }
}

/// A Deployment `name` whose one container runs `sh -c SCRIPT`, with `PASSWORD` from a Secret
/// and passed as `$1` (so it is in the container's command line too).
fn manifests(dir: &Path, name: &str, script: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let yaml = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: app-secret
  namespace: default
type: Opaque
stringData:
  password: {SECRET}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: app
  template:
    metadata:
      labels:
        app: app
    spec:
      containers:
        - name: app
          image: busybox
          command: ["sh", "-c", {script:?}, "sh", "$(PASSWORD)"]
          env:
            - name: PASSWORD
              valueFrom:
                secretKeyRef:
                  name: app-secret
                  key: password
"#
    );
    std::fs::write(dir.join("app.yaml"), yaml).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() && !p.is_symlink() {
            walk(&p, out);
        }
    }
}

async fn until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_directory_keys_and_secrets_are_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let state_path = tmp.path().join("state");
    // An existing state directory open to everyone is tightened (and said so).
    std::fs::create_dir(&state_path).unwrap();
    std::fs::set_permissions(&state_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = StateDir::resolve(Some(&state_path)).unwrap();
    assert_eq!(state.create().unwrap(), vec![(state_path.clone(), 0o755)]);
    std::fs::set_permissions(&state_path, std::fs::Permissions::from_mode(0o755)).unwrap();

    let m = tmp.path().join("manifests");
    manifests(&m, "app", r#"echo "password is $1"; exec sleep 60"#);
    let running = skein_runtime::up(options(&m, &state_path, LogRotation::default()))
        .await
        .unwrap();
    assert!(running.wait_ready(Duration::from_secs(20)).await);
    let log = PathBuf::from(&running.status().pods[0].logs);
    assert!(
        until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains(SECRET)))
        .await,
        "the container logged"
    );
    // Let the status writer catch up with the running pod.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut all = Vec::new();
    walk(&state_path, &mut all);
    assert_eq!(mode(&state_path), 0o700, "the state directory");
    let mut holding_secret = Vec::new();
    for p in &all {
        let m = mode(p);
        if p.is_dir() {
            assert_eq!(m, 0o700, "{} is a directory of the state", p.display());
            continue;
        }
        assert_eq!(
            m & 0o022,
            0,
            "{} is writable by others ({m:04o})",
            p.display()
        );
        let name = p.file_name().unwrap().to_string_lossy();
        if name.ends_with(".key") || name.ends_with(".log") || name == "status.json" {
            assert_eq!(m, 0o600, "{} ({m:04o})", p.display());
        }
        if std::fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(SECRET)) {
            assert_eq!(
                m,
                0o600,
                "{} holds the Secret's value ({m:04o})",
                p.display()
            );
            holding_secret.push(name.into_owned());
        }
    }
    assert!(
        holding_secret.contains(&"status.json".to_string())
            && holding_secret.contains(&"app.log".to_string()),
        "the secret reaches the command line and the log: {holding_secret:?}"
    );
    assert!(all.iter().any(|p| p.ends_with("certs/ingress.key")));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_log_is_rotated_by_size() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    // About 110 KB of output, then quiet.
    manifests(&m, "chatty", "seq 1 20000; echo done; exec sleep 60");
    let limit = 16 * 1024;
    let rotation = LogRotation {
        max_bytes: limit,
        files: 3,
    };
    let running = skein_runtime::up(options(&m, &tmp.path().join("state"), rotation))
        .await
        .unwrap();
    let log = PathBuf::from(&running.status().pods[0].logs);
    assert!(
        until(Duration::from_secs(20), || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.ends_with("20000\ndone\n")))
        .await,
        "the output reached the current log"
    );
    let dir = log.parent().unwrap();
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["app.log", "app.log.1", "app.log.2"], "{files:?}");
    for (name, size) in &files {
        assert!(*size <= limit, "{name} is {size} bytes, over {limit}");
    }
    let older = std::fs::read_to_string(dir.join("app.log.1")).unwrap();
    assert!(
        older.lines().all(|l| l.parse::<u32>().is_ok()),
        "whole lines"
    );
    running.shutdown().await;
}

fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn fake_status(state: &StateDir, pid: u32, proc_start: Option<u64>) {
    let status = Status {
        running: true,
        supervisor: SupervisorStatus {
            pid,
            state: "running".into(),
            ..SupervisorStatus::default()
        },
        pods: vec![PodStatus {
            name: "web-abc-xyz".into(),
            pid,
            state: "Ready".into(),
            ready: true,
            containers: vec![ContainerStatus {
                name: "web".into(),
                pid,
                state: "Running".into(),
                proc_start,
                ..ContainerStatus::default()
            }],
            ..PodStatus::default()
        }],
        ..Status::default()
    };
    status.write(&state.status_file()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signals_only_the_processes_skein_started() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::resolve(Some(tmp.path())).unwrap();
    state.create().unwrap();
    // Someone else's process, which happens to have a pid the state directory recorded.
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = other.id();
    let started = start_time(pid);
    std::fs::write(state.pid_file(), format!("{pid} {}\n", started + 1)).unwrap();
    fake_status(&state, pid, Some(started + 1));

    assert_eq!(
        state.running_supervisor(),
        None,
        "a reused pid is not skein"
    );
    let stopped = skein_runtime::stop(&state, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(stopped.supervisor, None);
    assert!(stopped.leftovers.is_empty());
    let was: Vec<(u32, &str)> = stopped
        .not_ours
        .iter()
        .map(|n| (n.pid, n.was.as_str()))
        .collect();
    assert_eq!(
        was,
        [
            (pid, "the supervisor"),
            (pid, "pod web-abc-xyz container web")
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(other.try_wait().unwrap().is_none(), "not signalled");
    let after = Status::read(&state.status_file()).unwrap();
    assert!(!after.running && after.stopped_at.is_some());
    assert_eq!(after.pods[0].state, "Stopped");
    assert_eq!(after.pods[0].pid, 0);

    // The same pid with the start time recorded at spawn is skein's: it is stopped.
    fake_status(&state, pid, Some(started));
    let stopped = skein_runtime::stop(&state, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(stopped.leftovers, [pid]);
    assert!(stopped.not_ours.is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = other.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the leftover was stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!exit.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_status_says_nothing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    manifests(&m, "app", "exec sleep 60");
    let state = tmp.path().join("state");
    let running = skein_runtime::up(options(&m, &state, LogRotation::default()))
        .await
        .unwrap();
    assert!(running.wait_ready(Duration::from_secs(20)).await);
    let live = running.status();
    assert!(live.running && live.stopped_at.is_none());
    let pid = live.pods[0].containers[0].pid;
    assert_eq!(
        live.pods[0].containers[0].proc_start,
        Some(start_time(pid)),
        "the start time is recorded at spawn"
    );
    running.shutdown().await;
    let state = StateDir::resolve(Some(&state)).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.status_file()).unwrap()).unwrap();
    assert_eq!(v["running"], false, "{v:#}");
    assert!(v["stopped_at"].is_string(), "{v:#}");
    assert_eq!(v["supervisor"]["state"], "stopped");
    let pod = &v["pods"][0];
    assert_eq!(pod["state"], "Stopped", "{pod:#}");
    assert_eq!(pod["ready"], false);
    assert_eq!(pod["pid"], 0);
    // The fields scripts read are all still there.
    for key in [
        "name",
        "namespace",
        "workload",
        "ip",
        "ports",
        "logs",
        "containers",
    ] {
        assert!(!pod[key].is_null(), "{key}");
    }
    assert_eq!(state.running_supervisor(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_would_leave_the_state_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    manifests(&m, "../../../escape", "exec sleep 60");
    let state = tmp.path().join("a/state");
    let result = skein_runtime::up(options(&m, &state, LogRotation::default())).await;
    let Err(e) = result else {
        panic!("a workload named ../../../escape was run");
    };
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "manifests"], "nothing outside the state: {e}");
}
