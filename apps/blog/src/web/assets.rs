//! The static site, embedded in the binary.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    pub cache_control: &'static str,
    /// Strong validator computed at compile time.
    pub etag: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const HTML_CACHE: &str = "no-cache";
const ASSET_CACHE: &str = "public, max-age=3600";

/// FNV-1a, for ETags computed at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 hex digits + `"`.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($file:literal, $ctype:expr, $cache:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/static/", $file));
        const TAG: [u8; 18] = etag_bytes(BODY);
        Asset {
            body: BODY,
            content_type: $ctype,
            cache_control: $cache,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => "\"0\"",
            },
        }
    }};
}

pub const INDEX: Asset = asset!("index.html", HTML, HTML_CACHE);
pub const POST: Asset = asset!("post.html", HTML, HTML_CACHE);
pub const BOARD: Asset = asset!("board.html", HTML, HTML_CACHE);
pub const NOT_FOUND: Asset = asset!("404.html", HTML, HTML_CACHE);
pub const STYLE: Asset = asset!("style.css", "text/css; charset=utf-8", ASSET_CACHE);
pub const SCRIPT: Asset = asset!("app.js", "text/javascript; charset=utf-8", ASSET_CACHE);
pub const FAVICON: Asset = asset!("favicon.svg", "image/svg+xml", ASSET_CACHE);

/// Looks up a file under `/assets/`.
pub fn by_name(name: &str) -> Option<Asset> {
    match name {
        "style.css" => Some(STYLE),
        "app.js" => Some(SCRIPT),
        "favicon.svg" => Some(FAVICON),
        _ => None,
    }
}

impl Asset {
    /// The asset with status 200, or 304 when the client's `If-None-Match` matches.
    pub fn respond(self, request_headers: &HeaderMap) -> Response {
        self.respond_with(StatusCode::OK, request_headers)
    }

    /// The asset with `status` (conditional requests only for 200).
    pub fn respond_with(self, status: StatusCode, request_headers: &HeaderMap) -> Response {
        let not_modified = status == StatusCode::OK
            && request_headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| {
                    let t = t.trim();
                    t == "*" || t.trim_start_matches("W/") == self.etag
                });
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(self.cache_control),
            ),
            (header::ETAG, HeaderValue::from_static(self.etag)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        if not_modified {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (status, headers, self.body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_differ() {
        assert_eq!(INDEX.etag.len(), 18);
        assert!(INDEX.etag.starts_with('"') && INDEX.etag.ends_with('"'));
        assert_ne!(INDEX.etag, BOARD.etag);
        assert_ne!(STYLE.etag, SCRIPT.etag);
    }

    #[test]
    fn conditional_get() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(STYLE.etag));
        assert_eq!(STYLE.respond(&h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(STYLE.respond(&HeaderMap::new()).status(), StatusCode::OK);
        assert_eq!(
            NOT_FOUND.respond_with(StatusCode::NOT_FOUND, &h).status(),
            StatusCode::NOT_FOUND
        );
    }
}
