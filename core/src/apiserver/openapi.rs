//! # OpenAPI v3 and field validation (mirrors kube-apiserver's `/openapi/v3` and `fieldValidation`)
//!
//! Discovery ([`super::discovery`]) tells a client *which* resources exist. OpenAPI tells it
//! *what they look like*: every kind's fields, their types and their documentation, as JSON
//! Schemas. kube-apiserver publishes one OpenAPI v3 document per group-version:
//!
//! ```text
//! GET /openapi/v3                 → {"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"},
//!                                              "apis/apps/v1": {…}, …}}
//! GET /openapi/v3/apis/apps/v1    → {"openapi": "3.0.0", "paths": {…}, "components": {"schemas": {
//!                                     "io.k8s.api.apps.v1.Deployment": {…,
//!                                       "x-kubernetes-group-version-kind": [{"group":"apps","version":"v1","kind":"Deployment"}]}, …}}}
//! ```
//!
//! kubectl reads these documents for three things:
//! - `kubectl explain deployment.spec` prints the schema's descriptions;
//! - before `create`/`apply`/`replace` it checks that the PATCH operation of the kind accepts
//!   the `fieldValidation` query parameter. If it does, kubectl leaves validation to the
//!   server and sends `?fieldValidation=Strict` (its default `--validate=strict`);
//! - client-side `apply` looks for `application/strategic-merge-patch+json` among the PATCH
//!   operation's content types to decide whether it may compute a strategic merge patch
//!   from these schemas. kulisse's schemas carry no `x-kubernetes-patch-merge-key`
//!   annotations, so that content type is not advertised, and kubectl falls back to the
//!   merge keys compiled into its own copy of the Kubernetes types (which are exact).
//!
//! The schemas come from the `k8s-openapi` crate (its `schemars` feature), generated from the
//! same Kubernetes release as kulisse's types, with their original names
//! (`io.k8s.api.apps.v1.Deployment`) and descriptions.
//!
//! ## Field validation
//! Kubernetes decodes a request body into its Go type. A field the type does not have (a
//! typo such as `replicass`) cannot be stored: the `fieldValidation` parameter says what to
//! do about it ([`check_unknown_fields`]):
//! - `Strict`: reject the request (`400 BadRequest`, `strict decoding error: unknown field
//!   "spec.replicass"`), as kubectl's default does;
//! - `Warn` (the server's default): drop the field and say so in a `Warning` response header,
//!   which kubectl prints as `Warning: unknown field "spec.replicass"`;
//! - `Ignore`: drop the field silently.
//!
//! kulisse keeps objects as raw JSON, so it walks the object along the schema to find the
//! fields the schema does not declare.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::{Body, Ctx, KUBERNETES_VERSION};
use crate::objects::{ApiError, RESOURCES, ResourceInfo, StatusCause, Subresource};

/// The generated documents, built once on first use.
struct Documents {
    /// Every schema, by its Kubernetes name (`io.k8s.api.apps.v1.Deployment`).
    schemas: Map<String, Value>,
    /// The per group-version documents, by their path (`api/v1`, `apis/apps/v1`), with hash.
    group_versions: Vec<(String, Value, String)>,
}

fn documents() -> &'static Documents {
    static DOCS: OnceLock<Documents> = OnceLock::new();
    DOCS.get_or_init(build)
}

/// Build the OpenAPI documents now (they are otherwise built on first use), so the first
/// write requests do not wait for them.
pub fn warm() {
    documents();
}

/// The Kubernetes name of the schema of a kind: `io.k8s.api.<group package>.<version>.<Kind>`.
/// The core group's package is `core`; other groups use their first label
/// (`coordination.k8s.io` → `coordination`).
pub fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let package = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("io.k8s.api.{package}.{version}.{kind}")
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

