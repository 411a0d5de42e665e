//! # The embedded store: etcd's job, done by one redb file (mirrors etcd's MVCC store)
//!
//! A real cluster keeps its state in etcd. etcd is, underneath its Raft replication, a
//! *multi-version* key-value store (`mvcc` in the etcd source): every change gets the next
//! **revision**, the current value of each key is kept together with the revisions that
//! created and last modified it, and a log of changes lets **watchers** replay history from
//! any revision that has not been **compacted** away. This module builds that same store on
//! a single [redb](https://docs.rs/redb) file, so kulisse needs no external database.
//! (k3s does the same with "kine" on SQLite.)
//!
//! ## What is inside the file (three redb tables)
//!
//! | table  | key                | value                                                   | etcd analogue          |
//! |--------|--------------------|---------------------------------------------------------|------------------------|
//! | `kv`   | key (`/registry/...`) | `(create_revision, mod_revision, value)`             | the key index + latest |
//! | `log`  | revision           | `(key, put/delete, value, create_revision, prev kv)`    | the revision history   |
//! | `meta` | `"revision"`, `"compacted"` | the current and the compacted revision         | `meta` bucket          |
//! | `ttl`  | key                | when it expires (Unix milliseconds)                     | the key's lease        |
//! | `expiry` | (when, key)      | nothing: the same, in the order they expire             | the lease heap         |
//!
//! The log is what makes **watch** and **reads at an older revision** possible: a watch
//! from revision R replays log entries ≥ R and then switches to live events; a range at
//! revision R takes the current state and *undoes* every newer log entry (each entry keeps
//! the previous key-value, etcd's `prev_kv`). [`Store::compact`] deletes log entries older
//! than R, after which such reads fail with [`StoreError::Compacted`] (the API server's
//! `410 Gone`). As etcd does (`--experimental-compaction-batch-limit`), the compacted
//! revision is recorded at once and the old entries are then deleted a few thousand per
//! write transaction, between the other writes: deleting five minutes of a busy cluster's
//! history in one transaction stalled every write for seconds and made the file grow
//! fourfold (redb copies what a transaction changes, and frees the old pages only when it
//! commits); `kulisse bench --soak` found it.
//!
//! ## Keys that expire (etcd's leases)
//!
//! etcd deletes a key when the lease it is attached to runs out; the API server attaches
//! every Event to one, so Events disappear after an hour. Here a key written with a TTL gets
//! a deadline in `ttl` and `expiry`; a later write without a TTL (or a delete) removes it,
//! as a put without a lease detaches etcd's. The writer thread looks at the front of
//! `expiry` about once a second and deletes what is due, in an ordinary batch: each delete
//! gets its revision and watchers see it, as they see etcd's lease expiry. The deadline is
//! wall-clock time stored in the file, so it survives a restart.
//!
//! ## Durability and group commit
//!
//! etcd acknowledges a write only after it is in its write-ahead log and `fsync`ed. Here
//! every redb commit uses `Durability::Immediate` (redb's default), so an acknowledged write
//! survives `kill -9`. An fsync costs a fraction of a millisecond, and the API server writes
//! from many requests at once, so the store does what etcd's backend does with its batch
//! transactions: **group commit**. All writes go through one writer thread fed by a
//! channel. The thread takes every request that is waiting, applies them *in order* inside
//! ONE redb write transaction (each is a compare-and-swap judged against the state that
//! includes the earlier requests of the same batch, and each success gets the next
//! revision), commits once, publishes the watch events, and only then answers each caller.
//! With N concurrent writers that is about one fsync per batch instead of N.
//! [`EmbeddedStore::stats`] shows how big the batches get.
//!
//! ## Watchers never slow down writers
//!
//! The writer hands each live watcher its events through a bounded channel with
//! `try_send`. A watcher that does not keep up is unhooked (counted in
//! [`CommitStats::lagged_watchers`]); the watch stream notices, reads the missing revisions
//! back from the `log` table and goes live again — the same "catch up from history" etcd
//! does for its *unsynced* watchers. Only if that history has been compacted meanwhile does
//! the stream end with [`StoreError::Compacted`], and the client lists again.
//!
//! Registration is race-free: the writer publishes under the hub lock, after the commit,
//! and a watcher only goes live while holding that lock and after having read the log up
//! to the last published revision. Duplicates that could appear in between are filtered by
//! revision.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak, mpsc as std_mpsc};
use std::thread::JoinHandle;

use kulisse_core::store::{
    EventType, KeyValue, ProgressStream, RangeResult, Revision, Store, StoreError, StoreResult, TxnOutcome, WatchEvent,
    WatchMessage,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

/// `kv`: key -> (create_revision, mod_revision, value).
/// A stored key's `(create_revision, mod_revision, value)`.
type StoredKv<'a> = (i64, i64, &'a [u8]);
/// A log entry: `(key, op, value, create_revision, prev kv)`.
type LogEntry<'a> = (&'a str, u8, &'a [u8], i64, Option<StoredKv<'a>>);

