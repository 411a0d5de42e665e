//! # The store: Kubernetes' memory (mirrors etcd, as the API server sees it)
//!
//! Kubernetes keeps every object in one strongly consistent key-value store, etcd.
//! Only the API server talks to it; every other component goes through the API server.
//! This module defines the *shape* of that store as a trait, in the same words etcd uses,
//! so the API server above it does not care whether the bytes live in the embedded
//! redb file (`kulisse_backends::store::embedded`) or in a real etcd
//! (`kulisse_backends::store::etcd`). k3s's "kine" does the same trick for SQL databases.
//!
//! ## The ideas a learner meets here
//! - **Keys** are laid out as the real API server lays them out:
//!   `/registry/<resource>/<namespace>/<name>` (cluster-scoped objects drop the namespace:
//!   `/registry/nodes/node-1`). A *range* over a prefix such as `/registry/pods/default/`
//!   is how a list is answered.
//! - **Revisions.** The store has one counter, the *revision*, that goes up by one for every
//!   change. Each key remembers the revision that created it (`create_revision`) and the one
//!   that last changed it (`mod_revision`). Kubernetes hands `mod_revision` out as an
//!   object's `metadata.resourceVersion`.
//! - **Optimistic concurrency.** Writes are conditional: "create if absent", "update if the
//!   key still has `mod_revision` R". Two writers that read the same revision cannot both
//!   win; the loser gets [`TxnOutcome::Conflict`] and must read again. That is where the
//!   API server's `409 Conflict` comes from.
//! - **Watch.** A watch on a prefix from revision R replays every change with revision ≥ R
//!   in order, without gaps, and then streams new ones as they commit. This is the pipe
//!   through which controllers, the scheduler and kubelets learn about changes.
//! - **Progress.** A watch on a quiet prefix sees no events, yet the store's revision moves on
//!   (other prefixes change). etcd's *progress notification* says "every change up to revision
//!   R has been sent to you": a [`WatchMessage::Progress`], in order with the events. The API
//!   server turns it into a watch `BOOKMARK`, so a client can resume from a recent revision.
//! - **Compaction.** History is not kept forever. After `compact(R)`, reading or watching
//!   from a revision older than R fails with [`StoreError::Compacted`]; the API server turns
//!   that into `410 Gone` (reason `Expired`) and clients list again. etcd refuses a watch
//!   from R itself too: its compaction removed the keys deleted at R, so their DELETE events
//!   would never come, and a watch must never skip a change. Nobody compacts by itself:
//!   the API server's compactor (`apiserver::compactor`) does, every five minutes.
//! - **Time to live.** A key written with a TTL ([`Store::create_with_ttl`]) is deleted by
//!   the store once the TTL has passed, as an ordinary delete that watchers see. etcd does
//!   it with *leases*; the API server gives every Event one, so Events expire after an hour.

use std::fmt;
use std::pin::Pin;

use futures::Stream;

/// A revision of the store. Starts at 1 for an empty store and grows by one per change.
pub type Revision = i64;

/// One key with its value and its place in history, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the change that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the last change to this key. This is the object's `resourceVersion`.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value", &String::from_utf8_lossy(&self.value))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// The answer to a range (list) request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    /// Matching keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// The store revision this answer reflects (the "list resourceVersion").
    pub revision: Revision,
}

/// The result of a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// The write happened. `kv` is the key as it is now; for a delete it is the key as it
    /// was just before, with `mod_revision` set to the delete's revision.
    Succeeded { kv: KeyValue },
    /// The condition failed: the key exists already (create), is missing (update/delete),
    /// or has another `mod_revision`. `current` is what the store holds now, if anything.
    Conflict { current: Option<KeyValue> },
}

/// What happened to a key, as seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The key was created or changed.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change delivered by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventType,
    /// For a put: the new key and value. For a delete: the key with an empty value and
    /// `mod_revision` equal to the delete's revision.
    pub kv: KeyValue,
    /// The key as it was before this change, if it existed.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    /// True when the key did not exist before this put (Kubernetes' `ADDED`).
    pub fn is_create(&self) -> bool {
        self.kind == EventType::Put && self.prev_kv.is_none()
    }
}

/// One message of a watch with progress notifications ([`Store::watch_with_progress`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// A change under the watched prefix.
    Event(WatchEvent),
    /// Every change under the prefix up to and including this revision has been delivered
    /// before this message (etcd's progress notification). Later events have higher revisions.
    Progress(Revision),
}

/// Errors every store can return.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision has been compacted away; list again and watch from there.
    #[error("revision {requested} has been compacted; the oldest revision kept is {compacted}")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is in the future.
    #[error("revision {requested} is newer than the store's current revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    /// The watcher could not keep up and the store dropped it; list again.
    #[error("watch fell behind and was closed by the store; list again and re-watch")]
    WatchLagged,
    /// The backend itself failed (disk, network, etcd unavailable...).
    #[error("store backend failed: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stream of watch events. It ends (or yields an error) when the store closes it.