fn generate_schemas() -> Map<String, Value> {
    use k8s_openapi::api::{
        apps::v1 as apps, autoscaling::v1 as autoscaling, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, rbac::v1 as rbac,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    macro_rules! register {
        ($($t:ty),* $(,)?) => { $( generator.subschema_for::<$t>(); )* };
    }
    // One line per kind kulisse serves (see `objects::RESOURCES`), plus what the
    // subresources and errors speak: Scale, Binding, Status, DeleteOptions.
    register!(
        core::ConfigMap,
        core::Endpoints,
        core::Event,
        core::Namespace,
        core::Node,
        core::Pod,
        core::Secret,
        core::Service,
        core::ServiceAccount,
        core::Binding,
        k8s_openapi::api::authentication::v1::TokenRequest,
        apps::Deployment,
        apps::ReplicaSet,
        coordination::Lease,
        discovery::EndpointSlice,
        rbac::Role,
        rbac::ClusterRole,
        rbac::RoleBinding,
        rbac::ClusterRoleBinding,
        autoscaling::Scale,
        meta::Status,
        meta::DeleteOptions,
        meta::ListMeta,
    );
    let mut schemas = generator.take_definitions(true);
    // Lists (`PodList`) are one generic type in k8s-openapi; write their schemas out.
    for r in RESOURCES {
        let item = schema_name(r.group, r.version, r.kind);
        schemas.insert(
            format!("{item}List"),
            json!({
                "description": format!("{}List is a list of {} objects.", r.kind, r.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
                    "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
                    "items": {"description": format!("List of {}.", r.plural), "type": "array", "items": {"allOf": [{"$ref": format!("#/components/schemas/{item}")}], "default": {}}},
                    "metadata": {"description": "Standard list metadata.", "allOf": [{"$ref": format!("#/components/schemas/{META}.ListMeta")}], "default": {}},
                },
            }),
        );
    }
    // Tell clients which schema is which kind, as kube-apiserver does.
    let mut tag = |name: String, group: &str, version: &str, kind: &str| {
        if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    };
    for r in RESOURCES {
        tag(schema_name(r.group, r.version, r.kind), r.group, r.version, r.kind);
        tag(
            format!("{}List", schema_name(r.group, r.version, r.kind)),
            r.group,
            r.version,
            &r.list_kind(),
        );
    }
    tag(schema_name("", "v1", "Binding"), "", "v1", "Binding");
    tag(schema_name("autoscaling", "v1", "Scale"), "autoscaling", "v1", "Scale");
    tag(format!("{META}.Status"), "", "v1", "Status");
    tag(format!("{META}.DeleteOptions"), "", "v1", "DeleteOptions");
    schemas
}

fn build() -> Documents {
    let schemas = generate_schemas();
    // One document per group-version of discovery. (`Scale`, of `autoscaling/v1`, is
    // served only as the `scale` subresource of apps/v1, and described in that document.)
    let gvs: BTreeSet<(&str, &str)> = RESOURCES.iter().map(|r| (r.group, r.version)).collect();
    let group_versions = gvs
        .into_iter()
        .map(|(group, version)| {
            let path = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let doc = group_version_document(&schemas, group, version);
            let hash = fnv_hex(&serde_json::to_vec(&doc).unwrap_or_default());
            (path, doc, hash)
        })
        .collect();
    Documents {
        schemas,
        group_versions,
    }
}

/// A stable content hash (FNV-1a, 64 bit) for the `?hash=` of the index.
fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The media types a body of schema `name` is read and written in: JSON and YAML always,
/// Kubernetes protobuf when the kind has a protobuf schema (see `objects::protobuf`).
fn json_content(name: &str) -> Value {
    let mut content =
        json!({"application/json": {"schema": schema_ref(name)}, "application/yaml": {"schema": schema_ref(name)}});
    if crate::objects::protobuf::has_openapi_message(name) {
        content[crate::objects::protobuf::MEDIA_TYPE] = json!({"schema": schema_ref(name)});
    }
    content
}

fn query(name: &str, description: &str, kind: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": kind, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid value: All.",
            "string",
        ),
        query(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
            "string",
        ),
        query(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default) and Strict.",
            "string",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels.",
            "string",
        ),
        query(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields.",
            "string",
        ),
        query(
            "limit",
            "The maximum number of responses to return for a list call.",
            "integer",
        ),
        query("continue", "The continue token from a previous paged list.", "string"),
        query("resourceVersion", "Where to start a list or watch.", "string"),
        query(
            "resourceVersionMatch",
            "How resourceVersion applies to a list: Exact or NotOlderThan.",
            "string",
        ),
        query(
            "sendInitialEvents",
            "With watch=true and resourceVersionMatch=NotOlderThan: the current state as ADDED events, then a bookmark.",
            "boolean",
        ),
        query("watch", "Watch for changes to the described resources.", "boolean"),
        query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
        query(
            "allowWatchBookmarks",
            "Requests watch events with type BOOKMARK.",
            "boolean",
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn operation(
    action: &str,
    op_id: String,
    description: String,
    gvk: &Value,
    params: Vec<Value>,
    body: Option<Value>,
    response: &str,
) -> Value {
    let mut op = json!({
        "operationId": op_id,
        "description": description,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": json_content(response)}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if let Some(body) = body {
        op["requestBody"] = json!({"required": true, "content": body});
    }
    op
}

fn patch_body() -> Value {
    // No application/strategic-merge-patch+json: see the module doc.
    json!({
        "application/json-patch+json": {"schema": schema_ref(&format!("{META}.Patch"))},
        "application/merge-patch+json": {"schema": schema_ref(&format!("{META}.Patch"))},
        "application/apply-patch+yaml": {"schema": schema_ref(&format!("{META}.Patch"))},
    })
}

/// The paths of one resource: collection, object and subresources.
fn resource_paths(r: &ResourceInfo, paths: &mut Map<String, Value>) {
    let p = ResourcePaths::of(r);
    p.collection(paths);
    p.object(paths);
    if r.has(Subresource::Status) {
        p.status(paths);
    }
    if r.has(Subresource::Scale) {
        p.scale(paths);
    }
    if r.has(Subresource::Binding) {
        p.binding(paths);
    }
    if r.has(Subresource::Log) {
        p.log(paths);
    }
    if r.has(Subresource::Token) {
        p.token(paths);
    }
}

/// What the paths of one resource have in common: its URL prefix, schema names and
/// upstream's operation ids (`listNamespacedPod`, `readAppsV1NamespacedDeploymentScale`).
struct ResourcePaths<'a> {
    r: &'a ResourceInfo,
    prefix: String,
    item: String,
    gvk: Value,
    object: String,
}

impl<'a> ResourcePaths<'a> {
    fn of(r: &'a ResourceInfo) -> Self {
        let prefix = format!("/{}", r.api_prefix().trim_start_matches('/'));
        let object = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        ResourcePaths {
            r,
            item: schema_name(r.group, r.version, r.kind),
            gvk: json!({"group": r.group, "version": r.version, "kind": r.kind}),
            prefix,
            object,
        }
    }

    fn id(&self, verb: &str, suffix: &str) -> String {
        let r = self.r;
        let mut kind = r.kind.to_string();
        if !r.group.is_empty() {
            kind = format!("{}{}{kind}", r.group.split('.').next().unwrap_or(""), r.version);
        }
        format!("{verb}{}{kind}{suffix}", if r.namespaced { "Namespaced" } else { "" })
    }

    fn scope(&self, extra: Vec<Value>) -> Vec<Value> {
        let mut p = Vec::new();
        if self.r.namespaced {
            p.push(path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        p.extend(extra);
        p
    }

    fn name_param(&self) -> Value {
        path_param("name", &format!("name of the {}", self.r.kind))
    }

    fn collection(&self, paths: &mut Map<String, Value>) {
        let (r, prefix) = (self.r, &self.prefix);
        let list = format!("{}List", self.item);
        let collection = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        paths.insert(
            collection,
            json!({
                "parameters": self.scope(vec![]),
                "get": operation("list", self.id("list", ""), format!("list or watch objects of kind {}", self.r.kind), &self.gvk, list_params(), None, &list),
                "post": operation("post", self.id("create", ""), format!("create a {}", self.r.kind), &self.gvk, write_params(), Some(json_content(&self.item)), &self.item),
                "delete": operation("deletecollection", self.id("deleteCollection", ""), format!("delete collection of {}", self.r.kind), &self.gvk, list_params(), None, &format!("{META}.Status")),
            }),
        );
        if r.namespaced {
            paths.insert(
                format!("{prefix}/{}", r.plural),
                json!({"get": operation("list", format!("list{}ForAllNamespaces", self.r.kind), format!("list or watch objects of kind {} in all namespaces", self.r.kind), &self.gvk, list_params(), None, &list)}),
            );
        }
    }

    fn object(&self, paths: &mut Map<String, Value>) {
        paths.insert(
            self.object.clone(),
            json!({
                "parameters": self.scope(vec![self.name_param()]),
                "get": operation("get", self.id("read", ""), format!("read the specified {}", self.r.kind), &self.gvk, vec![], None, &self.item),
                "put": operation("put", self.id("replace", ""), format!("replace the specified {}", self.r.kind), &self.gvk, write_params(), Some(json_content(&self.item)), &self.item),
                "patch": operation("patch", self.id("patch", ""), format!("partially update the specified {}", self.r.kind), &self.gvk, write_params(), Some(patch_body()), &self.item),
                "delete": operation("delete", self.id("delete", ""), format!("delete a {}", self.r.kind), &self.gvk, vec![query("propagationPolicy", "Whether and how garbage collection will be performed: Orphan, Background or Foreground.", "string")], Some(json_content(&format!("{META}.DeleteOptions"))), &format!("{META}.Status")),
            }),
        );
    }

    fn status(&self, paths: &mut Map<String, Value>) {
        paths.insert(
            format!("{}/status", self.object),
            json!({
                "parameters": self.scope(vec![self.name_param()]),
                "get": operation("get", self.id("read", "Status"), format!("read status of the specified {}", self.r.kind), &self.gvk, vec![], None, &self.item),
                "put": operation("put", self.id("replace", "Status"), format!("replace status of the specified {}", self.r.kind), &self.gvk, write_params(), Some(json_content(&self.item)), &self.item),
                "patch": operation("patch", self.id("patch", "Status"), format!("partially update status of the specified {}", self.r.kind), &self.gvk, write_params(), Some(patch_body()), &self.item),
            }),
        );
    }

    fn scale(&self, paths: &mut Map<String, Value>) {
        let scale = schema_name("autoscaling", "v1", "Scale");
        let sgvk = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        paths.insert(
            format!("{}/scale", self.object),
            json!({
                "parameters": self.scope(vec![self.name_param()]),
                "get": operation("get", self.id("read", "Scale"), format!("read scale of the specified {}", self.r.kind), &sgvk, vec![], None, &scale),
                "put": operation("put", self.id("replace", "Scale"), format!("replace scale of the specified {}", self.r.kind), &sgvk, write_params(), Some(json_content(&scale)), &scale),
                "patch": operation("patch", self.id("patch", "Scale"), format!("partially update scale of the specified {}", self.r.kind), &sgvk, write_params(), Some(patch_body()), &scale),
            }),
        );
    }

    fn binding(&self, paths: &mut Map<String, Value>) {
        let binding = ("", "Binding", "createNamespacedPodBinding", "create binding of a Pod");
        self.create_only(paths, "binding", binding);
    }

    fn token(&self, paths: &mut Map<String, Value>) {
        let request = (
            "authentication.k8s.io",
            "TokenRequest",
            "createNamespacedServiceAccountToken",
            "create token of a ServiceAccount",
        );
        self.create_only(paths, "token", request);
    }

    /// A subresource that only answers POST with a v1 object of its own kind (`pods/binding`,
    /// `serviceaccounts/token`): (group, kind, operation id, description).
    fn create_only(
        &self,
        paths: &mut Map<String, Value>,
        sub: &str,
        (group, kind, op_id, what): (&str, &str, &str, &str),
    ) {
        let gvk = json!({"group": group, "version": "v1", "kind": kind});
        let schema = schema_name(group, "v1", kind);
        paths.insert(
            format!("{}/{sub}", self.object),
            json!({
                "parameters": self.scope(vec![self.name_param()]),
                "post": operation("post", op_id.into(), what.into(), &gvk, write_params(), Some(json_content(&schema)), &schema),
            }),
        );
    }

    fn log(&self, paths: &mut Map<String, Value>) {
        paths.insert(
            format!("{}/log", self.object),
            json!({
                "parameters": self.scope(vec![self.name_param()]),
                "get": {
                    "operationId": "readNamespacedPodLog",
                    "description": "read log of the specified Pod",
                    "parameters": [
                        query("container", "The container for which to stream logs.", "string"),
                        query("follow", "Follow the log stream of the pod.", "boolean"),
                        query("previous", "Return previous terminated container logs.", "boolean"),
                        query("tailLines", "The number of lines from the end of the logs to show.", "integer"),
                        query("timestamps", "Add an RFC3339 timestamp at the beginning of every line.", "boolean"),
                        query("sinceSeconds", "Only return logs newer than this many seconds.", "integer"),
                    ],
                    "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                    "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": self.gvk,
                },
            }),
        );
    }
}

/// Every schema name `value` refers to (`$ref`), recursively.
fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    if let Some(name) = v.as_str().and_then(|s| s.strip_prefix("#/components/schemas/")) {
                        out.push(name.to_string());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The OpenAPI v3 document of one group-version: its paths, and every schema they need.
fn group_version_document(schemas: &Map<String, Value>, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        resource_paths(r, &mut paths);
    }
    let mut wanted: Vec<String> = Vec::new();
    collect_refs(&Value::Object(paths.clone()), &mut wanted);
    wanted.push(format!("{META}.Status"));
    let mut components = Map::new();
    while let Some(name) = wanted.pop() {
        if components.contains_key(&name) {
            continue;
        }
        if let Some(schema) = schemas.get(&name) {
            collect_refs(schema, &mut wanted);
            components.insert(name, schema.clone());
        } else if name == format!("{META}.Patch") {
            components.insert(
                name,
                json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
            );
        }
    }
    let (major, minor) = KUBERNETES_VERSION;
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kulisse)", "version": format!("v{major}.{minor}.0")},
        "paths": paths,
        "components": {"schemas": components},
    })
}

