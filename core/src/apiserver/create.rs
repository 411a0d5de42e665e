//! # create (mirrors kube-apiserver's POST handler)
//!
//! `POST /apis/apps/v1/namespaces/default/deployments` with a Deployment in the body.
//! The server decodes it, fills in defaults (`replicas: 1`, `imagePullPolicy`, ...),
//! validates it, stamps the server-owned metadata (uid, creationTimestamp, generation) and
//! writes it with "create only if absent". The answer is `201 Created` with the stored
//! object, now carrying its `resourceVersion`, or `409 AlreadyExists`.

use http::{Response, StatusCode};
use serde_json::Value;

use super::{Body, Ctx, json_response, meta, patch};
use crate::objects::{self, ApiError, ResourceInfo};

/// `POST` to a collection.
pub async fn handle(ctx: &Ctx<'_>, info: &'static ResourceInfo, ns: Option<&str>) -> Result<Response<Body>, ApiError> {
    let mut obj = patch::decode(ctx)?;
    default_type_meta(info, &mut obj);
    let name = name_or_generated(&mut obj);
    check_body_target(info, &obj, ns)?;
    let stored = create_object(ctx, info, ns, &name, &mut obj).await?;
    Ok(json_response(StatusCode::CREATED, &stored))
}

/// The object's name; without one, a name made from `metadata.generateName` (`web-` →
/// `web-x7k2q`), written into the object as the API server does before it stores it.
fn name_or_generated(obj: &mut Value) -> String {
    if let Some(name) = objects::name(obj).filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let Some(prefix) = obj
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    else {
        return String::new();
    };
    let name = objects::generated_name(prefix);
    obj["metadata"]["name"] = Value::String(name.clone());
    name
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

/// Default, validate and store a new object; shared by POST and by apply-that-creates.
pub async fn create_object(
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
        super::update::check_shape(info, name, obj)?;
        if info.namespaced && obj.get("metadata").is_some_and(Value::is_object) {
            if let Some(ns) = ns {
                obj["metadata"]["namespace"] = Value::String(ns.to_string());
            }
        }
        super::openapi::check_unknown_fields(ctx, info, name, obj)?;
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
        ctx.server.storage.create(info, ns, name, obj).await.map(|s| s.object)
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
