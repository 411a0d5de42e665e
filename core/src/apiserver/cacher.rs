//! # The watch cache (mirrors kube-apiserver's `Cacher`, `k8s.io/apiserver/pkg/storage/cacher`)
//!
//! Every kubelet watches its own pods: `GET /api/v1/pods?watch=true&fieldSelector=spec.nodeName=node-7`.
//! If each such watch opened its own store watch, every change to any pod would be read,
//! decoded from JSON and tested against the selector once *per node*: with 500 nodes, one pod
//! event costs 500 decodes (1,000 with the previous version of the object), and the cluster
//! slows down as it grows. That is what kulisse did before this module; profiling a 500-node
//! cluster showed the decoding of watch events as its biggest cost.
//!
//! kube-apiserver solves this with its *watch cache*: one store watch per resource, whose events
//! are decoded **once**, kept in a ring of recent events, and handed to every API watch as
//! shared, immutable objects. Its pod cache is also **indexed by `spec.nodeName`**, so an
//! event reaches only the watches of the nodes it concerns (and the unfiltered watchers such as
//! controllers), never all 5,000 kubelets. This module does both:
//!
//! - [`WatchCache::subscribe`] serves a watch from revision `from` when the cache's ring still
//!   holds every event since `from`: the matching events from the ring, then live ones. Order and
//!   "no gaps" are kept because the ring is read and the watcher registered under one lock, the
//!   same lock under which the cache's single store watch appends and dispatches.
//! - A watch from further back than the ring reaches (or the first watch of a resource, before
//!   the cache has started from it) gets `None` and is served straight from the store, as before;
//!   that path also answers `410 Expired` for compacted revisions.
//! - A watcher that stops reading is unhooked when its buffer is full: its watch response ends and
//!   the client watches again from the last version it saw (upstream closes such "unresponsive"
//!   watchers the same way).
//! - If the cache's store watch fails, every watcher is unhooked and the cache forgets itself;
//!   the next watch starts a new one.
//!
//! Where kulisse differs: upstream also serves *lists* from this cache (consistent reads from
//! cache, KEP-2340); kulisse answers lists from the store. The ring holds the last
//! [`RING`] events per resource instead of upstream's size that adapts to the event rate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::storage::{decode, set_resource_version};
use crate::store::{self, EventType, ProgressStream, Revision, Store, StoreError, WatchEvent, WatchMessage};

/// How many recent events each resource's cache keeps for watches that start a little back.
pub const RING: usize = 2048;
/// How many undelivered messages one watcher may have before it is unhooked.
const WATCHER_BUFFER: usize = 4096;

/// One store event, decoded once and shared by every watch it goes to.
pub struct CachedEvent {
    pub revision: Revision,
    pub key: String,
    pub kind: EventType,
    /// A put: the object now. A delete: the object as it was, with the delete's revision as
    /// its `resourceVersion` (what a `DELETED` event carries).
    pub object: Option<Value>,
    /// The object before this change, if it existed (for selectors' ADDED/DELETED rules).
    pub prev: Option<Value>,
    /// `object` serialised, made by the first watcher that sends it plainly.
    json: OnceLock<Bytes>,
}

impl CachedEvent {
    /// Decode a store event (undecodable values become `None`, as the watch skipped them before).
    pub fn from_store(event: &WatchEvent) -> CachedEvent {
        let prev = event.prev_kv.as_ref().and_then(|kv| decode(kv).ok()).map(|s| s.object);
        let object = match event.kind {
            EventType::Put => decode(&event.kv).ok().map(|s| s.object),
            EventType::Delete => prev.clone().map(|mut o| {
                set_resource_version(&mut o, event.kv.mod_revision);
                o
            }),
        };
        CachedEvent {
            revision: event.revision(),
            key: event.kv.key.clone(),
            kind: event.kind.clone(),
            object,
            prev,
            json: OnceLock::new(),
        }
    }

    /// `object` as JSON bytes, serialised once for all watchers.
    pub fn object_json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            self.object
                .as_ref()
                .and_then(|o| serde_json::to_vec(o).ok())
                .map(Bytes::from)
                .unwrap_or_default()
        })
    }

    /// The nodes this event concerns (`spec.nodeName` now and before), for the index.
    fn node_names(&self) -> impl Iterator<Item = &str> {
        let now = self.object.as_ref().and_then(node_name);
        let before = self.prev.as_ref().and_then(node_name).filter(|b| Some(*b) != now);
        now.into_iter().chain(before)
    }
}

fn node_name(obj: &Value) -> Option<&str> {
    obj.pointer("/spec/nodeName").and_then(Value::as_str)
}

