//! The attack suite: the real `skein` binaries driven as a hostile client, a hostile local
//! process and a careless config author would, one test per threat, each asserting the secure
//! outcome. Each module covers one part of the trust boundary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod config;
mod edge;
mod identity;
#[path = "../support/mod.rs"]
mod support;
