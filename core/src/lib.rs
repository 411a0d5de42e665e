//! # kulisse-core: the Kubernetes components, without the plumbing
//!
//! This crate holds every component of the cluster as a library, in the order an
//! `apply` travels through them (the book follows the same order):
//!
//! | step | module | Kubernetes component |
//! |------|--------|----------------------|
//! | objects, validation, defaulting | [`objects`] | the API machinery (`k8s.io/apimachinery`) |
//! | persistence interface | [`store`] | etcd, as the API server uses it |
//! | REST API, auth, apply, watch | [`apiserver`] | kube-apiserver |
//! | talking to the API server | [`client`] | client-go's REST client and kubeconfig |
//! | running pods on a node | [`kubelet`] | the kubelet |
//! | the container runtime interface | [`runtime`] | the CRI (containerd, CRI-O) |
//!
//! Architecture invariant: core knows nothing of clap, redb, etcd or podman. Stores and
//! runtimes come in through traits ([`store::Store`]) implemented in `kulisse-backends`.

pub mod apiserver;
pub mod client;
pub mod controllers;
pub mod events;
pub mod kubelet;
pub mod objects;
pub mod printers;
pub mod proxy;
pub mod runtime;
pub mod scheduler;
pub mod store;
