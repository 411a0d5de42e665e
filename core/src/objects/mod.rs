//! # Objects: the API machinery (mirrors `k8s.io/apimachinery`)
//!
//! Everything in Kubernetes is an **object**: a JSON document with
//!
//! ```yaml
//! apiVersion: apps/v1        # group/version ("v1" alone for the core group)
//! kind: Deployment           # the type
//! metadata:                  # the same for every kind: name, namespace, labels, uid, ...
//!   name: web
//!   labels: {app: web}
//! spec: {...}                # what you want (written by you)
//! status: {...}              # what is (written by controllers and kubelets)
//! ```
//!
//! Before the API server stores an object it walks it through the same steps as
//! kube-apiserver, and this module provides each of them:
//!
//! 1. **decode** the request body or file: [`manifest`] (YAML/JSON, with limits against
//!    hostile input);
//! 2. **look up the type** (`apiVersion` + `kind`, or the URL's resource name): [`registry`];
//! 3. **default** the fields the user left out: [`defaults`];
//! 4. **validate**, answering `422 Invalid` with field paths: [`validation`];
//! 5. report failures as a Kubernetes `Status` object: [`status`].
//!
//! Objects stay raw [`serde_json::Value`]s all the way to the store: a field this version of
//! kulisse does not know is kept, never silently dropped (as Kubernetes keeps fields it
//! knows for other API versions). Typed `k8s-openapi` structs are used only to *check*
//! types.
//!
//! [`pod`] answers the questions everyone asks about a pod's conditions (is it ready?) and
//! sets conditions the way upstream does. [`strategic`] applies strategic merge patches (`kubectl patch`, client-side
//! `kubectl apply`). The helpers below read `metadata`, and [`selectors`] implements label
//! and field selectors (`kubectl get pods -l app=web --field-selector spec.nodeName=node-1`).

// `ApiError` and `ManifestError` carry the whole message a learner reads; they are built only
// on the (cold) error path, so their size in a `Result` does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The finalizer that makes the garbage collector delete dependents before the owner
/// (apimachinery's `metav1.FinalizerDeleteDependents`).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer that makes the garbage collector orphan dependents
/// (apimachinery's `metav1.FinalizerOrphanDependents`).
pub const ORPHAN_FINALIZER: &str = "orphan";

/// The response header that tells `kulisse apply` what a server-side apply did (created,
/// configured, unchanged). kulisse's own: upstream's kubectl compares the objects instead.
pub const APPLY_OUTCOME_HEADER: &str = "kulisse-apply-outcome";

pub mod defaults;
pub mod manifest;
pub mod pod;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod secret;
pub mod selectors;
pub mod status;
pub mod strategic;
pub mod time;
pub mod user;
pub mod validation;

pub use defaults::apply_defaults;
pub use manifest::{MAX_MANIFEST_BYTES, Manifest, ManifestError, ManifestErrorKind, parse_body, parse_manifests};
pub use registry::{RESOURCES, ResourceInfo, Subresource, by_gvk, by_resource, kind_names, lookup};
pub use selectors::{LabelSelector, field_selector_matches, labels_match, match_label_selector};
pub use status::{ApiError, NAMESPACE_TERMINATING_CAUSE, OPTIMISTIC_LOCK_MESSAGE, StatusCause, StatusDetails};
pub use validation::{FieldError, validate, validate_update};

/// The finalizer in a Namespace's `spec.finalizers` that the namespace controller removes
/// (through `/finalize`) once it has deleted everything in the namespace.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// The alphabet of generated name suffixes (`k8s.io/apimachinery/pkg/util/rand`): lowercase
/// letters and digits without vowels and look-alikes, so no words and no `0`/`o` mix-ups.
pub const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The name `metadata.generateName` gives (apiserver's `SimpleNameGenerator`): the prefix,
/// cut to 58 characters, and 5 random characters, e.g. `web-` → `web-x7k2q`.
pub fn generated_name(prefix: &str) -> String {
    use rand::Rng;
    let mut base: String = prefix.chars().take(58).collect();
    let mut rng = rand::rng();
    for _ in 0..5 {
        let i = rng.random_range(0..NAME_ALPHABET.len());
        base.push(NAME_ALPHABET[i] as char);
    }
    base
}

/// `metadata.finalizers`: who still has to clean up before the object may go.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The object's `metadata` mapping, if it has one.
pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// The object's `metadata` mapping for writing, created (as `{}`) if missing or not a
/// mapping. `None` only if `obj` itself is not a JSON object.
pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let root = obj.as_object_mut()?;
    if !root.get("metadata").is_some_and(Value::is_object) {
        root.insert("metadata".into(), Value::Object(Map::new()));
    }
    root.get_mut("metadata").and_then(Value::as_object_mut)
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    meta(obj)?.get(key)?.as_str()
}

