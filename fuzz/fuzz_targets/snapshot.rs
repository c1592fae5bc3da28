//! The snapshot decoder: arbitrary bytes as a snapshot's JSON (what a proxy reads from the
//! control stream, or from `--snapshot FILE`).
//!
//! Invariants: nothing panics; `from_json` accepts exactly what parses and validates; a
//! snapshot that validates re-encodes (`to_json`) and decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let decoded = Snapshot::from_json(data);
    let parsed: Result<Snapshot, _> = serde_json::from_slice(data);
    let Ok(parsed) = parsed else {
        assert!(
            decoded.is_err(),
            "from_json accepted JSON that does not parse"
        );
        return;
    };
    let validated = parsed.validate();
    assert_eq!(
        decoded.is_ok(),
        validated.is_ok(),
        "from_json disagrees with parse + validate"
    );
    for e in parsed.dangling_references() {
        let _ = e.to_string();
    }
    let Ok(snap) = decoded else {
        return;
    };
    assert_eq!(snap, parsed);

    let json = snap.to_json();
    assert!(!json.is_empty(), "to_json failed on a decoded snapshot");
    let again = match Snapshot::from_json(json.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("a valid snapshot's own JSON does not decode: {e}\n{json}"),
    };
    assert_eq!(snap, again, "re-encoding changed the snapshot");
});
