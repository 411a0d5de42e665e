//! Failover of the leader-elected components, each its own process (issue 14, "Several
//! masters"): two `kulisse scheduler`s (or two `kulisse controller-manager`s) against one API
//! server, with `--fast-failover` (lease 2 s, renew deadline 1.5 s, retry 0.5 s). Only the
//! leader acts; `kill -9` it, and the standby takes over once the lease has run out and does
//! the work: binds a new pod, or creates the pods of a new Deployment. Each test prints the
//! time from the kill until the standby acted (a figure, not an assertion).
//!
//! A leader that finds someone else holding its lease stops and exits with code 1 and
//! `leaderelection lost`, as kube-scheduler does.

use std::path::Path;
use std::time::Instant;

use kulisse_tests::cluster::Cluster;
use kulisse_tests::flows::{create_pod, items, json, s, wait_for};
use kulisse_tests::process::Component;
use serde_json::Value;

/// A cluster whose in-process part lacks `missing` (`scheduler` or `controller-manager`).
fn cluster_without(missing: &str, dir: &Path) -> Cluster {
    let components = match missing {
        "scheduler" => "apiserver,controller-manager",
        _ => "apiserver,scheduler",
    };
    Cluster::start_in(dir, &["--components", components, "--nodes", "1", "--fast-failover"])
}

/// The identity a component campaigns as, from its line
/// `attempting to acquire leader lease kube-system/NAME as IDENTITY...`.
fn identity(component: &Component) -> String {
    let line = component.wait_for_line(30, "attempting to acquire leader lease");
    line.rsplit(" as ")
        .next()
        .and_then(|rest| rest.strip_suffix("..."))
        .unwrap_or_else(|| panic!("no identity in {line:?}"))
        .to_string()
}

/// Two copies of `component` (`scheduler`, `controller-manager`): the first leads before the
/// second starts. Returns (leader, its identity, standby, its identity).
fn leader_and_standby(c: &Cluster, component: &str) -> (Component, String, Component, String) {
    let kc = c.kubeconfig();
    let leader = Component::start(&format!("{component} 1"), &kc, &[component, "--fast-failover"]);
    leader.wait_for_line(30, &format!("successfully acquired lease kube-system/kube-{component}"));
    let standby = Component::start(&format!("{component} 2"), &kc, &[component, "--fast-failover"]);
    let (leader_id, standby_id) = (identity(&leader), identity(&standby));
    assert_ne!(leader_id, standby_id, "every process campaigns as itself");
    (leader, leader_id, standby, standby_id)
}

fn lease(c: &Cluster, name: &str) -> Value {
    json(c, &["get", "lease", "-n", "kube-system", name])
}

fn node_of(c: &Cluster, pod: &str) -> Option<String> {
    let p = json(c, &["get", "pod", pod]);
    let node = s(&p, "/spec/nodeName");
    (!node.is_empty()).then(|| node.to_string())
}

#[test]
fn the_standby_scheduler_binds_once_the_killed_leaders_lease_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster_without("scheduler", dir.path());
    let (mut leader, leader_id, standby, standby_id) = leader_and_standby(&c, "scheduler");

    create_pod(&c, "before");
    wait_for(60, "the leader binds a pod", || node_of(&c, "before"));
    assert_eq!(s(&lease(&c, "kube-scheduler"), "/spec/holderIdentity"), leader_id);
    assert!(
        !standby.printed("successfully acquired lease"),
        "the standby stands by: {:?}",
        standby.lines()
    );

    leader.kill9();
    let killed = Instant::now();
    create_pod(&c, "after");
    wait_for(60, "the standby binds the new pod", || node_of(&c, "after"));
    let took = killed.elapsed();
    println!(
        "figure: the standby scheduler bound a new pod {:.2} s after `kill -9` of the leader (lease 2 s, retry 0.5 s)",
        took.as_secs_f64()
    );
    standby.wait_for_line(5, "successfully acquired lease kube-system/kube-scheduler");
    let lease = lease(&c, "kube-scheduler");
    assert_eq!(s(&lease, "/spec/holderIdentity"), standby_id);
    assert_eq!(lease.pointer("/spec/leaseTransitions"), Some(&Value::from(1)));
    assert_eq!(lease.pointer("/spec/leaseDurationSeconds"), Some(&Value::from(2)));
}

