//! # Strategic merge patch (mirrors `k8s.io/apimachinery/pkg/util/strategicpatch`)
//!
//! `PATCH` with `Content-Type: application/strategic-merge-patch+json` is Kubernetes' own
//! patch language. `kubectl patch` sends it by default, and client-side `kubectl apply`
//! computes one from three documents (the last applied configuration kept in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, the file, and the live
//! object). The API server only *applies* it; that is what this module does.
//!
//! ## Why not a plain JSON merge patch?
//! A JSON merge patch (RFC 7386) merges maps but **replaces lists**. Sending
//! `{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}` would throw away every other
//! container and every other field of `web`. Kubernetes knows that `containers` is really a
//! *map keyed by `name`* written as a list, so a strategic merge patch merges the item whose
//! `name` is `web` and leaves the rest alone.
//!
//! Which lists merge, and by which field, comes from the Go struct tags of the Kubernetes
//! types (`patchStrategy:"merge" patchMergeKey:"name"`). kulisse has no Go structs, so the
//! tags for the kinds it serves are written down once, in [`LIST_STRATEGIES`] (see
//! [`list_strategy`]). A list that is not in the table is **atomic**: the patch replaces it
//! whole, as it does for `tolerations`, `args` or a Service's `externalIPs` in Kubernetes.
//!
//! ## The rules
//! - Maps merge key by key, recursively. `"field": null` deletes the field.
//! - A list merged **by key** (`containers` by `name`, container `ports` by
//!   `containerPort`, ...): each patch item is merged into the live item with the same key;
//!   items with a new key are added. Every patch item must carry the key.
//! - A list merged **as a set** (`metadata.finalizers`): values are added if missing.
//! - Any other list is replaced.
//!
//! Order of a merged list (as kube-apiserver does it): items named by the patch keep the
//! patch's order, items only the server has keep theirs, and the two are interleaved by
//! their position in the live list. An item the live list did not have comes **before** the
//! remaining server-only items: `kubectl patch` adding a container puts it first.
//!
//! ## Directives (keys starting with `$`; they never end up in the stored object)
//! - `{"$patch": "replace", ...}` in a map: the map becomes exactly the rest of this map.
//! - `{"$patch": "delete"}` as a map's value: the field is removed.
//! - `{"$patch": "merge"}`: the default, written out.
//! - In a list merged by key: `{"name": "sidecar", "$patch": "delete"}` deletes that item;
//!   an item that is only `{"$patch": "replace"}` makes the list exactly the other items.
//! - `"$retainKeys": ["type"]` in a map: after merging, keep only the listed fields. kubectl
//!   sends it for fields whose variants exclude each other, e.g. a Deployment's
//!   `strategy` going from `RollingUpdate` to `Recreate` must lose `rollingUpdate`.
//! - `"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}]`: the order of the
//!   merged list (kubectl sends it with every list change it computes).
//! - `"$deleteFromPrimitiveList/finalizers": ["x"]`: remove values from a list merged as a set.
//!
//! A patch that is not well formed (a directive of the wrong type) is a `400 BadRequest`; a
//! patch that does not fit the object (an item without its merge key, a field outside
//! `$retainKeys`, an unknown directive) is a `422 Invalid`.
//!
//! ## Where kulisse differs
//! - kube-apiserver turns `{"$patch": "delete"}` on a map into an empty map `{}`; kulisse
//!   removes the field, which is what the directive says.
//! - Directives inside values that the live object did not have yet are applied (and so
//!   removed) too, instead of being copied in and dropped later by the typed decoder.
//! - A list item `{"name": "x", "$patch": "replace"}` (with other fields) is rejected:
//!   Kubernetes would silently drop that item and replace the whole list.
//! - `$patch: merge` is accepted wherever `$patch` is.

// `ApiError` is built only on the (cold) error path.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::{ApiError, ResourceInfo, StatusCause};

/// How a list field is patched (Kubernetes' `patchStrategy` / `patchMergeKey` struct tags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// A list of objects, each identified by this field (`patchMergeKey`), merged item by
    /// item (`patchStrategy:"merge"`).
    MergeByKey(&'static str),
    /// A list of plain values merged as a set (`patchStrategy:"merge"` on `[]string`).
    MergeSet,
}

use ListStrategy::{MergeByKey, MergeSet};

/// The tagged lists of one Kubernetes type: field name → strategy.
type Table = &'static [(&'static str, ListStrategy)];

/// `ObjectMeta`, in every object (`metadata`) and in pod templates (`spec.template.metadata`).
const OBJECT_META: &[(&str, ListStrategy)] = &[("finalizers", MergeSet), ("ownerReferences", MergeByKey("uid"))];

/// `Container` (and `EphemeralContainer`, which has the same tags).
const CONTAINER: &[(&str, ListStrategy)] = &[
    ("ports", MergeByKey("containerPort")),
    ("env", MergeByKey("name")),
    ("volumeMounts", MergeByKey("mountPath")),
    ("volumeDevices", MergeByKey("devicePath")),
];

/// `PodSpec`, in Pods (`spec`) and in pod templates (`spec.template.spec`). `tolerations`
/// and `readinessGates` have no tags: they are atomic.
const POD_SPEC: &[(&str, ListStrategy)] = &[
    ("volumes", MergeByKey("name")),
    ("initContainers", MergeByKey("name")),
    ("containers", MergeByKey("name")),
    ("ephemeralContainers", MergeByKey("name")),
    ("imagePullSecrets", MergeByKey("name")),
    ("hostAliases", MergeByKey("ip")),
    ("topologySpreadConstraints", MergeByKey("topologyKey")),
    ("schedulingGates", MergeByKey("name")),
    ("resourceClaims", MergeByKey("name")),
];

/// The lists of `PodSpec` whose items are containers.
const CONTAINER_LISTS: &[&str] = &["initContainers", "containers", "ephemeralContainers"];

/// `PodStatus`.
const POD_STATUS: &[(&str, ListStrategy)] = &[
    ("conditions", MergeByKey("type")),
    ("podIPs", MergeByKey("ip")),
    ("hostIPs", MergeByKey("ip")),
    ("resourceClaimStatuses", MergeByKey("name")),
];

