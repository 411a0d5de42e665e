//! # Routes: how a URL names an object (mirrors kube-apiserver's REST path layout)
//!
//! Every Kubernetes object has a URL built from the same few parts:
//!
//! ```text
//! /api/v1/namespaces/default/pods/web-7d4b9/status
//! └┬┘ └┬┘ └──────┬──────────┘ └┬─┘ └──┬──┘ └─┬──┘
//!  │  version  namespace    resource  name  subresource
//!  core group ("/api"); named groups live under "/apis/<group>/<version>", e.g.
//!  /apis/apps/v1/namespaces/default/deployments/web
//! ```
//!
//! Cluster-scoped resources (nodes, namespaces) have no `namespaces/<ns>` part, and a list
//! across all namespaces leaves it out too: `/api/v1/pods`. This module turns a path into a
//! [`Route`]; the handlers never look at the raw path again.

use crate::objects::{self, ApiError, ResourceInfo};

/// What a request path points at.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/livez`: the process is alive.
    Health,
    /// `/readyz`: ready to serve (the store answers, not shutting down).
    Ready,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/openapi/v3`: the index of OpenAPI documents.
    OpenApiIndex,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`: one group-version's OpenAPI document.
    OpenApi(String),
    /// `/api/v1` or `/apis/<group>/<version>`: the resources of one group-version.
    Resources { group: String, version: String },
    /// A collection: list, create, watch. `namespace: None` means all namespaces
    /// (or a cluster-scoped resource).
    Collection {
        info: &'static ResourceInfo,
        namespace: Option<String>,
    },
    /// One object, maybe a subresource of it (`status`, `scale`, `binding`, `log`).
    Object {
        info: &'static ResourceInfo,
        namespace: Option<String>,
        name: String,
        subresource: Option<String>,
    },
}

/// Parse a request path (without the query string) into a [`Route`].
pub fn parse(path: &str) -> Result<Route, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["version"] => Ok(Route::Version),
        ["healthz"] | ["livez"] => Ok(Route::Health),
        ["readyz"] => Ok(Route::Ready),
        ["api"] => Ok(Route::CoreVersions),
        ["apis"] => Ok(Route::Groups),
        ["openapi", "v3"] => Ok(Route::OpenApiIndex),
        ["openapi", "v3", rest @ ..] => Ok(Route::OpenApi(rest.join("/"))),
        ["apis", group] => Ok(Route::Group(group.to_string())),
        ["api", version] => resources("", version),
        ["apis", group, version] => resources(group, version),
        ["api", version, rest @ ..] => resource_path("", version, rest),
        ["apis", group, version, rest @ ..] => resource_path(group, version, rest),
        _ => Err(not_found_path(path)),
    }
}

fn resources(group: &str, version: &str) -> Result<Route, ApiError> {
    if objects::RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
        || super::reviews::serves(group, version)
    {
        Ok(Route::Resources {
            group: group.to_string(),
            version: version.to_string(),
        })
    } else {
        Err(not_found_path(&format!("{group}/{version}")))
    }
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let find = |plural: &str| {
        objects::by_resource(group, version, plural).ok_or_else(|| {
            let gv = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource: no resource \"{plural}\" in {gv}"),
            )
        })
    };
    let object = |info: &'static ResourceInfo, namespace: Option<&str>, name: &str, sub: Option<&str>| {
        Ok(Route::Object {
            info,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            subresource: sub.map(str::to_string),
        })
    };
    match rest {
        // Namespaces are themselves a resource: /api/v1/namespaces/{name}[/status]
        ["namespaces", ns] if group.is_empty() => object(find("namespaces")?, None, ns, None),
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            object(find("namespaces")?, None, ns, Some(sub))
        }
        ["namespaces", ns, plural] => {
            let info = find(plural)?;
            require_namespaced(info)?;
            Ok(Route::Collection {
                info,
                namespace: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, plural, name] => {
            let info = find(plural)?;
            require_namespaced(info)?;
            object(info, Some(ns), name, None)
        }
        ["namespaces", ns, plural, name, sub] => {
            let info = find(plural)?;
            require_namespaced(info)?;
            object(info, Some(ns), name, Some(sub))
        }
        [plural] => Ok(Route::Collection {
            info: find(plural)?,
            namespace: None,
        }),
        [plural, name] => {
            let info = find(plural)?;
            if info.namespaced {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!(
                        "{} are namespaced: use /namespaces/<namespace>/{}/{name}",
                        info.plural, info.plural
                    ),
                ));
            }
            object(info, None, name, None)
        }
        [plural, name, sub] => {
            let info = find(plural)?;
            object(info, None, name, Some(sub))
        }
        _ => Err(not_found_path(&rest.join("/"))),
    }
}

fn require_namespaced(info: &ResourceInfo) -> Result<(), ApiError> {
    if info.namespaced {
        Ok(())
    } else {
        Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "{} are cluster-scoped: their URL has no /namespaces/<namespace> part",
                info.plural
            ),
        ))
    }
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_paths() {
        assert_eq!(parse("/version").unwrap(), Route::Version);
        match parse("/apis/apps/v1/namespaces/default/deployments/web").unwrap() {
            Route::Object {
                info,
                namespace,
                name,
                subresource,
            } => {
                assert_eq!(info.kind, "Deployment");
                assert_eq!(namespace.as_deref(), Some("default"));
                assert_eq!(name, "web");
                assert_eq!(subresource, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse("/api/v1/pods").unwrap() {
            Route::Collection { info, namespace } => {
                assert_eq!(info.kind, "Pod");
                assert_eq!(namespace, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse("/api/v1/namespaces/kube-system").unwrap() {
            Route::Object { info, name, .. } => {
                assert_eq!(info.kind, "Namespace");
                assert_eq!(name, "kube-system");
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse("/api/v1/namespaces/default/pods/p/binding").unwrap() {
            Route::Object { subresource, .. } => assert_eq!(subresource.as_deref(), Some("binding")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parse("/api/v1/namespaces/default/nodes").unwrap_err().code, 404);
        assert_eq!(parse("/api/v1/widgets").unwrap_err().code, 404);
        assert_eq!(parse("/nonsense/path").unwrap_err().code, 404);
    }
}
