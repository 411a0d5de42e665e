//! # The store conformance suite: what "behaves like etcd" means, as tests
//!
//! The API server (kube-apiserver) relies on a handful of guarantees from etcd: conditional
//! writes with optimistic concurrency (the source of `409 Conflict`), one global revision
//! that every change bumps (the source of `resourceVersion`), ordered gap-free watches that
//! can resume from any revision (the source of `?watch=true&resourceVersion=N`), reads at an
//! older revision, and compaction (the source of `410 Gone`).
//!
//! Every `pub async fn` here checks one of those guarantees against a [`Store`]. Each takes
//! a **fresh, empty** store, and panics with a message that says what was expected. The
//! same cases run against kulisse's embedded redb store (`tests/tests/store_embedded.rs`)
//! and against a real etcd (`tests/tests/store_etcd.rs`), so both implementations are held
//! to one contract.
//!
//! To run them all in a test file, give [`store_conformance_tests!`](crate::store_conformance_tests)
//! an async function that makes a fresh store:
//!
//! ```text
//! async fn fresh() -> Option<(Arc<dyn Store>, tempfile::TempDir)> { ... } // None = skip
//! kulisse_tests::store_conformance_tests!(fresh);
//! ```
//!
//! The cases never assume absolute revision numbers (a fresh etcd starts at 1, but nothing
//! here depends on it); they compare revisions with each other. Waiting for a watch event
//! is guarded by a generous timeout only so that a broken store fails instead of hanging.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kulisse_core::store::{
    EventType, KeyValue, Revision, Store, StoreError, TxnOutcome, WatchEvent, WatchMessage, WatchStream,
};

/// Lists every conformance case once. Used to build [`ALL`] and the test macro, so both
/// stay in sync.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($callback:ident $($args:tt)*) => {
        $crate::$callback! { $($args)* ;
            get_missing_and_present,
            create_if_absent,
            update_with_expected_revision,
            delete_conditional_and_unconditional,
            revisions_strictly_increase,
            range_by_prefix,
            range_at_older_revision,
            range_at_a_revision_is_a_stable_snapshot,
            watch_replays_history_then_streams_live,
            watch_from_now_sees_only_new_changes,
            watch_prefix_isolation,
            watch_resume_without_gaps_or_duplicates,
            watch_slow_reader_misses_nothing,
            watch_progress_covers_quiet_prefixes,
            compact_then_old_revisions_are_gone,
            compactors_agree_and_keep_one_interval,
            keys_with_a_ttl_expire_as_deletes,
            concurrent_conflicting_updates,
            concurrent_creates_of_one_key,
            concurrent_writers_distinct_keys,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_all {
    (; $($case:ident),* $(,)?) => {
        /// The names of all conformance cases, in the order they are listed.
        pub const ALL: &[&str] = &[$(stringify!($case)),*];
    };
}

__store_conformance_cases!(__store_conformance_all);

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests_for {
    ($fresh:path ; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((store, _guard)) = $fresh().await else {
                    return;
                };
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

/// Generates one `#[tokio::test]` per conformance case. `$fresh` is a path to an
/// `async fn() -> Option<(Arc<dyn Store>, G)>`: it returns a fresh empty store plus a guard
/// `G` kept alive for the test (a temp dir, a running etcd), or `None` to skip (after it has
/// printed why, e.g. a missing etcd binary outside CI).
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:path) => {
        $crate::__store_conformance_cases!(__store_conformance_tests_for $fresh);
    };
}

/// How long to wait for one watch event before declaring the store broken.
const EVENT_WAIT: Duration = Duration::from_secs(20);

fn outcome_kv(outcome: TxnOutcome, what: &str) -> KeyValue {
    match outcome {
        TxnOutcome::Succeeded { kv } => kv,
        TxnOutcome::Conflict { current } => {
            panic!("{what}: expected the write to succeed, got Conflict (current: {current:?})")
        }
    }
}

fn conflict_current(outcome: TxnOutcome, what: &str) -> Option<KeyValue> {
    match outcome {
        TxnOutcome::Conflict { current } => current,
        TxnOutcome::Succeeded { kv } => {
            panic!("{what}: expected Conflict, but the write succeeded: {kv:?}")
        }
    }
}

async fn create_ok(store: &Arc<dyn Store>, key: &str, value: &str) -> KeyValue {
    let outcome = store
        .create(key, value.as_bytes().to_vec())
        .await
        .unwrap_or_else(|e| panic!("create {key}: store error: {e}"));
    outcome_kv(outcome, &format!("create {key}"))
}

async fn update_ok(store: &Arc<dyn Store>, key: &str, value: &str, expected: Revision) -> KeyValue {
    let outcome = store
        .update(key, value.as_bytes().to_vec(), expected)
        .await
        .unwrap_or_else(|e| panic!("update {key}: store error: {e}"));
    outcome_kv(outcome, &format!("update {key} from mod_revision {expected}"))
}

async fn delete_ok(store: &Arc<dyn Store>, key: &str, expected: Option<Revision>) -> KeyValue {
    let outcome = store
        .delete(key, expected)
        .await
        .unwrap_or_else(|e| panic!("delete {key}: store error: {e}"));
    outcome_kv(outcome, &format!("delete {key} (expected {expected:?})"))
}

async fn current(store: &Arc<dyn Store>) -> Revision {
    store
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("current_revision: store error: {e}"))
}

