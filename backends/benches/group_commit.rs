//! # Group commit, measured
//!
//! Every acknowledged write to the embedded store is fsynced (as etcd fsyncs its WAL). One
//! writer can therefore do at most about one write per fsync. Many concurrent writers — the
//! API server serving many clients — share fsyncs: the store's writer thread puts every
//! waiting request into one redb transaction and commits once.
//!
//! This benchmark runs the same store with 1 writer and with 64 concurrent writers and
//! prints writes/s for both, their ratio, and the average batch size. It asserts nothing
//! about timing; the numbers depend on the disk.
//!
//! Run: `cargo bench -p kulisse-backends --bench group_commit`

use std::sync::Arc;
use std::time::Instant;

use kulisse_backends::store::embedded::{CommitStats, EmbeddedStore};
use kulisse_core::store::{Store, TxnOutcome};

const SEQUENTIAL_WRITES: usize = 2_000;
const CONCURRENT_WRITERS: usize = 64;
const WRITES_PER_WRITER: usize = 100;

fn delta(after: CommitStats, before: CommitStats) -> CommitStats {
    CommitStats {
        batches: after.batches - before.batches,
        requests: after.requests - before.requests,
        commits: after.commits - before.commits,
        lagged_watchers: after.lagged_watchers - before.lagged_watchers,
    }
}

async fn write(store: &EmbeddedStore, key: String) -> Result<(), String> {
    match store.create(&key, vec![b'x'; 512]).await {
        Ok(TxnOutcome::Succeeded { .. }) => Ok(()),
        Ok(TxnOutcome::Conflict { .. }) => Err(format!("unexpected conflict on {key}")),
        Err(e) => Err(format!("write of {key} failed: {e}")),
    }
}

async fn run() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let path = dir.path().join("bench.redb");
    let store = EmbeddedStore::open(&path).map_err(|e| e.to_string())?;
    println!("group commit benchmark on {}", path.display());

    // Warm up (file creation, first allocations).
    for i in 0..50 {
        write(&store, format!("/registry/warmup/{i}")).await?;
    }

    // 1 writer: each write waits for its own fsync.
    let before = store.stats();
    let start = Instant::now();
    for i in 0..SEQUENTIAL_WRITES {
        write(&store, format!("/registry/seq/{i:06}")).await?;
    }
    let seq_secs = start.elapsed().as_secs_f64();
    let seq = delta(store.stats(), before);
    let seq_rate = SEQUENTIAL_WRITES as f64 / seq_secs;

    // 64 writers at once: waiting requests share one transaction and one fsync.
    let before = store.stats();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENT_WRITERS {
        let store: Arc<EmbeddedStore> = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES_PER_WRITER {
                write(&store, format!("/registry/par/w{w:02}-{i:04}")).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("writer task failed: {e}"))??;
    }
    let par_secs = start.elapsed().as_secs_f64();
    let par = delta(store.stats(), before);
    let par_writes = CONCURRENT_WRITERS * WRITES_PER_WRITER;
    let par_rate = par_writes as f64 / par_secs;

    println!(
        " 1 writer : {SEQUENTIAL_WRITES:>6} writes in {seq_secs:>7.3} s = {seq_rate:>9.0} writes/s, \
         {} commits, average batch {:.2}",
        seq.commits,
        seq.average_batch()
    );
    println!(
        "{CONCURRENT_WRITERS} writers: {par_writes:>6} writes in {par_secs:>7.3} s = {par_rate:>9.0} writes/s, \
         {} commits, average batch {:.2}",
        par.commits,
        par.average_batch()
    );
    println!(
        "ratio (concurrent / sequential throughput): {:.2}x",
        par_rate / seq_rate
    );
    Ok(())
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("group commit benchmark failed: {e}");
        std::process::exit(1);
    }
}