/// Status types whose only tagged list is `conditions` (Deployment, ReplicaSet, Namespace,
/// Service).
const CONDITIONS: &[(&str, ListStrategy)] = &[("conditions", MergeByKey("type"))];

/// `NodeSpec` (`taints` has no tags: atomic).
const NODE_SPEC: &[(&str, ListStrategy)] = &[("podCIDRs", MergeSet)];

/// `NodeStatus`.
const NODE_STATUS: &[(&str, ListStrategy)] = &[("conditions", MergeByKey("type")), ("addresses", MergeByKey("type"))];

/// `ServiceSpec` (`externalIPs`, `clusterIPs`, `ipFamilies` are atomic).
const SERVICE_SPEC: &[(&str, ListStrategy)] = &[("ports", MergeByKey("port"))];

/// Where each kind embeds the tables above: `(kind, path prefix, table)`. `metadata` is
/// added for every kind. ConfigMap, Endpoints (`subsets` is atomic), Event and Lease have no
/// other merged lists.
const EMBEDDINGS: &[(&str, &str, Table)] = &[
    ("Pod", "status", POD_STATUS),
    ("Deployment", "spec.template.metadata", OBJECT_META),
    ("Deployment", "status", CONDITIONS),
    ("ReplicaSet", "spec.template.metadata", OBJECT_META),
    ("ReplicaSet", "status", CONDITIONS),
    ("Service", "spec", SERVICE_SPEC),
    ("Service", "status", CONDITIONS),
    ("Node", "spec", NODE_SPEC),
    ("Node", "status", NODE_STATUS),
    ("Namespace", "status", CONDITIONS),
];

/// Where each kind has a `PodSpec`.
const POD_SPECS: &[(&str, &str)] = &[
    ("Pod", "spec"),
    ("Deployment", "spec.template.spec"),
    ("ReplicaSet", "spec.template.spec"),
];

/// **The merge-key table**: kind → JSON path pattern → strategy, e.g.
/// `Deployment` / `spec.template.spec.containers[*].env` → merge by `name`.
/// `[*]` stands for "any item of the list". Built once from the per-type tables above, so
/// a `PodSpec` has the same rules in a Pod, a Deployment and a ReplicaSet.
pub static LIST_STRATEGIES: LazyLock<HashMap<&'static str, HashMap<String, ListStrategy>>> = LazyLock::new(|| {
    let mut all: HashMap<&'static str, HashMap<String, ListStrategy>> = HashMap::new();
    fn add(t: &mut HashMap<String, ListStrategy>, prefix: &str, table: &[(&str, ListStrategy)]) {
        for (field, strategy) in table {
            t.insert(format!("{prefix}.{field}"), *strategy);
        }
    }
    for info in super::RESOURCES {
        add(all.entry(info.kind).or_default(), "metadata", OBJECT_META);
    }
    for (kind, prefix, table) in EMBEDDINGS {
        add(all.entry(kind).or_default(), prefix, table);
    }
    for (kind, prefix) in POD_SPECS {
        let t = all.entry(kind).or_default();
        add(t, prefix, POD_SPEC);
        for list in CONTAINER_LISTS {
            add(t, &format!("{prefix}.{list}[*]"), CONTAINER);
        }
    }
    all
});

/// How the list at `path` (a pattern such as `spec.template.spec.containers[*].env`) of a
/// `kind` is patched; `None`: the list is atomic and a patch replaces it.
pub fn list_strategy(kind: &str, path: &str) -> Option<ListStrategy> {
    LIST_STRATEGIES.get(kind)?.get(path).copied()
}

/// A strategic merge patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    /// `400` (the patch is malformed) or `422` (it does not fit the object).
    pub code: u16,
    /// Where in the object, e.g. `spec.template.spec.containers[name=web].env[1]`.
    pub field: String,
    /// What was expected.
    pub message: String,
}

impl PatchError {
    fn bad(field: &Loc, message: impl Into<String>) -> PatchError {
        PatchError {
            code: 400,
            field: field.shown.clone(),
            message: message.into(),
        }
    }

    fn invalid(field: &Loc, message: impl Into<String>) -> PatchError {
        PatchError {
            code: 422,
            field: field.shown.clone(),
            message: message.into(),
        }
    }

    /// The `Status` the API server answers with.
    pub fn into_api_error(self, info: &ResourceInfo, name: &str) -> ApiError {
        let field = if self.field.is_empty() {
            "<patch>".to_string()
        } else {
            self.field
        };
        if self.code == 422 {
            ApiError::invalid(
                info,
                name,
                vec![StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("strategic merge patch: {}", self.message),
                    field,
                }],
            )
        } else {
            ApiError::bad_request(format!(
                "the strategic merge patch is malformed at {field}: {}",
                self.message
            ))
        }
    }
}

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for PatchError {}

/// Apply a strategic merge `patch` to `original`, an object of `kind`. Returns the new
/// object; `original` is not changed.
pub fn apply(kind: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let root = Loc {
        kind,
        pattern: String::new(),
        shown: String::new(),
    };
    let Value::Object(p) = patch else {
        return Err(PatchError::bad(
            &root,
            format!(
                "a strategic merge patch is a JSON object such as {{\"spec\":{{...}}}}, not {}",
                type_name(patch)
            ),
        ));
    };
    match merge_map(original.as_object(), p, &root)? {
        Merged::Map(m) => Ok(Value::Object(m)),
        Merged::Delete => Err(PatchError::invalid(
            &root,
            "`$patch: delete` at the top of the patch would delete the whole object; use DELETE (kubectl delete) for that",
        )),
    }
}

/// Where the merge is in the object: the pattern for [`list_strategy`] and the path shown
/// in error messages.
struct Loc<'a> {
    kind: &'a str,
    /// `spec.template.spec.containers[*].env`
    pattern: String,
    /// `spec.template.spec.containers[name=web].env`
    shown: String,
}

impl<'a> Loc<'a> {
    fn field(&self, name: &str) -> Loc<'a> {
        let join = |base: &str| {
            if base.is_empty() {
                name.to_string()
            } else {
                format!("{base}.{name}")
            }
        };
        Loc {
            kind: self.kind,
            pattern: join(&self.pattern),
            shown: join(&self.shown),
        }
    }

    fn item(&self, label: String) -> Loc<'a> {
        Loc {
            kind: self.kind,
            pattern: format!("{}[*]", self.pattern),
            shown: format!("{}[{label}]", self.shown),
        }
    }

    fn strategy(&self) -> Option<ListStrategy> {
        list_strategy(self.kind, &self.pattern)
    }
}

