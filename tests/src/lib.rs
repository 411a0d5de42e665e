//! # kulisse-tests: end-to-end checks with real parts
//!
//! Helpers shared by the integration tests in `tests/tests/`: the store conformance suite
//! ([`conformance`]) that holds the embedded store and a real etcd to one etcd-shaped
//! contract, and fixtures that start real processes on loopback.

pub mod book;
pub mod child;
pub mod cluster;
pub mod conformance;
pub mod etcd;
pub mod flows;
pub mod inproc;
pub mod jaeger;
pub mod kubectl;
pub mod local_traces;
pub mod otlp;
pub mod podman;
pub mod process;
pub mod require;
