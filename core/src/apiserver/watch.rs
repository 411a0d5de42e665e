//! # watch (mirrors kube-apiserver's watch handler and its watch cache)
//!
//! `GET .../pods?watch=true&resourceVersion=42` keeps the connection open and streams one
//! JSON line per change, in the order the store committed them:
//!
//! ```text
//! {"type":"ADDED","object":{"kind":"Pod",...,"metadata":{"resourceVersion":"43",...}}}
//! {"type":"MODIFIED","object":{...}}
//! {"type":"DELETED","object":{...}}
//! ```
//!
//! This is the pipe every controller, the scheduler and every kubelet hang on. The rules:
//! - `resourceVersion=N`: every change *after* N, without gaps. A client that lost its
//!   connection resumes from the last version it saw and misses nothing.
//! - no `resourceVersion` (or `0`): first an `ADDED` event for every existing object
//!   (the current state), then the changes.
//! - if N is older than the store's history (it was compacted), the stream sends one
//!   `ERROR` event carrying a `410 Expired` Status: the client must list again.
//! - with a label or field selector, an object that stops matching arrives as `DELETED`,
//!   one that starts matching as `ADDED`, as Kubernetes does.
//! - `timeoutSeconds` ends the watch after that long; clients simply watch again.
//! - a client that asks for a `Table` (`kubectl get pods -w`) gets, in every event, a
//!   `Table` with one row for the object (the same columns as `kubectl get`), instead of
//!   the object itself.
//! - `allowWatchBookmarks=true`: about once a minute (and just before the timeout) a
//!   `BOOKMARK` event whose object has only `metadata.resourceVersion`: "everything up to
//!   here has been sent". A client that resumes from it skips events that did not concern
//!   it, and is less likely to hit a compacted version. The version moves on even when
//!   nothing under the watched resource changes, thanks to the store's progress
//!   notifications (etcd's `progress_notify`, [`crate::store::WatchMessage::Progress`]).
//! - `sendInitialEvents=true&resourceVersionMatch=NotOlderThan` (client-go's watch-list,
//!   KEP-3157): the current state as `ADDED` events, then a `BOOKMARK` annotated
//!   `k8s.io/initial-events-end: "true"` whose version is that state's, then the changes —
//!   a list and a watch in one request. See [`super::list_options`] for the version rules.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::cacher::{self, CacheMessage, CacheStream, CachedEvent};
use super::list_options::{self, Filter, INITIAL_EVENTS_END, ListOptions};
use super::storage::{Storage, store_error};
use super::table::{IncludeObject, wants_table};
use super::{Body, Ctx};
use crate::objects::{ApiError, ResourceInfo};
use crate::store::{EventType, Revision, list_prefix};

