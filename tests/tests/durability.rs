//! Failures survived with nothing lost: the single-process cluster and its store under
//! crashes, conflicting writers and reconnecting watchers (issue 14's failure tests).
//!
//! - **`kill -9` during a storm**: 50 times, `kulisse up` (embedded store, then etcd) is
//!   killed while 4 clients apply and scale Deployments and apply and delete ConfigMaps, and
//!   restarted on the same data. Every acknowledged write must be there; the Deployments must
//!   become available again, in containers the restarted cluster started.
//! - **Read-modify-write under conflict**: 32 clients × 200 increments of one object, each a
//!   `GET`, a change and a `PUT` that carries the `resourceVersion` it read, retried on
//!   `409 Conflict` — client-go's `retry.RetryOnConflict`. Optimistic concurrency must turn
//!   every race into a 409, never into a lost update.
//! - **Watch reconnects under churn**: a watcher resumes 1,000 times (250 on etcd) from the
//!   last version it saw while writers change objects; after each compaction it resumes
//!   from a version older than the watch cache holds, which gets `410 Expired`,
//!   after which it lists and watches again. Between lists it must see exactly the
//!   acknowledged writes, in order: no gap, no duplicate. A change made right at the
//!   compaction point is never skipped either.
//!
//! Every test checks its result against a **ledger**: what the server acknowledged (a 2xx
//! answer) is written down with the object's `resourceVersion` and content, and the final
//! state must account for every entry. The figures (`FIGURE` lines: how many conflicts, how
//! long a restart takes) are printed, and copied to the book's testing appendix; nothing is
//! timed in an assertion. Run with `-- --nocapture` to see them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Timelike;

use http::Method;
use kulisse_backends::store::etcd::EtcdStore;
use kulisse_core::client::{Client, ClientError};
use kulisse_core::store::Store;
use kulisse_tests::etcd::EtcdServer;
use kulisse_tests::inproc::ApiServerFixture;
use serde_json::{Value, json};

/// The resourceVersion of an object, as a number.
fn rv(obj: &Value) -> i64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}

