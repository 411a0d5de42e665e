//! # Secrets (mirrors the Secret rules of kube-apiserver: `pkg/apis/core/validation`)
//!
//! A Secret is a ConfigMap for sensitive bytes: `data` maps keys to **base64** strings
//! (so any bytes fit in JSON), and kubelets mount or inject them into pods. Three things
//! make it more than a ConfigMap:
//!
//! - **`stringData`** is a write-only convenience: plain strings that the API server
//!   base64-encodes and merges into `data` (they win over a `data` key of the same name),
//!   then drops. A Secret read back never has `stringData`. Upstream does this while
//!   converting the versioned object to its internal form; kulisse does it with the defaults.
//! - **`type`** names what the Secret holds and which keys must be there. It defaults to
//!   `Opaque` (anything goes) and cannot change later. `kubernetes.io/tls` needs `tls.crt`
//!   and `tls.key`; `kubernetes.io/dockerconfigjson` needs `.dockerconfigjson` holding JSON;
//!   `kubernetes.io/basic-auth` needs `username` or `password`; `kubernetes.io/ssh-auth`
//!   needs `ssh-privatekey`.
//! - Nothing prints the values: `kubectl get secret` shows how many keys there are,
//!   `kubectl describe secret` only their sizes.
//!
//! Where kulisse differs: Secrets are stored as they are sent (base64 in the store, like an
//! etcd without encryption at rest). Kubelets mount them (`secret` and `projected`
//! volumes) and inject them (`secretKeyRef`, `envFrom`), see `kubelet/volumes.rs`.

use base64::Engine;
use serde_json::{Map, Value};

use super::validation::{FieldError, is_config_map_key};

/// The largest total size of a Secret's decoded data, as upstream (1 MiB).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

const TYPE_OPAQUE: &str = "Opaque";
const FIELD_IMMUTABLE: &str = "field is immutable";

/// Merge `stringData` into `data` (base64-encoded) and drop it; default `type` to `Opaque`.
/// A `stringData` with a value that is not a string is left for validation to report.
pub fn apply_defaults(root: &mut Map<String, Value>) {
    let plain = root.get("stringData").and_then(Value::as_object).cloned();
    if let Some(plain) = plain.filter(|m| m.values().all(Value::is_string)) {
        if !root.get("data").is_some_and(Value::is_object) {
            root.insert("data".into(), Value::Object(Map::new()));
        }
        if let Some(Value::Object(data)) = root.get_mut("data") {
            for (key, value) in plain {
                let text = value.as_str().unwrap_or_default();
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(key, Value::String(encoded));
            }
        }
        root.remove("stringData");
    } else if root.get("stringData").is_some_and(Value::is_null) {
        root.remove("stringData");
    }
    let missing = root.get("type").is_none_or(|t| t.is_null() || t.as_str() == Some(""));
    if missing {
        root.insert("type".into(), Value::String(TYPE_OPAQUE.into()));
    }
}

fn data_path(key: &str) -> String {
    format!("data[{key}]")
}

/// The Secret rules: key names, total size, and the keys each `type` requires.
pub fn validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data = obj.get("data").and_then(Value::as_object);
    let mut total = 0usize;
    for (key, value) in data.into_iter().flatten() {
        for msg in is_config_map_key(key) {
            errs.push(FieldError::invalid_str(data_path(key), key, msg));
        }
        total += decoded(value).map_or(0, |b| b.len());
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let has = |key: &str| data.is_some_and(|d| d.contains_key(key));
    let require = |errs: &mut Vec<FieldError>, key: &str| {
        if !has(key) {
            errs.push(FieldError::required(data_path(key), ""));
        }
    };
    match obj.get("type").and_then(Value::as_str).unwrap_or(TYPE_OPAQUE) {
        "kubernetes.io/tls" => {
            require(&mut errs, "tls.crt");
            require(&mut errs, "tls.key");
        }
        "kubernetes.io/dockerconfigjson" => docker_config(obj, ".dockerconfigjson", &mut errs),
        "kubernetes.io/dockercfg" => docker_config(obj, ".dockercfg", &mut errs),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required(data_path("username"), ""));
            errs.push(FieldError::required(data_path("password"), ""));
        }
        "kubernetes.io/ssh-auth" => require(&mut errs, "ssh-privatekey"),
        "kubernetes.io/service-account-token" => {
            let name = obj.pointer("/metadata/annotations/kubernetes.io~1service-account.name");
            if name.and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        _ => {}
    }
    errs
}

/// The bytes of one `data` value, if it is valid base64.
fn decoded(value: &Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(value.as_str()?).ok()
}