/// The result of merging into a map: the map, or "remove this field" (`$patch: delete`).
enum Merged {
    Map(Map<String, Value>),
    Delete,
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// JSON equality, except that numbers compare by value (`80` equals `80.0`, as they do in
/// Kubernetes' Go code, where every JSON number is a float64).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64()),
        _ => a == b,
    }
}

fn position(list: &[Value], v: &Value) -> Option<usize> {
    list.iter().position(|x| same(x, v))
}

/// `"web"`, `80`: a merge-key value for messages and paths.
fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a map's `$patch` asks for.
enum MapDirective {
    Merge,
    Replace,
    Delete,
}

fn map_directive(patch: &Map<String, Value>, loc: &Loc) -> Result<MapDirective, PatchError> {
    let Some(directive) = patch.get(PATCH) else {
        return Ok(MapDirective::Merge);
    };
    match directive.as_str() {
        Some("replace") => Ok(MapDirective::Replace),
        Some("delete") => Ok(MapDirective::Delete),
        Some("merge") => Ok(MapDirective::Merge),
        _ => Err(PatchError::invalid(
            &loc.field(PATCH),
            format!("unknown patch directive {directive}: `$patch` is one of \"replace\", \"delete\" or \"merge\""),
        )),
    }
}

/// Merge `patch` into `original` (absent: merge into nothing, which still applies, and so
/// removes, every directive). Upstream's `mergeMap`.
fn merge_map(
    original: Option<&Map<String, Value>>,
    patch: &Map<String, Value>,
    loc: &Loc,
) -> Result<Merged, PatchError> {
    match map_directive(patch, loc)? {
        MapDirective::Replace => {
            let mut rest = patch.clone();
            rest.shift_remove(PATCH);
            return merge_map(None, &rest, loc);
        }
        MapDirective::Delete => return Ok(Merged::Delete),
        MapDirective::Merge => {}
    }
    let mut out = original.cloned().unwrap_or_default();
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        apply_retain_keys(&mut out, retain, patch, loc)?;
    }

    // `$setElementOrder/<list>` needs the list as it was before the patch.
    let mut orders: Vec<(&str, &Value, Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) {
            if field.is_empty() {
                return Err(PatchError::bad(
                    &loc.field(k),
                    "`$setElementOrder/` must name a list, e.g. `$setElementOrder/containers`",
                ));
            }
            let before = original
                .and_then(|o| o.get(field))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            orders.push((field, v, before));
            continue;
        }
        if k == PATCH || k == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            delete_from_primitive_list(&mut out, field, v, loc)?;
            continue;
        }
        merge_field(&mut out, k, v, loc)?;
    }

    for (field, order, before) in orders {
        set_element_order(&mut out, field, order, &before, patch.get(field), &loc.field(field))?;
    }
    Ok(Merged::Map(out))
}

/// `$retainKeys: [...]`: keep only the listed fields (and refuse a patch that sets others).
fn apply_retain_keys(
    out: &mut Map<String, Value>,
    retain: &Value,
    patch: &Map<String, Value>,
    loc: &Loc,
) -> Result<(), PatchError> {
    let keys = retain_keys(retain, &loc.field(RETAIN_KEYS))?;
    for (k, v) in patch {
        if v.is_null() || k.starts_with('$') {
            continue;
        }
        if !keys.contains(&k.as_str()) {
            return Err(PatchError::invalid(
                &loc.field(k),
                format!(
                    "the patch sets `{k}` but `$retainKeys` ({keys:?}) does not list it: a map with `$retainKeys` keeps only the listed fields"
                ),
            ));
        }
    }
    out.retain(|k, _| keys.contains(&k.as_str()));
    Ok(())
}

/// One field of the patch: `null` deletes it, a map merges, a list merges by the field's
/// strategy, anything else replaces.
fn merge_field(out: &mut Map<String, Value>, k: &str, v: &Value, loc: &Loc) -> Result<(), PatchError> {
    if k.starts_with('$') {
        return Err(PatchError::invalid(
            &loc.field(k),
            format!(
                "unknown directive `{k}`: the directives are `$patch`, `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`"
            ),
        ));
    }
    match v {
        Value::Null => {
            out.shift_remove(k);
        }
        Value::Object(pm) => match merge_map(out.get(k).and_then(Value::as_object), pm, &loc.field(k))? {
            Merged::Map(m) => {
                out.insert(k.to_string(), Value::Object(m));
            }
            Merged::Delete => {
                out.shift_remove(k);
            }
        },
        Value::Array(pl) => {
            let merged = merge_list(out.get(k).and_then(Value::as_array), pl, &loc.field(k))?;
            out.insert(k.to_string(), Value::Array(merged));
        }
        scalar => {
            out.insert(k.to_string(), scalar.clone());
        }
    }
    Ok(())
}

fn retain_keys<'v>(retain: &'v Value, loc: &Loc) -> Result<Vec<&'v str>, PatchError> {
    let not_list = || {
        PatchError::bad(
            loc,
            format!(
                "`$retainKeys` must be a list of field names, e.g. [\"type\"], not {}",
                type_name(retain)
            ),
        )
    };
    let list = retain.as_array().ok_or_else(not_list)?;
    list.iter()
        .map(|v| {
            v.as_str().ok_or_else(|| {
                PatchError::bad(
                    loc,
                    format!("`$retainKeys` holds field names (strings), not {}", type_name(v)),
                )
            })
        })
        .collect()
}

