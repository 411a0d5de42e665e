//! The catalogue of every span kulisse emits.
//!
//! A trace is only useful if you know what its spans mean. This module lists each span name
//! kulisse emits, which component ("stage") emits it and what it measures, so that a learner
//! looking at a trace in Jaeger or Tempo can look up every step. The same list is the
//! contract for kulisse's code: a new span gets an entry here.
//!
//! Every span carries the attribute [`STAGE_KEY`] (`kulisse.stage`) with one of the
//! [`STAGES`], e.g. with `tracing`:
//!
//! ```
//! let span = tracing::info_span!("apiserver.validate", kulisse.stage = "apiserver");
//! let _entered = span.enter();
//! ```
//!
//! The stages mirror the components of a Kubernetes cluster: the client (`kubectl`, here
//! `cli`), the kube-apiserver (`apiserver`) and its storage, etcd (`store`), the
//! kube-controller-manager's controllers (`controller`), the kube-scheduler (`scheduler`), the
//! node agent (`kubelet`), the container runtime behind the CRI (`runtime`) and kube-proxy,
//! which routes Service traffic (`proxy`).
//!
//! ## One map
//!
//! The catalogue is also the map of kulisse: the one place that says which **station** of the
//! road an `apply` travels (the seed's steps: request, store, controllers, scheduler,
//! kubelet, kube-proxy, answer) each span belongs to, which files emit it and which chapter of
//! the book explains it ([`SpanInfo`], [`STATIONS`], [`CHAPTERS`]), and what every span
//! attribute means ([`ATTRIBUTES`]). The tables of ARCHITECTURE.md, the book's introduction,
//! "Going further", each road chapter's "Reading the code" and the glossary are rendered from
//! it by [`crate::map`], and `tests/tests/map.rs` checks them, and the catalogue itself,
//! against the sources: every span the code emits is listed here, with exactly the attributes
//! the code gives it, and every path named here exists.

/// The span attribute that names the kulisse component a span belongs to.
pub const STAGE_KEY: &str = "kulisse.stage";

/// The allowed values of [`STAGE_KEY`], in the order a request flows through kulisse.
pub const STAGES: &[&str] = &[
    "cli",
    "apiserver",
    "store",
    "controller",
    "scheduler",
    "kubelet",
    "runtime",
    "proxy",
];

/// One entry of the catalogue: a span name kulisse emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanInfo {
    /// The span name, `<stage>.<step>` by convention, e.g. `apiserver.validate`.
    pub name: &'static str,
    /// The value of the span's `kulisse.stage` attribute: one of [`STAGES`].
    pub stage: &'static str,
    /// The [`Station`] of the road the span belongs to (its `number`).
    pub station: u8,
    /// The source files that emit the span, relative to the repository root.
    pub modules: &'static [&'static str],
    /// The book chapter that explains the span (a file of `book/src`).
    pub chapter: &'static str,
    /// The attributes the span carries besides [`STAGE_KEY`], each one of [`ATTRIBUTES`].
    pub attributes: &'static [&'static str],
    /// What the span measures, in one sentence for a learner.
    pub what: &'static str,
}

/// What a `<stage>.leader_election` span carries (the controller manager's and the scheduler's).
const LEADER_ELECTION_ATTRIBUTES: &[&str] = &[
    "leaderelection.holder",
    "leaderelection.identity",
    "leaderelection.lease",
    "leaderelection.transitions",
];