fn docker_config(obj: &Value, key: &str, errs: &mut Vec<FieldError>) {
    match obj.get("data").and_then(|d| d.get(key)) {
        None => errs.push(FieldError::required(data_path(key), "")),
        Some(value) => {
            if let Some(bytes) = decoded(value) {
                if let Err(e) = serde_json::from_slice::<Value>(&bytes) {
                    errs.push(FieldError::invalid_str(
                        data_path(key),
                        "<secret contents redacted>",
                        e.to_string(),
                    ));
                }
            }
        }
    }
}

/// What may not change: `type`, and `data` once `immutable: true` (which itself stays).
pub fn validate_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ty = |o: &Value| o.get("type").and_then(Value::as_str).unwrap_or(TYPE_OPAQUE).to_string();
    if ty(old) != ty(new) {
        errs.push(FieldError::invalid_str("type", &ty(new), FIELD_IMMUTABLE));
    }
    if old.get("immutable").and_then(Value::as_bool) == Some(true) {
        if new.get("immutable").and_then(Value::as_bool) != Some(true) {
            errs.push(FieldError::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        if old.get("data") != new.get("data") {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errs
}

/// `key:  N bytes` lines for `describe`, sorted by key: sizes, never values.
pub fn data_sizes(obj: &Value) -> Vec<(String, usize)> {
    let mut sizes: Vec<(String, usize)> = obj
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), decoded(v).map_or(0, |b| b.len())))
        .collect();
    sizes.sort();
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{apply_defaults as defaults, by_gvk, validate as validate_object, validate_update as update};
    use serde_json::json;

    fn secret(extra: Value) -> Value {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}});
        if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(extra.clone());
        }
        s
    }

    fn causes(obj: &Value) -> Vec<String> {
        let info = by_gvk("v1", "Secret").expect("Secret is served");
        match validate_object(info, obj) {
            Ok(()) => Vec::new(),
            Err(e) => e
                .details
                .map(|d| {
                    d.causes
                        .into_iter()
                        .map(|c| format!("{}: {}", c.field, c.message))
                        .collect()
                })
                .unwrap_or_else(|| vec![e.message]),
        }
    }

    #[test]
    fn string_data_is_merged_into_data_and_dropped() {
        let info = by_gvk("v1", "Secret").expect("Secret is served");
        let mut s = secret(json!({"data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new", "b": "x y"}}));
        defaults(info, &mut s);
        assert_eq!(s["data"], json!({"a": "bmV3", "keep": "eA==", "b": "eCB5"}));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], json!("Opaque"));
        let mut only_plain = secret(json!({"stringData": {"k": "v"}, "type": "kubernetes.io/basic-auth"}));
        defaults(info, &mut only_plain);
        assert_eq!(only_plain["data"], json!({"k": "dg=="}));
        assert_eq!(only_plain["type"], json!("kubernetes.io/basic-auth"));
    }

    #[test]
    fn types_require_their_keys() {
        assert!(causes(&secret(json!({"type": "Opaque", "data": {"a": "eA=="}}))).is_empty());
        let tls = causes(&secret(
            json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
        ));
        assert_eq!(tls.len(), 1, "{tls:?}");
        assert!(tls[0].starts_with("data[tls.key]"), "{tls:?}");
        let docker = causes(&secret(json!({"type": "kubernetes.io/dockerconfigjson", "data": {}})));
        assert!(docker[0].starts_with("data[.dockerconfigjson]"), "{docker:?}");
        let not_json = causes(&secret(
            json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "bm9wZQ=="}}),
        ));
        assert!(not_json[0].contains("<secret contents redacted>"), "{not_json:?}");
        let key = causes(&secret(json!({"data": {"bad key": "eA=="}})));
        assert!(key[0].starts_with("data[bad key]"), "{key:?}");
        let b64 = causes(&secret(json!({"data": {"k": "%%%"}})));
        assert!(!b64.is_empty(), "bad base64 is refused");
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_SECRET_SIZE + 1]);
        let too_big = causes(&secret(json!({"data": {"k": big}})));
        assert!(too_big[0].starts_with("data: Too long"), "{too_big:?}");
    }

    #[test]
    fn type_and_immutable_data_cannot_change() {
        let info = by_gvk("v1", "Secret").expect("Secret is served");
        let old = secret(json!({"type": "Opaque", "data": {"a": "eA=="}, "immutable": true}));
        let retyped = secret(json!({"type": "kubernetes.io/basic-auth", "data": {"a": "eA=="}, "immutable": true}));
        let e = update(info, &old, &retyped).expect_err("type is immutable");
        assert!(e.message.contains("type: Invalid value"), "{}", e.message);
        let changed = secret(json!({"type": "Opaque", "data": {"a": "eQ=="}, "immutable": true}));
        assert!(update(info, &old, &changed).is_err());
        assert_eq!(data_sizes(&old), vec![("a".to_string(), 1)]);
    }
}
