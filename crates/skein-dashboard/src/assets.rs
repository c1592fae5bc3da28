//! The page's files, embedded at build time (`build.rs`), served with their content type:
//! hashed `assets/*` cached for a year, `index.html` never cached, and `index.html` for any
//! path without an extension (the page routes on the client).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// Whether this build has the page.
pub fn present() -> bool {
    embedded::ASSETS.iter().any(|(n, _)| *n == "index.html")
}

fn find(name: &str) -> Option<&'static [u8]> {
    embedded::ASSETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

pub fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

const MISSING: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>skein dashboard</title></head>\n<body><h1>skein dashboard</h1><p>The dashboard's page is not in this build. Run <code>./scripts/build-ui</code> and build skein again; the API under <a href=\"/api/namespaces\">/api</a> works without it.</p></body></html>\n";

fn reply(
    status: StatusCode,
    ct: &'static str,
    cache: &'static str,
    body: &'static [u8],
) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

/// The answer for a path outside `/api` and `/jaeger`.
pub fn serve(path: &str) -> Response {
    let name = path.trim_start_matches('/');
    let name = if name.is_empty() { "index.html" } else { name };
    if name.split('/').any(|s| s == ".." || s.is_empty()) {
        return crate::reply::error(StatusCode::NOT_FOUND, "no such file");
    }
    if let Some(body) = find(name) {
        let cache = if name.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return reply(StatusCode::OK, content_type(name), cache, body);
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains('.') && name != "index.html" {
        return crate::reply::error(StatusCode::NOT_FOUND, format!("no such file: /{name}"));
    }
    match find("index.html") {
        Some(body) => reply(StatusCode::OK, "text/html; charset=utf-8", "no-cache", body),
        None => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "no-cache",
            MISSING.as_bytes(),
        ),
    }
}
