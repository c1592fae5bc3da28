//! `skein analyze` as istioctl's: one fixture per analyzer code and per pitfall (each names,
//! in its closing comments, the findings it must give and the exit status), golden outputs on
//! the example, thresholds, suppressions, unreadable input, and the running system's config.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::*;

fn fixtures() -> PathBuf {
    repo_root().join("crates/skein/tests/fixtures/analyze")
}

/// `skein analyze ARGS...` run from `dir`.
fn analyze(sk: &Skein, dir: &Path, args: &[&str]) -> Output {
    let mut c = sk.cmd();
    c.current_dir(dir).arg("analyze").args(args);
    c.output().expect("run skein analyze")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// istioctl's `Level [CODE] (Kind name.namespace file:line)` of each log line.
fn prefixes(log: &str) -> Vec<String> {
    log.lines()
        .map(|l| match l.find(") ") {
            Some(i) => l[..=i].to_string(),
            None => l.to_string(),
        })
        .collect()
}

#[test]
fn every_code_and_pitfall_has_a_fixture_that_reports_it() {
    let sk = Skein::new();
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && p.file_stem().unwrap() != "bad-yaml"
        })
        .collect();
    files.sort();
    let mut covered = std::collections::BTreeSet::new();
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let expect: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(str::to_string)
            .collect();
        let exit: i32 = text
            .lines()
            .find_map(|l| l.strip_prefix("# exit: "))
            .unwrap_or_else(|| panic!("{name}: no `# exit:` line"))
            .parse()
            .unwrap();
        let out = analyze(&sk, &fixtures(), &[name]);
        assert_eq!(
            prefixes(&stdout(&out)),
            expect,
            "{name}: findings\n{}",
            stdout(&out)
        );
        assert_eq!(out.status.code(), Some(exit), "{name}: exit status");
        // The same findings as JSON, with istioctl's fields; JSON output exits 0 as istioctl.
        let out = analyze(&sk, &fixtures(), &[name, "-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "{name}: -o json exit status");
        let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(items.len(), expect.len(), "{name}: JSON items");
        for (item, line) in items.iter().zip(&expect) {
            let code = item["code"].as_str().unwrap();
            let want = format!(
                "{} [{code}] ({} {})",
                item["level"].as_str().unwrap(),
                item["origin"].as_str().unwrap(),
                item["reference"].as_str().unwrap()
            );
            assert_eq!(&want, line, "{name}: JSON item {item}");
            let url = item["documentationUrl"].as_str().unwrap();
            assert!(
                url.contains(&code.to_ascii_lowercase()),
                "{name}: documentationUrl {url}"
            );
            assert!(!item["message"].as_str().unwrap().is_empty());
            covered.insert(code.to_string());
        }
    }
    for code in [
        "IST0101", "IST0102", "IST0106", "IST0108", "IST0109", "IST0110", "IST0111", "IST0112",
        "IST0113", "IST0118", "IST0127", "IST0128", "IST0129", "IST0130", "IST0131", "IST0132",
        "IST0133", "IST0145", "IST0162", "IST0173", "SKN0001", "SKN0002", "SKN0003", "SKN0004",
        "SKN0005", "SKN0006", "SKN0007", "SKN0008", "SKN0009", "SKN0030", "SKN0301",
    ] {
        assert!(covered.contains(code), "no fixture reports {code}");
    }
}

#[test]
fn the_example_analyzes_clean_apart_from_its_pitfalls_golden_log_and_json() {
    let sk = Skein::new();
    let root = repo_root();
    for (format, golden) in [("log", "blog-system.log"), ("json", "blog-system.json")] {
        let out = analyze(&sk, &root, &["examples/blog-system", "-o", format]);
        assert_eq!(out.status.code(), Some(0), "{format}: exit status");
        let want = std::fs::read_to_string(fixtures().join("golden").join(golden)).unwrap();
        assert_eq!(
            stdout(&out),
            want,
            "{format}: output differs from the golden file"
        );
    }
    // Warnings fail the run when the threshold says so.
    let out = analyze(
        &sk,
        &root,
        &["examples/blog-system", "--failure-threshold", "Warning"],
    );
    assert_eq!(out.status.code(), Some(79));
}

