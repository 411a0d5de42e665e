//! A local trace store: the last few hundred traces, kept in memory, so no Jaeger is needed.
//!
//! A tracing backend (Jaeger, Grafana Tempo, the OpenTelemetry Collector) receives finished
//! spans over OTLP, groups them by **trace id** and lets you look at one trace as a tree. kulisse
//! carries a tiny one inside every process: [`TraceStore`] keeps every finished span (up to
//! [`DEFAULT_MAX_SPANS`] spans in at most [`DEFAULT_MAX_TRACES`] traces; the least recently
//! updated trace is forgotten first), and the API server adds the spans that other processes
//! (the CLI, a kubelet started on its own) send it over OTLP/HTTP (`POST /v1/traces`). That is
//! what `kulisse trace last` reads.
//!
//! Each span is kept as a [`StoredSpan`]: ids as lowercase hex (as in `traceparent`), times as
//! nanoseconds since the Unix epoch, attributes as text. The same shape is what the API server
//! returns at `GET /apis/kulisse.dev/v1/traces/{id}`.
//!
//! In Kubernetes terms there is no such component: clusters ship spans to an external backend.
//! kulisse keeps this store so that a learner can see a trace with nothing else installed;
//! [`crate::otlp_json::to_otlp_json`] exports it for Jaeger's UI.
//!
//! The module is `span_store`, not `store`: in kulisse "the store" is etcd (or its embedded
//! stand-in), `kulisse_core::store`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SpanData, SpanProcessor},
};
use serde::{Deserialize, Serialize};

use crate::catalogue::STAGE_KEY;
use crate::routing::ServiceRouter;

/// How many spans the process's store keeps at most.
pub const DEFAULT_MAX_SPANS: usize = 50_000;

/// How many traces the process's store keeps at most.
pub const DEFAULT_MAX_TRACES: usize = 200;

/// The root span name that [`TraceStore::last_trace_id`] prefers: one `kulisse apply`.
pub const APPLY_ROOT_SPAN: &str = "cli.apply";

/// The outcome of a span, as OpenTelemetry defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanStatusCode {
    /// Nobody said (the usual case for a span that went fine).
    #[default]
    Unset,
    /// Explicitly marked as successful.
    Ok,
    /// The step failed.
    Error,
}

/// One event inside a span (a `tracing::info!` inside a span becomes one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// The event's name (for `tracing` events: the message).
    pub name: String,
    /// When it happened, in nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
    /// Its attributes, values as text.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A link from a span to another span (in the same or another trace): "this work was caused by
/// that one", without being its child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredLink {
    /// The linked span's trace id (32 lowercase hex digits).
    pub trace_id: String,
    /// The linked span's id (16 lowercase hex digits).
    pub span_id: String,
    /// The link's attributes, values as text.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One finished span, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSpan {
    /// The 16-byte trace id as 32 lowercase hex digits (as in `traceparent`).
    pub trace_id: String,
    /// The 8-byte span id as 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id; `None` for the root of a trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// The span name, e.g. `apiserver.request`.
    pub name: String,
    /// `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: String,
    /// The `service.name` the span was reported under, e.g. `kulisse-scheduler`.
    pub service_name: String,
    /// The `kulisse.stage` attribute, if the span has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Whether the step failed.
    #[serde(default)]
    pub status: SpanStatusCode,
    /// The error description, when `status` is `error`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    /// The span's attributes, values as text.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Events recorded inside the span, in time order.
    #[serde(default)]
    pub events: Vec<StoredEvent>,
    /// Links to other spans.
    #[serde(default)]
    pub links: Vec<StoredLink>,
    /// The instrumentation scope (library) that made the span, e.g. `kulisse`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl StoredSpan {
    /// How long the span took, in nanoseconds (0 if the clock went backwards).
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }

    /// How long the span took.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.duration_nanos())
    }

    /// An attribute's value as text, if the span has it and it is not empty.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Whether the span is the root of its trace (has no parent).
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_none()
    }

    /// Whether the span's status is `error`.
    pub fn is_error(&self) -> bool {
        self.status == SpanStatusCode::Error
    }

    /// Converts a span finished in this process. `service_name` is the service it reports under.
    pub fn from_span_data(span: &SpanData, service_name: &str) -> StoredSpan {
        let attributes: BTreeMap<String, String> = span
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        let (status, status_message) = match &span.status {
            Status::Unset => (SpanStatusCode::Unset, String::new()),
            Status::Ok => (SpanStatusCode::Ok, String::new()),
            Status::Error { description } => (SpanStatusCode::Error, description.to_string()),
        };
        StoredSpan {
            trace_id: span.span_context.trace_id().to_string(),
            span_id: span.span_context.span_id().to_string(),
            parent_span_id: (span.parent_span_id != SpanId::INVALID).then(|| span.parent_span_id.to_string()),
            name: span.name.to_string(),
            kind: kind_name(&span.span_kind).to_string(),
            service_name: service_name.to_string(),
            stage: attributes.get(STAGE_KEY).cloned(),
            start_unix_nanos: unix_nanos(span.start_time),
            end_unix_nanos: unix_nanos(span.end_time),
            status,
            status_message,
            events: span
                .events
                .iter()
                .map(|event| StoredEvent {
                    name: event.name.to_string(),
                    time_unix_nanos: unix_nanos(event.timestamp),
                    attributes: event
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                        .collect(),
                })
                .collect(),
            links: span
                .links
                .iter()
                .map(|link| StoredLink {
                    trace_id: link.span_context.trace_id().to_string(),
                    span_id: link.span_context.span_id().to_string(),
                    attributes: link
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                        .collect(),
                })
                .collect(),
            scope: span.instrumentation_scope.name().to_string(),
            attributes,
        }
    }
}