const KV: TableDefinition<&str, StoredKv<'static>> = TableDefinition::new("kv");
/// `log`: revision -> (key, op, value, create_revision, prev (create, mod, value)).
const LOG: TableDefinition<i64, LogEntry<'static>> = TableDefinition::new("log");
/// `meta`: "revision" and "compacted".
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// `ttl`: key -> the Unix time (ms) it expires at.
const TTL: TableDefinition<&str, i64> = TableDefinition::new("ttl");
/// `expiry`: (expires at, key) -> (), the keys with a TTL in the order they expire.
const EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("expiry");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// redb's page cache. redb's default is 1 GiB, which a busy store fills up to the size of its
/// file: in a 30-minute soak with a 729 MiB file, the process grew from 572 MiB at minute 11
/// to 1,136 MiB at minute 30 (517 MiB with this size). Pages outside the cache are read
/// from the kernel's page cache, which is memory too, but the kernel's to give back, and not
/// the process's.
const CACHE_SIZE: usize = 64 * 1024 * 1024;
/// At most this many write requests share one redb transaction (one fsync).
const MAX_BATCH: usize = 1024;
/// How many undelivered event batches a live watcher may have before it is unhooked and
/// has to catch up from the log.
const WATCH_BUFFER: usize = 1024;
/// How many log entries a catching-up watcher reads per read transaction.
const CATCH_UP_CHUNK: usize = 1024;
/// How often the writer looks for expired keys (etcd's lessor checks every 500 ms).
const EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// At most this many expired keys are deleted in one batch.
const EXPIRY_BATCH: usize = 1024;
/// At most this many compacted log entries are deleted in one write transaction.
const COMPACT_BATCH: usize = 4096;

/// Counters that show group commit at work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches the writer thread processed (each is one redb write transaction).
    pub batches: u64,
    /// Write requests (create/update/delete/compact) those batches contained.
    pub requests: u64,
    /// Durable commits (fsyncs). A batch in which every request conflicted commits nothing.
    pub commits: u64,
    /// Live watchers that fell behind and were sent back to catch up from the log.
    pub lagged_watchers: u64,
}

impl CommitStats {
    /// Average number of write requests per batch (per write transaction).
    pub fn average_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.requests as f64 / self.batches as f64
        }
    }
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    requests: AtomicU64,
    commits: AtomicU64,
    lagged_watchers: AtomicU64,
}

/// kulisse's default store: one redb file with group commit, watch replay and compaction.
/// See the module docs for how it mirrors etcd.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    requests: Option<std_mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// What the store, the writer thread and the reads share.
struct Shared {
    db: Database,
    path: PathBuf,
    hub: Mutex<Hub>,
    counters: Counters,
    /// Whether log entries below the compacted revision may be left to delete (true at
    /// start: a process killed mid-compaction resumes it).
    compacting: AtomicBool,
}

/// The live watchers, and the last revision handed to them.
struct Hub {
    published: Revision,
    next_id: u64,
    watchers: HashMap<u64, LiveWatcher>,
}

struct LiveWatcher {
    prefix: String,
    from: Revision,
    tx: mpsc::Sender<Vec<WatchEvent>>,
}

