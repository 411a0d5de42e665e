//! # Deployment helpers (mirrors `pkg/controller/deployment/util/deployment_util.go`)
//!
//! The small, pure pieces the Deployment controller is built from, each named after its
//! upstream function:
//!
//! - **pod-template-hash** (`controller.ComputeHash`): FNV-32a over the template written as
//!   JSON with sorted keys, so the same template always gives the same ReplicaSet name;
//!   `equal_ignore_hash` (`EqualIgnoreHash`) finds the ReplicaSet of a template again.
//! - **Fenceposts** (`ResolveFenceposts`): `maxSurge` and `maxUnavailable` as numbers;
//!   a percentage rounds up for surge and down for unavailable.
//! - **Annotations**: the revision, its history, and `desired-replicas`/`max-replicas`,
//!   which remember the size the Deployment had when it last sized a ReplicaSet
//!   (`SetNewReplicaSetAnnotations`, `SetReplicasAnnotations`).
//! - **Proportions** (`GetProportion`): a ReplicaSet's share of a scale during a rollout.
//! - Getters for the counts in `spec` and `status`, and the creation order
//!   (`ReplicaSetsByCreationTimestamp`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::controllers::reconciler::TRACEPARENT_ANNOTATION;
use crate::controllers::replicaset::{int_at, parse_time, resource};
use crate::objects::{self, ResourceInfo};

/// The label that tells the ReplicaSets (and pods) of one Deployment apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and the Deployment's latest).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before a rollback made it current again.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last sized this ReplicaSet.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last sized this ReplicaSet.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations that are not copied onto its ReplicaSets.
const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
    TRACEPARENT_ANNOTATION,
];

pub(super) fn rs_info() -> &'static ResourceInfo {
    resource("apps/v1", "ReplicaSet")
}

pub(super) fn deploy_info() -> &'static ResourceInfo {
    resource("apps/v1", "Deployment")
}

// ---------------------------------------------------------------------------------------
// pod-template-hash
// ---------------------------------------------------------------------------------------

/// JSON with object keys sorted, so that the same template always gives the same bytes,
/// whatever order its author wrote the fields in.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// FNV-1a, 32 bits (Go's `hash/fnv.New32a`).
fn fnv32a(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(16_777_619);
    }
    hash
}

/// The pod-template-hash of a template (`controller.ComputeHash`): FNV-32a over the
/// template (and the Deployment's `status.collisionCount`, if set, to step around a
/// collision), its decimal digits mapped onto `bcdfghjklmnpqrstvwxz2456789`
/// (`rand.SafeEncodeString`).
pub fn pod_template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut text = String::new();
    canonical_json(template, &mut text);
    let mut hash = fnv32a(text.as_bytes(), 2_166_136_261);
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        hash = fnv32a(&bytes, hash);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// A template without the pod-template-hash label (an empty label map counts as none).
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
        if meta
            .get("labels")
            .is_some_and(|l| l.is_null() || l.as_object().is_some_and(Map::is_empty))
        {
            meta.remove("labels");
        }
    }
    // An empty `metadata` is the same as none (a Go struct has no "absent").
    if let Some(m) = t.as_object_mut()
        && m.get("metadata")
            .is_some_and(|v| v.is_null() || v.as_object().is_some_and(Map::is_empty))
    {
        m.remove("metadata");
    }
    t
}

/// Are two templates the same apart from the pod-template-hash label (`EqualIgnoreHash`)?
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

// ---------------------------------------------------------------------------------------
// maxSurge / maxUnavailable
// ---------------------------------------------------------------------------------------

/// An `IntOrString` (`3` or `"25%"`) scaled against `total` (`GetScaledValueFromIntOrPercent`).
pub fn scaled_value(v: &Value, total: i64, round_up: bool) -> Result<i64, String> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not an integer")),
        Value::String(s) => {
            if let Some(p) = s.strip_suffix('%') {
                let pct: i64 = p
                    .parse()
                    .map_err(|_| format!("invalid value for IntOrString: invalid value \"{s}\""))?;
                let scaled = pct as f64 * total as f64 / 100.0;
                Ok(if round_up { scaled.ceil() } else { scaled.floor() } as i64)
            } else {
                s.parse().map_err(|_| {
                    format!("invalid value for IntOrString: invalid type: string is not a percentage: \"{s}\"")
                })
            }
        }
        other => Err(format!("{other} is neither an integer nor a percentage")),
    }
}

