//! The YAML manifest loader and validation: arbitrary bytes as one manifest file.
//!
//! Invariants: nothing panics; `load_str` fails exactly when `load_str_partial` reports
//! errors; every error and diagnostic points at a line of the file (1..=lines+1, counting
//! line breaks as YAML does); the diagnostics come sorted by file and line, as `validate`
//! promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader refuses a file that is not UTF-8 before parsing anything.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (manifests, errors) = skein_api::load_str_partial("fuzz.yaml", text);
    let full = skein_api::load_str("fuzz.yaml", text);
    assert_eq!(
        full.is_ok(),
        errors.is_empty(),
        "load_str disagrees with load_str_partial"
    );

    // A file of n lines has lines 1..=n; one more for a document that starts after the last
    // line break (an error "at end of input"). The YAML parser's line breaks are those of
    // YAML 1.1: CR LF, and CR, LF, NEL, LS and PS alone.
    let breaks = text
        .replace("\r\n", "\n")
        .matches(['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}'])
        .count();
    let last_line = breaks + 1;
    for e in &errors {
        let _ = e.to_string();
        if let Some(at) = e.at() {
            assert!(
                (1..=last_line).contains(&at.line),
                "load error points at line {} of a {}-line file: {e}",
                at.line,
                last_line - 1
            );
        }
    }

    let diagnostics = skein_api::validate(&manifests);
    for d in &diagnostics {
        let _ = d.to_string();
        assert!(
            (1..=last_line).contains(&d.source.line),
            "diagnostic points at line {} of a {}-line file: {d}",
            d.source.line,
            last_line - 1
        );
    }
    assert!(
        diagnostics.windows(2).all(|w| w[0].source <= w[1].source),
        "diagnostics are not sorted by file and line"
    );
});
