//! # Container runtimes: what runs the pods' containers
//!
//! Each runtime implements [`kulisse_core::runtime::ContainerRuntime`], kulisse's version of
//! the Kubernetes CRI. The kubelet only ever talks to that trait, so swapping the runtime
//! changes what runs the containers, not how the node behaves.
//!
//! - [`mock`]: an in-memory runtime that simulates containers (no processes at all), light
//!   enough to run thousands of nodes in one process, with seeded latencies and failure
//!   injection through pod annotations.
//! - [`podman`]: real containers through podman's REST API: a Kubernetes pod is a podman
//!   pod (its infra container plays the `pause` container), with its own loopback pod IP.

pub mod mock;
pub mod podman;