/// Every span name kulisse emits.
pub const SPANS: &[SpanInfo] = &[
    SpanInfo {
        name: "cli.apply",
        stage: "cli",
        station: 1,
        modules: &["cli/src/commands/apply.rs"],
        chapter: "apply.md",
        attributes: &["cli.dry_run", "cli.files", "cli.objects"],
        what: "One `kulisse apply` command, from reading the manifests to the last answer of \
               the API server; the root span of the trace.",
    },
    SpanInfo {
        name: "cli.request",
        stage: "cli",
        station: 1,
        modules: &["cli/src/commands/apply.rs"],
        chapter: "apply.md",
        attributes: &[
            "cli.source",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "k8s.outcome",
            "otel.status_code",
        ],
        what: "One HTTP request the CLI sends to the API server, including waiting for the \
               response; it carries the `traceparent` header.",
    },
    SpanInfo {
        name: "apiserver.request",
        stage: "apiserver",
        station: 1,
        modules: &["core/src/apiserver/mod.rs"],
        chapter: "apply.md",
        attributes: &[
            "http.request.method",
            "http.response.status_code",
            "k8s.name",
            "k8s.namespace",
            "k8s.outcome",
            "k8s.resource",
            "k8s.verb",
            "otel.status_code",
            "url.path",
        ],
        what: "One HTTP request received by the API server, from the first byte to the \
               response; the child of the caller's span named in `traceparent`.",
    },
    SpanInfo {
        name: "apiserver.bootstrap",
        stage: "apiserver",
        station: 1,
        modules: &["core/src/apiserver/mod.rs"],
        chapter: "apply.md",
        attributes: &[],
        what: "Start-up housekeeping: creating the namespaces every cluster has. Background \
               work, so only recorded with KULISSE_TRACE_BACKGROUND=1.",
    },
    SpanInfo {
        name: "apiserver.authenticate",
        stage: "apiserver",
        station: 1,
        modules: &["core/src/apiserver/auth.rs"],
        chapter: "apply.md",
        attributes: &[
            "auth.groups",
            "auth.impersonator",
            "auth.method",
            "auth.reason",
            "auth.result",
            "auth.user",
        ],
        what: "Finding out who sent the request (authentication), as the kube-apiserver does \
               before anything else.",
    },
    SpanInfo {
        name: "apiserver.authorize",
        stage: "apiserver",
        station: 1,
        modules: &["core/src/apiserver/authz/mod.rs"],
        chapter: "apply.md",
        attributes: &[
            "authz.authorizer",
            "authz.decision",
            "authz.namespace",
            "authz.reason",
            "authz.resource",
            "authz.user",
            "authz.verb",
        ],
        what: "Deciding whether the user may do what the request asks (authorization: \
               system:masters, the Node authorizer, RBAC); a refusal is a 403 Forbidden.",
    },
    SpanInfo {
        name: "apiserver.decode",
        stage: "apiserver",
        station: 1,
        modules: &["core/src/apiserver/protobuf.rs", "core/src/apiserver/write.rs"],
        chapter: "apply.md",
        attributes: &["content_type", "http.request.body.size"],
        what: "Parsing the request body (JSON or YAML) into an object.",
    },
    SpanInfo {
        name: "apiserver.validate",
        stage: "apiserver",
        station: 1,
        modules: &["core/src/apiserver/write.rs"],
        chapter: "apply.md",
        attributes: &["k8s.kind", "k8s.name"],
        what: "Defaulting (filling in omitted fields) and validation of the object, like the \
               kube-apiserver's defaulting and validation stages.",
    },
    SpanInfo {
        name: "apiserver.step_pause",
        stage: "apiserver",
        station: 1,
        modules: &["core/src/apiserver/step.rs"],
        chapter: "apply.md",
        attributes: &["k8s.kind", "k8s.name", "kulisse.step.component", "kulisse.step.verb"],
        what: "Step mode (kulisse only): how long a component's write waited at the API server's \
               gate, paused or at a breakpoint, until `kulisse step next` or `continue` let it through.",
    },
    SpanInfo {
        name: "apiserver.compare",
        stage: "apiserver",
        station: 1,
        modules: &["core/src/apiserver/patch.rs"],
        chapter: "apply.md",
        attributes: &[
            "compare.changed_fields",
            "compare.result",
            "compare.stored",
            "k8s.kind",
            "k8s.name",
        ],
        what: "Reading the stored object and comparing it with the new one, to decide \
               between create, update and no change.",
    },
    SpanInfo {
        name: "store.get",
        stage: "store",
        station: 2,
        modules: &["core/src/apiserver/storage.rs"],
        chapter: "store.md",
        attributes: &["store.backend", "store.found", "store.key", "store.mod_revision"],
        what: "Reading one key from the store (an etcd Range on a single key).",
    },
    SpanInfo {
        name: "store.range",
        stage: "store",
        station: 2,
        modules: &["core/src/apiserver/storage.rs"],
        chapter: "store.md",
        attributes: &["store.backend", "store.count", "store.prefix", "store.revision"],
        what: "Reading the keys under a prefix from the store (an etcd Range on a key range), \
               e.g. for a list.",
    },
    SpanInfo {
        name: "store.txn",
        stage: "store",
        station: 2,
        modules: &["core/src/apiserver/storage.rs"],
        chapter: "store.md",
        attributes: &[
            "store.backend",
            "store.expected_mod_revision",
            "store.key",
            "store.op",
            "store.revision",
            "store.succeeded",
        ],
        what: "An atomic compare-and-swap transaction on the store (an etcd Txn), e.g. \
               'create if absent' or 'update if unchanged since revision N'.",
    },
    SpanInfo {
        name: "store.compact",
        stage: "store",
        station: 2,
        modules: &["core/src/apiserver/compactor.rs"],
        chapter: "store.md",
        attributes: &["store.backend", "store.revision"],
        what: "The API server's compactor forgetting the store's history before a revision, \
               every --etcd-compaction-interval. Background work, so only recorded with \
               KULISSE_TRACE_BACKGROUND=1.",
    },
    SpanInfo {
        name: "controller.reconcile",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/reconciler.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.action",
            "controller.key",
            "controller.name",
            "controller.reason",
            "otel.status_code",
        ],
        what: "One reconcile of one key by one controller (the deployment controller making \
               the ReplicaSets of `default/web` match the Deployment, say); it continues the \
               trace named in the object's `kulisse.dev/traceparent` annotation.",
    },
    SpanInfo {
        name: "controller.create_replicaset",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/deployment/sync.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.owner",
            "controller.pod_template_hash",
            "controller.replicas.desired",
            "controller.revision",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "The Deployment controller creating the ReplicaSet for a new pod template \
               (`<deployment>-<pod-template-hash>`, next revision, first size within maxSurge); \
               the ReplicaSet carries this span's traceparent.",
    },
    SpanInfo {
        name: "controller.scale_replicaset",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/deployment/sync.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.owner",
            "controller.replicas.from",
            "controller.replicas.to",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "The Deployment controller resizing one ReplicaSet (`controller.replicas.from` → \
               `.to`): a scale, or one step of a rolling update or Recreate.",
    },
    SpanInfo {
        name: "controller.update_replicaset",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/deployment/sync.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.owner",
            "controller.replicas.from",
            "controller.replicas.to",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "The Deployment controller syncing the current ReplicaSet's annotations (revision, \
               copied Deployment annotations) or minReadySeconds, without resizing it.",
    },
    SpanInfo {
        name: "controller.delete_replicaset",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/deployment/sync.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.owner",
            "controller.revision",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "The Deployment controller deleting an old ReplicaSet at 0 replicas beyond \
               `revisionHistoryLimit`.",
    },
    SpanInfo {
        name: "controller.create_pod",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/replicaset.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.owner",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "The ReplicaSet controller creating one Pod from its template \
               (`<replicaset>-<5 random characters>`); the Pod carries this span's \
               traceparent, so scheduling and the kubelet continue the trace.",
    },
    SpanInfo {
        name: "controller.delete_pod",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/replicaset.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.owner",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "The ReplicaSet controller deleting a surplus Pod (the one that hurts least to \
               lose: unscheduled, pending, not ready, newest first).",
    },
    SpanInfo {
        name: "controller.adopt",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/replicaset.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.owner",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "A controller adopting an orphan whose labels match its selector: writing its \
               own controller ownerReference onto the Pod (or ReplicaSet).",
    },
    SpanInfo {
        name: "controller.release",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/replicaset.rs"],
        chapter: "controllers.md",
        attributes: &[
            "controller.owner",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "A controller releasing an object it owns whose labels no longer match its \
               selector: removing its ownerReference, leaving an orphan.",
    },
    SpanInfo {
        name: "controller.update_status",
        stage: "controller",
        station: 3,
        modules: &[
            "core/src/controllers/deployment/sync.rs",
            "core/src/controllers/replicaset.rs",
        ],
        chapter: "controllers.md",
        attributes: &[
            "controller.replicas.available",
            "controller.replicas.current",
            "controller.replicas.desired",
            "controller.replicas.ready",
            "controller.replicas.updated",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "A controller writing what it observed to an object's `/status` subresource \
               (replica counts, conditions, observedGeneration), only when it changed.",
    },
    SpanInfo {
        name: "controller.sync_endpoints",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/endpoints.rs"],
        chapter: "proxy.md",
        attributes: &[
            "endpoints.action",
            "endpoints.addresses.not_ready",
            "endpoints.addresses.ready",
            "endpoints.pods.selected",
            "endpoints.ports.unresolved",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_message",
        ],
        what: "The Endpoints controller computing a Service's Endpoints from the Pods its \
               selector matches (ready and not-ready address counts, named targetPorts \
               resolved) and writing them only if they changed, or deleting them with the Service.",
    },
    SpanInfo {
        name: "controller.sync_endpointslices",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/endpointslice.rs"],
        chapter: "proxy.md",
        attributes: &[
            "endpointslices.created",
            "endpointslices.deleted",
            "endpointslices.endpoints",
            "endpointslices.slices",
            "endpointslices.updated",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_message",
        ],
        what: "The EndpointSlice controller cutting a Service's endpoints (with their ready, \
               serving and terminating conditions) into EndpointSlices of at most 100 and \
               creating, updating or deleting only the slices that change.",
    },
    SpanInfo {
        name: "controller.delete_namespace_content",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/namespace.rs"],
        chapter: "controllers.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "namespace.deleted",
            "namespace.estimate_seconds",
            "namespace.remaining",
            "otel.status_code",
            "otel.status_message",
        ],
        what: "The namespace controller's pass over a terminating namespace: deleting every \
               object inside through the API (pods first), then recording what remains in the \
               namespace's conditions.",
    },
    SpanInfo {
        name: "controller.finalize_namespace",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/namespace.rs"],
        chapter: "controllers.md",
        attributes: &["k8s.kind", "k8s.name", "namespace.finalizers.left"],
        what: "The namespace controller removing the finalizer `kubernetes` from an emptied \
               namespace (`PUT .../namespaces/NAME/finalize`), after which the API server \
               deletes the namespace.",
    },
    SpanInfo {
        name: "controller.garbage_collect",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/garbagecollector.rs"],
        chapter: "controllers.md",
        attributes: &[
            "gc.actions",
            "gc.dependents.deleted",
            "gc.dependents.orphaned",
            "gc.reason",
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_message",
        ],
        what: "The garbage collector acting on ownerReferences: deleting dependents whose owner \
               is gone, deleting dependents first for a Foreground deletion, or cutting owner \
               references for an Orphan deletion, then removing the owner's finalizer.",
    },
    SpanInfo {
        name: "controller.node_status",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/nodelifecycle.rs"],
        chapter: "failure-labs.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "node.pods.evicted",
            "node.pods.marked_not_ready",
            "node.ready",
            "node.silent_for_seconds",
            "node.taints",
            "otel.status_code",
            "otel.status_message",
        ],
        what: "The node lifecycle controller changing a node: Ready=Unknown after its Lease \
               stopped being renewed, the unreachable/not-ready taints added or removed, Pods \
               marked not ready or evicted (TaintManagerEviction). Quiet checks emit nothing.",
    },
    SpanInfo {
        name: "controller.leader_election",
        stage: "controller",
        station: 3,
        modules: &["core/src/controllers/mod.rs"],
        chapter: "masters.md",
        attributes: LEADER_ELECTION_ATTRIBUTES,
        what: "A change of leadership among the controller managers (the Lease \
               `kube-system/kube-controller-manager`): its event says `started leading`, \
               `stopped leading` or `new leader`. Only the leader runs the controllers.",
    },
    SpanInfo {
        name: "proxy.sync_rules",
        stage: "proxy",
        station: 6,
        modules: &["core/src/proxy/mod.rs"],
        chapter: "proxy.md",
        attributes: &[
            "otel.status_code",
            "otel.status_message",
            "proxy.diff",
            "proxy.node",
            "proxy.rules.added",
            "proxy.rules.changed",
            "proxy.rules.removed",
            "proxy.rules.total",
            "proxy.service",
        ],
        what: "kube-proxy recomputing one Service's forwarding rules (ClusterIP and NodePort \
               → ready endpoints) and applying the difference to its rule table and the \
               published ConfigMap; it continues the trace of the EndpointSlice write that caused it.",
    },
    SpanInfo {
        name: "proxy.listen",
        stage: "proxy",
        station: 6,
        modules: &["core/src/proxy/userspace.rs"],
        chapter: "proxy.md",
        attributes: &[
            "otel.status_code",
            "otel.status_message",
            "proxy.action",
            "proxy.address",
            "proxy.node",
            "proxy.rule",
            "proxy.service",
        ],
        what: "kube-proxy's userspace data path opening (`proxy.action=open`) or closing \
               (`close`) the listener of one rule on its frontend (ClusterIP:port or \
               127.0.0.1:nodePort); an error status says why it could not listen (a port below \
               1024 without root, the address in use). Connections get no span.",
    },
    SpanInfo {
        name: "scheduler.schedule_pod",
        stage: "scheduler",
        station: 4,
        modules: &["core/src/scheduler/mod.rs"],
        chapter: "scheduler.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
            "scheduler.attempt",
            "scheduler.message",
            "scheduler.name",
            "scheduler.node",
            "scheduler.nodes.evaluated",
            "scheduler.nodes.feasible",
            "scheduler.nodes.total",
            "scheduler.pod",
            "scheduler.result",
        ],
        what: "One attempt of the scheduler to place one pending pod: how many nodes it \
               evaluated, how many were feasible, the node chosen or why none fits; it \
               continues the pod's trace (its `kulisse.dev/traceparent` annotation).",
    },
    SpanInfo {
        name: "scheduler.filter",
        stage: "scheduler",
        station: 4,
        modules: &["core/src/scheduler/mod.rs"],
        chapter: "scheduler.md",
        attributes: &[
            "scheduler.nodes.evaluated",
            "scheduler.nodes.feasible",
            "scheduler.nodes.to_find",
            "scheduler.nodes.total",
            "scheduler.plugins",
            "scheduler.rejections",
        ],
        what: "The filter plugins (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, \
               NodePorts, NodeResourcesFit, PodTopologySpread) run over the nodes; an event per \
               node says whether it fits and, if not, why (`node-2: Insufficient cpu`).",
    },
    SpanInfo {
        name: "scheduler.score",
        stage: "scheduler",
        station: 4,
        modules: &["core/src/scheduler/mod.rs"],
        chapter: "scheduler.md",
        attributes: &[
            "scheduler.node",
            "scheduler.nodes.scored",
            "scheduler.plugins",
            "scheduler.score",
            "scheduler.ties",
        ],
        what: "The score plugins (TaintToleration, NodeAffinity, NodeResourcesFit \
               LeastAllocated, PodTopologySpread, NodeResourcesBalancedAllocation) rate each \
               feasible node from 0 to 100, summed with upstream's weights; an event per node \
               shows its points, the span names the winner.",
    },
    SpanInfo {
        name: "scheduler.plugin",
        stage: "scheduler",
        station: 4,
        modules: &["core/src/scheduler/explain.rs"],
        chapter: "scheduler.md",
        attributes: &[
            "scheduler.plugin.extension_point",
            "scheduler.plugin.name",
            "scheduler.plugin.node",
            "scheduler.plugin.points",
            "scheduler.plugin.reason",
            "scheduler.plugin.verdict",
            "scheduler.plugin.weight",
        ],
        what: "One plugin's verdict on one node: under `scheduler.filter` a filter plugin's \
               `Success` or `Unschedulable` with the reason, under `scheduler.score` a score \
               plugin's points, weight and what they are made of (for the first 20 nodes of a \
               cycle). `kulisse explain pod` reads them.",
    },
    SpanInfo {
        name: "scheduler.bind",
        stage: "scheduler",
        station: 4,
        modules: &["core/src/scheduler/mod.rs"],
        chapter: "scheduler.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
            "scheduler.node",
        ],
        what: "Binding the pod to the chosen node: the POST to the pod's `binding` \
               subresource, which sets `spec.nodeName`, and the `Scheduled` event.",
    },
    SpanInfo {
        name: "scheduler.leader_election",
        stage: "scheduler",
        station: 4,
        modules: &["core/src/scheduler/mod.rs"],
        chapter: "masters.md",
        attributes: LEADER_ELECTION_ATTRIBUTES,
        what: "A change of leadership among the schedulers (the Lease \
               `kube-system/kube-scheduler`): its event says `started leading`, \
               `stopped leading` or `new leader`. Only the leader binds pods.",
    },
    SpanInfo {
        name: "kubelet.sync_pod",
        stage: "kubelet",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "k8s.pod.uid",
            "kubelet.node",
            "kubelet.phase.after",
            "kubelet.phase.before",
            "kubelet.pod",
            "kulisse.outcome",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "One sync of a pod by the kubelet of its node that changed something: running the \
               sandbox, pulling images, (re)starting or killing containers, or reporting a new \
               status; continues the trace of whoever last wrote the pod.",
    },
    SpanInfo {
        name: "kubelet.status_update",
        stage: "kubelet",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "k8s.pod.phase",
            "kubelet.attempts",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "The kubelet writing a pod's status (phase, conditions, container states, pod IP) \
               through `PUT .../pods/{name}/status`.",
    },
    SpanInfo {
        name: "kubelet.mount_volumes",
        stage: "kubelet",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "kubelet.volume_dir",
            "kubelet.volumes",
            "otel.status_code",
            "otel.status_description",
        ],
        what: "The kubelet setting up a pod's volumes on the node before its containers start                (emptyDir directories, ConfigMap, Secret and downward API files, hostPath checks),                and again whenever a ConfigMap or Secret it mounts changes.",
    },
    SpanInfo {
        name: "runtime.pull_image",
        stage: "runtime",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
            "runtime.container_id",
            "runtime.container_name",
            "runtime.image",
            "runtime.image_pull_secret",
            "runtime.mounts",
            "runtime.name",
            "runtime.pod_ip",
            "runtime.sandbox_id",
        ],
        what: "The container runtime pulling an image for a container (the CRI's PullImage).",
    },
    SpanInfo {
        name: "runtime.run_pod_sandbox",
        stage: "runtime",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
            "runtime.container_id",
            "runtime.container_name",
            "runtime.image",
            "runtime.image_pull_secret",
            "runtime.mounts",
            "runtime.name",
            "runtime.pod_ip",
            "runtime.sandbox_id",
        ],
        what: "The container runtime creating a pod's sandbox, the environment with the pod's IP \
               that its containers share (the CRI's RunPodSandbox).",
    },
    SpanInfo {
        name: "runtime.create_container",
        stage: "runtime",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
            "runtime.container_id",
            "runtime.container_name",
            "runtime.image",
            "runtime.image_pull_secret",
            "runtime.mounts",
            "runtime.name",
            "runtime.pod_ip",
            "runtime.sandbox_id",
        ],
        what: "The container runtime creating a container in a pod sandbox (the CRI's CreateContainer).",
    },
    SpanInfo {
        name: "runtime.start_container",
        stage: "runtime",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
            "runtime.container_id",
            "runtime.container_name",
            "runtime.image",
            "runtime.image_pull_secret",
            "runtime.mounts",
            "runtime.name",
            "runtime.pod_ip",
            "runtime.sandbox_id",
        ],
        what: "The container runtime starting a created container's process (the CRI's StartContainer).",
    },
    SpanInfo {
        name: "runtime.stop_container",
        stage: "runtime",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
            "runtime.container_id",
            "runtime.container_name",
            "runtime.image",
            "runtime.image_pull_secret",
            "runtime.mounts",
            "runtime.name",
            "runtime.pod_ip",
            "runtime.sandbox_id",
        ],
        what: "The container runtime stopping a container: SIGTERM, then SIGKILL after the grace \
               period (the CRI's StopContainer).",
    },
    SpanInfo {
        name: "runtime.remove_pod_sandbox",
        stage: "runtime",
        station: 5,
        modules: &["core/src/kubelet/pod_worker.rs"],
        chapter: "kubelet.md",
        attributes: &[
            "k8s.kind",
            "k8s.name",
            "k8s.namespace",
            "otel.status_code",
            "otel.status_description",
            "runtime.container_id",
            "runtime.container_name",
            "runtime.image",
            "runtime.image_pull_secret",
            "runtime.mounts",
            "runtime.name",
            "runtime.pod_ip",
            "runtime.sandbox_id",
        ],
        what: "The container runtime stopping and removing a pod's sandbox and what is left of its \
               containers, freeing the pod IP (the CRI's StopPodSandbox and RemovePodSandbox).",
    },
];

