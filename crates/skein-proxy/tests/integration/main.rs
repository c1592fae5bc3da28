//! The proxy's integration tests, one binary: in-process proxies against loopback upstreams,
//! with helpers from `skein_proxy::test_util` (feature `test-util`).
//!
//! Timers run on paused time (`start_paused`) unless a module says why a test needs the wall
//! clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod admin;
mod bench;
mod config_errors;
mod control;
mod control_tls;
mod edge;
mod jwt;
mod limits;
mod mtls;
mod ops;
mod origination;
mod outlier;
mod pool;
mod resilience;
mod rotation;
mod routing;
mod tcp;
mod telemetry;
mod tracing;
mod undelivered;
