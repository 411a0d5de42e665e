//! # The garbage collector (mirrors kube-controller-manager's `pkg/controller/garbagecollector`)
//!
//! Objects in Kubernetes form a family tree through `metadata.ownerReferences`: a Pod made
//! by a ReplicaSet names that ReplicaSet (by `uid`) as its owner, a ReplicaSet made by a
//! Deployment names the Deployment. Deleting an owner does *not* delete its dependents in
//! the API server; that is the garbage collector's job, and `DeleteOptions.propagationPolicy`
//! says how it should go about it:
//!
//! - **Background** (the default): the API server deletes the owner at once. The garbage
//!   collector then notices dependents whose owner no longer exists ("dangling" owner
//!   references) and deletes them, level after level: Deployment → ReplicaSets → Pods.
//! - **Foreground**: the API server only marks the owner (`deletionTimestamp`) and adds the
//!   finalizer `foregroundDeletion`. The garbage collector deletes the dependents first (those
//!   with `blockOwnerDeletion: true` block the owner), and once none is left removes the
//!   finalizer, which lets the API server delete the owner. `kubectl get` shows the owner
//!   as long as its children are still there.
//! - **Orphan**: the API server marks the owner and adds the finalizer `orphan`. The garbage
//!   collector removes the owner's entry from every dependent's `ownerReferences` (they
//!   live on, owner-less) and then removes the finalizer.
//!
//! An owner counts as gone only if no object with its **uid** exists: a new ReplicaSet with
//! the old name is a different object. The collector keeps a graph of owner uid →
//! dependents, fed by the informers, so a deletion only touches the objects involved. When
//! the graph does not know an owner (its informer may simply be behind), the collector asks
//! the API server before deleting anything, and remembers owners it found absent, as the
//! upstream `absentOwnerCache` does.
//!
//! kulisse watches the kinds that own things in this cluster: Deployments, ReplicaSets and
//! Pods, EndpointSlices (owned by their Service), and (for their finalizers) Services, Nodes
//! and Namespaces. Upstream watches every
//! resource through metadata-only informers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tracing::{Instrument, info_span};

use super::reconciler::{Action, Cause, Queue, ReconcileError, ReconcileReason, Reconciler, new_queue, traceparent_of};
use super::{Ctx, SharedInformers};
use crate::client::informer::{Cache, InformerEvent, key_of};
use crate::objects::{self, ResourceInfo};
use crate::objects::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

/// The kinds the collector watches (their informers are shared with the other controllers).
const WATCHED: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "Pod",
    "Service",
    "EndpointSlice",
    "Node",
    "Namespace",
];

/// How many absent owner uids to remember before starting over.
const ABSENT_CACHE_SIZE: usize = 4096;

/// The garbage collector. See the module documentation.
pub struct GarbageCollector {
    ctx: Arc<Ctx>,
    graph: Arc<Mutex<Graph>>,
}

/// One entry of `metadata.ownerReferences`.
#[derive(Debug, Clone, PartialEq)]
struct OwnerRef {
    uid: String,
    api_version: String,
    kind: String,
    name: String,
    block_owner_deletion: bool,
}

fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    objects::owner_references(obj)
        .iter()
        .filter_map(|r| {
            Some(OwnerRef {
                uid: r.get("uid")?.as_str()?.to_string(),
                api_version: r.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
                kind: r.get("kind").and_then(Value::as_str).unwrap_or("").to_string(),
                name: r.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                block_owner_deletion: r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true),
            })
        })
        .collect()
}

/// One object the collector knows.
#[derive(Debug, Clone)]
struct GraphNode {
    /// Queue key: `Kind/namespace/name` (or `Kind/name`).
    qkey: String,
    owners: Vec<OwnerRef>,
    /// Marked for deletion with the `foregroundDeletion` finalizer.
    deleting_dependents: bool,
}