/// One station of the road a `kulisse apply` travels: one step of the seed's story of
/// `kubectl apply -f app.yaml` (request, store, controllers, scheduler, kubelet, kube-proxy,
/// answer), the spans it emits, the files that implement it and the chapter that explains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Station {
    /// The station's number on the road, 1 to 7 (drawn ① to ⑦ in the book's figures).
    pub number: u8,
    /// The seed's step, in its words.
    pub step: &'static str,
    /// The span prefixes (stages) of the spans that belong to the station.
    pub stages: &'static [&'static str],
    /// The book chapter that walks through the station (a file of `book/src`).
    pub chapter: &'static str,
    /// The Kubernetes component(s) the station mirrors.
    pub component: &'static str,
    /// The files (or directories, ending in `/`) that implement the station, in reading order.
    pub modules: &'static [Module],
}

/// A source file (or directory, ending in `/`) and what a reader finds in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    /// The path, relative to the repository root.
    pub path: &'static str,
    /// What the file holds, in a few words.
    pub what: &'static str,
}

const fn m(path: &'static str, what: &'static str) -> Module {
    Module { path, what }
}

/// The stations of the road, in order. Every span belongs to one of them
/// ([`SpanInfo::station`]); ARCHITECTURE.md, the book's introduction, "Going further" and
/// each road chapter's "Reading the code" are generated from this table ([`crate::map`]).
#[rustfmt::skip]
pub const STATIONS: &[Station] = &[
    Station {
        number: 1,
        step: "kubectl sends the request; the API server parses it and compares it with what etcd holds",
        stages: &["cli", "apiserver"],
        chapter: "apply.md",
        component: "kubectl, kube-apiserver",
        modules: &[
            m("cli/src/commands/apply.rs", "reads the manifests and sends each object"),
            m("core/src/client/mod.rs", "the HTTP client; it puts the current span in the `traceparent` header"),
            m("core/src/apiserver/mod.rs", "the request pipeline: routing, the request span, errors as a Status"),
            m("core/src/apiserver/routes.rs", "how a URL names a resource, a namespace and an object"),
            m("core/src/apiserver/auth.rs", "who is asking: client certificates and bearer tokens"),
            m("core/src/apiserver/serviceaccount.rs", "ServiceAccount tokens: the JWTs the API server signs and checks"),
            m("core/src/apiserver/token.rs", "serviceaccounts/token: `kubectl create token`"),
            m("core/src/apiserver/authz/", "may they? the authorizers and the 403 in upstream's words"),
            m("core/src/apiserver/protobuf.rs", "content negotiation: protobuf bodies and answers"),
            m("core/src/apiserver/patch.rs", "PATCH and server-side apply: decode, compare, write"),
            m("core/src/apiserver/create.rs", "POST: defaulting, validation, create"),
            m("core/src/apiserver/update.rs", "PUT: validation and the conditional update"),
            m("core/src/apiserver/write.rs", "what every write shares: decode, validate, the conditional write"),
            m("core/src/apiserver/step.rs", "step mode's gate: writes held before the store write (kulisse only)"),
            m("core/src/objects/", "the API machinery: parsing, defaulting, validation, selectors"),
            m("core/src/apiserver/meta.rs", "server-owned metadata, and the trace context stamped on every write"),
        ],
    },
    Station {
        number: 2,
        step: "etcd is updated",
        stages: &["store"],
        chapter: "store.md",
        component: "etcd",
        modules: &[
            m("core/src/store.rs", "the store's contract: keys, revisions, transactions, watches"),
            m("core/src/apiserver/storage.rs", "objects to keys and revisions, and back"),
            m("core/src/apiserver/watch.rs", "watches served to clients, from a revision on"),
            m("core/src/apiserver/cacher.rs", "the watch cache: one store watch per resource, decoded once, indexed by node"),
            m("core/src/apiserver/compactor.rs", "compaction every five minutes, one interval of history kept"),
            m("backends/src/store/embedded.rs", "etcd's job, done by one redb file"),
            m("backends/src/store/etcd.rs", "the same contract on a real etcd"),
        ],
    },
    Station {
        number: 3,
        step: "the controller manager notices the difference and its controllers reconcile it",
        stages: &["controller"],
        chapter: "controllers.md",
        component: "kube-controller-manager",
        modules: &[
            m("core/src/controllers/mod.rs", "the controller manager: which controllers run"),
            m("core/src/client/informer.rs", "list, then watch: the cache every controller reads"),
            m("core/src/client/workqueue.rs", "the queue of keys to reconcile, with back-off"),
            m("core/src/controllers/reconciler.rs", "the reconcile loop around every controller"),
            m("core/src/controllers/deployment/", "Deployment → ReplicaSets: rollouts, scaling, history"),
            m("core/src/controllers/replicaset.rs", "ReplicaSet → Pods: create and delete to match the count"),
            m("core/src/controllers/endpoints.rs", "a Service's ready Pods → Endpoints"),
            m("core/src/controllers/endpointslice.rs", "a Service's Pods → EndpointSlices"),
            m("core/src/controllers/garbagecollector.rs", "ownerReferences: dependents of deleted owners"),
            m("core/src/controllers/namespace.rs", "emptying a namespace that is being deleted"),
            m("core/src/controllers/nodelifecycle.rs", "silent nodes: Unknown, taints, evictions"),
            m("core/src/controllers/serviceaccounts.rs", "a `default` ServiceAccount in every namespace"),
            m("core/src/client/leaderelection.rs", "several controller managers: only the leader of a Lease acts"),
        ],
    },
    Station {
        number: 4,
        step: "the scheduler selects a node for each new pod",
        stages: &["scheduler"],
        chapter: "scheduler.md",
        component: "kube-scheduler",
        modules: &[
            m("core/src/scheduler/mod.rs", "the scheduling cycle: filter, score, assume, bind"),
            m("core/src/scheduler/queue.rs", "the pending pods, with back-off for unschedulable ones"),
            m("core/src/scheduler/cache.rs", "what the scheduler knows of each node"),
            m("core/src/scheduler/plugins.rs", "the filter and score plugins"),
            m("core/src/scheduler/spread.rs", "PodTopologySpread: spreading replicas"),
            m("core/src/client/leaderelection.rs", "several schedulers: only the leader of a Lease binds"),
            m("core/src/scheduler/explain.rs", "each plugin's verdict, recorded as a span"),
            m("cli/src/commands/why/pod.rs", "`kulisse explain pod NAME`: why a pod is where it is"),
        ],
    },
    Station {
        number: 5,
        step: "the kubelet pulls the images, sets up the pod and starts its containers through the runtime",
        stages: &["kubelet", "runtime"],
        chapter: "kubelet.md",
        component: "kubelet, the CRI runtime",
        modules: &[
            m("core/src/kubelet/mod.rs", "the node agent: the pods bound to this node, one worker each"),
            m("core/src/kubelet/node.rs", "registering the Node and renewing its Lease"),
            m("core/src/kubelet/pod_worker.rs", "syncing one pod: volumes, sandbox, images, containers, restarts"),
            m("core/src/runtime.rs", "the container runtime interface (CRI) the kubelet drives"),
            m("backends/src/runtime/mock.rs", "a runtime simulated in memory"),
            m("backends/src/runtime/podman.rs", "real containers, through podman"),
            m("core/src/kubelet/status.rs", "the pod status the kubelet reports"),
            m("core/src/kubelet/probes.rs", "liveness, readiness and startup probes"),
            m("core/src/kubelet/lifecycle.rs", "postStart and preStop hooks"),
            m("core/src/kubelet/volumes.rs", "the pod's volumes on the node: emptyDir, configMap, secret, downwardAPI, projected, hostPath"),
            m("core/src/kubelet/atomic_writer.rs", "rewriting a volume's files atomically (the `..data` symlink swap)"),
            m("core/src/kubelet/env.rs", "a container's environment: env, valueFrom, envFrom"),
            m("core/src/kubelet/streaming.rs", "`kubectl exec` and `attach` on the node: the WebSocket session"),
            m("core/src/remotecommand.rs", "the exec channels (stdin, stdout, stderr, status, resize) and the exit code"),
            m("core/src/portforward/", "port-forward's stream pairs, the SPDY frames (`spdy.rs`) and the WebSocket tunnel; `core/src/kubelet/portforward.rs` is the kubelet's side"),
            m("core/src/kubelet/pull_secrets.rs", "the login for an image's registry, from the pod's `imagePullSecrets`"),
        ],
    },
    Station {
        number: 6,
        step: "kube-proxy sets up the network rules that lead a Service's traffic to its pods",
        stages: &["proxy"],
        chapter: "proxy.md",
        component: "kube-proxy",
        modules: &[
            m("core/src/proxy/mod.rs", "Services and EndpointSlices → forwarding rules"),
            m("core/src/proxy/rules.rs", "the rule table and how it changes"),
            m("core/src/proxy/userspace.rs", "the userspace data path that forwards connections"),
        ],
    },
    Station {
        number: 7,
        step: "the API server answers the client, and the user reads the answer (the root span `cli.apply` ends)",
        stages: &[],
        chapter: "traces.md",
        component: "kubectl, OpenTelemetry",
        modules: &[
            m("cli/src/commands/apply.rs", "the answer each object gets, printed as kubectl prints it"),
            m("cli/src/commands/follow.rs", "following the trace live until every pod runs"),
            m("cli/src/commands/trace.rs", "a whole trace as a waterfall in the terminal"),
            m("traces/src/propagation.rs", "the trace context, across processes and through objects"),
            m("traces/src/view.rs", "drawing and narrating a trace"),
            m("traces/src/span_store.rs", "the spans the API server receives and keeps"),
            m("traces/src/catalogue.rs", "every span, station and attribute: the map of this road"),
        ],
    },
];

