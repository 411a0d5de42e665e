//! # API errors: the `Status` object
//!
//! When a Kubernetes API request fails, the API server does not answer with free text. It
//! answers with an HTTP status code *and* a JSON object of kind `Status`
//! (`k8s.io/apimachinery/pkg/apis/meta/v1.Status`), for example:
//!
//! ```json
//! {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
//!  "message":"deployments.apps \"web\" not found","reason":"NotFound",
//!  "details":{"name":"web","group":"apps","kind":"deployments"},"code":404}
//! ```
//!
//! The `reason` is a machine-readable word (`NotFound`, `AlreadyExists`, `Conflict`,
//! `Invalid`, ...) that clients such as kubectl and controllers switch on; the `message` is
//! for humans; `details.causes` lists, for `Invalid`, one entry per broken field with its
//! field path (`spec.replicas`). kubectl prints `Error from server (NotFound): <message>`.
//!
//! [`ApiError`] is that object on the Rust side. The constructors produce exactly the messages
//! the real API server writes (they come from `k8s.io/apimachinery/pkg/api/errors`), so what a
//! learner sees here is what they will see on a real cluster.

use std::fmt;

use serde_json::{Map, Value, json};

use super::registry::ResourceInfo;

/// The message Kubernetes appends to a `409 Conflict` caused by a stale `resourceVersion`
/// (optimistic concurrency: someone else changed the object since you read it).
pub const OPTIMISTIC_LOCK_MESSAGE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// One reason why a request failed, usually one broken field (`metav1.StatusCause`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// Machine-readable cause, e.g. `FieldValueInvalid`, `FieldValueRequired`.
    pub reason: String,
    /// Human-readable text without the field, e.g. `Invalid value: -1: must be greater than
    /// or equal to 0`.
    pub message: String,
    /// The field path, e.g. `spec.replicas` or `spec.template.spec.containers[0].image`.
    pub field: String,
}

/// Extra information about the object a failure is about (`metav1.StatusDetails`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusDetails {
    /// Name of the object, if the failure concerns one.
    pub name: String,
    /// API group of the object (empty for the core group).
    pub group: String,
    /// For `NotFound`/`AlreadyExists`/`Conflict` Kubernetes puts the *resource* here
    /// (`deployments`), for `Invalid` the *kind* (`Deployment`).
    pub kind: String,
    /// Per-field causes (for `Invalid`).
    pub causes: Vec<StatusCause>,
}

/// A failed API request: an HTTP status code plus a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (404, 409, 422, ...).
    pub code: u16,
    /// Kubernetes `StatusReason`: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`,
    /// `BadRequest`, `Unauthorized`, `Forbidden`, `MethodNotAllowed`,
    /// `UnsupportedMediaType`, `RequestEntityTooLarge`, `Expired`, `Gone`, `InternalError`.
    pub reason: String,
    /// The human-readable message kubectl prints.
    pub message: String,
    /// Which object, and for `Invalid` which fields.
    pub details: Option<StatusDetails>,
}

