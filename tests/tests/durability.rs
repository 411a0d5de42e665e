//! Failures survived with nothing lost: the single-process cluster and its store under
//! crashes, conflicting writers and reconnecting watchers (issue 14's failure tests).
//!
//! - **Read-modify-write under conflict**: 32 clients × 200 increments of one object, each a
//!   `GET`, a change and a `PUT` that carries the `resourceVersion` it read, retried on
//!   `409 Conflict` — client-go's `retry.RetryOnConflict`. Optimistic concurrency must turn
//!   every race into a 409, never into a lost update.
//!
//! Every test checks its result against a **ledger**: what the server acknowledged (a 2xx
//! answer) is written down with the object's `resourceVersion` and content, and the final
//! state must account for every entry. The figures (how many conflicts, how long) are
//! printed; nothing is timed in an assertion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A fresh single-member etcd and an API server over it; `None`: skip (etcd missing, not CI).
async fn etcd_fixture() -> Option<(ApiServerFixture, EtcdServer)> {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("starting etcd panicked")?;
    let store = EtcdStore::connect(std::slice::from_ref(&server.endpoint))
        .await
        .unwrap_or_else(|e| panic!("connect to etcd: {e}\n{}", server.log_tail()));
    Some((
        ApiServerFixture::start_with_store(store as Arc<dyn Store>).await,
        server,
    ))
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
    let Some((api, _etcd)) = etcd_fixture().await else {
        return;
    };
    rmw_storm(&api, "etcd").await;
}