/// `$deleteFromPrimitiveList/<field>: [values]`.
fn delete_from_primitive_list(
    out: &mut Map<String, Value>,
    field: &str,
    values: &Value,
    loc: &Loc,
) -> Result<(), PatchError> {
    let at = loc.field(field);
    if field.is_empty() {
        return Err(PatchError::bad(
            &loc.field(DELETE_FROM_PRIMITIVE_LIST),
            "`$deleteFromPrimitiveList/` must name a list, e.g. `$deleteFromPrimitiveList/finalizers`",
        ));
    }
    let Some(values) = values.as_array() else {
        return Err(PatchError::bad(
            &at,
            format!(
                "`$deleteFromPrimitiveList/{field}` must be a list of the values to remove, not {}",
                type_name(values)
            ),
        ));
    };
    if at.strategy() != Some(MergeSet) {
        return Err(PatchError::invalid(
            &at,
            format!(
                "`$deleteFromPrimitiveList/{field}` only works on a list of values merged as a set (such as metadata.finalizers); {} is not one, so send the whole new list instead",
                at.shown
            ),
        ));
    }
    if let Some(Value::Array(list)) = out.get_mut(field) {
        list.retain(|x| position(values, x).is_none());
    }
    Ok(())
}

/// Merge a patch list into the live list according to the field's [`ListStrategy`].
fn merge_list(original: Option<&Vec<Value>>, patch: &[Value], loc: &Loc) -> Result<Vec<Value>, PatchError> {
    match loc.strategy() {
        None => replace_list(patch, loc),
        Some(MergeSet) => merge_set(original.map(Vec::as_slice).unwrap_or_default(), patch, loc),
        Some(MergeByKey(key)) => merge_keyed(original.map(Vec::as_slice).unwrap_or_default(), patch, key, loc),
    }
}

