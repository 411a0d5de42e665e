//! # The reconcile loop (mirrors kube-runtime's `Controller` and client-go's controller pattern)
//!
//! Every controller in Kubernetes has the same shape:
//!
//! ```text
//!  informer events ──► work queue of keys ──► worker: reconcile(key) ──► Action
//!        ▲                    ▲                        │
//!        │                    └──── requeue / backoff ─┘
//!   watch on the API server
//! ```
//!
//! A [`Reconciler`] gets a key (`default/web`) and the *reason* it was queued, reads the
//! object's current state from its informer caches, and makes the world match: create the
//! missing ReplicaSet, delete a surplus Pod, update a status. It returns an [`Action`]:
//! [`Action::await_change`] (nothing to do until something changes) or
//! [`Action::requeue`] (look again after a while, e.g. to check a timeout). An error goes to
//! the reconciler's `error_policy`, which by default retries with a doubling back-off.
//!
//! Reconcile is **level-based**: it never asks "what event happened?", only "what is, and
//! what should be?". That is why dropping or merging events is safe, and why the reason is
//! only data for the trace (`controller.reason`), not an input to the logic.
//!
//! Each reconcile runs in a `controller.reconcile` span. When the change that queued the key
//! carried a trace context (the `kulisse.dev/traceparent` annotation), the span continues
//! that trace: this is how one `apply` becomes one trace through the controllers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::client::informer::{InformerEvent, key_of};
use crate::client::workqueue::WorkQueue;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile this key again after the given time, even if nothing changes.
    Requeue(Duration),
    /// Nothing more to do until the object (or something it watches) changes.
    AwaitChange,
}

impl Action {
    /// Reconcile again after `after`.
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    /// Wait for the next change.
    pub fn await_change() -> Self {
        Action::AwaitChange
    }
}

/// Why a key was queued: recorded on the reconcile span, never used to decide anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileReason {
    ObjectAdded,
    ObjectUpdated,
    ObjectDeleted,
    /// An object this one owns or selects changed (a Pod of a ReplicaSet, say).
    RelatedObjectChanged {
        kind: String,
        name: String,
    },
    /// The informer's periodic resync.
    Resync,
    /// A previous reconcile failed; this is retry number `attempt`.
    ErrorBackoff {
        attempt: u32,
    },
    /// A previous reconcile returned `Action::Requeue`.
    RequeueRequested,
}

impl fmt::Display for ReconcileReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconcileReason::ObjectAdded => write!(f, "object added"),
            ReconcileReason::ObjectUpdated => write!(f, "object updated"),
            ReconcileReason::ObjectDeleted => write!(f, "object deleted"),
            ReconcileReason::RelatedObjectChanged { kind, name } => write!(f, "related {kind} {name} changed"),
            ReconcileReason::Resync => write!(f, "periodic resync"),
            ReconcileReason::ErrorBackoff { attempt } => write!(f, "retry #{attempt} after an error"),
            ReconcileReason::RequeueRequested => write!(f, "requeue requested"),
        }
    }
}

impl ReconcileReason {
    /// The reason for an informer event about the controller's own object.
    pub fn of_event(ev: &InformerEvent) -> Self {
        match ev {
            InformerEvent::Added(_) => ReconcileReason::ObjectAdded,
            InformerEvent::Modified { .. } => ReconcileReason::ObjectUpdated,
            InformerEvent::Deleted(_) => ReconcileReason::ObjectDeleted,
            InformerEvent::Resync(_) => ReconcileReason::Resync,
        }
    }
}

/// Why a key is in the queue, and the trace it belongs to.
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: ReconcileReason,
    /// The W3C traceparent of the write that caused this (from the object's annotation).
    pub traceparent: Option<String>,
}

/// The error a reconcile can return. The message should make sense to a learner.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(pub String);

