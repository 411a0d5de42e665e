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
//! Each span is read as a [`StoredSpan`]: ids as lowercase hex (as in `traceparent`), times as
//! nanoseconds since the Unix epoch, attributes as text. The same shape is what the API server
//! returns at `GET /apis/kulisse.dev/v1/traces/{id}`. A span that ended in this process is kept
//! as the OpenTelemetry SDK handed it over and converted only when read: every request ends
//! spans, few requests read them, and converting each one as it ended took a sixth of the API
//! server's CPU under a write load (`kulisse bench --tracing`).
//!
//! In Kubernetes terms there is no such component: clusters ship spans to an external backend.
//! kulisse keeps this store so that a learner can see a trace with nothing else installed;
//! [`crate::otlp_json::to_otlp_json`] exports it for Jaeger's UI.
//!
//! The module is `span_store`, not `store`: in kulisse "the store" is etcd (or its embedded
//! stand-in), `kulisse_core::store`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// The span's trace id is not 32 hex digits; the span is dropped.
    Malformed,
}

/// A span as the store keeps it. A span that ended in this process stays as the SDK handed it
/// over, and becomes a [`StoredSpan`] only when somebody reads it: spans end on every request,
/// reads are rare, and the conversion (ids to hex, every attribute to text) cost the API
/// server a tenth of its CPU when it was done for every span. A span from another process
/// arrives as a [`StoredSpan`] already.
enum Kept {
    Local { data: SpanData, router: Arc<ServiceRouter> },
    Remote(StoredSpan),
}

impl Kept {
    fn to_stored(&self) -> StoredSpan {
        match self {
            Kept::Local { data, router } => StoredSpan::from_span_data(data, router.service_for(local_stage(data))),
            Kept::Remote(span) => span.clone(),
        }
    }

    fn start_unix_nanos(&self) -> u64 {
        match self {
            Kept::Local { data, .. } => unix_nanos(data.start_time),
            Kept::Remote(span) => span.start_unix_nanos,
        }
    }

    fn end_unix_nanos(&self) -> u64 {
        match self {
            Kept::Local { data, .. } => unix_nanos(data.end_time),
            Kept::Remote(span) => span.end_unix_nanos,
        }
    }

    fn name(&self) -> &str {
        match self {
            Kept::Local { data, .. } => &data.name,
            Kept::Remote(span) => &span.name,
        }
    }

    fn service(&self) -> &str {
        match self {
            Kept::Local { data, router } => router.service_for(local_stage(data)),
            Kept::Remote(span) => &span.service_name,
        }
    }

    fn span_id(&self) -> Option<u64> {
        match self {
            Kept::Local { data, .. } => Some(u64::from_be_bytes(data.span_context.span_id().to_bytes())),
            Kept::Remote(span) => parse_span_id(&span.span_id),
        }
    }

    fn is_root(&self) -> bool {
        match self {
            Kept::Local { data, .. } => data.parent_span_id == SpanId::INVALID,
            Kept::Remote(span) => span.is_root(),
        }
    }

    fn is_error(&self) -> bool {
        match self {
            Kept::Local { data, .. } => matches!(data.status, Status::Error { .. }),
            Kept::Remote(span) => span.is_error(),
        }
    }

    /// The traces this span links to.
    fn linked_traces(&self) -> Vec<u128> {
        match self {
            Kept::Local { data, .. } => data
                .links
                .iter()
                .map(|link| u128::from_be_bytes(link.span_context.trace_id().to_bytes()))
                .collect(),
            Kept::Remote(span) => span.links.iter().filter_map(|l| parse_trace_id(&l.trace_id)).collect(),
        }
    }
}

/// The `kulisse.stage` of a span that ended here.
fn local_stage(data: &SpanData) -> Option<&str> {
    data.attributes
        .iter()
        .find(|kv| kv.key.as_str() == STAGE_KEY)
        .and_then(|kv| match &kv.value {
            opentelemetry::Value::String(text) => Some(text.as_str()),
            _ => None,
        })
}

/// A trace id as the store's key: 32 hex digits, any case, around spaces.
fn parse_trace_id(id: &str) -> Option<u128> {
    let id = id.trim();
    (id.len() == 32).then(|| u128::from_str_radix(id, 16).ok()).flatten()
}

/// A span id: 16 hex digits, any case.
fn parse_span_id(id: &str) -> Option<u64> {
    (id.len() == 16).then(|| u64::from_str_radix(id, 16).ok()).flatten()
}

/// The key as the store's callers see it: 32 lowercase hex digits.
fn trace_id_text(key: u128) -> String {
    format!("{key:032x}")
}

struct TraceEntry {
    spans: Vec<Kept>,
    span_ids: HashSet<u64>,
    /// The store's sequence number of the last insert into this trace.
    touched: u64,
}

