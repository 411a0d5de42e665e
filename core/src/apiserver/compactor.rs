//! # The compactor: history is kept for one interval (mirrors kube-apiserver's etcd3 compactor)
//!
//! Every write leaves a revision in the store's history, and the store keeps that history
//! until someone *compacts* it ([`crate::store::Store::compact`]). Without compaction the
//! store file grows with every status update, for ever. etcd compacts nothing by itself
//! in a Kubernetes cluster; the API server does, on a schedule
//! (`--etcd-compaction-interval`, five minutes by default), in
//! `k8s.io/apiserver/pkg/storage/etcd3/compact.go`. kulisse's does the same, for both
//! stores (`--etcd-compaction-interval` on `kulisse up`).
//!
//! ## One interval of history, and one compaction for many API servers
//! At each tick the compactor compacts at the revision it saw at the *previous* tick, so
//! the store always keeps at least one interval of history: a client whose watch broke a
//! minute ago can still resume from its `resourceVersion`. Older ones get `410 Gone` and
//! list again.
//!
//! With several API servers on one store, each runs a compactor, yet one compaction per
//! interval is enough. They agree through one key, `compact_rev_key`: at each tick a
//! compactor rewrites it *on condition* that it is still as this compactor last saw it.
//! The one that wins compacts; the others learn the key's new revision and wait for the
//! next tick. (Upstream compares the key's `version`; kulisse's store compares
//! `mod_revision`, which works the same.)
//!
//! The watch cache ([`super::cacher`]) keeps its own window of events in memory, so
//! watches it serves do not notice a compaction at all; a client asking for a revision
//! older than both the cache's window and the store's history gets `410 Expired`.

use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument, info_span};

use crate::store::{Revision, Store, StoreError, TxnOutcome};

/// The key compactors agree through (the same key kube-apiserver writes in etcd).
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// kube-apiserver's `--etcd-compaction-interval` default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What one compactor remembers between ticks: the `compact_rev_key` revision it last saw
/// (upstream: `compactTime`) and the store revision at the last tick (the next target).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compactor {
    seen: Revision,
    last_revision: Revision,
}

/// What a tick did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// This compactor won the key and compacted history before `revision`.
    Compacted { revision: Revision },
    /// This compactor won the key; there was nothing to compact yet (first tick).
    Started,
    /// Another API server wrote the key since this one last saw it: it compacts.
    OtherCompacted,
}

impl Compactor {
    /// One tick: try to take the key, and on success compact at the previous tick's revision.
    pub async fn tick(&mut self, store: &dyn Store) -> Result<Tick, StoreError> {
        let target = self.last_revision;
        let value = target.to_string().into_bytes();
        let outcome = if self.seen == 0 {
            store.create(COMPACT_REV_KEY, value).await?
        } else {
            store.update(COMPACT_REV_KEY, value, self.seen).await?
        };
        match outcome {
            TxnOutcome::Succeeded { kv } => {
                self.seen = kv.mod_revision;
                // The revision of this very write: the store's revision now.
                self.last_revision = kv.mod_revision;
                if target == 0 {
                    return Ok(Tick::Started);
                }
                match store.compact(target).await {
                    // Compacted already (by hand, or a store that compacts itself): fine.
                    Ok(()) | Err(StoreError::Compacted { .. }) => Ok(Tick::Compacted { revision: target }),
                    Err(e) => Err(e),
                }
            }
            TxnOutcome::Conflict { current } => {
                // Someone else wrote the key (or deleted it): remember what is there now, and
                // the store's revision, as upstream's compactor does on a lost race.
                self.seen = current.as_ref().map_or(0, |kv| kv.mod_revision);
                self.last_revision = store.current_revision().await?;
                Ok(Tick::OtherCompacted)
            }
        }
    }
}

/// Compact `store` every `interval` until `stop` resolves. An interval of zero turns the
/// compactor off (as `--etcd-compaction-interval=0` does upstream). A failed tick is logged
/// and tried again at the next one.
pub async fn run(store: Arc<dyn Store>, interval: Duration, stop: impl std::future::Future<Output = ()>) {
    if interval.is_zero() {
        return;
    }
    tokio::pin!(stop);
    let mut compactor = Compactor::default();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let span = {
            let _untraced =
                kulisse_traces::propagation::untraced_unless(kulisse_traces::propagation::background_tracing_enabled());
            info_span!(
                "store.compact",
                "kulisse.stage" = "store",
                "store.backend" = store.name(),
                "store.revision" = tracing::field::Empty,
            )
        };
        let result = compactor.tick(store.as_ref()).instrument(span.clone()).await;
        match result {
            Ok(Tick::Compacted { revision }) => {
                span.record("store.revision", revision);
                tracing::info!(revision, "compacted the store's history");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "compaction failed; trying again at the next interval"),
        }
    }
}