async fn watch(store: &Arc<dyn Store>, prefix: &str, from: Option<Revision>) -> WatchStream {
    store
        .watch(prefix, from)
        .await
        .unwrap_or_else(|e| panic!("watch {prefix} from {from:?}: store error: {e}"))
}

async fn next_event(stream: &mut WatchStream, waiting_for: &str) -> WatchEvent {
    match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
        Err(_) => panic!(
            "no watch event within {EVENT_WAIT:?} while waiting for {waiting_for}; the store \
             seems to have lost it"
        ),
        Ok(None) => panic!("the watch stream ended while waiting for {waiting_for}"),
        Ok(Some(Err(e))) => panic!("the watch stream failed while waiting for {waiting_for}: {e}"),
        Ok(Some(Ok(event))) => event,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// `get` of a missing key is `None`; of a present key it is the key with its value and
/// revisions.
pub async fn get_missing_and_present(store: Arc<dyn Store>) {
    let key = "/registry/pods/default/web";
    let missing = store.get(key).await.expect("get of a missing key must not fail");
    assert_eq!(missing, None, "get of a key never written must be None");

    let created = create_ok(&store, key, "v1").await;
    let got = store
        .get(key)
        .await
        .expect("get of a present key must not fail")
        .expect("get right after create must find the key");
    assert_eq!(got.key, key, "get returned another key");
    assert_eq!(text(&got.value), "v1", "get returned another value");
    assert_eq!(got, created, "get must return exactly what create reported");
    assert_eq!(
        got.create_revision, got.mod_revision,
        "a key that was only created has create_revision == mod_revision"
    );
}

/// `create` succeeds once; a second create of the same key conflicts and reports the
/// current value (how the API server answers `409 AlreadyExists`).
pub async fn create_if_absent(store: Arc<dyn Store>) {
    let key = "/registry/configmaps/default/settings";
    let before = current(&store).await;
    let first = create_ok(&store, key, "first").await;
    assert_eq!(
        first.mod_revision,
        before + 1,
        "a successful create must get the next revision (store was at {before})"
    );
    assert_eq!(
        first.create_revision, first.mod_revision,
        "create: create_revision == mod_revision"
    );
    assert_eq!(text(&first.value), "first");

    let second = store
        .create(key, b"second".to_vec())
        .await
        .expect("second create must not be a store error");
    let current_kv = conflict_current(second, "second create of an existing key")
        .expect("a create conflict must report the key that already exists");
    assert_eq!(current_kv, first, "the conflict must carry the stored key, unchanged");

    let got = store.get(key).await.expect("get").expect("key must still exist");
    assert_eq!(
        text(&got.value),
        "first",
        "a failed create must not overwrite the value"
    );
    assert_eq!(
        current(&store).await,
        before + 1,
        "a failed create must not bump the revision"
    );
}

/// `update` with the right `mod_revision` succeeds; with a stale one it conflicts and
/// reports the current key (the API server's `409 Conflict` on a stale resourceVersion);
/// an update of a missing key conflicts with `current: None`.
pub async fn update_with_expected_revision(store: Arc<dyn Store>) {
    let key = "/registry/deployments/default/web";
    let v1 = create_ok(&store, key, "v1").await;
    let v2 = update_ok(&store, key, "v2", v1.mod_revision).await;
    assert!(
        v2.mod_revision > v1.mod_revision,
        "update must give a newer mod_revision ({} after {})",
        v2.mod_revision,
        v1.mod_revision
    );
    assert_eq!(
        v2.create_revision, v1.create_revision,
        "update must keep create_revision"
    );
    assert_eq!(text(&v2.value), "v2");

    let stale = store
        .update(key, b"v3-stale".to_vec(), v1.mod_revision)
        .await
        .expect("a stale update must not be a store error");
    let now = conflict_current(stale, "update with the stale mod_revision")
        .expect("a stale-update conflict must report the current key");
    assert_eq!(now, v2, "the conflict must carry the current key (v2)");
    let got = store.get(key).await.expect("get").expect("key must exist");
    assert_eq!(got, v2, "a failed update must not change the key");

    let missing = store
        .update("/registry/deployments/default/nope", b"x".to_vec(), v2.mod_revision)
        .await
        .expect("update of a missing key must not be a store error");
    assert_eq!(
        conflict_current(missing, "update of a missing key"),
        None,
        "an update of a missing key conflicts with current: None"
    );
}

/// `delete` with a stale revision conflicts; with the right one, or unconditionally, it
/// succeeds and reports the old value with the delete's revision; deleting a missing key
/// conflicts with `current: None`.
pub async fn delete_conditional_and_unconditional(store: Arc<dyn Store>) {
    let key = "/registry/secrets/default/token";
    let v1 = create_ok(&store, key, "v1").await;
    let v2 = update_ok(&store, key, "v2", v1.mod_revision).await;

    let stale = store
        .delete(key, Some(v1.mod_revision))
        .await
        .expect("a stale delete must not be a store error");
    let now = conflict_current(stale, "delete with a stale mod_revision")
        .expect("a stale-delete conflict must report the current key");
    assert_eq!(now, v2, "the conflict must carry the current key");

    let before = current(&store).await;
    let gone = delete_ok(&store, key, Some(v2.mod_revision)).await;
    assert_eq!(gone.key, key);
    assert_eq!(text(&gone.value), "v2", "a delete reports the value the key had");
    assert_eq!(
        gone.mod_revision,
        before + 1,
        "a delete reports the key with mod_revision = the delete's revision"
    );
    assert_eq!(
        store.get(key).await.expect("get"),
        None,
        "the key must be gone after delete"
    );

    let again = store
        .delete(key, None)
        .await
        .expect("delete of a missing key must not be a store error");
    assert_eq!(
        conflict_current(again, "unconditional delete of a missing key"),
        None,
        "deleting a missing key conflicts with current: None"
    );
    assert_eq!(
        current(&store).await,
        before + 1,
        "a failed delete must not bump the revision"
    );

    let other = "/registry/secrets/default/other";
    create_ok(&store, other, "x").await;
    let gone = delete_ok(&store, other, None).await;
    assert_eq!(text(&gone.value), "x", "unconditional delete reports the old value");
    assert_eq!(store.get(other).await.expect("get"), None);
}

/// Every successful change bumps the one store revision by exactly one; conflicts do not.
/// A key recreated after a delete gets a new create_revision.
pub async fn revisions_strictly_increase(store: Arc<dyn Store>) {
    let key = "/registry/pods/default/counter";
    let mut last = current(&store).await;

    let a = create_ok(&store, key, "0").await;
    assert_eq!(a.mod_revision, last + 1, "create gets the next revision");
    assert_eq!(
        current(&store).await,
        a.mod_revision,
        "current_revision follows the create"
    );
    last = a.mod_revision;

    let mut prev = a.clone();
    for i in 1..=5 {
        let next = update_ok(&store, key, &i.to_string(), prev.mod_revision).await;
        assert_eq!(next.mod_revision, last + 1, "update #{i} gets the next revision");
        assert_eq!(next.create_revision, a.create_revision, "updates keep create_revision");
        last = next.mod_revision;
        prev = next;
    }
    let _ = store
        .create(key, b"dup".to_vec())
        .await
        .expect("create conflict must not be a store error");
    assert_eq!(current(&store).await, last, "a conflict must not bump the revision");

    let gone = delete_ok(&store, key, Some(prev.mod_revision)).await;
    assert_eq!(gone.mod_revision, last + 1, "delete gets the next revision");
    last = gone.mod_revision;

    let again = create_ok(&store, key, "again").await;
    assert_eq!(again.mod_revision, last + 1);
    assert_eq!(
        again.create_revision, again.mod_revision,
        "a key recreated after delete starts a new life: create_revision is the new create's"
    );
    assert!(again.create_revision > a.create_revision);
}

/// `range` over a prefix returns exactly the keys under it, in key order; prefixes end
/// with '/', so `/registry/pods/default/` does not match `/registry/pods/default2/`;
/// `limit` cuts the answer; `revision` is the store's revision.
pub async fn range_by_prefix(store: Arc<dyn Store>) {
    let wanted = [
        "/registry/pods/default/c",
        "/registry/pods/default/a",
        "/registry/pods/default/b",
    ];
    let others = [
        "/registry/pods/default2/a",
        "/registry/pods/kube-system/a",
        "/registry/pods/defaul",
        "/registry/services/default/a",
        "/registry/pods/default",
    ];
    for k in wanted.iter().chain(others.iter()) {
        create_ok(&store, k, k).await;
    }
    let now = current(&store).await;

    let all = store
        .range("/registry/pods/default/", None, None)
        .await
        .expect("range must not fail");
    assert_eq!(
        keys(&all.kvs),
        vec![
            "/registry/pods/default/a",
            "/registry/pods/default/b",
            "/registry/pods/default/c"
        ],
        "range must return exactly the keys under the prefix, in key order"
    );
    for kv in &all.kvs {
        assert_eq!(text(&kv.value), kv.key, "range returned a wrong value for {}", kv.key);
    }
    assert_eq!(
        all.revision, now,
        "range at the newest state reports the current revision"
    );

    let limited = store
        .range("/registry/pods/default/", None, Some(2))
        .await
        .expect("range with limit must not fail");
    assert_eq!(
        keys(&limited.kvs),
        vec!["/registry/pods/default/a", "/registry/pods/default/b"],
        "limit 2 returns the first two keys in order"
    );
    let unlimited = store
        .range("/registry/pods/default/", None, Some(0))
        .await
        .expect("range with limit 0 must not fail");
    assert_eq!(unlimited.kvs.len(), 3, "limit 0 means no limit");

    let pods = store.range("/registry/pods/", None, None).await.expect("range");
    assert_eq!(
        keys(&pods.kvs),
        vec![
            "/registry/pods/defaul",
            "/registry/pods/default",
            "/registry/pods/default/a",
            "/registry/pods/default/b",
            "/registry/pods/default/c",
            "/registry/pods/default2/a",
            "/registry/pods/kube-system/a",
        ],
        "a range over all namespaces returns every pod key in key order"
    );

    let none = store
        .range("/registry/nodes/", None, None)
        .await
        .expect("range of an empty prefix must not fail");
    assert!(
        none.kvs.is_empty(),
        "nothing was written under /registry/nodes/: {:?}",
        none.kvs
    );
    assert_eq!(none.revision, now, "an empty range still reports the revision");
}

/// `range` at an older revision shows the state as it was then (a list at a
/// resourceVersion); a revision in the future is an error.
pub async fn range_at_older_revision(store: Arc<dyn Store>) {
    let p = "/registry/pods/ns/";
    let a1 = create_ok(&store, "/registry/pods/ns/a", "a1").await;
    let b1 = create_ok(&store, "/registry/pods/ns/b", "b1").await;
    let then = current(&store).await;

    let a2 = update_ok(&store, "/registry/pods/ns/a", "a2", a1.mod_revision).await;
    delete_ok(&store, "/registry/pods/ns/b", None).await;
    create_ok(&store, "/registry/pods/ns/c", "c1").await;
    create_ok(&store, "/registry/pods/other/x", "x").await;
    let now = current(&store).await;

    let old = store
        .range(p, Some(then), None)
        .await
        .expect("range at an older, uncompacted revision must not fail");
    assert_eq!(
        old.kvs,
        vec![a1.clone(), b1.clone()],
        "range at revision {then} must show a=a1 and b=b1 and no c"
    );
    assert_eq!(old.revision, then, "a range at revision R reports R");

    let middle = store
        .range(p, Some(a2.mod_revision), None)
        .await
        .expect("range at a middle revision");
    assert_eq!(
        middle.kvs,
        vec![a2.clone(), b1.clone()],
        "range at revision {} must show a=a2 and b still present",
        a2.mod_revision
    );

    let first_only = store
        .range(p, Some(a1.mod_revision), None)
        .await
        .expect("range at the first revision");
    assert_eq!(first_only.kvs, vec![a1.clone()], "at a's create only a existed");

    let limited = store
        .range(p, Some(then), Some(1))
        .await
        .expect("range at an old revision with a limit");
    assert_eq!(limited.kvs, vec![a1], "limit applies to old revisions too");

    let latest = store
        .range(p, Some(now), None)
        .await
        .expect("range at the current revision");
    assert_eq!(keys(&latest.kvs), vec!["/registry/pods/ns/a", "/registry/pods/ns/c"]);

    match store.range(p, Some(now + 1000), None).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!(requested, now + 1000);
            assert_eq!(current, now, "FutureRevision must report the store's revision");
        }
        other => panic!("range at a future revision must fail with FutureRevision, got {other:?}"),
    }
}

