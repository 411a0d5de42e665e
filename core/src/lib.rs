//! # kulisse-core: the Kubernetes components, without the plumbing
//!
//! This crate holds every component of the cluster as a library, in the order an
//! `apply` travels through them (the book follows the same order):
//!
//! | step | module | Kubernetes component |
//! |------|--------|----------------------|
//! | objects, validation, defaulting, timestamps | [`objects`] | the API machinery (`k8s.io/apimachinery`) |
//! | persistence interface | [`store`] | etcd, as the API server uses it |
//! | REST API, auth, apply, watch | [`apiserver`] | kube-apiserver |
//! | kubectl's columns, printed by the server | [`printers`] | kube-apiserver's table convertors |
//! | talking to the API server: HTTP, TLS, informers, work queues | [`client`] | client-go |
//! | Deployment → ReplicaSet → Pods, endpoints, garbage collection, node lifecycle | [`controllers`] | kube-controller-manager |
//! | filter, score, bind | [`scheduler`] | kube-scheduler |
//! | running pods on a node | [`kubelet`] | the kubelet |
//! | the container runtime interface | [`runtime`] | the CRI (containerd, CRI-O) |
//! | Services → forwarding rules | [`proxy`] | kube-proxy |
//! | events about objects | [`events`] | client-go's event recorder |
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

/// The seams ARCHITECTURE.md promises, checked on the source itself.
#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file below `dir` (or `dir` itself when it is a file).
    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        if dir.is_file() {
            return vec![dir.to_path_buf()];
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read the source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                out.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
        out
    }

    /// Architecture invariant: the control loops and the client talk to the API server
    /// only over HTTP; they never reach into its code. What both sides share is a contract
    /// and lives in `objects` (or `client`).
    #[test]
    fn components_never_import_the_api_server() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut leaks = Vec::new();
        for part in [
            "controllers",
            "scheduler",
            "kubelet",
            "proxy",
            "client",
            "events.rs",
            "objects",
        ] {
            for file in rust_files(&src.join(part)) {
                let text = std::fs::read_to_string(&file).expect("read a source file");
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or_default();
                    if code.contains("apiserver::") {
                        leaks.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "these import from the API server:\n{}",
            leaks.join("\n")
        );
    }
}
