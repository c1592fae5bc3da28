//! skein-control: the control plane.
//!
//! Configuration flows through the modules in this order:
//!
//! - `store`: the watched manifests directory plus `skein apply`'s files, loaded as a whole.
//! - validation: `skein_api::validate`, run by the store; a refused change keeps the last
//!   good config.
//! - [`registry`]: the pods (from the runtime), their addresses, labels and readiness.
//! - `compile`: resources + registry -> one `skein_snapshot::Snapshot` per proxy, by the
//!   [`Compiler`]: `hosts` (host names by `skein_snapshot::names`), `services`, `clusters`
//!   (DestinationRule merge, subsets, endpoints), `routes` (VirtualService), `inbound`
//!   (PeerAuthentication, AuthorizationPolicy), `gateway` (Gateway, Ingress).
//! - [`server`]: the process: watches store and registry, pushes snapshots over
//!   `skein_snapshot::stream`, records acks and rejections in its status file.
//! - `ca`: the certificate authority that signs each proxy's CSR, served by the same stream.
#![forbid(unsafe_code)]

mod ca;
mod compile;
pub mod registry;
pub mod server;
mod store;

pub use ca::CaError;
pub use compile::{CompileError, Compiler};
pub use registry::Registry;
pub use server::{ControlError, ControlOptions, ControlStatus, run};
pub use store::{Rejection, Store};
