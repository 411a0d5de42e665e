//! Node hosts: worker nodes on machines of their own, made of Linux network namespaces
//! (`kulisse up --masters 3 --node-hosts 2`), and `kulisse partition` / `kulisse heal` to cut
//! and mend a host's cable.
//!
//! In a real cluster the workers are other machines. They reach the control plane over the
//! network, through the load balancer's address, and the network can fail between them. A
//! node host gives one node that shape on one machine:
//!
//! ```text
//!   this machine's namespace          hub namespace (kulisse-<pid>-hub): a switch
//!   ┌────────────────────────┐        ┌─────────────────────────────────────┐
//!   │ API servers, etcd,     │        │ bridge kbr0, 10.213.255.254/16       │
//!   │ HAProxy ───────────────┼─binds─▶│   HAProxy listens here too           │
//!   │   (dials kubelets from │        │ veth node-4 ─┐      veth node-5 ─┐   │
//!   │    a socket in the hub)│        └──────────────┼───────────────────┼───┘
//!   └────────────────────────┘             eth0 10.213.0.4      eth0 10.213.0.5
//!                                     kulisse-<pid>-node-4    kulisse-<pid>-node-5
//!                                     (kubelet + kube-proxy)  (kubelet + kube-proxy)
//! ```
//!
//! - Each host is a **network namespace** with one interface, `eth0`, the far end of a
//!   **veth pair** (a virtual cable) whose near end is plugged into a **bridge** (a virtual
//!   switch) in the hub namespace. Node `node-N` has the address `10.213.N/256.N%256`; the hub
//!   has `10.213.255.254`. These addresses exist only inside namespaces kulisse made: no
//!   packet of the lab leaves the machine, and the machine's own routes are never touched.
//! - **HAProxy** listens in the hub as well (its `bind ... namespace` option), so the host's
//!   kubelet and kube-proxy reach the API servers through the load balancer's address, as
//!   real nodes do. The API servers' certificates name that address too (`--tls-san`).
//! - The **API servers** reach a host's kubelet (for `kubectl logs`, `exec`,
//!   `port-forward`) from a socket made in the hub namespace (`--kubelet-network`,
//!   [`kulisse_core::netns`]).
//! - **Partition**: `kulisse partition node-4` sets the hub's end of the cable down (`ip -n
//!   HUB link set node-4 down`). The kubelet keeps running its pods, but its Lease renewals no
//!   longer arrive: the node lifecycle controller marks the node `Unknown`, taints it and
//!   evicts its pods, and their ReplicaSets replace them elsewhere. `kulisse heal node-4` sets
//!   it up again: the kubelet's connections resume, it renews its Lease (the node is Ready
//!   again), learns that its pods were deleted meanwhile and stops them (`Killing` events).
//!
//! kulisse runs `ip` (iproute2) for all of this rather than speaking netlink itself: each step
//! is a command a learner can read in `kulisse up`'s log and type again by hand. Creating
//! namespaces needs root.
//!
//! A namespace is named after the `kulisse up` process that made it (`kulisse-<pid>-...`).
//! A clean stop removes them; after a crash, the next `kulisse up --node-hosts` removes those
//! whose process is gone.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::GlobalArgs;

/// The hub's address on the hosts' network (`10.213.0.0/16`): the load balancer's, as the
/// hosts see it.
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 255, 254);
/// The prefix length of the hosts' network.
const PREFIX: u8 = 16;
/// The bridge in the hub namespace.
const BRIDGE: &str = "kbr0";

/// The address node `node-n` has when it runs on a host of its own.
pub fn host_ip(n: u32) -> Ipv4Addr {
    let n = n.min(0xfffd);
    Ipv4Addr::new(10, 213, (n >> 8) as u8, (n & 0xff) as u8)
}

/// The node number of `node-N`, if the name has that shape.
pub fn node_number(name: &str) -> Option<u32> {
    name.strip_prefix("node-")?.parse().ok()
}

/// One node host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    /// The node it runs (`node-4`); also the name of the cable's end in the hub.
    pub node: String,
    /// Its network namespace (`kulisse-<pid>-node-4`).
    pub netns: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// The hub and the hosts of one cluster, as `<data-dir>/node-hosts.json` records them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hosts {
    /// The hub's network namespace.
    pub hub: String,
    pub hosts: Vec<Host>,
}

/// `<data-dir>/node-hosts.json`.
fn record(data_dir: &Path) -> PathBuf {
    data_dir.join("node-hosts.json")
}