pub type WatchStream = Pin<Box<dyn Stream<Item = StoreResult<WatchEvent>> + Send>>;

/// A stream of watch events and progress notifications.
pub type ProgressStream = Pin<Box<dyn Stream<Item = StoreResult<WatchMessage>> + Send>>;

/// The etcd-shaped key-value store the API server persists objects in.
///
/// Implementations: `kulisse_backends::store::embedded::EmbeddedStore` (redb, the default)
/// and `kulisse_backends::store::etcd::EtcdStore` (a real etcd). Both pass the same
/// conformance suite in `tests/`.
///
/// Every method that writes must be durable when it returns `Ok`: an acknowledged write
/// survives a crash (`kill -9`) of the process.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and span attributes: `"embedded"` or `"etcd"`.
    fn name(&self) -> &'static str;

    /// Read one key at the current revision.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Read every key that starts with `prefix`, in key order.
    /// `revision: None` reads the newest state; `Some(r)` reads the state as of revision `r`
    /// (errors with `Compacted` if `r` is older than the last compaction).
    /// `limit: Some(n)` returns at most `n` keys (`0` means no limit).
    async fn range(&self, prefix: &str, revision: Option<Revision>, limit: Option<usize>) -> StoreResult<RangeResult>;

    /// Create `key` only if it does not exist.
    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<TxnOutcome>;

    /// Replace `key` only if its `mod_revision` is still `expected`.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> StoreResult<TxnOutcome>;

    /// [`Store::create`], and delete the key once `ttl` has passed (etcd: a put attached to a
    /// lease). The deletion is an ordinary delete: it gets a revision and watchers see it.
    /// The default ignores the TTL (for test doubles); both real stores honour it.
    async fn create_with_ttl(&self, key: &str, value: Vec<u8>, ttl: std::time::Duration) -> StoreResult<TxnOutcome> {
        let _ = ttl;
        self.create(key, value).await
    }

    /// [`Store::update`], and delete the key once `ttl` has passed from now (the TTL starts
    /// again, as an update of an Event in Kubernetes gets a fresh lease).
    async fn update_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: std::time::Duration,
    ) -> StoreResult<TxnOutcome> {
        let _ = ttl;
        self.update(key, value, expected).await
    }

    /// Delete `key` only if its `mod_revision` is `expected` (or unconditionally when
    /// `expected` is `None`, as long as the key exists).
    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<TxnOutcome>;

    /// Watch every key under `prefix`, starting with changes at revision `from` (inclusive).
    /// `from: None` means "changes after now". Events arrive in revision order without gaps.
    async fn watch(&self, prefix: &str, from: Option<Revision>) -> StoreResult<WatchStream> {
        let stream = self.watch_with_progress(prefix, from, None).await?;
        Ok(Box::pin(futures::StreamExt::filter_map(stream, |item| async move {
            match item {
                Ok(WatchMessage::Event(event)) => Some(Ok(event)),
                Ok(WatchMessage::Progress(_)) => None,
                Err(e) => Some(Err(e)),
            }
        })))
    }

    /// [`Store::watch`], plus [`WatchMessage::Progress`] notifications while the watch is
    /// caught up, roughly every `progress` (`None`: never). A progress revision is never
    /// lower than an earlier one, and no event at or below it follows it.
    /// The embedded store honours the interval; etcd sends progress notifications at its own
    /// pace (`--experimental-watch-progress-notify-interval`, ten minutes by default), and only
    /// on a watch that saw no events during that interval.
    async fn watch_with_progress(
        &self,
        prefix: &str,
        from: Option<Revision>,
        progress: Option<std::time::Duration>,
    ) -> StoreResult<ProgressStream>;

    /// Forget history older than `revision`. Reads and watches from older revisions then fail
    /// with [`StoreError::Compacted`]. Current values are never lost.
    async fn compact(&self, revision: Revision) -> StoreResult<()>;

    /// The store's current revision.
    async fn current_revision(&self) -> StoreResult<Revision>;

    /// A cheap check that the store answers right now, for the API server's `/readyz`
    /// (kube-apiserver's `etcd` check reads one key). `Err` says why not. The default
    /// reads the current revision; backends may do something cheaper or stricter.
    async fn ready(&self) -> StoreResult<()> {
        self.current_revision().await.map(|_| ())
    }
}

/// The key under which an object is kept: `/registry/<resource>/<namespace>/<name>`,
/// or `/registry/<resource>/<name>` for cluster-scoped objects.
pub fn object_key(resource: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("/registry/{resource}/{ns}/{name}"),
        None => format!("/registry/{resource}/{name}"),
    }
}

/// The prefix that a list of `resource` ranges over: one namespace, or all of them.
pub fn list_prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("/registry/{resource}/{ns}/"),
        None => format!("/registry/{resource}/"),
    }
}
