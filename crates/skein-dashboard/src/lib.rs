//! The dashboard's server: the API of the page (Kiali's paths and JSON where Kiali has them:
//! the graph, health, metrics, logs; skein's own for the overview, workloads, Services and
//! the Istio config) and the page itself, embedded at build time from `ui/dist/`.
//!
//! Layout (imports point one way, down this list):
//! - `server`: the routes, the security headers, the tracing store's pass-through.
//! - `graph`: Kiali's graph from Prometheus answers (queries, nodes, edges, decorations).
//! - `health`: Kiali's health and its default tolerances.
//! - `inventory`: namespaces, workloads, pods and proxies, Services.
//! - `config`: every loaded object with its checks (`skein_api::validate`), the objects
//!   that apply to a workload or Service, the graph's config flags.
//! - `logs`: container logs, the access log's TEXT and JSON formats, filters.
//! - `state`: one read of the state directory (status files, manifests, diagnostics).
//! - `rollout`: a Rollout's status file, bounded, as the Rollout panel's JSON.
//! - `refused`: a change `skein apply` refused, as the CLI records it.
//! - `params`: every query parameter, parsed and bounded.
//! - `assets`: the embedded page.
//! - `reply`: error answers in Kiali's shape.

#![forbid(unsafe_code)]

mod assets;
mod config;
pub mod graph;
pub mod health;
mod inventory;
pub mod logs;
pub mod params;
pub mod refused;
mod reply;
pub mod rollout;
pub mod server;
pub mod state;

pub use server::{Config, ServerError, router, serve};

/// The dashboard's port (Kiali's).
pub const PORT: u16 = 20001;