#[test]
fn the_standby_controller_manager_creates_pods_once_the_killed_leaders_lease_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster_without("controller-manager", dir.path());
    let (mut leader, leader_id, standby, standby_id) = leader_and_standby(&c, "controller-manager");
    let pods_of = |app: &str| items(&json(&c, &["get", "pods", "-l", &format!("app={app}")])).len();

    c.ok(&["create", "deployment", "before", "--image=nginx", "--replicas=2"]);
    wait_for(60, "the leader creates the pods of a Deployment", || {
        (pods_of("before") == 2).then_some(())
    });
    assert_eq!(
        s(&lease(&c, "kube-controller-manager"), "/spec/holderIdentity"),
        leader_id
    );

    leader.kill9();
    let killed = Instant::now();
    c.ok(&["create", "deployment", "after", "--image=nginx", "--replicas=2"]);
    wait_for(60, "the standby creates the pods of the new Deployment", || {
        (pods_of("after") > 0).then_some(())
    });
    let took = killed.elapsed();
    println!(
        "figure: the standby controller manager created a new Deployment's pods {:.2} s after `kill -9` of the leader (lease 2 s, retry 0.5 s)",
        took.as_secs_f64()
    );
    wait_for(60, "both pods, and no more", || (pods_of("after") == 2).then_some(()));
    standby.wait_for_line(5, "successfully acquired lease kube-system/kube-controller-manager");
    let lease = lease(&c, "kube-controller-manager");
    assert_eq!(s(&lease, "/spec/holderIdentity"), standby_id);
    assert_eq!(lease.pointer("/spec/leaseTransitions"), Some(&Value::from(1)));
    assert_eq!(pods_of("before"), 2, "the old Deployment's pods are untouched");
}

/// Someone else writes themselves into the Lease (here: a merge patch, as
/// `kubectl edit` would): the leader sees it at its next renewal, stops and exits with code 1.
/// The standby waits for the stranger's lease to run out (nobody renews it), then leads.
#[test]
fn a_leader_that_finds_another_holder_exits_with_leaderelection_lost() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster_without("scheduler", dir.path());
    let (mut leader, _, standby, standby_id) = leader_and_standby(&c, "scheduler");
    c.ok(&[
        "patch",
        "lease",
        "kube-scheduler",
        "-n",
        "kube-system",
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"someone-else"}}"#,
    ]);
    let code = wait_for(30, "the leader exits", || leader.exited());
    assert_eq!(
        code,
        Some(1),
        "leaderelection lost is an error exit: {:?}",
        leader.lines()
    );
    assert!(leader.printed("error: leaderelection lost"), "{:?}", leader.lines());
    standby.wait_for_line(30, "successfully acquired lease kube-system/kube-scheduler");
    assert_eq!(s(&lease(&c, "kube-scheduler"), "/spec/holderIdentity"), standby_id);
    create_pod(&c, "after");
    wait_for(60, "the new leader binds", || node_of(&c, "after"));
}

/// Ctrl-C (SIGTERM) releases the lease: the standby takes over at its next try, without
/// waiting out the lease.
#[test]
fn a_leader_stopped_gracefully_releases_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster_without("scheduler", dir.path());
    let (mut leader, _, standby, standby_id) = leader_and_standby(&c, "scheduler");
    let pid = leader.pid().expect("running").to_string();
    let stopped = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    standby.wait_for_line(30, "successfully acquired lease kube-system/kube-scheduler");
    println!(
        "figure: the standby scheduler led {:.2} s after SIGTERM of the leader (released lease)",
        stopped.elapsed().as_secs_f64()
    );
    let lease = lease(&c, "kube-scheduler");
    assert_eq!(s(&lease, "/spec/holderIdentity"), standby_id);
    assert_eq!(wait_for(30, "the leader exits", || leader.exited()), Some(0));
}
