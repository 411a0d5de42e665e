//! The process table of a cluster: `<data-dir>/processes.json`, written by `kulisse up` and
//! read by `kulisse ps` and `kulisse kill`.
//!
//! A real cluster has no such file: kubeadm runs every control-plane part as a static pod,
//! and `crictl ps` or `kubectl get pods -n kube-system` lists them. kulisse runs them as plain
//! processes on one machine, so `kulisse up` writes down what it started: name, role,
//! address, process id, the identity a leader-elected component campaigns as, and its log.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One process of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Process {
    /// `etcd-1`, `apiserver-2`, `scheduler-3`, `haproxy`, `kubelet-node-1`, ...
    pub name: String,
    /// `etcd`, `apiserver`, `controller-manager`, `scheduler`, `load-balancer`, `kubelet`,
    /// `proxy`, or `control-plane` (the single process of `kulisse up`).
    pub role: String,
    /// Where it listens (`-` for a client-only component).
    pub address: String,
    pub pid: u32,
    /// The identity a leader-elected component campaigns as (its Lease's `holderIdentity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The command line it was started with (to start it again by hand after `kulisse kill`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Where its output goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

/// `<data-dir>/processes.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("processes.json")
}

/// Write the table (mode 0600, as everything in the data dir).
pub fn write(data_dir: &Path, processes: &[Process]) -> anyhow::Result<()> {
    let text = serde_json::to_vec_pretty(processes)?;
    let file = path(data_dir);
    kulisse_core::client::kubeconfig::write_private(&file, &text).with_context(|| format!("writing {}", file.display()))
}

/// Read the table of the cluster whose data dir is `data_dir`.
pub fn read(data_dir: &Path) -> anyhow::Result<Vec<Process>> {
    let file = path(data_dir);
    let text = std::fs::read(&file).with_context(|| {
        format!(
            "reading {} (is a cluster running with this data dir? `kulisse up` writes it)",
            file.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a process table", file.display()))
}

/// Whether process `pid` is running (a zombie, dead but not yet reaped, counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