/// A counter kept as a string in a ConfigMap's `data`.
fn counter(obj: &Value, key: &str) -> u64 {
    obj.pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A fresh single-member etcd and an API server over it (bookmarks every `bookmarks`);
/// `None`: skip (etcd missing, not CI).
async fn etcd_fixture(bookmarks: Duration) -> Option<(ApiServerFixture, EtcdServer)> {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("starting etcd panicked")?;
    let store = EtcdStore::connect(std::slice::from_ref(&server.endpoint))
        .await
        .unwrap_or_else(|e| panic!("connect to etcd: {e}\n{}", server.log_tail()));
    let api = ApiServerFixture::start_with_store_and_bookmarks(store as Arc<dyn Store>, bookmarks).await;
    Some((api, server))
}

// ---------------------------------------------------------------------------------------
// 32 clients × 200 conflicting read-modify-write updates
// ---------------------------------------------------------------------------------------

const RMW_CLIENTS: usize = 32;
const RMW_UPDATES: u64 = 200;
const RMW_PATH: &str = "/api/v1/namespaces/default/configmaps/counter";

/// A small deterministic pseudo-random sequence (xorshift64) for backoff jitter.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One acknowledged update: the version the server gave it and the shared total it wrote.
struct RmwAck {
    rv: i64,
    total: u64,
}

/// One client: `RMW_UPDATES` times GET the counter, add one to the shared `total` and to its
/// own `c<N>`, PUT it back with the version it read; on 409 read again. Returns its ledger
/// and how many conflicts it met.
async fn rmw_client(client: Client, me: usize) -> (Vec<RmwAck>, u64) {
    let mine = format!("c{me:02}");
    let mut acks = Vec::new();
    let mut conflicts = 0;
    let mut streak = 0u32;
    let mut jitter = XorShift(0x9E37_79B9_7F4A_7C15 ^ (me as u64 + 1));
    while (acks.len() as u64) < RMW_UPDATES {
        let (mut obj, _) = client
            .json(Method::GET, RMW_PATH, None, None)
            .await
            .unwrap_or_else(|e| panic!("client {me}: GET the counter: {e}"));
        let total = counter(&obj, "total") + 1;
        let own = counter(&obj, &mine) + 1;
        obj["data"]["total"] = json!(total.to_string());
        obj["data"][&mine] = json!(own.to_string());
        match client
            .json(Method::PUT, RMW_PATH, Some("application/json"), Some(&obj))
            .await
        {
            Ok((written, _)) => {
                assert_eq!(
                    counter(&written, "total"),
                    total,
                    "client {me}: the answer must be what was written"
                );
                acks.push(RmwAck {
                    rv: rv(&written),
                    total,
                });
                streak = 0;
            }
            Err(ClientError::Api(e)) if e.code == 409 => {
                conflicts += 1;
                streak += 1;
                // Back off with full jitter, as client-go's retry does (its steps are 10 ms):
                // without it, 32 clients retry in lockstep and nearly every PUT conflicts.
                let ceiling = 2u64 << streak.min(6);
                tokio::time::sleep(Duration::from_micros(jitter.next() % (ceiling * 1000))).await;
                continue;
            }
            Err(e) => panic!("client {me}: PUT the counter: {e}"),
        }
    }
    (acks, conflicts)
}

async fn rmw_storm(api: &ApiServerFixture, store: &str) {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counter"}, "data": {"total": "0"}});
    api.client
        .json(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some("application/json"),
            Some(&cm),
        )
        .await
        .expect("create the counter");
    let started = Instant::now();
    let tasks: Vec<_> = (0..RMW_CLIENTS)
        .map(|me| tokio::spawn(rmw_client(api.client.clone(), me)))
        .collect();
    let mut ledger = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (acks, c) = t.await.expect("a client panicked");
        ledger.extend(acks);
        conflicts += c;
    }
    let took = started.elapsed();

    // Every acknowledged update wrote a different total, one more than the version it
    // replaced: sorted by version, the totals are 1, 2, 3, ... with no repeat, no hole.
    ledger.sort_by_key(|a| a.rv);
    let totals: Vec<u64> = ledger.iter().map(|a| a.total).collect();
    let expected: Vec<u64> = (1..=RMW_CLIENTS as u64 * RMW_UPDATES).collect();
    assert!(
        totals == expected,
        "acknowledged updates, in resourceVersion order, must have written totals 1..={}; \
         the first that differs is at position {:?}",
        expected.len(),
        totals.iter().zip(&expected).position(|(a, b)| a != b)
    );
    let (last, _) = api
        .client
        .json(Method::GET, RMW_PATH, None, None)
        .await
        .expect("GET the counter");
    assert_eq!(counter(&last, "total"), RMW_CLIENTS as u64 * RMW_UPDATES, "{last}");
    for me in 0..RMW_CLIENTS {
        assert_eq!(
            counter(&last, &format!("c{me:02}")),
            RMW_UPDATES,
            "client {me}'s own counter: {last}"
        );
    }
    assert_eq!(
        rv(&last),
        ledger.last().map(|a| a.rv).unwrap_or_default(),
        "the counter is the last acknowledged update"
    );
    let writes = ledger.len() as u64;
    println!(
        "FIGURE rmw store={store}: {RMW_CLIENTS} clients x {RMW_UPDATES} updates = {writes} acknowledged, \
         0 lost; {conflicts} conflicts (409) retried ({:.1} per update); {:.1} s, {:.0} updates/s",
        conflicts as f64 / writes as f64,
        took.as_secs_f64(),
        writes as f64 / took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_modify_write_loses_no_update_embedded() {
    let api = ApiServerFixture::start().await;
    rmw_storm(&api, "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_modify_write_loses_no_update_etcd() {
    let Some((api, _etcd)) = etcd_fixture(kulisse_core::apiserver::watch::DEFAULT_BOOKMARK_INTERVAL).await else {
        return;
    };
    rmw_storm(&api, "etcd").await;
}

// ---------------------------------------------------------------------------------------
// 1,000 watch reconnects under write churn
// ---------------------------------------------------------------------------------------

const CM: &str = "/api/v1/namespaces/default/configmaps";
/// Each writer pauses this long after a write.
const WRITE_PAUSE: Duration = Duration::from_millis(2);
/// Bookmarks come this often in the watch tests.
const BOOKMARKS: Duration = Duration::from_millis(50);
const WRITERS: usize = 4;
const OBJECTS_PER_WRITER: u64 = 5;
/// Compact the store every this many reconnects, so the next watch's version is too old.
const COMPACT_EVERY: usize = 50;
/// How long to wait for one watch line: a hang guard, not a timing assertion.
const LINE_WAIT: Duration = Duration::from_secs(30);

/// What a watch event or an acknowledged write says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    rv: i64,
    name: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    kind: &'static str,
    /// The object's `data.seq`: which write of its writer produced this content.
    seq: u64,
}

fn seq_of(obj: &Value) -> u64 {
    counter(obj, "seq")
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A writer: create, update and delete its own ConfigMaps until told to stop. Every
/// acknowledged write goes into its ledger with the version and content the server answered.
async fn churn_writer(client: Client, me: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<Change> {
    let mut present = vec![false; OBJECTS_PER_WRITER as usize];
    let mut ledger = Vec::new();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let slot = (n % OBJECTS_PER_WRITER) as usize;
        let name = format!("w{me}-{slot}");
        let path = format!("{CM}/{name}");
        let (method, body, kind) = if !present[slot] {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"seq": n.to_string()}});
            (Method::POST, Some(cm), "ADDED")
        } else if n % 7 == 3 {
            (Method::DELETE, None, "DELETED")
        } else {
            let patch = json!({"data": {"seq": n.to_string()}});
            (Method::PATCH, Some(patch), "MODIFIED")
        };
        let url = if method == Method::POST { CM } else { &path };
        let ct = match method {
            Method::PATCH => Some("application/merge-patch+json"),
            _ => Some("application/json"),
        };
        let (obj, _) = client
            .json(method, url, ct, body.as_ref())
            .await
            .unwrap_or_else(|e| panic!("writer {me}: {kind} {name}: {e}"));
        present[slot] = kind != "DELETED";
        ledger.push(Change {
            rv: rv(&obj),
            name,
            kind,
            seq: seq_of(&obj),
        });
        // Churn, not a flood: the watcher should be able to keep up between compactions.
        tokio::time::sleep(WRITE_PAUSE).await;
    }
    ledger
}

