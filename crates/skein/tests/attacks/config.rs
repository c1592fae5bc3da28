//! A careless (or hostile) config author: what a proxy would refuse is refused at apply time
//! with file:line and the last good config stays; a policy form that used to fail open now
//! denies.

use std::time::Duration;

use crate::support::*;

const EXAMPLE: &str = "examples/blog-system";

/// `skein apply -f` of `yaml` as a file named `name`: the exit status and stderr.
fn apply(skein: &Skein, name: &str, yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(name);
    std::fs::write(&file, yaml).expect("write manifest");
    let out = skein.run(&["apply", "-f", file.to_str().expect("utf-8 path")]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(skein: &Skein, name: &str, yaml: &str, line: u32, why: &str) {
    let (ok, err) = apply(skein, name, yaml);
    assert!(!ok, "{name} was accepted");
    assert!(
        err.contains(&format!("{name}:{line}")),
        "{name}: no file:line in {err}"
    );
    assert!(err.contains(why), "{name}: expected {why:?} in {err}");
}

#[test]
fn configs_a_proxy_would_refuse_are_refused_and_custom_without_provider_denies() {
    let skein = Skein::new();
    skein.up(EXAMPLE, &[]);
    let base = skein.http_base();
    let version = skein.status()["control_plane"]["version"].clone();

    assert_refused(
        &skein,
        "bad-cidr.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: bad-cidr\n  namespace: blog-system\nspec:\n  selector:\n    matchLabels: {app: was}\n  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/33\"]\n",
        13,
        "bad CIDR",
    );
    assert_refused(
        &skein,
        "bad-regex.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web-vsvc\n  namespace: blog-system\nspec:\n  hosts: [web-service]\n  http:\n  - match:\n    - uri:\n        regex: \"/api/(v1\"\n    route:\n    - destination:\n        host: web-service\n",
        11,
        "error parsing regexp",
    );
    assert_refused(
        &skein,
        "bad-when.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: bad-when\n  namespace: blog-system\nspec:\n  action: DENY\n  rules:\n  - when:\n    - key: source.labels[app]\n      values: [web]\n",
        11,
        "unknown attribute",
    );
    let (ok, err) = apply(
        &skein,
        "escape.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ../../x\n  namespace: blog-system\ndata: {a: b}\n",
    );
    assert!(!ok && err.contains("escape.yaml:4"), "{err}");
    // Nothing of it reached the proxies: the config version is the one from before.
    assert_eq!(skein.status()["control_plane"]["version"], version);
    assert_eq!(get(&format!("{base}/api/posts")).status, 200);

    // CUSTOM with a provider the mesh does not define: Istio denies what the rules match.
    let (ok, err) = apply(
        &skein,
        "custom.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ext-authz\n  namespace: blog-system\nspec:\n  selector:\n    matchLabels: {app: was}\n  action: CUSTOM\n  provider:\n    name: opa\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/posts/1\"]\n",
    );
    assert!(ok, "CUSTOM policy refused: {err}");
    eventually(Duration::from_secs(10), "CUSTOM policy denies", || {
        (get(&format!("{base}/api/posts/1")).status == 403).then_some(())
    });
    assert_eq!(get(&format!("{base}/api/posts")).status, 200);
}