/// `metadata.name`.
pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name")
}

/// `metadata.namespace` (`None` for cluster-scoped objects and objects not yet stored).
pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace")
}

/// `metadata.generateName` (the prefix the API server completes into a unique name).
pub fn generate_name(obj: &Value) -> Option<&str> {
    meta_str(obj, "generateName")
}

/// `metadata.uid`, the object's identity across delete and re-create.
pub fn uid(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid")
}

/// `metadata.resourceVersion`, the store revision of the object's last change.
pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion")
}

/// `metadata.deletionTimestamp`, set when a delete waits for finalizers.
pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    meta_str(obj, "deletionTimestamp")
}

/// `apiVersion` of the object.
pub fn api_version(obj: &Value) -> Option<&str> {
    obj.get("apiVersion").and_then(Value::as_str)
}

/// `kind` of the object.
pub fn kind(obj: &Value) -> Option<&str> {
    obj.get("kind").and_then(Value::as_str)
}

/// The string entries of a JSON map (`labels`, `annotations`, `nodeSelector`); entries whose
/// value is not a string are skipped.
pub(crate) fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.labels` (entries whose value is not a string are skipped; validation rejects
/// them anyway).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(meta(obj).and_then(|m| m.get("labels")))
}

/// `metadata.annotations`.
pub fn annotations(obj: &Value) -> BTreeMap<String, String> {
    string_map(meta(obj).and_then(|m| m.get("annotations")))
}

/// Whether `status.conditions` holds a condition of `type_` with status `"True"` (a Node or
/// Pod that is `Ready`, a Deployment that is `Available`).
pub fn condition_is_true(obj: &Value, type_: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
}

/// `metadata.ownerReferences` (the controller that owns this object, for garbage
/// collection and for controllers to find "their" objects).
pub fn owner_references(obj: &Value) -> &[Value] {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The `uid` of the owner reference marked `controller: true`, if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    owner_references(obj)
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_accessors() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "p", "namespace": "default", "uid": "u-1", "resourceVersion": "42",
            "generateName": "p-", "deletionTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"app": "web", "bad": 1}, "annotations": {"note": "x"},
            "ownerReferences": [{"uid": "o-1", "controller": false}, {"uid": "o-2", "controller": true}]
        }});
        assert_eq!(name(&obj), Some("p"));
        assert_eq!(namespace(&obj), Some("default"));
        assert_eq!(uid(&obj), Some("u-1"));
        assert_eq!(resource_version(&obj), Some("42"));
        assert_eq!(generate_name(&obj), Some("p-"));
        assert_eq!(deletion_timestamp(&obj), Some("2025-01-01T00:00:00Z"));
        assert_eq!(api_version(&obj), Some("v1"));
        assert_eq!(kind(&obj), Some("Pod"));
        assert_eq!(
            labels(&obj).into_iter().collect::<Vec<_>>(),
            vec![("app".to_string(), "web".to_string())]
        );
        assert_eq!(annotations(&obj).get("note").map(String::as_str), Some("x"));
        assert_eq!(owner_references(&obj).len(), 2);
        assert_eq!(controller_uid(&obj), Some("o-2"));
    }

    #[test]
    fn accessors_on_odd_shapes() {
        for v in [json!(null), json!([1]), json!({"metadata": 5}), json!({})] {
            assert_eq!(name(&v), None);
            assert!(labels(&v).is_empty());
            assert!(owner_references(&v).is_empty());
            assert_eq!(controller_uid(&v), None);
        }
    }

    #[test]
    fn meta_mut_creates_metadata() {
        let mut obj = json!({"kind": "Pod"});
        meta_mut(&mut obj).expect("object").insert("name".into(), json!("p"));
        assert_eq!(name(&obj), Some("p"));
        let mut obj = json!({"metadata": "oops"});
        meta_mut(&mut obj).expect("object").insert("name".into(), json!("q"));
        assert_eq!(name(&obj), Some("q"));
        let mut not_obj = json!(3);
        assert!(meta_mut(&mut not_obj).is_none());
    }

    #[test]
    fn reexports_work_together() {
        // Parse, default, validate: the path of a request through the API server.
        let ms = parse_manifests(
            "web.yaml",
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n",
        )
        .expect("parse");
        let mut obj = ms[0].object.clone();
        let info = by_gvk(api_version(&obj).unwrap_or(""), kind(&obj).unwrap_or("")).expect("known");
        apply_defaults(info, &mut obj);
        validate(info, &obj).expect("valid");
        assert_eq!(obj["spec"]["replicas"], 1);
        assert!(match_label_selector(
            &obj["spec"]["selector"],
            &labels(&json!({"metadata": {"labels": {"app": "web"}}}))
        ));
    }
}
