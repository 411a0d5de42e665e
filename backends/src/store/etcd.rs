//! # The etcd store: kulisse on the same database a real cluster uses
//!
//! In a real Kubernetes cluster the API server (`kube-apiserver`) keeps every object in
//! [etcd](https://etcd.io), a replicated key-value store that speaks gRPC. This module is
//! kulisse's version of the API server's etcd3 storage layer
//! (`k8s.io/apiserver/pkg/storage/etcd3`): it implements [`Store`] by sending the very same
//! requests the API server sends, through the `etcd-client` crate.
//!
//! ## What goes over the wire
//! Only the etcd **v3** API is used (KV, Txn, Watch, Compact), so any etcd from 3.4 on works.
//!
//! | [`Store`] method     | etcd request                                                       |
//! |----------------------|--------------------------------------------------------------------|
//! | `get`, `range`       | `Range` (a prefix becomes the half-open key range `[prefix, end)`) |
//! | `create`             | `Txn`: if `create_revision(key) == 0` then `Put` else `Range`      |
//! | `update`             | `Txn`: if `mod_revision(key) == R` then `Put` else `Range`         |
//! | `delete`             | `Txn`: if `mod_revision(key) == R` then `DeleteRange` else `Range` |
//! | `watch`              | `Watch` with `start_revision` and `prev_kv` (and `progress_notify`) |
//! | `compact`            | `Compact`                                                          |
//! | `create_with_ttl`, `update_with_ttl` | `LeaseGrant` (shared, see below), then the `Txn` with the `Put` on that lease |
//! | `current_revision`   | a tiny `Range` (`count_only`); every answer carries the revision   |
//!
//! The `Txn` ("transaction") is how etcd does *optimistic concurrency*: the compare and the
//! write happen atomically inside etcd, so two API servers racing to update the same object
//! cannot both win. The `else` branch reads the key, so a loser learns what is there now
//! without a second round trip: that is exactly what the API server does to produce
//! `409 Conflict`.
//!
//! ## Keys that expire: leases, shared
//! etcd deletes a key when its *lease* runs out. One lease per Event would mean one
//! `LeaseGrant` per Event write and thousands of leases for etcd to track, so the API server
//! (`storage/etcd3/lease_manager.go`) reuses a lease for every key written within a short
//! window, and grants it that much longer: a key then lives between its TTL and its TTL plus
//! the window. The window is 5 % of the TTL, at most a minute. [`LeaseReuse`] does the same.
//!
//! ## Keys are kept exactly as given
//! kulisse writes `/registry/pods/default/web` as that very key, just like the API server
//! does (without `--etcd-prefix`). So you can look behind the curtain with the real tool:
//!
//! ```text
//! ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 get --prefix --keys-only /registry
//! ```
//!
//! ## Errors a learner will meet
//! - Reading or watching from a revision older than the last compaction: etcd answers
//!   `mvcc: required revision has been compacted` (or, for a watch, a response with
//!   `compact_revision` set). Both become [`StoreError::Compacted`]: the API server's
//!   `410 Gone`.
//! - Reading at a revision etcd has not reached: `mvcc: required revision is a future
//!   revision`, which becomes [`StoreError::FutureRevision`].
//! - Everything else (etcd down, timeouts) becomes [`StoreError::Backend`] with the endpoint
//!   named in the message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, LeaseClient,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions, WatchResponse,
};
use futures::StreamExt;
use kulisse_core::store::{
    EventType, KeyValue, ProgressStream, RangeResult, Revision, Store, StoreError, StoreResult, TxnOutcome, WatchEvent,
    WatchMessage,
};

/// How long [`EtcdStore::connect`] waits for etcd to answer its first request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request (not a watch) may take before it counts as failed. etcd answers a
/// healthy request in milliseconds; this only stops a dead connection from hanging forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a request that never reached etcd (connection refused) is sent again.
const UNSENT_RETRIES: u32 = 5;

/// Whether `e` means the request never left this process: the connection to the member the
/// client picked was refused.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = describe(e);
    text.contains("tcp connect error") || text.contains("Connection refused")
}

/// How long the readiness read ([`Store::ready`]) may take: upstream's
/// `--etcd-healthcheck-timeout` default.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The etcd error text for a read below the compaction point (`rpctypes.ErrGRPCCompacted`).
const ETCD_COMPACTED: &str = "required revision has been compacted";
/// The etcd error text for a read above the current revision (`rpctypes.ErrGRPCFutureRev`).
const ETCD_FUTURE_REV: &str = "required revision is a future revision";

