//! The etcd store against a real etcd: the shared conformance suite, plus checks that only
//! make sense with a real etcd (keys visible with `etcdctl`, watchers released on drop,
//! changes made by other etcd clients seen by kulisse's watch).
//!
//! Every test starts its own etcd (a one-member cluster on 127.0.0.1, free ports, temp
//! data dir; about a tenth of a second) so cases cannot see each other's keys or
//! revisions. Without the `etcd` binary the tests print `SKIPPING` (or fail when `CI=true`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kulisse_backends::store::etcd::EtcdStore;
use kulisse_core::store::{EventType, Store, StoreError, TxnOutcome};
use kulisse_tests::etcd::{EtcdServer, etcdctl_get_prefix, require_etcdctl};

/// Start a fresh etcd and connect an [`EtcdStore`] to it. `None` means "skip" (etcd missing,
/// not in CI; the reason has been printed).
async fn fresh_etcd() -> Option<(Arc<EtcdStore>, EtcdServer)> {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("starting etcd panicked")?;
    let store = match EtcdStore::connect(std::slice::from_ref(&server.endpoint)).await {
        Ok(store) => store,
        Err(e) => panic!(
            "connect to the etcd just started: {e}\n--- etcd log ---\n{}",
            server.log_tail()
        ),
    };
    Some((store, server))
}

/// The factory the conformance macro calls once per case.
async fn fresh() -> Option<(Arc<dyn Store>, EtcdServer)> {
    let (store, server) = fresh_etcd().await?;
    Some((store as Arc<dyn Store>, server))
}

kulisse_tests::store_conformance_tests!(fresh);

/// Keys written through kulisse are etcd keys, byte for byte: `etcdctl get --prefix` lists
/// them exactly as the API server would have written them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_visible_with_etcdctl() {
    let Some((store, server)) = fresh_etcd().await else {
        return;
    };
    if !require_etcdctl() {
        return;
    }
    let keys = [
        "/registry/namespaces/default",
        "/registry/pods/default/web",
        "/registry/pods/kube-system/dns",
    ];
    for key in keys {
        let outcome = store
            .create(key, format!("{{\"key\":\"{key}\"}}").into_bytes())
            .await
            .expect("create");
        assert!(
            matches!(outcome, TxnOutcome::Succeeded { .. }),
            "create {key}: {outcome:?}"
        );
    }
    let endpoint = server.endpoint.clone();
    let listed = tokio::task::spawn_blocking(move || etcdctl_get_prefix(&endpoint, "/registry"))
        .await
        .expect("etcdctl task panicked");
    assert_eq!(
        listed,
        keys.to_vec(),
        "etcdctl must list exactly the keys kulisse wrote, in key order"
    );

    let endpoint = server.endpoint.clone();
    let pods = tokio::task::spawn_blocking(move || etcdctl_get_prefix(&endpoint, "/registry/pods/"))
        .await
        .expect("etcdctl task panicked");
    assert_eq!(
        pods,
        vec!["/registry/pods/default/web", "/registry/pods/kube-system/dns"]
    );
}

/// Changes made by another etcd client (here `etcdctl put` and `etcdctl del`) reach a
/// kulisse watch as the right kind of event, with prev_kv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_changes_made_with_etcdctl() {
    let Some((store, server)) = fresh_etcd().await else {
        return;
    };
    if !require_etcdctl() {
        return;
    }
    let mut stream = store.watch("/registry/pods/", None).await.expect("watch");
    let endpoint = server.endpoint.clone();
    tokio::task::spawn_blocking(move || {
        for args in [
            &["put", "/registry/pods/default/web", "v1"][..],
            &["put", "/registry/pods/default/web", "v2"][..],
            &["del", "/registry/pods/default/web"][..],
        ] {
            let out = std::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg("--endpoints")
                .arg(&endpoint)
                .args(args)
                .output()
                .expect("run etcdctl");
            assert!(
                out.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    })
    .await
    .expect("etcdctl task panicked");

    let mut events = Vec::new();
    while events.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(e))) => events.push(e),
            other => panic!(
                "expected 3 events from etcdctl's changes, got {} then {other:?}",
                events.len()
            ),
        }
    }
    assert_eq!(events[0].kind, EventType::Put);
    assert!(events[0].is_create(), "the first put creates the key");
    assert_eq!(events[0].kv.value, b"v1");
    assert_eq!(events[1].kind, EventType::Put);
    assert_eq!(events[1].kv.value, b"v2");
    assert_eq!(
        events[1].prev_kv.as_ref().map(|p| p.value.clone()),
        Some(b"v1".to_vec())
    );
    assert_eq!(events[2].kind, EventType::Delete, "etcdctl del must arrive as a Delete");
    assert_eq!(events[2].kv.key, "/registry/pods/default/web");
    assert!(events[2].kv.value.is_empty());
    assert_eq!(
        events[2].prev_kv.as_ref().map(|p| p.value.clone()),
        Some(b"v2".to_vec())
    );
}

