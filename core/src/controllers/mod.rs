//! Station ③ · chapter "The controller manager" (book/src/controllers.md) · spans `controller.*`
//!
//! # The controller manager (mirrors kube-controller-manager)
//!
//! Controllers are the cluster's autopilots. Each watches some kinds through informers and
//! keeps reconciling the world towards what the objects ask for. kube-controller-manager is
//! one process that runs many of them over **shared informers**: one list+watch per kind,
//! one cache, many controllers reading it. kulisse does the same:
//!
//! - [`reconciler`]: the shared reconcile loop (work queue, workers, back-off, spans).
//! - [`deployment`]: Deployment → ReplicaSets (one per pod template), rolling updates.
//! - [`replicaset`]: ReplicaSet → the right number of Pods.
//! - [`endpoints`]: Service selector → the addresses of its ready Pods (Endpoints, for old clients).
//! - [`endpointslice`]: the same as EndpointSlices of at most 100 endpoints, which kube-proxy reads.
//! - [`namespace`]: empties a terminating Namespace through the API, then finalizes it.
//! - [`garbagecollector`]: deletes objects whose owners are gone (ownerReferences).
//! - [`nodelifecycle`]: marks silent nodes NotReady and evicts their Pods.
//! - [`serviceaccounts`]: gives every namespace its `default` ServiceAccount.
//!
//! [`run`] starts them all; `kulisse controller-manager` and `kulisse up` call it.
//!
//! **Several controller managers.** With several masters, each runs a controller manager,
//! but only the leader of the Lease `kube-system/kube-controller-manager` runs its
//! controllers ([`crate::client::leaderelection`], client-go's `leaderelection`): two
//! ReplicaSet controllers acting at once would both create the missing pods. The standbys
//! take over when the leader's lease runs out; each change of leadership is a
//! `controller.leader_election` span ([`leader_election_span`]). As kube-controller-manager,
//! a standby starts its informers only once it leads.

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod endpointutil;
pub mod garbagecollector;
pub mod namespace;
pub mod nodelifecycle;
pub mod reconciler;
pub mod replicaset;
pub mod serviceaccounts;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::Client;
use crate::client::informer::{Cache, Informer};
use crate::events::EventRecorder;
use crate::objects::{self, ResourceInfo};

/// One informer per kind the controllers need, created together and started together so
/// every controller reads the same caches. Register handlers (`informers.pods.on_event`)
/// before [`SharedInformers::start`].
pub struct SharedInformers {
    pub pods: Informer,
    pub replicasets: Informer,
    pub deployments: Informer,
    pub services: Informer,
    pub endpoints: Informer,
    pub endpointslices: Informer,
    pub nodes: Informer,
    pub leases: Informer,
    pub namespaces: Informer,
    pub serviceaccounts: Informer,
}

/// Read handles on the shared informers' caches. Cheap to clone.
#[derive(Clone)]
pub struct Caches {
    pub pods: Cache,
    pub replicasets: Cache,
    pub deployments: Cache,
    pub services: Cache,
    pub endpoints: Cache,
    pub endpointslices: Cache,
    pub nodes: Cache,
    pub leases: Cache,
    pub namespaces: Cache,
    pub serviceaccounts: Cache,
}

/// The Lease in `kube-system` the controller managers elect their leader with.
pub const LEASE_NAME: &str = "kube-controller-manager";

/// The span of one change of leadership among the controller managers: its event says
/// which (`started leading`, `stopped leading`, `new leader`).
pub fn leader_election_span(lease: &str, identity: &str, holder: &str, transitions: i64) -> tracing::Span {
    tracing::info_span!(
        "controller.leader_election",
        "kulisse.stage" = "controller",
        "leaderelection.lease" = lease,
        "leaderelection.identity" = identity,
        "leaderelection.holder" = holder,
        "leaderelection.transitions" = transitions,
    )
}

fn kind(api_version: &str, kind: &str) -> &'static ResourceInfo {
    objects::by_gvk(api_version, kind).expect("built-in kind")
}

impl SharedInformers {
    /// Informers over every namespace, resynced every `resync`.
    pub fn new(client: &Client, resync: Duration) -> Self {
        let make =
            |api_version: &str, k: &str| Informer::new(client.clone(), kind(api_version, k), None).with_resync(resync);
        SharedInformers {
            pods: make("v1", "Pod"),
            replicasets: make("apps/v1", "ReplicaSet"),
            deployments: make("apps/v1", "Deployment"),
            services: make("v1", "Service"),
            endpoints: make("v1", "Endpoints"),
            endpointslices: make("discovery.k8s.io/v1", "EndpointSlice"),
            nodes: make("v1", "Node"),
            leases: Informer::new(
                client.clone(),
                kind("coordination.k8s.io/v1", "Lease"),
                Some("kube-node-lease".into()),
            ),
            namespaces: make("v1", "Namespace"),
            serviceaccounts: make("v1", "ServiceAccount"),
        }
    }

