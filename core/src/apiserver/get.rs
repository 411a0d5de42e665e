//! # get and list (mirrors kube-apiserver's GET handlers)
//!
//! `GET .../pods/web` reads one object; `GET .../pods` lists them. A list is a *range*
//! over the store's key prefix (`/registry/pods/default/`) and carries the store revision
//! it reflects as `metadata.resourceVersion`: a client that wants to follow changes
//! watches from exactly there, and misses nothing.
//!
//! Filters: `labelSelector` (`app=web,tier!=db`) and `fieldSelector`
//! (`metadata.name=web`, `spec.nodeName=node-1`). Paging: `limit` and `continue`, where the
//! continue token pins the list to the revision of its first page.
//!
//! When the client asks for a `Table` (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! as `kubectl get` and `kulisse get` do, the server itself turns objects into rows with the
//! familiar columns ([`crate::printers`]): the same columns for every client. Each row
//! carries the object's metadata (`PartialObjectMetadata`), which is what `--show-labels`
//! and `-L` read; `?includeObject=Object` puts the whole object in each row (kubectl asks
//! for it to sort with `--sort-by`), `?includeObject=None` leaves it out.

use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::{Body, Ctx, json_response};
use crate::objects::{self, ApiError, ResourceInfo};
use crate::printers;

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

/// `GET` a collection (one namespace, or all namespaces when `ns` is `None`).
pub async fn list(ctx: &Ctx<'_>, info: &'static ResourceInfo, ns: Option<&str>) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_ctx(ctx)?;
    let (revision, after) = match ctx.param("continue") {
        Some(token) => {
            let (rev, key) = decode_continue(token)?;
            (Some(rev), Some(key))
        }
        None => (None, None),
    };
    let listed = ctx.server.storage.list(info, ns, revision).await.map_err(|e| {
        if e.code == 410 && revision.is_some() {
            ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
        } else {
            e
        }
    })?;
    let limit = ctx
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut items = Vec::new();
    let mut remaining = 0usize;
    let mut last_key = None;
    for stored in listed.items {
        let key = object_sort_key(&stored.object);
        if after.as_ref().is_some_and(|a| key <= *a) {
            continue;
        }
        if !filter.matches(&stored.object)? {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
            continue;
        }
        last_key = Some(key);
        items.push(stored.object);
    }
    let mut metadata = json!({"resourceVersion": listed.revision.to_string()});
    if remaining > 0 {
        if let Some(key) = last_key {
            metadata["continue"] = json!(encode_continue(listed.revision, &key));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
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

/// Does the client want a server-side printed `Table`?
pub fn wants_table(ctx: &Ctx<'_>) -> bool {
    ctx.headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').next().is_some_and(|first| first.contains("as=Table")))
}

/// What each row of a `Table` carries (`?includeObject=`): nothing, the object's metadata
/// (the default), or the whole object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn from_ctx(ctx: &Ctx<'_>) -> Result<Self, ApiError> {
        match ctx.param("includeObject") {
            None | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"None\", \"Metadata\", \"Object\""
            ))),
        }
    }

    /// Reshape the rows of a table built by [`printers::table`] from `items`.
    pub fn apply(self, table: &mut Value, items: &[Value]) {
        let Some(rows) = table.get_mut("rows").and_then(Value::as_array_mut) else {
            return;
        };
        for (row, item) in rows.iter_mut().zip(items) {
            let Some(row) = row.as_object_mut() else { continue };
            match self {
                IncludeObject::Metadata => {}
                IncludeObject::None => {
                    row.remove("object");
                }
                IncludeObject::Object => {
                    row.insert("object".into(), item.clone());
                }
            }
        }
    }
}

/// Label and field selectors of a list or watch request.
pub struct Filter {
    label: Option<String>,
    field: Option<String>,
}

impl Filter {
    pub fn from_ctx(ctx: &Ctx<'_>) -> Result<Self, ApiError> {
        let filter = Filter {
            label: ctx.param("labelSelector").map(str::to_string),
            field: ctx.param("fieldSelector").map(str::to_string),
        };
        // Reject a malformed selector up front, with the parser's words.
        filter.matches(&json!({"metadata": {}}))?;
        Ok(filter)
    }

    /// Does `obj` pass both selectors?
    pub fn matches(&self, obj: &Value) -> Result<bool, ApiError> {
        if let Some(sel) = &self.label {
            let labels = objects::labels(obj);
            if !objects::labels_match(sel, &labels)
                .map_err(|e| ApiError::bad_request(&format!("unable to parse labelSelector {sel:?}: {e}")))?
            {
                return Ok(false);
            }
        }
        if let Some(sel) = &self.field {
            if !objects::field_selector_matches(sel, obj)
                .map_err(|e| ApiError::bad_request(&format!("unable to parse fieldSelector {sel:?}: {e}")))?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn object_sort_key(obj: &Value) -> String {
    format!(
        "{}/{}",
        objects::namespace(obj).unwrap_or(""),
        objects::name(obj).unwrap_or("")
    )
}

fn encode_continue(revision: i64, key: &str) -> String {
    let raw = format!("{revision}:{key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: it must be the exact value of metadata.continue from the previous page",
        )
    };
    if token.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect();
    let raw = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let (rev, key) = raw.split_once(':').ok_or_else(bad)?;
    Ok((rev.parse().map_err(|_| bad())?, key.to_string()))
}
