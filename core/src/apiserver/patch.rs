//! # patch and server-side apply (mirrors kube-apiserver's PATCH handler)
//!
//! A PATCH says *how to change* an object instead of sending all of it. The
//! `Content-Type` names the patch language:
//!
//! - `application/merge-patch+json` (RFC 7386): a partial object; `null` deletes a field,
//!   lists are replaced whole. `kubectl scale` and `kubectl patch --type merge` use it.
//! - `application/strategic-merge-patch+json`: Kubernetes' own merge patch, in which lists
//!   such as `containers` merge item by item by a merge key (`name`), with directives such
//!   as `$patch: delete`. `kubectl patch` and client-side `kubectl apply` send it; the rules
//!   live in [`crate::objects::strategic`].
//! - `application/json-patch+json` (RFC 6902): a list of operations
//!   (`[{"op":"replace","path":"/spec/replicas","value":3}]`).
//! - `application/apply-patch+yaml`: **server-side apply**, which is what `kulisse apply`
//!   sends. The body is the whole *desired* object. This is the step the seed article
//!   describes: the API server reads what the store holds, **compares** it with the desired
//!   state, and only writes when they differ. It answers with the header
//!   `Kulisse-Apply-Outcome: created | configured | unchanged`.
//!
//! ## How apply merges (and where kulisse is simpler than Kubernetes)
//! Each applier is a *field manager* (`?fieldManager=kulisse`). The server remembers in
//! `metadata.managedFields` which fields each manager set last time (Kubernetes'
//! `FieldsV1` format: `{"f:spec":{"f:replicas":{}}}`). On the next apply it
//! 1. removes the fields this manager set before but no longer sets,
//! 2. merges the desired object in (maps field by field; lists and scalars replaced),
//! 3. applies defaults and validation as for any write,
//! 4. compares with the stored object: equal → `unchanged`, nothing written.
//!
//! Kubernetes also merges lists item by item (containers by `name`) and reports conflicts
//! between managers; kulisse treats lists as atomic and always forces, as
//! `kubectl apply --server-side --force-conflicts` would.

use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};
use tracing::info_span;

use super::{Body, Ctx, json_response, meta, write};
use crate::objects::{self, ApiError, ResourceInfo};

use crate::objects::APPLY_OUTCOME_HEADER;

/// How many times an apply re-reads and retries when another writer got in between.
const APPLY_RETRIES: usize = 5;

/// `PATCH` an object (or its `/status`).
pub async fn handle(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    match ctx.content_type() {
        Some("application/apply-patch+yaml") => apply(ctx, info, ns, name, sub).await,
        Some("application/merge-patch+json") => patch_with(ctx, info, ns, name, sub, PatchKind::Merge).await,
        Some("application/strategic-merge-patch+json") => {
            patch_with(ctx, info, ns, name, sub, PatchKind::Strategic).await
        }
        Some("application/json-patch+json") => patch_with(ctx, info, ns, name, sub, PatchKind::Json).await,
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the patch content type {:?} is not supported; use application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json or application/apply-patch+yaml",
                other.unwrap_or("")
            ),
        )),
    }
}

#[derive(Clone, Copy)]
enum PatchKind {
    Merge,
    Strategic,
    Json,
}

async fn patch_with(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    kind: PatchKind,
) -> Result<Response<Body>, ApiError> {
    let patch = write::decode(ctx)?;
    for _ in 0..APPLY_RETRIES {
        let stored = ctx
            .server
            .storage
            .get(info, ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(info, name))?;
        // A patch that names a resourceVersion is conditional on it, as in Kubernetes.
        write::check_precondition(info, name, &patch, &stored)?;
        let mut new = stored.object.clone();
        match kind {
            PatchKind::Merge => write::apply_json_patch(&mut new, &patch, true)?,
            PatchKind::Strategic => {
                new = objects::strategic::apply(info.kind, &stored.object, &patch)
                    .map_err(|e| e.into_api_error(info, name))?;
            }
            PatchKind::Json => write::apply_json_patch(&mut new, &patch, false)?,
        }
        match write::write(ctx, info, ns, name, sub, &stored, new).await {
            Err(e) if e.reason == "Conflict" => continue,
            Ok((obj, _)) => return Ok(json_response(StatusCode::OK, &obj)),
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        info,
        name,
        "the object kept changing while the patch was applied; try again",
    ))
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Server-side apply: compare the desired object with the stored one, write only the difference.
async fn apply(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let desired = write::decode(ctx)?;
    write::check_shape(info, name, &desired)?;
    check_identity(info, &desired, name)?;
    write::check_body_target(info, &desired, ns)?;
    let manager = ctx.param("fieldManager").unwrap_or("kulisse").to_string();
    if manager.len() > 128 {
        return Err(ApiError::bad_request("fieldManager must be at most 128 characters"));
    }
    for _ in 0..APPLY_RETRIES {
        let compare = info_span!(
            "apiserver.compare",
            "kulisse.stage" = "apiserver",
            "k8s.kind" = info.kind,
            "k8s.name" = name,
            "compare.stored" = tracing::field::Empty,
            "compare.result" = tracing::field::Empty,
            "compare.changed_fields" = tracing::field::Empty
        );
        let stored = {
            let fut = ctx.server.storage.get(info, ns, name);
            tracing::Instrument::instrument(fut, compare.clone()).await?
        };
        let Some(stored) = stored else {
            compare.record("compare.stored", "absent");
            compare.record("compare.result", "created");
            drop(compare);
            let mut obj = desired.clone();
            set_managed_fields(&mut obj, &manager, &fields_of(&desired), sub);
            match write::create(ctx, info, ns, name, &mut obj).await {
                Ok(obj) => return Ok(outcome_response(StatusCode::CREATED, &obj, Outcome::Created)),
                Err(e) if e.code == 409 => continue, // someone created it in between: apply onto theirs
                Err(e) => return Err(e),
            }
        };
        compare.record("compare.stored", stored.revision);
        // Like PUT and the other patches, an apply that names a resourceVersion is
        // conditional on it. (An apply that creates ignores it, as upstream's
        // create-on-update does.)
        write::check_precondition(info, name, &desired, &stored)?;
        let previous = managed_fields_of(&stored.object, &manager);
        let mut merged = stored.object.clone();
        if let Some(prev) = &previous {
            remove_unowned(&mut merged, prev, &desired);
        }
        merge_into(&mut merged, &desired);
        set_managed_fields(&mut merged, &manager, &fields_of(&desired), sub);
        let result = write::write(ctx, info, ns, name, sub, &stored, merged).await;
        match result {
            Ok((obj, changed)) => {
                let outcome = if changed.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Configured
                };
                compare.record("compare.result", outcome.as_str());
                compare.record("compare.changed_fields", changed.join(",").as_str());
                return Ok(outcome_response(StatusCode::OK, &obj, outcome));
            }
            Err(e) if e.reason == "Conflict" => {
                tracing::info!(parent: &compare, "another writer changed {} {name} in between: re-reading and applying again", info.kind);
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        info,
        name,
        "the object kept changing while it was applied; try again",
    ))
}

fn outcome_response(status: StatusCode, obj: &Value, outcome: Outcome) -> Response<Body> {
    tracing::Span::current().record("k8s.outcome", outcome.as_str());
    let mut resp = json_response(status, obj);
    resp.headers_mut()
        .insert(APPLY_OUTCOME_HEADER, HeaderValue::from_static(outcome.as_str()));
    resp
}

/// An applied object must say what it is and be the object the URL names.
fn check_identity(info: &ResourceInfo, obj: &Value, name: &str) -> Result<(), ApiError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != info.api_version() || kind != info.kind {
        return Err(ApiError::bad_request(&format!(
            "the applied object is apiVersion {api_version:?}, kind {kind:?}, but the URL is for {}/{} {}",
            info.api_version(),
            info.kind,
            info.plural
        )));
    }
    write::check_name(obj, name)
}

