//! # A container's environment (mirrors the kubelet's `makeEnvironmentVariables`)
//!
//! The pod spec gives a container its environment in two lists, and the kubelet builds the
//! final list just before it creates the container:
//!
//! 1. `envFrom`: every key of a ConfigMap (`configMapRef`) or Secret (`secretRef`) becomes a
//!    variable, its name prefixed with `prefix` if one is given. (Upstream skips keys that
//!    are not valid variable names, with an `InvalidEnvironmentVariableNames` event; since
//!    Kubernetes 1.32 any printable ASCII but `=` is valid, and ConfigMap and Secret keys
//!    never hold `=`, so every key is taken.)
//! 2. `env`: each entry is a literal `value`, or `valueFrom` one key of a ConfigMap
//!    (`configMapKeyRef`) or Secret (`secretKeyRef`), a field of the pod (`fieldRef`:
//!    `metadata.name`, `status.podIP`, ...) or a resource of a container (`resourceFieldRef`:
//!    `limits.memory`, ...). An `env` entry wins over an `envFrom` key of the same name.
//!    `$(NAME)` in a value expands to a variable defined before it (`$$(NAME)` is a literal
//!    `$(NAME)`); `command` and `args` expand the same way.
//!
//! A ConfigMap, Secret or key that is missing (and not `optional`) means the container cannot
//! be created: it waits with reason **`CreateContainerConfigError`** and upstream's message
//! (`couldn't find key color in ConfigMap default/app`, `configmap "app" not found`), and the
//! kubelet tries again on later syncs, so creating the object lets the container start.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::downward::{self, PodFacts};
use super::sources::{self, ConfigSources, Lookup};
use crate::runtime::EnvVar;

/// Why the environment could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvError {
    /// The ConfigMap and Secret caches have not listed yet: try again shortly.
    NotYet,
    /// `CreateContainerConfigError` with this message.
    Config(String),
}

struct Inputs<'a> {
    pod: &'a Value,
    container: &'a str,
    namespace: &'a str,
    sources: &'a ConfigSources,
    facts: &'a PodFacts<'a>,
}

/// A ConfigMap or Secret by name; `Ok(None)` when it is missing and `optional`.
fn object(inp: &Inputs, secret: bool, name: &str, optional: bool) -> Result<Option<std::sync::Arc<Value>>, EnvError> {
    let lookup = if secret {
        inp.sources.secret(inp.namespace, name)
    } else {
        inp.sources.config_map(inp.namespace, name)
    };
    match lookup {
        Lookup::NotYet => Err(EnvError::NotYet),
        Lookup::Found(obj) => Ok(Some(obj)),
        Lookup::Missing if optional => Ok(None),
        Lookup::Missing => Err(EnvError::Config(format!(
            "{} \"{name}\" not found",
            if secret { "secret" } else { "configmap" }
        ))),
    }
}

/// Every key of the `envFrom` sources, prefixed.
fn env_from(inp: &Inputs, c: &Value, env: &mut BTreeMap<String, String>) -> Result<(), EnvError> {
    for ef in c.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
        let prefix = ef.get("prefix").and_then(Value::as_str).unwrap_or("");
        let (secret, r) = match (ef.get("configMapRef"), ef.get("secretRef")) {
            (Some(r), _) => (false, r),
            (None, Some(r)) => (true, r),
            (None, None) => continue,
        };
        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
        let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
        let Some(obj) = object(inp, secret, name, optional)? else {
            continue;
        };
        for key in sources::keys_of(&obj, secret) {
            let value = sources::value_of(&obj, secret, &key).unwrap_or_default();
            env.insert(format!("{prefix}{key}"), String::from_utf8_lossy(&value).into_owned());
        }
    }
    Ok(())
}

/// The value of one `valueFrom`; `Ok(None)`: an optional source that is missing.
fn value_from(inp: &Inputs, vf: &Value) -> Result<Option<String>, EnvError> {
    if let Some(fr) = vf.get("fieldRef") {
        let path = fr.get("fieldPath").and_then(Value::as_str).unwrap_or("");
        return downward::field_value(inp.pod, path, inp.facts)
            .map(Some)
            .map_err(EnvError::Config);
    }
    if let Some(rf) = vf.get("resourceFieldRef") {
        let container = rf
            .get("containerName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        return downward::resource_value(inp.pod, container.unwrap_or(inp.container), rf, inp.facts)
            .map(Some)
            .map_err(EnvError::Config);
    }
    let (secret, r) = match (vf.get("configMapKeyRef"), vf.get("secretKeyRef")) {
        (Some(r), _) => (false, r),
        (None, Some(r)) => (true, r),
        (None, None) => return Ok(Some(String::new())),
    };
    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
    let key = r.get("key").and_then(Value::as_str).unwrap_or("");
    let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
    let Some(obj) = object(inp, secret, name, optional)? else {
        return Ok(None);
    };
    match sources::value_of(&obj, secret, key) {
        Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
        None if optional => Ok(None),
        None => Err(EnvError::Config(format!(
            "couldn't find key {key} in {} {}/{name}",
            if secret { "Secret" } else { "ConfigMap" },
            inp.namespace
        ))),
    }
}

/// `$(NAME)` → the value of `NAME` if defined (else left as is); `$$` → `$`
/// (upstream's `third_party/forked/golang/expansion`).
pub(crate) fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment of container `c` of `pod`.
pub(crate) fn make(
    pod: &Value,
    c: &Value,
    namespace: &str,
    sources: &ConfigSources,
    facts: &PodFacts,
) -> Result<Vec<EnvVar>, EnvError> {
    let container = c.get("name").and_then(Value::as_str).unwrap_or("");
    let inp = Inputs {
        pod,
        container,
        namespace,
        sources,
        facts,
    };
    let mut from = BTreeMap::new();
    env_from(&inp, c, &mut from)?;
    let mut vars: Vec<EnvVar> = from.into_iter().map(|(name, value)| EnvVar { name, value }).collect();
    let mut defined: HashMap<String, String> = vars.iter().map(|v| (v.name.clone(), v.value.clone())).collect();
    for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = e.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = match e.get("valueFrom") {
            Some(vf) => match value_from(&inp, vf)? {
                Some(v) => v,
                None => continue,
            },
            None => expand(e.get("value").and_then(Value::as_str).unwrap_or(""), &defined),
        };
        defined.insert(name.to_string(), value.clone());
        match vars.iter_mut().find(|v| v.name == name) {
            Some(v) => v.value = value,
            None => vars.push(EnvVar {
                name: name.to_string(),
                value,
            }),
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_references_expand_as_upstream() {
        let vars: HashMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)", &vars), "x-$(B)");
        assert_eq!(expand("$$(A) costs $5", &vars), "$(A) costs $5");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("", &vars), "");
    }
}