/// The OTLP name of a span kind, lowercase.
fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

/// Nanoseconds since the Unix epoch; 0 for times before it, `u64::MAX` after the year 2554.
pub(crate) fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One line of [`TraceStore::recent_traces`]: what a trace is, without its spans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    /// The trace id (32 lowercase hex digits).
    pub trace_id: String,
    /// The name of the root span (`cli.apply`, say); if the root has not arrived (yet), the
    /// name of the earliest span whose parent is not in the store.
    pub root_name: String,
    /// The service of that span.
    pub root_service: String,
    /// Whether the store holds the trace's root span (a span without a parent).
    pub has_root: bool,
    /// When the earliest span started, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// From the earliest start to the latest end, in nanoseconds.
    pub duration_nanos: u64,
    /// How many spans the store holds for the trace.
    pub span_count: usize,
    /// How many of them failed.
    pub error_count: usize,
    /// The services that took part, in the order they first appear in time.
    pub services: Vec<String>,
}

/// What [`TraceStore::insert`] did with a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The span is new and is now kept.
    Added,
    /// A span with the same trace and span id was already kept; the first one stays.
    Duplicate,
    /// The trace already holds as many spans as the whole store may; the span is dropped.
    TraceFull,
}

struct TraceEntry {
    spans: Vec<StoredSpan>,
    span_ids: HashSet<String>,
    /// The store's sequence number of the last insert into this trace.
    touched: u64,
}

#[derive(Default)]
struct Inner {
    traces: HashMap<String, TraceEntry>,
    /// Traces by `touched`, least recently updated first.
    by_recency: BTreeMap<u64, String>,
    span_count: usize,
    seq: u64,
    dropped: u64,
}

/// A bounded in-memory store of finished spans, grouped by trace. See the module docs.
///
/// Thread-safe; every method takes `&self`. Inserting is a short critical section (the store is
/// fed synchronously as spans end).
pub struct TraceStore {
    max_spans: usize,
    max_traces: usize,
    inner: Mutex<Inner>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for TraceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceStore")
            .field("max_spans", &self.max_spans)
            .field("max_traces", &self.max_traces)
            .field("spans", &self.len())
            .field("traces", &self.trace_count())
            .finish()
    }
}

impl Default for TraceStore {
    fn default() -> Self {
        TraceStore::new(DEFAULT_MAX_SPANS, DEFAULT_MAX_TRACES)
    }
}

/// The store of this process: what [`crate::init`] feeds and the API server serves.
pub fn global() -> &'static TraceStore {
    static GLOBAL: OnceLock<TraceStore> = OnceLock::new();
    GLOBAL.get_or_init(TraceStore::default)
}