/// A paginated list reads one snapshot: every page is a range at the first page's revision.
/// Writes made between the pages (a new key sorting in the middle, a delete, an update) do
/// not show, and once that revision is compacted the snapshot is gone (`Compacted`, the API
/// server's `410 Expired` for a stale continue token).
pub async fn range_at_a_revision_is_a_stable_snapshot(store: Arc<dyn Store>) {
    let p = "/registry/pods/snap/";
    let mut before = Vec::new();
    for name in ["a", "b", "c", "d"] {
        before.push(create_ok(&store, &format!("{p}{name}"), name).await);
    }
    let first = store.range(p, None, Some(2)).await.expect("first page");
    let at = first.revision;
    assert_eq!(first.kvs, before[..2].to_vec(), "the first page holds a and b");

    update_ok(&store, &format!("{p}a"), "a2", before[0].mod_revision).await;
    create_ok(&store, &format!("{p}b2"), "new").await;
    delete_ok(&store, &format!("{p}c"), None).await;

    let whole = store
        .range(p, Some(at), None)
        .await
        .expect("range at the first page's revision");
    assert_eq!(whole.kvs, before, "a range at revision {at} must not see later writes");
    assert_eq!(whole.revision, at);
    let now = store.range(p, None, None).await.expect("range now");
    assert_eq!(
        keys(&now.kvs),
        vec![
            "/registry/pods/snap/a",
            "/registry/pods/snap/b",
            "/registry/pods/snap/b2",
            "/registry/pods/snap/d"
        ]
    );

    let latest = current(&store).await;
    store.compact(latest).await.expect("compact at the current revision");
    match store.range(p, Some(at), None).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, at),
        other => panic!("a range at a compacted revision must fail with Compacted, got {other:?}"),
    }
}

