//! `kulisse ps` and `kulisse kill`: the processes of a cluster, and killing one of them for
//! the failure labs.
//!
//! `kulisse ps` reads the process table `kulisse up` wrote (`<data-dir>/processes.json`) and
//! asks who leads: for the controller managers and schedulers, the `holderIdentity` of their
//! Leases in `kube-system`; for etcd, each member's status (`POST /v3/maintenance/status`,
//! etcd's JSON gateway: the member whose id is the `leader` it reports leads Raft).
//! In a real cluster you would ask `kubectl get lease -n kube-system` and
//! `etcdctl endpoint status` the same questions.
//!
//! `kulisse kill NAME` and `kulisse kill --leader ROLE` send SIGKILL, the harshest failure:
//! no goodbye, no lease released, no connection closed cleanly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use kulisse_core::client::Client;
use kulisse_core::client::kubeconfig;
use serde_json::Value;

use super::processes::{self, Process};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct PsArgs {
    /// The cluster's data dir (default: the directory of the kubeconfig in use).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LeaderRole {
    Scheduler,
    ControllerManager,
    Etcd,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// The process to kill, by its name in `kulisse ps` (`scheduler-2`, `apiserver-1`, `etcd-3`).
    #[arg(required_unless_present = "leader", conflicts_with = "leader")]
    pub name: Option<String>,
    /// Kill whichever process leads this role now.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub leader: Option<LeaderRole>,
    /// The cluster's data dir (default: the directory of the kubeconfig in use).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

pub(crate) fn data_dir(global: &GlobalArgs, explicit: &Option<PathBuf>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.clone();
    }
    let kc = global.kubeconfig.clone().unwrap_or_else(kubeconfig::default_path);
    kc.parent()
        .map(PathBuf::from)
        .unwrap_or_else(kubeconfig::default_data_dir)
}

/// The holder of Lease `kube-system/<name>`, if the API answers.
async fn lease_holder(client: Option<&Client>, name: &str) -> Option<String> {
    let info = kulisse_core::objects::by_gvk("coordination.k8s.io/v1", "Lease")?;
    let ask = client?.get(info, Some("kube-system"), name);
    let lease = tokio::time::timeout(Duration::from_secs(3), ask).await.ok()?.ok()?;
    lease
        .pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether the etcd member at `url` is its cluster's Raft leader (`None`: it did not answer).
async fn etcd_leads(url: &str) -> Option<bool> {
    let client = Client::new(url, "").ok()?;
    let ask = client.request(http::Method::POST, "/v3/maintenance/status", &[], Some(b"{}".to_vec()));
    let answer = tokio::time::timeout(Duration::from_secs(2), ask).await.ok()?.ok()?;
    let status: Value = serde_json::from_slice(&answer.body).ok()?;
    let member = status.pointer("/header/member_id")?.as_str()?;
    Some(status.get("leader")?.as_str()? == member)
}

/// `leader`, `standby`, or empty (roles without a leader, or nothing known).
async fn leadership(p: &Process, holders: &[(String, Option<String>)]) -> &'static str {
    if !processes::alive(p.pid) {
        return "";
    }
    match p.role.as_str() {
        "etcd" => match etcd_leads(&p.address).await {
            Some(true) => "leader",
            Some(false) => "follower",
            None => "",
        },
        "scheduler" | "controller-manager" => {
            let holder = holders
                .iter()
                .find(|(role, _)| *role == p.role)
                .and_then(|(_, h)| h.as_deref());
            match (holder, &p.identity) {
                (Some(h), Some(me)) if h == me => "leader",
                (Some(_), Some(_)) => "standby",
                _ => "",
            }
        }
        _ => "",
    }
}

/// The processes with their leadership, read fresh.
async fn survey(global: &GlobalArgs, dir: &std::path::Path) -> anyhow::Result<Vec<(Process, &'static str)>> {
    let table = processes::read(dir)?;
    let client = super::client(global).ok();
    let mut holders = Vec::new();
    for (role, lease) in [
        ("scheduler", "kube-scheduler"),
        ("controller-manager", "kube-controller-manager"),
    ] {
        holders.push((role.to_string(), lease_holder(client.as_ref(), lease).await));
    }
    let mut out = Vec::new();
    for p in table {
        let lead = leadership(&p, &holders).await;
        out.push((p, lead));
    }
    Ok(out)
}

pub async fn ps(global: &GlobalArgs, args: PsArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir(global, &args.data_dir);
    let rows = survey(global, &dir).await?;
    let mut text = String::from("NAME\tROLE\tADDRESS\tPID\tSTATUS\tLEADER\n");
    for (p, lead) in rows {
        let status = if processes::alive(p.pid) { "Running" } else { "Exited" };
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{status}\t{lead}\n",
            p.name, p.role, p.address, p.pid
        ));
    }
    print!("{}", crate::tabwriter::align(&text, 3));
    Ok(ExitCode::SUCCESS)
}

pub async fn kill(global: &GlobalArgs, args: KillArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir(global, &args.data_dir);
    let rows = survey(global, &dir).await?;
    let target = match (&args.name, args.leader) {
        (Some(name), _) => rows.iter().find(|(p, _)| &p.name == name).ok_or_else(|| {
            let names: Vec<&str> = rows.iter().map(|(p, _)| p.name.as_str()).collect();
            anyhow::anyhow!(
                "no process named {name:?} in this cluster (kulisse ps lists: {})",
                names.join(", ")
            )
        })?,
        (None, Some(role)) => {
            let role = match role {
                LeaderRole::Scheduler => "scheduler",
                LeaderRole::ControllerManager => "controller-manager",
                LeaderRole::Etcd => "etcd",
            };
            rows.iter()
                .find(|(p, lead)| p.role == role && *lead == "leader")
                .ok_or_else(|| anyhow::anyhow!("no running {role} leads now (kulisse ps shows who runs)"))?
        }
        (None, None) => bail!("name a process, or --leader ROLE"),
    };
    let (p, lead) = target;
    if !processes::alive(p.pid) {
        bail!("{} (pid {}) is not running", p.name, p.pid);
    }
    // SAFETY: sending a signal; the pid is from the cluster's own process table and alive.
    if unsafe { libc::kill(p.pid as i32, libc::SIGKILL) } != 0 {
        bail!(
            "killing {} (pid {}): {}",
            p.name,
            p.pid,
            std::io::Error::last_os_error()
        );
    }
    let was = if *lead == "leader" { ", the leader" } else { "" };
    println!("{} (pid {}{was}) killed", p.name, p.pid);
    Ok(ExitCode::SUCCESS)
}