/// Run `ip ARGS`, printed first (`kulisse up` prints to its own output; the hosts' commands
/// are part of the lab). An error names the command and what `ip` said.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running ip (Debian's package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Remove namespaces that an earlier `kulisse up` made and could not remove (it was killed).
fn sweep_stale() {
    let Ok(out) = std::process::Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let owner = name
            .strip_prefix("kulisse-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if owner.is_some_and(|pid| !super::processes::alive(pid)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Hosts {
    /// Make the hub and one host for each of `nodes` (`node-N` names), wired as the module
    /// documentation draws, and record them in the data dir.
    pub fn create(data_dir: &Path, nodes: &[String]) -> anyhow::Result<Owned> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("--node-hosts creates network namespaces, which needs root (run kulisse up as root)");
        }
        sweep_stale();
        let prefix = format!("kulisse-{}", std::process::id());
        let mut owned = Owned(Hosts {
            hub: format!("{prefix}-hub"),
            hosts: Vec::new(),
        });
        let hosts = &mut owned.0;
        hosts.make_hub()?;
        for node in nodes {
            let n = node_number(node).with_context(|| format!("a node host's node is named node-N, not {node}"))?;
            let host = Host {
                node: node.clone(),
                netns: format!("{prefix}-{node}"),
                ip: host_ip(n),
            };
            hosts.hosts.push(host.clone());
            hosts.make_host(&host)?;
        }
        let text = serde_json::to_vec_pretty(hosts)?;
        kulisse_core::client::kubeconfig::write_private(&record(data_dir), &text)?;
        Ok(owned)
    }

    fn make_hub(&self) -> anyhow::Result<()> {
        let hub = self.hub.as_str();
        let address = format!("{HUB_IP}/{PREFIX}");
        ip(&["netns", "add", hub])?;
        ip(&["-n", hub, "link", "set", "lo", "up"])?;
        ip(&["-n", hub, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", hub, "addr", "add", &address, "dev", BRIDGE])?;
        ip(&["-n", hub, "link", "set", BRIDGE, "up"])
    }

    fn make_host(&self, host: &Host) -> anyhow::Result<()> {
        let (hub, ns, link) = (self.hub.as_str(), host.netns.as_str(), host.node.as_str());
        let address = format!("{}/{PREFIX}", host.ip);
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", hub, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", hub, "link", "set", link, "master", BRIDGE, "up"])?;
        ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])
    }

    /// The hub's namespace as a file, for `--kubelet-network`.
    pub fn hub_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.hub)
    }

    /// The host that runs `node`.
    fn host(&self, node: &str) -> anyhow::Result<&Host> {
        self.hosts.iter().find(|h| h.node == node).with_context(|| {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.node.as_str()).collect();
            format!(
                "{node} does not run on a node host; the hosts run: {}",
                names.join(", ")
            )
        })
    }

    /// Read the record of the cluster in `data_dir`.
    fn read(data_dir: &Path) -> anyhow::Result<Hosts> {
        let file = record(data_dir);
        let text = std::fs::read(&file).with_context(|| {
            format!(
                "reading {} (only a cluster started with `kulisse up --masters 3 --node-hosts N` has node hosts)",
                file.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not a node-hosts record", file.display()))
    }
}

/// The hosts of the running `kulisse up`: removed when it goes (a failed start included).
pub struct Owned(pub Hosts);

impl Drop for Owned {
    /// Deleting a namespace takes its interfaces with it (both ends of each veth).
    fn drop(&mut self) {
        for ns in self
            .0
            .hosts
            .iter()
            .map(|h| h.netns.as_str())
            .chain([self.0.hub.as_str()])
        {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

#[derive(Args, Debug)]
pub struct LinkArgs {
    /// The node whose host to cut off or reconnect (`node-4`; `kulisse ps` lists them).
    pub node: String,
    /// The cluster's data dir (default: the directory of the kubeconfig in use).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `kulisse partition NODE` (`up == false`) and `kulisse heal NODE` (`up == true`).
pub fn set_link(global: &GlobalArgs, args: &LinkArgs, up: bool) -> anyhow::Result<ExitCode> {
    let data_dir = super::ps::data_dir(global, &args.data_dir);
    let hosts = Hosts::read(&data_dir)?;
    let host = hosts.host(&args.node)?;
    let state = if up { "up" } else { "down" };
    println!("ip -n {} link set {} {state}", hosts.hub, host.node);
    ip(&["-n", &hosts.hub, "link", "set", &host.node, state])?;
    if up {
        println!(
            "{}: its host's cable is plugged in again ({})",
            args.node,
            host_ip_of(&args.node)
        );
    } else {
        println!(
            "{}: its host is cut off; the node turns NotReady once its Lease goes stale, then its pods are evicted",
            args.node
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn host_ip_of(node: &str) -> String {
    node_number(node).map_or_else(|| "-".into(), |n| host_ip(n).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_follow_the_node_number_and_stay_off_the_hub() {
        assert_eq!(host_ip(4), Ipv4Addr::new(10, 213, 0, 4));
        assert_eq!(host_ip(300), Ipv4Addr::new(10, 213, 1, 44));
        assert_ne!(host_ip(u32::MAX), HUB_IP);
        assert_eq!(node_number("node-12"), Some(12));
        assert_eq!(node_number("worker"), None);
    }
}