/// A watch with progress notifications learns that the store moved on even when nothing
/// under its prefix changes: a `Progress(R)` with R at the newest revision arrives, after
/// every event at or below R, and no event at or below R ever follows it.
pub async fn watch_progress_covers_quiet_prefixes(store: Arc<dyn Store>) {
    let p = "/registry/pods/quiet/";
    let mut stream = store
        .watch_with_progress(p, None, Some(Duration::from_millis(50)))
        .await
        .unwrap_or_else(|e| panic!("watch_with_progress on {p}: {e}"));
    let mine = create_ok(&store, &format!("{p}a"), "a").await;
    for i in 0..3 {
        create_ok(&store, &format!("/registry/configmaps/elsewhere/c{i}"), "x").await;
    }
    let target = current(&store).await;
    let mut events = Vec::new();
    let mut progress: Revision = 0;
    while progress < target {
        let message = match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("waiting for progress up to revision {target} (at {progress}): got {other:?}"),
        };
        match message {
            WatchMessage::Event(e) => {
                assert!(
                    e.revision() > progress,
                    "event at revision {} came after progress {progress}",
                    e.revision()
                );
                events.push(e);
            }
            WatchMessage::Progress(r) => {
                assert!(r >= progress, "progress went back from {progress} to {r}");
                progress = r;
            }
        }
    }
    assert_eq!(events.len(), 1, "only the key under {p} is an event: {events:?}");
    assert_eq!(events[0].kv, mine);
    let later = create_ok(&store, &format!("{p}b"), "b").await;
    loop {
        match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
            Ok(Some(Ok(WatchMessage::Event(e)))) => {
                assert_eq!(e.kv, later, "the next event is the later create");
                break;
            }
            Ok(Some(Ok(WatchMessage::Progress(r)))) => {
                assert!(
                    r >= progress && r < later.mod_revision,
                    "progress {r} before the later create"
                );
            }
            other => panic!("waiting for the later create: got {other:?}"),
        }
    }
}

