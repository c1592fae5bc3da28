//! The JWT parser and the JWKS key set of RequestAuthentication.
//!
//! Input: a token, a newline, then a JWKS document.
//!
//! Invariants: nothing panics; a token longer than `MAX_TOKEN_BYTES` is refused as
//! malformed; a parsed token's signed part is its first two segments and its payload segment
//! the second; a key set that parses verifies (or refuses) a parsed token the same way twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_proxy::fuzzing::{JwtError, KeySet, MAX_TOKEN_BYTES, parse_jwt};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (token, jwks) = text.split_once('\n').unwrap_or((text, ""));
    let parsed = parse_jwt(token);
    if token.len() > MAX_TOKEN_BYTES {
        assert_eq!(parsed.as_ref().err(), Some(&JwtError::BadFormat));
    }
    let keys = KeySet::parse(jwks);
    if let Ok(t) = &parsed {
        let mut segs = token.split('.');
        let (h, p) = (segs.next().unwrap_or(""), segs.next().unwrap_or(""));
        assert_eq!(t.signed, format!("{h}.{p}"));
        assert_eq!(t.payload_b64, p);
        if let Ok(k) = &keys {
            assert_eq!(k.verify(t), k.verify(t));
        }
    }
});