impl TraceStore {
    /// A store that keeps at most `max_spans` spans in at most `max_traces` traces (each at
    /// least 1).
    pub fn new(max_spans: usize, max_traces: usize) -> TraceStore {
        TraceStore {
            max_spans: max_spans.max(1),
            max_traces: max_traces.max(1),
            inner: Mutex::new(Inner::default()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the store, so keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps one span. Ids are normalised to lowercase. Forgets the least recently updated
    /// traces when the store is over its limits.
    pub fn insert(&self, span: StoredSpan) -> Inserted {
        let result = {
            let mut inner = self.lock();
            self.insert_locked(&mut inner, span)
        };
        if result == Inserted::Added {
            self.notify();
        }
        result
    }

    /// Keeps many spans; returns how many were new.
    pub fn insert_all(&self, spans: impl IntoIterator<Item = StoredSpan>) -> usize {
        let added = {
            let mut inner = self.lock();
            spans
                .into_iter()
                .filter(|span| self.insert_locked(&mut inner, span.clone()) == Inserted::Added)
                .count()
        };
        if added > 0 {
            self.notify();
        }
        added
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn insert_locked(&self, inner: &mut Inner, mut span: StoredSpan) -> Inserted {
        span.trace_id.make_ascii_lowercase();
        span.span_id.make_ascii_lowercase();
        if let Some(parent) = span.parent_span_id.as_mut() {
            parent.make_ascii_lowercase();
        }
        inner.seq += 1;
        let seq = inner.seq;
        let trace_id = span.trace_id.clone();
        let entry = inner.traces.entry(trace_id.clone()).or_insert_with(|| TraceEntry {
            spans: Vec::new(),
            span_ids: HashSet::new(),
            touched: seq,
        });
        if entry.span_ids.contains(&span.span_id) {
            return Inserted::Duplicate;
        }
        if entry.spans.len() >= self.max_spans {
            inner.dropped += 1;
            return Inserted::TraceFull;
        }
        entry.span_ids.insert(span.span_id.clone());
        entry.spans.push(span);
        let previous = std::mem::replace(&mut entry.touched, seq);
        inner.by_recency.remove(&previous);
        inner.by_recency.insert(seq, trace_id.clone());
        inner.span_count += 1;
        while inner.span_count > self.max_spans || inner.traces.len() > self.max_traces {
            let Some((_, oldest)) = inner.by_recency.pop_first() else {
                break;
            };
            if oldest == trace_id && inner.traces.len() == 1 {
                // Never forget the trace that is being added to; its size is capped above.
                inner.by_recency.insert(seq, oldest);
                break;
            }
            if let Some(gone) = inner.traces.remove(&oldest) {
                inner.span_count -= gone.spans.len();
            }
        }
        Inserted::Added
    }

    /// All kept spans of one trace, ordered by start time. Empty if the trace is unknown.
    /// `trace_id` may be in upper or lower case.
    pub fn spans_of(&self, trace_id: &str) -> Vec<StoredSpan> {
        let id = trace_id.trim().to_ascii_lowercase();
        let mut spans = self
            .lock()
            .traces
            .get(&id)
            .map(|entry| entry.spans.clone())
            .unwrap_or_default();
        sort_by_start(&mut spans);
        spans
    }

    /// The spans of `trace_id` and of every trace connected to it by span links, in either
    /// direction and transitively, ordered by start time. With [`crate::propagation::TraceStyle::Links`]
    /// one `apply` becomes several traces (one per asynchronous stage) linked to each other;
    /// this collects them all again.
    pub fn spans_of_linked(&self, trace_id: &str) -> Vec<StoredSpan> {
        let id = trace_id.trim().to_ascii_lowercase();
        let inner = self.lock();
        if !inner.traces.contains_key(&id) {
            return Vec::new();
        }
        // Which traces each trace links to, and which link to it.
        let mut edges: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for (tid, entry) in &inner.traces {
            for span in &entry.spans {
                for link in &span.links {
                    if link.trace_id != *tid && inner.traces.contains_key(&link.trace_id) {
                        edges.entry(tid.as_str()).or_default().insert(link.trace_id.as_str());
                        edges.entry(link.trace_id.as_str()).or_default().insert(tid.as_str());
                    }
                }
            }
        }
        let mut seen: BTreeSet<&str> = BTreeSet::from([id.as_str()]);
        let mut queue: VecDeque<&str> = VecDeque::from([id.as_str()]);
        while let Some(next) = queue.pop_front() {
            for other in edges.get(next).into_iter().flatten() {
                if seen.insert(other) {
                    queue.push_back(other);
                }
            }
        }
        let mut spans: Vec<StoredSpan> = seen
            .iter()
            .filter_map(|tid| inner.traces.get(*tid))
            .flat_map(|entry| entry.spans.iter().cloned())
            .collect();
        drop(inner);
        sort_by_start(&mut spans);
        spans
    }

    /// The newest trace whose root span is [`APPLY_ROOT_SPAN`] (`cli.apply`), or else the
    /// newest trace of all (by start time); `None` when the store is empty.
    pub fn last_trace_id(&self) -> Option<String> {
        let inner = self.lock();
        let newest_apply = inner
            .traces
            .iter()
            .filter_map(|(id, entry)| {
                entry
                    .spans
                    .iter()
                    .filter(|s| s.is_root() && s.name == APPLY_ROOT_SPAN)
                    .map(|s| s.start_unix_nanos)
                    .max()
                    .map(|start| (start, id))
            })
            .max();
        if let Some((_, id)) = newest_apply {
            return Some(id.clone());
        }
        inner
            .traces
            .iter()
            .filter_map(|(id, entry)| {
                entry
                    .spans
                    .iter()
                    .map(|s| s.start_unix_nanos)
                    .min()
                    .map(|start| (start, id))
            })
            .max()
            .map(|(_, id)| id.clone())
    }

    /// `"last"` → [`TraceStore::last_trace_id`]; a trace id → itself in lowercase, if the
    /// store holds it.
    pub fn resolve(&self, id_or_last: &str) -> Option<String> {
        let wanted = id_or_last.trim();
        if wanted.eq_ignore_ascii_case("last") {
            return self.last_trace_id();
        }
        let id = wanted.to_ascii_lowercase();
        self.lock().traces.contains_key(&id).then_some(id)
    }

    /// The summary of one trace, if the store holds it.
    pub fn summary_of(&self, trace_id: &str) -> Option<TraceSummary> {
        let id = trace_id.trim().to_ascii_lowercase();
        let inner = self.lock();
        inner.traces.get(&id).map(|entry| summarize(&id, &entry.spans))
    }

    /// Summaries of every kept trace, newest (latest start) first.
    pub fn recent_traces(&self) -> Vec<TraceSummary> {
        let mut out: Vec<TraceSummary> = {
            let inner = self.lock();
            inner
                .traces
                .iter()
                .map(|(id, entry)| summarize(id, &entry.spans))
                .collect()
        };
        out.sort_by(|a, b| {
            b.start_unix_nanos
                .cmp(&a.start_unix_nanos)
                .then_with(|| a.trace_id.cmp(&b.trace_id))
        });
        out
    }

    /// How many spans are kept.
    pub fn len(&self) -> usize {
        self.lock().span_count
    }

    /// Whether no span is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many traces are kept.
    pub fn trace_count(&self) -> usize {
        self.lock().traces.len()
    }

    /// How many spans were dropped because their trace alone filled the store.
    pub fn dropped_spans(&self) -> u64 {
        self.lock().dropped
    }

    /// The limits: (spans, traces).
    pub fn limits(&self) -> (usize, usize) {
        (self.max_spans, self.max_traces)
    }

    /// A receiver whose value changes whenever spans are added (for a view that follows a
    /// trace live, like `kulisse apply --follow`, instead of polling blindly).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Forgets every span.
    pub fn clear(&self) {
        let mut inner = self.lock();
        let seq = inner.seq;
        let dropped = inner.dropped;
        *inner = Inner {
            seq,
            dropped,
            ..Inner::default()
        };
    }
}

fn sort_by_start(spans: &mut [StoredSpan]) {
    spans.sort_by(|a, b| {
        a.start_unix_nanos
            .cmp(&b.start_unix_nanos)
            .then_with(|| b.end_unix_nanos.cmp(&a.end_unix_nanos))
            .then_with(|| a.span_id.cmp(&b.span_id))
    });
}

/// The summary of one trace's spans.
pub fn summarize(trace_id: &str, spans: &[StoredSpan]) -> TraceSummary {
    let mut sorted: Vec<&StoredSpan> = spans.iter().collect();
    sorted.sort_by_key(|s| (s.start_unix_nanos, std::cmp::Reverse(s.end_unix_nanos)));
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = sorted.iter().find(|s| s.is_root()).copied();
    let top = root.or_else(|| {
        sorted
            .iter()
            .find(|s| s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)))
            .copied()
    });
    let start = sorted.first().map(|s| s.start_unix_nanos).unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(start);
    let mut services: Vec<String> = Vec::new();
    for span in &sorted {
        if !services.contains(&span.service_name) {
            services.push(span.service_name.clone());
        }
    }
    TraceSummary {
        trace_id: trace_id.to_string(),
        root_name: top.map(|s| s.name.clone()).unwrap_or_default(),
        root_service: top.map(|s| s.service_name.clone()).unwrap_or_default(),
        has_root: root.is_some(),
        start_unix_nanos: start,
        duration_nanos: end.saturating_sub(start),
        span_count: spans.len(),
        error_count: spans.iter().filter(|s| s.is_error()).count(),
        services,
    }
}

// ---------------------------------------------------------------------------------------------
// Feeding the store: in-process spans and OTLP from other processes
// ---------------------------------------------------------------------------------------------

/// An OpenTelemetry span processor that puts every span that ends in this process into a
/// [`TraceStore`], under the service name chosen by a [`ServiceRouter`].
///
/// [`crate::init_with`] installs one for [`global`]; it runs synchronously as a span ends
/// (a lock and a few copies), without any network.
#[derive(Debug)]
pub struct StoreProcessor {
    store: &'static TraceStore,
    router: ServiceRouter,
}

impl StoreProcessor {
    /// A processor feeding `store`, naming services with `router`.
    pub fn new(store: &'static TraceStore, router: ServiceRouter) -> StoreProcessor {
        StoreProcessor { store, router }
    }
}

impl SpanProcessor for StoreProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let stage = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == STAGE_KEY)
            .map(|kv| kv.value.as_str());
        let service = self.router.service_for(stage.as_deref());
        self.store.insert(StoredSpan::from_span_data(&span, service));
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.router.set_default_from_resource(resource);
    }
}