/// A watch from an old revision replays every change under the prefix in order (with
/// prev_kv), then streams new changes as they commit.
pub async fn watch_replays_history_then_streams_live(store: Arc<dyn Store>) {
    let p = "/registry/pods/default/";
    let k = "/registry/pods/default/web";
    let start = current(&store).await + 1;
    let c = create_ok(&store, k, "v1").await;
    create_ok(&store, "/registry/services/default/web", "svc").await;
    let u = update_ok(&store, k, "v2", c.mod_revision).await;
    let d = delete_ok(&store, k, Some(u.mod_revision)).await;

    let mut stream = watch(&store, p, Some(start)).await;

    let e1 = next_event(&mut stream, "the replayed create").await;
    assert_eq!(e1.kind, EventType::Put, "first event is the create");
    assert_eq!(e1.kv, c, "the replayed create carries the created key");
    assert_eq!(e1.prev_kv, None, "a create has no prev_kv");
    assert!(e1.is_create());

    let e2 = next_event(&mut stream, "the replayed update").await;
    assert_eq!(
        e2.kind,
        EventType::Put,
        "second event is the update (the service is filtered)"
    );
    assert_eq!(e2.kv, u, "the replayed update carries the new key");
    assert_eq!(e2.prev_kv, Some(c.clone()), "an update's prev_kv is the key before it");
    assert!(!e2.is_create());

    let e3 = next_event(&mut stream, "the replayed delete").await;
    assert_eq!(e3.kind, EventType::Delete);
    assert_eq!(e3.kv.key, k);
    assert_eq!(
        e3.revision(),
        d.mod_revision,
        "a delete event has the delete's revision"
    );
    assert!(e3.kv.value.is_empty(), "a delete event carries an empty value");
    assert_eq!(e3.prev_kv, Some(u.clone()), "a delete's prev_kv is the deleted key");

    // Now live.
    let live1 = create_ok(&store, "/registry/pods/default/live", "l1").await;
    let e4 = next_event(&mut stream, "a live create").await;
    assert_eq!(e4.kind, EventType::Put);
    assert_eq!(e4.kv, live1, "the live create carries the created key");
    assert_eq!(e4.prev_kv, None);

    let live2 = update_ok(&store, "/registry/pods/default/live", "l2", live1.mod_revision).await;
    let e5 = next_event(&mut stream, "a live update").await;
    assert_eq!(e5.kv, live2);
    assert_eq!(e5.prev_kv, Some(live1.clone()), "live updates carry prev_kv too");

    let gone = delete_ok(&store, "/registry/pods/default/live", None).await;
    let e6 = next_event(&mut stream, "a live delete").await;
    assert_eq!(e6.kind, EventType::Delete);
    assert_eq!(e6.revision(), gone.mod_revision);
    assert_eq!(e6.prev_kv, Some(live2));

    let revs = [
        e1.revision(),
        e2.revision(),
        e3.revision(),
        e4.revision(),
        e5.revision(),
        e6.revision(),
    ];
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "watch events must come in increasing revision order: {revs:?}"
    );
}

/// A watch "from now" (no revision) delivers only changes made after it started.
pub async fn watch_from_now_sees_only_new_changes(store: Arc<dyn Store>) {
    let p = "/registry/nodes/";
    let old = create_ok(&store, "/registry/nodes/old", "old").await;
    let mut stream = watch(&store, p, None).await;
    update_ok(&store, "/registry/nodes/old", "changed", old.mod_revision).await;
    let new = create_ok(&store, "/registry/nodes/new", "new").await;

    let e1 = next_event(&mut stream, "the update made after the watch started").await;
    assert_eq!(
        e1.kv.key, "/registry/nodes/old",
        "the first event must be the later update, not the old create"
    );
    assert_eq!(text(&e1.kv.value), "changed");
    assert_eq!(e1.prev_kv, Some(old), "prev_kv of the update is the old node");
    let e2 = next_event(&mut stream, "the create made after the watch started").await;
    assert_eq!(e2.kv, new);
}