/// The owner → dependents graph, built from informer events.
#[derive(Default)]
struct Graph {
    nodes: HashMap<String, GraphNode>,
    /// owner uid → uids of the objects naming it in their ownerReferences.
    dependents: HashMap<String, HashSet<String>>,
    /// Queue keys of owners that were deleted while they had dependents → their uid.
    tombstones: HashMap<String, String>,
    /// Owner uids known not to exist any more.
    absent: HashSet<String>,
}

impl Graph {
    fn unlink(&mut self, uid: &str, owners: &[OwnerRef]) {
        for o in owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
    }

    fn upsert(&mut self, uid: &str, node: GraphNode) {
        if let Some(old) = self.nodes.get(uid).map(|n| n.owners.clone()) {
            self.unlink(uid, &old);
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.to_string());
        }
        self.nodes.insert(uid.to_string(), node);
    }

    fn remove(&mut self, uid: &str) -> Option<GraphNode> {
        let node = self.nodes.remove(uid)?;
        self.unlink(uid, &node.owners);
        Some(node)
    }

    fn mark_absent(&mut self, uid: &str) {
        if self.absent.len() >= ABSENT_CACHE_SIZE {
            self.absent.clear();
        }
        self.absent.insert(uid.to_string());
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, String)> {
        self.dependents
            .get(uid)
            .map(|set| {
                set.iter()
                    .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.qkey.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn lock(graph: &Mutex<Graph>) -> std::sync::MutexGuard<'_, Graph> {
    graph.lock().unwrap_or_else(|p| p.into_inner())
}

fn has_finalizer(obj: &Value, finalizer: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(finalizer)))
}

fn deleting_dependents(obj: &Value) -> bool {
    objects::deletion_timestamp(obj).is_some() && has_finalizer(obj, FOREGROUND_FINALIZER)
}

fn qkey_of(kind: &str, obj: &Value) -> String {
    format!("{kind}/{}", key_of(obj))
}

/// Split a queue key into kind and cache key (`Pod/default/web` → `Pod`, `default/web`).
fn split_qkey(qkey: &str) -> (&str, &str) {
    qkey.split_once('/').unwrap_or((qkey, ""))
}

fn info_for(kind: &str) -> Option<&'static ResourceInfo> {
    objects::RESOURCES.iter().find(|r| r.kind == kind)
}

/// How one owner reference of a dependent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    /// The owner exists and is not being deleted in the foreground.
    Solid,
    /// No object with the owner's uid exists.
    Dangling,
    /// The owner exists and waits (finalizer `foregroundDeletion`) for its dependents to go.
    Waiting,
}

/// One write the collector decided on.
#[derive(Debug, Clone)]
enum Op {
    Delete {
        qkey: String,
        uid: String,
        policy: &'static str,
    },
    /// Drop the references to `remove` and clear `blockOwnerDeletion` on those to `unblock`.
    PatchOwnerRefs {
        qkey: String,
        uid: String,
        remove: Vec<String>,
        unblock: Vec<String>,
    },
    RemoveFinalizer {
        qkey: String,
        uid: String,
        finalizer: &'static str,
    },
}

/// Set up the collector: build the graph from the informers of every watched kind.
pub fn setup(informers: &mut SharedInformers, ctx: Arc<Ctx>) -> (Arc<GarbageCollector>, Queue) {
    let queue = new_queue();
    let graph = Arc::new(Mutex::new(Graph::default()));
    let watched = [
        ("Deployment", &mut informers.deployments),
        ("ReplicaSet", &mut informers.replicasets),
        ("Pod", &mut informers.pods),
        ("Service", &mut informers.services),
        ("EndpointSlice", &mut informers.endpointslices),
        ("Node", &mut informers.nodes),
        ("Namespace", &mut informers.namespaces),
    ];
    debug_assert_eq!(watched.len(), WATCHED.len());
    for (kind, informer) in watched {
        let (queue, graph) = (queue.clone(), graph.clone());
        informer.on_event(move |ev| handle_event(&graph, &queue, kind, ev));
    }
    (Arc::new(GarbageCollector { ctx, graph }), queue)
}