fn json_with(status: StatusCode, value: &Value, cache: &str) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, cache)
        .body(Full::new(bytes::Bytes::from(bytes)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(bytes::Bytes::new()).boxed()))
}

/// `GET /openapi/v3`: the index of per group-version documents.
pub fn index() -> Result<Response<Body>, ApiError> {
    let mut paths = Map::new();
    for (path, _, hash) in &documents().group_versions {
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    Ok(json_with(StatusCode::OK, &json!({"paths": paths}), "no-cache, private"))
}

/// `GET /openapi/v3/<path>` (`api/v1`, `apis/apps/v1`): one group-version's document.
pub fn group_version(path: &str) -> Result<Response<Body>, ApiError> {
    let path = path.trim_matches('/');
    let (_, doc, _) = documents()
        .group_versions
        .iter()
        .find(|(p, _, _)| p == path)
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource: no OpenAPI document for {path:?}; /openapi/v3 lists them"),
            )
        })?;
    // The URL carries the content hash: the answer never changes, so clients may cache it.
    Ok(json_with(StatusCode::OK, doc, "public, immutable"))
}

/// The schema of a kind, if kulisse has one.
fn kind_schema(info: &ResourceInfo) -> Option<&'static Value> {
    documents()
        .schemas
        .get(&schema_name(info.group, info.version, info.kind))
}

