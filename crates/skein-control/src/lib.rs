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
//!   `skein_snapshot::stream`, records acks and rejections in its status file. Each generation
//!   (a change of either) builds one `compile::Index` (Services with their pods, pods by name)
//!   and compiles each Service's outbound clusters once per client namespace, serialised once
//!   and shared by the sidecars of that namespace, as are the outbound routes; a change of pods
//!   only compiles the Services whose pods changed again and reaches the proxies that see them
//!   as cluster updates, without compiling their snapshots.
//! - Sidecar resources: `outboundTrafficPolicy`, and `egress[].hosts`, which limit the Services
//!   a sidecar sees (clusters, routes, TCP listeners).
//! - `ca`: the certificate authority that signs each proxy's CSR, served by the same stream.
//! - [`gitops`]: Argo CD's Application: the manifests directory is a commit of a local git
//!   repository, kept in step by a controller thread of the control plane (sync, drift,
//!   self-heal, prune, health), with its status beside the control plane's.
//!
//! # Security
//!
//! The control stream is TLS 1.3. The control plane's serving certificate is made at each start
//! for a key that never leaves the process, signed by the mesh CA for `istiod.istio-system.svc`
//! ([`server::SERVER_NAMES`]); proxies verify it against the mesh root they were given at start,
//! so a process that binds the control port cannot feed them roots or snapshots.
//!
//! A stream serves a pod only once its proxy has proved it is that pod's ([`server`]'s
//! `authenticate`): the hello carries the pod's bootstrap token (the runtime writes one per pod,
//! mode 0600, in the pod's own directory, and lists its SHA-256 in the registry; compared in
//! constant time), or the stream's client certificate, verified against the mesh root, names
//! the pod's identity. Anything else (another pod's token, none, a certificate for another
//! identity) is refused with a message and the connection closed: no snapshot, no certificate.
//! A renewal is authenticated by the current certificate rather than by the token again: it is
//! proof of possession of the key, it cannot widen the identity (the CA signs only the identity
//! the certificate already has), and it keeps working if the token file is gone or rotated.
//! Proxies send the token only while they have no valid certificate.
//!
//! Anything that can reach the control port is treated as a possibly hostile peer, and cannot
//! make the control plane hold memory without bound:
//!
//! - at most 1,024 control connections at once ([`server::MAX_CONNECTIONS`]); beyond that a
//!   new connection is closed at once;
//! - a connection that sends no complete hello within 10 s ([`server::HELLO_TIMEOUT`]) is
//!   closed;
//! - a proxy's frames (hello, ACK/NACK, CSR) are at most 64 KiB
//!   (`skein_snapshot::stream::MAX_PROXY_FRAME`), refused on the announced length before any
//!   of the body is read; the control plane's own frames (snapshots) may be up to 64 MiB;
//! - the node (pod) and namespace names of a hello are DNS-1123 names of at most 253 bytes
//!   ([`server::MAX_NAME`]); any other hello is refused with a logged reason and the
//!   connection closed;
//! - a proxy's entry in the status file (and in memory) is removed when its last stream ends;
//! - certificate signings are rate-limited per pod: a burst of 5 ([`server::CSR_BURST`]),
//!   then one per 3 s ([`server::CSR_INTERVAL`]), across reconnects; a request over the limit
//!   is refused with a message and the stream stays usable.
//!
//! The CA never forks the trust domain: a root is generated only when neither
//! `root-cert.pem` nor `root-key.pem` exists; one without the other, or a key that is not the
//! certificate's, stops start-up with an error naming the files. Workload certificate
//! lifetimes are checked where the CA signs: zero is refused (at start-up too), and a leaf
//! never outlives its issuer (the generated root, or a plug-in CA's `ca-cert.pem`), so an
//! overlong lifetime such as `u64::MAX` seconds is clamped to the issuer's `notAfter`.
#![forbid(unsafe_code)]

mod ca;
mod compile;
pub mod events;
pub mod gitops;
pub mod registry;
pub mod server;
mod store;

pub use ca::CaError;
pub use compile::{CompileError, Compiler};
pub use registry::Registry;
pub use server::{ControlError, ControlOptions, ControlStatus, run};
pub use store::{Rejection, Store};
