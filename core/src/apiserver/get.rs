//! # get and list (mirrors kube-apiserver's GET handlers)
//!
//! `GET .../pods/web` reads one object; `GET .../pods` lists them. A list is a *range*
//! over the store's key prefix (`/registry/pods/default/`) and carries the store revision
//! it reflects as `metadata.resourceVersion`: a client that wants to follow changes
//! watches from exactly there, and misses nothing.
//!
//! Filters: `labelSelector` (`app=web,tier!=db`) and `fieldSelector`
//! (`metadata.name=web`, `spec.nodeName=node-1`). Which state a list reads
//! (`resourceVersion`, `resourceVersionMatch`) and paging (`limit` and `continue`, where the
//! continue token pins every page to the revision of the first) follow
//! [`super::list_options`].
//!
//! When the client asks for a `Table` (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! as `kubectl get` and `kulisse get` do, the server itself turns objects into rows with the
//! familiar columns ([`crate::printers`]): the same columns for every client. Each row
//! carries the object's metadata (`PartialObjectMetadata`), which is what `--show-labels`
//! and `-L` read; `?includeObject=Object` puts the whole object in each row (kubectl asks
//! for it to sort with `--sort-by`), `?includeObject=None` leaves it out.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::list_options::{self, Continue, Filter, ListOptions, ReadAt};
use super::storage::{Listed, Stored};
use super::table::{IncludeObject, wants_table};
use super::{Body, Ctx, json_response};
use crate::objects::{self, ApiError, ResourceInfo};
use crate::{printers, store};

/// `GET` one object.
pub async fn get(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let stored = ctx
        .server
        .storage
        .get(info, ns, name)
        .await?
        .ok_or_else(|| ApiError::not_found(info, name))?;
    if wants_table(ctx) {
        let mut table = printers::table(info, std::slice::from_ref(&stored.object), &stored.revision.to_string());
        IncludeObject::from_ctx(ctx)?.apply(&mut table, std::slice::from_ref(&stored.object));
        return Ok(json_response(StatusCode::OK, &table));
    }
    Ok(json_response(StatusCode::OK, &stored.object))
}

/// `GET` a collection (one namespace, or all namespaces when `ns` is `None`), at the
/// revision the request asks for ([`list_options`]), one page at a time with `limit`.
pub async fn list(ctx: &Ctx<'_>, info: &'static ResourceInfo, ns: Option<&str>) -> Result<Response<Body>, ApiError> {
    let options = ListOptions::from_ctx(ctx)?;
    let filter = Filter::from_ctx(ctx)?;
    let limit = ctx
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (read, start) = match options.continue_token.as_deref() {
        Some(token) => {
            if options.resource_version.as_deref().is_some_and(|rv| rv != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let token = list_options::decode_continue(token)?;
            let read = match token.revision {
                rv if rv > 0 => ReadAt::Exact(rv),
                _ => ReadAt::Latest { min: None },
            };
            (read, Some(token.start))
        }
        None => (options.read_at(limit.is_some())?, None),
    };
    let listed = match read_list(ctx, info, ns, read).await {
        Ok(listed) => listed,
        Err(e) if e.code == 410 && start.is_some() => return Ok(expired_continue(start.unwrap_or_default())),
        Err(e) => return Err(e),
    };
    let prefix = store::list_prefix(info.plural, if info.namespaced { ns } else { None });
    let page = Page::cut(info, &prefix, listed.items, &filter, start.as_deref(), limit)?;
    let mut metadata = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(last) = page.last.filter(|_| page.remaining > 0) {
        // The next page starts right after the last key of this one ("\0" sorts first).
        let token = Continue {
            revision: listed.revision,
            start: format!("{last}\u{0}"),
        };
        metadata["continue"] = json!(list_options::encode_continue(&token));
        if filter.is_empty() {
            metadata["remainingItemCount"] = json!(page.remaining);
        }
    }
    let items = page.items;
    if wants_table(ctx) {
        let mut table = printers::table(info, &items, &listed.revision.to_string());
        IncludeObject::from_ctx(ctx)?.apply(&mut table, &items);
        table["metadata"] = metadata;
        return Ok(json_response(StatusCode::OK, &table));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": metadata, "items": items}),
    ))
}

/// Range over the collection where `read` says: the newest state (waiting a moment for a
/// revision the store has not reached), or the state as it was at one revision.
async fn read_list(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    read: ReadAt,
) -> Result<Listed, ApiError> {
    let storage = &ctx.server.storage;
    match read {
        ReadAt::Latest { min } => {
            let listed = storage.list(info, ns, None).await?;
            match min {
                Some(min) if listed.revision < min => {
                    list_options::wait_for_revision(storage, min).await?;
                    storage.list(info, ns, None).await
                }
                _ => Ok(listed),
            }
        }
        ReadAt::Exact(revision) => {
            let listed = match storage.list(info, ns, Some(revision)).await {
                Err(e) if e.code == 504 => {
                    list_options::wait_for_revision(storage, revision).await?;
                    storage.list(info, ns, Some(revision)).await
                }
                other => other,
            };
            listed.map_err(|e| match e.code {
                410 => ApiError::expired("The resourceVersion for the provided list is too old."),
                _ => e,
            })
        }
    }
}

/// `410 Expired` for a continue token whose snapshot was compacted. As upstream, the
/// `Status` carries a new token that goes on from the same key at the newest state.
fn expired_continue(start: String) -> Response<Body> {
    let err = ApiError::expired(INCONSISTENT_CONTINUE);
    tracing::Span::current().record("k8s.outcome", err.reason.as_str());
    let mut status = err.to_status_json();
    let token = list_options::encode_continue(&Continue { revision: -1, start });
    status["metadata"] = json!({ "continue": token });
    json_response(StatusCode::GONE, &status)
}

/// Upstream's message for a continue token that is too old.
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. \
You can start a new list without the continue parameter, or use the continue token in this response to retrieve the \
remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were \
created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// One page of a list: the matching objects from the start key on, at most `limit`.
struct Page {
    items: Vec<Value>,
    /// The key (relative to the list's prefix) of the last object on the page.
    last: Option<String>,
    /// How many matching objects did not fit on the page.
    remaining: usize,
}

impl Page {
    fn cut(
        info: &ResourceInfo,
        prefix: &str,
        stored: Vec<Stored>,
        filter: &Filter,
        start: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Page, ApiError> {
        let mut page = Page {
            items: Vec::new(),
            last: None,
            remaining: 0,
        };
        for item in stored {
            let ns = if info.namespaced {
                objects::namespace(&item.object)
            } else {
                None
            };
            let key = store::object_key(info.plural, ns, objects::name(&item.object).unwrap_or(""));
            let key = key.strip_prefix(prefix).unwrap_or(&key).to_string();
            if start.is_some_and(|s| key.as_str() < s) || !filter.matches(&item.object)? {
                continue;
            }
            if limit.is_some_and(|l| page.items.len() >= l) {
                page.remaining += 1;
                continue;
            }
            page.last = Some(key);
            page.items.push(item.object);
        }
        Ok(page)
    }
}
