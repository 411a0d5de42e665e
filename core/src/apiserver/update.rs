//! # update (mirrors kube-apiserver's PUT handler and its `GuaranteedUpdate`)
//!
//! `PUT .../deployments/web` replaces the whole object. The body carries the
//! `metadata.resourceVersion` the client read: if the store has moved on since, the
//! answer is `409 Conflict` and the client must read again and redo its change. This is
//! *optimistic concurrency*: no locks, just "write only if nothing changed since I read".
//!
//! [`write`] is the shared last step of PUT, PATCH and apply: carry over server-owned
//! fields, default, validate (including immutable fields), and skip the write entirely
//! when nothing changed, as kube-apiserver does.

use http::{Response, StatusCode};
use serde_json::Value;
use tracing::{Instrument, info_span};

use super::storage::Stored;
use super::{Body, Ctx, json_response, meta, patch};
use crate::objects::{self, ApiError, ResourceInfo};

/// `PUT` an object (or its `/status`).
pub async fn handle(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let mut new = patch::decode(ctx)?;
    super::create::default_type_meta(info, &mut new);
    check_name(&new, name)?;
    super::create::check_body_target(info, &new, ns)?;
    let stored = ctx
        .server
        .storage
        .get(info, ns, name)
        .await?
        .ok_or_else(|| ApiError::not_found(info, name))?;
    check_precondition(info, name, &new, &stored)?;
    let (obj, _) = write(ctx, info, ns, name, sub, &stored, new).await?;
    Ok(json_response(StatusCode::OK, &obj))
}

/// Validate `new` as the successor of `stored` and write it if anything changed.
/// Returns the object as stored and the top-level fields that changed (empty: nothing
/// was written). A stale `stored.revision` gives `409 Conflict`.
pub async fn write(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    stored: &Stored,
    mut new: Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let span = info_span!(
        "apiserver.validate",
        "kulisse.stage" = "apiserver",
        "k8s.kind" = info.kind,
        "k8s.name" = name
    );
    span.in_scope(|| check_shape(info, name, &new))?;
    check_name(&new, name)?;
    span.in_scope(|| super::openapi::check_unknown_fields(ctx, info, name, &mut new))?;
    span.in_scope(|| {
        objects::apply_defaults(info, &mut new);
        meta::prepare_update(info, &stored.object, &mut new, sub);
    });
    let allocated = if info.kind == "Service" && sub.is_none() {
        let fut = ctx.server.allocate_service_addresses(&mut new);
        Some(fut.instrument(span.clone()).await?)
    } else {
        None
    };
    let result = validate_and_store(ctx, info, ns, name, stored, new, &span).await;
    // A dry run, or an update that failed, keeps nothing it allocated.
    if let Some(taken) = allocated.filter(|_| ctx.dry_run() || result.is_err()) {
        ctx.server.revert_service_addresses(taken).await;
    }
    result
}

/// The object's name, if it says one, must be the URL's (a patch cannot rename).
fn check_name(obj: &Value, name: &str) -> Result<(), ApiError> {
    match objects::name(obj) {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

/// A write whose body names a `metadata.resourceVersion` is conditional on it: a stale one
/// is `409 Conflict` with upstream's optimistic-lock message (PUT, every patch, apply).
pub fn check_precondition(info: &ResourceInfo, name: &str, body: &Value, stored: &Stored) -> Result<(), ApiError> {
    let sent = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty());
    match sent {
        Some(rv) if rv != stored.revision.to_string() => {
            Err(ApiError::conflict(info, name, objects::OPTIMISTIC_LOCK_MESSAGE))
        }
        _ => Ok(()),
    }
}

/// An object after a patch must still be an object, and its `metadata` (if any) too. A JSON
/// patch such as `[{"op":"add","path":"","value":[]}]` can turn it into anything.
pub fn check_shape(info: &ResourceInfo, name: &str, obj: &Value) -> Result<(), ApiError> {
    let cause = |field: &str, v: &Value, what: &str| objects::StatusCause {
        reason: "FieldValueTypeInvalid".into(),
        message: format!("Invalid value: \"{}\": {what}", json_type(v)),
        field: field.into(),
    };
    let causes = match obj.get("metadata") {
        _ if !obj.is_object() => vec![cause("", obj, "the object must be a JSON object")],
        Some(m) if !m.is_object() => vec![cause("metadata", m, "metadata must be an object")],
        _ => return Ok(()),
    };
    Err(ApiError::invalid(info, name, causes))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The rest of [`write`]: validation, the "anything changed?" check, and the write.
async fn validate_and_store(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    stored: &Stored,
    mut new: Value,
    span: &tracing::Span,
) -> Result<(Value, Vec<String>), ApiError> {
    span.in_scope(|| {
        objects::validate(info, &new)?;
        objects::validate_update(info, &stored.object, &new)
    })?;
    let changed = changed_fields(&stored.object, &new);
    if changed.is_empty() {
        return Ok((stored.object.clone(), changed));
    }
    if ctx.dry_run() {
        return Ok((new, changed));
    }
    if finalizers_just_emptied(info, &stored.object, &new) {
        // The last finalizer is gone from a terminating object: now it really goes.
        let deleted = ctx.server.storage.delete(info, ns, name, Some(stored.revision)).await?;
        return Ok((deleted.object, changed));
    }
    meta::stamp_traceparent(&mut new);
    let written = ctx.server.storage.update(info, ns, name, &new, stored.revision).await?;
    Ok((written.object, changed))
}

/// A terminating object whose last finalizer was just removed. A namespace also waits for
/// its `spec.finalizers` (upstream's `ShouldDeleteNamespaceDuringUpdate`).
fn finalizers_just_emptied(info: &ResourceInfo, old: &Value, new: &Value) -> bool {
    let len = |v: &Value, pointer: &str| v.pointer(pointer).and_then(Value::as_array).map_or(0, Vec::len);
    let count = |v: &Value| {
        let spec = if info.kind == "Namespace" {
            len(v, "/spec/finalizers")
        } else {
            0
        };
        len(v, "/metadata/finalizers") + spec
    };
    new.pointer("/metadata/deletionTimestamp").is_some() && count(old) > 0 && count(new) == 0
}

/// The paths (two levels deep, e.g. `spec.replicas`) that differ between two versions,
/// ignoring bookkeeping that changes on every write (resourceVersion, managedFields times).
pub fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (old, new) = (meta::without_bookkeeping(old), meta::without_bookkeeping(new));
    diff(&old, &new, "", 0, &mut out);
    out
}

fn diff(old: &Value, new: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) if depth < 2 => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    &child,
                    depth + 1,
                    out,
                );
            }
        }
        _ => out.push(if path.is_empty() {
            "<root>".to_string()
        } else {
            path.to_string()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_fields_ignore_bookkeeping() {
        let a = json!({"metadata": {"resourceVersion": "5", "managedFields": [{"time": "t1", "manager": "m"}]}, "spec": {"replicas": 1, "x": 1}});
        let b = json!({"metadata": {"resourceVersion": "6", "managedFields": [{"time": "t2", "manager": "m"}]}, "spec": {"replicas": 2, "x": 1}});
        assert_eq!(changed_fields(&a, &b), vec!["spec.replicas".to_string()]);
        assert!(changed_fields(&a, &a).is_empty());
    }
}