impl ReconcileError {
    /// Did the reconcile lose a race with another writer (`409 Conflict` or
    /// `AlreadyExists`)? Then a retry with fresh state is all it takes.
    pub fn is_conflict(&self) -> bool {
        self.0.contains(crate::objects::OPTIMISTIC_LOCK_MESSAGE)
            || self.0.contains("already exists")
            || self.0.contains("Operation cannot be fulfilled")
    }
}

impl From<crate::client::ClientError> for ReconcileError {
    fn from(e: crate::client::ClientError) -> Self {
        ReconcileError(e.to_string())
    }
}

impl From<crate::objects::ApiError> for ReconcileError {
    fn from(e: crate::objects::ApiError) -> Self {
        ReconcileError(e.to_string())
    }
}

/// A controller's logic. See the module doc.
#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name, as Kubernetes names it: `deployment`, `replicaset`, `endpoints`...
    fn name(&self) -> &'static str;

    /// Make the world match the desired state of the object named `key`.
    async fn reconcile(&self, key: &str, reason: &ReconcileReason) -> Result<Action, ReconcileError>;

    /// What to do after an error. `failures` counts consecutive failures of this key.
    /// The default retries with the queue's doubling back-off.
    fn error_policy(&self, key: &str, error: &ReconcileError, failures: u32) -> Option<Action> {
        let _ = (key, error, failures);
        None
    }
}

/// A create refused because its namespace is being deleted (the cause `NamespaceTerminating`,
/// client-go's `HasStatusCause`): it can only fail again, so controllers drop the work quietly.
pub fn namespace_terminating(err: &crate::client::ClientError) -> bool {
    matches!(err, crate::client::ClientError::Api(e) if e.has_cause(crate::objects::NAMESPACE_TERMINATING_CAUSE))
}

/// The queue type every controller uses.
pub type Queue = Arc<WorkQueue<String, Cause>>;

/// A new controller queue: retries start at 5 ms and double up to 30 s.
pub fn new_queue() -> Queue {
    WorkQueue::new(Duration::from_millis(5), Duration::from_secs(30))
}

/// The annotation that carries the writer's trace context on an object.
pub const TRACEPARENT_ANNOTATION: &str = kulisse_traces::propagation::TRACEPARENT_ANNOTATION;

/// The traceparent recorded on an object by its last writer, if any.
pub fn traceparent_of(obj: &serde_json::Value) -> Option<String> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(TRACEPARENT_ANNOTATION))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// Record `traceparent` on an object's metadata, so whoever reacts to this write continues
/// the trace (the annotation `kulisse.dev/traceparent`).
pub fn annotate_traceparent(meta: &mut serde_json::Map<String, serde_json::Value>, traceparent: &str) {
    let annotations = meta.entry("annotations").or_insert_with(|| serde_json::json!({}));
    if !annotations.is_object() {
        *annotations = serde_json::json!({});
    }
    annotations[TRACEPARENT_ANNOTATION] = serde_json::json!(traceparent);
}

/// Queue an informer event about the controller's own kind under the object's key.
pub fn enqueue_own(queue: &Queue, ev: &InformerEvent) {
    let obj = ev.object();
    queue.add(
        key_of(obj),
        Cause {
            reason: ReconcileReason::of_event(ev),
            traceparent: traceparent_of(obj),
        },
    );
}

/// Queue `key` because a related object (`obj`, of `kind`) changed.
pub fn enqueue_related(queue: &Queue, key: String, kind: &str, obj: &serde_json::Value) {
    let name = crate::objects::name(obj).unwrap_or("").to_string();
    queue.add(
        key,
        Cause {
            reason: ReconcileReason::RelatedObjectChanged {
                kind: kind.to_string(),
                name,
            },
            traceparent: traceparent_of(obj),
        },
    );
}