pub(super) fn is_rolling(d: &Value) -> bool {
    d.pointer("/spec/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `(maxSurge, maxUnavailable)` as absolute numbers (`ResolveFenceposts`): surge rounds
/// up, unavailable rounds down, and both 0 would deadlock, so unavailable becomes 1.
pub fn resolve_fenceposts(d: &Value) -> Result<(i64, i64), String> {
    let desired = d_replicas(d);
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge_v = ru
        .and_then(|r| r.get("maxSurge"))
        .cloned()
        .unwrap_or_else(|| json!("25%"));
    let unav_v = ru
        .and_then(|r| r.get("maxUnavailable"))
        .cloned()
        .unwrap_or_else(|| json!("25%"));
    let surge =
        scaled_value(&surge_v, desired, true).map_err(|e| format!("spec.strategy.rollingUpdate.maxSurge: {e}"))?;
    let mut unavailable = scaled_value(&unav_v, desired, false)
        .map_err(|e| format!("spec.strategy.rollingUpdate.maxUnavailable: {e}"))?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge.max(0), unavailable.max(0)))
}

pub(super) fn max_surge(d: &Value) -> Result<i64, String> {
    if !is_rolling(d) {
        return Ok(0);
    }
    Ok(resolve_fenceposts(d)?.0)
}

pub(super) fn max_unavailable(d: &Value) -> Result<i64, String> {
    let replicas = d_replicas(d);
    if !is_rolling(d) || replicas == 0 {
        return Ok(0);
    }
    Ok(resolve_fenceposts(d)?.1.min(replicas))
}

// ---------------------------------------------------------------------------------------
// Reading Deployments and ReplicaSets
// ---------------------------------------------------------------------------------------

pub(super) fn d_replicas(d: &Value) -> i64 {
    int_at(d, "/spec/replicas", 1).max(0)
}

pub(super) fn spec_replicas(rs: &Value) -> i64 {
    int_at(rs, "/spec/replicas", 1).max(0)
}

pub(super) fn status_replicas(rs: &Value) -> i64 {
    int_at(rs, "/status/replicas", 0)
}

pub(super) fn ready_replicas(rs: &Value) -> i64 {
    int_at(rs, "/status/readyReplicas", 0)
}

/// Available pods of a ReplicaSet, at most `spec.replicas`: pods beyond that are about to
/// be deleted (the not-ready ones first), so they must not count for a rollout decision.
pub(super) fn available_replicas(rs: &Value) -> i64 {
    int_at(rs, "/status/availableReplicas", 0).min(spec_replicas(rs))
}

pub(super) fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

pub(super) fn revision(rs: &Value) -> i64 {
    annotation(rs, REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub(super) fn name_of(obj: &Value) -> &str {
    objects::name(obj).unwrap_or("")
}

pub(super) fn uid_of(obj: &Value) -> &str {
    objects::uid(obj).unwrap_or("")
}

/// Oldest first; ties by name (`ReplicaSetsByCreationTimestamp`).
pub(super) fn by_creation(a: &Value, b: &Value) -> Ordering {
    parse_time(a, "/metadata/creationTimestamp")
        .cmp(&parse_time(b, "/metadata/creationTimestamp"))
        .then_with(|| name_of(a).cmp(name_of(b)))
}

pub(super) fn has_progress_deadline(d: &Value) -> bool {
    d.pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s != i64::from(i32::MAX))
}

pub(super) fn set_annotation(obj: &mut Value, key: &str, value: String) {
    if let Some(meta) = objects::meta_mut(obj) {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if !ann.is_object() {
            *ann = json!({});
        }
        if let Some(a) = ann.as_object_mut() {
            a.insert(key.to_string(), Value::String(value));
        }
    }
}

/// Set the replicas annotations; true if they changed (`SetReplicasAnnotations`).
pub(super) fn set_replicas_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS_ANNOTATION, desired), (MAX_REPLICAS_ANNOTATION, max)] {
        let text = value.to_string();
        if annotation(rs, key) != Some(text.as_str()) {
            set_annotation(rs, key, text);
            changed = true;
        }
    }
    changed
}

