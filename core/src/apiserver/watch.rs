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

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use super::get::Filter;
use super::storage::{decode, store_error};
use super::{Body, Ctx};
use crate::objects::{ApiError, ResourceInfo};
use crate::store::{EventType, StoreError};

/// How long a watch lasts when the client does not say (Kubernetes picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `GET ...?watch=true`
pub async fn handle(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_ctx(ctx)?;
    let shape = Shape {
        table: super::get::wants_table(ctx).then_some(info),
        include: super::get::IncludeObject::from_ctx(ctx)?,
    };
    let timeout = ctx
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let from =
        match ctx.param("resourceVersion") {
            None | Some("0") => None,
            Some(rv) => Some(rv.parse::<i64>().map_err(|_| {
                ApiError::bad_request(&format!("resourceVersion {rv:?} is not a valid resource version"))
            })?),
        };
    let storage = ctx.server.storage.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);

    // Initial state: for a watch without a version, the current objects as ADDED events.
    let (initial, start) = match from {
        Some(rv) => (Vec::new(), rv + 1),
        None => {
            let listed = storage.list(info, ns, None).await?;
            let mut lines = Vec::new();
            for item in listed.items {
                if filter.matches(&item.object)? {
                    lines.push(shape.line("ADDED", &item.object));
                }
            }
            (lines, listed.revision + 1)
        }
    };
    let mut events = match storage.watch(info, ns, Some(start)).await {
        Ok(stream) => Some(stream),
        Err(e) if e.code == 410 => {
            let _ = tx.try_send(event_line("ERROR", &e.to_status_json()));
            None
        }
        Err(e) => return Err(e),
    };
    tracing::info!(from = start, "watch started");

    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some(events) = events.as_mut() else { return };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = &mut deadline => return,
                _ = stop.changed() => return,
                _ = tx.closed() => return,
            };
            let event = match next {
                None => return,
                Some(Ok(ev)) => ev,
                Some(Err(e @ (StoreError::Compacted { .. } | StoreError::WatchLagged))) => {
                    let _ = tx.send(event_line("ERROR", &store_error(e).to_status_json())).await;
                    return;
                }
                Some(Err(e)) => {
                    let _ = tx.send(event_line("ERROR", &store_error(e).to_status_json())).await;
                    return;
                }
            };
            let Some(line) = translate(&event, &filter, shape) else {
                continue;
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });

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

/// Turn a store event into a watch line, applying the selectors' ADDED/DELETED rules.
fn translate(event: &crate::store::WatchEvent, filter: &Filter, shape: Shape) -> Option<Bytes> {
    let prev = event.prev_kv.as_ref().and_then(|kv| decode(kv).ok()).map(|s| s.object);
    let prev_matches = prev.as_ref().is_some_and(|p| filter.matches(p).unwrap_or(false));
    match event.kind {
        EventType::Delete => {
            let mut obj = prev?;
            super::storage::set_resource_version(&mut obj, event.kv.mod_revision);
            prev_matches.then(|| shape.line("DELETED", &obj))
        }
        EventType::Put => {
            let obj = decode(&event.kv).ok()?.object;
            let now_matches = filter.matches(&obj).unwrap_or(false);
            match (prev.is_some() && prev_matches, now_matches) {
                (false, true) => Some(shape.line("ADDED", &obj)),
                (true, true) => Some(shape.line("MODIFIED", &obj)),
                (true, false) => Some(shape.line("DELETED", &obj)),
                (false, false) => None,
            }
        }
    }
}

/// What the events carry: the objects, or one-row `Table`s of them.
#[derive(Clone, Copy)]
struct Shape {
    table: Option<&'static ResourceInfo>,
    include: super::get::IncludeObject,
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
