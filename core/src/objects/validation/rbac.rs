//! RBAC objects (`pkg/apis/rbac/validation` upstream): the rules of Roles and ClusterRoles,
//! and the `roleRef` and `subjects` of their bindings. RBAC names may contain `:`
//! (`system:node`), so they follow the path-segment rule instead of the DNS one.

use serde_json::Value;

use super::*;

const GROUP: &str = "rbac.authorization.k8s.io";

/// `IsValidPathSegmentName`: anything but `.`, `..`, and names with `/` or `%`.
pub fn is_path_segment_name(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

pub(super) fn validate(kind: &str, obj: &Value, errs: &mut Errs) {
    match kind {
        "Role" | "ClusterRole" => {
            for (i, rule) in get_arr(obj, "rules").iter().enumerate() {
                validate_rule(rule, kind == "Role", &index("rules", i), errs);
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => validate_binding(kind, obj, errs),
        _ => {}
    }
}

/// `ValidatePolicyRule`.
fn validate_rule(rule: &Value, namespaced: bool, path: &str, errs: &mut Errs) {
    if get_arr(rule, "verbs").is_empty() {
        errs.push(FieldError::required(
            child(path, "verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls = get_arr(rule, "nonResourceURLs");
    if !urls.is_empty() {
        let value = Value::Array(urls.to_vec());
        if namespaced {
            errs.push(FieldError::invalid(
                child(path, "nonResourceURLs"),
                &value,
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if ["apiGroups", "resources", "resourceNames"]
            .iter()
            .any(|k| !get_arr(rule, k).is_empty())
        {
            errs.push(FieldError::invalid(
                child(path, "nonResourceURLs"),
                &value,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if get_arr(rule, "apiGroups").is_empty() {
        errs.push(FieldError::required(
            child(path, "apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if get_arr(rule, "resources").is_empty() {
        errs.push(FieldError::required(
            child(path, "resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

/// `ValidateRoleBinding`, `ValidateClusterRoleBinding` and `ValidateRoleBindingSubject`.
fn validate_binding(kind: &str, obj: &Value, errs: &mut Errs) {
    let role_ref = get(obj, "roleRef").unwrap_or(&Value::Null);
    let api_group = get(role_ref, "apiGroup").cloned().unwrap_or(Value::from(""));
    if api_group.as_str() != Some(GROUP) {
        errs.push(FieldError::not_supported("roleRef.apiGroup", &api_group, &[GROUP]));
    }
    let ref_kind = get(role_ref, "kind").cloned().unwrap_or(Value::from(""));
    let allowed: &[&str] = if kind == "RoleBinding" {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !ref_kind.as_str().is_some_and(|k| allowed.contains(&k)) {
        errs.push(FieldError::not_supported("roleRef.kind", &ref_kind, allowed));
    }
    match get_str(role_ref, "name").unwrap_or("") {
        "" => errs.push(FieldError::required("roleRef.name", "")),
        name => {
            for msg in is_path_segment_name(name) {
                errs.push(FieldError::invalid_str("roleRef.name", name, msg));
            }
        }
    }
    for (i, subject) in get_arr(obj, "subjects").iter().enumerate() {
        validate_subject(subject, kind == "RoleBinding", &index("subjects", i), errs);
    }
}

fn validate_subject(subject: &Value, namespaced: bool, path: &str, errs: &mut Errs) {
    let name = get_str(subject, "name").unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    }
    let api_group = get(subject, "apiGroup").cloned().unwrap_or(Value::from(""));
    let kind = get(subject, "kind").cloned().unwrap_or(Value::from(""));
    match kind.as_str().unwrap_or("") {
        "ServiceAccount" => {
            if !name.is_empty() {
                for msg in is_dns1123_subdomain(name) {
                    errs.push(FieldError::invalid_str(child(path, "name"), name, msg));
                }
            }
            if api_group.as_str() != Some("") {
                errs.push(FieldError::not_supported(child(path, "apiGroup"), &api_group, &[""]));
            }
            if !namespaced && get_str(subject, "namespace").unwrap_or("").is_empty() {
                errs.push(FieldError::required(child(path, "namespace"), ""));
            }
        }
        "User" | "Group" => {
            if api_group.as_str() != Some(GROUP) {
                errs.push(FieldError::not_supported(child(path, "apiGroup"), &api_group, &[GROUP]));
            }
        }
        _ => errs.push(FieldError::not_supported(
            child(path, "kind"),
            &kind,
            &["ServiceAccount", "User", "Group"],
        )),
    }
}
