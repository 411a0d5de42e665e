//! # kulisse-core: the Kubernetes components, without the plumbing
//!
//! This crate holds every component of the cluster as a library, in the order an
//! `apply` travels through them. The station is the step of that road the module implements
//! (①–⑦, as ARCHITECTURE.md and the book number them; the map is
//! `kulisse_traces::catalogue::STATIONS`); the other modules serve every station:
//!
//! | station | module | what it holds | Kubernetes component |
//! |---------|--------|---------------|----------------------|
//! | — | [`objects`] | objects, the resource registry, defaulting, validation, selectors, quantities, timestamps | the API machinery (`k8s.io/apimachinery`) |
//! | ① | [`apiserver`] | REST API, authentication, apply, watch | kube-apiserver |
//! | — | [`printers`] | kubectl's columns, printed by the server | kube-apiserver's table convertors |
//! | ② | [`store`] | the persistence interface: keys, revisions, transactions, watches | etcd, as the API server uses it |
//! | — | [`client`] | talking to the API server: HTTP, TLS, informers, work queues | client-go |
//! | ③ | [`controllers`] | Deployment → ReplicaSet → Pods, endpoints, garbage collection, namespaces, node lifecycle | kube-controller-manager |
//! | — | [`events`] | events about objects | client-go's event recorder |
//! | ④ | [`scheduler`] | filter, score, bind | kube-scheduler |
//! | ⑤ | [`kubelet`] | running pods on a node | the kubelet |
//! | ⑤ | [`runtime`] | the container runtime interface | the CRI (containerd, CRI-O) |
//! | — | [`netns`] | sockets made inside another network namespace (node hosts, a pod's port) | what a CRI runtime does with `setns` |
//! | — | [`portforward`] | port-forward's stream pairs over SPDY/3.1, tunnelled in a WebSocket | apimachinery's `httpstream/spdy`, client-go's `tools/portforward` |
//! | — | [`remotecommand`] | exec's channels over WebSocket, its exit status | apimachinery's `remotecommand` and `wsstream` |
//! | — | [`ports`] | a port for a process that is told its port, below the kernel's ephemeral range | the fixed well-known ports (6443, 2379, 10250) |
//! | ⑥ | [`proxy`] | Services → forwarding rules | kube-proxy |
//!
//! Architecture invariant: core knows nothing of clap, redb, etcd or podman. Stores and
//! runtimes come in through traits ([`store::Store`]) implemented in `kulisse-backends`.

pub mod apiserver;
pub mod client;
pub mod controllers;
pub mod events;
pub mod kubelet;
pub mod netns;
pub mod objects;
pub mod portforward;
pub mod ports;
pub mod printers;
pub mod proxy;
pub mod remotecommand;
pub mod runtime;
pub mod scheduler;
pub mod store;

/// This file's own map, checked.
#[cfg(test)]
mod module_table {
    /// The module table of this file's `//!` names exactly the modules it declares.
    #[test]
    fn the_module_table_names_every_module() {
        let text = include_str!("lib.rs");
        let tabled: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("//! | "))
            .filter_map(|row| row.split(" | [`").nth(1))
            .filter_map(|cell| cell.split_once("`]").map(|(module, _)| module))
            .collect();
        let declared: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .filter_map(|l| l.strip_suffix(';'))
            .collect();
        assert!(declared.len() > 5, "found only {declared:?}");
        assert_eq!(
            tabled, declared,
            "core/src/lib.rs: the `//!` module table and the `pub mod`s differ"
        );
    }
}

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
