//! Type check through k8s-openapi: decode the raw JSON into the typed struct with
//! `serde_path_to_error`, and turn the first wrongly typed field into a field error with
//! its path (see the module doc of [`super`], "Two layers").

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;

/// The OpenAPI type name for serde's "expected ..." text.
fn openapi_type(expected: &str) -> String {
    let e = expected.trim();
    let ints = [
        "i8", "i16", "i32", "i64", "i128", "u8", "u16", "u32", "u64", "u128", "isize", "usize",
    ];
    if ints.contains(&e) || e.contains("integer") {
        "integer".into()
    } else if ["f32", "f64", "a number", "a float"].contains(&e) {
        "number".into()
    } else if e == "IntOrString" {
        "integer or string".into()
    } else if ["Quantity"].contains(&e) {
        "string or number".into()
    } else if e.contains("string") || e == "Time" || e == "MicroTime" || e == "char" {
        "string".into()
    } else if e.contains("bool") {
        "boolean".into()
    } else if e.contains("sequence") || e.contains("array") || e.contains("list") {
        "array".into()
    } else if e.contains("map") || e.starts_with(|c: char| c.is_ascii_uppercase()) {
        "object".into()
    } else {
        e.to_string()
    }
}

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn value_at<'a>(root: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    let mut cur = root;
    for seg in path.iter() {
        cur = match seg {
            Segment::Seq { index } => cur.as_array()?.get(*index)?,
            Segment::Map { key } => cur.as_object()?.get(key)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    if path.iter().next().is_none() {
        String::new()
    } else {
        path.to_string()
    }
}

/// Decode `obj` into `T` and turn the first decoding failure into a field error.
fn type_check_as<T: DeserializeOwned>(obj: &Value) -> Option<FieldError> {
    let err = serde_path_to_error::deserialize::<_, T>(obj).err()?;
    let path = err.path().clone();
    let field = path_string(&path);
    let msg = err.into_inner().to_string();
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        return Some(FieldError::required(child(&field, name), ""));
    }
    let bad = value_at(obj, &path).cloned().unwrap_or(Value::Null);
    if msg.starts_with("invalid type:") {
        let expected = msg.rsplit_once(", expected ").map_or("", |(_, e)| e);
        let shown = if field.is_empty() { "the object" } else { field.as_str() };
        return Some(FieldError {
            error_type: FieldErrorType::TypeInvalid,
            field: field.clone(),
            bad_value: Some(truncate(go_value(&bad), 120)),
            detail: format!(
                "{shown} in body must be of type {}: \"{}\"",
                openapi_type(expected),
                json_type(&bad)
            ),
        });
    }
    // "invalid value", "invalid length", number out of range, bad base64 or timestamp...
    let detail = if msg.ends_with("expected i32") {
        "must be a 32-bit integer (between -2147483648 and 2147483647)".to_string()
    } else if msg.ends_with("expected i64") {
        "must be a 64-bit integer".to_string()
    } else {
        msg
    };
    Some(FieldError {
        error_type: FieldErrorType::Invalid,
        field,
        bad_value: Some(truncate(go_value(&bad), 120)),
        detail,
    })
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

pub(super) fn type_check(info: &ResourceInfo, obj: &Value) -> Option<FieldError> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core, rbac::v1 as rbac};
    match (info.group, info.kind) {
        ("", "Pod") => type_check_as::<core::Pod>(obj),
        ("", "Service") => type_check_as::<core::Service>(obj),
        ("", "Namespace") => type_check_as::<core::Namespace>(obj),
        ("", "Node") => type_check_as::<core::Node>(obj),
        ("", "Endpoints") => type_check_as::<core::Endpoints>(obj),
        ("discovery.k8s.io", "EndpointSlice") => type_check_as::<k8s_openapi::api::discovery::v1::EndpointSlice>(obj),
        ("", "Event") => type_check_as::<core::Event>(obj),
        ("", "ConfigMap") => type_check_as::<core::ConfigMap>(obj),
        ("", "Secret") => type_check_as::<core::Secret>(obj),
        ("", "ServiceAccount") => type_check_as::<core::ServiceAccount>(obj),
        ("apps", "Deployment") => type_check_as::<apps::Deployment>(obj),
        ("apps", "ReplicaSet") => type_check_as::<apps::ReplicaSet>(obj),
        ("coordination.k8s.io", "Lease") => type_check_as::<coord::Lease>(obj),
        ("rbac.authorization.k8s.io", "Role") => type_check_as::<rbac::Role>(obj),
        ("rbac.authorization.k8s.io", "ClusterRole") => type_check_as::<rbac::ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "RoleBinding") => type_check_as::<rbac::RoleBinding>(obj),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => type_check_as::<rbac::ClusterRoleBinding>(obj),
        _ => None,
    }
}