#[derive(Default)]
struct Inner {
    traces: HashMap<u128, TraceEntry>,
    /// Traces by `touched`, least recently updated first.
    by_recency: BTreeMap<u64, u128>,
    span_count: usize,
    seq: u64,
    dropped: u64,
}

/// A bounded in-memory store of finished spans, grouped by trace. See the module docs.
///
/// Thread-safe; every method takes `&self`. Inserting is a short critical section (the store is
/// fed synchronously as spans end): the traces it forgets are freed after the lock is let go.
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

    /// Keeps one span (from another process). Ids may be in either case. Forgets the least
    /// recently updated traces when the store is over its limits.
    pub fn insert(&self, span: StoredSpan) -> Inserted {
        let mut result = Inserted::Malformed;
        self.insert_kept(std::iter::once(Kept::Remote(span)), |r| result = r);
        result
    }

    /// Keeps many spans; returns how many were new.
    pub fn insert_all(&self, spans: impl IntoIterator<Item = StoredSpan>) -> usize {
        let mut added = 0;
        self.insert_kept(spans.into_iter().map(Kept::Remote), |r| {
            added += usize::from(r == Inserted::Added)
        });
        added
    }

    /// Keeps a span that ended in this process, as the SDK handed it over.
    fn insert_local(&self, data: SpanData, router: Arc<ServiceRouter>) {
        self.insert_kept(std::iter::once(Kept::Local { data, router }), |_| {});
    }

    /// Inserts `spans` under one lock, telling `each` what became of every span.
    fn insert_kept(&self, spans: impl Iterator<Item = Kept>, mut each: impl FnMut(Inserted)) {
        let mut forgotten = Vec::new();
        let mut added = false;
        {
            let mut inner = self.lock();
            for span in spans {
                let result = self.insert_locked(&mut inner, span, &mut forgotten);
                added |= result == Inserted::Added;
                each(result);
            }
        }
        // Free what was forgotten (thousands of small allocations) without holding the lock.
        drop(forgotten);
        if added {
            self.notify();
        }
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn insert_locked(&self, inner: &mut Inner, span: Kept, forgotten: &mut Vec<TraceEntry>) -> Inserted {
        let key = match &span {
            Kept::Local { data, .. } => Some(u128::from_be_bytes(data.span_context.trace_id().to_bytes())),
            Kept::Remote(stored) => parse_trace_id(&stored.trace_id),
        };
        let Some(key) = key else {
            return Inserted::Malformed;
        };
        inner.seq += 1;
        let seq = inner.seq;
        let entry = inner.traces.entry(key).or_insert_with(|| TraceEntry {
            spans: Vec::new(),
            span_ids: HashSet::new(),
            touched: seq,
        });
        let span_id = span.span_id();
        if span_id.is_some_and(|id| entry.span_ids.contains(&id)) {
            return Inserted::Duplicate;
        }
        if entry.spans.len() >= self.max_spans {
            inner.dropped += 1;
            return Inserted::TraceFull;
        }
        entry.span_ids.extend(span_id);
        entry.spans.push(span);
        let previous = std::mem::replace(&mut entry.touched, seq);
        inner.by_recency.remove(&previous);
        inner.by_recency.insert(seq, key);
        inner.span_count += 1;
        while inner.span_count > self.max_spans || inner.traces.len() > self.max_traces {
            let Some((_, oldest)) = inner.by_recency.pop_first() else {
                break;
            };
            if oldest == key && inner.traces.len() == 1 {
                // Never forget the trace that is being added to; its size is capped above.
                inner.by_recency.insert(seq, oldest);
                break;
            }
            if let Some(gone) = inner.traces.remove(&oldest) {
                inner.span_count -= gone.spans.len();
                forgotten.push(gone);
            }
        }
        Inserted::Added
    }

    /// All kept spans of one trace, ordered by start time. Empty if the trace is unknown.
    /// `trace_id` may be in upper or lower case.
    pub fn spans_of(&self, trace_id: &str) -> Vec<StoredSpan> {
        let Some(key) = parse_trace_id(trace_id) else {
            return Vec::new();
        };
        let mut spans: Vec<StoredSpan> = self
            .lock()
            .traces
            .get(&key)
            .map(|entry| entry.spans.iter().map(Kept::to_stored).collect())
            .unwrap_or_default();
        sort_by_start(&mut spans);
        spans
    }

    /// The spans of `trace_id` and of every trace connected to it by span links, in either
    /// direction and transitively, ordered by start time. With [`crate::propagation::TraceStyle::Links`]
    /// one `apply` becomes several traces (one per asynchronous stage) linked to each other;
    /// this collects them all again.
    pub fn spans_of_linked(&self, trace_id: &str) -> Vec<StoredSpan> {
        let Some(key) = parse_trace_id(trace_id) else {
            return Vec::new();
        };
        let inner = self.lock();
        if !inner.traces.contains_key(&key) {
            return Vec::new();
        }
        // Which traces each trace links to, and which link to it.
        let mut edges: HashMap<u128, BTreeSet<u128>> = HashMap::new();
        for (tid, entry) in &inner.traces {
            for linked in entry.spans.iter().flat_map(Kept::linked_traces) {
                if linked != *tid && inner.traces.contains_key(&linked) {
                    edges.entry(*tid).or_default().insert(linked);
                    edges.entry(linked).or_default().insert(*tid);
                }
            }
        }
        let mut seen: BTreeSet<u128> = BTreeSet::from([key]);
        let mut queue: VecDeque<u128> = VecDeque::from([key]);
        while let Some(next) = queue.pop_front() {
            for other in edges.get(&next).into_iter().flatten() {
                if seen.insert(*other) {
                    queue.push_back(*other);
                }
            }
        }
        let mut spans: Vec<StoredSpan> = seen
            .iter()
            .filter_map(|tid| inner.traces.get(tid))
            .flat_map(|entry| entry.spans.iter().map(Kept::to_stored))
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
                    .filter(|s| s.is_root() && s.name() == APPLY_ROOT_SPAN)
                    .map(Kept::start_unix_nanos)
                    .max()
                    .map(|start| (start, *id))
            })
            .max();
        if let Some((_, id)) = newest_apply {
            return Some(trace_id_text(id));
        }
        inner
            .traces
            .iter()
            .filter_map(|(id, entry)| {
                entry
                    .spans
                    .iter()
                    .map(Kept::start_unix_nanos)
                    .min()
                    .map(|start| (start, *id))
            })
            .max()
            .map(|(_, id)| trace_id_text(id))
    }

    /// `"last"` → [`TraceStore::last_trace_id`]; a trace id → itself in lowercase, if the
    /// store holds it.
    pub fn resolve(&self, id_or_last: &str) -> Option<String> {
        let wanted = id_or_last.trim();
        if wanted.eq_ignore_ascii_case("last") {
            return self.last_trace_id();
        }
        let key = parse_trace_id(wanted)?;
        self.lock().traces.contains_key(&key).then(|| trace_id_text(key))
    }

    /// The summary of one trace, if the store holds it.
    pub fn summary_of(&self, trace_id: &str) -> Option<TraceSummary> {
        let key = parse_trace_id(trace_id)?;
        let inner = self.lock();
        inner
            .traces
            .get(&key)
            .map(|entry| summarize_facts(&trace_id_text(key), &entry.spans))
    }

    /// Summaries of every kept trace, newest (latest start) first.
    pub fn recent_traces(&self) -> Vec<TraceSummary> {
        let mut out: Vec<TraceSummary> = {
            let inner = self.lock();
            inner
                .traces
                .iter()
                .map(|(id, entry)| summarize_facts(&trace_id_text(*id), &entry.spans))
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
    summarize_facts(trace_id, spans)
}

/// What a summary needs of a span, from a [`StoredSpan`] or from a span the store keeps as the
/// SDK handed it over (without converting it).
trait SpanFacts {
    fn start(&self) -> u64;
    fn end(&self) -> u64;
    /// The span's id, and its parent's, as comparable keys.
    fn ids(&self) -> (SpanKey<'_>, Option<SpanKey<'_>>);
    fn name(&self) -> &str;
    fn service(&self) -> &str;
    fn failed(&self) -> bool;
}

/// A span id as text (a [`StoredSpan`] may come with any text) or as the SDK's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SpanKey<'a> {
    Text(&'a str),
    Number(u64),
}

impl SpanFacts for StoredSpan {
    fn start(&self) -> u64 {
        self.start_unix_nanos
    }
    fn end(&self) -> u64 {
        self.end_unix_nanos
    }
    fn ids(&self) -> (SpanKey<'_>, Option<SpanKey<'_>>) {
        (
            SpanKey::Text(&self.span_id),
            self.parent_span_id.as_deref().map(SpanKey::Text),
        )
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn service(&self) -> &str {
        &self.service_name
    }
    fn failed(&self) -> bool {
        self.is_error()
    }
}

impl SpanFacts for Kept {
    fn start(&self) -> u64 {
        self.start_unix_nanos()
    }
    fn end(&self) -> u64 {
        self.end_unix_nanos()
    }
    fn ids(&self) -> (SpanKey<'_>, Option<SpanKey<'_>>) {
        match self {
            Kept::Local { data, .. } => (
                SpanKey::Number(u64::from_be_bytes(data.span_context.span_id().to_bytes())),
                (!self.is_root()).then(|| SpanKey::Number(u64::from_be_bytes(data.parent_span_id.to_bytes()))),
            ),
            Kept::Remote(span) => span.ids(),
        }
    }
    fn name(&self) -> &str {
        Kept::name(self)
    }
    fn service(&self) -> &str {
        Kept::service(self)
    }
    fn failed(&self) -> bool {
        self.is_error()
    }
}

fn summarize_facts<S: SpanFacts>(trace_id: &str, spans: &[S]) -> TraceSummary {
    let mut sorted: Vec<&S> = spans.iter().collect();
    sorted.sort_by_key(|s| (s.start(), std::cmp::Reverse(s.end())));
    let ids: HashSet<SpanKey<'_>> = spans.iter().map(|s| s.ids().0).collect();
    let root = sorted.iter().find(|s| s.ids().1.is_none()).copied();
    let top = root.or_else(|| {
        sorted
            .iter()
            .find(|s| s.ids().1.is_none_or(|p| !ids.contains(&p)))
            .copied()
    });
    let start = sorted.first().map(|s| s.start()).unwrap_or(0);
    let end = spans.iter().map(|s| s.end()).max().unwrap_or(start);
    let mut services: Vec<String> = Vec::new();
    for span in &sorted {
        if !services.iter().any(|known| known == span.service()) {
            services.push(span.service().to_string());
        }
    }
    TraceSummary {
        trace_id: trace_id.to_string(),
        root_name: top.map(|s| s.name().to_string()).unwrap_or_default(),
        root_service: top.map(|s| s.service().to_string()).unwrap_or_default(),
        has_root: root.is_some(),
        start_unix_nanos: start,
        duration_nanos: end.saturating_sub(start),
        span_count: spans.len(),
        error_count: spans.iter().filter(|s| s.failed()).count(),
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
    router: Arc<ServiceRouter>,
}

impl StoreProcessor {
    /// A processor feeding `store`, naming services with `router`.
    pub fn new(store: &'static TraceStore, router: ServiceRouter) -> StoreProcessor {
        StoreProcessor {
            store,
            router: Arc::new(router),
        }
    }
}

impl SpanProcessor for StoreProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        // Kept as it is: the service is chosen, and the span converted, when it is read.
        self.store.insert_local(span, self.router.clone());
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        Arc::make_mut(&mut self.router).set_default_from_resource(resource);
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

    #[test]
    fn spans_that_end_here_are_converted_when_read_as_if_at_their_end() {
        use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
        let store: &'static TraceStore = Box::leak(Box::new(TraceStore::new(100, 10)));
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name("kulisse-test").build())
            .with_span_processor(StoreProcessor::new(store, ServiceRouter::new("unused", true)))
            .build();
        let tracer = provider.tracer("kulisse");
        let root = tracer
            .span_builder("cli.apply")
            .with_attributes([opentelemetry::KeyValue::new(STAGE_KEY, "cli")])
            .start(&tracer);
        let cx = opentelemetry::Context::current_with_span(root);
        let mut child = tracer
            .span_builder("scheduler.bind")
            .with_attributes([opentelemetry::KeyValue::new(STAGE_KEY, "scheduler")])
            .start_with_context(&tracer, &cx);
        child.set_status(Status::error("no node fits"));
        child.end();
        let mut plain = tracer.start_with_context("other", &cx);
        plain.add_event("a thing happened", vec![opentelemetry::KeyValue::new("k", 7)]);
        plain.end();
        cx.span().end();
        let trace_id = cx.span().span_context().trace_id().to_string();

        let spans = store.spans_of(&trace_id.to_uppercase());
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cli.apply", "scheduler.bind", "other"]);
        let services: Vec<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
        assert_eq!(services, ["kulisse-cli", "kulisse-scheduler", "kulisse-test"]);
        assert_eq!(spans[0].parent_span_id, None);
        assert_eq!(spans[1].parent_span_id.as_deref(), Some(spans[0].span_id.as_str()));
        assert_eq!(spans[1].status, SpanStatusCode::Error);
        assert_eq!(spans[1].stage.as_deref(), Some("scheduler"));
        assert_eq!(spans[2].events[0].attributes["k"], "7");
        // A summary read straight from the kept spans is the summary of the converted ones.
        assert_eq!(store.summary_of(&trace_id), Some(summarize(&trace_id, &spans)));
        assert_eq!(store.recent_traces(), vec![summarize(&trace_id, &spans)]);
        assert_eq!(store.last_trace_id(), Some(trace_id.clone()));
        assert_eq!(store.resolve(&trace_id), Some(trace_id));
    }

    #[test]
    fn a_span_whose_trace_id_is_not_32_hex_digits_is_refused() {
        let store = TraceStore::new(100, 10);
        let mut bad = span(1, 1, None, "cli.apply", 0, 1);
        bad.trace_id = "not-a-trace-id".into();
        assert_eq!(store.insert(bad), Inserted::Malformed);
        assert!(store.is_empty());
        assert_eq!(store.trace_count(), 0);
    }
}
