//! # create (mirrors kube-apiserver's POST handler)
//!
//! `POST /apis/apps/v1/namespaces/default/deployments` with a Deployment in the body.
//! The server decodes it, fills in defaults (`replicas: 1`, `imagePullPolicy`, ...),
//! validates it, stamps the server-owned metadata (uid, creationTimestamp, generation) and
//! writes it with "create only if absent". The answer is `201 Created` with the stored
//! object, now carrying its `resourceVersion`, or `409 AlreadyExists`.
//!
//! Everything after naming the object is [`super::write::create`], which an apply that
//! finds nothing stored calls too.

use http::{Response, StatusCode};
use serde_json::Value;

use super::{Body, Ctx, json_response, write};
use crate::objects::{self, ApiError, ResourceInfo};

/// `POST` to a collection.
pub async fn handle(ctx: &Ctx<'_>, info: &'static ResourceInfo, ns: Option<&str>) -> Result<Response<Body>, ApiError> {
    let mut obj = write::decode(ctx)?;
    write::default_type_meta(info, &mut obj);
    let name = name_or_generated(&mut obj);
    write::check_body_target(info, &obj, ns)?;
    let stored = write::create(ctx, info, ns, &name, &mut obj).await?;
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