/// The station numbered `number`, if there is one.
pub fn station(number: u8) -> Option<&'static Station> {
    STATIONS.iter().find(|s| s.number == number)
}

/// One numbered chapter of the book, in the order of `book/src/SUMMARY.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chapter {
    /// The file in `book/src`.
    pub file: &'static str,
    /// The title, as SUMMARY.md gives it.
    pub title: &'static str,
    /// What the chapter is about, in a few words.
    pub about: &'static str,
    /// The Kubernetes component(s) the chapter shows.
    pub component: &'static str,
}

/// The book's numbered chapters, in reading order (the introduction and the appendices are
/// not numbered).
pub const CHAPTERS: &[Chapter] = &[
    Chapter {
        file: "planes.md",
        title: "What you will learn: two planes",
        about: "why the cluster is split in two",
        component: "the control plane and the worker nodes",
    },
    Chapter {
        file: "setting-up.md",
        title: "Setting up",
        about: "a cluster on your machine",
        component: "—",
    },
    Chapter {
        file: "primer.md",
        title: "A primer for Docker users",
        about: "Pods, namespaces, labels and selectors",
        component: "the Pod",
    },
    Chapter {
        file: "apply.md",
        title: "apply: from the CLI to the API server",
        about: "the CLI sends, the API server checks and compares",
        component: "kubectl, kube-apiserver",
    },
    Chapter {
        file: "store.md",
        title: "The store: keys, revisions, watches",
        about: "keys, revisions, watches",
        component: "etcd",
    },
    Chapter {
        file: "controllers.md",
        title: "The controller manager",
        about: "Deployment → ReplicaSet → Pods",
        component: "kube-controller-manager",
    },
    Chapter {
        file: "scheduler.md",
        title: "The scheduler",
        about: "filter, score, bind",
        component: "kube-scheduler",
    },
    Chapter {
        file: "kubelet.md",
        title: "The kubelet and the container runtime",
        about: "sandbox, image, container, probes",
        component: "kubelet, the CRI runtime",
    },
    Chapter {
        file: "proxy.md",
        title: "kube-proxy: Services and traffic",
        about: "Services become rules, traffic reaches pods",
        component: "kube-proxy",
    },
    Chapter {
        file: "traces.md",
        title: "The answer back, and reading the whole trace",
        about: "the answer back; the whole trace",
        component: "kubectl, OpenTelemetry",
    },
    Chapter {
        file: "step.md",
        title: "Stepping through the control loop",
        about: "hold every write, let it through one at a time, breakpoints",
        component: "kube-apiserver's write path (kulisse only)",
    },
    Chapter {
        file: "security.md",
        title: "Who may do what",
        about: "identities, RBAC, the Node authorizer, ServiceAccount tokens, the 403",
        component: "kube-apiserver",
    },
    Chapter {
        file: "failure-labs.md",
        title: "Failure labs",
        about: "break things and watch the cluster heal",
        component: "all of them",
    },
    Chapter {
        file: "masters.md",
        title: "Several masters",
        about: "three of everything: etcd's majority, API servers behind HAProxy, leader election",
        component: "etcd, kube-apiserver, the leader-elected components",
    },
    Chapter {
        file: "scaling.md",
        title: "How far it scales",
        about: "a thousand nodes; the bench's figures beside upstream's, and what limits them",
        component: "the whole control plane",
    },
    Chapter {
        file: "going-further.md",
        title: "Going further",
        about: "separate processes, real etcd, real kubectl",
        component: "all of them",
    },
];