/// Follow `$ref` and `allOf: [{$ref}]` to the schema that says what a value looks like.
fn resolve<'a>(schemas: &'a Map<String, Value>, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let next = schema
            .get("$ref")
            .or_else(|| {
                schema
                    .get("allOf")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find_map(|s| s.get("$ref")))
            })
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .and_then(|name| schemas.get(name));
        match next {
            Some(s) => schema = s,
            None => break,
        }
    }
    schema
}

/// Walk `value` along `schema`; record (and, with `prune`, remove) the fields the schema
/// does not declare, as JSON paths in Kubernetes' style (`spec.template.spec.containers[0].imagee`).
fn walk(
    schemas: &Map<String, Value>,
    schema: &Value,
    value: &mut Value,
    path: &str,
    prune: bool,
    out: &mut Vec<String>,
) {
    let schema = resolve(schemas, schema);
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let mut unknown = Vec::new();
                for (k, v) in map.iter_mut() {
                    match props.get(k) {
                        Some(s) => walk(schemas, s, v, &join(k), prune, out),
                        None => {
                            out.push(join(k));
                            unknown.push(k.clone());
                        }
                    }
                }
                if prune {
                    for k in unknown {
                        map.shift_remove(&k);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                for (k, v) in map.iter_mut() {
                    walk(schemas, ap, v, &format!("{path}[{k}]"), prune, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(schemas, is, v, &format!("{path}[{i}]"), prune, out);
                }
            }
        }
        _ => {}
    }
}