/// One line of a watch stream, read from the raw bytes.
struct WatchLines {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, ClientError>> + Send>>,
    buf: Vec<u8>,
}

impl WatchLines {
    async fn open(client: &Client, from: i64, bookmarks: bool) -> WatchLines {
        let mut url = format!("{CM}?watch=true&resourceVersion={from}");
        if bookmarks {
            url.push_str("&allowWatchBookmarks=true");
        }
        let body = client
            .stream(Method::GET, &url)
            .await
            .unwrap_or_else(|e| panic!("watch from {from}: {e}"));
        WatchLines { body, buf: Vec::new() }
    }

    /// The next event (`type`, `object`); `None` if none came within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<(String, Value)> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let v: Value = serde_json::from_slice(&line)
                    .unwrap_or_else(|e| panic!("a watch line is not JSON ({e}): {}", String::from_utf8_lossy(&line)));
                let kind = v["type"].as_str().unwrap_or_default().to_string();
                return Some((kind, v["object"].clone()));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("the watch connection broke: {e}"),
                Ok(None) => panic!("the server ended the watch"),
                Err(_) => return None,
            }
        }
    }
}

/// The state the ledger says the collection had at revision `at`: name → (rv, seq).
fn ledger_state(ledger: &[Change], at: i64) -> BTreeMap<String, (i64, u64)> {
    let mut state = BTreeMap::new();
    for c in ledger.iter().filter(|c| c.rv <= at) {
        if c.kind == "DELETED" {
            state.remove(&c.name);
        } else {
            state.insert(c.name.clone(), (c.rv, c.seq));
        }
    }
    state
}

/// The events of one run of watches, from a list to the 410 that ended it.
struct Segment {
    /// The version it starts after (a list's).
    from: i64,
    /// The version it reached (its last event or bookmark) when a 410 ended it.
    to: Option<i64>,
    events: Vec<Change>,
}

/// What the watcher saw: its events, and the lists it made after a `410`.
#[derive(Default)]
struct Watcher {
    /// The version to resume from.
    last: i64,
    /// Events between relists.
    segments: Vec<Segment>,
    /// Lists made after a 410: (their version, their items as name → (rv, seq)).
    relists: Vec<(i64, BTreeMap<String, (i64, u64)>)>,
    expired: usize,
    bookmarks: usize,
}