/// The chapter in `book/src/<file>`, if it is one of the [`CHAPTERS`].
pub fn chapter(file: &str) -> Option<&'static Chapter> {
    CHAPTERS.iter().find(|c| c.file == file)
}

/// One span attribute kulisse sets, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute key, e.g. `store.revision`.
    pub key: &'static str,
    /// What the value says, in one sentence for a learner.
    pub meaning: &'static str,
}

const fn a(key: &'static str, meaning: &'static str) -> Attribute {
    Attribute { key, meaning }
}

/// Every attribute kulisse's spans carry, sorted by key. Which spans carry which attribute is
/// in [`SpanInfo::attributes`]; keys that start with `otel.` are read by the OpenTelemetry
/// bridge (`tracing-opentelemetry`) or passed on as they are. Where [`attrs`] names a key, the
/// entry uses that constant.
#[rustfmt::skip]
pub const ATTRIBUTES: &[Attribute] = &[
    a("auth.groups", "The groups of the authenticated user, comma-separated (`system:nodes,system:authenticated`)."),
    a("auth.impersonator", "The real user when the request impersonates another (`kubectl --as`); `auth.user` is then the impersonated one."),
    a("auth.method", "How the API server authenticated the request: `x509` (client certificate), `bearer-token`, `serviceaccount-token` or `anonymous`."),
    a("auth.reason", "Why a ServiceAccount token was rejected (expired, bad signature, account deleted); never sent to the client."),
    a("auth.result", "`authenticated`, or `rejected` (the answer is then 401 Unauthorized)."),
    a("auth.user", "The authenticated user name (`kubernetes-admin`, `system:node:node-1`)."),
    a("authz.authorizer", "Which authorizer decided: `system:masters`, `Node`, `RBAC`, or `none` (nobody allowed it)."),
    a("authz.decision", "`allow`, or `deny` (the answer is then 403 Forbidden)."),
    a("authz.namespace", "The namespace of the request, empty at the cluster scope."),
    a("authz.reason", "Why, when the authorizer said why (the Node authorizer does, RBAC rarely)."),
    a("authz.resource", "The resource asked for (`pods`, `nodes/status`, `deployments.apps`) or the path (`/healthz`)."),
    a("authz.user", "The user the decision is about."),
    a("authz.verb", "The verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ..."),
    a("cli.dry_run", "Whether the apply only asked the API server what it would do (`--dry-run=server`)."),
    a("cli.files", "The manifest files (or `-` for standard input) the apply read."),
    a("cli.objects", "How many objects the manifests hold, each sent in its own request."),
    a("cli.source", "Where the object came from: `file#document` (the n-th YAML document of the file)."),
    a(attrs::COMPARE_CHANGED_FIELDS, "The top-level fields that differ from the stored object, comma-separated."),
    a(attrs::COMPARE_RESULT, "What the comparison decided: `created`, `configured` or `unchanged`."),
    a(attrs::COMPARE_STORED, "The stored object's resourceVersion it was compared with, or `absent`."),
    a("content_type", "The request body's media type (`application/json`, `application/yaml`, protobuf, patch types)."),
    a(attrs::CONTROLLER_ACTION, "What the reconcile asked for next: wait for a change, requeue or retry after a delay, or give up."),
    a(attrs::CONTROLLER_KEY, "The key the controller reconciled: `namespace/name` of the object."),
    a(attrs::CONTROLLER_NAME, "The controller: `deployment`, `replicaset`, `endpoints`, `endpointslice`, ..."),
    a("controller.owner", "The object on whose behalf the controller acts, `Kind/name` (the Deployment of a ReplicaSet)."),
    a("controller.pod_template_hash", "The hash of the pod template that names a new ReplicaSet and labels its pods."),
    a(attrs::CONTROLLER_REASON, "Why the key was queued: which watched object changed, or a requeue."),
    a("controller.replicas.available", "Replicas ready for at least minReadySeconds, as written to the status."),
    a("controller.replicas.current", "Pods the ReplicaSet owns now, as written to its status."),
    a("controller.replicas.desired", "The replicas the spec asks for."),
    a("controller.replicas.from", "A ReplicaSet's size before the step."),
    a("controller.replicas.ready", "The owned pods that are Ready, as written to the status."),
    a("controller.replicas.to", "A ReplicaSet's size after the step."),
    a("controller.replicas.updated", "Pods that run the Deployment's current template, as written to its status."),
    a("controller.revision", "The Deployment revision a ReplicaSet stands for (its `deployment.kubernetes.io/revision`)."),
    a("endpoints.action", "What the Endpoints controller did: `create`, `update`, `unchanged`, or delete when the Service is gone."),
    a("endpoints.addresses.not_ready", "Addresses of selected pods that are not ready (they get no traffic)."),
    a("endpoints.addresses.ready", "Addresses of selected pods that are ready."),
    a("endpoints.pods.selected", "The pods the Service's selector matches."),
    a("endpoints.ports.unresolved", "Named target ports that some selected pod does not declare."),
    a("endpointslices.created", "EndpointSlices the sync created."),
    a("endpointslices.deleted", "EndpointSlices the sync deleted."),
    a("endpointslices.endpoints", "The endpoints the Service should have, over all its slices."),
    a("endpointslices.slices", "How many slices those endpoints need (at most 100 endpoints each)."),
    a("endpointslices.updated", "EndpointSlices the sync rewrote."),
    a("gc.actions", "What the garbage collector did, one entry per dependent, separated by `;`."),
    a("gc.dependents.deleted", "Dependents deleted (their owner is gone, or being deleted in the foreground)."),
    a("gc.dependents.orphaned", "Dependents whose ownerReference was removed (an Orphan deletion)."),
    a("gc.reason", "Why the collector acted: the owner is gone, an Orphan or Foreground deletion, or a dangling owner reference."),
    a("http.request.body.size", "The request body's size in bytes (OpenTelemetry's HTTP convention)."),
    a("http.request.method", "The HTTP method: GET, POST, PUT, PATCH, DELETE (OpenTelemetry's HTTP convention)."),
    a("http.response.status_code", "The HTTP status of the answer, e.g. 200, 201, 409 (OpenTelemetry's HTTP convention)."),
    a(attrs::K8S_KIND, "The kind of the object the step is about, e.g. `Deployment`."),
    a(attrs::K8S_NAME, "The name of the object the step is about."),
    a(attrs::K8S_NAMESPACE, "The namespace of the object the step is about."),
    a(attrs::K8S_OUTCOME, "What a request did: `created`, `configured`, `unchanged`, or the reason it failed."),
    a("k8s.pod.phase", "The phase the kubelet reports for the pod: Pending, Running, Succeeded, Failed."),
    a("k8s.pod.uid", "The pod's uid: a pod deleted and recreated under the same name is another pod."),
    a(attrs::K8S_RESOURCE, "The resource the URL names, plural, e.g. `deployments`."),
    a(attrs::K8S_VERB, "The API verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`."),
    a("kubelet.attempts", "How many writes the status update took (a conflict re-reads the pod and tries again)."),
    a(attrs::KUBELET_NODE, "The node whose kubelet did the work."),
    a("kubelet.phase.after", "The pod's phase after the sync (`Deleted` when the pod was torn down)."),
    a("kubelet.phase.before", "The pod's phase before the sync."),
    a(attrs::KUBELET_POD, "The pod the kubelet synced, `namespace/name`."),
    a("kubelet.volume_dir", "Where the pod's volumes live on the node (under the kubelet's root dir)."),
    a("kubelet.volumes", "The volumes a mount step set up or updated, each with its source kind: `conf (configMap), data (emptyDir)`."),
    a(attrs::OUTCOME, "What the step did, in a few words, when it is not a request's `k8s.outcome`."),
    a(STAGE_KEY, "The component that emitted the span (one of the stages); it also picks the `service.name` the span reports under."),
    a("kulisse.step.component", "Step mode: the component whose write waited at the gate (`scheduler`, `kubelet`, `apiserver`, ...)."),
    a("kulisse.step.verb", "Step mode: the write that waited: `create`, `update` or `bind`."),
    a("leaderelection.holder", "Who holds the lease after the change (`hostname_uuid`; empty once released)."),
    a("leaderelection.identity", "The candidate that emitted the span: this process's identity in the election."),
    a("leaderelection.lease", "The Lease the candidates elect their leader with, `namespace/name`."),
    a("leaderelection.transitions", "The Lease's `leaseTransitions`: how often leadership changed hands."),
    a("namespace.deleted", "Objects the namespace controller deleted in this pass."),
    a("namespace.estimate_seconds", "How long, at most, the remaining objects may still take to go (their grace periods)."),
    a("namespace.finalizers.left", "Finalizers the namespace still has after `kubernetes` was removed."),
    a("namespace.remaining", "The objects still in the namespace, per resource."),
    a("node.pods.evicted", "Pods deleted from the node because it stayed unreachable (TaintManagerEviction)."),
    a("node.pods.marked_not_ready", "Pods on the node whose Ready condition was set to False."),
    a("node.ready", "The node's Ready condition as the controller set it, e.g. `Unknown`."),
    a("node.silent_for_seconds", "How long ago the node last renewed its Lease."),
    a("node.taints", "The node's taints after the change."),
    a("otel.status_code", "`OK` or `ERROR`: the OpenTelemetry bridge (`tracing-opentelemetry`) makes it the span's status."),
    a("otel.status_description", "Why the step failed: the OpenTelemetry bridge makes it the span's error status and its description."),
    a("otel.status_message", "Why the step failed. The bridge passes it on as a plain attribute: only `otel.status_description` becomes the status' description."),
    a(attrs::PROXY_ACTION, "What happened to the listener: `open` or `close`."),
    a(attrs::PROXY_ADDRESS, "The frontend address the listener serves: ClusterIP:port or 127.0.0.1:nodePort."),
    a(attrs::PROXY_RULE_DIFF, "How the Service's rules changed: `+` an added rule, `~` a changed one, `-` a removed one, separated by `;`."),
    a("proxy.node", "The node whose kube-proxy did the work."),
    a(attrs::PROXY_RULE, "The rule the listener belongs to, e.g. `default.web.http` (`.nodeport` for a NodePort rule)."),
    a("proxy.rules.added", "Rules the sync added."),
    a("proxy.rules.changed", "Rules whose endpoints changed."),
    a("proxy.rules.removed", "Rules the sync removed."),
    a("proxy.rules.total", "The rules the node's table holds after the sync."),
    a(attrs::PROXY_SERVICE, "The Service the rules are for, `namespace/name`."),
    a(attrs::RUNTIME_CONTAINER_ID, "The container id the runtime returned."),
    a("runtime.container_name", "The container's name in the pod spec."),
    a(attrs::RUNTIME_IMAGE, "The container image."),
    a("runtime.image_pull_secret", "The pull secret (of the pod's `imagePullSecrets`) whose login the kubelet handed to the runtime with the pull; never the login itself."),
    a("runtime.mounts", "The volumes mounted into the container: `volume:mountPath (ro|rw)`, as the kubelet passes them in the CRI's ContainerConfig."),
    a("runtime.name", "The container runtime behind the CRI: `mock` or `podman`."),
    a("runtime.pod_ip", "The IP address of the pod's sandbox."),
    a("runtime.sandbox_id", "The id of the pod's sandbox."),
    a("scheduler.attempt", "How many times the scheduler has tried to place this pod."),
    a("scheduler.message", "Why no node fits, as the pod's `PodScheduled` condition says it."),
    a("scheduler.name", "The scheduler (`default-scheduler`): a pod names the scheduler that places it."),
    a(attrs::SCHEDULER_NODE, "The node chosen."),
    a("scheduler.nodes.evaluated", "Nodes the filters ran on (the scheduler may stop once it found enough)."),
    a(attrs::SCHEDULER_FEASIBLE_NODES, "Nodes that passed every filter."),
    a("scheduler.nodes.scored", "Feasible nodes the score plugins rated."),
    a("scheduler.nodes.to_find", "How many feasible nodes are enough to stop filtering (percentageOfNodesToScore)."),
    a("scheduler.nodes.total", "The nodes the scheduler knows."),
    a("scheduler.plugin.extension_point", "Where in the cycle the plugin ran: `Filter` or `Score` (upstream's extension points)."),
    a(attrs::SCHEDULER_PLUGIN_NAME, "The plugin, under its upstream name, e.g. `NodeResourcesFit`."),
    a(attrs::SCHEDULER_PLUGIN_NODE, "The node the plugin judged."),
    a(attrs::SCHEDULER_PLUGIN_POINTS, "A score plugin's points for the node, 0 to 100, before its weight."),
    a(attrs::SCHEDULER_PLUGIN_REASON, "Why: a filter's reason for saying no (`Insufficient cpu`), or what a score is made of."),
    a(attrs::SCHEDULER_PLUGIN_VERDICT, "A filter plugin's verdict in upstream's status words: `Success` or `Unschedulable`."),
    a("scheduler.plugin.weight", "The score plugin's weight in the default profile (its points count that many times)."),
    a("scheduler.plugins", "The plugins that ran, in order."),
    a(attrs::SCHEDULER_POD, "The pod being scheduled, `namespace/name`."),
    a("scheduler.rejections", "Why nodes did not fit, counted per reason (`0/3 nodes are available: ...`)."),
    a("scheduler.result", "The attempt's result: `scheduled`, `unschedulable` or `bind failed`."),
    a(attrs::SCHEDULER_SCORE, "The winning node's total score."),
    a("scheduler.ties", "How many nodes shared the best score (they take turns)."),
    a("store.backend", "The store behind the API server: `embedded` (redb) or `etcd`."),
    a("store.count", "How many keys the range returned."),
    a("store.expected_mod_revision", "The revision the key must still have for the write to succeed (a conditional write)."),
    a("store.found", "Whether the key exists."),
    a(attrs::STORE_KEY, "The store key, e.g. `/registry/deployments/default/web`."),
    a("store.mod_revision", "The revision that last changed the key (it becomes the resourceVersion)."),
    a(attrs::STORE_OP, "What the transaction does: `create`, `update` or `delete`."),
    a("store.prefix", "The key prefix a range reads, e.g. `/registry/pods/default/`."),
    a(attrs::STORE_REVISION, "The store's revision: the one a write created, or the one a range read at."),
    a(attrs::STORE_SUCCEEDED, "Whether the transaction's compare held, so that its write happened."),
    a("url.path", "The request's path, e.g. `/apis/apps/v1/namespaces/default/deployments/web`."),
];

