//! Object metadata (`ValidateObjectMeta` upstream): the name rule of each kind, labels,
//! annotations, and what a namespace must and must not be.

use serde_json::Value;

use super::*;

/// Which name rule a kind uses for `metadata.name`.
fn name_rule(info: &ResourceInfo) -> fn(&str) -> Vec<String> {
    match (info.group, info.kind) {
        ("", "Namespace") => is_dns1123_label,
        ("", "Service") => is_dns1035_label,
        ("rbac.authorization.k8s.io", _) => is_path_segment_name,
        _ => is_dns1123_subdomain,
    }
}

/// `ValidateLabels`: every key a qualified name, every value a label value.
pub fn validate_labels(labels: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(m) = labels.as_object() {
        for (k, v) in m {
            for msg in is_qualified_name(k) {
                errs.push(FieldError::invalid_str(path, k, msg));
            }
            if let Some(s) = v.as_str() {
                for msg in is_valid_label_value(s) {
                    errs.push(FieldError::invalid_str(path, s, msg));
                }
            }
        }
    }
    errs
}

pub(super) fn validate_metadata(info: &ResourceInfo, obj: &Value, errs: &mut Errs) {
    let meta = get(obj, "metadata").unwrap_or(&Value::Null);
    let name_fn = name_rule(info);
    let name = get_str(meta, "name").unwrap_or("");
    let generate_name = get_str(meta, "generateName").unwrap_or("");
    if name.is_empty() && generate_name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    if !name.is_empty() {
        for msg in name_fn(name) {
            errs.push(FieldError::invalid_str("metadata.name", name, msg));
        }
    }
    if !generate_name.is_empty() {
        // A prefix may end in '-' (the API server appends random characters).
        let masked = match generate_name.strip_suffix('-') {
            Some(p) => format!("{p}a"),
            None => generate_name.to_string(),
        };
        for msg in name_fn(&masked) {
            errs.push(FieldError::invalid_str("metadata.generateName", generate_name, msg));
        }
    }
    if info.namespaced
        && let Some(ns) = get_str(meta, "namespace")
        && !ns.is_empty()
    {
        for msg in is_dns1123_label(ns) {
            errs.push(FieldError::invalid_str("metadata.namespace", ns, msg));
        }
    }
    if let Some(labels) = get(meta, "labels") {
        errs.extend(validate_labels(labels, "metadata.labels"));
    }
    if let Some(annotations) = get(meta, "annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in annotations {
            for msg in is_qualified_name(&k.to_ascii_lowercase()) {
                errs.push(FieldError::invalid_str("metadata.annotations", k, msg));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::too_long(
                "metadata.annotations",
                TOTAL_ANNOTATION_SIZE_LIMIT,
            ));
        }
    }
}
