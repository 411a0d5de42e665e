//! The embedded redb store against the store conformance suite, plus what only a local
//! file can promise: data and revision survive a restart, and every acknowledged write
//! survives `kill -9` of the process that made it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kulisse_backends::store::embedded::EmbeddedStore;
use kulisse_core::store::{Store, StoreError, TxnOutcome};
use tempfile::TempDir;

async fn fresh() -> Option<(Arc<dyn Store>, TempDir)> {
    let dir = tempfile::tempdir().expect("cannot create a temp dir for the store");
    let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("store.redb"))
        .unwrap_or_else(|e| panic!("cannot open a fresh embedded store: {e}"));
    Some((store, dir))
}

kulisse_tests::store_conformance_tests!(fresh);

#[test]
fn the_suite_lists_every_case() {
    // The macro above generated one test per name in ALL; make sure the list is not empty
    // and has no duplicates (a duplicate would not compile, an empty list would test nothing).
    let all = kulisse_tests::conformance::ALL;
    assert!(all.len() >= 14, "the conformance suite lists only {} cases", all.len());
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "duplicate names in ALL");
}

fn created(outcome: TxnOutcome) -> kulisse_core::store::KeyValue {
    match outcome {
        TxnOutcome::Succeeded { kv } => kv,
        TxnOutcome::Conflict { current } => panic!("expected success, got Conflict {current:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_and_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested/dir/store.redb");
    let (a, b, rev) = {
        let store = EmbeddedStore::open(&path).expect("open a new store (creating parent dirs)");
        assert_eq!(
            store.current_revision().await.expect("revision"),
            1,
            "an empty store is at revision 1, like etcd"
        );
        let a = created(
            store
                .create("/registry/pods/default/a", b"a".to_vec())
                .await
                .expect("create a"),
        );
        let b = created(
            store
                .create("/registry/pods/default/b", b"b".to_vec())
                .await
                .expect("create b"),
        );
        let b = created(
            store
                .update(&b.key, b"b2".to_vec(), b.mod_revision)
                .await
                .expect("update b"),
        );
        let rev = store.current_revision().await.expect("revision");
        (a, b, rev)
    };
    let store = EmbeddedStore::open(&path).expect("reopen the same file after the store was dropped");
    assert_eq!(
        store.current_revision().await.expect("revision"),
        rev,
        "the revision must survive a restart"
    );
    assert_eq!(store.get(&a.key).await.expect("get"), Some(a.clone()));
    assert_eq!(store.get(&b.key).await.expect("get"), Some(b.clone()));
    let c = created(
        store
            .create("/registry/pods/default/c", b"c".to_vec())
            .await
            .expect("create c"),
    );
    assert_eq!(
        c.mod_revision,
        rev + 1,
        "writes after a restart continue from the stored revision"
    );

    // History survives too: a watch from the first revision replays everything.
    let mut stream = store
        .watch("/registry/pods/default/", Some(a.mod_revision))
        .await
        .expect("watch");
    let revs = next_revisions(&mut stream, 4).await;
    assert_eq!(
        revs,
        vec![a.mod_revision, a.mod_revision + 1, b.mod_revision, c.mod_revision]
    );
}

/// The revisions of the next `n` events of a watch (each within 20 s).
async fn next_revisions(stream: &mut kulisse_core::store::WatchStream, n: usize) -> Vec<i64> {
    let mut revs = Vec::new();
    for _ in 0..n {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("replay must not hang")
            .expect("stream ended early")
            .expect("replay failed");
        revs.push(e.revision());
    }
    revs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let compact_at = {
        let store = EmbeddedStore::open(&path).expect("open");
        let a = created(store.create("/registry/x/a", b"1".to_vec()).await.expect("create"));
        let a = created(
            store
                .update(&a.key, b"2".to_vec(), a.mod_revision)
                .await
                .expect("update"),
        );
        created(
            store
                .update(&a.key, b"3".to_vec(), a.mod_revision)
                .await
                .expect("update"),
        );
        store.compact(a.mod_revision).await.expect("compact");
        match store.compact(a.mod_revision - 1).await {
            Err(StoreError::Compacted { .. }) => {}
            other => panic!("compacting below the last compaction must fail with Compacted, got {other:?}"),
        }
        match store.compact(1000).await {
            Err(StoreError::FutureRevision { .. }) => {}
            other => {
                panic!("compacting a future revision must fail with FutureRevision, got {other:?}")
            }
        }
        a.mod_revision
    };
    let store = EmbeddedStore::open(&path).expect("reopen");
    match store.range("/registry/x/", Some(compact_at - 1), None).await {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, compact_at),
        other => panic!("the compaction must be remembered across restarts, got {other:?}"),
    }
    let kept = store
        .range("/registry/x/", Some(compact_at), None)
        .await
        .expect("range at compaction");
    assert_eq!(kept.kvs.len(), 1);
    assert_eq!(kept.kvs[0].value, b"2");
}