/// The meaning of the attribute `key`, if kulisse's spans carry it.
pub fn attribute(key: &str) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.key == key)
}

/// Which `service.name` each stage reports under when one process runs several components
/// (`kulisse up`): the Kubernetes component that owns that stage. The store is part of the API
/// server (only the kube-apiserver talks to etcd) and the container runtime is driven by the
/// kubelet (through the CRI), so their spans are coloured like their owner.
pub const STAGE_SERVICES: &[(&str, &str)] = &[
    ("cli", "kulisse-cli"),
    ("apiserver", "kulisse-apiserver"),
    ("store", "kulisse-apiserver"),
    ("controller", "kulisse-controller-manager"),
    ("scheduler", "kulisse-scheduler"),
    ("kubelet", "kulisse-kubelet"),
    ("runtime", "kulisse-kubelet"),
    ("proxy", "kulisse-proxy"),
];

/// The `service.name` that spans of `stage` report under (see [`STAGE_SERVICES`]); `None` for
/// an unknown stage.
pub fn service_for_stage(stage: &str) -> Option<&'static str> {
    STAGE_SERVICES
        .iter()
        .find(|(s, _)| *s == stage)
        .map(|(_, service)| *service)
}

/// Span attributes that the trace views ([`crate::view`]) show and narrate. Components should
/// use these keys for these facts, so that `kulisse trace` can explain them.
pub mod attrs {
    /// The object's kind, e.g. `Deployment`.
    pub const K8S_KIND: &str = "k8s.kind";
    /// The resource (plural), e.g. `deployments`.
    pub const K8S_RESOURCE: &str = "k8s.resource";
    /// The object's namespace.
    pub const K8S_NAMESPACE: &str = "k8s.namespace";
    /// The object's name.
    pub const K8S_NAME: &str = "k8s.name";
    /// The API verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub const K8S_VERB: &str = "k8s.verb";
    /// What a write did: `created`, `configured`, `unchanged`, or a failure reason.
    pub const K8S_OUTCOME: &str = "k8s.outcome";
    /// `apiserver.compare`: the stored revision that was compared with (or `absent`).
    pub const COMPARE_STORED: &str = "compare.stored";
    /// `apiserver.compare`: `created`, `configured` or `unchanged`.
    pub const COMPARE_RESULT: &str = "compare.result";
    /// `apiserver.compare`: the changed top-level fields, comma-separated.
    pub const COMPARE_CHANGED_FIELDS: &str = "compare.changed_fields";
    /// `store.*`: the store key.
    pub const STORE_KEY: &str = "store.key";
    /// `store.*`: the store revision written (txn) or read at (range).
    pub const STORE_REVISION: &str = "store.revision";
    /// `store.txn`: whether the compare-and-swap succeeded.
    pub const STORE_SUCCEEDED: &str = "store.succeeded";
    /// `store.txn`: `create`, `update`, `delete`.
    pub const STORE_OP: &str = "store.op";
    /// `controller.reconcile`: the controller, e.g. `deployment`.
    pub const CONTROLLER_NAME: &str = "controller.name";
    /// `controller.reconcile`: the queued key, `namespace/name`.
    pub const CONTROLLER_KEY: &str = "controller.key";
    /// `controller.reconcile`: why the key was queued.
    pub const CONTROLLER_REASON: &str = "controller.reason";
    /// `controller.reconcile`: what the controller asks for next.
    pub const CONTROLLER_ACTION: &str = "controller.action";
    /// `scheduler.*`: the pod being scheduled, `namespace/name`.
    pub const SCHEDULER_POD: &str = "scheduler.pod";
    /// `scheduler.*`: the node chosen.
    pub const SCHEDULER_NODE: &str = "scheduler.node";
    /// `scheduler.*`: how many nodes passed the filters.
    pub const SCHEDULER_FEASIBLE_NODES: &str = "scheduler.nodes.feasible";
    /// `scheduler.plugin`: the plugin's upstream name.
    pub const SCHEDULER_PLUGIN_NAME: &str = "scheduler.plugin.name";
    /// `scheduler.plugin`: the node the plugin judged.
    pub const SCHEDULER_PLUGIN_NODE: &str = "scheduler.plugin.node";
    /// `scheduler.plugin`: a filter's verdict, `Success` or `Unschedulable`.
    pub const SCHEDULER_PLUGIN_VERDICT: &str = "scheduler.plugin.verdict";
    /// `scheduler.plugin`: a score plugin's points (0-100, before the weight).
    pub const SCHEDULER_PLUGIN_POINTS: &str = "scheduler.plugin.points";
    /// `scheduler.plugin`: the reason for the verdict, or what the points are made of.
    pub const SCHEDULER_PLUGIN_REASON: &str = "scheduler.plugin.reason";
    /// `scheduler.*`: the chosen node's score.
    pub const SCHEDULER_SCORE: &str = "scheduler.score";
    /// `kubelet.*`: the node the kubelet runs for.
    pub const KUBELET_NODE: &str = "kubelet.node";
    /// `kubelet.*`: the pod being synced, `namespace/name`.
    pub const KUBELET_POD: &str = "kubelet.pod";
    /// `runtime.*`: the container id the runtime returned.
    pub const RUNTIME_CONTAINER_ID: &str = "runtime.container_id";
    /// `runtime.*`: the image.
    pub const RUNTIME_IMAGE: &str = "runtime.image";
    /// `proxy.*`: the Service, `namespace/name`.
    pub const PROXY_SERVICE: &str = "proxy.service";
    /// `proxy.sync_rules`: how the rules changed, `+ added; ~ changed; - removed`.
    pub const PROXY_RULE_DIFF: &str = "proxy.diff";
    /// `proxy.listen`: the rule, e.g. `default.web.http`.
    pub const PROXY_RULE: &str = "proxy.rule";
    /// `proxy.listen`: the frontend address, e.g. `127.1.0.5:80`.
    pub const PROXY_ADDRESS: &str = "proxy.address";
    /// `proxy.listen`: `open` or `close`.
    pub const PROXY_ACTION: &str = "proxy.action";
    /// Generic: the outcome of a step, when not a `k8s.outcome`.
    pub const OUTCOME: &str = "kulisse.outcome";
}

