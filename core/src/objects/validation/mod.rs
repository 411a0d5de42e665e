//! # Validation: the API server's last word before an object is stored
//!
//! Every create and update passes through *validation* in the API server
//! (`pkg/apis/*/validation` in kube-apiserver, built on `k8s.io/apimachinery`'s
//! `util/validation`). Nothing invalid ever reaches etcd, so controllers can trust what they
//! read. When validation fails, the client gets `422 Unprocessable Entity` with reason
//! `Invalid` and one *cause* per broken field:
//!
//! ```text
//! The Deployment "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0
//! ```
//!
//! Each cause is a **field error** (`field.Error` in Go) with:
//! - a **field path** written the way you would address it in the object:
//!   `spec.template.spec.containers[0].image`, `data[my key]`;
//! - a **type** (`Required value`, `Invalid value`, `Unsupported value`, `Duplicate value`,
//!   `Forbidden`, `Too long`) whose machine form is the cause's `reason`
//!   (`FieldValueRequired`, `FieldValueInvalid`, ...);
//! - the **bad value** (strings in quotes, numbers bare, maps and lists as JSON), and a
//!   **detail** explaining the rule.
//!
//! The messages here are Kubernetes' own (for instance the famous
//! `a lowercase RFC 1123 subdomain must consist of ...`), so they can be searched for.
//!
//! ## Two layers
//! 1. **Type check.** Objects are kept as raw JSON so unknown fields survive. To find fields
//!    of the wrong JSON type (`replicas: "three"`), the object is decoded into the typed
//!    `k8s-openapi` struct with `serde_path_to_error`, which reports *where* decoding failed.
//!    The real kube-apiserver answers a built-in type with a wrongly typed field with
//!    `400 BadRequest` and Go's decoder text (`json: cannot unmarshal string into Go struct
//!    field DeploymentSpec.spec.replicas of type int32`); for custom resources it answers
//!    `422` with `spec.replicas in body must be of type integer: "string"`. kulisse uses the
//!    second, clearer form for every kind, so the learner sees the field path.
//! 2. **Semantic rules**: names, labels, selectors, ports, replica counts... the rules
//!    kube-apiserver applies for each kind.
//!
//! [`validate_update`] adds the rules that compare old and new object (immutable fields).
//!
//! Validation runs *after* defaulting ([`super::defaults`]), as in the API server; fields
//! that defaulting always fills (such as a port's `protocol`) are only checked when present.
//!
//! ## The files
//! One file per group of rules, in the order a reader meets them: [`names`] (the name and
//! label rules of apimachinery's `util/validation`), [`json`] (field paths and lookups over
//! raw JSON), [`metadata`], [`selectors`], [`pods`] (pods, pod templates, Deployments and
//! ReplicaSets), [`volumes`] (pod volumes and volume mounts), [`env`] (containers'
//! environment), [`services`] (Services, Endpoints, EndpointSlices, Events, ConfigMaps,
//! Leases), [`rbac`] (Roles, ClusterRoles and their bindings), [`types`] (the type check)
//! and [`entry`] (which rules apply to which kind, and
//! on update). This file holds what they all report: [`FieldError`].

mod entry;
mod env;
mod json;
mod metadata;
mod names;
mod pods;
mod rbac;
mod selectors;
mod services;
mod types;
mod volumes;

pub use entry::*;
pub use env::*;
use json::*;
pub use metadata::*;
pub use names::*;
use pods::*;
pub use rbac::is_path_segment_name;
use selectors::*;
use services::*;
use types::*;
pub use volumes::*;

use serde_json::{Map, Value};

use super::registry::ResourceInfo;
use super::status::{ApiError, StatusCause};

/// The kind of a field error, as `field.ErrorType` in apimachinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    /// A value that was looked up is missing (`Not found`).
    NotFound,
    /// A required value is missing or empty (`Required value`).
    Required,
    /// A value that must be unique appears twice (`Duplicate value`).
    Duplicate,
    /// A malformed or out-of-range value (`Invalid value`).
    Invalid,
    /// A value not in the list of accepted values (`Unsupported value`).
    NotSupported,
    /// A value that is well-formed but not allowed here (`Forbidden`).
    Forbidden,
    /// A value longer than allowed (`Too long`).
    TooLong,
    /// A list with more items than allowed (`Too many`).
    TooMany,
    /// A value of the wrong JSON type (`Invalid value`, reason `FieldValueTypeInvalid`).
    TypeInvalid,
}