/// Dropping a watch stream cancels the watch inside etcd: etcd's own gauge of active
/// watchers (`etcd_debugging_mvcc_watcher_total` on `/metrics`) goes back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watch_streams_release_their_etcd_watchers() {
    let Some((store, server)) = fresh_etcd().await else {
        return;
    };
    let mut streams = Vec::new();
    for i in 0..5 {
        streams.push(
            store
                .watch(&format!("/registry/pods/ns{i}/"), None)
                .await
                .expect("watch"),
        );
    }
    let watchers = wait_for_metric(&server, "etcd_debugging_mvcc_watcher_total", |v| v >= 5.0).await;
    assert!(watchers >= 5.0, "etcd must count the 5 open watches, counts {watchers}");

    drop(streams);
    let after = wait_for_metric(&server, "etcd_debugging_mvcc_watcher_total", |v| v == 0.0).await;
    assert_eq!(after, 0.0, "after dropping every stream etcd must serve no watcher");

    // The store still works after its watches are gone.
    let mut stream = store.watch("/registry/pods/", None).await.expect("watch again");
    store
        .create("/registry/pods/ns0/a", b"x".to_vec())
        .await
        .expect("create");
    let e = tokio::time::timeout(Duration::from_secs(20), stream.next()).await;
    assert!(
        matches!(e, Ok(Some(Ok(ref ev))) if ev.kv.key == "/registry/pods/ns0/a"),
        "got {e:?}"
    );
}

/// Poll one etcd metric until `done` holds for it (or 20 s pass); returns the last value.
async fn wait_for_metric(server: &EtcdServer, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = server.metric(name).unwrap_or(-1.0);
        if done(value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connecting where no etcd listens fails quickly with a message that names the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_names_the_address() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    match EtcdStore::connect(std::slice::from_ref(&endpoint)).await {
        Err(StoreError::Backend(msg)) => assert!(
            msg.contains(&format!("could not reach etcd at {endpoint}")),
            "the error must name the address; got: {msg}"
        ),
        Err(e) => panic!("expected a Backend error naming {endpoint}, got {e}"),
        Ok(_) => panic!("connect to {endpoint}, where nothing listens, must fail"),
    }
}

/// Revisions and compaction as etcd itself reports them: `current_revision` matches the
/// revision `etcdctl` sees, and a range below a compaction is `Compacted` with etcd's
/// compaction revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_is_etcds_own() {
    let Some((store, _server)) = fresh_etcd().await else {
        return;
    };
    let mut rev = 0;
    for i in 0..5 {
        match store
            .create(&format!("/registry/pods/default/p{i}"), b"x".to_vec())
            .await
            .expect("create")
        {
            TxnOutcome::Succeeded { kv } => rev = kv.mod_revision,
            other => panic!("create: {other:?}"),
        }
    }
    assert_eq!(store.current_revision().await.expect("current_revision"), rev);
    store.compact(rev - 1).await.expect("compact");
    // Compacting again at or below the compaction point is a no-op, not an error.
    store
        .compact(rev - 2)
        .await
        .expect("compacting an already compacted revision is a no-op");
    match store.range("/registry/pods/", Some(rev - 3), None).await {
        Err(StoreError::Compacted { requested, compacted }) => {
            assert_eq!(requested, rev - 3);
            assert_eq!(compacted, rev - 1, "etcd reports the revision we compacted at");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    match store.compact(rev + 10).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (rev + 10, rev));
        }
        other => {
            panic!("compacting a future revision must fail with FutureRevision, got {other:?}")
        }
    }
}

/// When etcd goes away, an open watch ends with an error and requests fail with an error
/// naming etcd's address: nothing hangs, nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_going_away_is_an_error_not_a_hang() {
    let Some((store, server)) = fresh_etcd().await else {
        return;
    };
    let endpoint = server.endpoint.clone();
    let mut stream = store.watch("/registry/", None).await.expect("watch");
    store
        .create("/registry/pods/default/a", b"x".to_vec())
        .await
        .expect("create");
    let first = tokio::time::timeout(Duration::from_secs(20), stream.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(_)))),
        "the create must arrive first: {first:?}"
    );

    drop(server); // kills etcd and removes its data

    match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
        Ok(Some(Err(StoreError::Backend(msg)))) => {
            assert!(
                msg.contains(&endpoint),
                "the watch error must name etcd's address: {msg}"
            )
        }
        Ok(None) => {} // ending the stream is also a clean way to say "closed"
        other => panic!("after etcd stopped, the watch must end or fail, got {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(60), store.get("/registry/pods/default/a")).await {
        Ok(Err(StoreError::Backend(msg))) => {
            assert!(msg.contains(&endpoint), "the error must name etcd's address: {msg}")
        }
        other => panic!("a get with etcd gone must fail with a Backend error, got {other:?}"),
    }
}
