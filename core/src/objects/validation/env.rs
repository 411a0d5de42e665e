//! A container's environment (`ValidateEnv`, `validateEnvVarValueFrom`, `ValidateEnvFrom`
//! in `pkg/apis/core/validation/validation.go`).
//!
//! Names follow the relaxed rule of Kubernetes 1.32+ (any printable ASCII but `=`); a
//! variable has a literal `value` or one `valueFrom` source, never both; a `fieldRef` names
//! one of the fields the downward API offers to environment variables; an `envFrom` entry
//! names exactly one ConfigMap or Secret.

use serde_json::Value;

use super::*;

/// The fields `env[].valueFrom.fieldRef` may name (besides `metadata.labels['k']` and
/// `metadata.annotations['k']`).
pub const DOWNWARD_ENV_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const ENV_NAME_MSG: &str =
    "a valid environment variable name must consist only of printable ASCII characters other than '='";

/// `IsRelaxedEnvVarName`.
fn env_var_name(name: &str, path: &str, errs: &mut Errs) {
    if name.is_empty() || !name.chars().all(|c| (' '..='~').contains(&c) && c != '=') {
        errs.push(FieldError::invalid_str(path, name, ENV_NAME_MSG));
    }
}

/// A `configMapKeyRef` or `secretKeyRef`: a name and a key.
fn key_selector(sel: &Value, path: &str, errs: &mut Errs) {
    if let Some(name) = get_str(sel, "name") {
        for msg in is_dns1123_subdomain(name) {
            errs.push(FieldError::invalid_str(child(path, "name"), name, msg));
        }
    }
    match get_str(sel, "key") {
        None | Some("") => errs.push(FieldError::required(child(path, "key"), "")),
        Some(key) => {
            for msg in is_config_map_key(key) {
                errs.push(FieldError::invalid_str(child(path, "key"), key, msg));
            }
        }
    }
}

/// `validateEnvVarValueFrom`: exactly one source.
fn value_from(vf: &Value, path: &str, errs: &mut Errs) {
    let kinds = ["fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef"];
    let present: Vec<&str> = kinds.iter().copied().filter(|k| get(vf, k).is_some()).collect();
    match present.len() {
        0 => errs.push(FieldError::invalid_str(
            path,
            "",
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        )),
        1 => {}
        _ => errs.push(FieldError::invalid_str(
            path,
            "",
            "may not have more than one field specified at a time",
        )),
    }
    for kind in present {
        let p = child(path, kind);
        let src = get(vf, kind).unwrap_or(&Value::Null);
        match kind {
            "fieldRef" => object_field_selector(src, &p, DOWNWARD_ENV_FIELDS, errs),
            "resourceFieldRef" => resource_field_selector(src, &p, false, errs),
            _ => key_selector(src, &p, errs),
        }
    }
}

/// `ValidateEnv` of one container at `path` (`spec.containers[0].env`).
pub(super) fn validate_env(env: &[Value], path: &str, errs: &mut Errs) {
    for (i, e) in env.iter().enumerate() {
        let p = index(path, i);
        match get_str(e, "name") {
            None | Some("") => errs.push(FieldError::required(child(&p, "name"), "")),
            Some(name) => env_var_name(name, &child(&p, "name"), errs),
        }
        if let Some(vf) = get(e, "valueFrom") {
            if get_str(e, "value").is_some_and(|v| !v.is_empty()) {
                errs.push(FieldError::invalid_str(
                    child(&p, "valueFrom"),
                    "",
                    "may not be specified when `value` is not empty",
                ));
            }
            value_from(vf, &child(&p, "valueFrom"), errs);
        }
    }
}

/// `ValidateEnvFrom` of one container at `path` (`spec.containers[0].envFrom`).
pub(super) fn validate_env_from(env_from: &[Value], path: &str, errs: &mut Errs) {
    for (i, ef) in env_from.iter().enumerate() {
        let p = index(path, i);
        if let Some(prefix) = get_str(ef, "prefix").filter(|s| !s.is_empty()) {
            env_var_name(prefix, &child(&p, "prefix"), errs);
        }
        let refs: Vec<&str> = ["configMapRef", "secretRef"]
            .into_iter()
            .filter(|k| get(ef, k).is_some())
            .collect();
        match refs.len() {
            0 => errs.push(FieldError::invalid_str(
                p.clone(),
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            1 => {}
            _ => errs.push(FieldError::invalid_str(
                p.clone(),
                "",
                "may not have more than one field specified at a time",
            )),
        }
        for r in refs {
            if let Some(name) = get(ef, r).and_then(|v| get_str(v, "name")) {
                for msg in is_dns1123_subdomain(name) {
                    errs.push(FieldError::invalid_str(child(&child(&p, r), "name"), name, msg));
                }
            }
        }
    }
}