/// Whether `id` is a trace id in the form the store uses: 32 hex digits, not all zero.
pub fn is_trace_id(id: &str) -> bool {
    TraceId::from_hex(id).is_ok_and(|t| t != TraceId::INVALID) && id.len() == 32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A span for tests: ids from small numbers, times in milliseconds.
    pub(crate) fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start_ms: u64, end_ms: u64) -> StoredSpan {
        let stage = name.split('.').next().unwrap_or("").to_string();
        StoredSpan {
            trace_id: format!("{trace:032x}"),
            span_id: format!("{id:016x}"),
            parent_span_id: parent.map(|p| format!("{p:016x}")),
            name: name.to_string(),
            kind: "internal".into(),
            service_name: crate::catalogue::service_for_stage(&stage)
                .unwrap_or("kulisse-test")
                .to_string(),
            stage: Some(stage.clone()),
            start_unix_nanos: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
            end_unix_nanos: 1_700_000_000_000_000_000 + end_ms * 1_000_000,
            status: SpanStatusCode::Unset,
            status_message: String::new(),
            attributes: BTreeMap::from([(STAGE_KEY.to_string(), stage)]),
            events: Vec::new(),
            links: Vec::new(),
            scope: "kulisse".into(),
        }
    }

    #[test]
    fn spans_are_grouped_by_trace_and_sorted_by_start() {
        let store = TraceStore::new(100, 10);
        assert_eq!(
            store.insert(span(1, 2, Some(1), "apiserver.request", 5, 10)),
            Inserted::Added
        );
        assert_eq!(store.insert(span(1, 1, None, "cli.apply", 0, 20)), Inserted::Added);
        assert_eq!(
            store.insert(span(2, 3, None, "controller.reconcile", 30, 31)),
            Inserted::Added
        );
        assert_eq!(store.insert(span(1, 1, None, "cli.apply", 0, 20)), Inserted::Duplicate);
        let spans = store.spans_of(&format!("{:032X}", 1));
        assert_eq!(
            spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["cli.apply", "apiserver.request"]
        );
        assert_eq!(store.len(), 3);
        assert_eq!(store.trace_count(), 2);
        assert!(store.spans_of("nope").is_empty());
    }

    #[test]
    fn last_trace_prefers_the_newest_apply() {
        let store = TraceStore::new(100, 10);
        assert_eq!(store.last_trace_id(), None);
        store.insert(span(1, 1, None, "cli.apply", 0, 20));
        store.insert(span(2, 2, None, "cli.apply", 100, 120));
        // A newer background trace does not hide the last apply.
        store.insert(span(3, 3, None, "controller.reconcile", 500, 501));
        assert_eq!(store.last_trace_id(), Some(format!("{:032x}", 2)));
        assert_eq!(store.resolve("last"), Some(format!("{:032x}", 2)));
        assert_eq!(store.resolve(&format!("{:032X}", 3)), Some(format!("{:032x}", 3)));
        assert_eq!(store.resolve(&format!("{:032x}", 9)), None);

        let background = TraceStore::new(100, 10);
        background.insert(span(3, 3, None, "controller.reconcile", 500, 501));
        background.insert(span(4, 4, None, "kubelet.sync_pod", 600, 601));
        assert_eq!(background.last_trace_id(), Some(format!("{:032x}", 4)));
    }

    #[test]
    fn the_least_recently_updated_trace_is_forgotten_first() {
        let store = TraceStore::new(5, 2);
        store.insert(span(1, 1, None, "cli.apply", 0, 1));
        store.insert(span(2, 2, None, "cli.apply", 2, 3));
        // Touch trace 1 again: trace 2 is now the least recently updated.
        store.insert(span(1, 3, Some(1), "cli.request", 0, 1));
        store.insert(span(3, 4, None, "cli.apply", 4, 5));
        assert_eq!(store.trace_count(), 2);
        assert!(store.spans_of(&format!("{:032x}", 2)).is_empty());
        assert_eq!(store.spans_of(&format!("{:032x}", 1)).len(), 2);
        // The span limit also evicts whole traces.
        for id in 10..14 {
            store.insert(span(3, id, Some(4), "apiserver.request", 4, 5));
        }
        assert_eq!(store.len(), 5);
        assert_eq!(store.trace_count(), 1);
        // One trace cannot grow beyond the store.
        assert_eq!(
            store.insert(span(3, 20, Some(4), "apiserver.request", 4, 5)),
            Inserted::TraceFull
        );
        assert_eq!(store.dropped_spans(), 1);
    }

    #[test]
    fn summaries_name_the_root_and_the_services() {
        let store = TraceStore::new(100, 10);
        store.insert(span(1, 1, None, "cli.apply", 0, 20));
        store.insert(span(1, 2, Some(1), "apiserver.request", 5, 10));
        let mut failed = span(1, 3, Some(2), "store.txn", 6, 7);
        failed.status = SpanStatusCode::Error;
        store.insert(failed);
        store.insert(span(2, 9, Some(8), "scheduler.schedule", 50, 60));
        let recent = store.recent_traces();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].root_name, "scheduler.schedule");
        assert!(!recent[0].has_root);
        let apply = &recent[1];
        assert_eq!(apply.root_name, "cli.apply");
        assert!(apply.has_root);
        assert_eq!(apply.span_count, 3);
        assert_eq!(apply.error_count, 1);
        assert_eq!(apply.duration_nanos, 20_000_000);
        assert_eq!(apply.services, ["kulisse-cli", "kulisse-apiserver"]);
    }

    #[test]
    fn linked_traces_are_collected_together() {
        let store = TraceStore::new(100, 10);
        store.insert(span(1, 1, None, "cli.apply", 0, 20));
        let mut reconcile = span(2, 2, None, "controller.reconcile", 30, 40);
        reconcile.links.push(StoredLink {
            trace_id: format!("{:032x}", 1),
            span_id: format!("{:016x}", 1),
            attributes: BTreeMap::new(),
        });
        store.insert(reconcile);
        let mut schedule = span(3, 3, None, "scheduler.schedule", 50, 60);
        schedule.links.push(StoredLink {
            trace_id: format!("{:032x}", 2),
            span_id: format!("{:016x}", 2),
            attributes: BTreeMap::new(),
        });
        store.insert(schedule);
        store.insert(span(4, 4, None, "cli.apply", 70, 80));
        let story = store.spans_of_linked(&format!("{:032x}", 1));
        assert_eq!(
            story.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["cli.apply", "controller.reconcile", "scheduler.schedule"]
        );
        assert_eq!(store.spans_of_linked(&format!("{:032x}", 3)).len(), 3);
    }

    #[test]
    fn stored_spans_round_trip_through_json() {
        let mut s = span(1, 2, Some(1), "apiserver.request", 5, 10);
        s.status = SpanStatusCode::Error;
        s.status_message = "boom".into();
        let json = serde_json::to_value(&s).expect("serializable");
        assert_eq!(json["traceId"], format!("{:032x}", 1));
        assert_eq!(json["status"], "error");
        let back: StoredSpan = serde_json::from_value(json).expect("deserializable");
        assert_eq!(back, s);
    }

    #[test]
    fn trace_ids_are_checked() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_trace_id("00000000000000000000000000000000"));
        assert!(!is_trace_id("4bf92f35"));
        assert!(!is_trace_id("last"));
    }
}
