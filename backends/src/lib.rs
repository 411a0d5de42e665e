//! # kulisse-backends: the parts you can swap
//!
//! Kubernetes is built around plug points: the API server persists through a storage
//! interface (etcd in practice), and the kubelet runs containers through the CRI.
//! This crate holds kulisse's implementations of those plug points.
//!
//! - [`store::embedded`]: the default store, a single redb file with group commit.
//! - [`store::etcd`]: a real etcd cluster through the `etcd-client` crate.
//! - [`runtime::mock`]: an in-memory container runtime behind kulisse's CRI.
//!
//! Architecture invariant: backends depend on core's traits; core never depends on backends.

pub mod runtime;
pub mod store;