/// A [`Store`] backed by a real etcd cluster (etcd v3 API).
pub struct EtcdStore {
    /// Kept alive on purpose: it owns the sending side of the channel's endpoint list, so
    /// the gRPC connection can keep reconnecting to the endpoints after a failure.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    /// The lease the last keys with a TTL were attached to ([`LeaseReuse`]).
    leases: Mutex<LeaseReuse>,
    /// The endpoints as given, for error messages ("could not reach etcd at ...").
    endpoints: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).finish()
    }
}

impl EtcdStore {
    /// Connect to etcd at `endpoints` (for example `["http://127.0.0.1:2379"]`) and check
    /// that it answers. The API server's equivalent is its `--etcd-servers` flag.
    ///
    /// The gRPC channel connects lazily, so this sends one small read and waits at most a
    /// few seconds for the answer; if etcd is not there the error says so, with the address.
    pub async fn connect(endpoints: &[String]) -> Result<Arc<Self>, StoreError> {
        let shown = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(StoreError::Backend(
                "no etcd endpoint given; expected at least one URL such as http://127.0.0.1:2379".to_string(),
            ));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let unreachable = |why: String| StoreError::Backend(format!("could not reach etcd at {shown}: {why}"));
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(endpoints, Some(options))).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(describe(&e))),
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        };
        let store = EtcdStore {
            kv: client.kv_client(),
            watch: client.watch_client(),
            lease: client.lease_client(),
            leases: Mutex::new(LeaseReuse::default()),
            endpoints: shown.clone(),
            _client: client,
        };
        // The first real request proves that etcd is there and speaks the v3 API.
        match tokio::time::timeout(CONNECT_TIMEOUT, store.raw_revision()).await {
            Ok(Ok(_)) => Ok(Arc::new(store)),
            Ok(Err(e)) => Err(unreachable(describe(&e))),
            Err(_) => Err(unreachable(format!(
                "no answer within {CONNECT_TIMEOUT:?} (is etcd running and listening there?)"
            ))),
        }
    }

    /// Run one etcd request with [`REQUEST_TIMEOUT`], turning etcd's errors into
    /// [`StoreError`]s. `requested` is the revision asked for, if any, for error messages.
    ///
    /// `make` makes the request; it is sent again (up to [`UNSENT_RETRIES`] times) when it
    /// never reached etcd because the member the client picked refused the connection: with
    /// several members one may be down, and the client's balancer drops it only after a
    /// failed request. A request that reached etcd is never repeated here.
    async fn call<T, F, Fut>(&self, what: &str, requested: Option<Revision>, mut make: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = async {
            let mut tries = 0;
            loop {
                match make().await {
                    Err(e) if tries < UNSENT_RETRIES && never_sent(&e) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempts).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_error(what, requested, e).await),
            Err(_) => Err(StoreError::Backend(format!(
                "etcd at {} did not answer a {what} request within {REQUEST_TIMEOUT:?}",
                self.endpoints
            ))),
        }
    }

    /// Translate an etcd error. Compaction and future-revision errors become the typed
    /// [`StoreError`] variants; for those we ask etcd for the numbers the message needs.
    async fn map_error(&self, what: &str, requested: Option<Revision>, e: etcd_client::Error) -> StoreError {
        let text = e.to_string();
        if let Some(requested) = requested {
            if text.contains(ETCD_COMPACTED) {
                let compacted = self.compacted_revision(requested).await;
                return StoreError::Compacted { requested, compacted };
            }
            if text.contains(ETCD_FUTURE_REV) {
                let current = match tokio::time::timeout(REQUEST_TIMEOUT, self.raw_revision()).await {
                    Ok(Ok(r)) => r,
                    _ => requested - 1,
                };
                return StoreError::FutureRevision { requested, current };
            }
        }
        StoreError::Backend(format!(
            "etcd at {} failed a {what} request: {}",
            self.endpoints,
            describe(&e)
        ))
    }

    /// The revision etcd last compacted at. etcd has no "what is the compaction point" call,
    /// but a watch that starts below it is answered with `compact_revision` set, so we ask
    /// that way. Only used on the error path. Falls back to `requested + 1` (the least that
    /// must be true) if etcd does not say.
    async fn compacted_revision(&self, requested: Revision) -> Revision {
        let fallback = requested.saturating_add(1);
        let mut watch = self.watch.clone();
        let ask = async move {
            let options = WatchOptions::new().with_start_revision(requested.max(1));
            let (mut watcher, mut stream) = watch.watch(vec![0u8], Some(options)).await.ok()?;
            let mut found = None;
            while let Ok(Some(resp)) = stream.message().await {
                if resp.compact_revision() != 0 {
                    found = Some(resp.compact_revision());
                    break;
                }
                if resp.canceled() {
                    break;
                }
            }
            let _ = watcher.cancel().await;
            found
        };
        // etcd checks unsynced watchers every 100 ms; two seconds are plenty.
        match tokio::time::timeout(Duration::from_secs(2), ask).await {
            Ok(Some(r)) => r,
            _ => fallback,
        }
    }

    /// The store's current revision, read from the header of a one-key `count_only` range.
    async fn header_revision(&self) -> StoreResult<Revision> {
        self.call("range", None, || self.raw_revision()).await
    }

    /// The request behind [`Self::header_revision`], without timeout or error mapping.
    /// The key `\0` is the smallest possible key; `count_only` makes etcd send no data.
    async fn raw_revision(&self) -> Result<Revision, etcd_client::Error> {
        let mut kv = self.kv.clone();
        let resp = kv.get(vec![0u8], Some(GetOptions::new().with_count_only())).await?;
        resp.header().map(|h| h.revision()).ok_or_else(|| {
            etcd_client::Error::InvalidArgs("etcd sent an answer without a response header (no revision)".to_string())
        })
    }

    fn revision_of(&self, rev: Option<Revision>) -> StoreResult<Revision> {
        rev.ok_or_else(|| {
            StoreError::Backend(format!(
                "etcd at {} sent an answer without a response header (no revision)",
                self.endpoints
            ))
        })
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
        convert_kv(kv).map_err(|e| StoreError::Backend(format!("etcd at {}: {e}", self.endpoints)))
    }

    /// Read what a failed transaction's `else` branch (a `Range` on the key) found.
    fn current_from_else(&self, resp: &TxnResponse) -> StoreResult<Option<KeyValue>> {
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                return match get.kvs().first() {
                    Some(kv) => Ok(Some(self.convert(kv)?)),
                    None => Ok(None),
                };
            }
        }
        Ok(None)
    }

    /// A lease that keeps a key alive for at least `ttl`: the last one granted if it lasts
    /// long enough, else a new one ([`LeaseReuse`]).
    async fn lease_for(&self, ttl: Duration) -> StoreResult<i64> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let now = Instant::now();
        if let Some(id) = self.leases().reusable(now, ttl_secs) {
            return Ok(id);
        }
        let granted = ttl_secs.saturating_add(LeaseReuse::window(ttl_secs));
        let resp = self
            .call("lease grant", None, || {
                let mut lease = self.lease.clone();
                async move { lease.grant(granted, None).await }
            })
            .await?;
        self.leases().remember(resp.id(), now, granted);
        Ok(resp.id())
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, LeaseReuse> {
        self.leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `create`, with the put attached to `lease` if given.
    async fn create_leased(&self, key: &str, value: Vec<u8>, lease: Option<i64>) -> StoreResult<TxnOutcome> {
        let put = lease.map(|id| PutOptions::new().with_lease(id));
        let (resp, rev) = self
            .conditional(
                key,
                vec![Compare::create_revision(key, CompareOp::Equal, 0)],
                TxnOp::put(key, value.clone(), put),
            )
            .await?;
        if !resp.succeeded() {
            return Ok(TxnOutcome::Conflict {
                current: self.current_from_else(&resp)?,
            });
        }
        let rev = self.revision_of(rev)?;
        Ok(TxnOutcome::Succeeded {
            kv: KeyValue {
                key: key.to_string(),
                value,
                create_revision: rev,
                mod_revision: rev,
            },
        })
    }

    /// `update`, with the put attached to `lease` if given (without one, a put detaches the
    /// key from any lease it had, as in etcd).
    async fn update_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: Option<i64>,
    ) -> StoreResult<TxnOutcome> {
        let mut put = PutOptions::new().with_prev_key();
        if let Some(id) = lease {
            put = put.with_lease(id);
        }
        // A missing key compares as mod_revision 0 in etcd, so also demand that the key exists:
        // an update must never create.
        let (resp, rev) = self
            .conditional(
                key,
                vec![
                    Compare::create_revision(key, CompareOp::Greater, 0),
                    Compare::mod_revision(key, CompareOp::Equal, expected),
                ],
                TxnOp::put(key, value.clone(), Some(put)),
            )
            .await?;
        if !resp.succeeded() {
            return Ok(TxnOutcome::Conflict {
                current: self.current_from_else(&resp)?,
            });
        }
        let rev = self.revision_of(rev)?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(put) => put.prev_key().map(|p| p.create_revision()),
                _ => None,
            })
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "etcd at {} did not return the previous value of {key} after an update",
                    self.endpoints
                ))
            })?;
        Ok(TxnOutcome::Succeeded {
            kv: KeyValue {
                key: key.to_string(),
                value,
                create_revision,
                mod_revision: rev,
            },
        })
    }

    /// Run a conditional write: `when` compares, `then` writes, `else` reads the key back.
    async fn conditional(
        &self,
        key: &str,
        when: Vec<Compare>,
        then: TxnOp,
    ) -> StoreResult<(TxnResponse, Option<Revision>)> {
        let txn = Txn::new()
            .when(when)
            .and_then(vec![then])
            .or_else(vec![TxnOp::get(key, None)]);
        let resp = self
            .call("txn", None, || {
                let (mut kv, txn) = (self.kv.clone(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        let rev = resp.header().map(|h| h.revision());
        Ok((resp, rev))
    }
}

/// The lease last granted for keys with a TTL, and until when it lives: the API server's
/// lease manager. A key with TTL `t` may reuse it when the lease outlives `t` from now, and
/// not by more than the reuse window (else keys would live far longer than asked).
#[derive(Debug, Default)]
struct LeaseReuse {
    last: Option<(i64, Instant)>,
}

impl LeaseReuse {
    /// The reuse window for a TTL: 5 % of it, at most 60 s (upstream's defaults).
    fn window(ttl_secs: i64) -> i64 {
        (ttl_secs / 20).min(60)
    }

    fn reusable(&self, now: Instant, ttl_secs: i64) -> Option<i64> {
        let (id, expires) = self.last?;
        let ttl = Duration::from_secs(ttl_secs.unsigned_abs());
        let window = Duration::from_secs(Self::window(ttl_secs).unsigned_abs());
        let outlives = now + ttl < expires;
        let not_too_long = now + ttl + window >= expires;
        (outlives && not_too_long).then_some(id)
    }

    fn remember(&mut self, id: i64, granted_at: Instant, granted_secs: i64) {
        self.last = Some((id, granted_at + Duration::from_secs(granted_secs.unsigned_abs())));
    }
}

/// A one-line description of an etcd client error for a human: the gRPC message and the
/// innermost cause (e.g. `tcp connect error: Connection refused (os error 111)`), instead of
/// the nested debug dump of transport errors.
fn describe(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut text = status.message().to_string();
    if text.is_empty() {
        text = status.code().description().to_string();
    }
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    if let Some(c) = innermost {
        text = format!("{text}: {c}");
    }
    text
}

/// Turn etcd's `KeyValue` into ours. Keys must be UTF-8 (kulisse only writes such keys);
/// a key written by someone else with raw bytes is reported, not guessed at.
fn convert_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, String> {
    let key = std::str::from_utf8(kv.key()).map_err(|_| {
        format!(
            "found a key that is not UTF-8 text ({:?}); kulisse keys look like /registry/pods/default/web",
            String::from_utf8_lossy(kv.key())
        )
    })?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The etcd key range `[start, end)` that holds exactly the keys beginning with `prefix`.
///
/// etcd has no "prefix" query; a prefix is a range whose end is the prefix with its last
/// byte increased by one (`/registry/pods/` → `/registry/pods0`, since `0` follows `/`).
/// Trailing `0xff` bytes cannot be increased and are dropped first. A prefix made only of
/// `0xff` bytes, or an empty prefix, has no such end: etcd's convention for "to the end of
/// the keyspace" is the single byte `\0`.
pub fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    prefix_range_bytes(prefix.as_bytes())
}

fn prefix_range_bytes(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = prefix.to_vec();
    if start.is_empty() {
        // An empty key is not allowed in a request; `\0` is the smallest key.
        return (vec![0], vec![0]);
    }
    let mut end = start.clone();
    while let Some(&last) = end.last() {
        if last < 0xff {
            if let Some(b) = end.last_mut() {
                *b = last + 1;
            }
            return (start, end);
        }
        end.pop();
    }
    (start, vec![0])
}

/// Turn one event of a watch response into a [`WatchEvent`].
///
/// etcd itself decides "put or delete" by whether the key still exists after the change:
/// a deleted key is sent as a bare key whose `create_revision` is 0 (and `version` 0) and
/// whose `mod_revision` is the delete's revision. We use the same rule instead of the raw
/// event type field, so no value we receive can make us fail.
fn convert_event(event: &etcd_client::Event) -> Result<Option<WatchEvent>, String> {
    let Some(kv) = event.kv() else {
        return Ok(None);
    };
    let kind = if kv.create_revision() == 0 {
        EventType::Delete
    } else {
        EventType::Put
    };
    let mut ours = convert_kv(kv)?;
    if kind == EventType::Delete {
        ours.value.clear();
    }
    let prev_kv = match event.prev_kv() {
        Some(prev) => Some(convert_kv(prev)?),
        None => None,
    };
    Ok(Some(WatchEvent {
        kind,
        kv: ours,
        prev_kv,
    }))
}

/// Whether a watch event created its key (etcd's `IsCreate`: a put whose key's creation
/// revision is the event's own); every other event had a previous version.
fn created_by(event: &WatchEvent) -> bool {
    event.kind == EventType::Put && event.kv.create_revision == event.kv.mod_revision
}

/// State of one open watch, owned by the stream handed to the caller. Dropping the stream
/// drops the gRPC request sender and response stream: the HTTP/2 stream is reset and etcd
/// removes the watcher on its side.
struct WatchState {
    _watcher: etcd_client::Watcher,
    stream: etcd_client::WatchStream,
    pending: VecDeque<WatchMessage>,
    /// The next revision this stream has not delivered yet (the start revision at first),
    /// so a compaction error names the revision the caller would have to resume from.
    next: Option<Revision>,
    endpoints: String,
    /// Set once etcd ended or canceled the watch; no more responses are read.
    done: bool,
    /// The error to yield after the pending events, once `done`.
    error: Option<StoreError>,
}

impl WatchState {
    /// The stream's next item: the pending events first, then the error that ended the watch
    /// (if any); `None` once etcd closed the stream. What `watch_with_progress` unfolds.
    async fn next_message(mut self) -> Option<(StoreResult<WatchMessage>, WatchState)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done {
                return self.error.take().map(|err| (Err(err), self));
            }
            match self.stream.next().await {
                Some(Ok(resp)) => {
                    if let Some(err) = self.absorb(resp) {
                        // Deliver the events that came before the error first.
                        self.done = true;
                        self.error = Some(err);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.error = Some(StoreError::Backend(format!(
                        "watch on etcd at {} broke: {}",
                        self.endpoints,
                        describe(&e)
                    )));
                }
                None => return None,
            }
        }
    }

    /// Handle one response; returns an error to yield (after which the stream ends).
    fn absorb(&mut self, resp: WatchResponse) -> Option<StoreError> {
        if resp.compact_revision() != 0 {
            let requested = self.next.unwrap_or(resp.compact_revision() - 1);
            return Some(StoreError::Compacted {
                requested,
                compacted: resp.compact_revision(),
            });
        }
        if resp.events().is_empty() && !resp.created() && !resp.canceled() {
            // A progress notification: everything up to the header's revision has been sent.
            if let Some(rev) = resp.header().map(|h| h.revision()).filter(|r| *r > 0) {
                self.pending.push_back(WatchMessage::Progress(rev));
            }
            return None;
        }
        for event in resp.events() {
            match convert_event(event) {
                Ok(Some(ev)) if ev.prev_kv.is_none() && !created_by(&ev) => {
                    // etcd reads an event's previous version at the revision before it; if
                    // that revision was compacted, etcd 3.4 sends the event without it (its
                    // issue "prevKV not being returned if the previous KV was compacted").
                    // A DELETED event without the object would have to be skipped: a gap.
                    // It is the compaction that made it unreadable, so say that (upstream's
                    // API server answers 500 "etcd event received with PrevKv=nil"; both make
                    // the client list again).
                    return Some(StoreError::Compacted {
                        requested: ev.revision() - 1,
                        compacted: ev.revision(),
                    });
                }
                Ok(Some(ev)) => {
                    self.next = Some(ev.revision() + 1);
                    self.pending.push_back(WatchMessage::Event(ev));
                }
                Ok(None) => {}
                Err(e) => {
                    return Some(StoreError::Backend(format!(
                        "etcd at {} sent a watch event kulisse cannot read: {e}",
                        self.endpoints
                    )));
                }
            }
        }
        if resp.canceled() {
            let reason = resp.cancel_reason();
            return Some(StoreError::Backend(format!(
                "etcd at {} canceled the watch{}",
                self.endpoints,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            )));
        }
        None
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let resp = self
            .call("range", None, || {
                let (mut kv, key) = (self.kv.clone(), key);
                async move { kv.get(key, None).await }
            })
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(self.convert(kv)?)),
            None => Ok(None),
        }
    }

    async fn range(&self, prefix: &str, revision: Option<Revision>, limit: Option<usize>) -> StoreResult<RangeResult> {
        let (start, end) = prefix_range(prefix);
        let mut options = GetOptions::new().with_range(end);
        // Revision 0 (or less) means "the newest", as it does in etcd.
        let revision = revision.filter(|r| *r > 0);
        if let Some(rev) = revision {
            options = options.with_revision(rev);
        }
        if let Some(n) = limit {
            // etcd, like us, reads a limit of 0 as "no limit".
            options = options.with_limit(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let resp = self
            .call("range", revision, || {
                let (mut kv, start, options) = (self.kv.clone(), start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await?;
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| self.convert(kv))
            .collect::<StoreResult<Vec<_>>>()?;
        let revision = match revision {
            // etcd's header always carries the *current* revision; a read at an older
            // revision reflects that older revision.
            Some(r) => r,
            None => self.revision_of(resp.header().map(|h| h.revision()))?,
        };
        Ok(RangeResult { kvs, revision })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<TxnOutcome> {
        self.create_leased(key, value, None).await
    }

    async fn create_with_ttl(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreResult<TxnOutcome> {
        let lease = self.lease_for(ttl).await?;
        self.create_leased(key, value, Some(lease)).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> StoreResult<TxnOutcome> {
        self.update_leased(key, value, expected, None).await
    }

    async fn update_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: Duration,
    ) -> StoreResult<TxnOutcome> {
        let lease = self.lease_for(ttl).await?;
        self.update_leased(key, value, expected, Some(lease)).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<TxnOutcome> {
        let mut when = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            when.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let (resp, rev) = self
            .conditional(
                key,
                when,
                TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key())),
            )
            .await?;
        if !resp.succeeded() {
            return Ok(TxnOutcome::Conflict {
                current: self.current_from_else(&resp)?,
            });
        }
        let rev = self.revision_of(rev)?;
        let prev = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(del) => del.prev_kvs().first().cloned(),
            _ => None,
        });
        let Some(prev) = prev else {
            return Err(StoreError::Backend(format!(
                "etcd at {} did not return the deleted value of {key}",
                self.endpoints
            )));
        };
        let mut kv = self.convert(&prev)?;
        kv.mod_revision = rev;
        Ok(TxnOutcome::Succeeded { kv })
    }

    async fn watch_with_progress(
        &self,
        prefix: &str,
        from: Option<Revision>,
        progress: Option<Duration>,
    ) -> StoreResult<ProgressStream> {
        let (start, end) = prefix_range(prefix);
        let mut options = WatchOptions::new().with_range(end).with_prev_key();
        if progress.is_some() {
            // etcd picks the interval itself (its `--experimental-watch-progress-notify-interval`).
            // `RequestProgress` would be on demand, but before etcd 3.4.24/3.5.8 its answer
            // could overtake pending events, so kulisse does not use it.
            options = options.with_progress_notify();
        }
        // Revision 0 (or less) means "from now", as it does in etcd.
        let from = from.filter(|r| *r > 0);
        if let Some(rev) = from {
            // Fail early, like a read would: a watch below the compaction point is answered
            // by etcd only after the watch is set up (up to 100 ms later), as a canceled
            // watch with `compact_revision` set. A one-key `count_only` read tells now.
            // It reads at the revision *before* `rev`, the state the caller has: etcd
            // accepts a watch from exactly the compaction point, but that compaction removed
            // the keys deleted at that revision, so their DELETE events never come (and the
            // events there lack their previous versions). Such a watch is refused as too
            // old; the caller lists again. Reading at a future revision fails too, but
            // watching from one is fine: etcd simply waits for it.
            let seen = (rev - 1).max(1);
            let check = || {
                let options = GetOptions::new().with_revision(seen).with_count_only();
                let (mut kv, start) = (self.kv.clone(), start.clone());
                async move { kv.get(start, Some(options)).await }
            };
            match self.call("range", Some(seen), check).await {
                Ok(_) | Err(StoreError::FutureRevision { .. }) => {}
                Err(StoreError::Compacted { compacted, .. }) => {
                    return Err(StoreError::Compacted {
                        requested: rev,
                        compacted: compacted.max(rev),
                    });
                }
                Err(e) => return Err(e),
            }
            options = options.with_start_revision(rev);
        }
        let mut client = self.watch.clone();
        let (watcher, stream) = match tokio::time::timeout(REQUEST_TIMEOUT, client.watch(start, Some(options))).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(self.map_error("watch", from, e).await),
            Err(_) => {
                return Err(StoreError::Backend(format!(
                    "etcd at {} did not accept a watch within {REQUEST_TIMEOUT:?}",
                    self.endpoints
                )));
            }
        };
        let state = WatchState {
            _watcher: watcher,
            stream,
            pending: VecDeque::new(),
            next: from,
            endpoints: self.endpoints.clone(),
            done: false,
            error: None,
        };
        let events = futures::stream::unfold(state, WatchState::next_message);
        Ok(Box::pin(events))
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let options = CompactionOptions::new().with_physical();
        match self
            .call("compact", Some(revision), || {
                let (mut kv, options) = (self.kv.clone(), options.clone());
                async move { kv.compact(revision, Some(options)).await }
            })
            .await
        {
            Ok(_) => Ok(()),
            // Compacting at or below an earlier compaction point: that history is gone
            // already, which is what was asked for. Kubernetes' compactor ignores this too.
            Err(StoreError::Compacted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn current_revision(&self) -> StoreResult<Revision> {
        self.header_revision().await
    }

    /// One `count_only` read of the smallest key, given [`READY_TIMEOUT`] rather than the
    /// patient [`REQUEST_TIMEOUT`]: a readiness probe must answer quickly, and an etcd that
    /// cannot answer that read in time is not ready.
    async fn ready(&self) -> StoreResult<()> {
        match tokio::time::timeout(READY_TIMEOUT, self.raw_revision()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Backend(format!(
                "etcd at {} is not ready: {}",
                self.endpoints,
                describe(&e)
            ))),
            Err(_) => Err(StoreError::Backend(format!(
                "etcd at {} did not answer within {READY_TIMEOUT:?}",
                self.endpoints
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LeaseReuse, prefix_range, prefix_range_bytes};
    use std::time::{Duration, Instant};

    #[test]
    fn a_lease_is_reused_within_its_window_only() {
        let mut leases = LeaseReuse::default();
        let t0 = Instant::now();
        // An hour's TTL: a window of 60 s, so the lease is granted for 3,660 s.
        leases.remember(7, t0, 3600 + LeaseReuse::window(3600));
        assert_eq!(leases.reusable(t0 + Duration::from_secs(30), 3600), Some(7));
        // 61 s later the lease would end before the new key's hour is up.
        assert_eq!(leases.reusable(t0 + Duration::from_secs(61), 3600), None);
        // A key with a much shorter TTL would live far too long on it.
        assert_eq!(leases.reusable(t0, 60), None);
        assert_eq!(LeaseReuse::window(10), 0);
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(
            prefix_range("/registry/pods/"),
            (b"/registry/pods/".to_vec(), b"/registry/pods0".to_vec())
        );
        assert_eq!(prefix_range("a"), (b"a".to_vec(), b"b".to_vec()));
    }

    #[test]
    fn empty_prefix_means_every_key() {
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
    }

    #[test]
    fn trailing_max_bytes_are_dropped() {
        // A Rust `str` never holds a 0xff byte, but etcd keys are bytes: the rule is etcd's.
        assert_eq!(
            prefix_range_bytes(b"ab\xff\xff"),
            (b"ab\xff\xff".to_vec(), b"ac".to_vec())
        );
        assert_eq!(prefix_range_bytes(b"\xff"), (b"\xff".to_vec(), vec![0]));
    }
}
