//! kubectl's habits with `skein` in kubectl's place: `get` (every -o form) and `describe` on
//! the example's files (`-f`, no running system), against golden outputs in
//! `tests/golden/kubectl/` (`UPDATE_GOLDEN=1` writes them), the seed's two verification
//! commands verbatim, and kubectl's errors and exit codes. Then, on a running
//! `skein up examples/blog-system`, `get`, `apply`, `diff`, `delete` and `describe` with
//! their exit codes and the control plane's events.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

const EXAMPLE: &str = "examples/blog-system";

fn skein(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skein"))
        .args(args)
        .current_dir(support::repo_root())
        .env_remove("SKEIN_STATE_DIR")
        .output()
        .expect("run skein")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `skein ARGS -f examples/blog-system` must succeed and print the golden file `name`.
fn golden(name: &str, args: &[&str]) {
    let mut all = args.to_vec();
    all.extend(["-f", EXAMPLE]);
    let out = skein(&all);
    assert!(out.status.success(), "skein {all:?}: {}", text(&out.stderr));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/kubectl")
        .join(name);
    let got = text(&out.stdout);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(got, want, "skein {all:?} differs from {}", path.display());
}

#[test]
fn the_seeds_verification_commands_print_the_seeds_output() {
    let out = skein(&[
        "get",
        "virtualservice",
        "web-vsvc",
        "-n",
        "blog-system",
        "-o",
        "jsonpath={.spec.http[*].name}",
        "-f",
        EXAMPLE,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "canary-testing primary");

    let out = skein(&[
        "get",
        "dr",
        "-n",
        "blog-system",
        "-o",
        "custom-columns=NAME:.metadata.name,HOST:.spec.host",
        "-f",
        EXAMPLE,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // `get -f` keeps the files' order, as kubectl does; the running system lists by name.
    assert_eq!(
        text(&out.stdout),
        "NAME                    HOST\n\
         web-dest-rule           web-service\n\
         was-dest-rule           was-service\n\
         mysql-circuit-breaker   mysql\n"
    );
}

/// The seed's table, on a running system (listed by name, as the API server lists).
const SEED_DR_TABLE: &str = "NAME                    HOST\n\
                             mysql-circuit-breaker   mysql\n\
                             was-dest-rule           was-service\n\
                             web-dest-rule           web-service\n";

#[test]
fn get_prints_each_output_form_as_kubectl() {
    // Lists and maps in a column print as Go's %v, several matches joined with commas.
    golden(
        "get-custom-columns-lists.txt",
        &[
            "get",
            "vs",
            "-A",
            "-o",
            "custom-columns=NAME:.metadata.name,HOSTS:.spec.hosts,SUBSETS:..subset,META:.metadata",
        ],
    );
    // Only one kind found: names without the kind; no headers: no blank line between kinds.
    golden(
        "get-vs-gw-one-kind-found.txt",
        &["get", "vs,gw", "-n", "blog-system"],
    );
    golden(
        "get-vs-dr-no-headers.txt",
        &["get", "vs,dr", "-n", "blog-system", "--no-headers"],
    );
    golden(
        "get-deploy-show-labels.txt",
        &["get", "deploy", "-n", "blog-system", "--show-labels"],
    );
    golden(
        "get-jsonpath-as-json.txt",
        &[
            "get",
            "vs",
            "-n",
            "blog-system",
            "-o",
            "jsonpath-as-json={.items[*].metadata.name}",
        ],
    );
    golden("get-all-files.txt", &["get"]);
    golden("get-vs-dr-all-namespaces.txt", &["get", "vs,dr", "-A"]);
    golden(
        "get-deploy-wide.txt",
        &["get", "deploy", "-n", "blog-system", "-o", "wide"],
    );
    golden(
        "get-svc-wide.txt",
        &["get", "svc", "-n", "blog-system", "-o", "wide"],
    );
    golden("get-pa-ap.txt", &["get", "pa,ap", "-n", "blog-system"]);
    golden(
        "get-vs-yaml.txt",
        &[
            "get",
            "virtualservices.networking.istio.io",
            "-n",
            "blog-system",
            "-o",
            "yaml",
        ],
    );
    golden(
        "get-vs-web-json.txt",
        &["get", "vs", "web-vsvc", "-n", "blog-system", "-o", "json"],
    );
    golden(
        "get-dr-was-yaml.txt",
        &[
            "get",
            "destinationrule/was-dest-rule",
            "-n",
            "blog-system",
            "-o",
            "yaml",
        ],
    );
    golden("get-name.txt", &["get", "all,vs", "-A", "-o", "name"]);
    golden(
        "get-jsonpath-range.txt",
        &[
            "get",
            "vs",
            "-n",
            "blog-system",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.spec.http[*].route[*].destination.subset}{"\n"}{end}"#,
        ],
    );
    golden(
        "get-jsonpath-filter.txt",
        &[
            "get",
            "vs",
            "web-vsvc",
            "-n",
            "blog-system",
            "-o",
            r#"jsonpath={.spec.http[?(@.name=="primary")].route[?(@.weight>0)].destination.subset} {..perTryTimeout}"#,
        ],
    );
    golden(
        "get-deploy-selector-sorted.txt",
        &[
            "get",
            "deploy",
            "-n",
            "blog-system",
            "-l",
            "app in (mysql,was,web)",
            "--sort-by",
            ".spec.template.spec.containers[0].image",
            "--no-headers",
        ],
    );
}

#[test]
fn a_reader_that_closes_the_pipe_early_ends_skein_quietly() {
    // As `skein get ... | head -1`: the reader is gone before skein writes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_skein"))
        .args(["get", "all", "-o", "yaml", "-f", EXAMPLE])
        .current_dir(support::repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run skein");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for skein");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn describe_prints_as_kubectl() {
    golden(
        "describe-vs-web.txt",
        &["describe", "vs", "web-vsvc", "-n", "blog-system"],
    );
    golden(
        "describe-dr-was.txt",
        &["describe", "dr", "was-dest-rule", "-n", "blog-system"],
    );
}

#[test]
fn errors_are_kubectls_and_exit_1() {
    let out = skein(&["get", "foo", "-f", EXAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: the server doesn't have a resource type \"foo\"\n"
    );
    let out = skein(&["get", "vs", "x", "-n", "blog-system", "-f", EXAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error from server (NotFound): virtualservices.networking.istio.io \"x\" not found\n"
    );
    // Found ones print, missing ones are errors.
    let out = skein(&[
        "get",
        "dr",
        "was-dest-rule",
        "x",
        "-n",
        "blog-system",
        "-o",
        "name",
        "-f",
        EXAMPLE,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "destinationrule.networking.istio.io/was-dest-rule\n"
    );
    assert!(text(&out.stderr).contains("destinationrules.networking.istio.io \"x\" not found"));
    let out = skein(&["get", "vs", "-f", EXAMPLE]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "");
    let out = skein(&["get", "vs", "-n", "nowhere", "-f", EXAMPLE]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "No resources found in nowhere namespace.\n"
    );
    let out = skein(&["get", "vs", "-o", "jsonpath={.items[", "-f", EXAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: error parsing jsonpath"),
        "{}",
        text(&out.stderr)
    );
    let out = skein(&[
        "get",
        "vs",
        "web-vsvc",
        "-n",
        "blog-system",
        "-o",
        "jsonpath={.spec.nothere}",
        "--allow-missing-template-keys=false",
        "-f",
        EXAMPLE,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nothere is not found"),
        "{}",
        text(&out.stderr)
    );
    let out = skein(&["get", "vs", "-o", "bogus", "-f", EXAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    // Without a running system (an empty state directory).
    let state = tempfile::tempdir().unwrap();
    let out = skein(&["--state-dir", state.path().to_str().unwrap(), "get", "vs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("skein is not running"),
        "{}",
        text(&out.stderr)
    );
    let out = skein(&[
        "--state-dir",
        state.path().to_str().unwrap(),
        "diff",
        "-f",
        EXAMPLE,
    ]);
    assert_eq!(out.status.code(), Some(2), "diff's errors exit above 1");
}

const CANARY_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: was-canary
  namespace: blog-system
  labels:
    app: was
spec:
  hosts:
  - was-service.blog-system.svc.cluster.local
  http:
  - name: only
    route:
    - destination:
        host: was-service
        port:
          number: 8080
      weight: 100
    timeout: 5s
";

#[test]
fn get_apply_diff_delete_and_describe_on_the_running_system() {
    let s = support::Skein::new();
    let manifests = support::manifests_copy(EXAMPLE);
    s.up(manifests.path().to_str().unwrap(), &[]);
    let run = |args: &[&str]| {
        let out = s.run(args);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    let (code, out, err) = run(&["get", "vs", "-n", "blog-system"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME       GATEWAYS   HOSTS"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("web-vsvc ") && l.contains("[\"web-service\"]")),
        "{out}"
    );
    // On a running system AGE is the files' age, not <unknown>.
    assert!(!out.contains("<unknown>"), "{out}");
    // The seed's verification commands, verbatim.
    let (code, out, _) = run(&[
        "get",
        "virtualservice",
        "web-vsvc",
        "-n",
        "blog-system",
        "-o",
        "jsonpath={.spec.http[*].name}",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "canary-testing primary"));
    let (code, out, _) = run(&[
        "get",
        "dr",
        "-n",
        "blog-system",
        "-o",
        "custom-columns=NAME:.metadata.name,HOST:.spec.host",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), SEED_DR_TABLE));

    // The runtime's pods, as `kubectl get pods`: the sidecar counts as a container.
    let (code, out, err) = run(&[
        "get",
        "po",
        "-n",
        "blog-system",
        "-l",
        "app=was",
        "-o",
        "wide",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAME")
            && header.contains("READY   STATUS    RESTARTS   AGE")
            && header.contains("IP"),
        "{out}"
    );
    let was: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(was.len(), 2, "{out}");
    for l in &was {
        assert!(
            l.starts_with("was-") && l.contains(" 2/2 ") && l.contains(" Running "),
            "{out}"
        );
    }
    let (_, out, _) = run(&["get", "deploy", "was", "-n", "blog-system"]);
    assert!(
        out.lines().nth(1).unwrap().starts_with("was    2/2"),
        "{out}"
    );

    // diff before apply: a new object is all additions (exit 1); after apply none (exit 0).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canary.yaml");
    std::fs::write(&file, CANARY_VS).unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = run(&["diff", "-f", f]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.starts_with("diff -u -N live/VirtualService.blog-system.was-canary merged/VirtualService.blog-system.was-canary\n--- live/VirtualService.blog-system.was-canary\n+++ merged/VirtualService.blog-system.was-canary\n@@ -0,0 +1,"), "{out}");
    let (code, out, err) = run(&["apply", "-f", f]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out, "virtualservice/was-canary created\n",
        "kubectl's verdict"
    );
    let (code, out, err) = run(&["diff", "-f", f]);
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    // The same object again: nothing to hand over, and said so at once.
    let (code, out, err) = run(&["apply", "-f", f]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "virtualservice/was-canary unchanged\n"),
        "{err}"
    );
    std::fs::write(&file, CANARY_VS.replace("timeout: 5s", "timeout: 7s")).unwrap();
    let (code, out, _) = run(&["diff", "-f", f]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("\n-    timeout: 5s\n+    timeout: 7s\n"),
        "{out}"
    );
    let (code, _, _) = run(&["diff", "-f", "/nonexistent/x.yaml"]);
    assert_eq!(code, Some(2));
    std::fs::write(&file, CANARY_VS).unwrap();

    let (code, out, _) = run(&["get", "vs", "-n", "blog-system", "-o", "name"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("virtualservice.networking.istio.io/was-canary\n"),
        "{out}"
    );

    // describe: the object's history from the control plane.
    let (code, out, err) = run(&["describe", "vs", "was-canary", "-n", "blog-system"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with(
            "Name:         was-canary\nNamespace:    blog-system\nLabels:       app=was\n"
        ),
        "{out}"
    );
    assert!(out.contains("\n  Normal  Applied "), "{out}");
    assert!(out.contains("created in config version"), "{out}");
    let acked = support::eventually(
        std::time::Duration::from_secs(20),
        "an ack in the events",
        || {
            let (_, out, _) = run(&["describe", "vs", "was-canary", "-n", "blog-system"]);
            out.contains(" acked by ").then_some(out)
        },
    );
    assert!(acked.contains("  Normal  Pushed "), "{acked}");

    // delete: the user's own files are refused with file:line; what apply added goes.
    let (code, _, err) = run(&["delete", "vs", "web-vsvc", "-n", "blog-system"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("50-istio-traffic.yaml:80") && err.contains("edit or remove it there"),
        "{err}"
    );
    let (code, out, err) = run(&["delete", "-f", f]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "virtualservice.networking.istio.io \"was-canary\" deleted\n"
    );
    let (code, _, err) = run(&["get", "vs", "was-canary", "-n", "blog-system"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "Error from server (NotFound): virtualservices.networking.istio.io \"was-canary\" not found\n"
    );
    let (code, _, err) = run(&["delete", "vs", "was-canary", "-n", "blog-system"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("(NotFound)"), "{err}");
    let (code, _, _) = run(&[
        "delete",
        "vs",
        "was-canary",
        "-n",
        "blog-system",
        "--ignore-not-found",
    ]);
    assert_eq!(code, Some(0));
    // An applied copy of an object of the user's files stands in for it until deleted.
    let over = dir.path().join("was-vsvc.yaml");
    std::fs::write(
        &over,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: was-vsvc\n  namespace: blog-system\nspec:\n  hosts:\n  - was-service\n  http:\n  - name: was-default\n    timeout: 9s\n    route:\n    - destination:\n        host: was-service\n        port:\n          number: 8080\n",
    )
    .unwrap();
    let over = over.to_str().unwrap();
    let (code, _, err) = run(&["apply", "-f", over]);
    assert_eq!(code, Some(0), "{err}");
    let timeout_args = [
        "get",
        "vs",
        "was-vsvc",
        "-n",
        "blog-system",
        "-o",
        "jsonpath={.spec.http[0].timeout}",
    ];
    assert_eq!(run(&timeout_args).1, "9s");
    let (code, out, err) = run(&["delete", "vs", "was-vsvc", "-n", "blog-system"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("virtualservice.networking.istio.io \"was-vsvc\" deleted\n  (the copy in "),
        "{out}"
    );
    assert!(
        out.contains("50-istio-traffic.yaml:144 is in force again)"),
        "{out}"
    );
    assert_eq!(run(&timeout_args).1, "");

    // A broken edit of the user's files is refused, and describe says why.
    let traffic = manifests.path().join("50-istio-traffic.yaml");
    let good = std::fs::read_to_string(&traffic).unwrap();
    std::fs::write(
        &traffic,
        good.replace("    timeout: 10s\n", "    timeout: 10s\n    timeot: 5s\n"),
    )
    .unwrap();
    let refused = support::eventually(
        std::time::Duration::from_secs(20),
        "a Refused event",
        || {
            let (_, out, _) = run(&["describe", "vs", "web-vsvc", "-n", "blog-system"]);
            out.contains("  Warning  Refused ").then_some(out)
        },
    );
    assert!(
        refused.contains("50-istio-traffic.yaml:123") && refused.contains("timeot"),
        "{refused}"
    );
    std::fs::write(&traffic, good).unwrap();
    // The example itself still serves.
    let r = support::get(&format!("{}/api/posts", s.http_base()));
    assert_eq!(r.status, 200, "{r:?}");
    s.down();
}