enum WriteOp {
    /// `expires`: the Unix time (ms) to delete the key at, if it has a TTL.
    Create {
        key: String,
        value: Vec<u8>,
        expires: Option<i64>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
        expires: Option<i64>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
    /// Delete the keys whose TTL ran out before `now` (Unix ms).
    Expire {
        now: i64,
    },
    /// Delete the next log entries below the compacted revision.
    CompactMore,
}

enum Answer {
    Txn(TxnOutcome),
    Compacted,
    /// How many keys an expiry sweep deleted.
    Expired,
}

struct Request {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<Answer>>,
}

/// Internal error: either a redb failure (mapped to `Backend` with context) or a store-level
/// answer such as `Compacted`.
enum Fail {
    Redb(redb::Error),
    Store(StoreError),
}

macro_rules! fail_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Self {
                Fail::Redb(e.into())
            }
        }
    )*};
}
fail_from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Shared {
    fn fail(&self, doing: &str, fail: Fail) -> StoreError {
        match fail {
            Fail::Store(e) => e,
            Fail::Redb(e) => StoreError::Backend(format!(
                "embedded store file {}: {doing} failed: {e}",
                self.path.display()
            )),
        }
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock cannot leave the hub inconsistent in a way that
        // matters (it only holds senders), so a poisoned lock is simply taken over.
        self.hub.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn corrupt(&self, what: String) -> Fail {
        Fail::Store(StoreError::Backend(format!(
            "embedded store file {} looks corrupt: {what}",
            self.path.display()
        )))
    }

    fn meta_value<T: ReadableTable<&'static str, i64>>(&self, meta: &T, name: &str) -> Result<i64, Fail> {
        match meta.get(name)? {
            Some(v) => Ok(v.value()),
            None => Err(self.corrupt(format!("the meta table has no {name:?} entry"))),
        }
    }

    // ----- reads -------------------------------------------------------------------------

    fn get(&self, key: &str) -> Result<Option<KeyValue>, Fail> {
        let txn = self.db.begin_read()?;
        let kv = txn.open_table(KV)?;
        read_kv(&kv, key)
    }

    fn current_revision(&self) -> Result<(Revision, Revision), Fail> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok((
            self.meta_value(&meta, META_REVISION)?,
            self.meta_value(&meta, META_COMPACTED)?,
        ))
    }

    fn range(&self, prefix: &str, revision: Option<Revision>, limit: Option<usize>) -> Result<RangeResult, Fail> {
        let limit = limit.filter(|n| *n > 0).unwrap_or(usize::MAX);
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let current = self.meta_value(&meta, META_REVISION)?;
        let compacted = self.meta_value(&meta, META_COMPACTED)?;
        let kv = txn.open_table(KV)?;

        // Revision 0 (or less) means "now", as in etcd.
        let at = match revision.filter(|r| *r > 0) {
            None => current,
            Some(r) if r > current => {
                return Err(Fail::Store(StoreError::FutureRevision { requested: r, current }));
            }
            Some(r) if r < compacted => {
                return Err(Fail::Store(StoreError::Compacted {
                    requested: r,
                    compacted,
                }));
            }
            Some(r) => r,
        };

        if at == current {
            let kvs = keys_under(&kv, prefix, limit)?;
            return Ok(RangeResult { kvs, revision: current });
        }

        // An older revision: start from today's state and undo every newer change, newest
        // first. Each log entry remembers the key as it was before (prev_kv).
        let mut state: BTreeMap<String, KeyValue> = keys_under(&kv, prefix, usize::MAX)?
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        let log = txn.open_table(LOG)?;
        for item in log.range((at + 1)..)?.rev() {
            let (_rev, entry) = item?;
            let (key, _op, _value, _create, prev) = entry.value();
            if !key.starts_with(prefix) {
                continue;
            }
            match prev {
                Some(prev) => {
                    state.insert(key.to_string(), stored_kv(key, prev));
                }
                None => {
                    state.remove(key);
                }
            }
        }
        Ok(RangeResult {
            kvs: state.into_values().take(limit).collect(),
            revision: at,
        })
    }

    /// Read up to `max` log entries starting at revision `from`, keeping those under
    /// `prefix`. Returns the events and the last revision scanned (matching or not).
    fn read_log(&self, prefix: &str, from: Revision, max: usize) -> Result<LogChunk, Fail> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let compacted = self.meta_value(&meta, META_COMPACTED)?;
        if from < compacted {
            return Err(Fail::Store(StoreError::Compacted {
                requested: from,
                compacted,
            }));
        }
        let log = txn.open_table(LOG)?;
        let mut chunk = LogChunk::default();
        for item in log.range(from..)?.take(max) {
            let (rev, entry) = item?;
            let rev = rev.value();
            chunk.scanned += 1;
            chunk.last_scanned = Some(rev);
            let (key, op, value, create_revision, prev) = entry.value();
            if !key.starts_with(prefix) {
                continue;
            }
            let prev_kv = prev.map(|(c, m, v)| KeyValue {
                key: key.to_string(),
                value: v.to_vec(),
                create_revision: c,
                mod_revision: m,
            });
            let event = match op {
                OP_PUT => WatchEvent {
                    kind: EventType::Put,
                    kv: KeyValue {
                        key: key.to_string(),
                        value: value.to_vec(),
                        create_revision,
                        mod_revision: rev,
                    },
                    prev_kv,
                },
                OP_DELETE => WatchEvent {
                    kind: EventType::Delete,
                    kv: deleted_kv(key, rev),
                    prev_kv,
                },
                other => {
                    return Err(self.corrupt(format!(
                        "log entry at revision {rev} has unknown operation code {other} \
                         (expected {OP_PUT} for put or {OP_DELETE} for delete)"
                    )));
                }
            };
            chunk.events.push(event);
        }
        Ok(chunk)
    }

    // ----- the writer ----------------------------------------------------------------------

    fn writer_loop(self: Arc<Self>, requests: std_mpsc::Receiver<Request>) {
        let mut next_check = std::time::Instant::now();
        loop {
            if std::time::Instant::now() >= next_check {
                self.expire_due();
                next_check = std::time::Instant::now() + EXPIRY_CHECK;
            }
            // A compaction goes on between the other writes, one transaction at a time.
            let compacting = self.compacting.load(Ordering::Relaxed);
            if compacting {
                let (reply, _) = oneshot::channel();
                self.apply_batch(vec![Request {
                    op: WriteOp::CompactMore,
                    reply,
                }]);
            }
            let wait = match compacting {
                true => std::time::Duration::ZERO,
                false => next_check.saturating_duration_since(std::time::Instant::now()),
            };
            let first = match requests.recv_timeout(wait) {
                Ok(first) => first,
                Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                // Every sender is gone: the store was dropped.
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.apply_batch(batch);
        }
    }

    /// Delete the keys whose TTL has run out, if any (a read first: usually none is due).
    fn expire_due(&self) {
        let now = unix_millis();
        let due = || -> Result<bool, Fail> {
            let txn = self.db.begin_read()?;
            let expiry = txn.open_table(EXPIRY)?;
            Ok(expiry.first()?.is_some_and(|(k, _)| k.value().0 <= now))
        };
        match due() {
            Ok(true) => {
                // Nobody waits for the answer: the deletes reach watchers as events.
                let (reply, _) = oneshot::channel();
                self.apply_batch(vec![Request {
                    op: WriteOp::Expire { now },
                    reply,
                }]);
            }
            Ok(false) => {}
            Err(fail) => {
                let e = self.fail("looking for expired keys", fail);
                tracing::warn!(path = %self.path.display(), error = %e, "embedded store: expiry check failed");
            }
        }
    }

    fn apply_batch(&self, batch: Vec<Request>) {
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match self.run_batch(&batch) {
            Ok(out) => {
                if out.committed {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(left) = out.compaction_left {
                    self.compacting.store(left, Ordering::Relaxed);
                }
                if !out.events.is_empty() {
                    self.publish(out.revision, &out.events);
                }
                for (request, answer) in batch.into_iter().zip(out.answers) {
                    // The caller may have given up waiting; the write happened anyway, as
                    // it would in etcd.
                    let _ = request.reply.send(answer);
                }
            }
            Err(fail) => {
                let message = match self.fail("committing a batch of writes", fail) {
                    StoreError::Backend(m) => m,
                    other => other.to_string(),
                };
                tracing::error!(path = %self.path.display(), error = %message, "embedded store write failed");
                for request in batch {
                    let _ = request.reply.send(Err(StoreError::Backend(message.clone())));
                }
            }
        }
    }

    /// Apply a batch in one write transaction. A redb error aborts the whole batch (nothing
    /// of it is committed, every caller gets the error).
    fn run_batch(&self, batch: &[Request]) -> Result<BatchOutput, Fail> {
        let txn = self.db.begin_write()?;
        let mut answers = Vec::with_capacity(batch.len());
        let (events, revision, dirty, compaction_left) = {
            let meta = txn.open_table(META)?;
            let rev = self.meta_value(&meta, META_REVISION)?;
            let mut w = BatchWriter {
                kv: txn.open_table(KV)?,
                log: txn.open_table(LOG)?,
                ttl: txn.open_table(TTL)?,
                expiry: txn.open_table(EXPIRY)?,
                meta,
                rev,
                events: Vec::new(),
                dirty: false,
                compaction_left: None,
            };
            for request in batch {
                let answer = match &request.op {
                    WriteOp::Create { key, value, expires } => w.create(key, value, *expires)?,
                    WriteOp::Update {
                        key,
                        value,
                        expected,
                        expires,
                    } => w.update(key, value, *expected, *expires)?,
                    WriteOp::Delete { key, expected } => w.delete(key, *expected)?,
                    WriteOp::Expire { now } => w.expire(*now)?,
                    WriteOp::Compact { revision } => {
                        let compacted_now = self.meta_value(&w.meta, META_COMPACTED)?;
                        w.compact(*revision, compacted_now)?
                    }
                    WriteOp::CompactMore => {
                        let compacted = self.meta_value(&w.meta, META_COMPACTED)?;
                        w.compaction_left = Some(w.drop_log_before(compacted)?);
                        Ok(Answer::Compacted)
                    }
                };
                answers.push(answer);
            }
            if w.dirty {
                w.meta.insert(META_REVISION, w.rev)?;
            }
            (w.events, w.rev, w.dirty, w.compaction_left)
        };
        if dirty {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(BatchOutput {
            answers,
            events,
            revision,
            committed: dirty,
            compaction_left,
        })
    }

    /// Hand committed events to live watchers. Never blocks: a watcher whose channel is full
    /// is unhooked and catches up from the log by itself.
    fn publish(&self, revision: Revision, events: &[WatchEvent]) {
        let mut lagged = 0;
        {
            let mut hub = self.hub();
            hub.published = revision;
            hub.watchers.retain(|_, w| {
                let mine: Vec<WatchEvent> = events
                    .iter()
                    .filter(|e| e.revision() >= w.from && e.kv.key.starts_with(&w.prefix))
                    .cloned()
                    .collect();
                if mine.is_empty() {
                    return !w.tx.is_closed();
                }
                match w.tx.try_send(mine) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        lagged += 1;
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
        if lagged > 0 {
            self.counters.lagged_watchers.fetch_add(lagged, Ordering::Relaxed);
            tracing::debug!(lagged, revision, "watchers fell behind; they catch up from the log");
        }
    }
}

/// The tables of one write transaction, the revision it has reached and what it did so far:
/// [`EmbeddedStore::run_batch`] applies each request of a batch through it. Each method
/// answers the request (`Err` inside: a store-level refusal, such as a compacted revision)
/// or fails the whole batch (`Err` outside: redb failed).
struct BatchWriter<'txn> {
    kv: redb::Table<'txn, &'static str, StoredKv<'static>>,
    log: redb::Table<'txn, i64, LogEntry<'static>>,
    ttl: redb::Table<'txn, &'static str, i64>,
    expiry: redb::Table<'txn, (i64, &'static str), ()>,
    meta: redb::Table<'txn, &'static str, i64>,
    rev: Revision,
    events: Vec<WatchEvent>,
    /// Whether anything was written (else the transaction is aborted, not committed).
    dirty: bool,
    /// After a compaction step: whether log entries below the compacted revision remain.
    compaction_left: Option<bool>,
}

impl BatchWriter<'_> {
    /// Create `key` if it does not exist (etcd: a txn comparing `create_revision == 0`).
    fn create(&mut self, key: &str, value: &[u8], expires: Option<i64>) -> Result<StoreResult<Answer>, Fail> {
        if let Some(current) = read_kv(&self.kv, key)? {
            return Ok(Ok(Answer::Txn(TxnOutcome::Conflict { current: Some(current) })));
        }
        self.rev += 1;
        let rev = self.rev;
        let new = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: rev,
            mod_revision: rev,
        };
        self.kv.insert(key, (rev, rev, value))?;
        self.log.insert(rev, (key, OP_PUT, value, rev, None))?;
        self.set_expiry(key, expires)?;
        self.events.push(WatchEvent {
            kind: EventType::Put,
            kv: new.clone(),
            prev_kv: None,
        });
        self.dirty = true;
        Ok(Ok(Answer::Txn(TxnOutcome::Succeeded { kv: new })))
    }

    /// Replace `key` if its `mod_revision` is still `expected`.
    fn update(
        &mut self,
        key: &str,
        value: &[u8],
        expected: Revision,
        expires: Option<i64>,
    ) -> Result<StoreResult<Answer>, Fail> {
        let current = match read_kv(&self.kv, key)? {
            Some(current) if current.mod_revision == expected => current,
            current => return Ok(Ok(Answer::Txn(TxnOutcome::Conflict { current }))),
        };
        self.rev += 1;
        let rev = self.rev;
        let new = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: current.create_revision,
            mod_revision: rev,
        };
        self.kv.insert(key, (current.create_revision, rev, value))?;
        self.set_expiry(key, expires)?;
        self.log.insert(
            rev,
            (
                key,
                OP_PUT,
                value,
                current.create_revision,
                Some((current.create_revision, current.mod_revision, current.value.as_slice())),
            ),
        )?;
        self.events.push(WatchEvent {
            kind: EventType::Put,
            kv: new.clone(),
            prev_kv: Some(current),
        });
        self.dirty = true;
        Ok(Ok(Answer::Txn(TxnOutcome::Succeeded { kv: new })))
    }

    /// Delete `key` if it exists (and, with `expected`, still has that `mod_revision`).
    fn delete(&mut self, key: &str, expected: Option<Revision>) -> Result<StoreResult<Answer>, Fail> {
        let current = match read_kv(&self.kv, key)? {
            Some(current) if expected.is_none_or(|e| e == current.mod_revision) => current,
            current => return Ok(Ok(Answer::Txn(TxnOutcome::Conflict { current }))),
        };
        self.rev += 1;
        let rev = self.rev;
        self.kv.remove(key)?;
        self.set_expiry(key, None)?;
        self.log.insert(
            rev,
            (
                key,
                OP_DELETE,
                &[][..],
                0,
                Some((current.create_revision, current.mod_revision, current.value.as_slice())),
            ),
        )?;
        let mut gone = current.clone();
        gone.mod_revision = rev;
        self.events.push(WatchEvent {
            kind: EventType::Delete,
            kv: deleted_kv(key, rev),
            prev_kv: Some(current),
        });
        self.dirty = true;
        Ok(Ok(Answer::Txn(TxnOutcome::Succeeded { kv: gone })))
    }

    /// Give `key` a new deadline, or none (etcd: attach the key to another lease, or detach it).
    fn set_expiry(&mut self, key: &str, expires: Option<i64>) -> Result<(), Fail> {
        let old = self.ttl.remove(key)?.map(|v| v.value());
        if let Some(old) = old {
            self.expiry.remove((old, key))?;
        }
        if let Some(at) = expires {
            self.ttl.insert(key, at)?;
            self.expiry.insert((at, key), ())?;
        }
        Ok(())
    }

    /// Delete the keys whose deadline is before `now` (etcd: revoke the expired leases, which
    /// deletes their keys). Each delete is an ordinary one, with its revision and event.
    fn expire(&mut self, now: i64) -> Result<StoreResult<Answer>, Fail> {
        let mut due = Vec::new();
        for entry in self.expiry.range(..(now, ""))? {
            let (k, _) = entry?;
            due.push(k.value().1.to_string());
            if due.len() >= EXPIRY_BATCH {
                break;
            }
        }
        for key in &due {
            if let Err(e) = self.delete(key, None)? {
                return Ok(Err(e));
            }
        }
        if !due.is_empty() {
            tracing::debug!(expired = due.len(), "embedded store: deleted keys whose TTL ran out");
        }
        Ok(Ok(Answer::Expired))
    }

    /// Forget the log before `target` (`compacted_now`: the revision compacted so far).
    fn compact(&mut self, target: Revision, compacted_now: Revision) -> Result<StoreResult<Answer>, Fail> {
        if target > self.rev {
            return Ok(Err(StoreError::FutureRevision {
                requested: target,
                current: self.rev,
            }));
        }
        if target <= compacted_now {
            // etcd answers the same: "required revision has been compacted".
            return Ok(Err(StoreError::Compacted {
                requested: target,
                compacted: compacted_now,
            }));
        }
        self.meta.insert(META_COMPACTED, target)?;
        self.dirty = true;
        self.compaction_left = Some(self.drop_log_before(target)?);
        Ok(Ok(Answer::Compacted))
    }

    /// Delete up to [`COMPACT_BATCH`] log entries below `below`; whether more remain.
    fn drop_log_before(&mut self, below: Revision) -> Result<bool, Fail> {
        let mut revisions = Vec::with_capacity(COMPACT_BATCH + 1);
        for entry in self.log.range(..below)?.take(COMPACT_BATCH + 1) {
            revisions.push(entry?.0.value());
        }
        let more = revisions.len() > COMPACT_BATCH;
        for rev in revisions.iter().take(COMPACT_BATCH) {
            self.log.remove(rev)?;
        }
        self.dirty |= !revisions.is_empty();
        Ok(more)
    }
}