impl Watcher {
    /// List the collection and start a new segment at the list's version.
    async fn relist(&mut self, client: &Client) {
        let (list, _) = client.json(Method::GET, CM, None, None).await.expect("relist");
        let at = rv(&list);
        let items = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|o| (name_of(o), (rv(o), seq_of(o))))
            .collect();
        self.relists.push((at, items));
        if let Some(open) = self.segments.last_mut() {
            open.to = Some(self.last);
        }
        self.segments.push(Segment {
            from: at,
            to: None,
            events: Vec::new(),
        });
        self.last = at;
    }

    /// Handle one line; `false` when the watch must end (after a 410 and the relist).
    async fn take(&mut self, client: &Client, kind: &str, obj: Value) -> bool {
        match kind {
            "ERROR" => {
                assert_eq!(
                    (obj["kind"].as_str(), obj["code"].as_i64(), obj["reason"].as_str()),
                    (Some("Status"), Some(410), Some("Expired")),
                    "a watch from a compacted version must end with a 410 Expired Status: {obj}"
                );
                self.expired += 1;
                self.relist(client).await;
                false
            }
            "BOOKMARK" => {
                let at = rv(&obj);
                assert!(at >= self.last, "a bookmark went back from {} to {at}", self.last);
                self.last = at;
                self.bookmarks += 1;
                true
            }
            "ADDED" | "MODIFIED" | "DELETED" => {
                let change = Change {
                    rv: rv(&obj),
                    name: name_of(&obj),
                    kind: match kind {
                        "ADDED" => "ADDED",
                        "MODIFIED" => "MODIFIED",
                        _ => "DELETED",
                    },
                    seq: seq_of(&obj),
                };
                assert!(
                    change.rv > self.last,
                    "event {change:?} is not newer than the version {} the watch resumed from: a duplicate",
                    self.last
                );
                self.last = change.rv;
                self.segments.last_mut().expect("a segment").events.push(change);
                true
            }
            other => panic!("unexpected watch event type {other:?}: {obj}"),
        }
    }
}

