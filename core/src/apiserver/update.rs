//! # update (mirrors kube-apiserver's PUT handler and its `GuaranteedUpdate`)
//!
//! `PUT .../deployments/web` replaces the whole object. The body carries the
//! `metadata.resourceVersion` the client read: if the store has moved on since, the
//! answer is `409 Conflict` and the client must read again and redo its change. This is
//! *optimistic concurrency*: no locks, just "write only if nothing changed since I read".
//!
//! The conditional write itself, shared with PATCH, apply and `/scale`, is
//! [`super::write::write`]: carry over server-owned fields, default, validate (including
//! immutable fields), and skip the write entirely when nothing changed, as kube-apiserver
//! does.

use http::{Response, StatusCode};

use super::{Body, Ctx, json_response, write};
use crate::objects::{ApiError, ResourceInfo};

/// `PUT` an object (or its `/status`).
pub async fn handle(
    ctx: &Ctx<'_>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let mut new = write::decode(ctx)?;
    write::default_type_meta(info, &mut new);
    write::check_name(&new, name)?;
    write::check_body_target(info, &new, ns)?;
    let stored = ctx
        .server
        .storage
        .get(info, ns, name)
        .await?
        .ok_or_else(|| ApiError::not_found(info, name))?;
    write::check_precondition(info, name, &new, &stored)?;
    let (obj, _) = write::write(ctx, info, ns, name, sub, &stored, new).await?;
    Ok(json_response(StatusCode::OK, &obj))
}
