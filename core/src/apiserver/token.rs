//! # TokenRequest (mirrors kube-apiserver's `serviceaccounts/token` subresource, upstream's `TokenREST`)
//!
//! `kubectl create token default` does not read a token from anywhere: it *asks* the API
//! server to sign a new one, by creating an `authentication.k8s.io/v1` **TokenRequest** on
//! the ServiceAccount's `token` subresource:
//!
//! ```text
//! POST /api/v1/namespaces/default/serviceaccounts/default/token
//! {"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1",
//!  "spec":{"audiences":[],"expirationSeconds":600}}
//! ⇒ 201 {"kind":"TokenRequest", ..., "spec":{"audiences":["https://kubernetes.default.svc.cluster.local"],
//!        "expirationSeconds":600}, "status":{"token":"eyJhbGciOiJFUzI1NiIs...","expirationTimestamp":"..."}}
//! ```
//!
//! The right to do this is the verb `create` on `serviceaccounts/token` (RBAC): whoever may
//! ask for a token may act as the account. Nothing is stored: the token is signed with the
//! cluster's service-account key ([`super::serviceaccount`]) and forgotten, and it stays
//! valid until it expires or the account is deleted. `spec.expirationSeconds` defaults to an
//! hour and may not be under ten minutes (upstream's limits); without `spec.audiences` the
//! token is for the API server itself.
//!
//! Where kulisse differs: `spec.boundObjectRef` (tokens bound to a Pod, Secret or Node) is
//! refused with a clear error, not served.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::serviceaccount::{API_AUDIENCE, Claims};
use super::{Body, Ctx, json_response, write};
use crate::objects::{self, ApiError, ResourceInfo, StatusCause};

/// Upstream's default `expirationSeconds`: one hour.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest token upstream issues (`MinTokenAgeSec`): ten minutes.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest (`MaxTokenAgeSec`): 2^32 seconds.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// The TokenRequest kind, for messages (`TokenRequest.authentication.k8s.io "default" is invalid`).
/// It is no resource of its own: it is only ever posted to `serviceaccounts/token`.
static TOKEN_REQUEST: ResourceInfo = ResourceInfo {
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    plural: "serviceaccounts",
    singular: "",
    short_names: &[],
    namespaced: true,
    subresources: &[],
    tracks_generation: false,
    owns_dependents: false,
    categories: &[],
};

fn invalid(name: &str, field: &str, value: &Value, detail: &str) -> ApiError {
    ApiError::invalid(
        &TOKEN_REQUEST,
        name,
        vec![StatusCause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {value}: {detail}"),
            field: field.into(),
        }],
    )
}

/// What the request asks for: (expirationSeconds, audiences), checked as upstream's
/// `ValidateTokenRequest`.
fn requested(name: &str, request: &Value) -> Result<(i64, Vec<String>), ApiError> {
    if let Some(kind) = request.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty())
        && kind != "TokenRequest"
    {
        return Err(ApiError::bad_request(format!(
            "the body of a serviceaccounts/token request must be a TokenRequest, not a {kind}"
        )));
    }
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid(name, "spec.expirationSeconds", v, "must be an integer"))?,
    };
    if seconds < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            &json!(seconds),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if seconds > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            &json!(seconds),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences = Vec::new();
    for (i, a) in spec
        .get("audiences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match a.as_str() {
            Some(a) if !a.is_empty() => audiences.push(a.to_string()),
            _ => {
                return Err(invalid(
                    name,
                    &format!("spec.audiences[{i}]"),
                    a,
                    "must be a non-empty string",
                ));
            }
        }
    }
    if audiences.is_empty() {
        audiences.push(API_AUDIENCE.to_string());
    }
    if spec.get("boundObjectRef").is_some_and(|b| !b.is_null()) {
        return Err(ApiError::bad_request(
            "kulisse does not issue tokens bound to an object (spec.boundObjectRef); leave it out",
        ));
    }
    Ok((seconds, audiences))
}

/// `POST .../serviceaccounts/{name}/token`
pub async fn handle(ctx: &Ctx<'_>, ns: &str, name: &str) -> Result<Response<Body>, ApiError> {
    let info = objects::by_gvk("v1", "ServiceAccount").expect("ServiceAccount is a built-in kind");
    let Some(keys) = ctx.server.config.service_accounts.as_deref() else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            "this API server has no service-account signing key (it issues no tokens)",
        ));
    };
    let request = write::decode(ctx)?;
    let (seconds, audiences) = requested(name, &request)?;
    let account = ctx
        .server
        .storage
        .get(info, Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found(info, name))?;
    let uid = objects::uid(&account.object).unwrap_or("").to_string();
    let now = chrono::Utc::now();
    let claims = Claims::new(ns, name, &uid, audiences.clone(), now.timestamp(), seconds);
    let token = keys
        .issue(&claims)
        .map_err(|e| ApiError::new(500, "InternalError", format!("signing the token failed: {e}")))?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0)
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": null},
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_limits_as_upstream() {
        let (secs, aud) = requested("default", &json!({"kind": "TokenRequest", "spec": {}})).unwrap();
        assert_eq!((secs, aud), (3600, vec![API_AUDIENCE.to_string()]));
        let (secs, aud) = requested(
            "d",
            &json!({"spec": {"expirationSeconds": 600, "audiences": ["vault"]}}),
        )
        .unwrap();
        assert_eq!((secs, aud), (600, vec!["vault".to_string()]));
        let short = requested("default", &json!({"spec": {"expirationSeconds": 599}})).unwrap_err();
        assert_eq!(short.code, 422);
        assert_eq!(
            short.message,
            "TokenRequest.authentication.k8s.io \"default\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        );
        assert!(requested("d", &json!({"spec": {"expirationSeconds": MAX_EXPIRATION_SECONDS + 1}})).is_err());
        assert!(requested("d", &json!({"spec": {"audiences": [""]}})).is_err());
        assert!(requested("d", &json!({"kind": "Pod"})).is_err());
        assert!(requested("d", &json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "p"}}})).is_err());
    }
}
