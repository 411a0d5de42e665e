//! # Tables (mirrors the API server's `Table` output, `meta.k8s.io/v1`)
//!
//! `kubectl get` does not format objects itself: it sends
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and the API server answers a
//! `Table` with the columns of the kind (see [`crate::printers`]) and one row per object.
//! Each row carries, by `?includeObject=`, nothing, the object's metadata (the default) or
//! the whole object. Upstream negotiates this in `handlers/response.go`
//! (`transformResponseObject`) for get, list and watch alike; here [`super::get`] and
//! [`super::watch`] both ask this module.

use http::header;
use serde_json::Value;

use super::Ctx;
use crate::objects::ApiError;

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

    /// Reshape the rows of a table built by [`crate::printers::table`] from `items`.
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
