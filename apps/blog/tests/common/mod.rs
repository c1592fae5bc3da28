//! Shared by the integration tests: a small HTTP client and the CRUD suite that runs
//! against blog-was on any backend.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// An answer read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} (status {})",
                self.text(),
                self.status
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A keep-alive HTTP/1 client bound to one base URL.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub base: String,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: base.into(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Resp> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .with_context(|| format!("{method} {path} timed out"))?
            .with_context(|| format!("{method} {path}"))?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn json(&self, method: Method, path: &str, body: &Value) -> Result<Resp> {
        self.send(
            method,
            path,
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(body)?),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<Resp> {
        self.send(Method::DELETE, path, &[], None).await
    }
}

/// What the was under test identifies as.
#[derive(Debug, Clone)]
pub struct Expect {
    pub pod: String,
    pub version: String,
    pub max_body_bytes: usize,
}

/// Checks the identity headers every was response carries.
pub fn check_identity(r: &Resp, e: &Expect, what: &str) -> Result<()> {
    ensure!(
        r.header("x-was-version") == Some(e.version.as_str()),
        "{what}: x-was-version is {:?}",
        r.header("x-was-version")
    );
    ensure!(
        r.header("x-was-pod") == Some(e.pod.as_str()),
        "{what}: x-was-pod is {:?}",
        r.header("x-was-pod")
    );
    Ok(())
}

/// Checks an error answer: its status, the JSON shape, no internals, identity headers.
pub fn check_error(r: &Resp, status: StatusCode, code: &str, e: &Expect, what: &str) -> Result<()> {
    ensure!(
        r.status == status,
        "{what}: expected {status}, got {} with {}",
        r.status,
        r.text()
    );
    ensure!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content-type {:?}",
        r.header("content-type")
    );
    let v = r.json();
    ensure!(v["error"] == json!(code), "{what}: error code in {v}");
    let msg = v["message"].as_str().context("message is not a string")?;
    ensure!(!msg.is_empty(), "{what}: empty message");
    let lower = msg.to_lowercase();
    for leak in [
        "sqlx",
        "select ",
        "insert ",
        "sqlite",
        "mysql",
        "error returned from database",
        "panicked",
    ] {
        ensure!(
            !lower.contains(leak),
            "{what}: message leaks internals: {msg}"
        );
    }
    ensure!(
        v.as_object().is_some_and(|o| o.len() == 2),
        "{what}: unexpected fields in {v}"
    );
    check_identity(r, e, what)
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z')
}

/// Everything in the database, via the API.
async fn snapshot(c: &Http) -> Result<Value> {
    let r = c.get("/api/posts?page=0&size=100").await?;
    ensure!(r.status == StatusCode::OK, "snapshot: {}", r.status);
    Ok(r.json())
}