fn enqueue(queue: &Queue, qkey: String, reason: ReconcileReason, obj: &Value) {
    queue.add(
        qkey,
        Cause {
            reason,
            traceparent: traceparent_of(obj),
        },
    );
}

/// Keep the graph current and queue what may need collecting.
fn handle_event(graph: &Mutex<Graph>, queue: &Queue, kind: &'static str, ev: &InformerEvent) {
    let obj = ev.object();
    let Some(uid) = objects::uid(obj).map(str::to_string) else {
        return;
    };
    let qkey = qkey_of(kind, obj);
    let owners = owner_refs(obj);
    let related = |o: &Value| ReconcileReason::RelatedObjectChanged {
        kind: kind.to_string(),
        name: objects::name(o).unwrap_or("").to_string(),
    };
    let mut own: Option<ReconcileReason> = None;
    let mut others: Vec<String> = Vec::new();
    {
        let mut g = lock(graph);
        match ev {
            InformerEvent::Deleted(_) => {
                g.remove(&uid);
                g.mark_absent(&uid);
                if g.dependents.contains_key(&uid) {
                    // Its dependents may be dangling now.
                    g.tombstones.insert(qkey.clone(), uid.clone());
                    own = Some(ReconcileReason::ObjectDeleted);
                }
            }
            _ => {
                g.upsert(
                    &uid,
                    GraphNode {
                        qkey: qkey.clone(),
                        owners: owners.clone(),
                        deleting_dependents: deleting_dependents(obj),
                    },
                );
                let finalizing = objects::deletion_timestamp(obj).is_some()
                    && (has_finalizer(obj, FOREGROUND_FINALIZER) || has_finalizer(obj, ORPHAN_FINALIZER));
                let unknown_owner = owners.iter().any(|o| !g.nodes.contains_key(&o.uid));
                if finalizing || unknown_owner {
                    own = Some(ReconcileReason::of_event(ev));
                }
            }
        }
        // An owner waiting for its dependents may be done (or must act) after this change.
        for o in &owners {
            if let Some(n) = g.nodes.get(&o.uid).filter(|n| n.deleting_dependents) {
                others.push(n.qkey.clone());
            }
        }
    }
    if let Some(reason) = own {
        enqueue(queue, qkey, reason, obj);
    }
    for k in others {
        enqueue(queue, k, related(obj), obj);
    }
}

impl GarbageCollector {
    fn cache(&self, kind: &str) -> Option<&Cache> {
        let c = &self.ctx.caches;
        Some(match kind {
            "Deployment" => &c.deployments,
            "ReplicaSet" => &c.replicasets,
            "Pod" => &c.pods,
            "Service" => &c.services,
            "EndpointSlice" => &c.endpointslices,
            "Node" => &c.nodes,
            "Namespace" => &c.namespaces,
            _ => return None,
        })
    }

    /// The cached object behind a queue key, if it still is the object with `uid`.
    fn cached(&self, qkey: &str, uid: Option<&str>) -> Option<Arc<Value>> {
        let (kind, key) = split_qkey(qkey);
        let obj = self.cache(kind)?.get(key)?;
        match uid {
            Some(u) if objects::uid(&obj) != Some(u) => None,
            _ => Some(obj),
        }
    }

