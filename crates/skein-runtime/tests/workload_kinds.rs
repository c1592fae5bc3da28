//! Workload kinds besides Deployments run as Kubernetes names them: a bare Pod is one pod of
//! its own name, a StatefulSet's pods are NAME-0..N-1, a DaemonSet runs one pod (one node).
//! Runs the real supervisor on small manifests (`sh` and `sleep` from `PATH`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use skein_runtime::{LogRotation, StateDir, UpOptions};

const MANIFESTS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: debug, labels: {app: debug}}
spec:
  containers:
  - {name: sh, image: busybox, command: ["sh", "-c", "exec sleep 60"]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: busybox, command: ["sh", "-c", "exec sleep 60"]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: agent, image: busybox, command: ["sh", "-c", "exec sleep 60"]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  app.conf: "greeting = hello\n"
---
apiVersion: v1
kind: Secret
metadata: {name: app-tls}
stringData: {key.pem: "not really a key"}
---
apiVersion: v1
kind: Pod
metadata: {name: configured}
spec:
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "grep -q hello /etc/app/app.conf && test -f /etc/tls/tls.key && exec sleep 60"]
    volumeMounts:
    - {name: config, mountPath: /etc/app}
    - {name: tls, mountPath: /etc/tls, readOnly: true}
  volumes:
  - name: config
    configMap: {name: app-config}
  - name: tls
    secret:
      secretName: app-tls
      items: [{key: key.pem, path: tls.key}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: migrate, image: busybox, command: ["sh", "-c", "echo migrated"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: OnFailure
      containers:
      - {name: broken, image: busybox, command: ["sh", "-c", "echo failing; exit 3"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_statefulsets_and_daemonsets_run_with_kubernetes_names() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("kinds.yaml"), MANIFESTS).unwrap();
    let running = skein_runtime::up(UpOptions {
        manifests: m.clone(),
        state: StateDir::resolve(Some(&tmp.path().join("state"))).unwrap(),
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        https: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        database: None,
        program_dirs: Vec::new(),
        skein: None,
        cert_ttl: None,
        plugin_ca: None,
        log_rotation: LogRotation::default(),
        gitops: None,
        scrape_interval: skein_runtime::DEFAULT_SCRAPE_INTERVAL,
    })
    .await
    .unwrap();
    // Ready, with the Jobs' pods finished: up --detach does not wait for them to be ready.
    assert!(
        running.wait_ready(Duration::from_secs(30)).await,
        "{:#?}",
        running.status().pods
    );
    let status = running.status();
    let job = |name: &str| {
        status
            .pods
            .iter()
            .find(|p| p.workload == name)
            .cloned()
            .unwrap()
    };
    let migrate = job("migrate");
    assert_eq!(migrate.workload_kind, "Job");
    assert_eq!(migrate.state, "Succeeded", "{migrate:#?}");
    assert_eq!(migrate.containers[0].state, "Completed");
    assert_eq!(
        migrate.restarts, 0,
        "a Job's pod that succeeded is not restarted"
    );
    let broken = job("broken");
    assert_eq!(broken.state, "Failed", "{broken:#?}");
    assert_eq!(
        broken.restarts, 1,
        "restarted backoffLimit times, then Failed"
    );
    assert_eq!(
        broken.containers[0].last_exit.as_deref(),
        Some("exit code 3")
    );
    let status = running.status();
    let status = skein_runtime::Status {
        pods: status
            .pods
            .into_iter()
            .filter(|p| p.workload_kind != "Job")
            .collect(),
        ..status
    };
    let mut pods: Vec<(String, String, String)> = status
        .pods
        .iter()
        .map(|p| (p.workload_kind.clone(), p.name.clone(), p.namespace.clone()))
        .collect();
    pods.sort();
    assert_eq!(pods.len(), 5, "{pods:?}");
    assert_eq!(pods[0].0, "DaemonSet");
    assert!(pods[0].1.starts_with("agent-"), "{pods:?}");
    assert_eq!(
        pods[1..],
        [
            ("Pod".into(), "configured".into(), "default".into()),
            ("Pod".into(), "debug".into(), "default".into()),
            ("StatefulSet".into(), "db-0".into(), "default".into()),
            ("StatefulSet".into(), "db-1".into(), "default".into()),
        ]
    );
    for p in &status.pods {
        assert_ne!(p.pid, 0, "{} runs", p.name);
    }
    // OrderedReady: db-1 started only once db-0 was ready (probed every 250 ms until then);
    // start times are in clock ticks (10 ms).
    let started = |name: &str| {
        let p = status.pods.iter().find(|p| p.name == name).unwrap();
        p.containers[0].proc_start.unwrap()
    };
    assert!(
        started("db-1") >= started("db-0") + 10,
        "db-0 at {}, db-1 at {}",
        started("db-0"),
        started("db-1")
    );
    // The ConfigMap and Secret volumes are files in the pod's directory, and the paths the
    // container names point at them: its script found them and keeps running.
    let configured = status.pods.iter().find(|p| p.name == "configured").unwrap();
    let mounts = &configured.containers[0].mounts;
    let config = std::path::Path::new(&mounts["/etc/app"]);
    assert!(config.starts_with(tmp.path().join("state")), "{mounts:?}");
    assert_eq!(
        std::fs::read_to_string(config.join("app.conf")).unwrap(),
        "greeting = hello\n"
    );
    let tls = std::path::Path::new(&mounts["/etc/tls"]);
    assert_eq!(
        std::fs::read_to_string(tls.join("tls.key")).unwrap(),
        "not really a key"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = running.status();
    let c = &again
        .pods
        .iter()
        .find(|p| p.name == "configured")
        .unwrap()
        .containers[0];
    assert_eq!((c.state.as_str(), c.restarts), ("Running", 0), "{c:?}");
    assert!(
        c.command.join(" ").contains(&mounts["/etc/app"]),
        "{:?}",
        c.command
    );
    running.shutdown().await;
}
