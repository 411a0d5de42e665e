//! # binding (mirrors kube-apiserver's `pods/binding` subresource)
//!
//! The scheduler does not edit a pod to place it. It `POST`s a **Binding** to the pod's
//! `binding` subresource:
//!
//! ```json
//! {"apiVersion":"v1","kind":"Binding","metadata":{"name":"web-abc12"},"target":{"kind":"Node","name":"node-2"}}
//! ```
//!
//! The API server then sets the pod's `spec.nodeName` and its `PodScheduled` condition, in
//! one write that succeeds only if the pod is not bound yet (`409 Conflict` otherwise): two
//! schedulers can never place one pod twice. A `201` means the binding is stored; if the pod
//! keeps changing under the write, the answer is the `409 Conflict` and the scheduler tries
//! again later. The kubelet on that node is watching for pods
//! with its name in `spec.nodeName`, and takes it from there.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, Ctx, json_response, meta, step, write};
use crate::objects::{self, ApiError};

/// How often a bind re-reads the pod when a concurrent write (a status update) wins the
/// race. If it still loses after that, the answer is the `409 Conflict`, never a success
/// that was not written.
const BIND_ATTEMPTS: usize = 5;

/// `POST .../pods/{name}/binding`
pub async fn handle(ctx: &Ctx<'_>, ns: &str, name: &str) -> Result<Response<Body>, ApiError> {
    let info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
    let binding = write::decode(ctx)?;
    if binding
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != "Binding")
    {
        return Err(ApiError::bad_request(
            "the body of a pods/binding request must be a Binding",
        ));
    }
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                info,
                name,
                vec![objects::StatusCause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "target.name".into(),
                }],
            )
        })?;
    let mut last_conflict = None;
    for _ in 0..BIND_ATTEMPTS {
        let stored = ctx
            .server
            .storage
            .get(info, Some(ns), name)
            .await?
            .ok_or_else(|| ApiError::not_found(info, name))?;
        let mut pod = stored.object.clone();
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(info, name, "the pod is being deleted"));
        }
        if let Some(current) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                info,
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        set_condition(&mut pod, "PodScheduled", "True");
        meta::stamp_traceparent(&mut pod);
        if ctx.dry_run() {
            return Ok(bound());
        }
        let target = step::Target {
            info,
            verb: "bind",
            ns: Some(ns),
            name,
            sub: Some("binding"),
        };
        let passage = step::hold(ctx, target, &pod, Some(&stored.object)).await;
        let written = ctx
            .server
            .storage
            .update(info, Some(ns), name, &pod, stored.revision)
            .await;
        passage.done(&written, |w| write::revision_of(&w.object));
        match written {
            Ok(_) => return Ok(bound()),
            // A status update got in between: read again and retry.
            Err(e) if e.reason == "Conflict" => last_conflict = Some(e),
            Err(e) => return Err(e),
        }
    }
    // The pod kept changing under us: the bind was NOT written, and the scheduler must know.
    Err(last_conflict.unwrap_or_else(|| ApiError::conflict(info, name, objects::OPTIMISTIC_LOCK_MESSAGE)))
}

/// The answer to a bind that was written: a `Status` with `Success`.
fn bound() -> Response<Body> {
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

fn set_condition(pod: &mut Value, kind: &str, status: &str) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let now = meta::now_rfc3339();
    let cond = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    crate::objects::pod::set_condition(&mut pod["status"], cond);
}