    /// How the owner `r` of a dependent in namespace `ns` stands. Asks the API server
    /// only when the graph does not know the owner.
    async fn owner_state(&self, r: &OwnerRef, ns: Option<&str>) -> Result<OwnerState, ReconcileError> {
        let known = {
            let g = lock(&self.graph);
            if g.absent.contains(&r.uid) {
                return Ok(OwnerState::Dangling);
            }
            g.nodes.get(&r.uid).map(|n| n.qkey.clone())
        };
        if let Some(obj) = known.and_then(|k| self.cached(&k, Some(&r.uid))) {
            return Ok(if deleting_dependents(&obj) {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            });
        }
        // Not in our caches: maybe our informer is behind. Ask the API server.
        let Some(info) = objects::by_gvk(&r.api_version, &r.kind) else {
            // A kind this cluster does not serve: we cannot tell, so we do not delete.
            tracing::debug!(
                "garbage collector: owner {} {} has a kind this cluster does not serve; leaving its dependents alone",
                r.kind,
                r.name
            );
            return Ok(OwnerState::Solid);
        };
        let ns = if info.namespaced { ns } else { None };
        match self.ctx.client.get(info, ns, &r.name).await {
            Ok(obj) if objects::uid(&obj) == Some(r.uid.as_str()) => Ok(if deleting_dependents(&obj) {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            }),
            Ok(_) => {
                lock(&self.graph).mark_absent(&r.uid); // same name, another object
                Ok(OwnerState::Dangling)
            }
            Err(e) if e.code() == Some(404) => {
                lock(&self.graph).mark_absent(&r.uid);
                Ok(OwnerState::Dangling)
            }
            Err(e) => Err(ReconcileError(format!(
                "could not check whether the owner {} {} (uid {}) still exists: {e}",
                r.kind, r.name, r.uid
            ))),
        }
    }

    /// Classify the owners of `obj` and decide (upstream `attemptToDeleteItem`).
    async fn decide(&self, qkey: &str, obj: &Value) -> Result<Vec<Op>, ReconcileError> {
        let uid = objects::uid(obj).unwrap_or("").to_string();
        if objects::deletion_timestamp(obj).is_some() {
            return Ok(vec![]); // already on its way out
        }
        let owners = owner_refs(obj);
        if owners.is_empty() {
            return Ok(vec![]);
        }
        let ns = objects::namespace(obj);
        let (mut solid, mut dangling, mut waiting) = (0, Vec::new(), Vec::new());
        for r in &owners {
            match self.owner_state(r, ns).await? {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => dangling.push(r.uid.clone()),
                OwnerState::Waiting => waiting.push(r.uid.clone()),
            }
        }
        let qkey = qkey.to_string();
        if solid > 0 {
            // Another owner still wants it: only tidy up the references.
            let unblock: Vec<String> = waiting
                .into_iter()
                .filter(|w| owners.iter().any(|o| &o.uid == w && o.block_owner_deletion))
                .collect();
            if dangling.is_empty() && unblock.is_empty() {
                return Ok(vec![]);
            }
            return Ok(vec![Op::PatchOwnerRefs {
                qkey,
                uid,
                remove: dangling,
                unblock,
            }]);
        }
        let has_dependents = lock(&self.graph).dependents.contains_key(&uid);
        let policy = if !waiting.is_empty() && has_dependents {
            "Foreground" // its owner waits: delete its own dependents first, too
        } else if has_finalizer(obj, ORPHAN_FINALIZER) {
            "Orphan"
        } else if has_finalizer(obj, FOREGROUND_FINALIZER) {
            "Foreground"
        } else {
            "Background"
        };
        Ok(vec![Op::Delete { qkey, uid, policy }])
    }