/// `reconnects` watches, each resuming from the last version the one before saw, while
/// writers churn; every `COMPACT_EVERY` reconnects a compaction forces a 410 and a relist.
async fn watch_reconnects(api: &ApiServerFixture, store: &str, reconnects: usize) {
    let client = &api.client;
    let mut watcher = Watcher::default();
    watcher.relist(client).await;
    watcher.relists.clear(); // the first list is the start, not a recovery
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|me| tokio::spawn(churn_writer(client.clone(), me, stop.clone())))
        .collect();
    let started = Instant::now();
    let mut compactions = 0;
    for reconnect in 0..reconnects {
        if reconnect % 50 == 0 {
            eprintln!(
                "watch {store}: reconnect {reconnect} at {:.1} s, version {}",
                started.elapsed().as_secs_f64(),
                watcher.last
            );
        }
        if reconnect % COMPACT_EVERY == COMPACT_EVERY / 2 {
            // Compact past the watcher's version (the writers move the store on meanwhile).
            let at = kulisse_tests::inproc::eventually(30, "the writers to move the store on", || async {
                let now = api.store.current_revision().await.expect("revision");
                (now > watcher.last + 1).then_some(now)
            })
            .await;
            api.store.compact(at).await.expect("compact");
            compactions += 1;
        }
        // The API server's watch cache (kube-apiserver's Cacher) keeps serving versions it
        // still holds after the store compacted, as upstream's does; `410 Expired` comes for a
        // version older than both. So right after a compaction this watcher resumes as a
        // client that was away a long time: from version 1.
        let away = compactions > 0 && reconnect % COMPACT_EVERY == COMPACT_EVERY / 2;
        let from = if away { 1 } else { watcher.last };
        // Read a few events (1 to 5), then drop the connection and resume; every tenth
        // watch reads on until a bookmark, and resumes from the bookmark's version.
        let until_bookmark = reconnect % 10 == 9;
        let mut lines = WatchLines::open(client, from, until_bookmark || reconnect % 2 == 1).await;
        let (reads, wait) = match until_bookmark {
            true => (usize::MAX, LINE_WAIT),
            false => (1 + reconnect % 5, Duration::from_millis(500)),
        };
        let deadline = tokio::time::Instant::now() + wait;
        for _ in 0..reads {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((kind, obj)) = lines.next(left).await else {
                assert!(!until_bookmark, "no bookmark came within {LINE_WAIT:?}");
                break;
            };
            let bookmark = kind == "BOOKMARK";
            if !watcher.take(client, &kind, obj).await || (bookmark && until_bookmark) {
                break;
            }
        }
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ledger = Vec::new();
    for w in writers {
        ledger.extend(w.await.expect("a writer panicked"));
    }
    ledger.sort_by_key(|c| c.rv);
    let end = ledger.last().map(|c| c.rv).unwrap_or_default();
    // Catch up to the last write.
    while watcher.last < end {
        let mut lines = WatchLines::open(client, watcher.last, false).await;
        while watcher.last < end {
            let (kind, obj) = lines
                .next(LINE_WAIT)
                .await
                .expect("the watch catches up to the last write");
            if !watcher.take(client, &kind, obj).await {
                break;
            }
        }
    }

    // Each segment holds exactly the acknowledged writes from its start to its last event.
    let mut events = 0;
    for (i, segment) in watcher.segments.iter().enumerate() {
        let (from, to) = (segment.from, segment.to.unwrap_or(end));
        let written: Vec<&Change> = ledger.iter().filter(|c| c.rv > from && c.rv <= to).collect();
        let seen: Vec<&Change> = segment.events.iter().collect();
        if written != seen {
            let gap = written.iter().find(|c| !seen.contains(c));
            let extra = seen.iter().find(|c| !written.contains(c));
            panic!(
                "segment {i} after version {from}: {} writes acknowledged, {} events seen; first missing: {gap:?}, first extra: {extra:?}",
                written.len(),
                seen.len()
            );
        }
        events += seen.len();
    }
    // Each relist after a 410 is the state the ledger says the collection had at its version.
    for (at, items) in &watcher.relists {
        assert_eq!(items, &ledger_state(&ledger, *at), "the list at version {at}");
    }
    assert!(
        watcher.expired >= compactions.min(1) && !watcher.relists.is_empty(),
        "the compactions must have sent the watcher at least one 410 ({} seen)",
        watcher.expired
    );
    println!(
        "FIGURE watch store={store}: {reconnects} reconnects in {:.1} s under {} acknowledged writes by {WRITERS} writers; \
         {events} events, 0 gaps, 0 duplicates; {compactions} compactions -> {} x 410 Expired, each relisted and resumed; {} bookmarks",
        took.as_secs_f64(),
        ledger.len(),
        watcher.expired,
        watcher.bookmarks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_see_every_write_once_embedded() {
    let api = ApiServerFixture::start_with_bookmarks(BOOKMARKS).await;
    watch_reconnects(&api, "embedded", 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_see_every_write_once_etcd() {
    let Some((api, _etcd)) = etcd_fixture(BOOKMARKS).await else {
        return;
    };
    // etcd syncs a watch that starts in the past every 100 ms (its `syncWatchersLoop`), so
    // each reconnect under churn costs about a tenth of a second: fewer of them here.
    watch_reconnects(&api, "etcd", 250).await;
}

// ---------------------------------------------------------------------------------------
// kill -9 of `kulisse up` during an apply/scale storm
// ---------------------------------------------------------------------------------------

const STORM_CLIENTS: usize = 4;
const CMS_PER_CLIENT: usize = 4;
/// How long the cluster may take to come back and reconverge: a hang guard only.
const CONVERGE_GUARD: Duration = Duration::from_secs(90);

/// What a client wrote into an object: a ConfigMap's `data.seq`, a Deployment's
/// `spec.replicas`, or nothing (absent: never created, or deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Absent,
    Is(u64),
}

/// One object of the ledger, owned by one client (nobody else writes its content).
#[derive(Debug, Clone)]
struct Tracked {
    name: String,
    deployment: bool,
    /// The last acknowledged write: its resourceVersion (0 for a delete) and content.
    acked: (i64, Content),
    /// A write sent and not answered when the server died: it may or may not have landed.
    pending: Option<Content>,
}

/// A client's share of the ledger, and its count of operations (it goes on across restarts).
struct StormClient {
    me: usize,
    ops: u64,
    objects: Vec<Tracked>,
}

fn deployment(name: &str, replicas: u64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "localhost/busybox:latest"}]}
            }
        }
    })
}

