//! # Priority levels: the cluster's own components keep their seats (mirrors four of API Priority and Fairness' suggested levels)
//!
//! The max-in-flight filter ([`super::limits`]) counts every write against one limit. That
//! is fair to requests and unfair to the cluster: when 5,000 kubelets and their kube-proxies
//! start at once, the 200 write seats fill with registrations, and the **Lease renewals**
//! that prove a node alive, and the Lease a **leader** renews to keep its term, are refused
//! with everything else. A leader that cannot renew steps down; a node that cannot renew
//! is marked `Unknown`. Overload then turns into failover, which is more load.
//!
//! kube-apiserver's answer is **API Priority and Fairness** (APF, on by default since 1.20).
//! `FlowSchema`s sort each request into a **priority level**; each level has its own share
//! of the server's seats (`nominalConcurrencyShares`) and its own queues, so one level's
//! crowd cannot take another's seats, and a burst waits in a queue instead of being refused.
//! Of the suggested configuration, kulisse keeps the four levels of the cluster's own
//! components, checked in this order (the FlowSchemas' `matchingPrecedence`):
//!
//! | level | who, what (the FlowSchema) | shares | queues × length |
//! |---|---|---|---|
//! | `leader-election` | `system:kube-controller-manager`, `system:kube-scheduler`, service accounts of `kube-system`: `get`, `create`, `update` of `leases` (and of `endpoints`, `configmaps` in `kube-system`) | 10 | 16 × 50 |
//! | `node-high` | group `system:nodes`: anything on `nodes`, `nodes/status` and `leases` | 40 | 64 × 50 |
//! | `system` | group `system:nodes`: everything else (pods' status, their own reads) | 30 | 64 × 50 |
//! | `workload-high` | `system:kube-controller-manager`, `system:kube-scheduler`: everything else | 40 | 128 × 50 |
//!
//! Seats come as upstream computes them: the server's limit (`--max-requests-inflight` plus
//! `--max-mutating-requests-inflight`, 600 by default) split by shares over the 245 shares of
//! the whole suggested configuration, rounded up: 25, 98, 74 and 98 seats. A request of a
//! level that finds every seat taken **waits** in the level's queue ([`QUEUE_WAIT`] at
//! most), and is refused with `429` only when the queue is full or the wait runs out. Every
//! other request (users, service accounts, kube-proxy) goes to the max-in-flight filter.
//!
//! Where kulisse differs: there are no `FlowSchema` or `PriorityLevelConfiguration` objects
//! to read or change, only these built-in levels; a level has one queue, not shuffle
//! sharding over many (the waits are served first come, first served, not fairly per flow);
//! seats are not lent between levels; and the requests of no level keep the max-in-flight
//! filter's two counters (400 reads, 200 writes) instead of sharing the 600 seats with the
//! levels (upstream's `workload-low`, `global-default` and `catch-all`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::authz::Attributes;
use super::limits::{InFlightPermit, Limits};

/// The shares of the whole suggested configuration (catch-all 5, system 30, node-high 40,
/// leader-election 10, workload-high 40, workload-low 100, global-default 20).
const TOTAL_SHARES: usize = 245;

/// How long a request waits in a level's queue for a seat (upstream waits at most a
/// quarter of the request timeout, 15 s).
pub const QUEUE_WAIT: Duration = Duration::from_secs(15);

/// One priority level: its seats, and how many may wait for one.
pub struct Level {
    pub name: &'static str,
    seats: Option<Arc<Semaphore>>,
    waiting: AtomicUsize,
    queue_limit: usize,
}

impl Level {
    fn new(name: &'static str, shares: usize, queue_limit: usize, limits: &Limits) -> Level {
        let server = limits.max_requests_inflight + limits.max_mutating_requests_inflight;
        // A limit of 0 is "no limit" for the filter; then the levels have none either.
        let unlimited = limits.max_requests_inflight == 0 || limits.max_mutating_requests_inflight == 0;
        Level {
            name,
            seats: (!unlimited).then(|| Arc::new(Semaphore::new((server * shares).div_ceil(TOTAL_SHARES)))),
            waiting: AtomicUsize::new(0),
            queue_limit,
        }
    }

