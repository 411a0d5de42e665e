//! # delete (mirrors kube-apiserver's DELETE handler and graceful deletion)
//!
//! `DELETE .../deployments/web`, optionally with a `DeleteOptions` body
//! (`{"propagationPolicy":"Foreground","gracePeriodSeconds":0,"preconditions":{"resourceVersion":"42"}}`).
//!
//! Deleting is often not instant, and that is on purpose:
//!
//! - **Graceful pod deletion.** A pod that runs on a node is not removed at once: the server
//!   sets `metadata.deletionTimestamp` and `deletionGracePeriodSeconds` (from the options,
//!   else the pod's `terminationGracePeriodSeconds`, 30 s by default). The kubelet sees that,
//!   stops the containers within the grace period, and then deletes the object for good
//!   with `gracePeriodSeconds: 0`. A pod that was never scheduled goes at once.
//! - **Finalizers.** An object with `metadata.finalizers` only gets a `deletionTimestamp`;
//!   it stays "terminating" until the controllers owning those finalizers have cleaned up
//!   and removed them. The update that removes the last one deletes the object.
//! - **Propagation** to dependents (objects whose `ownerReferences` name this one):
//!   `Background` (the default) deletes the owner now and lets the garbage collector delete
//!   the dependents; `Foreground` adds the finalizer `foregroundDeletion`, so the owner stays
//!   until the garbage collector has deleted its dependents; `Orphan` adds the finalizer
//!   `orphan`, and the garbage collector only cuts the dependents' ownerReferences.
//!
//! - **Namespaces** are never removed by the DELETE itself: the first DELETE sets
//!   `deletionTimestamp` and `status.phase: Terminating`, and from then on nothing new may
//!   be created inside. The namespace controller deletes the contents through the API and
//!   then removes the finalizer `kubernetes` from `spec.finalizers` (`PUT
//!   .../namespaces/NAME/finalize`); that update removes the namespace. A DELETE of a
//!   namespace that is already terminating changes nothing (it deletes it only once its
//!   finalizers are gone).

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::storage::Stored;
use super::{Body, Ctx, json_response, meta};
use crate::objects::{ApiError, ResourceInfo};

use crate::objects::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

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
            .map_err(|e| ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}")))?
    };
    let grace: Option<i64> = options
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| ctx.param("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let propagation = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| ctx.param("propagationPolicy"))
        .unwrap_or("Background")
        .to_string();
    if !matches!(propagation.as_str(), "Background" | "Foreground" | "Orphan") {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy must be Background, Foreground or Orphan, not {propagation:?}"
        )));
    }
    for _ in 0..5 {
        let stored = ctx
            .server
            .storage
            .get(info, ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(info, name))?;
        check_preconditions(info, name, &options, &stored)?;
        if ctx.dry_run() {
            return Ok(json_response(StatusCode::OK, &stored.object));
        }
        match delete_once(ctx, info, ns, name, &stored, grace, &propagation).await {
            Err(e) if e.reason == "Conflict" => continue, // changed in between: look again
            other => return other,
        }
    }
    Err(ApiError::conflict(
        info,
        name,
        "the object kept changing while it was being deleted; try again",
    ))
}

fn check_preconditions(info: &ResourceInfo, name: &str, options: &Value, stored: &Stored) -> Result<(), ApiError> {
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
    Ok(())
}

async fn delete_once(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    stored: &Stored,
    grace: Option<i64>,
    propagation: &str,
) -> Result<Response<Body>, ApiError> {
    let mut obj = stored.object.clone();
    let already_terminating = obj.pointer("/metadata/deletionTimestamp").is_some();
    let mut finalizers: Vec<String> = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();

    // Graceful deletion of a pod that runs on a node: the kubelet finishes it.
    let graceful_pod = info.kind == "Pod"
        && obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
    let pod_grace = if graceful_pod {
        let default = obj
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        Some(grace.unwrap_or(default).max(0))
    } else {
        None
    };

    let wanted_finalizer = match propagation {
        "Foreground" if info.owns_dependents => Some(FOREGROUND_FINALIZER),
        "Orphan" if info.owns_dependents => Some(ORPHAN_FINALIZER),
        _ => None,
    };
    if let Some(f) = wanted_finalizer {
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_string());
        }
    }

    let keep_for_kubelet = pod_grace.is_some_and(|g| g > 0);
    let namespace = info.kind == "Namespace";
    let keep_for_namespace_controller = namespace && (!already_terminating || has_spec_finalizers(&obj));
    if finalizers.is_empty() && !keep_for_kubelet && !keep_for_namespace_controller {
        let deleted = ctx.server.storage.delete(info, ns, name, Some(stored.revision)).await?;
        if info.kind == "Service" {
            ctx.server.release_service_addresses(&deleted.object).await;
        }
        return Ok(json_response(StatusCode::OK, &deleted.object));
    }

    // Mark it terminating; the kubelet or the finalizers' owners finish the job.
    mark_terminating(&mut obj, already_terminating, namespace, pod_grace);
    if !finalizers.is_empty() {
        obj["metadata"]["finalizers"] = json!(finalizers);
    }
    // Kubernetes answers 200 for a namespace that is now terminating.
    let code = if namespace {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    if obj == stored.object {
        return Ok(json_response(code, &stored.object));
    }
    meta::stamp_traceparent(&mut obj);
    let written = ctx.server.storage.update(info, ns, name, &obj, stored.revision).await?;
    Ok(json_response(code, &written.object))
}

/// Set `deletionTimestamp` (now plus a pod's grace period) on an object that starts
/// terminating; a namespace also turns `Terminating`. A second delete of a pod may shorten
/// its grace period, never lengthen it.
fn mark_terminating(obj: &mut Value, already_terminating: bool, namespace: bool, pod_grace: Option<i64>) {
    let at = |secs: i64| {
        json!(crate::objects::time::time(
            chrono::Utc::now() + chrono::Duration::seconds(secs)
        ))
    };
    if !already_terminating {
        let grace_secs = pod_grace.unwrap_or(0);
        obj["metadata"]["deletionTimestamp"] = at(grace_secs);
        if namespace {
            obj["status"]["phase"] = json!("Terminating");
        } else {
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace_secs);
        }
    } else if let Some(g) = pod_grace {
        let current = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(g);
        if g < current {
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(g);
            obj["metadata"]["deletionTimestamp"] = at(g);
        }
    }
}

/// A namespace still waiting for the controllers named in its `spec.finalizers`.
fn has_spec_finalizers(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}
