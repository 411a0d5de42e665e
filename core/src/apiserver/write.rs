//! # What every write shares (mirrors `handlers/rest.go` and the registry's `Store`)
//!
//! POST, PUT, every PATCH, server-side apply, `/status` and `/scale` look different from
//! the outside, but under the hood they are one pipeline with a different first step:
//!
//! 1. **decode** the body ([`decode`], the `apiserver.decode` span) and fill a missing
//!    `apiVersion`/`kind` from the URL ([`default_type_meta`]);
//! 2. **check the target**: the body's namespace and name must be the URL's
//!    ([`check_body_target`], [`check_name`]), and the result of a patch must still be an
//!    object ([`check_shape`]);
//! 3. **unknown fields, defaults, validation** (the `apiserver.validate` span):
//!    `?fieldValidation` ([`super::openapi::check_unknown_fields`]), then
//!    [`crate::objects`]' defaulting and validation, including immutable fields on update;
//! 4. **write conditionally**: a create is "only if absent" ([`create`]); an update is "only
//!    if the revision I read is still current" ([`check_precondition`] for the revision the
//!    client sent, [`write`] for the one the server read), and is skipped when nothing
//!    changed ([`changed_fields`]).
//!
//! Upstream has the same split: `k8s.io/apiserver/pkg/endpoints/handlers/{create,update,
//! patch}.go` only differ in how they get the new object; decoding, name checks and
//! `fieldValidation` live in the shared `rest.go`, and every one of them ends in the
//! generic registry's `Store.Create` or `Store.Update` (`rest.BeforeCreate` /
//! `rest.BeforeUpdate`, then `GuaranteedUpdate`). Here the verb files ([`super::create`],
//! [`super::update`], [`super::patch`], [`super::scale`], [`super::binding`]) call this
//! module and never one another; a test below keeps it so.

use serde_json::Value;
use tracing::{Instrument, info_span};

use super::storage::Stored;
use super::{Ctx, meta, openapi, step};
use crate::objects::{self, ApiError, ResourceInfo};

/// Decode the request body as an object, in an `apiserver.decode` span.
pub fn decode(ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let _span = info_span!(
        "apiserver.decode",
        "kulisse.stage" = "apiserver",
        "http.request.body.size" = ctx.body.len(),
        "content_type" = ctx.content_type().unwrap_or("")
    )
    .entered();
    if ctx.body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty: an object was expected",
        ));
    }
    objects::parse_body(ctx.content_type(), &ctx.body)
}

/// Fill a missing `apiVersion` / `kind` from the URL, as kube-apiserver's decoder does (it
/// decodes the body with the endpoint's group/version/kind as the default). Clients such as
/// the official Python client send a typed object without them unless the caller set them:
/// `POST /api/v1/namespaces/default/configmaps` with `{"metadata":{"name":"c"}}` is a
/// ConfigMap. Values that are present are left alone, so a wrong one is still rejected.
pub fn default_type_meta(info: &ResourceInfo, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else { return };
    let missing = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    if missing(map.get("apiVersion")) {
        map.insert("apiVersion".to_string(), Value::String(info.api_version()));
    }
    if missing(map.get("kind")) {
        map.insert("kind".to_string(), Value::String(info.kind.to_string()));
    }
}

/// The body's namespace, if set, must be the URL's.
pub fn check_body_target(info: &ResourceInfo, obj: &Value, ns: Option<&str>) -> Result<(), ApiError> {
    if let (Some(body_ns), Some(url_ns)) = (objects::namespace(obj), ns) {
        if info.namespaced && body_ns != url_ns {
            return Err(ApiError::bad_request(&format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({url_ns})"
            )));
        }
    }
    Ok(())
}

/// Default, validate and store a new object; shared by POST and by an apply that creates
/// (upstream's `Store.Create` with `rest.BeforeCreate`).
pub async fn create(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    obj: &mut Value,
) -> Result<Value, ApiError> {
    {
        let _span = tracing::info_span!(
            "apiserver.validate",
            "kulisse.stage" = "apiserver",
            "k8s.kind" = info.kind,
            "k8s.name" = name
        )
        .entered();
        check_shape(info, name, obj)?;
        if info.namespaced && obj.get("metadata").is_some_and(Value::is_object) {
            if let Some(ns) = ns {
                obj["metadata"]["namespace"] = Value::String(ns.to_string());
            }
        }
        openapi::check_unknown_fields(ctx, info, name, obj)?;
        objects::apply_defaults(info, obj);
        objects::validate(info, obj)?;
    }
    if let Some(ns) = ns.filter(|_| info.namespaced) {
        require_namespace(ctx, info, name, ns).await?;
    }
    meta::prepare_create(info, obj, ns);
    let allocated = match info.kind {
        "Service" => Some(ctx.server.allocate_service_addresses(obj).await?),
        _ => None,
    };
    meta::stamp_traceparent(obj);
    let result = if ctx.dry_run() {
        Ok(obj.clone())
    } else {
        let name = objects::name(obj).unwrap_or(name).to_string();
        let target = step::Target {
            info,
            verb: "create",
            ns,
            name: &name,
            sub: None,
        };
        let passage = step::hold(ctx, target, obj, None).await;
        let result = ctx.server.storage.create(info, ns, &name, obj).await.map(|s| s.object);
        passage.done(&result, revision_of);
        result
    };
    // A dry run, or a create that failed, keeps nothing it allocated.
    if let Some(taken) = allocated.filter(|_| ctx.dry_run() || result.is_err()) {
        ctx.server.revert_service_addresses(taken).await;
    }
    result
}

