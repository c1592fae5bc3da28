//! Loading whole systems: the example manifests, the seed's exact resources in every
//! apiVersion, and realistic YAML for every kind.

use std::path::Path;
use std::time::Duration as StdDuration;

use crate::k8s::{
    ConfigMap, Deployment, Ingress, IntOrString, PathType, Rollout, Secret, Service, ServiceAccount,
};
use crate::networking::{
    ClientTlsMode, DestinationRule, Gateway, Resolution, ServerTlsMode, ServiceEntry, Sidecar,
    SimpleLb, StringMatchKind, VirtualService, WorkloadEntry,
};
use crate::security::{Action, AuthorizationPolicy, MtlsMode, PeerAuthentication};
use crate::telemetry::{IstioMetric, Telemetry, WorkloadMode};
use crate::{Resource, load_path, load_str, validate};

fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/blog-system")
}

#[test]
fn blog_system_example_loads_without_errors_or_warnings_but_its_two_pitfalls() {
    let m = load_path(&example_dir())
        .unwrap_or_else(|e| panic!("examples/blog-system does not load:\n{e}"));
    // The mirror of writes to the canary and the shared `sa/default` principal, documented
    // in the example's README; nothing else.
    let diags: Vec<(crate::Code, String)> = validate(&m)
        .iter()
        .map(|d| (d.code, d.object.clone()))
        .collect();
    assert_eq!(
        diags,
        [
            (
                crate::Code::Skn0006,
                "VirtualService blog-system/web-vsvc".to_string()
            ),
            (
                crate::Code::Skn0007,
                "AuthorizationPolicy blog-system/was-authz".to_string()
            ),
        ]
    );
    assert_eq!(m.len(), 24);
    // The seed's mesh config.
    let mesh = crate::mesh::mesh_config(&m).unwrap().unwrap();
    assert_eq!(mesh.access_log_file, "/dev/stdout");
    assert!(mesh.enable_tracing);
    assert_eq!(
        mesh.default_config.tracing.unwrap().zipkin.unwrap().address,
        "jaeger-collector.istio-system.svc:9411"
    );

    // Files load in name order.
    let first = &m.documents[0];
    assert!(
        first.source.file.ends_with("00-namespace.yaml"),
        "{}",
        first.source
    );
    assert_eq!(
        m.namespaces()
            .map(|n| n.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["blog-system", "istio-system"]
    );
    assert_eq!(
        m.namespaces()
            .next()
            .unwrap()
            .metadata
            .labels
            .get("istio-injection")
            .map(String::as_str),
        Some("enabled")
    );

    // DestinationRules: the seed's values.
    let web_dr = m
        .get::<DestinationRule>("blog-system", "web-dest-rule")
        .unwrap();
    assert_eq!(web_dr.api_version, "networking.istio.io/v1beta1");
    let tp = web_dr.spec.traffic_policy.as_ref().unwrap();
    let od = tp.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx_errors, Some(5));
    assert_eq!(
        od.interval.as_ref().unwrap().get(),
        StdDuration::from_secs(10)
    );
    assert_eq!(
        od.base_ejection_time.as_ref().unwrap().get(),
        StdDuration::from_secs(30)
    );
    assert_eq!(
        (od.max_ejection_percent, od.min_health_percent),
        (Some(50), Some(30))
    );
    let pool = tp.connection_pool.as_ref().unwrap();
    let http = pool.http.as_ref().unwrap();
    assert_eq!(
        (
            http.http1_max_pending_requests,
            http.http2_max_requests,
            http.max_requests_per_connection
        ),
        (Some(100), Some(100), Some(10))
    );
    assert_eq!(pool.tcp.as_ref().unwrap().max_connections, Some(100));
    assert_eq!(
        tp.load_balancer.as_ref().unwrap().simple,
        Some(SimpleLb::RoundRobin)
    );
    assert_eq!(
        tp.tls.as_ref().unwrap().mode,
        Some(ClientTlsMode::IstioMutual)
    );
    assert_eq!(
        web_dr
            .spec
            .subsets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["stable", "canary"]
    );
    // No labels: web's Rollout adds rollouts-pod-template-hash to each subset.
    assert!(web_dr.spec.subsets.iter().all(|s| s.labels.is_empty()));
    let was_dr = m
        .get::<DestinationRule>("blog-system", "was-dest-rule")
        .unwrap();
    assert_eq!(was_dr.spec.host, "was-service");
    assert!(was_dr.spec.subsets.is_empty());
    let mysql_dr = m
        .get::<DestinationRule>("blog-system", "mysql-circuit-breaker")
        .unwrap();
    let mysql_tp = mysql_dr.spec.traffic_policy.as_ref().unwrap();
    assert_eq!(
        mysql_tp.tls.as_ref().unwrap().mode,
        Some(ClientTlsMode::Disable)
    );
    assert_eq!(
        mysql_tp
            .outlier_detection
            .as_ref()
            .unwrap()
            .consecutive_5xx_errors,
        Some(3)
    );

    // web-vsvc: `kubectl get vs web-vsvc -o jsonpath='{.spec.http[*].name}'` -> canary-testing primary.
    let vs = m.get::<VirtualService>("blog-system", "web-vsvc").unwrap();
    let names: Vec<&str> = vs
        .spec
        .http
        .iter()
        .filter_map(|h| h.name.as_deref())
        .collect();
    assert_eq!(names, ["canary-testing", "primary"]);
    let canary = &vs.spec.http[0];
    assert_eq!(
        canary.match_[0].headers["x-canary-test"].kind(),
        StringMatchKind::Exact("true")
    );
    assert_eq!(
        canary.route[0].destination.subset.as_deref(),
        Some("canary")
    );
    assert_eq!(
        canary.timeout.as_ref().unwrap().get(),
        StdDuration::from_secs(15)
    );
    let retries = canary.retries.as_ref().unwrap();
    assert_eq!(retries.attempts, Some(2));
    assert_eq!(retries.per_try_timeout.as_ref().unwrap().as_str(), "3s");
    assert_eq!(
        retries.retry_on.as_deref(),
        Some("5xx,reset,connect-failure")
    );
    let primary = &vs.spec.http[1];
    assert_eq!(
        primary.route.iter().map(|r| r.weight).collect::<Vec<_>>(),
        [Some(100), Some(0)]
    );
    assert_eq!(primary.retries.as_ref().unwrap().attempts, Some(3));
    assert_eq!(
        primary.retries.as_ref().unwrap().retry_on.as_deref(),
        Some("5xx,reset,connect-failure,refused-stream")
    );
    assert_eq!(
        primary.timeout.as_ref().unwrap().get(),
        StdDuration::from_secs(10)
    );
    assert_eq!(
        primary.mirror.as_ref().unwrap().subset.as_deref(),
        Some("canary")
    );
    assert_eq!(primary.mirror_percentage.as_ref().unwrap().value, 100.0);
    assert!(primary.fault.is_none());
    let was_vs = m.get::<VirtualService>("blog-system", "was-vsvc").unwrap();
    assert_eq!(was_vs.api_version, "networking.istio.io/v1");
    assert!(was_vs.spec.http[0].fault.is_none());

    // Security.
    let was_authz = m
        .get::<AuthorizationPolicy>("blog-system", "was-authz")
        .unwrap();
    assert_eq!(was_authz.spec.action(), Action::Allow);
    let rule = &was_authz.spec.rules()[0];
    let src = rule.from.as_ref().unwrap()[0].source.as_ref().unwrap();
    assert_eq!(
        src.principals.as_deref(),
        Some(&["cluster.local/ns/blog-system/sa/default".to_string()][..])
    );
    assert_eq!(
        src.namespaces.as_deref(),
        Some(&["blog-system".to_string()][..])
    );
    let op = rule.to.as_ref().unwrap()[0].operation.as_ref().unwrap();
    assert_eq!(op.ports.as_deref(), Some(&["8080".to_string()][..]));
    assert_eq!(
        op.paths.as_deref(),
        Some(&["/api/*".to_string(), "/actuator/*".to_string()][..])
    );
    let web_authz = m
        .get::<AuthorizationPolicy>("blog-system", "web-authz")
        .unwrap();
    assert_eq!(
        web_authz.spec.rules()[0].to.as_ref().unwrap()[0]
            .operation
            .as_ref()
            .unwrap()
            .ports
            .as_deref(),
        Some(&["80".to_string()][..])
    );
    let pa = m
        .get::<PeerAuthentication>("blog-system", "default")
        .unwrap();
    assert_eq!(
        pa.spec.mtls.as_ref().unwrap().mode,
        Some(MtlsMode::Permissive)
    );
    assert!(pa.spec.selector.is_none() && pa.spec.port_level_mtls.is_none());
    let mysql_pa = m
        .get::<PeerAuthentication>("blog-system", "mysql-mtls-exception")
        .unwrap();
    assert_eq!(
        mysql_pa.spec.selector.as_ref().unwrap().match_labels["app"],
        "mysql"
    );

    // Telemetry in istio-system.
    let tel = m
        .get::<Telemetry>("istio-system", "tracing-default")
        .unwrap();
    assert_eq!(tel.spec.tracing[0].random_sampling_percentage, Some(100.0));

    // Workloads: replicas, labels, identities, env, probes, resources.
    let dep = |name| m.get::<Deployment>("blog-system", name).unwrap();
    // web is the seed's Argo Rollout: its stable and canary are revisions of one template,
    // and its strategy manages web-vsvc's `primary` route and web-dest-rule's subsets.
    let web_rollout = m.get::<Rollout>("blog-system", "web").unwrap();
    assert!(m.get::<Deployment>("blog-system", "web-stable").is_none());
    assert_eq!(web_rollout.spec.replicas, Some(2));
    assert_eq!(dep("was").spec.replicas, Some(2));
    assert_eq!(dep("mysql").spec.replicas, Some(1));
    let canary = &web_rollout.spec.strategy.as_ref().unwrap()["canary"];
    let istio = &canary["trafficRouting"]["istio"];
    assert_eq!(istio["virtualService"]["name"], "web-vsvc");
    assert_eq!(istio["virtualService"]["routes"][0], "primary");
    assert_eq!(istio["destinationRule"]["name"], "web-dest-rule");
    assert_eq!(istio["destinationRule"]["canarySubsetName"], "canary");
    assert_eq!(istio["destinationRule"]["stableSubsetName"], "stable");
    let steps: Vec<String> = canary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        steps,
        [
            r#"{"setCanaryScale":{"replicas":1}}"#,
            r#"{"pause":{}}"#,
            r#"{"setCanaryScale":{"matchTrafficWeight":true}}"#,
            r#"{"setWeight":10}"#,
            r#"{"pause":{}}"#,
            r#"{"setWeight":50}"#,
            r#"{"pause":{}}"#,
            r#"{"setWeight":100}"#,
        ]
    );
    assert_eq!(
        canary["analysis"]["templates"][0]["templateName"],
        "web-success-rate-p99"
    );
    let analysis = m
        .get::<crate::analysis::AnalysisTemplate>("blog-system", "web-success-rate-p99")
        .unwrap();
    assert_eq!(analysis.spec.metrics.len(), 2);
    let labels = &web_rollout.spec.template.metadata.labels;
    assert!(!labels.contains_key("version"), "{labels:?}");
    // web runs as `default`, the identity was-authz allows.
    assert_eq!(web_rollout.spec.template.spec.service_account(), "default");
    assert_eq!(dep("was").spec.template.spec.service_account(), "was");
    let was = &dep("was").spec.template.spec.containers[0];
    assert_eq!(was.command, ["blog-was"]);
    assert_eq!(was.image.as_deref(), Some("blog-was:0.1.0"));
    let env =
        |c: &crate::k8s::Container, n: &str| c.env.iter().find(|e| e.name == n).cloned().unwrap();
    assert_eq!(
        env(was, "LISTEN_ADDR").value.as_deref(),
        Some("$(POD_IP):8080")
    );
    assert_eq!(
        env(was, "DATABASE_URL").value.as_deref(),
        Some("mysql://blog:blog@mysql:3306/blog")
    );
    assert_eq!(
        env(was, "POD_IP")
            .value_from
            .unwrap()
            .field_ref
            .unwrap()
            .field_path,
        "status.podIP"
    );
    assert_eq!(
        env(was, "VERSION")
            .value_from
            .unwrap()
            .field_ref
            .unwrap()
            .field_path,
        "metadata.labels['version']"
    );
    let probe = was
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (probe.path.as_deref(), &probe.port),
        (
            Some("/actuator/health"),
            &IntOrString::String("http".into())
        )
    );
    let requests = &was.resources.as_ref().unwrap().requests;
    assert_eq!(
        (requests["cpu"].0.as_str(), requests["memory"].0.as_str()),
        ("150m", "400Mi")
    );
    let web = &web_rollout.spec.template.spec.containers[0];
    assert_eq!(
        env(web, "LISTEN_ADDR").value.as_deref(),
        Some("$(POD_IP):80")
    );
    assert_eq!(
        env(web, "WAS_URL").value.as_deref(),
        Some("http://was-service.blog-system.svc.cluster.local:8080")
    );
    assert_eq!(env(web, "WAS_HOST").value.as_deref(), Some("was-service"));
    assert_eq!(
        web.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/health")
    );
    let mysql = dep("mysql");
    assert_eq!(
        mysql.spec.template.metadata.annotations["sidecar.istio.io/inject"],
        "false"
    );
    let mc = &mysql.spec.template.spec.containers[0];
    assert_eq!(mc.image.as_deref(), Some("mysql:8.0"));
    assert!(mc.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    let secret = m.get::<Secret>("blog-system", "mysql-credentials").unwrap();
    assert_eq!(secret.decoded_data()["password"], "blog");

    // Services and the Ingress.
    let svc = |name| m.get::<Service>("blog-system", name).unwrap();
    assert_eq!(svc("mysql").spec.ports[0].port, 3306);
    assert_eq!(svc("was-service").spec.ports[0].port, 8080);
    assert_eq!(
        svc("web-service").spec.ports[0].name.as_deref(),
        Some("http")
    );
    assert_eq!(
        svc("web-service").spec.ports[0].target(),
        IntOrString::String("http".into())
    );
    let ing = m.get::<Ingress>("blog-system", "blog-ingress").unwrap();
    assert_eq!(ing.spec.ingress_class_name.as_deref(), Some("nginx"));
    let paths: Vec<(&str, PathType, &str, Option<i32>)> = ing.spec.rules[0]
        .http
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| {
            let s = p.backend.service.as_ref().unwrap();
            (
                p.path.as_deref().unwrap(),
                p.path_type,
                s.name.as_str(),
                s.port.number,
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("/api", PathType::Prefix, "web-service", Some(80)),
            ("/board", PathType::Prefix, "web-service", Some(80)),
            ("/", PathType::Prefix, "web-service", Some(80))
        ]
    );
    assert_eq!(ing.spec.tls[0].secret_name.as_deref(), Some("blog-tls"));
    assert_eq!(m.service_accounts().count(), 2);
}