    /// Decide about a dependent from the cache; before acting, read its latest version from
    /// the API server and decide again, as upstream does: the cache may not show yet that
    /// an orphaning owner was just cut from it.
    async fn attempt_to_delete(&self, qkey: &str, cached: &Value) -> Result<Vec<Op>, ReconcileError> {
        if self.decide(qkey, cached).await?.is_empty() {
            return Ok(vec![]);
        }
        let (kind, key) = split_qkey(qkey);
        let Some(info) = info_for(kind) else {
            return Ok(vec![]);
        };
        let (ns, name) = match key.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, key),
        };
        let latest = match self.ctx.client.get(info, ns, name).await {
            Ok(o) if objects::uid(&o) == objects::uid(cached) => o,
            Ok(_) => return Ok(vec![]),
            Err(e) if e.code() == Some(404) => return Ok(vec![]),
            Err(e) => return Err(ReconcileError(format!("could not read {kind} {key}: {e}"))),
        };
        self.decide(qkey, &latest).await
    }

    /// Work out the writes for one queue key.
    async fn plan(&self, qkey: &str) -> Result<(Vec<Op>, &'static str), ReconcileError> {
        let mut ops = Vec::new();
        let mut why = "";
        // 1. An owner that was deleted: its dependents may be dangling now.
        let tombstone = lock(&self.graph).tombstones.get(qkey).cloned();
        if let Some(owner_uid) = &tombstone {
            let deps = lock(&self.graph).dependents_of(owner_uid);
            for (dep_uid, dep_key) in deps {
                if let Some(dep) = self.cached(&dep_key, Some(&dep_uid)) {
                    ops.extend(self.attempt_to_delete(&dep_key, &dep).await?);
                }
            }
            why = "owner deleted: collect its dependents";
        }
        // 2. The object itself, if it still exists.
        if let Some(obj) = self.cached(qkey, None) {
            let uid = objects::uid(&obj).unwrap_or("").to_string();
            if objects::deletion_timestamp(&obj).is_some() && has_finalizer(&obj, ORPHAN_FINALIZER) {
                let deps = lock(&self.graph).dependents_of(&uid);
                for (dep_uid, dep_key) in deps {
                    ops.push(Op::PatchOwnerRefs {
                        qkey: dep_key,
                        uid: dep_uid,
                        remove: vec![uid.clone()],
                        unblock: vec![],
                    });
                }
                ops.push(Op::RemoveFinalizer {
                    qkey: qkey.to_string(),
                    uid,
                    finalizer: ORPHAN_FINALIZER,
                });
                why = "orphan: cut the dependents' owner references";
            } else if deleting_dependents(&obj) {
                let deps = lock(&self.graph).dependents_of(&uid);
                let mut blocking = 0;
                for (dep_uid, dep_key) in deps {
                    let Some(dep) = self.cached(&dep_key, Some(&dep_uid)) else {
                        continue;
                    };
                    let blocks = owner_refs(&dep).iter().any(|o| o.uid == uid && o.block_owner_deletion);
                    if !blocks {
                        continue; // collected after the owner is gone
                    }
                    blocking += 1;
                    ops.extend(self.attempt_to_delete(&dep_key, &dep).await?);
                }
                if blocking == 0 {
                    ops.push(Op::RemoveFinalizer {
                        qkey: qkey.to_string(),
                        uid,
                        finalizer: FOREGROUND_FINALIZER,
                    });
                }
                why = "foreground deletion: dependents first";
            } else if !objects::owner_references(&obj).is_empty() {
                let more = self.attempt_to_delete(qkey, &obj).await?;
                if !more.is_empty() && why.is_empty() {
                    why = "dangling owner reference";
                }
                ops.extend(more);
            }
        }
        Ok((ops, why))
    }

    /// Change an object with `edit` (which returns false for "nothing to change"), using
    /// the cached copy first and re-reading on a conflict, like client-go's `RetryOnConflict`.
    async fn update(
        &self,
        qkey: &str,
        uid: &str,
        edit: impl Fn(&mut Value) -> bool,
    ) -> Result<bool, crate::client::ClientError> {
        let (kind, key) = split_qkey(qkey);
        let Some(info) = info_for(kind) else {
            return Ok(false);
        };
        let (ns, name) = match key.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, key),
        };
        let mut current = self.cached(qkey, Some(uid)).map(|o| (*o).clone());
        for _ in 0..5 {
            let mut obj = match current.take() {
                Some(o) => o,
                None => match self.ctx.client.get(info, ns, name).await {
                    Ok(o) if objects::uid(&o) == Some(uid) => o,
                    Ok(_) => return Ok(false),
                    Err(e) if e.code() == Some(404) => return Ok(false),
                    Err(e) => return Err(e),
                },
            };
            if !edit(&mut obj) {
                return Ok(false);
            }
            match self.ctx.client.replace(info, ns, name, None, &obj).await {
                Ok(_) => return Ok(true),
                Err(e) if e.code() == Some(409) => continue, // re-read and try again
                Err(e) if e.code() == Some(404) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Err(crate::client::ClientError::Protocol(format!(
            "{kind} {key} kept changing while the garbage collector updated it"
        )))
    }

    /// Carry out one write. Returns a line for the span (`deleted Pod default/web-1`), or
    /// `None` when it turned out to be unnecessary.
    async fn execute(&self, op: &Op) -> Result<Option<String>, ReconcileError> {
        let fail = |what: &str, qkey: &str, e: crate::client::ClientError| {
            ReconcileError(format!("garbage collector: could not {what} {qkey}: {e}"))
        };
        match op {
            Op::Delete { qkey, uid, policy } => {
                let (kind, key) = split_qkey(qkey);
                let Some(info) = info_for(kind) else { return Ok(None) };
                let (ns, name) = match key.split_once('/') {
                    Some((ns, name)) => (Some(ns), name),
                    None => (None, key),
                };
                let options = json!({
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": policy,
                    "preconditions": {"uid": uid},
                });
                match self.ctx.client.delete_with_options(info, ns, name, &options).await {
                    Ok(_) => Ok(Some(format!("deleted {kind} {key} ({policy})"))),
                    Err(e) if e.code() == Some(404) => Ok(None), // gone already
                    // 409: replaced by a new object of the same name (the uid precondition),
                    // or it kept changing. Either way: plan again after a back-off.
                    Err(e) => Err(fail("delete", qkey, e)),
                }
            }
            Op::PatchOwnerRefs {
                qkey,
                uid,
                remove,
                unblock,
            } => {
                let edit = |obj: &mut Value| edit_owner_refs(obj, remove, unblock);
                match self.update(qkey, uid, edit).await {
                    Ok(true) if !remove.is_empty() => Ok(Some(format!("removed owner references from {qkey}"))),
                    Ok(true) => Ok(Some(format!("unblocked the owner deletion in {qkey}"))),
                    Ok(false) => Ok(None),
                    Err(e) => Err(fail("update the owner references of", qkey, e)),
                }
            }
            Op::RemoveFinalizer { qkey, uid, finalizer } => {
                let edit = |obj: &mut Value| remove_finalizer(obj, finalizer);
                match self.update(qkey, uid, edit).await {
                    Ok(true) => Ok(Some(format!("removed the finalizer {finalizer} from {qkey}"))),
                    Ok(false) => Ok(None),
                    Err(e) => Err(fail(&format!("remove the finalizer {finalizer} from"), qkey, e)),
                }
            }
        }
    }
}