struct BatchOutput {
    answers: Vec<StoreResult<Answer>>,
    events: Vec<WatchEvent>,
    revision: Revision,
    committed: bool,
    compaction_left: Option<bool>,
}

#[derive(Default)]
struct LogChunk {
    events: Vec<WatchEvent>,
    scanned: usize,
    last_scanned: Option<Revision>,
}

fn deleted_kv(key: &str, rev: Revision) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Vec::new(),
        create_revision: 0,
        mod_revision: rev,
    }
}

/// A stored key as the store's [`KeyValue`].
fn stored_kv(key: &str, (create_revision, mod_revision, value): StoredKv<'_>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    }
}

/// The first `limit` keys under `prefix` as they are now, in key order.
fn keys_under<T: ReadableTable<&'static str, StoredKv<'static>>>(
    table: &T,
    prefix: &str,
    limit: usize,
) -> Result<Vec<KeyValue>, Fail> {
    let mut kvs = Vec::new();
    for item in table.range::<&str>(prefix..)? {
        if kvs.len() >= limit {
            break;
        }
        let (k, v) = item?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        kvs.push(stored_kv(key, v.value()));
    }
    Ok(kvs)
}

fn read_kv<T: ReadableTable<&'static str, StoredKv<'static>>>(table: &T, key: &str) -> Result<Option<KeyValue>, Fail> {
    Ok(table.get(key)?.map(|guard| stored_kv(key, guard.value())))
}