    /// The caches (filled once the informers run).
    pub fn caches(&self) -> Caches {
        Caches {
            pods: self.pods.cache(),
            replicasets: self.replicasets.cache(),
            deployments: self.deployments.cache(),
            services: self.services.cache(),
            endpoints: self.endpoints.cache(),
            endpointslices: self.endpointslices.cache(),
            nodes: self.nodes.cache(),
            leases: self.leases.cache(),
            namespaces: self.namespaces.cache(),
            serviceaccounts: self.serviceaccounts.cache(),
        }
    }

    /// Start every informer; resolves once all have listed (their caches are synced).
    pub async fn start(self, shutdown: watch::Receiver<bool>) {
        let all = [
            self.pods,
            self.replicasets,
            self.deployments,
            self.services,
            self.endpoints,
            self.endpointslices,
            self.nodes,
            self.leases,
            self.namespaces,
            self.serviceaccounts,
        ];
        let mut synced = Vec::new();
        for informer in all {
            synced.push(informer.synced());
            tokio::spawn(informer.run(shutdown.clone()));
        }
        for mut s in synced {
            let _ = s.wait_for(|ok| *ok).await;
        }
    }
}

/// Settings of the controller manager. The defaults are Kubernetes'; [`Options::fast`] is
/// the teaching profile (`kulisse up --fast-failover`) that shows failover in seconds.
#[derive(Clone, Debug)]
pub struct Options {
    /// Workers per controller.
    pub workers: usize,
    /// How long a node may go without renewing its Lease before it is marked NotReady
    /// (kube-controller-manager's `--node-monitor-grace-period`, 50 s since v1.32).
    pub node_monitor_grace_period: Duration,
    /// How long pods stay on a NotReady node before they are evicted (the default
    /// `tolerationSeconds` of the `not-ready`/`unreachable` taints, 300 s).
    pub pod_eviction_timeout: Duration,
    /// How often informers hand every object to the controllers again.
    pub resync: Duration,
    /// At most this many endpoints per EndpointSlice (`--max-endpoints-per-slice`, 100).
    pub max_endpoints_per_slice: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 4,
            node_monitor_grace_period: Duration::from_secs(50),
            pod_eviction_timeout: Duration::from_secs(300),
            resync: Duration::from_secs(300),
            max_endpoints_per_slice: endpointslice::MAX_ENDPOINTS_PER_SLICE,
        }
    }
}

impl Options {
    /// The teaching profile: a silent node is NotReady after 4 s, its pods evicted 2 s later.
    pub fn fast() -> Self {
        Options {
            node_monitor_grace_period: Duration::from_secs(4),
            pod_eviction_timeout: Duration::from_secs(2),
            ..Options::default()
        }
    }
}

/// What every controller gets: the client for writes, the caches for reads, an event recorder.
pub struct Ctx {
    pub client: Client,
    pub caches: Caches,
    pub recorder: EventRecorder,
    pub options: Options,
}

/// Run every controller until `shutdown` turns true.
pub async fn run(client: Client, options: Options, shutdown: watch::Receiver<bool>) {
    let client = client.for_component("controller-manager", "");
    let mut informers = SharedInformers::new(&client, options.resync);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        caches: informers.caches(),
        recorder: EventRecorder::new(client.clone(), "controller-manager", None),
        options: options.clone(),
    });
    let (deploy, deploy_q) = deployment::setup(&mut informers, ctx.clone());
    let (rs, rs_q) = replicaset::setup(&mut informers, ctx.clone());
    let (ep, ep_q) = endpoints::setup(&mut informers, ctx.clone());
    let (eps, eps_q) = endpointslice::setup(&mut informers, ctx.clone());
    let (ns, ns_q) = namespace::setup(&mut informers, ctx.clone());
    let (gc, gc_q) = garbagecollector::setup(&mut informers, ctx.clone());
    let (nl, nl_q) = nodelifecycle::setup(&mut informers, ctx.clone());
    let (sa, sa_q) = serviceaccounts::setup(&mut informers, ctx.clone());
    informers.start(shutdown.clone()).await;
    let w = options.workers;
    tokio::join!(
        reconciler::run(deploy, deploy_q, w, shutdown.clone()),
        reconciler::run(rs, rs_q, w, shutdown.clone()),
        reconciler::run(ep, ep_q, w, shutdown.clone()),
        reconciler::run(eps, eps_q, w, shutdown.clone()),
        reconciler::run(ns, ns_q, w, shutdown.clone()),
        reconciler::run(gc, gc_q, w, shutdown.clone()),
        reconciler::run(nl, nl_q, 1, shutdown.clone()),
        reconciler::run(sa, sa_q, 1, shutdown.clone()),
    );
}