/// A watch on `/registry/pods/default/` must not see `/registry/pods/default2/...` or keys
/// of other resources.
pub async fn watch_prefix_isolation(store: Arc<dyn Store>) {
    let mut stream = watch(&store, "/registry/pods/default/", None).await;
    create_ok(&store, "/registry/pods/default2/a", "no").await;
    create_ok(&store, "/registry/pods/default", "no").await;
    create_ok(&store, "/registry/services/default/a", "no").await;
    let mine = create_ok(&store, "/registry/pods/default/a", "yes").await;
    let e = next_event(&mut stream, "the create under the watched prefix").await;
    assert_eq!(
        e.kv, mine,
        "the first event must be the key under /registry/pods/default/; other prefixes leaked in"
    );
}

/// Stop a watch, keep writing, resume from last seen + 1: the two streams together deliver
/// every change exactly once, in order (how informers resume after a disconnect).
pub async fn watch_resume_without_gaps_or_duplicates(store: Arc<dyn Store>) {
    let p = "/registry/configmaps/ns/";
    let start = current(&store).await + 1;
    let mut written: Vec<Revision> = Vec::new();
    for i in 0..10 {
        let kv = create_ok(&store, &format!("{p}cm-{i:02}"), "x").await;
        written.push(kv.mod_revision);
    }
    let mut seen: Vec<Revision> = Vec::new();
    {
        let mut stream = watch(&store, p, Some(start)).await;
        for i in 0..6 {
            let e = next_event(&mut stream, &format!("event {i} of the first watch")).await;
            seen.push(e.revision());
        }
        // The stream is dropped here, mid-history.
    }
    for i in 10..20 {
        let kv = create_ok(&store, &format!("{p}cm-{i:02}"), "x").await;
        written.push(kv.mod_revision);
    }
    let resume_from = seen.last().copied().unwrap_or(start - 1) + 1;
    let mut stream = watch(&store, p, Some(resume_from)).await;
    while seen.len() < 20 {
        let e = next_event(&mut stream, "events of the resumed watch").await;
        seen.push(e.revision());
    }
    // One more live change, to be sure nothing extra was queued before it.
    let last = create_ok(&store, &format!("{p}cm-last"), "x").await;
    written.push(last.mod_revision);
    let e = next_event(&mut stream, "the live change after resuming").await;
    seen.push(e.revision());
    assert_eq!(
        seen, written,
        "the first watch plus the resumed watch must deliver each change exactly once, in order"
    );
}

/// A watcher that does not read while many changes commit still gets all of them, in
/// order, once it reads (or, at the very least, is told it lagged — but never silently
/// misses events).
pub async fn watch_slow_reader_misses_nothing(store: Arc<dyn Store>) {
    let p = "/registry/events/default/";
    let mut stream = watch(&store, p, None).await;
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 150;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                create_ok(&store, &format!("/registry/events/default/w{w:02}-{i:04}"), "e").await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task panicked");
    }
    let total = WRITERS * PER_WRITER;
    let mut last: Option<Revision> = None;
    let mut keys_seen = HashSet::new();
    for n in 0..total {
        let e = match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
            Err(_) => panic!("slow watcher: no event {n} of {total} within {EVENT_WAIT:?}"),
            Ok(None) => panic!("slow watcher: stream ended after {n} of {total} events"),
            Ok(Some(Err(StoreError::WatchLagged))) => {
                // Allowed by the contract: the store closed a watcher that fell behind.
                // It said so, so nothing was lost silently.
                return;
            }
            Ok(Some(Err(e))) => panic!("slow watcher: stream failed after {n} events: {e}"),
            Ok(Some(Ok(e))) => e,
        };
        if let Some(prev) = last {
            assert!(
                e.revision() > prev,
                "events out of order: {} after {prev}",
                e.revision()
            );
        }
        last = Some(e.revision());
        assert!(keys_seen.insert(e.kv.key.clone()), "duplicate event for {}", e.kv.key);
    }
    assert_eq!(keys_seen.len(), total, "every create must be delivered once");
}

async fn expect_compacted_watch(store: &Arc<dyn Store>, prefix: &str, from: Revision) {
    match store.watch(prefix, Some(from)).await {
        Err(StoreError::Compacted { requested, .. }) => {
            assert_eq!(requested, from, "Compacted must name the requested revision");
        }
        Err(e) => panic!("watch from compacted revision {from}: expected Compacted, got {e}"),
        Ok(mut stream) => match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            Ok(other) => panic!(
                "watch from compacted revision {from}: expected the stream to fail with \
                 Compacted, got {other:?}"
            ),
            Err(_) => panic!("watch from compacted revision {from}: nothing within {EVENT_WAIT:?}"),
        },
    }
}