// The seed's resources exactly as it printed them (sections 3.1-3.4).
const SEED: &str = "\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: was-dest-rule
  namespace: blog-system
spec:
  host: was-service

  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL  # mTLS

    connectionPool:
      http:
        http1MaxPendingRequests: 100
        http2MaxRequests: 100
        maxRequestsPerConnection: 10

    loadBalancer:
      simple: ROUND_ROBIN
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: web-authz
  namespace: blog-system
spec:
  selector:
    matchLabels:
      app: web
  action: ALLOW
  rules:
  - to:
    - operation:
        ports: [\"80\"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: was-authz
  namespace: blog-system
spec:
  selector:
    matchLabels:
      app: was
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [\"cluster.local/ns/blog-system/sa/default\"]
        namespaces: [\"blog-system\"]
    to:
    - operation:
        ports: [\"8080\"]
        paths: [\"/api/*\", \"/actuator/*\"]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: tracing-default
  namespace: istio-system
spec:
  tracing:
  - randomSamplingPercentage: 100.0
";

#[test]
fn seed_resources_load_in_every_api_version() {
    let versions = [
        (
            "networking.istio.io/v1beta1",
            "security.istio.io/v1beta1",
            "telemetry.istio.io/v1alpha1",
        ),
        (
            "networking.istio.io/v1",
            "security.istio.io/v1",
            "telemetry.istio.io/v1",
        ),
        (
            "networking.istio.io/v1alpha3",
            "security.istio.io/v1beta1",
            "telemetry.istio.io/v1alpha1",
        ),
    ];
    let mut loaded = Vec::new();
    for (net, sec, tel) in versions {
        let text = SEED
            .replace("networking.istio.io/v1beta1", net)
            .replace("security.istio.io/v1beta1", sec)
            .replace("telemetry.istio.io/v1alpha1", tel);
        let m = load_str("seed.yaml", &text).unwrap_or_else(|e| panic!("{net}: {e}"));
        assert_eq!(m.len(), 4);
        assert_eq!(m.documents[0].resource.api_version(), net);
        assert_eq!(m.documents[1].source.line, 22);
        assert_eq!(m.documents[3].resource.namespace(), "istio-system");
        // The same objects whatever the version.
        loaded.push(
            m.documents
                .iter()
                .map(|d| d.resource.to_json()["spec"].clone())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(loaded[0], loaded[1]);
    assert_eq!(loaded[0], loaded[2]);
    let json = &loaded[0][2];
    assert_eq!(
        json["rules"][0]["to"][0]["operation"]["paths"],
        serde_json::json!(["/api/*", "/actuator/*"])
    );
}

#[test]
fn kubectl_get_output_with_status_and_managed_fields_loads() {
    let text = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    deployment.kubernetes.io/revision: \"3\"
  creationTimestamp: \"2026-01-20T12:00:00Z\"
  generation: 3
  labels: {app: was}
  managedFields:
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    manager: kubectl-client-side-apply
    operation: Update
  name: was
  namespace: blog-system
  resourceVersion: \"123456\"
  uid: 0b9c8a1e-0000-4000-8000-000000000000
spec:
  progressDeadlineSeconds: 600
  replicas: 2
  revisionHistoryLimit: 10
  selector:
    matchLabels: {app: was}
  strategy:
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 0}
    type: RollingUpdate
  template:
    metadata:
      creationTimestamp: null
      labels: {app: was}
      annotations: {kubectl.kubernetes.io/restartedAt: \"2026-01-20T13:00:00Z\"}
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: was}}}
      containers:
      - name: was
        image: ghcr.io/example/blog-was:1.2.3
        imagePullPolicy: Always
        args: [--spring.profiles.active=prod]
        env:
        - name: JAVA_OPTS
          value: -Xmx512m
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
        - name: LIMIT
          valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
        envFrom:
        - configMapRef: {name: was-config}
          prefix: APP_
        ports:
        - {containerPort: 8080, name: http, protocol: TCP}
        livenessProbe:
          httpGet: {path: /actuator/health/liveness, port: 8080, scheme: HTTP, httpHeaders: [{name: X-Probe, value: k8s}]}
          failureThreshold: 3
          periodSeconds: 10
          successThreshold: 1
          timeoutSeconds: 1
        startupProbe:
          exec: {command: [cat, /tmp/ready]}
        resources:
          limits: {cpu: 1, memory: 1Gi}
          requests: {cpu: 150m, memory: 400Mi}
        securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false}
        lifecycle: {preStop: {exec: {command: [sleep, \"5\"]}}}
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
        volumeMounts:
        - {mountPath: /config, name: config, readOnly: true}
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {fsGroup: 1000}
      serviceAccount: was
      serviceAccountName: was
      terminationGracePeriodSeconds: 30
      tolerations: [{key: dedicated, operator: Equal, value: blog, effect: NoSchedule}]
      nodeSelector: {kubernetes.io/os: linux}
      hostAliases: [{ip: 10.0.0.5, hostnames: [legacy-db]}]
      imagePullSecrets: [{name: ghcr}]
      automountServiceAccountToken: false
      enableServiceLinks: false
      volumes:
      - name: config
        configMap: {name: was-config}
status:
  availableReplicas: 2
  conditions: [{type: Available, status: \"True\"}]
";
    let m = load_str("get.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let d = m.deployments().next().unwrap();
    assert_eq!(
        d.metadata.creation_timestamp.as_deref(),
        Some("2026-01-20T12:00:00Z")
    );
    assert!(d.status.is_some());
    let roll = d
        .spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(roll.max_surge, Some(IntOrString::String("25%".into())));
    assert_eq!(roll.max_unavailable, Some(IntOrString::Int(0)));
    let c = &d.spec.template.spec.containers[0];
    assert_eq!(c.resources.as_ref().unwrap().limits["cpu"].0, "1");
    assert_eq!(c.env_from[0].prefix.as_deref(), Some("APP_"));
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .port,
        IntOrString::Int(8080)
    );
    assert_eq!(
        d.spec.template.spec.host_aliases[0].hostnames,
        ["legacy-db"]
    );
    assert!(validate(&m).is_empty(), "{:?}", validate(&m));
}

#[test]
fn every_other_kind_loads_from_realistic_yaml() {
    let text = "\
apiVersion: v1
kind: ServiceAccount
metadata: {name: was, namespace: blog-system}
automountServiceAccountToken: false
imagePullSecrets: [{name: ghcr}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: was-config, namespace: blog-system}
data:
  application.yaml: |
    server:
      port: 8080
---
apiVersion: v1
kind: Service
metadata: {name: external-db, namespace: blog-system}
spec:
  type: ExternalName
  externalName: db.example.com
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: blog-system}
spec:
  type: LoadBalancer
  sessionAffinity: ClientIP
  externalTrafficPolicy: Local
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  clusterIP: 10.96.0.10
  ports:
  - {name: https, port: 443, targetPort: 8443, nodePort: 30443, protocol: TCP, appProtocol: https}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web, namespace: blog-system}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx:1.27, ports: [{containerPort: 80, name: http}]}]
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting:
        istio:
          virtualService: {name: web-vsvc, routes: [primary]}
          destinationRule: {name: web-dest-rule, canarySubsetName: canary, stableSubsetName: stable}
      steps: [{setWeight: 10}, {pause: {duration: 10m}}, {setWeight: 50}, {pause: {}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: default-backend
  namespace: blog-system
  annotations: {nginx.ingress.kubernetes.io/ssl-redirect: \"true\"}
spec:
  defaultBackend:
    service: {name: web, port: {name: http}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: blog-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [blog-system/blog.example.com]
    tls:
      mode: SIMPLE
      credentialName: blog-tls
      minProtocolVersion: TLSV1_2
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: payments, namespace: blog-system}
spec:
  hosts: [api.payments.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: TLS}]
  exportTo: [\".\"]
---
apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata: {name: default, namespace: blog-system}
spec:
  egress:
  - hosts: [\"./*\", istio-system/*]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: blog-system}
spec:
  address: 10.0.0.7
  labels: {app: legacy}
  ports: {http: 8080}
  serviceAccount: legacy
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything, namespace: blog-system}
spec:
  hosts: [blog.example.com]
  gateways: [istio-system/blog-gateway, mesh]
  exportTo: [\"*\"]
  http:
  - name: old-path
    match:
    - uri: {prefix: /old}
      ignoreUriCase: true
      method: {exact: GET}
      queryParams: {debug: {exact: \"1\"}}
      withoutHeaders: {x-internal: {}}
      sourceLabels: {app: web}
      port: 80
    redirect: {uri: /new, redirectCode: 301}
  - name: teapot
    match: [{authority: {regex: \"^tea\\\\..*\"}}]
    directResponse: {status: 418, body: {string: \"I'm a teapot\"}}
  - name: api
    match: [{uri: {prefix: /api}, headers: {end-user: {exact: jason}}}]
    rewrite: {uri: /, authority: api.internal}
    route:
    - destination: {host: api.payments.example.com, port: {number: 443}}
      headers: {request: {set: {x-from: mesh}, remove: [cookie]}, response: {add: {x-served-by: skein}}}
    fault:
      abort: {httpStatus: 503, percentage: {value: 0.5}}
      delay: {fixedDelay: 100ms, percentage: {value: 1.5}}
    retries: {attempts: 2, perTryTimeout: 500ms, retryOn: \"gateway-error,503\", retryRemoteLocalities: true, backoff: 25ms}
    corsPolicy:
      allowOrigins: [{exact: \"https://blog.example.com\"}]
      allowMethods: [GET, POST]
      allowCredentials: true
      maxAge: 24h
    mirrors:
    - destination: {host: api.payments.example.com}
      percentage: {value: 5}
    headers:
      response:
        remove: [server]
  tcp:
  - match: [{port: 3306}]
    route: [{destination: {host: mysql.blog-system.svc.cluster.local, port: {number: 3306}}}]
  tls:
  - match: [{sniHosts: [blog.example.com], port: 443}]
    route: [{destination: {host: api.payments.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sticky, namespace: blog-system}
spec:
  host: api.payments.example.com
  exportTo: [\".\"]
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: session, path: /, ttl: 0s}
        ringHash: {minimumRingSize: 1024}
      localityLbSetting:
        enabled: true
        failover: [{from: us-east, to: us-west}]
      warmupDurationSecs: 60s
    connectionPool:
      tcp:
        connectTimeout: 250ms
        tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}
        maxConnectionDuration: 1h
        idleTimeout: 1h
      http:
        idleTimeout: 30s
        h2UpgradePolicy: UPGRADE
        maxRetries: 3
        maxConcurrentStreams: 100
    outlierDetection:
      consecutiveGatewayErrors: 2
      consecutiveLocalOriginFailures: 3
      splitExternalLocalOriginErrors: true
    tls:
      mode: SIMPLE
      sni: api.payments.example.com
      subjectAltNames: [api.payments.example.com]
      caCertificates: /etc/ssl/certs/ca.pem
    portLevelSettings:
    - port: {number: 443}
      loadBalancer: {simple: LEAST_REQUEST}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: blog-system}
spec:
  selector: {matchLabels: {app: web}}
  action: CUSTOM
  provider: {name: oauth2-proxy}
  rules:
  - to: [{operation: {paths: [/admin/*], notMethods: [OPTIONS]}}]
    when: [{key: \"request.headers[x-forwarded-proto]\", values: [https]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-legacy, namespace: blog-system}
spec:
  action: DENY
  rules:
  - from: [{source: {notNamespaces: [blog-system], remoteIpBlocks: [203.0.113.0/24]}}]
    to: [{operation: {ports: [\"8080\"]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web-ports, namespace: blog-system}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls:
    80: {mode: PERMISSIVE}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web, namespace: blog-system}
spec:
  selector: {matchLabels: {app: web}}
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 10
    customTags:
      cluster: {literal: {value: local}}
      user: {header: {name: x-user, defaultValue: anonymous}}
    match: {mode: SERVER}
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: response.code >= 400}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}
      tagOverrides: {request_host: {operation: REMOVE}}
";
    let m = load_str("all.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = m.iter().map(|d| d.resource.kind()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ConfigMap",
            "Service",
            "Service",
            "Rollout",
            "Ingress",
            "Gateway",
            "ServiceEntry",
            "Sidecar",
            "WorkloadEntry",
            "VirtualService",
            "DestinationRule",
            "AuthorizationPolicy",
            "AuthorizationPolicy",
            "PeerAuthentication",
            "Telemetry"
        ]
    );
    assert_eq!(
        m.of::<ServiceAccount>()
            .next()
            .unwrap()
            .automount_service_account_token,
        Some(false)
    );
    assert!(m.of::<ConfigMap>().next().unwrap().data["application.yaml"].contains("port: 8080"));
    let rollout = m.of::<Rollout>().next().unwrap();
    assert_eq!(rollout.spec.as_workload().replicas, Some(3));
    assert!(rollout.spec.strategy.as_ref().unwrap()["canary"]["steps"].is_array());
    let gw = m.of::<Gateway>().next().unwrap();
    assert_eq!(
        gw.spec.servers[1].tls.as_ref().unwrap().mode,
        Some(ServerTlsMode::Simple)
    );
    assert_eq!(
        m.of::<ServiceEntry>().next().unwrap().spec.resolution,
        Some(Resolution::Dns)
    );
    assert_eq!(
        m.of::<Sidecar>().next().unwrap().spec.egress[0].hosts.len(),
        2
    );
    assert_eq!(
        m.of::<WorkloadEntry>().next().unwrap().spec.ports["http"],
        8080
    );
    let vs = m.of::<VirtualService>().next().unwrap();
    assert_eq!(
        vs.spec.http[0].redirect.as_ref().unwrap().redirect_code,
        Some(301)
    );
    assert_eq!(
        vs.spec.http[1].match_[0].authority.as_ref().unwrap().kind(),
        StringMatchKind::Regex("^tea\\..*")
    );
    let api = &vs.spec.http[2];
    assert_eq!(
        api.fault
            .as_ref()
            .unwrap()
            .abort
            .as_ref()
            .unwrap()
            .http_status,
        Some(503)
    );
    assert_eq!(
        api.retries
            .as_ref()
            .unwrap()
            .backoff
            .as_ref()
            .unwrap()
            .get(),
        StdDuration::from_millis(25)
    );
    assert_eq!(
        api.cors_policy
            .as_ref()
            .unwrap()
            .max_age
            .as_ref()
            .unwrap()
            .get(),
        StdDuration::from_secs(86400)
    );
    assert_eq!(
        vs.spec.tcp[0].route[0]
            .destination
            .port
            .as_ref()
            .unwrap()
            .number,
        Some(3306)
    );
    let dr = m.of::<DestinationRule>().next().unwrap();
    let lb = dr
        .spec
        .traffic_policy
        .as_ref()
        .unwrap()
        .load_balancer
        .as_ref()
        .unwrap();
    assert_eq!(
        lb.consistent_hash
            .as_ref()
            .unwrap()
            .http_cookie
            .as_ref()
            .unwrap()
            .ttl
            .as_ref()
            .unwrap()
            .get(),
        StdDuration::ZERO
    );
    assert_eq!(
        lb.warmup_duration_secs.as_ref().unwrap().get(),
        StdDuration::from_secs(60)
    );
    let aps: Vec<&AuthorizationPolicy> = m.of().collect();
    assert_eq!(aps[0].spec.action(), Action::Custom);
    assert_eq!(
        aps[1].spec.rules()[0].from.as_ref().unwrap()[0]
            .source
            .as_ref()
            .unwrap()
            .remote_ip_blocks
            .as_ref()
            .unwrap()[0],
        "203.0.113.0/24"
    );
    let pa = m.of::<PeerAuthentication>().next().unwrap();
    assert_eq!(pa.spec.port_level().collect::<Vec<_>>()[0].0, 80);
    let tel = m.of::<Telemetry>().next().unwrap();
    assert_eq!(
        tel.spec.tracing[0].match_.as_ref().unwrap().mode,
        Some(WorkloadMode::Server)
    );
    assert_eq!(
        tel.spec.metrics[0].overrides[0]
            .match_
            .as_ref()
            .unwrap()
            .metric,
        Some(IstioMetric::RequestCount)
    );
    assert!(matches!(m.documents[2].resource, Resource::Service(_)));
    // The only error: the tcp route names a cluster Service that is not in these manifests.
    let errors: Vec<String> = validate(&m)
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "all.yaml:152: error: VirtualService blog-system/everything: spec.tcp[0].route[0].destination.host: Referenced host not found: \"mysql.blog-system.svc.cluster.local\""
        ]
    );
    let _ = m.of::<Secret>().count();
}