impl ApiError {
    /// A failure with the given code, reason and message, without details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_object(mut self, info: &ResourceInfo, name: &str, kind: &str) -> ApiError {
        self.details = Some(StatusDetails {
            name: name.to_string(),
            group: info.group.to_string(),
            kind: kind.to_string(),
            causes: Vec::new(),
        });
        self
    }

    /// `404 NotFound`: `pods "x" not found`, `deployments.apps "x" not found`.
    pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", info.group_resource(), name),
        )
        .with_object(info, name, info.plural)
    }

    /// `409 AlreadyExists`: `pods "x" already exists` (create of a name that is taken).
    pub fn already_exists(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", info.group_resource(), name),
        )
        .with_object(info, name, info.plural)
    }

    /// `409 Conflict`: `Operation cannot be fulfilled on deployments.apps "web": <detail>`.
    /// For a stale `resourceVersion` pass [`OPTIMISTIC_LOCK_MESSAGE`] as `detail`.
    pub fn conflict(info: &ResourceInfo, name: &str, detail: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                info.group_resource(),
                name,
                detail
            ),
        )
        .with_object(info, name, info.plural)
    }

    /// `400 BadRequest` with the given message.
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", msg)
    }

    /// `401 Unauthorized`: no or wrong credentials (the API server's message is just
    /// `Unauthorized`).
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// `403 Forbidden` with the given message, e.g. `pods is forbidden: User "bob" cannot
    /// list resource "pods" in API group "" in the namespace "default"`.
    pub fn forbidden(msg: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", msg)
    }

    /// `422 Invalid`: the object broke validation rules. The message is written as
    /// Kubernetes writes it: `Deployment.apps "web" is invalid: spec.replicas: Invalid
    /// value: -1: must be greater than or equal to 0`; several causes are joined with `, `
    /// inside `[...]`. Duplicate causes are dropped, as Kubernetes' error aggregate does.
    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<StatusCause>) -> ApiError {
        let mut unique: Vec<StatusCause> = Vec::with_capacity(causes.len());
        for cause in causes {
            if !unique.contains(&cause) {
                unique.push(cause);
            }
        }
        let texts: Vec<String> = unique
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = match texts.len() {
            0 => "<nil>".to_string(),
            1 => texts[0].clone(),
            _ => format!("[{}]", texts.join(", ")),
        };
        let mut err = ApiError::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}", info.group_kind(), name, joined),
        )
        .with_object(info, name, info.kind);
        if let Some(details) = err.details.as_mut() {
            details.causes = unique;
        }
        err
    }

    /// `410 Expired`: a watch or list asked for a `resourceVersion` that was compacted away,
    /// e.g. `too old resource version: 5 (120)`. Clients react by listing again.
    pub fn expired(msg: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", msg)
    }

    /// `410 Gone` with the given message.
    pub fn gone(msg: impl Into<String>) -> ApiError {
        ApiError::new(410, "Gone", msg)
    }

    /// `405 MethodNotAllowed`, e.g. a `PUT` on a collection.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// `415 UnsupportedMediaType`: the `Content-Type` of the body is not one the server reads.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ),
        )
    }

    /// `413 RequestEntityTooLarge`: the body is bigger than `limit` bytes.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// `500 InternalError`: `Internal error occurred: <msg>`.
    pub fn internal(msg: impl Into<String>) -> ApiError {
        let msg = msg.into();
        let mut err = ApiError::new(500, "InternalError", format!("Internal error occurred: {msg}"));
        err.details = Some(StatusDetails {
            causes: vec![StatusCause {
                reason: String::new(),
                message: msg,
                field: String::new(),
            }],
            ..StatusDetails::default()
        });
        err
    }

    /// The Kubernetes `Status` object for this error, field for field as the API server
    /// sends it (empty strings and empty lists are left out, as Go's `omitempty` does).
    pub fn to_status_json(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let (Some(details), Some(obj)) = (&self.details, status.as_object_mut()) {
            let mut d = Map::new();
            if !details.name.is_empty() {
                d.insert("name".into(), Value::from(details.name.clone()));
            }
            if !details.group.is_empty() {
                d.insert("group".into(), Value::from(details.group.clone()));
            }
            if !details.kind.is_empty() {
                d.insert("kind".into(), Value::from(details.kind.clone()));
            }
            if !details.causes.is_empty() {
                let causes: Vec<Value> = details
                    .causes
                    .iter()
                    .map(|c| {
                        let mut m = Map::new();
                        if !c.reason.is_empty() {
                            m.insert("reason".into(), Value::from(c.reason.clone()));
                        }
                        if !c.message.is_empty() {
                            m.insert("message".into(), Value::from(c.message.clone()));
                        }
                        if !c.field.is_empty() {
                            m.insert("field".into(), Value::from(c.field.clone()));
                        }
                        Value::Object(m)
                    })
                    .collect();
                d.insert("causes".into(), Value::Array(causes));
            }
            obj.insert("details".into(), Value::Object(d));
        }
        if let Some(obj) = status.as_object_mut() {
            obj.insert("code".into(), Value::from(self.code));
        }
        status
    }

    /// Read a `Status` object received from an API server (client side). Returns `None` if
    /// `v` is not a `Status` or reports success.
    pub fn from_status_json(v: &Value) -> Option<ApiError> {
        let obj = v.as_object()?;
        if obj.get("kind").and_then(Value::as_str) != Some("Status") {
            return None;
        }
        if obj.get("status").and_then(Value::as_str) == Some("Success") {
            return None;
        }
        let s = |m: &Map<String, Value>, k: &str| -> String {
            m.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
        };
        let code = obj
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(500);
        let details = obj.get("details").and_then(Value::as_object).map(|d| {
            let causes = d
                .get("causes")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(Value::as_object)
                        .map(|c| StatusCause {
                            reason: s(c, "reason"),
                            message: s(c, "message"),
                            field: s(c, "field"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            StatusDetails {
                name: s(d, "name"),
                group: s(d, "group"),
                kind: s(d, "kind"),
                causes,
            }
        });
        Some(ApiError {
            code,
            reason: s(obj, "reason"),
            message: s(obj, "message"),
            details,
        })
    }

    /// Whether this is a `404 NotFound`.
    pub fn is_not_found(&self) -> bool {
        self.reason == "NotFound"
    }

    /// Whether this is a `409 Conflict` (stale resourceVersion: read again and retry).
    pub fn is_conflict(&self) -> bool {
        self.reason == "Conflict"
    }

    /// Whether this is a `409 AlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        self.reason == "AlreadyExists"
    }

    /// `403 Forbidden` for a create inside a namespace that is being deleted, as the
    /// NamespaceLifecycle admission plugin answers it: `configmaps "c" is forbidden: unable
    /// to create new content in namespace shop because it is being terminated`, with the
    /// cause `NamespaceTerminating` on `metadata.namespace`.
    pub fn namespace_terminating(info: &ResourceInfo, name: &str, namespace: &str) -> ApiError {
        let why = format!("unable to create new content in namespace {namespace} because it is being terminated");
        let message = if name.is_empty() {
            format!("{} is forbidden: {why}", info.group_resource())
        } else {
            format!("{} \"{name}\" is forbidden: {why}", info.group_resource())
        };
        ApiError {
            details: Some(StatusDetails {
                name: name.to_string(),
                group: info.group.to_string(),
                kind: info.plural.to_string(),
                causes: vec![StatusCause {
                    reason: NAMESPACE_TERMINATING_CAUSE.to_string(),
                    message: format!("namespace {namespace} is being terminated"),
                    field: "metadata.namespace".to_string(),
                }],
            }),
            ..ApiError::new(403, "Forbidden", message)
        }
    }

    /// Whether one of the causes has this `reason` (client-go's `HasStatusCause`).
    pub fn has_cause(&self, reason: &str) -> bool {
        self.details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == reason))
    }
}

