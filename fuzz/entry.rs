//! The fuzzing entry points: one function per decoder of untrusted bytes, each feeding the
//! bytes to kulisse's real code the way the API server or `kulisse apply` would.
//!
//! This file is compiled twice: by the `cargo fuzz` targets in `fuzz/fuzz_targets/` and by
//! the corpus replay test `tests/tests/fuzz_corpus.rs` (through `#[path]`), so a saved input
//! is replayed through exactly the code that found it. Each function returns what the
//! input came to (`Ok` = accepted, `Err(message)` = refused with a proper error); the only
//! wrong outcome is a panic, which libFuzzer reports as a crash and the test as a failure.

use std::collections::BTreeMap;

use kulisse_core::apiserver::{patch, write};
use kulisse_core::objects::{self, protobuf, quantity::Quantity, selectors, strategic};
use serde_json::{Value, json};

/// The outcome of one input: accepted, or refused with this message.
pub type Outcome = Result<(), String>;

/// The fuzz targets, by name: the corpus directories are named after them.
pub const TARGETS: [(&str, fn(&[u8]) -> Outcome); 5] = [
    ("manifest", manifest),
    ("patch", patch_bytes),
    ("selector", selector),
    ("quantity", quantity),
    ("protobuf", protobuf_body),
];

/// A manifest file as `kulisse apply -f` reads it (YAML or JSON, several documents), then
/// each object as the API server takes it: a request body, defaults, validation.
pub fn manifest(data: &[u8]) -> Outcome {
    let manifests = objects::parse_manifests("fuzz", data).map_err(|e| e.to_string())?;
    for m in manifests {
        admit(m.object)?;
    }
    // The same bytes as one request body, in both media types the API server reads.
    for content_type in ["application/json", "application/yaml"] {
        if let Ok(body) = objects::parse_body(Some(content_type), data) {
            let _ = admit(body);
        }
    }
    Ok(())
}

/// What the API server does to a decoded body before writing it: find the kind, check the
/// shape, default and validate.
fn admit(mut obj: Value) -> Outcome {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let info = objects::by_gvk(&api_version, &kind).ok_or_else(|| format!("no kind {api_version}/{kind}"))?;
    write::check_shape(info, "fuzz", &obj).map_err(|e| e.message)?;
    objects::apply_defaults(info, &mut obj);
    objects::validate(info, &obj).map_err(|e| e.message)
}

/// The object every patch is applied to: a Deployment with lists that strategic merge
/// merges by key (containers, env, ports).
pub fn patch_target() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}, "resourceVersion": "7"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                     "env": [{"name": "A", "value": "1"}]},
                    {"name": "side", "image": "busybox"}
                ]}
            }
        }
    })
}

/// A PATCH body. The first byte picks the patch type (the `Content-Type`), the rest is the
/// body, decoded as the API server decodes it: `0` merge patch, `1` strategic merge patch,
/// `2` JSON patch, `3` server-side apply (YAML). The patched object then goes through the same checks as a
/// real PATCH: shape, defaults, validation, update validation.
pub fn patch_bytes(data: &[u8]) -> Outcome {
    let Some((&which, body)) = data.split_first() else {
        return Err("empty".into());
    };
    let which = which % 4;
    let content_type = [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
    ][usize::from(which)];
    let body = objects::parse_body(Some(content_type), body).map_err(|e| e.message)?;
    let info = objects::by_gvk("apps/v1", "Deployment").ok_or("no Deployment")?;
    let stored = patch_target();
    let mut new = stored.clone();
    match which {
        0 => write::apply_json_patch(&mut new, &body, true).map_err(|e| e.message)?,
        1 => new = strategic::apply(info.kind, &stored, &body).map_err(|e| e.into_api_error(info, "web").message)?,
        2 => write::apply_json_patch(&mut new, &body, false).map_err(|e| e.message)?,
        _ => {
            write::check_shape(info, "web", &body).map_err(|e| e.message)?;
            patch::merge_into(&mut new, &body);
            let _ = patch::fields_of(&body);
        }
    }
    write::check_shape(info, "web", &new).map_err(|e| e.message)?;
    objects::apply_defaults(info, &mut new);
    objects::validate_update(info, &stored, &new).map_err(|e| e.message)
}

/// A label selector and a field selector, as `?labelSelector=` and `?fieldSelector=` bring
/// them, matched against a pod.
pub fn selector(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front"), ("env", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running"}
    });
    let parsed = selectors::parse_label_selector_text(text);
    let matched = objects::labels_match(text, &labels);
    // The parser and the matcher agree on what is a selector.
    if parsed.is_ok() != matched.is_ok() {
        panic!("parse and match disagree on {text:?}: {parsed:?} vs {matched:?}");
    }
    let field = objects::field_selector_matches(text, &pod);
    match (parsed, field) {
        (Err(label), Err(field)) => Err(format!("not a label selector ({label}) nor a field selector ({field})")),
        _ => Ok(()),
    }
}

/// A resource quantity (`250m`, `1Gi`, `1e3`), as a string and as a JSON number.
pub fn quantity(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let q = Quantity::parse(text).map_err(|e| e.to_string())?;
    let _ = (q.milli_value(), q.value(), q.is_negative());
    // An amount that fits in millis prints as a quantity that parses back to it. (Beyond
    // that, Display writes a diagnostic form such as `5e30*1024^2`.)
    let shown = q.to_string();
    if q.milli_value().is_some() {
        let again = Quantity::parse(&shown);
        let same = again.as_ref().is_ok_and(|a| a.milli_value() == q.milli_value());
        assert!(same, "{text:?} printed as {shown:?}, which parses to {again:?}");
    }
    if let Ok(n) = serde_json::from_str::<serde_json::Number>(text) {
        let _ = objects::quantity::cpu_millis(&Value::Number(n.clone()));
        let _ = objects::quantity::whole_units(&Value::Number(n));
    }
    Ok(())
}

/// A Kubernetes protobuf request body (`application/vnd.kubernetes.protobuf`), decoded to
/// JSON as the API server does, then admitted and encoded back.
pub fn protobuf_body(data: &[u8]) -> Outcome {
    let value = protobuf::decode(data).map_err(|e| e.to_string())?;
    if let Ok(bytes) = protobuf::encode(&value) {
        let _ = protobuf::decode(&bytes);
    }
    admit(value)
}