/// web-vsvc's `primary` route belongs to web's Rollout: a canary weight written into the
/// example by hand is the seed's GitOps fight, SKN0009.
#[test]
fn a_hand_edited_weight_on_the_examples_rollout_managed_route_is_skn0009() {
    let sk = Skein::new();
    let dir = manifests_copy("examples/blog-system");
    let file = dir.path().join("50-istio-traffic.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let at = "        subset: stable\n      weight: 100\n    - destination:\n        host: web-service\n        subset: canary\n      weight: 0\n";
    assert!(text.contains(at), "the primary route's weights");
    std::fs::write(
        &file,
        text.replace(
            at,
            &at.replace("weight: 100", "weight: 90")
                .replace("weight: 0", "weight: 10"),
        ),
    )
    .unwrap();
    let out = analyze(&sk, dir.path(), &["."]);
    let log = stdout(&out);
    assert!(
        log.lines().any(|l| l.starts_with(
            "Warning [SKN0009] (VirtualService web-vsvc.blog-system 50-istio-traffic.yaml:"
        )),
        "{log}"
    );
    // Without the edit, the example has no SKN0009.
    let clean = stdout(&analyze(&sk, &repo_root(), &["examples/blog-system"]));
    assert!(!clean.contains("SKN0009"), "{clean}");
}

#[test]
fn thresholds_suppressions_and_unreadable_input() {
    let sk = Skein::new();
    let dir = fixtures();
    // Below the output threshold: nothing printed, istioctl's line on stderr.
    let out = analyze(&sk, &dir, &["skn0006.yaml", "--output-threshold", "Error"]);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "\u{2714} No validation issues found when analyzing skn0006.yaml.\n"
    );
    assert_eq!(out.status.code(), Some(0));
    let out = analyze(&sk, &dir, &["ist0118.yaml", "--failure-threshold", "Info"]);
    assert_eq!(out.status.code(), Some(79));
    // -S with globs on kind and name.
    let out = analyze(&sk, &dir, &["ist0101.yaml", "-S", "IST0101=Virtual* api.*"]);
    assert_eq!(stdout(&out), "");
    assert_eq!(out.status.code(), Some(0));
    let out = analyze(
        &sk,
        &dir,
        &["ist0101.yaml", "-S", "IST0101=VirtualService other.*"],
    );
    assert_eq!(out.status.code(), Some(79));
    // YAML that does not parse: 65, with the file and line.
    let out = analyze(&sk, &dir, &["bad-yaml.yaml"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad-yaml.yaml:5"));
    // Several files with -f.
    let out = analyze(&sk, &dir, &["-f", "ist0101.yaml", "-f", "ist0102.yaml"]);
    assert_eq!(
        prefixes(&stdout(&out)),
        [
            "Error [IST0101] (VirtualService api.demo ist0101.yaml:43)",
            "Info [IST0102] (Namespace demo ist0102.yaml:4)"
        ]
    );
    // YAML output: istioctl's fields.
    let out = analyze(&sk, &dir, &["ist0102.yaml", "-o", "yaml"]);
    let text = stdout(&out);
    for field in [
        "code: IST0102",
        "level: Info",
        "origin: Namespace demo",
        "reference: ist0102.yaml:4",
        "documentationUrl: https://istio.io/v1.26/docs/reference/config/analysis/ist0102/",
    ] {
        assert!(text.contains(field), "{field} missing from\n{text}");
    }
}

#[test]
fn without_arguments_analyze_reads_the_running_system_and_up_prints_the_warnings() {
    let sk = Skein::new();
    let out = analyze(&sk, &repo_root(), &[]);
    assert_eq!(out.status.code(), Some(1), "not running: an error");
    let up = sk.up("examples/blog-system", &[]);
    let up_err = String::from_utf8_lossy(&up.stderr);
    assert!(
        up_err.contains("Warning [SKN0006]") && up_err.contains("Warning [SKN0007]"),
        "skein up prints the warnings it finds:\n{up_err}"
    );
    let out = analyze(&sk, &repo_root(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        prefixes(&stdout(&out)),
        [
            "Warning [SKN0006] (VirtualService web-vsvc.blog-system 50-istio-traffic.yaml:127)",
            "Warning [SKN0007] (AuthorizationPolicy was-authz.blog-system 60-istio-security.yaml:65)",
        ]
    );
    sk.down();
}
