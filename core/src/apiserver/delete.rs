//! # delete (mirrors kube-apiserver's DELETE handler)
//!
//! `DELETE .../deployments/web`, optionally with a `DeleteOptions` body
//! (`{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Foreground","preconditions":{"resourceVersion":"42"}}`).
//!
//! Deleting is not always instant. An object with **finalizers** (`metadata.finalizers`)
//! only gets a `deletionTimestamp`: it stays visible, "terminating", until the
//! controllers that put the finalizers there have done their clean-up and removed them;
//! the update that removes the last finalizer deletes it. Without finalizers the key is
//! removed from the store at once, and watchers see a `DELETED` event.
//!
//! Deleting a Namespace deletes everything in it first (kube-controller-manager's
//! namespace controller does this asynchronously in Kubernetes; kulisse does it in the
//! request, so a learner sees the namespace and its contents disappear together).

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, Ctx, json_response, meta};
use crate::objects::{self, ApiError, RESOURCES, ResourceInfo};

/// `DELETE` one object.
pub async fn handle(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let options: Value = if ctx.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&ctx.body)
            .map_err(|e| ApiError::bad_request(&format!("the DeleteOptions body is not valid JSON: {e}")))?
    };
    let stored = ctx
        .server
        .storage
        .get(info, ns, name)
        .await?
        .ok_or_else(|| ApiError::not_found(info, name))?;
    if let Some(rv) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        if rv != stored.revision.to_string() {
            return Err(ApiError::conflict(
                info,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    stored.revision
                ),
            ));
        }
    }
    if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str) {
        if Some(uid) != stored.object.pointer("/metadata/uid").and_then(Value::as_str) {
            return Err(ApiError::conflict(
                info,
                name,
                &format!("Precondition failed: UID in precondition: {uid}"),
            ));
        }
    }
    if ctx.dry_run() {
        return Ok(json_response(StatusCode::OK, &stored.object));
    }
    let has_finalizers = stored
        .object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        // Mark it terminating; the owners of the finalizers finish the job.
        if stored.object.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(json_response(StatusCode::ACCEPTED, &stored.object));
        }
        let mut obj = stored.object.clone();
        obj["metadata"]["deletionTimestamp"] = json!(meta::now_rfc3339());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let written = ctx.server.storage.update(info, ns, name, &obj, stored.revision).await?;
        return Ok(json_response(StatusCode::ACCEPTED, &written.object));
    }
    if info.kind == "Namespace" {
        delete_namespace_contents(ctx, name).await?;
    }
    let deleted = ctx.server.storage.delete(info, ns, name, Some(stored.revision)).await?;
    Ok(json_response(StatusCode::OK, &deleted.object))
}

async fn delete_namespace_contents(ctx: &Ctx<'_>, ns: &str) -> Result<(), ApiError> {
    for info in RESOURCES.iter().filter(|r| r.namespaced) {
        let listed = ctx.server.storage.list(info, Some(ns), None).await?;
        for item in listed.items {
            let name = objects::name(&item.object).unwrap_or("").to_string();
            match ctx.server.storage.delete(info, Some(ns), &name, None).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