/// A compaction of a long history (10,000 revisions) is recorded at once, and its log
/// entries are then deleted in several write transactions between the other writes (as etcd
/// compacts in batches): a write sent right after it is answered, a read below it is refused
/// at once, and a watch from it replays the history kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_is_compacted_in_batches_between_other_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = std::sync::Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).expect("open"));
    let writers = (0..50).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .create(&format!("/registry/x/{w}-{i}"), b"v".to_vec())
                    .await
                    .expect("create");
            }
        })
    });
    futures::future::join_all(writers).await;
    let last = created(store.create("/registry/x/last", b"v".to_vec()).await.expect("create"));
    let before = store.stats().commits;
    store.compact(last.mod_revision).await.expect("compact");
    let after = created(
        store
            .create("/registry/x/after", b"v".to_vec())
            .await
            .expect("a write right after"),
    );
    assert!(after.mod_revision > last.mod_revision);
    match store.range("/registry/x/", Some(last.mod_revision - 1), None).await {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, last.mod_revision),
        other => panic!("a read below the compaction must be refused at once, got {other:?}"),
    }
    let mut stream = store
        .watch("/registry/x/", Some(last.mod_revision))
        .await
        .expect("watch");
    let revs = next_revisions(&mut stream, 2).await;
    assert_eq!(revs, vec![last.mod_revision, after.mod_revision]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.compacting() {
        assert!(std::time::Instant::now() < deadline, "the compaction did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let transactions = store.stats().commits - before;
    assert!(
        transactions >= 10_000usize.div_ceil(4096) as u64 + 1,
        "10,000 entries deleted 4,096 at a time, plus the write: {transactions} commits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_of_the_same_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let _first = EmbeddedStore::open(&path).expect("open");
    match EmbeddedStore::open(&path) {
        Err(StoreError::Backend(msg)) => {
            assert!(
                msg.contains("already open"),
                "the error must say the file is already open: {msg}"
            )
        }
        Err(other) => panic!("expected a Backend error, got {other}"),
        Ok(_) => panic!("opening the same store file twice must fail"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_key_is_rejected_without_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).expect("open");
    match store.create("", b"x".to_vec()).await {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("empty"), "message: {msg}"),
        other => panic!("an empty key must be rejected, got {other:?}"),
    }
    assert_eq!(store.current_revision().await.expect("revision"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_watch_unhooks_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).expect("open");
    let stream = store.watch("/registry/pods/", None).await.expect("watch");
    assert_eq!(store.live_watchers(), 1, "a watch from now is hooked to live events");
    drop(stream);
    assert_eq!(store.live_watchers(), 0, "dropping the stream must release the watcher");
    created(
        store
            .create("/registry/pods/a", b"a".to_vec())
            .await
            .expect("writes still work"),
    );
}

/// A watcher that does not read while thousands of single writes commit is unhooked
/// (writers never wait for it) and then catches up from the log: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_unhooked_and_catches_up_from_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).expect("open");
    let mut stream = store.watch("/registry/events/", None).await.expect("watch");
    const N: usize = 1500; // more than the live buffer of 1024 batches
    let first = store.current_revision().await.expect("revision") + 1;
    for i in 0..N {
        created(
            store
                .create(&format!("/registry/events/e{i:05}"), b"x".to_vec())
                .await
                .expect("create"),
        );
    }
    let stats = store.stats();
    assert!(
        stats.lagged_watchers >= 1,
        "the watcher never read, so it must have been unhooked; stats: {stats:?}"
    );
    for i in 0..N {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("catch-up must not hang")
            .expect("stream ended early")
            .unwrap_or_else(|e| panic!("catch-up failed at event {i}: {e}"));
        assert_eq!(e.revision(), first + i as i64, "event {i} has the wrong revision");
        assert_eq!(e.kv.key, format!("/registry/events/e{i:05}"));
    }
    // Back to live.
    let last = created(
        store
            .create("/registry/events/live", b"x".to_vec())
            .await
            .expect("create"),
    );
    let e = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("live event must not hang")
        .expect("stream ended")
        .expect("live event failed");
    assert_eq!(e.kv, last);
}

const CRASH_CHILD_ENV: &str = "KULISSE_TEST_CRASH_WRITER_FILE";
const ACK: &str = "ACKED ";

/// The child side of the crash test: write forever (well, until killed), print each
/// acknowledged write.
async fn crash_writer(path: &Path) {
    let store = EmbeddedStore::open(path).unwrap_or_else(|e| panic!("child: cannot open store: {e}"));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let key = format!("/registry/crash/w{w}-{i:06}");
                let kv = created(store.create(&key, key.clone().into_bytes()).await.expect("child write"));
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{ACK}{} {}", kv.key, kv.mod_revision);
                let _ = out.flush();
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    if let Ok(path) = std::env::var(CRASH_CHILD_ENV) {
        crash_writer(Path::new(&path)).await;
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let exe = std::env::current_exe().expect("path of this test binary");
    let mut child = Command::new(exe)
        .args([
            "acknowledged_writes_survive_sigkill",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-executing the test binary as the crash writer");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    const KILL_AFTER: usize = 400;
    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut killed = false;
    loop {
        // The timeout only guards against a hung child; it asserts nothing about speed.
        match lines_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(ACK) {
                    let mut parts = rest.split(' ');
                    let key = parts.next().unwrap_or_default().to_string();
                    let rev = parts
                        .next()
                        .and_then(|r| r.parse().ok())
                        .unwrap_or_else(|| panic!("child printed a malformed ack line: {line:?}"));
                    acked.push((key, rev));
                    if acked.len() >= KILL_AFTER && !killed {
                        // SIGKILL: no destructor, no flush, no clean shutdown.
                        child.kill().expect("SIGKILL the crash writer");
                        killed = true;
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "the crash writer printed nothing for 120 s ({} acks so far)",
                    acked.len()
                );
            }
        }
    }
    let status = child.wait().expect("reap the child");
    let _ = reader.join();
    if !killed {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!(
            "the crash writer exited ({status}) after only {} acks before it could be killed; stderr:\n{err}",
            acked.len()
        );
    }
    assert!(acked.len() >= KILL_AFTER);

    let store = EmbeddedStore::open(&path).expect("reopen the store after kill -9 (redb repairs it)");
    let mut max_rev = 0;
    for (key, rev) in &acked {
        let kv = store
            .get(key)
            .await
            .expect("get after crash")
            .unwrap_or_else(|| panic!("acknowledged write {key} (revision {rev}) was lost in the crash"));
        assert_eq!(kv.mod_revision, *rev, "{key} has another revision after the crash");
        assert_eq!(kv.value, key.as_bytes(), "{key} has another value after the crash");
        max_rev = max_rev.max(*rev);
    }
    let now = store.current_revision().await.expect("revision");
    assert!(
        now >= max_rev,
        "the store revision {now} is older than an acknowledged write {max_rev}"
    );
    eprintln!(
        "crash test: {} acknowledged writes, all present after SIGKILL; store at revision {now}",
        acked.len()
    );
}
