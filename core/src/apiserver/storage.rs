//! # Storage: turning objects into keys and revisions (mirrors the API server's `storage/etcd3` layer)
//!
//! The API server never hands a [`Store`] key-value pair to a client. Between the REST
//! handlers and the store sits this layer, which does what kube-apiserver's
//! `k8s.io/apiserver/pkg/storage/etcd3` does:
//!
//! - it picks the key for an object: `/registry/deployments/default/web`;
//! - it serialises the object as JSON (unknown fields included: nothing is dropped) —
//!   kulisse's choice, so that `etcdctl` shows readable values; kube-apiserver stores the
//!   built-in types as protobuf (and custom resources as JSON);
//! - it strips `metadata.resourceVersion` before writing and puts it back on every read,
//!   taken from the key's `mod_revision`. So the version a client sees *is* the store
//!   revision of its last change, and a conditional write ("update if still at
//!   revision R") is exactly how `409 Conflict` arises.
//!
//! Events get a time to live: the store deletes each one [`Storage::with_event_ttl`] after its
//! last write (kube-apiserver's `--event-ttl`, an hour; in etcd, a lease), so the busiest
//! kind of object does not pile up for ever.
//!
//! Every call is wrapped in a `store.*` span (stage `store`) with the key and revision
//! as attributes, so a trace shows the moment the desired state became durable.

use std::sync::Arc;

use serde_json::Value;
use tracing::{Instrument, info_span};

use crate::objects::{ApiError, ResourceInfo};
use crate::store::{self, KeyValue, ProgressStream, Revision, Store, StoreError, TxnOutcome};

/// An object read from the store, with the revision it was last changed at.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The object, with `metadata.resourceVersion` filled in.
    pub object: Value,
    /// The store revision of the object's last change (== its resourceVersion).
    pub revision: Revision,
}

/// The result of a list: objects plus the revision the list reflects.
#[derive(Debug)]
pub struct Listed {
    pub items: Vec<Stored>,
    pub revision: Revision,
}

/// The objects ↔ keys layer over a [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Store>,
    /// Where every successful write is recorded with its writer ([`super::audit`]), if on.
    audit: Option<Arc<super::audit::AuditLog>>,
    /// How long an Event lives after its last write (`None`: for ever).
    event_ttl: Option<std::time::Duration>,
}