/// Drop the owner references to the uids in `remove` and clear `blockOwnerDeletion` on
/// those to `unblock` (upstream's `deleteOwnerRefJSONMergePatch` and
/// `unblockOwnerReferences`). True if anything changed.
fn edit_owner_refs(obj: &mut Value, remove: &[String], unblock: &[String]) -> bool {
    let Some(refs) = obj
        .pointer_mut("/metadata/ownerReferences")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = refs.clone();
    refs.retain(|r| {
        !r.get("uid")
            .and_then(Value::as_str)
            .is_some_and(|u| remove.iter().any(|x| x == u))
    });
    for r in refs.iter_mut() {
        if r.get("uid")
            .and_then(Value::as_str)
            .is_some_and(|u| unblock.iter().any(|x| x == u))
        {
            r["blockOwnerDeletion"] = json!(false);
        }
    }
    let changed = *refs != before;
    if refs.is_empty()
        && let Some(m) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut)
    {
        m.remove("ownerReferences");
    }
    changed
}

/// Remove `finalizer` from the object's finalizers. True if it was there.
fn remove_finalizer(obj: &mut Value, finalizer: &str) -> bool {
    let Some(f) = obj.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = f.len();
    f.retain(|x| x.as_str() != Some(finalizer));
    f.len() != before
}