/// After `compact(R)`, ranges and watches from revisions older than R fail with
/// `Compacted` (the API server's `410 Gone`), while R itself (for a watch: R or, on etcd,
/// only R + 1), newer revisions and all current values remain.
pub async fn compact_then_old_revisions_are_gone(store: Arc<dyn Store>) {
    let p = "/registry/pods/c/";
    let a1 = create_ok(&store, "/registry/pods/c/a", "a1").await;
    let a2 = update_ok(&store, "/registry/pods/c/a", "a2", a1.mod_revision).await;
    let b = create_ok(&store, "/registry/pods/c/b", "b").await;
    let a3 = update_ok(&store, "/registry/pods/c/a", "a3", a2.mod_revision).await;
    let at = b.mod_revision;

    store
        .compact(at)
        .await
        .expect("compacting at a past revision must succeed");

    match store.range(p, Some(a2.mod_revision), None).await {
        Err(StoreError::Compacted { requested, .. }) => {
            // `compacted` is not checked: etcd's range error does not say at which revision
            // the store was compacted, so a backend may not know it exactly.
            assert_eq!(requested, a2.mod_revision, "Compacted must name the requested revision");
        }
        other => panic!("range below the compaction must fail with Compacted, got {other:?}"),
    }
    expect_compacted_watch(&store, p, a1.mod_revision).await;

    let kept = store
        .range(p, Some(at), None)
        .await
        .expect("range at exactly the compacted revision must still work");
    assert_eq!(
        kept.kvs,
        vec![a2.clone(), b.clone()],
        "state at the compaction revision"
    );

    let now = store.range(p, None, None).await.expect("range now");
    assert_eq!(
        now.kvs,
        vec![a3.clone(), b.clone()],
        "compaction must not lose current values"
    );

    // A watch from the compaction revision itself replays its change (the embedded store
    // keeps its log from there, previous versions included), or is refused as too old
    // (etcd: its compaction removed the keys deleted at that revision, whose DELETE
    // events would never come). It never starts and skips.
    match store.watch(p, Some(at)).await {
        Ok(mut stream) => {
            let e = next_event(&mut stream, "the event at the compaction revision").await;
            assert_eq!(e.kv, b, "a watch from the compaction revision replays its change");
        }
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("watch from the compaction revision {at}: {e}"),
    }
    let mut stream = watch(&store, p, Some(at + 1)).await;
    let e = next_event(&mut stream, "the event after the compaction revision").await;
    assert_eq!(e.kv, a3);

    let a4 = update_ok(&store, "/registry/pods/c/a", "a4", a3.mod_revision).await;
    let e = next_event(&mut stream, "a live event after compaction").await;
    assert_eq!(e.kv, a4, "live events keep flowing after a compaction");
}

