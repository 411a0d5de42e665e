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

/// A loopback port for a program a test starts and tells its port (etcd, Jaeger, a chapter's
/// stand-in for 16686): from the tests' band of [`kulisse_core::ports`], below the kernel's
/// ephemeral range, and never handed out before in this process.
pub fn free_port() -> u16 {
    kulisse_core::ports::free(kulisse_core::ports::TESTS).expect("a free port on 127.0.0.1")
}