#[async_trait::async_trait]
impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbagecollector"
    }

    async fn reconcile(&self, qkey: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
        let (ops, why) = self.plan(qkey).await?;
        let tombstone = lock(&self.graph).tombstones.get(qkey).cloned();
        let clear_tombstone = || {
            if let Some(t) = &tombstone {
                let mut g = lock(&self.graph);
                if g.tombstones.get(qkey) == Some(t) {
                    g.tombstones.remove(qkey);
                }
            }
        };
        if ops.is_empty() {
            clear_tombstone();
            return Ok(Action::await_change());
        }
        let (kind, key) = split_qkey(qkey);
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let span = info_span!(
            "controller.garbage_collect",
            "kulisse.stage" = "controller",
            "k8s.kind" = kind,
            "k8s.namespace" = ns,
            "k8s.name" = name,
            "gc.reason" = why,
            "gc.dependents.deleted" = tracing::field::Empty,
            "gc.dependents.orphaned" = tracing::field::Empty,
            "gc.actions" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_message" = tracing::field::Empty,
        );
        let result = async {
            let (mut deleted, mut orphaned, mut lines) = (0usize, 0usize, Vec::new());
            for op in &ops {
                // Stop at the first failure: e.g. an orphaning owner must keep its finalizer
                // until every dependent was released. The retry plans again from scratch.
                if let Some(line) = self.execute(op).await? {
                    match op {
                        Op::Delete { .. } => deleted += 1,
                        Op::PatchOwnerRefs { remove, .. } if !remove.is_empty() => orphaned += 1,
                        _ => {}
                    }
                    lines.push(line);
                }
            }
            Ok::<_, ReconcileError>((deleted, orphaned, lines))
        }
        .instrument(span.clone())
        .await;
        match result {
            Ok((deleted, orphaned, lines)) => {
                span.record("gc.dependents.deleted", deleted);
                span.record("gc.dependents.orphaned", orphaned);
                span.record("gc.actions", lines.join("; ").as_str());
                clear_tombstone();
                Ok(Action::await_change())
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", e.0.as_str());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(qkey: &str, owners: Vec<OwnerRef>) -> GraphNode {
        GraphNode {
            qkey: qkey.into(),
            owners,
            deleting_dependents: false,
        }
    }

    fn owner(uid: &str) -> OwnerRef {
        OwnerRef {
            uid: uid.into(),
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            block_owner_deletion: true,
        }
    }

    #[test]
    fn graph_tracks_dependents_through_updates_and_deletes() {
        let mut g = Graph::default();
        g.upsert("rs", node("ReplicaSet/default/rs", vec![]));
        g.upsert("p1", node("Pod/default/p1", vec![owner("rs")]));
        g.upsert("p2", node("Pod/default/p2", vec![owner("rs")]));
        assert_eq!(g.dependents_of("rs").len(), 2);
        // p1 is orphaned (its owner reference removed).
        g.upsert("p1", node("Pod/default/p1", vec![]));
        assert_eq!(
            g.dependents_of("rs"),
            vec![("p2".to_string(), "Pod/default/p2".to_string())]
        );
        g.remove("p2");
        assert!(g.dependents_of("rs").is_empty());
        assert!(!g.dependents.contains_key("rs"));
    }

    #[test]
    fn owner_refs_are_read_leniently() {
        let obj = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "blockOwnerDeletion": true},
            {"kind": "broken"},
        ]}});
        let refs = owner_refs(&obj);
        assert_eq!(refs.len(), 1);
        assert!(refs[0].block_owner_deletion);
        assert_eq!(split_qkey("Pod/default/web"), ("Pod", "default/web"));
        assert_eq!(split_qkey("Node/n1"), ("Node", "n1"));
    }
}