/// One row of the narration table used by [`crate::view::narrate`]: a sentence template for
/// a span name.
///
/// The template refers to span attributes as `{attribute.key}`. An optional part is written
/// `[ ... ]`: it is left out when an attribute inside it is missing. A row whose *required*
/// attributes (those outside `[ ]`) are missing is not used, so a step is narrated only when
/// there is something to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Narration {
    /// The span name this sentence describes.
    pub span: &'static str,
    /// The sentence template.
    pub template: &'static str,
}

/// The sentences `kulisse apply --follow` prints, one per meaningful step. `{object}` stands
/// for the object named by `k8s.kind`/`k8s.resource`, `k8s.namespace` and `k8s.name`.
pub const NARRATIONS: &[Narration] = &[
    Narration {
        span: "cli.request",
        template: "sent {object} to the API server[: {k8s.outcome}]",
    },
    Narration {
        span: "apiserver.compare",
        template: "compared {object} with the store: {compare.result}[ (stored revision {compare.stored})][, changed {compare.changed_fields}]",
    },
    Narration {
        span: "store.txn",
        template: "wrote {store.key}[ ({store.op})][ at revision {store.revision}][, succeeded: {store.succeeded}]",
    },
    Narration {
        span: "controller.reconcile",
        template: "{controller.name} controller reconciled {controller.key} because {controller.reason}[ → {controller.action}]",
    },
    Narration {
        span: "controller.create_replicaset",
        template: "created {object}[ with {controller.replicas.desired} replicas]",
    },
    Narration {
        span: "controller.scale_replicaset",
        template: "scaled {object} from {controller.replicas.from} to {controller.replicas.to}",
    },
    Narration {
        span: "controller.create_pod",
        template: "created {object}",
    },
    Narration {
        span: "controller.delete_pod",
        template: "deleted {object}",
    },
    Narration {
        span: "scheduler.schedule_pod",
        template: "scheduled {scheduler.pod}: {scheduler.result}[ on {scheduler.node}][ ({scheduler.nodes.feasible} of {scheduler.nodes.total} nodes feasible)][: {scheduler.message}]",
    },
    Narration {
        span: "scheduler.score",
        template: "scored the feasible nodes: {scheduler.node} wins[ with {scheduler.score}]",
    },
    Narration {
        span: "kubelet.sync_pod",
        template: "[{kubelet.node}: ]synced pod {kubelet.pod}[: {kulisse.outcome}]",
    },
    Narration {
        span: "runtime.create_container",
        template: "created container {runtime.container_id}[ from {runtime.image}]",
    },
    Narration {
        span: "runtime.start_container",
        template: "started container {runtime.container_id}",
    },
    Narration {
        span: "proxy.sync_rules",
        template: "[{proxy.node}: ]rules of service {proxy.service}: {proxy.diff}",
    },
    Narration {
        span: "proxy.listen",
        template: "[{proxy.node}: ]listener on {proxy.address} for service {proxy.service}: {proxy.action}",
    },
];