impl Storage {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Storage {
            store,
            audit: None,
            event_ttl: None,
        }
    }

    /// The same storage, recording every successful write in `audit`.
    pub fn with_audit(self, audit: Option<Arc<super::audit::AuditLog>>) -> Self {
        Storage { audit, ..self }
    }

    fn audit(&self, info: &ResourceInfo, ns: Option<&str>, name: &str, outcome: &TxnOutcome, code: u16) {
        if let (Some(log), TxnOutcome::Succeeded { kv }) = (&self.audit, outcome) {
            log.record(info, ns, name, kv.mod_revision, code);
        }
    }

    /// Let the store delete Events `ttl` after their last write (zero: keep them).
    pub fn with_event_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.event_ttl = (!ttl.is_zero()).then_some(ttl);
        self
    }

    /// The TTL of objects of `info`'s kind: Events have one (upstream's events registry sets
    /// a `TTLFunc`), nothing else does.
    fn ttl_of(&self, info: &ResourceInfo) -> Option<std::time::Duration> {
        self.event_ttl.filter(|_| info.plural == "events")
    }

    /// The underlying store (for the watch handler and for tests).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Read one object. `Ok(None)` when it does not exist.
    pub async fn get(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Option<Stored>, ApiError> {
        let key = store::object_key(info.plural, ns, name);
        let span = info_span!("store.get", "kulisse.stage" = "store", "store.key" = %key, "store.backend" = self.store.name(), "store.found" = tracing::field::Empty, "store.mod_revision" = tracing::field::Empty);
        let kv = self
            .store
            .get(&key)
            .instrument(span.clone())
            .await
            .map_err(store_error)?;
        span.record("store.found", kv.is_some());
        if let Some(kv) = &kv {
            span.record("store.mod_revision", kv.mod_revision);
        }
        kv.map(|kv| decode(&kv)).transpose()
    }

    /// List the objects of one resource in a namespace (or in all of them with `ns: None`).
    pub async fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        revision: Option<Revision>,
    ) -> Result<Listed, ApiError> {
        let prefix = store::list_prefix(info.plural, if info.namespaced { ns } else { None });
        let span = info_span!("store.range", "kulisse.stage" = "store", "store.prefix" = %prefix, "store.backend" = self.store.name(), "store.count" = tracing::field::Empty, "store.revision" = tracing::field::Empty);
        let result = self
            .store
            .range(&prefix, revision, None)
            .instrument(span.clone())
            .await
            .map_err(store_error)?;
        span.record("store.count", result.kvs.len());
        span.record("store.revision", result.revision);
        let items = result.kvs.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        Ok(Listed {
            items,
            revision: result.revision,
        })
    }

    /// Create a new object. Fails with `AlreadyExists` if the key exists.
    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Stored, ApiError> {
        let key = store::object_key(info.plural, ns, name);
        let value = encode(object)?;
        let span = txn_span("create", &key, self.store.name(), None);
        let write = async {
            match self.ttl_of(info) {
                Some(ttl) => self.store.create_with_ttl(&key, value, ttl).await,
                None => self.store.create(&key, value).await,
            }
        };
        let outcome = write.instrument(span.clone()).await.map_err(store_error)?;
        record_outcome(&span, &outcome);
        self.audit(info, ns, name, &outcome, 201);
        match outcome {
            TxnOutcome::Succeeded { kv } => decode(&kv),
            TxnOutcome::Conflict { .. } => Err(ApiError::already_exists(info, name)),
        }
    }

    /// Replace an object if it is still at revision `expected` (optimistic concurrency).
    /// On a stale revision this is Kubernetes' `409 Conflict`.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        object: &Value,
        expected: Revision,
    ) -> Result<Stored, ApiError> {
        let key = store::object_key(info.plural, ns, name);
        let value = encode(object)?;
        let span = txn_span("update", &key, self.store.name(), Some(expected));
        let write = async {
            match self.ttl_of(info) {
                Some(ttl) => self.store.update_with_ttl(&key, value, expected, ttl).await,
                None => self.store.update(&key, value, expected).await,
            }
        };
        let outcome = write.instrument(span.clone()).await.map_err(store_error)?;
        record_outcome(&span, &outcome);
        self.audit(info, ns, name, &outcome, 200);
        match outcome {
            TxnOutcome::Succeeded { kv } => decode(&kv),
            TxnOutcome::Conflict { current } => match current {
                None => Err(ApiError::not_found(info, name)),
                Some(kv) => Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "the object has been modified; please apply your changes to the latest version and try again (you sent resourceVersion {expected}, the store holds {})",
                        kv.mod_revision
                    ),
                )),
            },
        }
    }

    /// Delete an object if it is still at revision `expected` (or whatever revision it has,
    /// with `None`). Returns the object as it was just before.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        expected: Option<Revision>,
    ) -> Result<Stored, ApiError> {
        let key = store::object_key(info.plural, ns, name);
        let span = txn_span("delete", &key, self.store.name(), expected);
        let outcome = self
            .store
            .delete(&key, expected)
            .instrument(span.clone())
            .await
            .map_err(store_error)?;
        record_outcome(&span, &outcome);
        self.audit(info, ns, name, &outcome, 200);
        match outcome {
            TxnOutcome::Succeeded { kv } => {
                // The store reports a delete with the delete's revision: the deleted object's
                // last resourceVersion, as in Kubernetes.
                decode(&kv)
            }
            TxnOutcome::Conflict { current: None } => Err(ApiError::not_found(info, name)),
            TxnOutcome::Conflict { current: Some(_) } => Err(ApiError::conflict(
                info,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )),
        }
    }

    /// Watch one resource (one namespace or all) from revision `from` (inclusive), with the
    /// store's progress notifications about every `progress` (for bookmarks) if asked.
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        from: Option<Revision>,
        progress: Option<std::time::Duration>,
    ) -> Result<ProgressStream, ApiError> {
        let prefix = store::list_prefix(info.plural, if info.namespaced { ns } else { None });
        self.store
            .watch_with_progress(&prefix, from, progress)
            .await
            .map_err(store_error)
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> Result<Revision, ApiError> {
        self.store.current_revision().await.map_err(store_error)
    }
}

fn txn_span(op: &'static str, key: &str, backend: &'static str, expected: Option<Revision>) -> tracing::Span {
    info_span!(
        "store.txn",
        "kulisse.stage" = "store",
        "store.op" = op,
        "store.key" = %key,
        "store.backend" = backend,
        "store.expected_mod_revision" = expected,
        "store.revision" = tracing::field::Empty,
        "store.succeeded" = tracing::field::Empty,
    )
}

/// Put a write's outcome on its `store.txn` span: the revision it got, or that it lost.
fn record_outcome(span: &tracing::Span, outcome: &TxnOutcome) {
    match outcome {
        TxnOutcome::Succeeded { kv } => {
            span.record("store.revision", kv.mod_revision);
            span.record("store.succeeded", true);
        }
        TxnOutcome::Conflict { .. } => {
            span.record("store.succeeded", false);
        }
    }
}

/// Turn a stored key-value into an object carrying its resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Stored, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(&format!("stored value at {} is not valid JSON: {e}", kv.key)))?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(Stored {
        object,
        revision: kv.mod_revision,
    })
}

/// Serialise an object for the store, without `metadata.resourceVersion` (the store's
/// revision is the single source of truth for it).
fn encode(object: &Value) -> Result<Vec<u8>, ApiError> {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&object).map_err(|e| ApiError::internal(&format!("could not encode object: {e}")))
}

/// Put `metadata.resourceVersion` (a string, as in Kubernetes) on an object.
pub fn set_resource_version(object: &mut Value, revision: Revision) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
}

/// Map store failures to API errors: a compacted revision is `410 Expired`, anything
/// else is a `500` that names the store.
pub fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::Compacted { requested, compacted } => {
            ApiError::expired(&format!("too old resource version: {requested} ({compacted})"))
        }
        StoreError::WatchLagged => {
            ApiError::expired("the watch fell behind; list again and watch from the new resourceVersion")
        }
        StoreError::FutureRevision { requested, current } => super::list_options::too_large(requested, current),
        StoreError::Backend(msg) => ApiError::internal(&format!("storage error: {msg}")),
    }
}