fn titles(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["title"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The CRUD suite. Expects a fresh database: only the seeded "First Post".
pub async fn crud_suite(c: &Http, e: &Expect) -> Result<()> {
    // --- Seed ---------------------------------------------------------------------------
    let r = c.get("/api/posts").await?;
    ensure!(
        r.status == StatusCode::OK,
        "list: {} {}",
        r.status,
        r.text()
    );
    check_identity(&r, e, "list")?;
    ensure!(
        r.header("x-total-count") == Some("1"),
        "seed count {:?}",
        r.header("x-total-count")
    );
    let seed = r.json();
    ensure!(seed.as_array().map(Vec::len) == Some(1), "seed: {seed}");
    let first = &seed[0];
    ensure!(first["title"] == json!("First Post"), "seed: {seed}");
    for field in ["id", "title", "content", "author", "createdAt", "updatedAt"] {
        ensure!(!first[field].is_null(), "seed lacks {field}: {first}");
    }
    ensure!(
        is_rfc3339_utc(first["createdAt"].as_str().unwrap_or_default()),
        "createdAt: {first}"
    );
    let first_id = first["id"].as_i64().context("id is not a number")?;
    let r = c.get(&format!("/api/posts/{first_id}")).await?;
    ensure!(
        r.status == StatusCode::OK && r.json() == *first,
        "get seed: {}",
        r.text()
    );

    // --- Create ---------------------------------------------------------------------------
    let mut ids = Vec::new();
    for (title, author) in [("Alpha", "kim"), ("Bravo", "lee"), ("Charlie", "")] {
        let body = json!({"title": title, "content": format!("Body of {title}.\nSecond line."), "author": author});
        let r = c.json(Method::POST, "/api/posts", &body).await?;
        ensure!(
            r.status == StatusCode::CREATED,
            "create {title}: {} {}",
            r.status,
            r.text()
        );
        check_identity(&r, e, "create")?;
        let p = r.json();
        let id = p["id"].as_i64().context("created id")?;
        ensure!(
            r.header("location") == Some(format!("/api/posts/{id}").as_str()),
            "location {:?}",
            r.header("location")
        );
        ensure!(
            p["title"] == json!(title) && p["content"] == body["content"],
            "created: {p}"
        );
        let want_author = if author.is_empty() {
            "anonymous"
        } else {
            author
        };
        ensure!(p["author"] == json!(want_author), "author: {p}");
        ensure!(
            is_rfc3339_utc(p["createdAt"].as_str().unwrap_or_default()),
            "createdAt: {p}"
        );
        ensure!(p["createdAt"] == p["updatedAt"], "fresh post: {p}");
        let g = c.get(&format!("/api/posts/{id}")).await?;
        ensure!(
            g.status == StatusCode::OK && g.json() == p,
            "get {id}: {}",
            g.text()
        );
        ids.push(id);
    }
    let (alpha, bravo, charlie) = (ids[0], ids[1], ids[2]);

    // --- List order and paging --------------------------------------------------------------
    let r = c.get("/api/posts").await?;
    ensure!(
        r.header("x-total-count") == Some("4"),
        "count {:?}",
        r.header("x-total-count")
    );
    ensure!(
        titles(&r.json()) == ["Charlie", "Bravo", "Alpha", "First Post"],
        "order: {:?}",
        titles(&r.json())
    );
    let r = c.get("/api/posts?page=0&size=2").await?;
    ensure!(
        titles(&r.json()) == ["Charlie", "Bravo"],
        "page 0: {}",
        r.text()
    );
    ensure!(r.header("x-total-count") == Some("4"), "paged count");
    let r = c.get("/api/posts?page=1&size=2").await?;
    ensure!(
        titles(&r.json()) == ["Alpha", "First Post"],
        "page 1: {}",
        r.text()
    );
    let r = c.get("/api/posts?page=2&size=2").await?;
    ensure!(
        r.status == StatusCode::OK && r.json() == json!([]),
        "page 2: {}",
        r.text()
    );
    let r = c.get("/api/posts?page=1&size=3").await?;
    ensure!(
        titles(&r.json()) == ["First Post"],
        "page 1 size 3: {}",
        r.text()
    );
    let r = c.get("/api/posts?size=1").await?;
    ensure!(titles(&r.json()) == ["Charlie"], "size 1");
    let r = c.get("/api/posts?size=100").await?;
    ensure!(r.status == StatusCode::OK, "size 100");
    for q in [
        "size=0",
        "size=101",
        "size=-1",
        "size=x",
        "page=-1",
        "page=x",
        "page=1.5",
        "page=18446744073709551615&size=100",
        "page=1&page=2",
    ] {
        let r = c.get(&format!("/api/posts?{q}")).await?;
        check_error(
            &r,
            StatusCode::BAD_REQUEST,
            if q == "page=1&page=2" {
                "bad_request"
            } else {
                "invalid_paging"
            },
            e,
            q,
        )?;
    }

    // --- Update ----------------------------------------------------------------------------
    let before = c.get(&format!("/api/posts/{alpha}")).await?.json();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let upd = json!({"title": "Alpha (edited)", "content": "New body", "author": "kim2"});
    let r = c
        .json(Method::PUT, &format!("/api/posts/{alpha}"), &upd)
        .await?;
    ensure!(
        r.status == StatusCode::OK,
        "update: {} {}",
        r.status,
        r.text()
    );
    check_identity(&r, e, "update")?;
    let p = r.json();
    ensure!(
        p["id"] == json!(alpha)
            && p["title"] == upd["title"]
            && p["content"] == upd["content"]
            && p["author"] == upd["author"],
        "updated: {p}"
    );
    ensure!(
        p["createdAt"] == before["createdAt"],
        "createdAt changed: {p}"
    );
    ensure!(
        p["updatedAt"].as_str() >= before["updatedAt"].as_str(),
        "updatedAt: {p}"
    );
    let g = c.get(&format!("/api/posts/{alpha}")).await?;
    ensure!(g.json() == p, "after update: {}", g.text());

    // --- Delete ----------------------------------------------------------------------------
    let r = c.delete(&format!("/api/posts/{bravo}")).await?;
    ensure!(
        r.status == StatusCode::NO_CONTENT && r.body.is_empty(),
        "delete: {} {}",
        r.status,
        r.text()
    );
    check_identity(&r, e, "delete")?;
    check_error(
        &c.get(&format!("/api/posts/{bravo}")).await?,
        StatusCode::NOT_FOUND,
        "not_found",
        e,
        "get deleted",
    )?;
    check_error(
        &c.delete(&format!("/api/posts/{bravo}")).await?,
        StatusCode::NOT_FOUND,
        "not_found",
        e,
        "delete twice",
    )?;
    let r = c.get("/api/posts").await?;
    ensure!(r.header("x-total-count") == Some("3"), "count after delete");
    ensure!(
        titles(&r.json()) == ["Charlie", "Alpha (edited)", "First Post"],
        "after delete: {}",
        r.text()
    );

    // --- Bad input changes nothing ------------------------------------------------------------
    let snap = snapshot(c).await?;
    const JSON_CT: &[(&str, &str)] = &[("content-type", "application/json")];
    let json_ct = JSON_CT;
    let post = |body: &'static [u8], ct: &'static [(&'static str, &'static str)]| {
        let c = c.clone();
        async move {
            c.send(Method::POST, "/api/posts", ct, Some(body.to_vec()))
                .await
        }
    };
    let cases: Vec<(&str, Resp, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            post(b"{\"title\": ", json_ct).await?,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "not an object",
            post(b"[1,2]", json_ct).await?,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "title not a string",
            post(b"{\"title\": 5}", json_ct).await?,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "empty body",
            post(b"", json_ct).await?,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "text/plain",
            post(b"{\"title\":\"x\"}", &[("content-type", "text/plain")]).await?,
            StatusCode::BAD_REQUEST,
            "unsupported_media_type",
        ),
        (
            "form",
            post(
                b"title=x",
                &[("content-type", "application/x-www-form-urlencoded")],
            )
            .await?,
            StatusCode::BAD_REQUEST,
            "unsupported_media_type",
        ),
        (
            "no content type",
            post(b"{\"title\":\"x\"}", &[]).await?,
            StatusCode::BAD_REQUEST,
            "unsupported_media_type",
        ),
        (
            "missing title",
            post(b"{\"content\":\"x\"}", json_ct).await?,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            "null title",
            post(b"{\"title\":null}", json_ct).await?,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            "blank title",
            post(b"{\"title\":\"  \\t \"}", json_ct).await?,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
    ];
    for (what, r, status, code) in &cases {
        check_error(r, *status, code, e, what)?;
    }
    let long = json!({"title": "x".repeat(201), "content": "c"});
    check_error(
        &c.json(Method::POST, "/api/posts", &long).await?,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        e,
        "long title",
    )?;
    let big = json!({"title": "big", "content": "x".repeat(e.max_body_bytes + 1024)});
    check_error(
        &c.json(Method::POST, "/api/posts", &big).await?,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        e,
        "big body",
    )?;
    check_error(
        &c.json(
            Method::PUT,
            &format!("/api/posts/{alpha}"),
            &json!({"title": ""}),
        )
        .await?,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        e,
        "put blank",
    )?;
    check_error(
        &c.json(Method::PUT, &format!("/api/posts/{alpha}"), &long)
            .await?,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        e,
        "put long",
    )?;
    check_error(
        &c.json(Method::PUT, &format!("/api/posts/{alpha}"), &big)
            .await?,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        e,
        "put big",
    )?;
    check_error(
        &c.send(
            Method::PUT,
            &format!("/api/posts/{alpha}"),
            json_ct,
            Some(b"{oops".to_vec()),
        )
        .await?,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        e,
        "put malformed",
    )?;
    check_error(
        &c.send(
            Method::PUT,
            &format!("/api/posts/{alpha}"),
            &[("content-type", "text/plain")],
            Some(b"{}".to_vec()),
        )
        .await?,
        StatusCode::BAD_REQUEST,
        "unsupported_media_type",
        e,
        "put text/plain",
    )?;
    let valid = json!({"title": "ghost", "content": "boo"});
    for path in [
        "/api/posts/999999",
        "/api/posts/abc",
        "/api/posts/0",
        "/api/posts/-1",
        "/api/posts/99999999999999999999",
        "/api/posts/1.5",
    ] {
        check_error(
            &c.get(path).await?,
            StatusCode::NOT_FOUND,
            "not_found",
            e,
            &format!("GET {path}"),
        )?;
        check_error(
            &c.json(Method::PUT, path, &valid).await?,
            StatusCode::NOT_FOUND,
            "not_found",
            e,
            &format!("PUT {path}"),
        )?;
        check_error(
            &c.delete(path).await?,
            StatusCode::NOT_FOUND,
            "not_found",
            e,
            &format!("DELETE {path}"),
        )?;
    }
    check_error(
        &c.get("/api/nothing-here").await?,
        StatusCode::NOT_FOUND,
        "not_found",
        e,
        "unknown route",
    )?;
    check_error(
        &c.get("/").await?,
        StatusCode::NOT_FOUND,
        "not_found",
        e,
        "root",
    )?;
    check_error(
        &c.send(Method::PATCH, "/api/posts", &[], None).await?,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        e,
        "PATCH",
    )?;
    check_error(
        &c.json(Method::POST, &format!("/api/posts/{alpha}"), &valid)
            .await?,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        e,
        "POST to an item",
    )?;
    let after = snapshot(c).await?;
    ensure!(
        after == snap,
        "bad requests changed the data:\nbefore {snap}\nafter  {after}"
    );
    ensure!(
        c.get("/api/posts").await?.header("x-total-count") == Some("3"),
        "count changed"
    );

    // A 200-character title is fine; Unicode counts characters, not bytes.
    let edge = json!({"title": "é".repeat(200), "content": "ok"});
    let r = c.json(Method::POST, "/api/posts", &edge).await?;
    ensure!(
        r.status == StatusCode::CREATED,
        "200-char title: {} {}",
        r.status,
        r.text()
    );
    ensure!(
        r.json()["title"] == edge["title"],
        "unicode title round trip"
    );
    let id = r.json()["id"].as_i64().context("id")?;
    ensure!(
        c.delete(&format!("/api/posts/{id}")).await?.status == StatusCode::NO_CONTENT,
        "cleanup"
    );
    ensure!(charlie > alpha, "ids increase");

    // --- Actuator --------------------------------------------------------------------------
    let r = c.get("/actuator/health").await?;
    ensure!(
        r.status == StatusCode::OK,
        "health: {} {}",
        r.status,
        r.text()
    );
    ensure!(
        r.json() == json!({"status":"UP","components":{"db":{"status":"UP"}}}),
        "health: {}",
        r.text()
    );
    check_identity(&r, e, "health")?;
    let r = c.get("/actuator/info").await?;
    ensure!(r.status == StatusCode::OK, "info");
    let v = r.json();
    ensure!(
        v == json!({"app":{"name":"blog-was","version":env!("CARGO_PKG_VERSION")},"pod":e.pod,"version":e.version}),
        "info: {v}"
    );
    Ok(())
}

/// Checks the was reports its database DOWN and answers API calls with 503.
pub async fn expect_db_down(c: &Http, e: &Expect) -> Result<()> {
    let started = std::time::Instant::now();
    let r = c.get("/actuator/health").await?;
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "health took {:?}",
        started.elapsed()
    );
    ensure!(
        r.status == StatusCode::SERVICE_UNAVAILABLE,
        "health: {} {}",
        r.status,
        r.text()
    );
    ensure!(
        r.json() == json!({"status":"DOWN","components":{"db":{"status":"DOWN"}}}),
        "health: {}",
        r.text()
    );
    check_identity(&r, e, "health down")?;
    check_error(
        &c.get("/api/posts").await?,
        StatusCode::SERVICE_UNAVAILABLE,
        "db_unavailable",
        e,
        "list, db down",
    )?;
    check_error(
        &c.get("/api/posts/1").await?,
        StatusCode::SERVICE_UNAVAILABLE,
        "db_unavailable",
        e,
        "get, db down",
    )?;
    check_error(
        &c.json(Method::POST, "/api/posts", &json!({"title": "t"}))
            .await?,
        StatusCode::SERVICE_UNAVAILABLE,
        "db_unavailable",
        e,
        "create, db down",
    )?;
    // Validation still comes first and needs no database.
    check_error(
        &c.json(Method::POST, "/api/posts", &json!({"title": ""}))
            .await?,
        StatusCode::BAD_REQUEST,
        "validation_failed",
        e,
        "invalid, db down",
    )?;
    let r = c.get("/actuator/info").await?;
    if r.status != StatusCode::OK {
        bail!("info should not need the database: {}", r.status);
    }
    Ok(())
}