/// Deep-merge `desired` into `target`: maps merge key by key, everything else replaces.
pub fn merge_into(target: &mut Value, desired: &Value) {
    match (target, desired) {
        (Value::Object(t), Value::Object(d)) => {
            for (k, v) in d {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_into(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, d) => *t = d.clone(),
    }
}

/// The set of fields an applied object sets, in Kubernetes' `FieldsV1` shape:
/// `{"f:spec":{"f:replicas":{}}}`. Lists are owned whole (`"f:containers":{}`).
pub fn fields_of(obj: &Value) -> Value {
    fn walk(v: &Value, top: bool) -> Value {
        let mut out = Map::new();
        if let Value::Object(m) = v {
            for (k, child) in m {
                if top && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                if top && k == "metadata" {
                    // Identity fields are not "owned".
                    let mut meta = Map::new();
                    if let Some(mm) = child.as_object() {
                        for (mk, mv) in mm {
                            if matches!(mk.as_str(), "labels" | "annotations") {
                                meta.insert(format!("f:{mk}"), walk(mv, false));
                            }
                        }
                    }
                    if !meta.is_empty() {
                        out.insert("f:metadata".into(), Value::Object(meta));
                    }
                    continue;
                }
                let inner = if child.is_object() {
                    walk(child, false)
                } else {
                    json!({})
                };
                out.insert(format!("f:{k}"), inner);
            }
        }
        Value::Object(out)
    }
    walk(obj, true)
}

/// The fields `manager` owned by its last apply, if it applied before.
fn managed_fields_of(obj: &Value, manager: &str) -> Option<Value> {
    obj.pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|e| {
            e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Apply")
        })
        .and_then(|e| e.get("fieldsV1").cloned())
}

/// Remove from `target` the fields that `previous` owned and `desired` no longer sets.
fn remove_unowned(target: &mut Value, previous: &Value, desired: &Value) {
    let (Some(t), Some(prev)) = (target.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (fk, sub) in prev {
        let Some(key) = fk.strip_prefix("f:") else { continue };
        let desired_child = desired.get(key);
        match desired_child {
            None => {
                t.remove(key);
            }
            Some(d) if d.is_object() && sub.as_object().is_some_and(|s| !s.is_empty()) => {
                if let Some(child) = t.get_mut(key) {
                    remove_unowned(child, sub, d);
                }
            }
            Some(_) => {}
        }
    }
}

/// Record this manager's owned fields in `metadata.managedFields`, keeping other managers'.
fn set_managed_fields(obj: &mut Value, manager: &str, fields: &Value, sub: Option<&str>) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let previous: Vec<Value> = obj["metadata"]
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut entries: Vec<Value> = previous
        .into_iter()
        .filter(|e| {
            !(e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Apply"))
        })
        .collect();
    let api_version = obj.get("apiVersion").cloned().unwrap_or(Value::Null);
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": meta::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if let Some(sub) = sub {
        entry["subresource"] = json!(sub);
    }
    entries.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_removal() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}});
        let fields = fields_of(&first);
        assert_eq!(
            fields,
            json!({"f:metadata": {"f:labels": {"f:a": {}, "f:b": {}}}, "f:data": {"f:x": {}, "f:y": {}}})
        );
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1"}});
        let mut live = first.clone();
        live["data"]["z"] = json!("set by someone else");
        remove_unowned(&mut live, &fields, &second);
        merge_into(&mut live, &second);
        assert_eq!(live["data"], json!({"x": "1", "z": "set by someone else"}));
        assert_eq!(live["metadata"]["labels"], json!({"a": "1"}));
    }
}
