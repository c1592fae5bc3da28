//! The blog: the mesh's reference workload.
//!
//! * [`was`] — `blog-was`, the REST API (axum + sqlx over SQLite or MySQL/MariaDB).
//! * [`web`] — `blog-web`, the static site and the `/api` reverse proxy in front of the was.
//! * [`trace`] — joining the mesh's traces: trace headers copied, spans exported over OTLP.
//! * [`hosts`] — name resolution through the runtime's `SKEIN_HOSTS` file, then DNS.
//!
//! Both servers can be run in-process: [`was::start`] and [`web::start`] bind, serve in the
//! background and hand back a [`server::ServerHandle`].
#![forbid(unsafe_code)]

pub mod hosts;
pub mod metrics;
pub mod server;
pub mod trace;
pub mod was;
pub mod web;