/// Objects can only be created in a namespace that exists and is not being deleted (the
/// NamespaceLifecycle admission plugin in Kubernetes).
pub async fn require_namespace(ctx: &Ctx<'_>, info: &ResourceInfo, name: &str, ns: &str) -> Result<(), ApiError> {
    let ns_info = objects::by_gvk("v1", "Namespace").expect("Namespace is a built-in kind");
    match ctx.server.storage.get(ns_info, None, ns).await? {
        Some(stored)
            if stored.object.pointer("/metadata/deletionTimestamp").is_some()
                || stored.object.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") =>
        {
            Err(ApiError::namespace_terminating(info, name, ns))
        }
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(ns_info, ns)),
    }
}

/// Validate `new` as the successor of `stored` and write it if anything changed (upstream's
/// `Store.Update`: `rest.BeforeUpdate`, then `GuaranteedUpdate` on the revision read).
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
    span.in_scope(|| openapi::check_unknown_fields(ctx, info, name, &mut new))?;
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
    let target = step::Target {
        info,
        verb: "update",
        ns,
        name,
        sub,
    };
    let result = validate_and_store(ctx, target, stored, new, &span).await;
    // A dry run, or an update that failed, keeps nothing it allocated.
    if let Some(taken) = allocated.filter(|_| ctx.dry_run() || result.is_err()) {
        ctx.server.revert_service_addresses(taken).await;
    }
    result
}

/// The object's name, if it says one, must be the URL's (a patch cannot rename).
pub fn check_name(obj: &Value, name: &str) -> Result<(), ApiError> {
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
    target: step::Target<'_>,
    stored: &Stored,
    mut new: Value,
    span: &tracing::Span,
) -> Result<(Value, Vec<String>), ApiError> {
    let (info, ns, name) = (target.info, target.ns, target.name);
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
    let passage = step::hold(ctx, target, &new, Some(&stored.object)).await;
    let written = ctx.server.storage.update(info, ns, name, &new, stored.revision).await;
    passage.done(&written, |w| revision_of(&w.object));
    Ok((written?.object, changed))
}

/// "revision N" of a stored object, for step mode's answer.
pub fn revision_of(obj: &Value) -> String {
    format!("revision {}", objects::resource_version(obj).unwrap_or("?"))
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

/// Apply a JSON merge patch (RFC 7386) or JSON patch (RFC 6902) body to `target`, for PATCH
/// and for PATCH of `/scale`.
pub fn apply_json_patch(target: &mut Value, body: &Value, merge: bool) -> Result<(), ApiError> {
    if merge {
        json_patch::merge(target, body);
        return Ok(());
    }
    let ops: json_patch::Patch = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}")))?;
    // All or nothing, on a copy: `json_patch::patch` undoes a failed patch in place and
    // panics ("unable to undo applied patches") when its undo fails, which a hostile list
    // such as a `move` of `/a/b` onto `/a` followed by a failing `test` makes it do.
    // `patch_unsafe` never undoes; the copy is dropped instead.
    let mut patched = target.clone();
    json_patch::patch_unsafe(&mut patched, &ops)
        .map_err(|e| ApiError::new(422, "Invalid", format!("the JSON patch could not be applied: {e}")))?;
    *target = patched;
    Ok(())
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

    /// A JSON patch whose undo fails panics inside `json_patch::patch`; kulisse's answers 422
    /// and leaves the object as it was.
    #[test]
    fn a_json_patch_that_cannot_be_undone_is_refused_not_a_panic() {
        let original = json!({"metadata": {"name": "web", "labels": {"a": "1"}}});
        let hostile = json!([
            {"op": "move", "from": "/metadata/labels", "path": "/metadata"},
            {"op": "test", "path": "/spec", "value": 1}
        ]);
        let ops: json_patch::Patch = serde_json::from_value(hostile.clone()).expect("valid operations");
        let upstream = std::panic::catch_unwind(|| json_patch::patch(&mut original.clone(), &ops));
        assert!(upstream.is_err(), "the crate's atomic patch panics on this input");
        let mut target = original.clone();
        let err = apply_json_patch(&mut target, &hostile, false).expect_err("the test op fails");
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}", err.message);
        assert_eq!(target, original, "nothing changed");
        let mut target = original.clone();
        apply_json_patch(
            &mut target,
            &json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}]),
            false,
        )
        .expect("a good patch applies");
        assert_eq!(target["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    }

    /// The verb files call this module, never one another (no import cycles among them).
    #[test]
    fn no_verb_imports_another_verb() {
        let verbs: [(&str, &str); 10] = [
            ("binding", include_str!("binding.rs")),
            ("create", include_str!("create.rs")),
            ("delete", include_str!("delete.rs")),
            ("get", include_str!("get.rs")),
            ("logs", include_str!("logs.rs")),
            ("openapi", include_str!("openapi.rs")),
            ("patch", include_str!("patch.rs")),
            ("scale", include_str!("scale.rs")),
            ("update", include_str!("update.rs")),
            ("watch", include_str!("watch.rs")),
        ];
        for (file, source) in verbs {
            let code: String = source
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for (other, _) in verbs.iter().filter(|(v, _)| *v != file) {
                let named = [
                    format!("super::{other}::"),
                    format!("super::{other}}}"),
                    format!("apiserver::{other}"),
                    format!(" {other}::"),
                    format!("({other}::"),
                    format!("{{{other},"),
                    format!(", {other},"),
                    format!(", {other}}}"),
                ];
                let hit = named.iter().find(|n| code.contains(n.as_str()));
                assert!(
                    hit.is_none(),
                    "{file}.rs names the verb module {other} ({hit:?}): share the step through write.rs"
                );
            }
        }
    }
}
