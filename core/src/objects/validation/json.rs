//! Small helpers over raw JSON: field paths (`spec.containers[0]`, `data[key]`) and typed
//! lookups that treat a missing field and a field of the wrong type alike (the type check
//! reports the latter).

use serde_json::Value;

use super::*;

pub(super) type Errs = Vec<FieldError>;

pub(super) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(super) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

pub(super) fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| m.get(k)).filter(|v| !v.is_null())
}

pub(super) fn get_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    get(v, k).and_then(Value::as_str)
}

pub(super) fn get_arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    get(v, k).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// `ValidateNonnegativeField`: the field, if an integer, must be ≥ 0.
pub(super) fn nonnegative(obj: &Value, k: &str, path: &str, errs: &mut Errs) {
    if let Some(n) = get(obj, k).and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            child(path, k),
            &Value::from(n),
            IS_NEGATIVE_ERROR_MSG,
        ));
    }
}

pub(super) fn one_of(obj: &Value, k: &str, path: &str, supported: &[&str], errs: &mut Errs) {
    if let Some(s) = get_str(obj, k)
        && !supported.contains(&s)
    {
        errs.push(FieldError::not_supported(child(path, k), &Value::from(s), supported));
    }
}