/// An atomic list: the patch's list is the new list (with any directives in its items
/// applied, so none is stored).
fn replace_list(patch: &[Value], loc: &Loc) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for (i, item) in patch.iter().enumerate() {
        match item {
            Value::Object(m) if m.contains_key(PATCH) => {
                if m.len() == 1 && m.get(PATCH).and_then(Value::as_str) == Some("replace") {
                    continue; // "replace this list": it is replaced anyway
                }
                return Err(PatchError::invalid(
                    &loc.item(i.to_string()),
                    format!(
                        "`$patch` in an item of {}: this list has no merge key in Kubernetes, so a patch replaces it whole and its items cannot carry directives; send the complete new list",
                        loc.shown
                    ),
                ));
            }
            Value::Object(m) => {
                if let Merged::Map(m) = merge_map(None, m, &loc.item(i.to_string()))? {
                    out.push(Value::Object(m));
                }
            }
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

/// A list of values merged as a set (`metadata.finalizers`).
fn merge_set(original: &[Value], patch: &[Value], loc: &Loc) -> Result<Vec<Value>, PatchError> {
    for (i, item) in patch.iter().enumerate() {
        if item.is_object() || item.is_array() {
            return Err(PatchError::invalid(
                &loc.item(i.to_string()),
                format!(
                    "{} is a list of values merged as a set, so its items are plain values, not {}",
                    loc.shown,
                    type_name(item)
                ),
            ));
        }
    }
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for v in original.iter().chain(patch) {
        if position(&merged, v).is_none() {
            merged.push(v.clone());
        }
    }
    Ok(interleave(merged, |v| position(patch, v), |v| position(original, v)))
}

/// The patch's ordinary items of a keyed list, each with its merge-key value.
type KeyedItems<'p> = Vec<(&'p Value, &'p Map<String, Value>)>;

/// A list of objects merged by `key` (`containers` by `name`): upstream's
/// `mergeSliceWithSpecialElements` (the directives) then `mergeSliceWithoutSpecialElements`.
fn merge_keyed(original: &[Value], patch: &[Value], key: &str, loc: &Loc) -> Result<Vec<Value>, PatchError> {
    let mut list: Vec<Value> = original.to_vec();
    let (items, replace) = special_elements(&mut list, patch, key, loc)?;
    if replace {
        let mut out = Vec::with_capacity(items.len());
        for (kv, pm) in items {
            let at = loc.item(format!("{key}={}", label(kv)));
            if let Merged::Map(m) = merge_map(None, pm, &at)? {
                out.push(Value::Object(m));
            }
        }
        return Ok(out);
    }
    merge_keyed_items(list, &items, key, loc)
}

/// Apply the list items that are directives (`$patch: delete` removes from `list`, a lone
/// `$patch: replace` makes the list exactly the patch's items: the returned flag) and
/// return the ordinary items.
fn special_elements<'p>(
    list: &mut Vec<Value>,
    patch: &'p [Value],
    key: &str,
    loc: &Loc,
) -> Result<(KeyedItems<'p>, bool), PatchError> {
    let mut replace = false;
    let mut items: KeyedItems = Vec::with_capacity(patch.len());
    for (i, p) in patch.iter().enumerate() {
        let at = loc.item(i.to_string());
        let Value::Object(pm) = p else {
            return Err(PatchError::invalid(
                &at,
                format!(
                    "{} is merged by its items' `{key}`, so every item must be an object, not {}",
                    loc.shown,
                    type_name(p)
                ),
            ));
        };
        if let Some(directive) = pm.get(PATCH) {
            match directive.as_str() {
                Some("delete") => {
                    let Some(kv) = pm.get(key).filter(|v| !v.is_null()) else {
                        return Err(PatchError::invalid(
                            &at,
                            format!(
                                "this item says `$patch: delete` but has no `{key}`: the merge key names the item of {} to delete",
                                loc.shown
                            ),
                        ));
                    };
                    list.retain(|o| !o.get(key).is_some_and(|v| same(v, kv)));
                    continue;
                }
                Some("replace") if pm.len() == 1 => {
                    replace = true;
                    continue;
                }
                Some("merge") if pm.len() == 1 => continue,
                // Only `merge` may come with fields.
                _ => check_item_directive(directive, pm, key, &at)?,
            }
        }
        let Some(kv) = pm.get(key).filter(|v| !v.is_null()) else {
            return Err(PatchError::invalid(
                &at,
                format!(
                    "{} is merged by `{key}`, so every item of the patch must have a `{key}` to say which item it changes",
                    loc.shown
                ),
            ));
        };
        items.push((kv, pm));
    }
    Ok((items, replace))
}

/// A `$patch` in a list item that comes with fields: fine for `merge`, an error otherwise.
fn check_item_directive(directive: &Value, pm: &Map<String, Value>, key: &str, at: &Loc) -> Result<(), PatchError> {
    match directive.as_str() {
        Some("merge") if pm.len() > 1 => Ok(()),
        Some("replace") => Err(PatchError::invalid(
            at,
            "`$patch: replace` in a list is an item of its own, {\"$patch\": \"replace\"}, and makes the list exactly the other items; it cannot be combined with fields",
        )),
        _ => Err(PatchError::invalid(
            &at.field(PATCH),
            format!(
                "unknown patch directive {directive}: in a list item `$patch` is \"delete\" (with the item's `{key}`), \"replace\" (alone) or \"merge\""
            ),
        )),
    }
}

/// Merge each patch item into the live item with the same key (or append it), then order.
fn merge_keyed_items(mut list: Vec<Value>, items: &KeyedItems, key: &str, loc: &Loc) -> Result<Vec<Value>, PatchError> {
    // The live order (after deletions), by merge key.
    let server: Vec<Value> = list
        .iter()
        .map(|o| o.get(key).cloned().unwrap_or(Value::Null))
        .collect();
    for &(kv, pm) in items {
        let at = loc.item(format!("{key}={}", label(kv)));
        let found = list.iter().position(|o| o.get(key).is_some_and(|v| same(v, kv)));
        let merged = merge_map(found.and_then(|i| list[i].as_object()), pm, &at)?;
        match (found, merged) {
            (Some(i), Merged::Map(m)) => list[i] = Value::Object(m),
            (Some(i), Merged::Delete) => {
                list.remove(i);
            }
            (None, Merged::Map(m)) => list.push(Value::Object(m)),
            (None, Merged::Delete) => {}
        }
    }
    let patch_keys: Vec<&Value> = items.iter().map(|(kv, _)| *kv).collect();
    let key_of = |v: &Value| v.get(key).filter(|k| !k.is_null()).cloned();
    Ok(interleave(
        list,
        |v| key_of(v).and_then(|k| patch_keys.iter().position(|p| same(p, &k))),
        |v| key_of(v).and_then(|k| position(&server, &k)),
    ))
}

/// Order a merged list as kube-apiserver does: the items the patch names (those with a
/// `patch_pos`) in the patch's order, the server-only items in their live order, and the
/// two interleaved by live position (`server_pos`). When one of the two items compared has
/// no live position (it is new), the patch's item goes first.
fn interleave(
    items: Vec<Value>,
    patch_pos: impl Fn(&Value) -> Option<usize>,
    server_pos: impl Fn(&Value) -> Option<usize>,
) -> Vec<Value> {
    let total = items.len();
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) =
        items.into_iter().partition(|v| patch_pos(v).is_some());
    from_patch.sort_by_key(|v| patch_pos(v));
    server_only.sort_by_key(|v| server_pos(v).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(total);
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((server_pos(l), server_pos(r)), (Some(a), Some(b)) if a < b),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// The identity of a list item: its merge-key value, or the value itself in a set.
type Ident = Box<dyn Fn(&Value) -> Option<Value>>;

/// `$setElementOrder/<field>: [...]`: put the merged list in the given order (upstream's
/// `normalizeElementOrder`).
fn set_element_order(
    out: &mut Map<String, Value>,
    field: &str,
    order: &Value,
    before: &[Value],
    patch_list: Option<&Value>,
    loc: &Loc,
) -> Result<(), PatchError> {
    let Some(order) = order.as_array() else {
        return Err(PatchError::bad(
            loc,
            format!(
                "`$setElementOrder/{field}` must be a list giving the order of {field}, not {}",
                type_name(order)
            ),
        ));
    };
    // An atomic list is replaced by the patch's list, which is already in order.
    let Some((ident, order_ids)) = order_identities(order, field, loc)? else {
        return Ok(());
    };
    if let Some(Value::Array(items)) = patch_list {
        check_patch_order(items, &ident, &order_ids, field, loc)?;
    }
    let Some(Value::Array(list)) = out.get_mut(field) else {
        return Ok(());
    };
    let before_ids: Vec<Option<Value>> = before.iter().map(&ident).collect();
    let current = std::mem::take(list);
    *list = interleave(
        current,
        |v| ident(v).and_then(|id| position(&order_ids, &id)),
        |v| ident(v).and_then(|id| before_ids.iter().position(|b| b.as_ref().is_some_and(|b| same(b, &id)))),
    );
    Ok(())
}

/// How the list's items are identified (their merge key, or the value itself in a set),
/// and the identities `order` lists; `None` for an atomic list.
fn order_identities(order: &[Value], field: &str, loc: &Loc) -> Result<Option<(Ident, Vec<Value>)>, PatchError> {
    match loc.strategy() {
        None => Ok(None),
        Some(MergeSet) => {
            if let Some(bad) = order.iter().find(|v| v.is_object() || v.is_array()) {
                return Err(PatchError::bad(
                    loc,
                    format!(
                        "`$setElementOrder/{field}` lists the values of {field} in order; {} is not a plain value",
                        bad
                    ),
                ));
            }
            Ok(Some((Box::new(|v: &Value| Some(v.clone())), order.to_vec())))
        }
        Some(MergeByKey(key)) => {
            let mut ids = Vec::with_capacity(order.len());
            for entry in order {
                match entry.get(key).filter(|v| !v.is_null()) {
                    Some(v) => ids.push(v.clone()),
                    None => {
                        return Err(PatchError::bad(
                            loc,
                            format!(
                                "each entry of `$setElementOrder/{field}` names an item by its `{key}`, e.g. {{\"{key}\": ...}}; {entry} does not"
                            ),
                        ));
                    }
                }
            }
            let ident: Ident = Box::new(move |v: &Value| v.get(key).filter(|k| !k.is_null()).cloned());
            Ok(Some((ident, ids)))
        }
    }
}

/// The items the patch sends must appear in the order list, in the same order (items that
/// are directives, such as deletions, do not count).
fn check_patch_order(
    items: &[Value],
    ident: &Ident,
    order_ids: &[Value],
    field: &str,
    loc: &Loc,
) -> Result<(), PatchError> {
    let mut at = 0;
    for item in items {
        if item.get(PATCH).is_some() {
            continue;
        }
        let Some(id) = ident(item) else { continue };
        while at < order_ids.len() && !same(&order_ids[at], &id) {
            at += 1;
        }
        if at == order_ids.len() {
            return Err(PatchError::invalid(
                loc,
                format!(
                    "the patch's item {} of {field} is missing from `$setElementOrder/{field}` or out of its order",
                    label(&id)
                ),
            ));
        }
        at += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                         "finalizers": ["a.example/x", "b.example/y"]},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "nginx:1",
                             "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                             "ports": [{"containerPort": 80, "protocol": "TCP"}],
                             "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                            {"name": "sidecar", "image": "busybox:1", "args": ["sleep", "3600"]}
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                        "tolerations": [{"key": "a", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    fn patched(patch: Value) -> Value {
        apply("Deployment", &deployment(), &patch).expect("patch applies")
    }

    fn containers(d: &Value) -> &Vec<Value> {
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
    }

    fn names(list: &Value, key: &str) -> Vec<String> {
        list.as_array().expect("list").iter().map(|v| label(&v[key])).collect()
    }

    fn no_directives(v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    assert!(!k.starts_with('$'), "directive {k} stored in {v}");
                    no_directives(c);
                }
            }
            Value::Array(l) => l.iter().for_each(no_directives),
            _ => {}
        }
    }

    #[test]
    fn table_has_upstream_merge_keys() {
        let cases = [
            ("Deployment", "spec.template.spec.containers", Some(MergeByKey("name"))),
            (
                "Deployment",
                "spec.template.spec.containers[*].env",
                Some(MergeByKey("name")),
            ),
            (
                "Deployment",
                "spec.template.spec.initContainers[*].ports",
                Some(MergeByKey("containerPort")),
            ),
            ("ReplicaSet", "spec.template.spec.volumes", Some(MergeByKey("name"))),
            ("Pod", "spec.containers[*].volumeMounts", Some(MergeByKey("mountPath"))),
            ("Pod", "spec.ephemeralContainers", Some(MergeByKey("name"))),
            ("Pod", "spec.imagePullSecrets", Some(MergeByKey("name"))),
            ("Pod", "spec.hostAliases", Some(MergeByKey("ip"))),
            ("Pod", "spec.topologySpreadConstraints", Some(MergeByKey("topologyKey"))),
            ("Pod", "spec.tolerations", None),
            ("Pod", "status.conditions", Some(MergeByKey("type"))),
            ("Node", "status.conditions", Some(MergeByKey("type"))),
            ("Node", "spec.taints", None),
            ("Service", "spec.ports", Some(MergeByKey("port"))),
            ("ConfigMap", "metadata.finalizers", Some(MergeSet)),
            ("Lease", "metadata.ownerReferences", Some(MergeByKey("uid"))),
            ("Deployment", "spec.template.metadata.finalizers", Some(MergeSet)),
            ("Endpoints", "subsets", None),
            ("Deployment", "spec.template.spec.containers[*].args", None),
            ("NoSuchKind", "spec.containers", None),
        ];
        for (kind, path, want) in cases {
            assert_eq!(list_strategy(kind, path), want, "{kind} {path}");
        }
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let d = patched(json!({"metadata": {"labels": {"tier": "front", "app": null}}, "spec": {"replicas": 5}}));
        assert_eq!(d["metadata"]["labels"], json!({"tier": "front"}));
        assert_eq!(d["spec"]["replicas"], 5);
        assert_eq!(d["spec"]["selector"], deployment()["spec"]["selector"], "untouched");
        // Deleting a field that is not there is fine.
        let d = patched(json!({"spec": {"paused": null}}));
        assert_eq!(d, deployment());
    }

    #[test]
    fn empty_patch_changes_nothing() {
        assert_eq!(patched(json!({})), deployment());
    }

    #[test]
    fn nested_env_change_in_one_container() {
        let d = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "X", "value": "changed"}]}
        ]}}}}));
        let c = containers(&d);
        assert_eq!(
            names(&d["spec"]["template"]["spec"]["containers"], "name"),
            ["web", "sidecar"]
        );
        assert_eq!(c[0]["image"], "nginx:1", "other fields of web kept");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "X", "value": "changed"}, {"name": "Y", "value": "2"}])
        );
        assert_eq!(
            c[0]["ports"],
            deployment()["spec"]["template"]["spec"]["containers"][0]["ports"]
        );
        assert_eq!(c[1], deployment()["spec"]["template"]["spec"]["containers"][1]);
    }

    #[test]
    fn image_change_keeps_other_containers() {
        let d = patched(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:2"}]}}}}),
        );
        let c = containers(&d);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1]["image"], "busybox:2");
        assert_eq!(c[1]["args"], json!(["sleep", "3600"]));
        assert_eq!(c[0]["image"], "nginx:1");
    }

    #[test]
    fn new_items_go_before_server_only_items() {
        // As in Kubernetes' "kubectl patch" task: a new container is listed first.
        let d = patched(json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "image": "x"}]}}}}));
        assert_eq!(
            names(&d["spec"]["template"]["spec"]["containers"], "name"),
            ["log", "web", "sidecar"]
        );
        // An existing item named together with a new one keeps its place relative to the
        // server-only items.
        let d = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "b:2"}, {"name": "log", "image": "x"}
        ]}}}}));
        assert_eq!(
            names(&d["spec"]["template"]["spec"]["containers"], "name"),
            ["web", "sidecar", "log"]
        );
    }

    #[test]
    fn delete_one_container() {
        let d =
            patched(json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}));
        assert_eq!(names(&d["spec"]["template"]["spec"]["containers"], "name"), ["web"]);
        no_directives(&d);
        // Deleting an item that is not there is not an error.
        let d =
            patched(json!({"spec": {"template": {"spec": {"containers": [{"name": "ghost", "$patch": "delete"}]}}}}));
        assert_eq!(containers(&d).len(), 2);
    }

    #[test]
    fn replace_a_list_with_patch_replace_item() {
        let d = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"}, {"name": "only", "image": "x"}
        ]}}}}));
        assert_eq!(containers(&d), &vec![json!({"name": "only", "image": "x"})]);
    }

    #[test]
    fn replace_a_map() {
        let d = patched(json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}));
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        // Nested: replace a map inside one container.
        let d = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "resources": {"$patch": "replace", "limits": {"cpu": "1"}}}
        ]}}}}));
        assert_eq!(containers(&d)[0]["resources"], json!({"limits": {"cpu": "1"}}));
        assert_eq!(containers(&d)[0]["image"], "nginx:1");
        assert_eq!(containers(&d)[1]["name"], "sidecar");
    }

    #[test]
    fn delete_a_map() {
        let d = patched(json!({"spec": {"strategy": {"$patch": "delete"}}}));
        assert!(d["spec"].get("strategy").is_none());
        let d = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "volumeMounts": [{"mountPath": "/data", "$patch": "delete"}]}
        ]}}}}));
        assert_eq!(containers(&d)[0]["volumeMounts"], json!([]));
    }

    #[test]
    fn explicit_merge_directive_is_the_default() {
        let d = patched(json!({"spec": {"strategy": {"$patch": "merge", "rollingUpdate": {"maxSurge": 1}}}}));
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"],
            json!({"maxSurge": 1, "maxUnavailable": "25%"})
        );
        no_directives(&d);
    }

    #[test]
    fn retain_keys_strategy_change_as_kubectl_sends_it() {
        // kubectl apply, file changed from RollingUpdate to Recreate:
        let d = patched(
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}}),
        );
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        // Without the null, $retainKeys alone drops rollingUpdate.
        let d = patched(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        // A field in the patch but not in $retainKeys is rejected.
        let e = apply(
            "Deployment",
            &deployment(),
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}}),
        )
        .expect_err("mismatch");
        assert_eq!(e.code, 422);
        assert_eq!(e.field, "spec.strategy.rollingUpdate");
        // Volumes (merge,retainKeys): switch a volume's source.
        let d = patched(json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/srv"}}
        ]}}}}));
        assert_eq!(
            d["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}}])
        );
    }

    #[test]
    fn set_element_order_reorders_containers() {
        let d = patched(json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]
        }}}}));
        assert_eq!(
            names(&d["spec"]["template"]["spec"]["containers"], "name"),
            ["sidecar", "web"]
        );
        no_directives(&d);
        // With a change and an addition, as kubectl apply sends them.
        let d = patched(json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}, {"name": "sidecar"}],
            "containers": [{"name": "log", "image": "x"}, {"name": "sidecar", "image": "busybox:2"}]
        }}}}));
        assert_eq!(
            names(&d["spec"]["template"]["spec"]["containers"], "name"),
            ["web", "log", "sidecar"]
        );
        assert_eq!(containers(&d)[2]["image"], "busybox:2");
        // Order of env inside a container.
        let d = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "$setElementOrder/env": [{"name": "Y"}, {"name": "X"}]}
        ]}}}}));
        assert_eq!(names(&containers(&d)[0]["env"], "name"), ["Y", "X"]);
    }

    #[test]
    fn set_element_order_with_deletion() {
        let d = patched(json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}],
            "containers": [{"name": "web", "$patch": "delete"}]
        }}}}));
        assert_eq!(names(&d["spec"]["template"]["spec"]["containers"], "name"), ["sidecar"]);
    }

    #[test]
    fn set_element_order_must_match_patch_list() {
        let e = apply(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [{"name": "sidecar", "image": "x"}]
            }}}}),
        )
        .expect_err("sidecar not in order list");
        assert_eq!(e.code, 422);
        let e = apply(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"image": "x"}]}}}}),
        )
        .expect_err("no merge key");
        assert_eq!(e.code, 400);
        let e = apply(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {"$setElementOrder/containers": "web"}}}}),
        )
        .expect_err("not a list");
        assert_eq!(e.code, 400);
    }

    #[test]
    fn primitive_merge_list_finalizers() {
        let d = patched(json!({"metadata": {"finalizers": ["c.example/z", "a.example/x"]}}));
        assert_eq!(
            d["metadata"]["finalizers"],
            json!(["c.example/z", "a.example/x", "b.example/y"])
        );
        let d = patched(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x", "nope"]}}));
        assert_eq!(d["metadata"]["finalizers"], json!(["b.example/y"]));
        no_directives(&d);
        let d = patched(json!({"metadata": {
            "$setElementOrder/finalizers": ["b.example/y", "a.example/x"]
        }}));
        assert_eq!(d["metadata"]["finalizers"], json!(["b.example/y", "a.example/x"]));
        // Deleting from a list that is not there.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let out = apply(
            "ConfigMap",
            &cm,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        )
        .expect("fine");
        assert_eq!(out, cm);
    }

    #[test]
    fn delete_from_primitive_list_needs_a_set_list() {
        let e = apply(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "$deleteFromPrimitiveList/args": ["sleep"]}
            ]}}}}),
        )
        .expect_err("args is atomic");
        assert_eq!(e.code, 422);
        assert_eq!(e.field, "spec.template.spec.containers[name=sidecar].args");
        let e = apply(
            "Deployment",
            &deployment(),
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}),
        )
        .expect_err("not a list");
        assert_eq!(e.code, 400);
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let d = patched(json!({"spec": {"template": {"spec": {
            "tolerations": [{"key": "b", "operator": "Exists"}],
            "containers": [{"name": "sidecar", "args": ["sleep", "1"]}]
        }}}}));
        assert_eq!(
            d["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        assert_eq!(containers(&d)[1]["args"], json!(["sleep", "1"]));
        // A lone {"$patch":"replace"} in an atomic list is accepted and dropped.
        let d = patched(json!({"spec": {"template": {"spec": {"tolerations": [{"$patch": "replace"}]}}}}));
        assert_eq!(d["spec"]["template"]["spec"]["tolerations"], json!([]));
        let e = apply(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {"tolerations": [{"key": "a", "$patch": "delete"}]}}}}),
        )
        .expect_err("tolerations have no merge key");
        assert_eq!(e.code, 422);
    }

    #[test]
    fn ports_merge_by_container_port_and_service_port() {
        let d = patched(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}
        ]}}}}));
        assert_eq!(
            containers(&d)[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
        );
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 81, "targetPort": 8081}],
                     "selector": {"app": "web"}}});
        let out = apply(
            "Service",
            &svc,
            &json!({"spec": {"ports": [{"port": 81.0, "targetPort": 9000}]}}),
        )
        .expect("ok");
        // 81.0 names the same port as 81 (JSON numbers compare by value, as in Go).
        assert_eq!(out["spec"]["ports"].as_array().map(Vec::len), Some(2));
        assert_eq!(out["spec"]["ports"][1]["targetPort"], 9000);
        assert_eq!(out["spec"]["ports"][0], json!({"port": 80, "targetPort": 8080}));
    }

    #[test]
    fn other_keyed_lists() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
                "ownerReferences": [{"uid": "u1", "name": "rs", "kind": "ReplicaSet"}]},
            "spec": {"containers": [{"name": "c", "image": "i"}],
                     "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["a"]}],
                     "imagePullSecrets": [{"name": "s1"}],
                     "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
        let out = apply(
            "Pod",
            &pod,
            &json!({
                "metadata": {"ownerReferences": [{"uid": "u1", "controller": true}]},
                "spec": {"hostAliases": [{"ip": "127.0.0.1", "hostnames": ["b"]}],
                         "imagePullSecrets": [{"name": "s2"}],
                         "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }),
        )
        .expect("ok");
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "u1", "name": "rs", "kind": "ReplicaSet", "controller": true}])
        );
        assert_eq!(
            out["spec"]["hostAliases"],
            json!([{"ip": "127.0.0.1", "hostnames": ["b"]}])
        );
        assert_eq!(out["spec"]["imagePullSecrets"], json!([{"name": "s2"}, {"name": "s1"}]));
        assert_eq!(
            out["spec"]["topologySpreadConstraints"],
            json!([{"topologyKey": "zone", "maxSkew": 2}])
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );
        let node = json!({"kind": "Node", "metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let out = apply(
            "Node",
            &node,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .expect("ok");
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
    }

    #[test]
    fn new_values_are_cleaned_of_directives() {
        // The live object has no initContainers: the patch's directives still must not be stored.
        let d = patched(json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "$patch": "delete"}], "ports": null}],
            "$setElementOrder/initContainers": [{"name": "init"}],
            "securityContext": {"$patch": "replace", "runAsUser": 1000, "fsGroup": null}
        }}}}));
        no_directives(&d);
        assert_eq!(
            d["spec"]["template"]["spec"]["initContainers"],
            json!([{"name": "init", "image": "x", "env": [{"name": "A", "value": "1"}]}])
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["securityContext"],
            json!({"runAsUser": 1000})
        );
    }

    #[test]
    fn type_changes_replace() {
        let d = patched(json!({"spec": {"replicas": {"oops": 1}, "selector": 3}}));
        assert_eq!(d["spec"]["replicas"], json!({"oops": 1}));
        assert_eq!(d["spec"]["selector"], 3);
        // A list where a map was: merged into nothing.
        let d = patched(json!({"spec": {"template": {"spec": {"containers": {"name": "x"}}}}}));
        assert_eq!(d["spec"]["template"]["spec"]["containers"], json!({"name": "x"}));
    }

    #[test]
    fn invalid_directives_are_rejected() {
        let cases = [
            (json!({"spec": {"$patch": "explode"}}), 422, "spec.$patch"),
            (json!({"spec": {"$frobnicate": 1}}), 422, "spec.$frobnicate"),
            (
                json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
                400,
                "spec.strategy.$retainKeys",
            ),
            (
                json!({"spec": {"strategy": {"$retainKeys": [1]}}}),
                400,
                "spec.strategy.$retainKeys",
            ),
            (json!({"$patch": "delete"}), 422, ""),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
                422,
                "spec.template.spec.containers[0]",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": ["web"]}}}}),
                422,
                "spec.template.spec.containers[0]",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}),
                422,
                "spec.template.spec.containers[0]",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "$patch": "replace", "image": "x"}, {"$patch": "bogus", "name": "a"}]}}}}),
                422,
                "spec.template.spec.containers[0]",
            ),
            (
                json!({"metadata": {"finalizers": [{"a": 1}]}}),
                422,
                "metadata.finalizers[0]",
            ),
            (
                json!({"spec": {"$setElementOrder/": []}}),
                400,
                "spec.$setElementOrder/",
            ),
            (json!([1, 2]), 400, ""),
        ];
        for (patch, code, field) in cases {
            let e = apply("Deployment", &deployment(), &patch).expect_err(&patch.to_string());
            assert_eq!((e.code, e.field.as_str()), (code, field), "{patch}: {}", e.message);
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn errors_become_statuses() {
        let info = crate::objects::by_gvk("apps/v1", "Deployment").expect("known kind");
        let e = apply("Deployment", &deployment(), &json!({"spec": {"$patch": "explode"}})).expect_err("bad");
        let api = e.into_api_error(info, "web");
        assert_eq!((api.code, api.reason.as_str()), (422, "Invalid"));
        assert!(api.message.contains("spec.$patch"), "{}", api.message);
        let e = apply("Deployment", &deployment(), &json!("x")).expect_err("bad");
        let api = e.into_api_error(info, "web");
        assert_eq!((api.code, api.reason.as_str()), (400, "BadRequest"));
    }

    #[test]
    fn kubectl_three_way_patch_shapes() {
        // What kubectl apply sends after the file changed web's image, removed env Y and
        // the sidecar container.
        let d = patched(json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [
                    {"$setElementOrder/env": [{"name": "X"}], "env": [{"$patch": "delete", "name": "Y"}], "image": "nginx:2", "name": "web"},
                    {"$patch": "delete", "name": "sidecar"}
                ]
            }}}
        }));
        no_directives(&d);
        assert_eq!(names(&d["spec"]["template"]["spec"]["containers"], "name"), ["web"]);
        assert_eq!(containers(&d)[0]["image"], "nginx:2");
        assert_eq!(containers(&d)[0]["env"], json!([{"name": "X", "value": "1"}]));
        assert_eq!(
            d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{...}"
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let originals = [
            json!(null),
            json!([]),
            json!({"spec": []}),
            json!({"spec": {"containers": "x"}}),
            json!({"spec": {"containers": [1, null, {"name": 3}]}}),
        ];
        let patches = [
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}], "$setElementOrder/containers": [{"name": "a"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": 3}], "$retainKeys": ["containers"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["x"], "finalizers": ["x", "x"]}}),
            json!({"spec": {"containers": [{"$patch": "replace"}]}}),
        ];
        for o in &originals {
            for p in &patches {
                let _ = apply("Pod", o, p);
            }
        }
        let out = apply(
            "Pod",
            &json!({"metadata": {"finalizers": ["x"]}}),
            &json!({"metadata": {"finalizers": ["x", "x"]}}),
        )
        .expect("ok");
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
    }
}