/// What a watch receives: a change, or "everything up to here has been sent".
pub enum CacheMessage {
    Event(Arc<CachedEvent>),
    Progress(Revision),
}

/// A watch's input: decoded events, from the cache or straight from the store.
pub type CacheStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<CacheMessage, StoreError>> + Send>>;

/// Decode a store watch event by event (the path for watches the cache cannot serve).
pub fn from_store_stream(stream: ProgressStream) -> CacheStream {
    Box::pin(stream.map(|item| {
        item.map(|message| match message {
            WatchMessage::Event(e) => CacheMessage::Event(Arc::new(CachedEvent::from_store(&e))),
            WatchMessage::Progress(r) => CacheMessage::Progress(r),
        })
    }))
}

/// The `spec.nodeName` a pod field selector pins, if any: the key of the index.
pub fn node_index(resource: &str, field_selector: Option<&str>) -> Option<String> {
    if resource != "pods" {
        return None;
    }
    field_selector?.split(',').find_map(|term| {
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (field.trim() == "spec.nodeName" && !value.contains('=')).then(|| value.trim().to_string())
    })
}

struct Watcher {
    /// Only keys under this prefix (a namespace's, or the whole resource's).
    prefix: String,
    /// Only events at or after this revision (older ones came from the ring).
    from: Revision,
    tx: mpsc::Sender<Result<CacheMessage, StoreError>>,
}

impl Watcher {
    /// Hand over `message`; `false` when the watcher is gone or too far behind.
    fn offer(&self, message: CacheMessage) -> bool {
        self.tx.try_send(Ok(message)).is_ok()
    }
}

/// One resource's cache: the ring of recent events and the watchers.
struct Resource {
    /// Every event at or after this revision is in `ring`.
    oldest: Revision,
    /// Every change up to here has arrived from the store.
    seen: Revision,
    ring: VecDeque<Arc<CachedEvent>>,
    /// Watchers without a node in their selector: they see every event (under their prefix).
    all: Vec<Watcher>,
    /// Pod watchers selecting `spec.nodeName=<key>`.
    by_node: HashMap<String, Vec<Watcher>>,
    /// The store watch broke: take no more watchers.
    closed: bool,
}