impl StormClient {
    fn new(me: usize) -> StormClient {
        let mut objects: Vec<Tracked> = (0..CMS_PER_CLIENT)
            .map(|i| Tracked {
                name: format!("s{me}-{i}"),
                deployment: false,
                acked: (0, Content::Absent),
                pending: None,
            })
            .collect();
        objects.push(Tracked {
            name: format!("d{me}"),
            deployment: true,
            acked: (0, Content::Absent),
            pending: None,
        });
        StormClient { me, ops: 0, objects }
    }

    /// Write until the server goes away. ConfigMaps are applied (server-side apply: created
    /// when absent) or deleted; the Deployment is applied whole or scaled through its
    /// `scale` subresource. Every 2xx goes into the ledger; any other API error is a bug.
    async fn storm(mut self, client: Client, acks: Arc<std::sync::atomic::AtomicUsize>) -> Result<Self, String> {
        let cm_info = kulisse_core::objects::by_gvk("v1", "ConfigMap").expect("ConfigMap");
        let deploy_info = kulisse_core::objects::by_gvk("apps/v1", "Deployment").expect("Deployment");
        loop {
            self.ops += 1;
            let n = self.ops;
            let slot = (n as usize) % self.objects.len();
            let obj = &mut self.objects[slot];
            let (want, answer) = if obj.deployment {
                let replicas = 1 + n % 3;
                let answer = if n % 2 == 0 || obj.acked.1 == Content::Absent {
                    client
                        .apply(&deployment(&obj.name, replicas), "storm", false)
                        .await
                        .map(|(v, _)| v)
                } else {
                    let patch = json!({"spec": {"replicas": replicas}});
                    client
                        .merge_patch(deploy_info, Some("default"), &obj.name, Some("scale"), &patch)
                        .await
                };
                (Content::Is(replicas), answer)
            } else if obj.acked.1 != Content::Absent && n % 5 == 0 {
                let answer = client.delete(cm_info, Some("default"), &obj.name, None).await;
                (Content::Absent, answer)
            } else {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": obj.name}, "data": {"seq": n.to_string()}});
                let answer = client.apply(&cm, "storm", false).await.map(|(v, _)| v);
                (Content::Is(n), answer)
            };
            obj.pending = Some(want);
            match answer {
                Ok(v) => {
                    let version = if want == Content::Absent { 0 } else { rv(&v) };
                    obj.acked = (version, want);
                    obj.pending = None;
                    acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(ClientError::Api(e)) => {
                    return Err(format!("client {}: writing {} failed: {e}", self.me, obj.name));
                }
                // The server is gone (connection refused, reset, or cut mid-answer).
                Err(_) => return Ok(self),
            }
        }
    }

    /// Check this client's objects against the ledger on a restarted server, then take what
    /// is there as the new truth (resolving the writes that were in flight). Returns how
    /// many of the writes in flight had landed.
    async fn verify(&mut self, client: &Client) -> Result<usize, String> {
        let mut landed = 0;
        let cm_info = kulisse_core::objects::by_gvk("v1", "ConfigMap").expect("ConfigMap");
        let deploy_info = kulisse_core::objects::by_gvk("apps/v1", "Deployment").expect("Deployment");
        for obj in &mut self.objects {
            let info = if obj.deployment { deploy_info } else { cm_info };
            let (version, found) = match client.get(info, Some("default"), &obj.name).await {
                Ok(v) if obj.deployment => (rv(&v), Content::Is(v["spec"]["replicas"].as_u64().unwrap_or(0))),
                Ok(v) => (rv(&v), Content::Is(seq_of(&v))),
                Err(ClientError::Api(e)) if e.code == 404 => (0, Content::Absent),
                Err(e) => return Err(format!("GET {}: {e}", obj.name)),
            };
            let (acked_rv, acked) = obj.acked;
            if found != acked && Some(found) != obj.pending {
                return Err(format!(
                    "LOST: {} was last acknowledged as {acked:?} at resourceVersion {acked_rv} (in flight: {:?}), but is {found:?} at {version}",
                    obj.name, obj.pending
                ));
            }
            // A ConfigMap is written by its client only: same content, same version. A
            // Deployment's status is written by the controllers, so its version may be newer.
            let version_ok = match (found == acked, acked, obj.deployment) {
                (true, Content::Is(_), false) => version == acked_rv,
                (true, Content::Is(_), true) => version >= acked_rv,
                _ => true,
            };
            if !version_ok {
                return Err(format!(
                    "{} has the acknowledged content {acked:?} but resourceVersion {version}, not {acked_rv}",
                    obj.name
                ));
            }
            if found != acked {
                landed += 1;
            }
            obj.acked = (version, found);
            obj.pending = None;
        }
        Ok(landed)
    }
}

/// The Deployments the ledger says exist, with their replicas.
fn deployments_in(clients: &[StormClient]) -> Vec<(String, u64)> {
    clients
        .iter()
        .flat_map(|c| &c.objects)
        .filter(|o| o.deployment)
        .filter_map(|o| match o.acked.1 {
            Content::Is(r) => Some((o.name.clone(), r)),
            Content::Absent => None,
        })
        .collect()
}

/// Whether every Deployment has all its pods available, each running in a container that
/// was started at or after `since` (by the restarted cluster, not before the kill).
async fn converged(client: &Client, wanted: &[(String, u64)], since: chrono::DateTime<chrono::Utc>) -> bool {
    let deploy_info = kulisse_core::objects::by_gvk("apps/v1", "Deployment").expect("Deployment");
    let pod_info = kulisse_core::objects::by_gvk("v1", "Pod").expect("Pod");
    let Ok(pods) = client.list(pod_info, Some("default"), &Default::default()).await else {
        return false;
    };
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    for (name, replicas) in wanted {
        let Ok(d) = client.get(deploy_info, Some("default"), name).await else {
            return false;
        };
        let status = |k: &str| d["status"][k].as_u64().unwrap_or(0);
        if d["status"]["observedGeneration"].as_i64() < d["metadata"]["generation"].as_i64()
            || [
                status("replicas"),
                status("updatedReplicas"),
                status("availableReplicas"),
            ] != [*replicas; 3]
        {
            return false;
        }
        let serving = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == name.as_str())
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                let ready = p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                let started = p
                    .pointer("/status/containerStatuses/0/state/running/startedAt")
                    .and_then(Value::as_str)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                ready && started.is_some_and(|t| t >= since)
            })
            .count() as u64;
        if serving != *replicas {
            return false;
        }
    }
    true
}

