//! # Discovery (mirrors kube-apiserver's `/api`, `/apis` and `/version` endpoints)
//!
//! Before a client can talk about "deployments" it asks the server what it serves:
//! which API groups and versions (`/api` for the core group, `/apis` for named groups
//! such as `apps`), and which resources each group-version has, with their kinds, verbs,
//! short names (`deploy`, `po`) and whether they live in a namespace. kubectl caches these
//! answers; `kubectl api-resources` prints them.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, KUBERNETES_VERSION, json_response};
use crate::objects::{ApiError, RESOURCES, Subresource};

/// `GET /version`
pub fn version() -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, &version_info()))
}

/// What `/version` answers: the Kubernetes release whose API kulisse speaks, and kulisse's
/// own version (`v1.33.0-kulisse.0.1.0`). The CLI prints the same as its client version.
pub fn version_info() -> Value {
    let (major, minor) = KUBERNETES_VERSION;
    json!({
            "major": major,
            "minor": minor,
            "gitVersion": format!("v{major}.{minor}.0-kulisse.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `GET /api`: the versions of the core group.
pub fn core_versions() -> Result<Response<Body>, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
    ))
}

fn group_names() -> Vec<&'static str> {
    let mut groups: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .chain(super::reviews::REVIEWS.iter().map(|r| r.group))
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups.sort();
    groups.dedup();
    groups
}

fn group_json(group: &str) -> Value {
    let version = RESOURCES
        .iter()
        .find(|r| r.group == group)
        .map(|r| r.version)
        .unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `GET /apis`: the named groups (the core group is not listed here).
pub fn groups() -> Result<Response<Body>, ApiError> {
    let groups: Vec<Value> = group_names().into_iter().map(group_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    ))
}

/// `GET /apis/<group>`
pub fn group(group: &str) -> Result<Response<Body>, ApiError> {
    if !group_names().contains(&group) {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource: no API group \"{group}\""),
        ));
    }
    let mut g = group_json(group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Ok(json_response(StatusCode::OK, &g))
}

/// The verbs every kind supports.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `GET /api/v1`, `GET /apis/apps/v1`: the resources of one group-version.
///
/// Subresources are entries of their own (`pods/log`, `deployments/scale`), each with the
/// verbs it serves; `deployments/scale` names the kind it speaks, `autoscaling/v1` `Scale`,
/// with `group` and `version`, which is how `kubectl scale` finds out what to send.
pub fn resources(group: &str, version: &str) -> Result<Response<Body>, ApiError> {
    let mut list = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        let sub = |name: &str, kind: &str, verbs: &[&str]| json!({"name": format!("{}/{name}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
        if r.has(Subresource::Status) {
            list.push(sub("status", r.kind, &["get", "patch", "update"]));
        }
        if r.has(Subresource::Scale) {
            let mut scale = sub("scale", "Scale", &["get", "patch", "update"]);
            scale["group"] = json!("autoscaling");
            scale["version"] = json!("v1");
            list.push(scale);
        }
        if r.has(Subresource::Binding) {
            list.push(sub("binding", "Binding", &["create"]));
        }
        if r.has(Subresource::Log) {
            list.push(sub("log", "Pod", &["get"]));
        }
        if r.has(Subresource::Token) {
            let mut token = sub("token", "TokenRequest", &["create"]);
            token["group"] = json!("authentication.k8s.io");
            token["version"] = json!("v1");
            list.push(token);
        }
        if r.has(Subresource::Exec) {
            list.push(sub("exec", "PodExecOptions", &["create", "get"]));
            list.push(sub("attach", "PodAttachOptions", &["create", "get"]));
            list.push(sub("portforward", "PodPortForwardOptions", &["create", "get"]));
        }
    }
    list.extend(super::reviews::discovery_entries(group, version));
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    ))
}