/// The cause of a create refused because its namespace is being deleted
/// (`v1.NamespaceTerminatingCause`). Controllers drop such work quietly: it can only fail.
pub const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";

/// Prints the message alone, as Go's `StatusError` does; kubectl adds
/// `Error from server (<reason>): ` in front.
impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::registry::by_gvk;

    fn deploy() -> &'static ResourceInfo {
        by_gvk("apps/v1", "Deployment").expect("deployment")
    }
    fn pod() -> &'static ResourceInfo {
        by_gvk("v1", "Pod").expect("pod")
    }

    #[test]
    fn not_found_messages_and_status_shape() {
        let e = ApiError::not_found(pod(), "x");
        assert_eq!(e.code, 404);
        assert_eq!(e.message, "pods \"x\" not found");
        assert_eq!(e.to_string(), "pods \"x\" not found");
        assert!(e.is_not_found());
        let e = ApiError::not_found(deploy(), "x");
        assert_eq!(e.message, "deployments.apps \"x\" not found");
        assert_eq!(
            serde_json::to_string(&e.to_status_json()).expect("json"),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps \"x\" not found","reason":"NotFound","details":{"name":"x","group":"apps","kind":"deployments"},"code":404}"#
        );
        // Core group: no "group" key, as Go's omitempty.
        let s = ApiError::not_found(pod(), "x").to_status_json();
        assert!(s["details"].get("group").is_none());
        assert_eq!(s["details"]["kind"], "pods");
    }

    #[test]
    fn already_exists_and_conflict() {
        let e = ApiError::already_exists(pod(), "web");
        assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
        assert_eq!(e.message, "pods \"web\" already exists");
        let e = ApiError::conflict(deploy(), "web", OPTIMISTIC_LOCK_MESSAGE);
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        assert!(e.is_conflict());
        assert_eq!(
            e.message,
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn invalid_single_and_multiple_causes() {
        let one = vec![StatusCause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: -1: must be greater than or equal to 0".into(),
            field: "spec.replicas".into(),
        }];
        let e = ApiError::invalid(deploy(), "web", one);
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            e.message,
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let s = e.to_status_json();
        assert_eq!(s["details"]["kind"], "Deployment");
        assert_eq!(s["details"]["group"], "apps");
        assert_eq!(s["details"]["causes"][0]["field"], "spec.replicas");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(s["code"], 422);

        let two = vec![
            StatusCause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.containers[0].image".into(),
            },
            StatusCause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.containers[0].name".into(),
            },
            StatusCause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.containers[0].name".into(),
            },
        ];
        let e = ApiError::invalid(pod(), "p", two);
        assert_eq!(
            e.message,
            "Pod \"p\" is invalid: [spec.containers[0].image: Required value, spec.containers[0].name: Required value]"
        );
        assert_eq!(e.details.as_ref().map(|d| d.causes.len()), Some(2));
    }

    #[test]
    fn simple_constructors() {
        assert_eq!(ApiError::bad_request("x").code, 400);
        assert_eq!(ApiError::unauthorized().message, "Unauthorized");
        assert_eq!(ApiError::unauthorized().code, 401);
        assert_eq!(ApiError::forbidden("no").code, 403);
        assert_eq!(ApiError::expired("too old resource version: 1 (5)").code, 410);
        assert_eq!(ApiError::expired("x").reason, "Expired");
        assert_eq!(ApiError::gone("x").reason, "Gone");
        assert_eq!(ApiError::method_not_allowed().code, 405);
        let e = ApiError::unsupported_media_type("text/plain");
        assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
        assert!(e.message.contains("text/plain"));
        let e = ApiError::too_large(3 * 1024 * 1024);
        assert_eq!((e.code, e.reason.as_str()), (413, "RequestEntityTooLarge"));
        assert_eq!(e.message, "Request entity too large: limit is 3145728");
        let e = ApiError::internal("disk on fire");
        assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
        assert_eq!(e.message, "Internal error occurred: disk on fire");
        assert_eq!(e.to_status_json()["details"]["causes"][0]["message"], "disk on fire");
    }

    #[test]
    fn status_json_round_trip() {
        let cases = vec![
            ApiError::not_found(deploy(), "web"),
            ApiError::conflict(pod(), "p", OPTIMISTIC_LOCK_MESSAGE),
            ApiError::invalid(
                deploy(),
                "web",
                vec![StatusCause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "spec.selector".into(),
                }],
            ),
            ApiError::bad_request("nope"),
            ApiError::internal("boom"),
        ];
        for e in cases {
            let back = ApiError::from_status_json(&e.to_status_json());
            assert_eq!(back.as_ref(), Some(&e));
        }
    }

    #[test]
    fn from_status_json_rejects_non_status() {
        assert!(ApiError::from_status_json(&json!({"kind": "Pod"})).is_none());
        assert!(ApiError::from_status_json(&json!([1, 2])).is_none());
        assert!(ApiError::from_status_json(&json!({"kind": "Status", "status": "Success", "code": 200})).is_none());
        // A Status with a missing or odd code still decodes (as 500).
        let e = ApiError::from_status_json(&json!({"kind": "Status", "code": 99999, "message": "m"})).expect("status");
        assert_eq!((e.code, e.message.as_str()), (500, "m"));
    }
}