    /// The seats of this level free now (`None`: no limit).
    pub fn free_seats(&self) -> Option<usize> {
        self.seats.as_ref().map(|s| s.available_permits())
    }

    /// Take a seat, waiting in the queue when all are taken; `None` when the queue is full
    /// or the wait ran out.
    async fn enter(&self) -> Option<InFlightPermit> {
        let Some(seats) = &self.seats else {
            return Some(InFlightPermit::unlimited());
        };
        if let Ok(seat) = seats.clone().try_acquire_owned() {
            return Some(InFlightPermit::holding(seat));
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_limit {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let seat = tokio::time::timeout(QUEUE_WAIT, seats.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match seat {
            Ok(Ok(seat)) => Some(InFlightPermit::holding(seat)),
            _ => None,
        }
    }
}

/// The levels kulisse keeps.
pub struct PriorityLevels {
    leader_election: Level,
    node_high: Level,
    system: Level,
    workload_high: Level,
}

/// What a request of a level got: a seat, or a refusal (queue full, or waited too long).
pub enum Admission {
    /// Not one of the levels: the max-in-flight filter decides.
    Unclassified,
    Seated(InFlightPermit),
    Refused(&'static str),
}

impl PriorityLevels {
    pub fn new(limits: &Limits) -> PriorityLevels {
        PriorityLevels {
            leader_election: Level::new("leader-election", 10, 16 * 50, limits),
            node_high: Level::new("node-high", 40, 64 * 50, limits),
            system: Level::new("system", 30, 64 * 50, limits),
            workload_high: Level::new("workload-high", 40, 128 * 50, limits),
        }
    }

    /// The level of a request, by the suggested FlowSchemas `system-leader-election`,
    /// `system-node-high`, `system-nodes`, `kube-controller-manager` and `kube-scheduler`;
    /// `None` for every other request.
    pub fn level_of(&self, attrs: &Attributes) -> Option<&Level> {
        if is_leader_election(attrs) {
            Some(&self.leader_election)
        } else if is_node_high(attrs) {
            Some(&self.node_high)
        } else if is_node(attrs) {
            Some(&self.system)
        } else if is_control_plane(attrs) {
            Some(&self.workload_high)
        } else {
            None
        }
    }

    /// Seat a request of one of the levels (waiting if need be).
    pub async fn admit(&self, attrs: &Attributes) -> Admission {
        match self.level_of(attrs) {
            None => Admission::Unclassified,
            Some(level) => match level.enter().await {
                Some(permit) => Admission::Seated(permit),
                None => Admission::Refused(level.name),
            },
        }
    }
}

const COORDINATION: &str = "coordination.k8s.io";

const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";
const SCHEDULER: &str = "system:kube-scheduler";

/// `kube-controller-manager` and `kube-scheduler`: the control plane's own work.
fn is_control_plane(a: &Attributes) -> bool {
    a.user.name == CONTROLLER_MANAGER || a.user.name == SCHEDULER
}

/// `system-nodes`: anything a kubelet asks.
fn is_node(a: &Attributes) -> bool {
    a.user.groups.iter().any(|g| g == "system:nodes")
}

/// `system-leader-election`: the control plane's components renewing their terms.
fn is_leader_election(a: &Attributes) -> bool {
    let who = is_control_plane(a) || a.user.name.starts_with("system:serviceaccount:kube-system:");
    let verb = matches!(a.verb.as_str(), "get" | "create" | "update");
    let what = (a.api_group == COORDINATION && a.resource == "leases")
        || (a.api_group.is_empty()
            && matches!(a.resource.as_str(), "endpoints" | "configmaps")
            && a.namespace == "kube-system");
    a.resource_request && who && verb && what && a.subresource.is_empty()
}

/// `system-node-high`: kubelets keeping their Node and its Lease current.
fn is_node_high(a: &Attributes) -> bool {
    let node = is_node(a);
    let nodes = a.api_group.is_empty() && a.resource == "nodes" && matches!(a.subresource.as_str(), "" | "status");
    let lease = a.api_group == COORDINATION && a.resource == "leases" && !a.namespace.is_empty();
    a.resource_request && node && (nodes || lease)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::auth::UserInfo;

    fn attrs(user: &str, groups: &[&str], verb: &str, group: &str, resource: &str, sub: &str, ns: &str) -> Attributes {
        Attributes {
            user: UserInfo {
                name: user.into(),
                uid: String::new(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            api_version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: "x".into(),
            path: String::new(),
            field_selector: String::new(),
        }
    }

    #[test]
    fn requests_are_sorted_as_the_suggested_flow_schemas_sort_them() {
        let levels = PriorityLevels::new(&Limits::default());
        let level = |a: &Attributes| levels.level_of(a).map(|l| l.name);
        let kcm = "system:kube-controller-manager";
        let node = ("system:node:n1", &["system:nodes", "system:authenticated"][..]);
        let sched = "system:kube-scheduler";
        let admin = ("kubernetes-admin", &["system:masters"][..]);
        let lease = |user: &str, groups: &[&str], verb: &str, ns: &str| {
            attrs(user, groups, verb, COORDINATION, "leases", "", ns)
        };
        let cases = [
            (lease(kcm, &[], "update", "kube-system"), Some("leader-election")),
            (lease(sched, &[], "get", "kube-system"), Some("leader-election")),
            (lease(kcm, &[], "patch", "kube-system"), Some("workload-high")),
            (
                attrs(kcm, &[], "create", "", "pods", "", "default"),
                Some("workload-high"),
            ),
            (
                attrs(sched, &[], "create", "", "pods", "binding", "default"),
                Some("workload-high"),
            ),
            (lease(node.0, node.1, "patch", "kube-node-lease"), Some("node-high")),
            (
                attrs(node.0, node.1, "patch", "", "nodes", "status", ""),
                Some("node-high"),
            ),
            (attrs(node.0, node.1, "create", "", "nodes", "", ""), Some("node-high")),
            (
                attrs(node.0, node.1, "patch", "", "pods", "status", "default"),
                Some("system"),
            ),
            (lease(admin.0, admin.1, "update", "kube-node-lease"), None),
            (
                attrs("system:kube-proxy", &[], "create", "", "events", "", "default"),
                None,
            ),
        ];
        for (a, want) in cases {
            assert_eq!(
                level(&a),
                want,
                "{} {} {}/{}",
                a.user.name,
                a.verb,
                a.resource,
                a.subresource
            );
        }
    }

    #[test]
    fn seats_are_the_levels_share_of_the_servers_limit() {
        let levels = PriorityLevels::new(&Limits::default());
        assert_eq!(levels.leader_election.free_seats(), Some(25));
        assert_eq!(levels.node_high.free_seats(), Some(98));
        assert_eq!(levels.system.free_seats(), Some(74));
        assert_eq!(levels.workload_high.free_seats(), Some(98));
        let unlimited = PriorityLevels::new(&Limits {
            max_mutating_requests_inflight: 0,
            ..Limits::default()
        });
        assert_eq!(unlimited.node_high.free_seats(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_a_seat_and_is_refused_when_the_queue_is_full_or_the_wait_runs_out() {
        let limits = Limits {
            max_requests_inflight: 2,
            max_mutating_requests_inflight: 2,
            ..Limits::default()
        };
        // 4 × 40 / 245, rounded up: one seat; the queue holds 3,200.
        let level = Level::new("node-high", 40, 1, &limits);
        let seat = level.enter().await.expect("the free seat");
        let start = tokio::time::Instant::now();
        let waiter = level.enter();
        let freed = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(seat);
        };
        let (waited, ()) = tokio::join!(waiter, freed);
        let seat = waited.expect("the seat, once freed");
        assert_eq!(start.elapsed(), Duration::from_secs(3), "it waited, not refused");
        let (timed_out, queue_full) = tokio::join!(level.enter(), async {
            tokio::task::yield_now().await;
            level.enter().await
        });
        assert!(queue_full.is_none(), "the one place in the queue was taken");
        assert!(timed_out.is_none(), "no seat came within the wait");
        assert_eq!(start.elapsed(), Duration::from_secs(3) + QUEUE_WAIT);
        drop(seat);
    }
}