/// Run `workers` workers for `reconciler` on `queue` until `shutdown` turns true.
///
/// The workers live exactly as long as this future: dropping it (a lost leader election
/// drops the whole component at once) aborts them, in the middle of a reconcile if need be.
/// Detached workers would go on reconciling from caches that no longer change, beside the
/// new leader's: two controllers, one of them blind.
pub async fn run<R: Reconciler>(reconciler: Arc<R>, queue: Queue, workers: usize, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let reconciler = reconciler.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            while let Some((key, cause)) = queue.next().await {
                process(&*reconciler, &queue, key, cause).await;
            }
        });
    }
    let _ = shutdown.wait_for(|stop| *stop).await;
    queue.shut_down();
    while tasks.join_next().await.is_some() {}
}

async fn process<R: Reconciler>(reconciler: &R, queue: &Queue, key: String, cause: Cause) {
    let span_traceparent = cause.traceparent.clone();
    let span = kulisse_traces::caused_span!(
        span_traceparent.as_deref(),
            "controller.reconcile",
            "kulisse.stage" = "controller",
            "controller.name" = reconciler.name(),
            "controller.key" = %key,
            "controller.reason" = %cause.reason,
            "controller.action" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
    );
    let result = reconciler.reconcile(&key, &cause.reason).instrument(span.clone()).await;
    match result {
        Ok(Action::AwaitChange) => {
            span.record("controller.action", "await change");
            queue.forget(&key);
        }
        Ok(Action::Requeue(after)) => {
            span.record("controller.action", format!("requeue in {}", human(after)).as_str());
            queue.forget(&key);
            queue.add_after(
                key.clone(),
                Cause {
                    reason: ReconcileReason::RequeueRequested,
                    traceparent: None,
                },
                after,
            );
        }
        Err(err) => {
            span.record("otel.status_code", "ERROR");
            let failures = queue.failures(&key) + 1;
            if err.is_conflict() {
                // Optimistic concurrency at work, not a fault: another writer got there first,
                // so this controller reads again and retries. A span event, not a warning.
                tracing::info!(parent: &span, controller = reconciler.name(), key = %key, "conflict (attempt {failures}): {err}; retrying with the newest version");
            } else {
                tracing::warn!(parent: &span, controller = reconciler.name(), key = %key, "reconcile failed (attempt {failures}): {err}");
            }
            let retry = Cause {
                reason: ReconcileReason::ErrorBackoff { attempt: failures },
                traceparent: cause.traceparent.clone(),
            };
            match reconciler.error_policy(&key, &err, failures) {
                Some(Action::Requeue(after)) => {
                    span.record("controller.action", format!("retry in {}", human(after)).as_str());
                    queue.add_after(key.clone(), retry, after);
                }
                Some(Action::AwaitChange) => {
                    span.record("controller.action", "give up until the next change");
                }
                None => {
                    let delay = queue.add_rate_limited(key.clone(), retry);
                    span.record("controller.action", format!("retry in {}", human(delay)).as_str());
                }
            }
        }
    }
    queue.done(&key);
}

/// `5ms`, `1.5s`, `10m0s`-style durations for span attributes.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl Reconciler for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn reconcile(&self, _key: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Action::await_change())
        }
    }

    fn cause() -> Cause {
        Cause {
            reason: ReconcileReason::RequeueRequested,
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn a_dropped_controller_reconciles_nothing_more() {
        let reconciled = Arc::new(AtomicUsize::new(0));
        let queue = new_queue();
        let (_never, shutdown) = watch::channel(false);
        {
            let running = run(Arc::new(Counting(reconciled.clone())), queue.clone(), 2, shutdown);
            tokio::pin!(running);
            queue.add("default/a".into(), cause());
            let first = async {
                while reconciled.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::select! {
                _ = &mut running => panic!("run ended without shutdown"),
                _ = first => {}
            }
            // The term is lost: the component's future is dropped here, without shutdown.
        }
        queue.add("default/b".into(), cause());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            reconciled.load(Ordering::SeqCst),
            1,
            "a worker outlived its controller and reconciled default/b"
        );
    }
}
