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
    /// What the span measures, in one sentence for a learner.
    pub what: &'static str,
}

/// Every span name kulisse emits.
pub const SPANS: &[SpanInfo] = &[
    SpanInfo {
        name: "cli.apply",
        stage: "cli",
        what: "One `kulisse apply` command, from reading the manifests to the last answer of \
               the API server; the root span of the trace.",
    },
    SpanInfo {
        name: "cli.request",
        stage: "cli",
        what: "One HTTP request the CLI sends to the API server, including waiting for the \
               response; it carries the `traceparent` header.",
    },
    SpanInfo {
        name: "apiserver.request",
        stage: "apiserver",
        what: "One HTTP request received by the API server, from the first byte to the \
               response; the child of the caller's span named in `traceparent`.",
    },
    SpanInfo {
        name: "apiserver.bootstrap",
        stage: "apiserver",
        what: "Start-up housekeeping: creating the namespaces every cluster has. Background \
               work, so only recorded with KULISSE_TRACE_BACKGROUND=1.",
    },
    SpanInfo {
        name: "apiserver.authenticate",
        stage: "apiserver",
        what: "Finding out who sent the request (authentication), as the kube-apiserver does \
               before anything else.",
    },
    SpanInfo {
        name: "apiserver.decode",
        stage: "apiserver",
        what: "Parsing the request body (JSON or YAML) into an object.",
    },
    SpanInfo {
        name: "apiserver.validate",
        stage: "apiserver",
        what: "Defaulting (filling in omitted fields) and validation of the object, like the \
               kube-apiserver's defaulting and validation stages.",
    },
    SpanInfo {
        name: "apiserver.compare",
        stage: "apiserver",
        what: "Reading the stored object and comparing it with the new one, to decide \
               between create, update and no change.",
    },
    SpanInfo {
        name: "store.get",
        stage: "store",
        what: "Reading one key from the store (an etcd Range on a single key).",
    },
    SpanInfo {
        name: "store.range",
        stage: "store",
        what: "Reading the keys under a prefix from the store (an etcd Range on a key range), \
               e.g. for a list.",
    },
    SpanInfo {
        name: "store.txn",
        stage: "store",
        what: "An atomic compare-and-swap transaction on the store (an etcd Txn), e.g. \
               'create if absent' or 'update if unchanged since revision N'.",
    },
    SpanInfo {
        name: "controller.reconcile",
        stage: "controller",
        what: "One reconcile of one key by one controller (the deployment controller making \
               the ReplicaSets of `default/web` match the Deployment, say); it continues the \
               trace named in the object's `kulisse.dev/traceparent` annotation.",
    },
    SpanInfo {
        name: "controller.create_replicaset",
        stage: "controller",
        what: "The Deployment controller creating the ReplicaSet for a new pod template \
               (`<deployment>-<pod-template-hash>`, next revision, first size within maxSurge); \
               the ReplicaSet carries this span's traceparent.",
    },
    SpanInfo {
        name: "controller.scale_replicaset",
        stage: "controller",
        what: "The Deployment controller resizing one ReplicaSet (`controller.replicas.from` → \
               `.to`): a scale, or one step of a rolling update or Recreate.",
    },
    SpanInfo {
        name: "controller.update_replicaset",
        stage: "controller",
        what: "The Deployment controller syncing the current ReplicaSet's annotations (revision, \
               copied Deployment annotations) or minReadySeconds, without resizing it.",
    },
    SpanInfo {
        name: "controller.delete_replicaset",
        stage: "controller",
        what: "The Deployment controller deleting an old ReplicaSet at 0 replicas beyond \
               `revisionHistoryLimit`.",
    },
    SpanInfo {
        name: "controller.create_pod",
        stage: "controller",
        what: "The ReplicaSet controller creating one Pod from its template \
               (`<replicaset>-<5 random characters>`); the Pod carries this span's \
               traceparent, so scheduling and the kubelet continue the trace.",
    },
    SpanInfo {
        name: "controller.delete_pod",
        stage: "controller",
        what: "The ReplicaSet controller deleting a surplus Pod (the one that hurts least to \
               lose: unscheduled, pending, not ready, newest first).",
    },
    SpanInfo {
        name: "controller.adopt",
        stage: "controller",
        what: "A controller adopting an orphan whose labels match its selector: writing its \
               own controller ownerReference onto the Pod (or ReplicaSet).",
    },
    SpanInfo {
        name: "controller.release",
        stage: "controller",
        what: "A controller releasing an object it owns whose labels no longer match its \
               selector: removing its ownerReference, leaving an orphan.",
    },
    SpanInfo {
        name: "controller.update_status",
        stage: "controller",
        what: "A controller writing what it observed to an object's `/status` subresource \
               (replica counts, conditions, observedGeneration), only when it changed.",
    },
    SpanInfo {
        name: "controller.sync_endpoints",
        stage: "controller",
        what: "The Endpoints controller computing a Service's Endpoints from the Pods its \
               selector matches (ready and not-ready address counts, named targetPorts \
               resolved) and writing them only if they changed, or deleting them with the Service.",
    },
    SpanInfo {
        name: "controller.sync_endpointslices",
        stage: "controller",
        what: "The EndpointSlice controller cutting a Service's endpoints (with their ready, \
               serving and terminating conditions) into EndpointSlices of at most 100 and \
               creating, updating or deleting only the slices that change.",
    },
    SpanInfo {
        name: "controller.delete_namespace_content",
        stage: "controller",
        what: "The namespace controller's pass over a terminating namespace: deleting every \
               object inside through the API (pods first), then recording what remains in the \
               namespace's conditions.",
    },
    SpanInfo {
        name: "controller.finalize_namespace",
        stage: "controller",
        what: "The namespace controller removing the finalizer `kubernetes` from an emptied \
               namespace (`PUT .../namespaces/NAME/finalize`), after which the API server \
               deletes the namespace.",
    },
    SpanInfo {
        name: "controller.garbage_collect",
        stage: "controller",
        what: "The garbage collector acting on ownerReferences: deleting dependents whose owner \
               is gone, deleting dependents first for a Foreground deletion, or cutting owner \
               references for an Orphan deletion, then removing the owner's finalizer.",
    },
    SpanInfo {
        name: "controller.node_status",
        stage: "controller",
        what: "The node lifecycle controller changing a node: Ready=Unknown after its Lease \
               stopped being renewed, the unreachable/not-ready taints added or removed, Pods \
               marked not ready or evicted (TaintManagerEviction). Quiet checks emit nothing.",
    },
    SpanInfo {
        name: "proxy.sync_rules",
        stage: "proxy",
        what: "kube-proxy recomputing one Service's forwarding rules (ClusterIP and NodePort \
               → ready endpoints) and applying the difference to its rule table and the \
               published ConfigMap; it continues the trace of the EndpointSlice write that caused it.",
    },
    SpanInfo {
        name: "proxy.listen",
        stage: "proxy",
        what: "kube-proxy's userspace data path opening (`proxy.action=open`) or closing \
               (`close`) the listener of one rule on its frontend (ClusterIP:port or \
               127.0.0.1:nodePort); an error status says why it could not listen (a port below \
               1024 without root, the address in use). Connections get no span.",
    },
    SpanInfo {
        name: "scheduler.schedule_pod",
        stage: "scheduler",
        what: "One attempt of the scheduler to place one pending pod: how many nodes it \
               evaluated, how many were feasible, the node chosen or why none fits; it \
               continues the pod's trace (its `kulisse.dev/traceparent` annotation).",
    },
    SpanInfo {
        name: "scheduler.filter",
        stage: "scheduler",
        what: "The filter plugins (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, \
               NodePorts, NodeResourcesFit, PodTopologySpread) run over the nodes; an event per \
               node says whether it fits and, if not, why (`node-2: Insufficient cpu`).",
    },
    SpanInfo {
        name: "scheduler.score",
        stage: "scheduler",
        what: "The score plugins (TaintToleration, NodeAffinity, NodeResourcesFit \
               LeastAllocated, PodTopologySpread, NodeResourcesBalancedAllocation) rate each \
               feasible node from 0 to 100, summed with upstream's weights; an event per node \
               shows its points, the span names the winner.",
    },
    SpanInfo {
        name: "scheduler.bind",
        stage: "scheduler",
        what: "Binding the pod to the chosen node: the POST to the pod's `binding` \
               subresource, which sets `spec.nodeName`, and the `Scheduled` event.",
    },
    SpanInfo {
        name: "kubelet.sync_pod",
        stage: "kubelet",
        what: "One sync of a pod by the kubelet of its node that changed something: running the \
               sandbox, pulling images, (re)starting or killing containers, or reporting a new \
               status; continues the trace of whoever last wrote the pod.",
    },
    SpanInfo {
        name: "kubelet.status_update",
        stage: "kubelet",
        what: "The kubelet writing a pod's status (phase, conditions, container states, pod IP) \
               through `PUT .../pods/{name}/status`.",
    },
    SpanInfo {
        name: "runtime.pull_image",
        stage: "runtime",
        what: "The container runtime pulling an image for a container (the CRI's PullImage).",
    },
    SpanInfo {
        name: "runtime.run_pod_sandbox",
        stage: "runtime",
        what: "The container runtime creating a pod's sandbox, the environment with the pod's IP \
               that its containers share (the CRI's RunPodSandbox).",
    },
    SpanInfo {
        name: "runtime.create_container",
        stage: "runtime",
        what: "The container runtime creating a container in a pod sandbox (the CRI's CreateContainer).",
    },
    SpanInfo {
        name: "runtime.start_container",
        stage: "runtime",
        what: "The container runtime starting a created container's process (the CRI's StartContainer).",
    },
    SpanInfo {
        name: "runtime.stop_container",
        stage: "runtime",
        what: "The container runtime stopping a container: SIGTERM, then SIGKILL after the grace \
               period (the CRI's StopContainer).",
    },
    SpanInfo {
        name: "runtime.remove_pod_sandbox",
        stage: "runtime",
        what: "The container runtime stopping and removing a pod's sandbox and what is left of its \
               containers, freeing the pod IP (the CRI's StopPodSandbox and RemovePodSandbox).",
    },
    SpanInfo {
        name: "apiserver.respond",
        stage: "apiserver",
        what: "Encoding and sending the response (the stored object or a Status error).",
    },
];

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
    /// `proxy.*`: a short description of how the rules changed, e.g. `+1 endpoint 127.1.0.3:8080`.
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
    fn span_info_finds_entries() {
        assert_eq!(span_info("cli.apply").map(|i| i.stage), Some("cli"));
        assert_eq!(span_info("store.txn").map(|i| i.stage), Some("store"));
        assert!(span_info("no.such.span").is_none());
    }
}