impl EmbeddedStore {
    /// Open (or create) the store file at `path`. A store reopened on the same file continues
    /// from the revision stored in it. Missing parent directories are created.
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Backend(format!(
                    "cannot create the directory {} for the store file: {e}",
                    parent.display()
                ))
            })?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_SIZE)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
                    "cannot open the store file {}: it is already open (by another kulisse \
                 process, or by another store in this process)",
                    path.display()
                )),
                other => StoreError::Backend(format!("cannot open the store file {}: {other}", path.display())),
            })?;
        let init = || -> Result<Revision, Fail> {
            let txn = db.begin_write()?;
            let revision;
            {
                txn.open_table(KV)?;
                txn.open_table(LOG)?;
                txn.open_table(TTL)?;
                txn.open_table(EXPIRY)?;
                let mut meta = txn.open_table(META)?;
                let stored = meta.get(META_REVISION)?.map(|v| v.value());
                revision = match stored {
                    Some(r) => r,
                    None => {
                        // An empty store is at revision 1, as a fresh etcd is.
                        meta.insert(META_REVISION, 1)?;
                        meta.insert(META_COMPACTED, 0)?;
                        1
                    }
                };
            }
            txn.commit()?;
            Ok(revision)
        };
        let revision = init().map_err(|fail| match fail {
            Fail::Store(e) => e,
            Fail::Redb(e) => StoreError::Backend(format!("cannot initialise the store file {}: {e}", path.display())),
        })?;

        let shared = Arc::new(Shared {
            db,
            path: path.to_path_buf(),
            hub: Mutex::new(Hub {
                published: revision,
                next_id: 0,
                watchers: HashMap::new(),
            }),
            counters: Counters::default(),
            compacting: AtomicBool::new(true),
        });
        let (tx, rx) = std_mpsc::channel();
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("kulisse-store-writer".into())
            .spawn(move || for_writer.writer_loop(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the embedded store's writer thread: {e}")))?;
        tracing::debug!(path = %path.display(), revision, "embedded store opened");
        Ok(Arc::new(EmbeddedStore {
            shared,
            requests: Some(tx),
            writer: Some(writer),
        }))
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether compacted log entries are still being deleted (a few thousand per write
    /// transaction, between the other writes).
    pub fn compacting(&self) -> bool {
        self.shared.compacting.load(Ordering::Relaxed)
    }

    /// Group-commit counters since the store was opened.
    pub fn stats(&self) -> CommitStats {
        let c = &self.shared.counters;
        CommitStats {
            batches: c.batches.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            lagged_watchers: c.lagged_watchers.load(Ordering::Relaxed),
        }
    }

    /// How many watch streams are currently hooked to live events (catching-up streams are
    /// not counted). A dropped stream unhooks itself.
    pub fn live_watchers(&self) -> usize {
        self.shared.hub().watchers.len()
    }

    async fn submit(&self, op: WriteOp) -> StoreResult<Answer> {
        let stopped = || {
            StoreError::Backend(format!(
                "the embedded store's writer for {} has stopped; no write can be accepted",
                self.shared.path.display()
            ))
        };
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { op, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn txn(&self, op: WriteOp) -> StoreResult<TxnOutcome> {
        match self.submit(op).await? {
            Answer::Txn(outcome) => Ok(outcome),
            Answer::Compacted | Answer::Expired => Err(StoreError::Backend(
                "internal error: the writer answered a write with a compaction result".into(),
            )),
        }
    }

    async fn read<T, F>(&self, doing: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, Fail> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared).map_err(|fail| shared.fail(doing, fail)))
            .await
            .map_err(|e| StoreError::Backend(format!("embedded store: {doing} task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once it has finished its batch; joining
        // makes sure the redb file is closed when the store is gone, so it can be reopened.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Now, as Unix milliseconds (the unit of the `ttl` and `expiry` tables).
fn unix_millis() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// When a key written now with `ttl` expires, in Unix milliseconds.
fn deadline(ttl: std::time::Duration) -> i64 {
    unix_millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() {
        return Err(StoreError::Backend(
            "a key must not be empty (expected something like /registry/pods/default/web)".into(),
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn name(&self) -> &'static str {
        "embedded"
    }

    /// Read in the caller's task, not on a blocking thread as [`EmbeddedStore::range`] does:
    /// one key is a walk of a few B-tree pages, from redb's cache or the kernel's page cache,
    /// a few microseconds; handing it to the blocking pool and back (two thread wake-ups)
    /// cost more than the read, about 7 % of the API server's CPU under a bind load.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.shared
            .get(key)
            .map_err(|fail| self.shared.fail("reading a key", fail))
    }

    async fn range(&self, prefix: &str, revision: Option<Revision>, limit: Option<usize>) -> StoreResult<RangeResult> {
        let prefix = prefix.to_string();
        self.read("listing a prefix", move |s| s.range(&prefix, revision, limit))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<TxnOutcome> {
        check_key(key)?;
        self.txn(WriteOp::Create {
            key: key.to_string(),
            value,
            expires: None,
        })
        .await
    }

    async fn create_with_ttl(&self, key: &str, value: Vec<u8>, ttl: std::time::Duration) -> StoreResult<TxnOutcome> {
        check_key(key)?;
        self.txn(WriteOp::Create {
            key: key.to_string(),
            value,
            expires: Some(deadline(ttl)),
        })
        .await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> StoreResult<TxnOutcome> {
        check_key(key)?;
        self.txn(WriteOp::Update {
            key: key.to_string(),
            value,
            expected,
            expires: None,
        })
        .await
    }

    async fn update_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: std::time::Duration,
    ) -> StoreResult<TxnOutcome> {
        check_key(key)?;
        self.txn(WriteOp::Update {
            key: key.to_string(),
            value,
            expected,
            expires: Some(deadline(ttl)),
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<TxnOutcome> {
        check_key(key)?;
        self.txn(WriteOp::Delete {
            key: key.to_string(),
            expected,
        })
        .await
    }

    async fn watch_with_progress(
        &self,
        prefix: &str,
        from: Option<Revision>,
        progress: Option<std::time::Duration>,
    ) -> StoreResult<ProgressStream> {
        let mut state = WatchState {
            shared: Arc::downgrade(&self.shared),
            prefix: prefix.to_string(),
            next_rev: 0,
            buffer: VecDeque::new(),
            live: None,
            id: None,
            done: false,
            ticker: progress.map(|every| {
                let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            }),
            last_progress: 0,
        };
        match from.filter(|r| *r > 0) {
            None => {
                // "From now": hook on to live events right away, under the hub lock.
                let mut hub = self.shared.hub();
                state.next_rev = hub.published + 1;
                state.go_live(&mut hub);
            }
            Some(r) => {
                let (_current, compacted) = self
                    .read("reading the store revision", |s| s.current_revision())
                    .await?;
                if r < compacted {
                    return Err(StoreError::Compacted {
                        requested: r,
                        compacted,
                    });
                }
                // The stream first catches up from the log, then goes live.
                state.next_rev = r;
            }
        }
        Ok(Box::pin(futures::stream::unfold(state, |mut s| async move {
            let item = s.next_item().await?;
            Some((item, s))
        })))
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        match self.submit(WriteOp::Compact { revision }).await? {
            Answer::Compacted => Ok(()),
            Answer::Txn(_) | Answer::Expired => Err(StoreError::Backend(
                "internal error: the writer answered a compaction with a write result".into(),
            )),
        }
    }

    async fn current_revision(&self) -> StoreResult<Revision> {
        self.read("reading the store revision", |s| s.current_revision())
            .await
            .map(|(current, _)| current)
    }

    /// Ready when the file answers a read and the writer thread still takes writes.
    async fn ready(&self) -> StoreResult<()> {
        if self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(StoreError::Backend(
                "embedded store: the writer thread has stopped; writes cannot be made durable".into(),
            ));
        }
        self.read("checking that the store answers", |s| s.current_revision())
            .await
            .map(|_| ())
    }
}

/// One watch stream: first catches up from the log, then takes live events from the hub;
/// falls back to the log whenever it was unhooked for lagging.
struct WatchState {
    shared: Weak<Shared>,
    prefix: String,
    /// The next revision this stream has not yet buffered or delivered.
    next_rev: Revision,
    buffer: VecDeque<WatchMessage>,
    live: Option<mpsc::Receiver<Vec<WatchEvent>>>,
    id: Option<u64>,
    done: bool,
    /// When to report progress (only while live), if the caller asked for it.
    ticker: Option<tokio::time::Interval>,
    /// The last progress revision reported.
    last_progress: Revision,
}

impl WatchState {
    fn go_live(&mut self, hub: &mut Hub) {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let id = hub.next_id;
        hub.next_id += 1;
        hub.watchers.insert(
            id,
            LiveWatcher {
                prefix: self.prefix.clone(),
                from: self.next_rev,
                tx,
            },
        );
        self.live = Some(rx);
        self.id = Some(id);
    }

    /// Buffer live events, skipping what the catch-up already delivered.
    fn absorb_live(&mut self, events: Vec<WatchEvent>) {
        for event in events {
            if event.revision() >= self.next_rev {
                self.next_rev = event.revision() + 1;
                self.buffer.push_back(WatchMessage::Event(event));
            }
        }
    }

    /// Unhooked: we lagged, or the store is closing. The stream catches up from the log.
    fn unhooked(&mut self) {
        self.live = None;
        self.id = None;
    }

    /// etcd's progress notification: under the hub lock, every event up to the last
    /// published revision is either delivered or waiting in our channel. Take those into the
    /// buffer, then report that revision after them.
    fn report_progress(&mut self) {
        let Some(shared) = self.shared.upgrade() else { return };
        let hub = shared.hub();
        let published = hub.published;
        let mut pending = Vec::new();
        let mut closed = false;
        if let Some(live) = self.live.as_mut() {
            loop {
                match live.try_recv() {
                    Ok(events) => pending.push(events),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        drop(hub);
        for events in pending {
            self.absorb_live(events);
        }
        if closed {
            // Unhooked for lagging: no progress until the catch-up is done.
            self.unhooked();
        } else if published > self.last_progress {
            self.last_progress = published;
            self.buffer.push_back(WatchMessage::Progress(published));
        }
    }

    async fn next_item(&mut self) -> Option<StoreResult<WatchMessage>> {
        loop {
            if let Some(message) = self.buffer.pop_front() {
                return Some(Ok(message));
            }
            if self.done {
                return None;
            }
            if let Some(live) = self.live.as_mut() {
                let received = match self.ticker.as_mut() {
                    Some(ticker) => tokio::select! {
                        received = live.recv() => Some(received),
                        _ = ticker.tick() => None,
                    },
                    None => Some(live.recv().await),
                };
                match received {
                    Some(Some(events)) => self.absorb_live(events),
                    Some(None) => self.unhooked(),
                    None => self.report_progress(),
                }
                continue;
            }

            // Catching up from the log.
            let Some(shared) = self.shared.upgrade() else {
                self.done = true; // the store was closed: end the stream
                continue;
            };
            let prefix = self.prefix.clone();
            let from = self.next_rev;
            let reader = shared.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                reader
                    .read_log(&prefix, from, CATCH_UP_CHUNK)
                    .map_err(|fail| reader.fail("reading the change log for a watch", fail))
            })
            .await;
            let chunk = match chunk {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(StoreError::Backend(format!(
                        "embedded store: the watch catch-up task failed: {e}"
                    ))));
                }
            };
            self.buffer.extend(chunk.events.into_iter().map(WatchMessage::Event));
            if let Some(last) = chunk.last_scanned {
                self.next_rev = last + 1;
            }
            if chunk.scanned == CATCH_UP_CHUNK {
                continue; // there is more history to read
            }
            let mut hub = shared.hub();
            if hub.published < self.next_rev {
                // Everything committed so far has been read; new events come live.
                self.go_live(&mut hub);
            }
            // Otherwise more was published while we read: loop and read the log again.
        }
    }
}

impl Drop for WatchState {
    fn drop(&mut self) {
        if let (Some(id), Some(shared)) = (self.id.take(), self.shared.upgrade()) {
            shared.hub().watchers.remove(&id);
        }
    }
}
