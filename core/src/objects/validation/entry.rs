//! Entry points: which rules apply to which kind ([`field_errors`], [`validate`]), and the
//! rules that compare old and new object on update ([`validate_update`], immutable
//! fields).

use serde_json::Value;

use super::*;

fn object_name(obj: &Value) -> String {
    get(obj, "metadata")
        .and_then(|m| get_str(m, "name").or_else(|| get_str(m, "generateName")))
        .unwrap_or("")
        .to_string()
}

fn finish(info: &ResourceInfo, obj: &Value, errs: Errs) -> Result<(), ApiError> {
    if errs.is_empty() {
        return Ok(());
    }
    let causes = errs.iter().map(FieldError::to_cause).collect();
    Err(ApiError::invalid(info, &object_name(obj), causes))
}

/// Collect every field error of `obj` as a `info.kind` (without turning them into an
/// [`ApiError`]); [`validate`] is this plus the `422 Invalid` wrapping.
pub fn field_errors(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = Errs::new();
    if !obj.is_object() {
        errs.push(FieldError {
            error_type: FieldErrorType::TypeInvalid,
            field: String::new(),
            bad_value: Some(truncate(go_value(obj), 120)),
            detail: format!(
                "the object must be of type object (a {} with apiVersion, kind and metadata): \"{}\"",
                info.kind,
                json_type(obj)
            ),
        });
        return errs;
    }
    let api_version = info.api_version();
    match get(obj, "apiVersion") {
        None => errs.push(FieldError::required("apiVersion", format!("must be \"{api_version}\""))),
        Some(v) if v.as_str() != Some(api_version.as_str()) => errs.push(FieldError::invalid(
            "apiVersion",
            v,
            format!("must be \"{api_version}\" for kind {}", info.kind),
        )),
        Some(_) => {}
    }
    match get(obj, "kind") {
        None => errs.push(FieldError::required("kind", format!("must be \"{}\"", info.kind))),
        Some(v) if v.as_str() != Some(info.kind) => {
            errs.push(FieldError::invalid("kind", v, format!("must be \"{}\"", info.kind)))
        }
        Some(_) => {}
    }
    validate_metadata(info, obj, &mut errs);
    // A `spec` of the wrong type is reported once, by the type check below, instead of as a
    // cascade of "Required value" for everything inside it.
    let spec_is_odd = get(obj, "spec").is_some_and(|s| !s.is_object());
    match (info.group, info.kind) {
        _ if spec_is_odd => {}
        ("", "Pod") => {
            let spec = get(obj, "spec").unwrap_or(&Value::Null);
            validate_pod_spec(spec, "spec", false, &mut errs);
        }
        ("apps", "Deployment") => validate_deployment(obj, &mut errs),
        ("apps", "ReplicaSet") => {
            let spec = get(obj, "spec").unwrap_or(&Value::Null);
            validate_replicated_spec(spec, "deployment", &mut errs);
        }
        ("", "Service") => validate_service(obj, &mut errs),
        ("", "Endpoints") => validate_endpoints(obj, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => validate_endpoint_slice(obj, &mut errs),
        ("", "Event") => validate_event(obj, &mut errs),
        ("", "ConfigMap") => validate_config_map(obj, &mut errs),
        ("", "Secret") => errs.extend(super::super::secret::validate(obj)),
        ("coordination.k8s.io", "Lease") => validate_lease(obj, &mut errs),
        ("rbac.authorization.k8s.io", kind) => super::rbac::validate(kind, obj, &mut errs),
        _ => {}
    }
    // The typed decoder rejects a wrong apiVersion/kind itself; only type-check when those
    // are right, and skip a cause that a semantic rule already reported for the same field.
    let header_ok = !errs.iter().any(|e| e.field == "apiVersion" || e.field == "kind");
    if header_ok
        && let Some(type_err) = type_check(info, obj)
        && !errs.iter().any(|e| e.field == type_err.field)
    {
        errs.push(type_err);
    }
    errs
}

/// Validate an object about to be created (or the new version of an update) as a
/// `info.kind`. On failure: `422 Invalid` with one cause per problem, e.g.
/// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be greater than
/// or equal to 0`.
///
/// `apiVersion` and `kind` must be present and match `info` (the API server fills them from
/// the URL first if it wants to accept bodies without them).
pub fn validate(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    finish(info, obj, field_errors(info, obj))
}

pub(super) fn immutable(old: Option<&Value>, new: Option<&Value>, path: &str, errs: &mut Errs) {
    if old != new {
        errs.push(FieldError::invalid(
            path,
            new.unwrap_or(&Value::Null),
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
}

pub(super) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| get(cur, k))
}

/// Validate an update: the rules of [`validate`] for `new`, plus the fields that may not
/// change once set:
/// - `metadata.name`, `metadata.namespace` (and `metadata.uid` when both carry one);
/// - Deployment and ReplicaSet `spec.selector` (`field is immutable`: a controller's
///   selector decides which Pods it owns, changing it would orphan them);
/// - Service `spec.clusterIP` once allocated (an empty or missing new value is accepted:
///   the API server carries the old one over);
/// - ConfigMap `data`/`binaryData` when the old ConfigMap is `immutable: true`, and
///   `immutable` itself cannot be switched off;
/// - Pod `spec`, except container images, `activeDeadlineSeconds`, added tolerations and
///   setting `nodeName` when it was empty. (Real Kubernetes binds through the
///   `pods/binding` subresource; kulisse also accepts a bind by update.)
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value) -> Result<(), ApiError> {
    let mut errs = field_errors(info, new);
    for k in ["name", "namespace"] {
        let o = at(old, &["metadata", k]);
        let n = at(new, &["metadata", k]);
        if o.is_some() && n.is_some() {
            immutable(o, n, &format!("metadata.{k}"), &mut errs);
        }
    }
    let (ou, nu) = (at(old, &["metadata", "uid"]), at(new, &["metadata", "uid"]));
    if ou.is_some() && nu.is_some() {
        immutable(ou, nu, "metadata.uid", &mut errs);
    }
    match (info.group, info.kind) {
        ("apps", "Deployment") | ("apps", "ReplicaSet") => {
            immutable(
                at(old, &["spec", "selector"]),
                at(new, &["spec", "selector"]),
                "spec.selector",
                &mut errs,
            );
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            immutable(
                at(old, &["addressType"]),
                at(new, &["addressType"]),
                "addressType",
                &mut errs,
            );
        }
        ("", "Service") => {
            let o = at(old, &["spec", "clusterIP"]).and_then(Value::as_str).unwrap_or("");
            let n = at(new, &["spec", "clusterIP"]).and_then(Value::as_str).unwrap_or("");
            if !o.is_empty() && !n.is_empty() && o != n {
                errs.push(FieldError::invalid_str("spec.clusterIP", n, FIELD_IMMUTABLE_ERROR_MSG));
            }
        }
        ("", "ConfigMap") if get(old, "immutable").and_then(Value::as_bool) == Some(true) => {
            if get(new, "immutable").and_then(Value::as_bool) != Some(true) {
                errs.push(FieldError::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
            for field in ["data", "binaryData"] {
                if get(old, field) != get(new, field) {
                    errs.push(FieldError::forbidden(
                        field,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        ("", "Pod") => validate_pod_spec_update(old, new, &mut errs),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            // upstream: a binding's role cannot change; delete and re-create it instead
            if get(old, "roleRef") != get(new, "roleRef") {
                errs.push(FieldError::invalid(
                    "roleRef",
                    get(new, "roleRef").unwrap_or(&Value::Null),
                    "cannot change roleRef",
                ));
            }
        }
        ("", "Secret") => errs.extend(super::super::secret::validate_update(old, new)),
        _ => {}
    }
    finish(info, new, errs)
}

fn validate_pod_spec_update(old: &Value, new: &Value, errs: &mut Errs) {
    let (Some(old_spec), Some(new_spec)) = (get(old, "spec"), get(new, "spec")) else {
        return;
    };
    // Copy the mutable parts of the new spec onto the old one; what remains must be equal.
    let mut masked = new_spec.clone();
    if let Some(m) = masked.as_object_mut() {
        for list in ["containers", "initContainers"] {
            let old_list = get_arr(old_spec, list);
            if let Some(Value::Array(items)) = m.get_mut(list) {
                for (i, item) in items.iter_mut().enumerate() {
                    let old_image = old_list.get(i).and_then(|c| get(c, "image")).cloned();
                    if let (Some(obj), Some(img)) = (item.as_object_mut(), old_image) {
                        obj.insert("image".into(), img);
                    }
                }
            }
        }
        for k in ["activeDeadlineSeconds", "tolerations"] {
            match get(old_spec, k) {
                Some(v) => m.insert(k.to_string(), v.clone()),
                None => m.remove(k),
            };
        }
        if get_str(old_spec, "nodeName").is_none_or(str::is_empty) {
            match get(old_spec, "nodeName") {
                Some(v) => m.insert("nodeName".to_string(), v.clone()),
                None => m.remove("nodeName"),
            };
        }
    }
    let strip_nulls = |v: &Value| -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        }
    };
    if strip_nulls(&masked) != strip_nulls(old_spec) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}
