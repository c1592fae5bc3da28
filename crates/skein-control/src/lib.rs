//! skein-control: the control plane.
//!
//! - [`store`]: the watched manifests directory plus `skein apply`'s files, validated as a
//!   whole; a refused change keeps the last good config.
//! - [`registry`]: the pods (from the runtime), their addresses, labels and readiness.
//! - [`compile`]: resources + registry -> one `skein_snapshot::Snapshot` per proxy.
//! - [`server`]: the process: watches both, pushes snapshots over `skein_snapshot::stream`,
//!   records acks and rejections in its status file.
#![forbid(unsafe_code)]

pub mod ca;
pub mod compile;
pub mod registry;
pub mod server;
pub mod store;

pub use compile::Compiler;
pub use registry::Registry;
pub use server::{ControlOptions, ControlStatus, run};
pub use store::Store;