/// min / median / max of some durations, in seconds.
fn spread(mut xs: Vec<f64>) -> String {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => "none".to_string(),
        n => format!("min {:.2} s, median {:.2} s, max {:.2} s", xs[0], xs[n / 2], xs[n - 1]),
    }
}

/// `kills` times: start (or restart) `kulisse up` on one data dir, check every object against
/// the ledger, wait until the Deployments are available again, run the storm, `kill -9`.
fn kill_storm(extra: &[&str], kills: usize, store: &str) {
    let data = tempfile::tempdir().expect("temp dir");
    let cidr = kulisse_tests::cluster::unique_service_cidr();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--service-cidr", &cidr]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut clients: Vec<StormClient> = (0..STORM_CLIENTS).map(StormClient::new).collect();
    let (mut starts, mut converges) = (Vec::new(), Vec::new());
    let (mut total_acks, mut in_flight, mut landed) = (0, 0, 0);
    for round in 0..=kills {
        // Containers started before the kill have a startedAt of at most this second; wait
        // for the next one, so that "started since the restart" is decidable.
        let since = chrono::Utc::now().with_nanosecond(0).expect("whole second") + chrono::Duration::seconds(1);
        while chrono::Utc::now() < since {
            std::thread::sleep(Duration::from_millis(20));
        }
        let t0 = Instant::now();
        let mut cluster = kulisse_tests::cluster::Cluster::start_in(data.path(), &args);
        starts.push(t0.elapsed().as_secs_f64());
        let client = Client::from_kubeconfig(&cluster.kubeconfig()).expect("client");
        rt.block_on(async {
            for c in &mut clients {
                match c.verify(&client).await {
                    Ok(n) => landed += n,
                    Err(e) => panic!("after kill {round} of {kills} ({store} store): {e}"),
                }
            }
        });
        if round > 0 {
            let wanted = deployments_in(&clients);
            let deadline = Instant::now() + CONVERGE_GUARD;
            while !rt.block_on(converged(&client, &wanted, since)) {
                assert!(
                    Instant::now() < deadline,
                    "after kill {round}, the Deployments {wanted:?} were not available again within {CONVERGE_GUARD:?}:\n{}",
                    cluster.ok(&["get", "deploy,pods", "-o", "wide"])
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            converges.push(t0.elapsed().as_secs_f64());
        }
        if round % 10 == 0 {
            eprintln!("kill storm {store}: round {round} of {kills}, {total_acks} writes acknowledged so far");
        }
        if round == kills {
            break;
        }
        // The storm: every client writes until the server dies; kill -9 after a number of
        // acknowledged writes that varies from round to round.
        let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let target = 20 + (round * 37) % 60;
        let tasks: Vec<_> = std::mem::take(&mut clients)
            .into_iter()
            .map(|c| rt.spawn(c.storm(client.clone(), acks.clone())))
            .collect();
        let deadline = Instant::now() + CONVERGE_GUARD;
        while acks.load(std::sync::atomic::Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline && !tasks.iter().any(|t| t.is_finished()),
                "the storm stopped before the kill ({} acknowledged writes): a client failed",
                acks.load(std::sync::atomic::Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        cluster.kill9();
        for t in tasks {
            match rt.block_on(t).expect("a storm client panicked") {
                Ok(c) => clients.push(c),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        total_acks += acks.load(std::sync::atomic::Ordering::Relaxed);
        in_flight += clients
            .iter()
            .flat_map(|c| &c.objects)
            .filter(|o| o.pending.is_some())
            .count();
    }
    println!(
        "FIGURE kill-9 store={store}: {kills} x kill -9 during a storm of {STORM_CLIENTS} clients; {total_acks} acknowledged writes, 0 lost \
         ({in_flight} writes unanswered at a kill, {landed} of them landed); restart until ready: {}; restart until every Deployment available again: {}",
        spread(starts),
        spread(converges)
    );
}

#[test]
fn kill_9_storm_loses_no_acknowledged_write_embedded() {
    kill_storm(&[], 50, "embedded");
}

#[test]
fn kill_9_storm_loses_no_acknowledged_write_etcd() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    kill_storm(&["--store", "etcd", "--etcd-endpoints", &etcd.endpoint], 50, "etcd");
}

// ---------------------------------------------------------------------------------------
// A change right at the compaction point
// ---------------------------------------------------------------------------------------

/// A watch that starts exactly at the compaction point gets the change made at that
/// revision, although the object's previous version (which a `DELETED` event carries) was
/// compacted away: the change is delivered, or the watch ends with an `ERROR` (and the client
/// relists, as upstream's reflector does) — it is never skipped. A later write is the
/// sentinel: seeing it first would mean the change was lost.
async fn change_at_the_compaction_point(api: &ApiServerFixture) {
    for delete in [true, false] {
        let name = if delete { "gone" } else { "changed" };
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"seq": "1"}});
        let client = &api.client;
        client
            .json(Method::POST, CM, Some("application/json"), Some(&cm))
            .await
            .expect("create");
        let path = format!("{CM}/{name}");
        let (changed, _) = if delete {
            client.json(Method::DELETE, &path, None, None).await
        } else {
            let patch = json!({"data": {"seq": "2"}});
            client
                .json(Method::PATCH, &path, Some("application/merge-patch+json"), Some(&patch))
                .await
        }
        .expect("change");
        let at = api.store.current_revision().await.expect("revision");
        api.store.compact(at).await.expect("compact");
        let mut lines = WatchLines::open(client, at - 1, false).await;
        let sentinel = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("after-{name}")}});
        client
            .json(Method::POST, CM, Some("application/json"), Some(&sentinel))
            .await
            .expect("create the sentinel");
        let (kind, obj) = lines.next(LINE_WAIT).await.expect("an event");
        let expected = if delete { "DELETED" } else { "MODIFIED" };
        assert!(
            (kind == expected && name_of(&obj) == name && rv(&obj) == at) || kind == "ERROR",
            "a watch from the compaction point {at} must begin with the {expected} of {name} at {at} \
             (or an ERROR), not with {kind} {obj} (the change was {changed})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_at_the_compaction_point_is_not_skipped_embedded() {
    change_at_the_compaction_point(&ApiServerFixture::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_at_the_compaction_point_is_not_skipped_etcd() {
    let Some((api, _etcd)) = etcd_fixture(kulisse_core::apiserver::watch::DEFAULT_BOOKMARK_INTERVAL).await else {
        return;
    };
    change_at_the_compaction_point(&api).await;
}