/// 16 writers all update one key from the same `mod_revision`: exactly one wins, the rest
/// get `Conflict` with the winner's value (optimistic concurrency).
pub async fn concurrent_conflicting_updates(store: Arc<dyn Store>) {
    let key = "/registry/leases/kube-system/leader";
    let base = create_ok(&store, key, "nobody").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let expected = base.mod_revision;
        tasks.push(tokio::spawn(async move {
            store
                .update(key, format!("writer-{i}").into_bytes(), expected)
                .await
                .unwrap_or_else(|e| panic!("writer {i}: store error: {e}"))
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        match t.await.expect("task panicked") {
            TxnOutcome::Succeeded { kv } => winners.push(kv),
            TxnOutcome::Conflict { current } => conflicts.push(current),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of 16 updates from the same mod_revision may succeed, {} did",
        winners.len()
    );
    assert_eq!(conflicts.len(), 15, "the other 15 must conflict");
    let stored = store.get(key).await.expect("get").expect("key exists");
    assert_eq!(stored, winners[0], "the stored key is the winner's");
    for c in conflicts {
        let c = c.expect("a conflict on an existing key must report it");
        assert!(
            c.mod_revision > base.mod_revision,
            "a loser must see a newer mod_revision than the one it expected"
        );
    }
}

/// 16 writers all create one key: exactly one wins.
pub async fn concurrent_creates_of_one_key(store: Arc<dyn Store>) {
    let key = "/registry/namespaces/team-a";
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create(key, format!("creator-{i}").into_bytes())
                .await
                .unwrap_or_else(|e| panic!("creator {i}: store error: {e}"))
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if let TxnOutcome::Succeeded { .. } = t.await.expect("task panicked") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one of 16 creates of the same key may succeed");
}

/// 64 writers writing different keys all succeed, every write gets its own revision, and
/// the store ends exactly that many revisions later.
pub async fn concurrent_writers_distinct_keys(store: Arc<dyn Store>) {
    const WRITERS: usize = 64;
    const PER_WRITER: usize = 8;
    let before = current(&store).await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..PER_WRITER {
                let key = format!("/registry/pods/load/w{w:02}-{i}");
                let kv = create_ok(&store, &key, "x").await;
                let kv2 = update_ok(&store, &key, "y", kv.mod_revision).await;
                revs.push(kv.mod_revision);
                revs.push(kv2.mod_revision);
            }
            revs
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for r in t.await.expect("writer task panicked") {
            assert!(all.insert(r), "revision {r} was handed out twice");
        }
    }
    let total = WRITERS * PER_WRITER * 2;
    assert_eq!(all.len(), total);
    let after = current(&store).await;
    assert_eq!(
        after,
        before + total as i64,
        "each write bumps the revision by exactly one"
    );
    assert!(
        all.iter().all(|r| *r > before && *r <= after),
        "all revisions lie between the start and end revision"
    );
    let listed = store.range("/registry/pods/load/", None, None).await.expect("range");
    assert_eq!(listed.kvs.len(), WRITERS * PER_WRITER, "every key must be stored");
    assert!(
        listed.kvs.iter().all(|kv| kv.value == b"y"),
        "every key holds its last value"
    );
}

/// The API server's compactor ([`kulisse_core::apiserver::compactor`]): each tick compacts
/// at the revision of the tick before, and two compactors on one store take turns through
/// `compact_rev_key` instead of both compacting.
pub async fn compactors_agree_and_keep_one_interval(store: Arc<dyn Store>) {
    use kulisse_core::apiserver::compactor::{Compactor, Tick};
    async fn tick(c: &mut Compactor, store: &Arc<dyn Store>) -> Tick {
        c.tick(store.as_ref())
            .await
            .unwrap_or_else(|e| panic!("compactor tick: store error: {e}"))
    }
    let (mut one, mut two) = (Compactor::default(), Compactor::default());
    assert_eq!(
        tick(&mut one, &store).await,
        Tick::Started,
        "the first tick has no earlier revision to compact at"
    );
    let first = current(&store).await;
    let a1 = create_ok(&store, "/registry/pods/k/a", "a1").await;
    let a2 = update_ok(&store, "/registry/pods/k/a", "a2", a1.mod_revision).await;

    assert_eq!(
        tick(&mut two, &store).await,
        Tick::OtherCompacted,
        "a second compactor must find the key taken"
    );
    assert_eq!(
        tick(&mut one, &store).await,
        Tick::Compacted { revision: first },
        "the second tick compacts at the revision of the first"
    );
    match store.range("/registry/pods/k/", Some(first - 1), None).await {
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("history before the compaction point {first} must be gone, got {other:?}"),
    }
    let kept = store
        .range("/registry/pods/k/", Some(a1.mod_revision), None)
        .await
        .expect("the last interval's history is kept");
    assert_eq!(kept.kvs, vec![a1.clone()], "state one interval ago");

    // The second compactor saw the key before the first rewrote it: it loses once, learns,
    // and then takes its turn.
    assert_eq!(
        tick(&mut two, &store).await,
        Tick::OtherCompacted,
        "a compactor with a stale view of the key must lose"
    );
    let t = tick(&mut two, &store).await;
    assert!(
        matches!(t, Tick::Compacted { revision } if revision > first),
        "the compactor that caught up compacts next, later than {first}: {t:?}"
    );
    let now = store.range("/registry/pods/k/", None, None).await.expect("range now");
    assert_eq!(now.kvs, vec![a2], "compaction never loses current values");
}

/// A key written with a TTL is deleted by the store once it runs out, as an ordinary delete
/// that watchers see (etcd: a lease expiring). A later write without a TTL keeps the key
/// (etcd: a put without a lease detaches it), and keys without one are never touched.
pub async fn keys_with_a_ttl_expire_as_deletes(store: Arc<dyn Store>) {
    let p = "/registry/events/t/";
    let ttl = Duration::from_secs(2);
    let mut events = watch(&store, p, None).await;
    let with_ttl = |key: &'static str| {
        let store = store.clone();
        async move {
            let outcome = store
                .create_with_ttl(key, b"e".to_vec(), ttl)
                .await
                .unwrap_or_else(|e| panic!("create {key} with a TTL: store error: {e}"));
            outcome_kv(outcome, &format!("create {key} with a TTL"))
        }
    };
    let a = with_ttl("/registry/events/t/a").await;
    let b = with_ttl("/registry/events/t/b").await;
    let b2 = update_ok(&store, "/registry/events/t/b", "kept", b.mod_revision).await;
    let c = create_ok(&store, "/registry/events/t/c", "c").await;
    let d = with_ttl("/registry/events/t/d").await;
    let d2 = store
        .update_with_ttl("/registry/events/t/d", b"again".to_vec(), d.mod_revision, ttl)
        .await
        .expect("update with a TTL");
    let d2 = outcome_kv(d2, "update /registry/events/t/d with a TTL");

    let mut deleted = HashSet::new();
    let mut last = d2.mod_revision;
    while deleted.len() < 2 {
        let e = next_event(&mut events, "the TTL deletes of a and d").await;
        if e.kind == EventType::Delete {
            assert!(e.revision() > last, "an expiry is a new revision after the last write");
            last = e.revision();
            deleted.insert(e.kv.key.clone());
        }
    }
    let expected: HashSet<String> = ["/registry/events/t/a", "/registry/events/t/d"]
        .map(String::from)
        .into();
    assert_eq!(deleted, expected, "exactly the keys still on a TTL expire");
    let now = store.range(p, None, None).await.expect("range after expiry");
    assert_eq!(now.kvs, vec![b2, c], "keys without a TTL (any more) stay");
    let _ = a;
}