impl FieldErrorType {
    /// The machine-readable cause type (`metav1.CauseType`), e.g. `FieldValueRequired`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorType::NotFound => "FieldValueNotFound",
            FieldErrorType::Required => "FieldValueRequired",
            FieldErrorType::Duplicate => "FieldValueDuplicate",
            FieldErrorType::Invalid => "FieldValueInvalid",
            FieldErrorType::NotSupported => "FieldValueNotSupported",
            FieldErrorType::Forbidden => "FieldValueForbidden",
            FieldErrorType::TooLong => "FieldValueTooLong",
            FieldErrorType::TooMany => "FieldValueTooMany",
            FieldErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The human-readable words, e.g. `Required value`.
    pub fn text(self) -> &'static str {
        match self {
            FieldErrorType::NotFound => "Not found",
            FieldErrorType::Required => "Required value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::Invalid | FieldErrorType::TypeInvalid => "Invalid value",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::TooLong => "Too long",
            FieldErrorType::TooMany => "Too many",
        }
    }
}

/// One broken field (apimachinery's `field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem.
    pub error_type: FieldErrorType,
    /// The field path, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// The offending value, already rendered as Kubernetes prints it (see [`go_value`]);
    /// `None` when the type does not print a value (`Required`, `Forbidden`, `Too long`).
    pub bad_value: Option<String>,
    /// The rule that was broken, e.g. `must be greater than or equal to 0`.
    pub detail: String,
}

impl FieldError {
    /// `Required value` (with an optional detail).
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            error_type: FieldErrorType::Required,
            field: field.into(),
            bad_value: None,
            detail: detail.into(),
        }
    }

    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> FieldError {
        FieldError {
            error_type: FieldErrorType::Invalid,
            field: field.into(),
            bad_value: Some(go_value(value)),
            detail: detail.into(),
        }
    }

    /// `Invalid value: "<value>": <detail>` for a string value.
    pub fn invalid_str(field: impl Into<String>, value: &str, detail: impl Into<String>) -> FieldError {
        FieldError::invalid(field, &Value::from(value), detail)
    }

    /// `Unsupported value: "<value>": supported values: "A", "B"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> FieldError {
        let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        FieldError {
            error_type: FieldErrorType::NotSupported,
            field: field.into(),
            bad_value: Some(go_value(value)),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    /// `Not found: <value>` (a name that refers to nothing).
    pub fn not_found(field: impl Into<String>, value: &Value) -> FieldError {
        FieldError {
            error_type: FieldErrorType::NotFound,
            field: field.into(),
            bad_value: Some(go_value(value)),
            detail: String::new(),
        }
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> FieldError {
        FieldError {
            error_type: FieldErrorType::Duplicate,
            field: field.into(),
            bad_value: Some(go_value(value)),
            detail: String::new(),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            error_type: FieldErrorType::Forbidden,
            field: field.into(),
            bad_value: None,
            detail: detail.into(),
        }
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> FieldError {
        FieldError {
            error_type: FieldErrorType::TooLong,
            field: field.into(),
            bad_value: None,
            detail: format!("may not be more than {max} bytes"),
        }
    }

    /// `Too many: 101: must have at most 100 items` (apimachinery's `field.TooMany`).
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> FieldError {
        FieldError {
            error_type: FieldErrorType::TooMany,
            field: field.into(),
            bad_value: Some(actual.to_string()),
            detail: format!("must have at most {max} items"),
        }
    }

    /// The message without the field, as Go's `ErrorBody()`: `Invalid value: -1: must be
    /// greater than or equal to 0`.
    pub fn body(&self) -> String {
        let mut s = self.error_type.text().to_string();
        if let Some(v) = &self.bad_value {
            s.push_str(": ");
            s.push_str(v);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// This error as a `Status` cause.
    pub fn to_cause(&self) -> StatusCause {
        StatusCause {
            reason: self.error_type.reason().to_string(),
            message: self.body(),
            field: self.field.clone(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Render a value as Kubernetes prints a bad value: strings quoted (`"web"`), numbers and
/// booleans bare (`-1`, `true`), maps and lists as JSON with sorted keys
/// (`{"app":"web"}`), null as `null`.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => serde_json::to_string(&sorted(other)).unwrap_or_else(|_| "<unprintable>".into()),
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(val) = m.get(k) {
                    out.insert(k.clone(), sorted(val));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Quote a string as Go's `%q` does (close enough: JSON escaping).
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

#[cfg(test)]
mod tests;