/// The narration row for a span name, if there is one.
pub fn narration_for(span: &str) -> Option<&'static Narration> {
    NARRATIONS.iter().find(|n| n.span == span)
}

/// The catalogue entry for a span name, if kulisse emits a span by that name.
pub fn span_info(name: &str) -> Option<&'static SpanInfo> {
    SPANS.iter().find(|info| info.name == name)
}

/// Whether `stage` is one of the [`STAGES`].
pub fn is_stage(stage: &str) -> bool {
    STAGES.contains(&stage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn span_names_are_unique() {
        let mut seen = BTreeSet::new();
        for info in SPANS {
            assert!(seen.insert(info.name), "span name {:?} is listed twice", info.name);
        }
    }

    #[test]
    fn stages_are_unique_and_every_span_has_a_valid_stage() {
        let unique: BTreeSet<_> = STAGES.iter().collect();
        assert_eq!(unique.len(), STAGES.len(), "STAGES has duplicates");
        for info in SPANS {
            assert!(
                is_stage(info.stage),
                "span {:?} has stage {:?}, expected one of {STAGES:?}",
                info.name,
                info.stage
            );
        }
    }

    #[test]
    fn span_names_follow_the_stage_dot_step_convention() {
        for info in SPANS {
            let (prefix, step) = info.name.split_once('.').unwrap_or(("", ""));
            assert!(
                is_stage(prefix) && !step.is_empty(),
                "span name {:?} should look like <stage>.<step>",
                info.name
            );
            assert_eq!(prefix, info.stage, "span {:?} names a different stage", info.name);
            assert!(!info.what.trim().is_empty(), "span {:?} is not described", info.name);
        }
    }

    #[test]
    fn every_stage_has_a_service_and_narrations_are_unique() {
        for stage in STAGES {
            let service = service_for_stage(stage).unwrap_or_else(|| panic!("stage {stage:?} has no service"));
            assert!(service.starts_with("kulisse-"), "{service}");
        }
        assert_eq!(service_for_stage("store"), Some("kulisse-apiserver"));
        assert_eq!(service_for_stage("runtime"), Some("kulisse-kubelet"));
        assert_eq!(service_for_stage("nope"), None);
        let mut seen = BTreeSet::new();
        for n in NARRATIONS {
            assert!(seen.insert(n.span), "narration for {:?} is listed twice", n.span);
            let prefix = n.span.split('.').next().unwrap_or("");
            assert!(is_stage(prefix), "narration for {:?} names no stage", n.span);
        }
    }

    #[test]
    fn stations_are_numbered_one_to_n_and_name_known_stages_and_chapters() {
        for (i, s) in STATIONS.iter().enumerate() {
            assert_eq!(usize::from(s.number), i + 1, "station {:?} is out of order", s.step);
            for stage in s.stages {
                assert!(is_stage(stage), "station {} names the stage {stage:?}", s.number);
            }
            let ch = chapter(s.chapter).unwrap_or_else(|| panic!("station {}: no chapter {:?}", s.number, s.chapter));
            assert_eq!(
                ch.component, s.component,
                "station {} and its chapter name other components",
                s.number
            );
            assert!(!s.modules.is_empty(), "station {} has nothing to read", s.number);
        }
        for stage in STAGES {
            assert!(
                STATIONS.iter().any(|s| s.stages.contains(stage)),
                "no station holds the stage {stage:?}"
            );
        }
    }

    #[test]
    fn every_span_sits_at_a_station_and_in_its_reading_list() {
        for info in SPANS {
            let station = station(info.station).unwrap_or_else(|| panic!("{}: no station {}", info.name, info.station));
            assert!(
                station.stages.contains(&info.stage),
                "{} is at station {}, whose stages are {:?}",
                info.name,
                info.station,
                station.stages
            );
            assert!(
                chapter(info.chapter).is_some(),
                "{}: no chapter {:?}",
                info.name,
                info.chapter
            );
            assert!(!info.modules.is_empty(), "{} names no file", info.name);
            for module in info.modules {
                assert!(
                    station
                        .modules
                        .iter()
                        .any(|m| m.path == *module || (m.path.ends_with('/') && module.starts_with(m.path))),
                    "{} is emitted in {module}, which station {}'s reading list does not name",
                    info.name,
                    info.station
                );
            }
        }
    }

    #[test]
    fn attributes_are_sorted_unique_described_and_used() {
        for pair in ATTRIBUTES.windows(2) {
            assert!(
                pair[0].key < pair[1].key,
                "ATTRIBUTES: {:?} should come after {:?}",
                pair[0].key,
                pair[1].key
            );
        }
        for attr in ATTRIBUTES {
            assert!(!attr.meaning.trim().is_empty(), "{} has no meaning", attr.key);
            assert!(
                attr.key == STAGE_KEY || SPANS.iter().any(|s| s.attributes.contains(&attr.key)),
                "no span carries {}",
                attr.key
            );
        }
        for info in SPANS {
            for key in info.attributes {
                assert!(
                    attribute(key).is_some(),
                    "{} carries {key}, which ATTRIBUTES does not explain",
                    info.name
                );
                assert_ne!(
                    *key, STAGE_KEY,
                    "{}: every span carries {STAGE_KEY}; do not list it",
                    info.name
                );
            }
        }
        for n in NARRATIONS {
            let template = n.template.replace(['[', ']'], "");
            for key in template
                .split('{')
                .skip(1)
                .filter_map(|s| s.split_once('}'))
                .map(|(k, _)| k)
            {
                assert!(
                    key == "object" || attribute(key).is_some(),
                    "the narration of {} uses {{{key}}}, which ATTRIBUTES does not explain",
                    n.span
                );
            }
        }
    }

    #[test]
    fn chapters_are_unique() {
        let files: BTreeSet<_> = CHAPTERS.iter().map(|c| c.file).collect();
        assert_eq!(files.len(), CHAPTERS.len(), "CHAPTERS names a file twice");
        assert_eq!(station(3).map(|s| s.chapter), Some("controllers.md"));
        assert!(station(0).is_none() && chapter("nope.md").is_none());
    }

    #[test]
    fn span_info_finds_entries() {
        assert_eq!(span_info("cli.apply").map(|i| i.stage), Some("cli"));
        assert_eq!(span_info("store.txn").map(|i| i.stage), Some("store"));
        assert!(span_info("no.such.span").is_none());
    }
}