/// How long a watch lasts when the client does not say (Kubernetes picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How often a watch that allows bookmarks gets one: about a minute, as upstream's watch
/// cache sends them ([`super::Config::bookmark_interval`] changes it).
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// The last bookmark goes out this long before the watch's timeout, as upstream's does.
const BOOKMARK_BEFORE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET ...?watch=true`
pub async fn handle(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Response<Body>, ApiError> {
    let options = ListOptions::from_ctx(ctx)?;
    let filter = Filter::from_ctx(ctx)?;
    let shape = Shape {
        table: wants_table(ctx).then_some(info),
        include: IncludeObject::from_ctx(ctx)?,
    };
    let timeout = ctx
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let storage = ctx.server.storage.clone();
    let start = Start::plan(&storage, info, ns, &options, &filter, shape).await?;
    let bookmarks = options
        .allow_watch_bookmarks
        .then_some(ctx.server.config.bookmark_interval);
    // The store's progress notifications keep the bookmarks' revision current.
    let progress = bookmarks.map(|every| (every / 4).max(Duration::from_millis(10)));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let events = match open_events(ctx, info, ns, start.from, progress).await {
        Ok(stream) => Some(stream),
        Err(e) if e.code == 410 => {
            let _ = tx.try_send(event_line("ERROR", &e.to_status_json()));
            None
        }
        Err(e) => return Err(e),
    };
    tracing::info!(from = start.from, "watch started");
    let streamer = Streamer {
        tx,
        info,
        filter,
        shape,
        resume: start.from - 1,
        bookmarks,
        deadline: Instant::now() + timeout,
    };
    tokio::spawn(streamer.run(start, events, stop));

    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
    let body: Body = BodyExt::boxed(StreamBody::new(stream));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| Response::new(http_body_util::Full::new(Bytes::new()).boxed())))
}

/// The changes from revision `from` on: from the watch cache ([`super::cacher`]) when it
/// reaches back that far, else straight from the store.
async fn open_events(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    from: Revision,
    progress: Option<Duration>,
) -> Result<CacheStream, ApiError> {
    let prefix = list_prefix(info.plural, if info.namespaced { ns } else { None });
    let node = cacher::node_index(info.plural, ctx.param("fieldSelector"));
    let cache = &ctx.server.watch_cache;
    if let Some(stream) = cache
        .subscribe(info.plural, prefix, from, node)
        .await
        .map_err(store_error)?
    {
        return Ok(stream);
    }
    let stream = ctx.server.storage.watch(info, ns, Some(from), progress).await?;
    Ok(cacher::from_store_stream(stream))
}

/// Where a watch starts: the initial `ADDED` events (if any) and the first revision whose
/// changes it streams.
struct Start {
    initial: Vec<Bytes>,
    from: Revision,
    /// Send the `k8s.io/initial-events-end` bookmark after the initial events.
    end_bookmark: bool,
}

impl Start {
    /// - `sendInitialEvents=true` (watch-list): the state at a revision not older than
    ///   `resourceVersion` (the newest without one), then a bookmark if bookmarks are allowed;
    /// - `sendInitialEvents=false`: only changes, after `resourceVersion` or from now;
    /// - neither (the legacy watch): with `resourceVersion=N` the changes after N, without
    ///   one (or with 0) the current state first.
    async fn plan(
        storage: &Storage,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        options: &ListOptions,
        filter: &Filter,
        shape: Shape,
    ) -> Result<Start, ApiError> {
        let rv = options
            .resource_version
            .as_deref()
            .map(list_options::parse_resource_version)
            .transpose()?
            .filter(|rv| *rv > 0);
        let initial = options.send_initial_events.unwrap_or(rv.is_none());
        if !initial {
            let from = match rv {
                Some(rv) => rv + 1,
                None => storage.current_revision().await? + 1,
            };
            return Ok(Start {
                initial: Vec::new(),
                from,
                end_bookmark: false,
            });
        }
        if let Some(min) = rv {
            list_options::wait_for_revision(storage, min).await?;
        }
        let listed = storage.list(info, ns, None).await?;
        let mut lines = Vec::new();
        for item in listed.items {
            if filter.matches(&item.object)? {
                lines.push(shape.line("ADDED", &item.object));
            }
        }
        Ok(Start {
            initial: lines,
            from: listed.revision + 1,
            end_bookmark: options.send_initial_events == Some(true) && options.allow_watch_bookmarks,
        })
    }
}

/// The task that feeds one watch response.
struct Streamer {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    info: &'static ResourceInfo,
    filter: Filter,
    shape: Shape,
    /// The revision a client could resume from: every change up to it has been sent (or
    /// did not match). Bookmarks carry it.
    resume: Revision,
    bookmarks: Option<Duration>,
    deadline: Instant,
}

impl Streamer {
    async fn run(mut self, start: Start, events: Option<CacheStream>, mut stop: tokio::sync::watch::Receiver<bool>) {
        for line in start.initial {
            if self.tx.send(line).await.is_err() {
                return;
            }
        }
        if start.end_bookmark && !self.send(self.bookmark(true)).await {
            return;
        }
        let Some(mut events) = events else { return };
        let mut next_bookmark = self.next_bookmark(Instant::now());
        loop {
            let bookmark_due = async {
                match next_bookmark {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let message = tokio::select! {
                next = events.next() => next,
                _ = bookmark_due => {
                    if !self.send(self.bookmark(false)).await {
                        return;
                    }
                    next_bookmark = self.next_bookmark(Instant::now());
                    continue;
                }
                _ = tokio::time::sleep_until(self.deadline) => return,
                _ = stop.changed() => return,
                _ = self.tx.closed() => return,
            };
            let line = match message {
                None => return,
                Some(Ok(CacheMessage::Progress(revision))) => {
                    self.resume = self.resume.max(revision);
                    continue;
                }
                Some(Ok(CacheMessage::Event(event))) => {
                    self.resume = self.resume.max(event.revision);
                    match translate(&event, &self.filter, self.shape) {
                        Some(line) => line,
                        None => continue,
                    }
                }
                Some(Err(e)) => {
                    let _ = self
                        .tx
                        .send(event_line("ERROR", &store_error(e).to_status_json()))
                        .await;
                    return;
                }
            };
            if !self.send(line).await {
                return;
            }
        }
    }

    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(line).await.is_ok()
    }

    /// Upstream's schedule: about every interval, and once more just before the timeout.
    fn next_bookmark(&self, now: Instant) -> Option<Instant> {
        let heartbeat = now + self.bookmarks?;
        let at = match self.deadline.checked_sub(BOOKMARK_BEFORE_TIMEOUT) {
            Some(before_timeout) if before_timeout < heartbeat => before_timeout,
            _ => heartbeat,
        };
        (at > now).then_some(at)
    }

    /// A `BOOKMARK`: an object of the watched kind with nothing but its resourceVersion
    /// (and, after a watch-list's initial events, the `k8s.io/initial-events-end` annotation).
    fn bookmark(&self, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": self.resume.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
        }
        let object = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": metadata});
        event_line("BOOKMARK", &object)
    }
}

/// Turn a decoded store event into a watch line, applying the selectors' ADDED/DELETED rules.
fn translate(event: &CachedEvent, filter: &Filter, shape: Shape) -> Option<Bytes> {
    let prev_matches = event.prev.as_ref().is_some_and(|p| filter.matches(p).unwrap_or(false));
    let object = event.object.as_ref()?;
    let kind = match event.kind {
        EventType::Delete => prev_matches.then_some("DELETED")?,
        EventType::Put => match (prev_matches, filter.matches(object).unwrap_or(false)) {
            (false, true) => "ADDED",
            (true, true) => "MODIFIED",
            (true, false) => "DELETED",
            (false, false) => return None,
        },
    };
    Some(match shape.table {
        Some(_) => shape.line(kind, object),
        // The object's JSON is made once per event and shared by every watch that sends it.
        None => {
            let json = event.object_json();
            let mut line = Vec::with_capacity(json.len() + 32);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            line.extend_from_slice(json);
            line.extend_from_slice(b"}\n");
            Bytes::from(line)
        }
    })
}

/// What the events carry: the objects, or one-row `Table`s of them.
#[derive(Clone, Copy)]
struct Shape {
    table: Option<&'static ResourceInfo>,
    include: IncludeObject,
}

impl Shape {
    fn line(self, kind: &str, object: &Value) -> Bytes {
        match self.table {
            Some(info) => {
                let rv = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let mut table = crate::printers::table(info, std::slice::from_ref(object), rv);
                self.include.apply(&mut table, std::slice::from_ref(object));
                event_line(kind, &table)
            }
            None => event_line(kind, object),
        }
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}