/// Copy the Deployment's annotations to the new ReplicaSet and move its revision up
/// (`SetNewReplicaSetAnnotations`). True if anything changed.
pub(super) fn set_new_rs_annotations(
    d: &Value,
    rs: &mut Value,
    new_revision: i64,
    exists: bool,
    max_surge: i64,
) -> bool {
    let mut changed = false;
    for (k, v) in objects::annotations(d) {
        if SKIPPED_ANNOTATIONS.contains(&k.as_str()) || annotation(rs, &k) == Some(v.as_str()) {
            continue;
        }
        set_annotation(rs, &k, v);
        changed = true;
    }
    let old_text = annotation(rs, REVISION_ANNOTATION).map(str::to_string);
    let old = match old_text.as_deref() {
        None | Some("") => 0,
        Some(t) => match t.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old < new_revision {
        set_annotation(rs, REVISION_ANNOTATION, new_revision.to_string());
        changed = true;
        if let Some(prev) = old_text.filter(|t| !t.is_empty()) {
            let history = match annotation(rs, REVISION_HISTORY_ANNOTATION) {
                Some(h) if !h.is_empty() => format!("{h},{prev}"),
                _ => prev,
            };
            set_annotation(rs, REVISION_HISTORY_ANNOTATION, history);
        }
    }
    if !exists {
        let desired = d_replicas(d);
        changed |= set_replicas_annotations(rs, desired, desired + max_surge);
    }
    changed
}

/// `GetProportion`: this ReplicaSet's share of `to_add`.
pub(super) fn proportion(d: &Value, rs: &Value, to_add: i64, added: i64, max_replicas: i64) -> i64 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if d_replicas(&d) == 0 {
        -size
    } else {
        let before = annotation(rs, MAX_REPLICAS_ANNOTATION)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v != 0)
            .unwrap_or_else(|| int_at(&d, "/status/replicas", 0));
        if before == 0 {
            0
        } else {
            ((size as f64 / before as f64) * max_replicas as f64).round() as i64 - size
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "web", "image": image}]}})
    }

    #[test]
    fn hash_is_stable_and_follows_the_template() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)));
        assert!(a.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        // Key order does not matter.
        let reordered = json!({"spec": {"containers": [{"image": "nginx:1", "name": "web"}]},
                               "metadata": {"labels": {"app": "web"}}});
        assert_eq!(a, pod_template_hash(&reordered, None));
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut with = template("nginx:1");
        with["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL] = json!("abc");
        assert!(equal_ignore_hash(&with, &template("nginx:1")));
        assert!(!equal_ignore_hash(&with, &template("nginx:2")));
        let bare = json!({"spec": {}});
        let only_hash = json!({"metadata": {"labels": {POD_TEMPLATE_HASH_LABEL: "x"}}, "spec": {}});
        assert!(equal_ignore_hash(&bare, &only_hash));
    }

    #[test]
    fn surge_rounds_up_unavailable_rounds_down() {
        let d = |replicas: i64, surge: Value, unav: Value| {
            json!({"spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unav}}}})
        };
        assert_eq!(resolve_fenceposts(&d(3, json!("25%"), json!("25%"))), Ok((1, 0)));
        assert_eq!(resolve_fenceposts(&d(10, json!("25%"), json!("25%"))), Ok((3, 2)));
        assert_eq!(resolve_fenceposts(&d(4, json!(0), json!(0))), Ok((0, 1)));
        assert_eq!(resolve_fenceposts(&d(4, json!(2), json!("50%"))), Ok((2, 2)));
        assert!(resolve_fenceposts(&d(4, json!("x%"), json!(1))).is_err());
        assert_eq!(max_unavailable(&d(2, json!(0), json!(5))), Ok(2));
        let recreate = json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        assert_eq!(max_surge(&recreate), Ok(0));
        assert_eq!(max_unavailable(&recreate), Ok(0));
    }

    #[test]
    fn scaling_during_a_rollout_is_proportional() {
        // replicas 10 → 15 with maxSurge 3 (max 13 → 18) while two ReplicaSets hold 8 and 5.
        let d = json!({"spec": {"replicas": 15}, "status": {"replicas": 13}});
        let rs =
            |n: i64| json!({"spec": {"replicas": n}, "metadata": {"annotations": {MAX_REPLICAS_ANNOTATION: "13"}}});
        let to_add = 18 - 13;
        let big = proportion(&d, &rs(8), to_add, 0, 18);
        let small = proportion(&d, &rs(5), to_add, big, 18);
        assert_eq!((big, small), (3, 2), "8/13 and 5/13 of 18, rounded");
        // Scaling to 0 takes everything away.
        let zero = json!({"spec": {"replicas": 0}});
        assert_eq!(proportion(&zero, &rs(8), -13, 0, 0), -8);
        // Never more than what is left to add.
        assert_eq!(proportion(&d, &rs(8), 5, 4, 18), 1);
    }

    #[test]
    fn new_rs_annotations_move_revision_up_and_keep_history() {
        let d = json!({"metadata": {"annotations": {"team": "a", TRACEPARENT_ANNOTATION: "x"}},
                       "spec": {"replicas": 3}});
        let mut rs = json!({"metadata": {"annotations": {REVISION_ANNOTATION: "1"}}});
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true, 1));
        assert_eq!(annotation(&rs, REVISION_ANNOTATION), Some("3"));
        assert_eq!(annotation(&rs, REVISION_HISTORY_ANNOTATION), Some("1"));
        assert_eq!(annotation(&rs, "team"), Some("a"));
        assert_eq!(annotation(&rs, TRACEPARENT_ANNOTATION), None);
        assert!(!set_new_rs_annotations(&d, &mut rs, 3, true, 1));
        let mut fresh = json!({"metadata": {}});
        set_new_rs_annotations(&d, &mut fresh, 1, false, 1);
        assert_eq!(annotation(&fresh, DESIRED_REPLICAS_ANNOTATION), Some("3"));
        assert_eq!(annotation(&fresh, MAX_REPLICAS_ANNOTATION), Some("4"));
    }
}