impl Resource {
    fn dispatch(&mut self, event: &Arc<CachedEvent>) {
        let wants = |w: &Watcher| event.revision >= w.from && event.key.starts_with(&w.prefix);
        self.all
            .retain(|w| !wants(w) || w.offer(CacheMessage::Event(event.clone())));
        for node in event.node_names() {
            if let Some(watchers) = self.by_node.get_mut(node) {
                watchers.retain(|w| !wants(w) || w.offer(CacheMessage::Event(event.clone())));
                if watchers.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
    }

    fn progress(&mut self, revision: Revision) {
        // A full buffer only skips a progress note (the next one says more); a closed one unhooks.
        let keep = |w: &Watcher| {
            let _ = w.offer(CacheMessage::Progress(revision));
            !w.tx.is_closed()
        };
        self.all.retain(keep);
        self.by_node.retain(|_, ws| {
            ws.retain(keep);
            !ws.is_empty()
        });
    }

    fn push(&mut self, event: Arc<CachedEvent>) {
        self.seen = self.seen.max(event.revision);
        self.ring.push_back(event);
        while self.ring.len() > RING {
            if let Some(gone) = self.ring.pop_front() {
                self.oldest = gone.revision + 1;
            }
        }
    }
}

/// The API server's watch caches, one per resource, started by the first watch of each.
pub struct WatchCache {
    store: Arc<dyn Store>,
    /// How often the caches' store watches report progress (for bookmarks).
    progress: Duration,
    resources: Mutex<HashMap<&'static str, Arc<Mutex<Resource>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only plain data behind these locks: a panic elsewhere leaves nothing half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WatchCache {
    pub fn new(store: Arc<dyn Store>, progress: Duration) -> Arc<WatchCache> {
        Arc::new(WatchCache {
            store,
            progress,
            resources: Mutex::new(HashMap::new()),
        })
    }

    /// Watch `plural` (under `prefix`) from revision `from`, served by the cache. `None`: the
    /// cache cannot serve it (it starts later than `from`); watch the store directly.
    /// The first watch of a resource starts its cache at its own `from`.
    pub async fn subscribe(
        self: &Arc<Self>,
        plural: &'static str,
        prefix: String,
        from: Revision,
        node: Option<String>,
    ) -> Result<Option<CacheStream>, StoreError> {
        let resource = match self.resource(plural) {
            Some(r) => r,
            None => match self.start(plural, from).await? {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        let mut r = lock(&resource);
        if r.closed || from < r.oldest {
            return Ok(None);
        }
        let replay: Vec<Arc<CachedEvent>> = r
            .ring
            .iter()
            .filter(|e| e.revision >= from && e.key.starts_with(&prefix))
            .filter(|e| node.as_deref().is_none_or(|n| e.node_names().any(|x| x == n)))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let watcher = Watcher {
            prefix,
            from: from.max(r.seen + 1),
            tx,
        };
        match node {
            Some(n) => r.by_node.entry(n).or_default().push(watcher),
            None => r.all.push(watcher),
        }
        drop(r);
        let replay = futures::stream::iter(replay.into_iter().map(|e| Ok(CacheMessage::Event(e))));
        Ok(Some(Box::pin(
            replay.chain(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )))
    }

    fn resource(&self, plural: &str) -> Option<Arc<Mutex<Resource>>> {
        lock(&self.resources).get(plural).cloned()
    }

    /// Start the cache of `plural` with a store watch from `from`. `None` if another watch
    /// started it meanwhile at a later revision (the caller then watches the store).
    async fn start(
        self: &Arc<Self>,
        plural: &'static str,
        from: Revision,
    ) -> Result<Option<Arc<Mutex<Resource>>>, StoreError> {
        let prefix = store::list_prefix(plural, None);
        let stream = self
            .store
            .watch_with_progress(&prefix, Some(from), Some(self.progress))
            .await?;
        let resource = {
            let mut all = lock(&self.resources);
            if let Some(existing) = all.get(plural) {
                // Someone else won the race; ours is dropped with `stream`.
                return Ok((lock(existing).oldest <= from).then(|| existing.clone()));
            }
            let resource = Arc::new(Mutex::new(Resource {
                oldest: from,
                seen: from - 1,
                ring: VecDeque::new(),
                all: Vec::new(),
                by_node: HashMap::new(),
                closed: false,
            }));
            all.insert(plural, resource.clone());
            resource
        };
        tokio::spawn(self.clone().pump(plural, resource.clone(), stream));
        Ok(Some(resource))
    }

    /// Feed one resource's cache from its store watch until the watch ends or fails.
    async fn pump(self: Arc<Self>, plural: &'static str, resource: Arc<Mutex<Resource>>, mut stream: ProgressStream) {
        let ended = loop {
            match stream.next().await {
                Some(Ok(WatchMessage::Event(e))) => {
                    // Decoded outside the lock: the watchers' reads never wait for JSON.
                    let event = Arc::new(CachedEvent::from_store(&e));
                    let mut r = lock(&resource);
                    r.dispatch(&event);
                    r.push(event);
                }
                Some(Ok(WatchMessage::Progress(revision))) => {
                    let mut r = lock(&resource);
                    r.seen = r.seen.max(revision);
                    r.progress(revision);
                }
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        tracing::debug!(resource = plural, error = ?ended, "watch cache stopped; its watchers watch again");
        {
            let mut all = lock(&self.resources);
            if all.get(plural).is_some_and(|r| Arc::ptr_eq(r, &resource)) {
                all.remove(plural);
            }
        }
        let mut r = lock(&resource);
        r.closed = true;
        // Each watcher gets the store's error (a compacted revision becomes `410 Expired`), or
        // just sees its stream end and watches again.
        if let Some(e) = &ended {
            for w in r.all.iter().chain(r.by_node.values().flatten()) {
                let _ = w.tx.try_send(Err(copy_error(e)));
            }
        }
        r.all.clear();
        r.by_node.clear();
    }
}

/// A copy of a store error for each watcher (`StoreError` holds no resources, only words).
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Compacted { requested, compacted } => StoreError::Compacted {
            requested: *requested,
            compacted: *compacted,
        },
        StoreError::FutureRevision { requested, current } => StoreError::FutureRevision {
            requested: *requested,
            current: *current,
        },
        StoreError::WatchLagged => StoreError::WatchLagged,
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_takes_only_an_equality_on_spec_node_name_of_pods() {
        assert_eq!(node_index("pods", Some("spec.nodeName=node-1")), Some("node-1".into()));
        assert_eq!(
            node_index("pods", Some("status.phase=Running,spec.nodeName==n2")),
            Some("n2".into())
        );
        assert_eq!(node_index("pods", Some("spec.nodeName!=node-1")), None);
        assert_eq!(node_index("pods", Some("status.phase=Running")), None);
        assert_eq!(node_index("pods", None), None);
        assert_eq!(node_index("nodes", Some("spec.nodeName=node-1")), None);
    }
}
