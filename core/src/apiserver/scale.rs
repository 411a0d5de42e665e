//! # scale (mirrors the `deployments/scale` and `replicasets/scale` subresources)
//!
//! "How many replicas?" is such a common question that Kubernetes gives it its own small
//! object, `autoscaling/v1` **Scale**: `spec.replicas` (wanted), `status.replicas` (have)
//! and `status.selector` (which pods count). `kubectl scale` and autoscalers read and
//! write only this, so they need not understand Deployments or ReplicaSets at all.

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, Ctx, json_response, write};
use crate::objects::{self, ApiError, ResourceInfo};

/// The Scale view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_string(obj.pointer("/spec/selector")),
        },
    })
}

/// A LabelSelector as the text form `app=web,tier in (a,b)`.
fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return String::new() };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        });
    }
    parts.join(",")
}

/// `GET`, `PUT` or `PATCH` of `.../{name}/scale`.
pub async fn handle(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    method: &Method,
) -> Result<Response<Body>, ApiError> {
    for _ in 0..5 {
        let stored = ctx
            .server
            .storage
            .get(info, ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(info, name))?;
        if *method == Method::GET {
            return Ok(json_response(StatusCode::OK, &scale_of(&stored.object)));
        }
        let body = write::decode(ctx)?;
        let mut scale = scale_of(&stored.object);
        if *method == Method::PUT {
            write::check_precondition(info, name, &body, &stored)?;
            scale = body;
        } else {
            match ctx.content_type() {
                Some("application/merge-patch+json") | Some("application/strategic-merge-patch+json") => {
                    write::apply_json_patch(&mut scale, &body, true)?
                }
                Some("application/json-patch+json") => write::apply_json_patch(&mut scale, &body, false)?,
                other => return Err(ApiError::unsupported_media_type(other.unwrap_or(""))),
            }
        }
        let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).ok_or_else(|| {
            ApiError::invalid(
                info,
                name,
                vec![objects::StatusCause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: spec.replicas must be an integer".into(),
                    field: "spec.replicas".into(),
                }],
            )
        })?;
        let mut new = stored.object.clone();
        new["spec"]["replicas"] = json!(replicas);
        match write::write(ctx, info, ns, name, None, &stored, new).await {
            Ok((obj, _)) => return Ok(json_response(StatusCode::OK, &scale_of(&obj))),
            Err(e) if e.reason == "Conflict" && *method == Method::PATCH => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        info,
        name,
        "the object kept changing while it was scaled; try again",
    ))
}