/// The fields of `obj` that `info`'s schema does not declare (empty if kulisse has no schema
/// for the kind).
pub fn unknown_fields(info: &ResourceInfo, obj: &Value) -> Vec<String> {
    let mut copy = obj.clone();
    let mut out = Vec::new();
    if let Some(schema) = kind_schema(info) {
        walk(&documents().schemas, schema, &mut copy, "", false, &mut out);
    }
    out
}

/// What the request asked for with `?fieldValidation=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// The request's directive; `Warn` when it sets none, as in Kubernetes.
    pub fn of(ctx: &Ctx<'_>) -> Result<Self, ApiError> {
        match ctx.param("fieldValidation") {
            None => Ok(FieldValidation::Warn),
            Some(v) if v.eq_ignore_ascii_case("strict") => Ok(FieldValidation::Strict),
            Some(v) if v.eq_ignore_ascii_case("warn") => Ok(FieldValidation::Warn),
            Some(v) if v.eq_ignore_ascii_case("ignore") => Ok(FieldValidation::Ignore),
            Some(v) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {v:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Apply the request's field validation to the object about to be written: with `Strict`,
/// unknown fields fail the request (with the answer kube-apiserver gives for this kind of
/// request); otherwise they are removed, and with `Warn` reported as warnings.
pub fn check_unknown_fields(ctx: &Ctx<'_>, info: &ResourceInfo, name: &str, obj: &mut Value) -> Result<(), ApiError> {
    let directive = FieldValidation::of(ctx)?;
    let Some(schema) = kind_schema(info) else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    let prune = directive != FieldValidation::Strict;
    walk(&documents().schemas, schema, obj, "", prune, &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    tracing::info!(kind = info.kind, name, fields = ?unknown, directive = ?directive, "unknown fields in request");
    let listed: Vec<String> = unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
    match directive {
        FieldValidation::Ignore => Ok(()),
        FieldValidation::Warn => {
            ctx.warn_all(listed);
            Ok(())
        }
        FieldValidation::Strict => {
            let strict = format!("strict decoding error: {}", listed.join(", "));
            Err(match ctx.content_type() {
                Some("application/apply-patch+yaml") => {
                    ApiError::bad_request(format!("error strict decoding YAML: {}", listed.join(", ")))
                }
                Some(ct) if ct.ends_with("patch+json") => ApiError::invalid(
                    info,
                    name,
                    vec![StatusCause {
                        reason: "FieldValueInvalid".into(),
                        message: format!("Invalid value: the patched object: {strict}"),
                        field: "patch".into(),
                    }],
                ),
                _ => ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: {strict}",
                    info.kind, info.version, info.kind
                )),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_schema_with_its_gvk() {
        for r in RESOURCES {
            let s = kind_schema(r).unwrap_or_else(|| panic!("no schema for {}", r.kind));
            assert_eq!(s["x-kubernetes-group-version-kind"][0]["kind"], r.kind, "{}", r.kind);
        }
    }

    #[test]
    fn finds_typos_with_kubernetes_paths() {
        let info = crate::objects::by_gvk("apps/v1", "Deployment").unwrap();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "b"}},
            "spec": {"replicass": 2, "selector": {"matchLabels": {"app": "web"}},
              "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i", "imagee": "x", "resources": {"limits": {"cpu": "1"}}}]}}},
            "status": {"replicas": 1}});
        assert_eq!(
            unknown_fields(info, &d),
            vec![
                "spec.replicass".to_string(),
                "spec.template.spec.containers[0].imagee".to_string()
            ]
        );
    }

    #[test]
    fn index_and_documents_agree() {
        let docs = documents();
        let apps = docs
            .group_versions
            .iter()
            .find(|(p, _, _)| p == "apis/apps/v1")
            .expect("apps/v1 document");
        let doc = &apps.1;
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        // Every schema a document refers to is in it.
        let mut refs = Vec::new();
        collect_refs(doc, &mut refs);
        for r in refs {
            assert!(doc["components"]["schemas"].get(&r).is_some(), "{r} missing");
        }
        assert!(
            doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"].is_object()
        );
    }

    #[test]
    fn protobuf_is_advertised_only_where_it_is_served() {
        let docs = documents();
        let apps = &docs
            .group_versions
            .iter()
            .find(|(p, _, _)| p == "apis/apps/v1")
            .expect("apps/v1")
            .1;
        let object = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        let media = crate::objects::protobuf::MEDIA_TYPE;
        assert!(object["get"]["responses"]["200"]["content"].get(media).is_some());
        assert!(object["put"]["requestBody"]["content"].get(media).is_some());
        // autoscaling/v1 Scale has no vendored protobuf schema: JSON and YAML only.
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert!(scale["get"]["responses"]["200"]["content"].get(media).is_none());
        assert!(
            scale["get"]["responses"]["200"]["content"]
                .get("application/json")
                .is_some()
        );
    }
}
