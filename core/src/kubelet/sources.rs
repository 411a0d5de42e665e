//! # ConfigMaps and Secrets on the node (mirrors the kubelet's `configmap.Manager` and
//! `secret.Manager`)
//!
//! A pod that mounts a ConfigMap or takes an environment variable from a Secret needs the
//! object's data on the node, and needs to see changes to it (a mounted ConfigMap is
//! updated in place). Upstream's kubelet watches exactly the objects its pods reference
//! (`configMapAndSecretChangeDetectionStrategy: Watch`), and the API server's Node
//! authorizer lets it read only those.
//!
//! kulisse does the same: the first time one of its pods needs a ConfigMap (or a Secret),
//! the kubelet starts an informer on that one object (`fieldSelector=metadata.name=X` in its
//! namespace, which the Node authorizer allows for an object a pod of the node uses), and
//! reads from its cache from then on. A kubelet whose pods need none never watches any, so
//! thousands of simulated nodes cost nothing extra. Pod workers look at the cache on every
//! sync, so a change reaches the pod's files within a relist period.
//!
//! Where kulisse differs: an object's informer runs until the kubelet stops, even once no
//! pod uses it any more (upstream stops watching an object no pod references).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::watch;

use crate::client::informer::{Cache, Informer};
use crate::client::{Client, ListParams};
use crate::objects;

/// The answer of a lookup.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    Found(Arc<Value>),
    /// The object does not exist (the cache is complete, and it is not there).
    Missing,
    /// The cache has not listed the objects yet: ask again later.
    NotYet,
}

struct Watched {
    cache: Cache,
    synced: watch::Receiver<bool>,
}

/// Lazily started caches of the cluster's ConfigMaps and Secrets.
pub(crate) struct ConfigSources {
    client: Client,
    shutdown: watch::Receiver<bool>,
    /// One informer per object, by `Kind/namespace/name`.
    watched: Mutex<HashMap<String, Arc<Watched>>>,
}

impl ConfigSources {
    pub fn new(client: Client, shutdown: watch::Receiver<bool>) -> Self {
        ConfigSources {
            client,
            shutdown,
            watched: Mutex::new(HashMap::new()),
        }
    }

    fn start(&self, kind: &str, namespace: &str, name: &str) -> Watched {
        let info = objects::by_gvk("v1", kind).expect("a built-in kind");
        let params = ListParams {
            field_selector: Some(format!("metadata.name={name}")),
            ..ListParams::default()
        };
        let informer = Informer::new(self.client.clone(), info, Some(namespace.to_string())).with_params(params);
        let watched = Watched {
            cache: informer.cache(),
            synced: informer.synced(),
        };
        tokio::spawn(informer.run(self.shutdown.clone()));
        watched
    }

    /// The cache of `kind` `namespace/name`, its informer started on first use.
    fn watched(&self, kind: &str, namespace: &str, name: &str) -> Arc<Watched> {
        let mut all = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(format!("{kind}/{namespace}/{name}"))
            .or_insert_with(|| Arc::new(self.start(kind, namespace, name)))
            .clone()
    }

    fn lookup(watched: &Watched, namespace: &str, name: &str) -> Lookup {
        if !*watched.synced.borrow() {
            return Lookup::NotYet;
        }
        match watched.cache.get(&format!("{namespace}/{name}")) {
            Some(obj) => Lookup::Found(obj),
            None => Lookup::Missing,
        }
    }

    /// The ConfigMap `namespace/name`.
    pub fn config_map(&self, namespace: &str, name: &str) -> Lookup {
        Self::lookup(&self.watched("ConfigMap", namespace, name), namespace, name)
    }

    /// The Secret `namespace/name`.
    pub fn secret(&self, namespace: &str, name: &str) -> Lookup {
        Self::lookup(&self.watched("Secret", namespace, name), namespace, name)
    }
}

/// The bytes of `key` in a ConfigMap (`data`, else base64 `binaryData`) or a Secret
/// (base64 `data`); `None` when there is no such key.
pub(crate) fn value_of(obj: &Value, secret: bool, key: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = |v: &Value| {
        v.as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
    };
    if secret {
        return obj.pointer("/data").and_then(|d| d.get(key)).and_then(b64);
    }
    if let Some(s) = obj.pointer("/data").and_then(|d| d.get(key)).and_then(Value::as_str) {
        return Some(s.as_bytes().to_vec());
    }
    obj.pointer("/binaryData").and_then(|d| d.get(key)).and_then(b64)
}

/// Every key of a ConfigMap (`data` and `binaryData`) or a Secret (`data`), sorted.
pub(crate) fn keys_of(obj: &Value, secret: bool) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let fields: &[&str] = if secret { &["data"] } else { &["data", "binaryData"] };
    for f in fields {
        if let Some(map) = obj.get(*f).and_then(Value::as_object) {
            keys.extend(map.keys().cloned());
        }
    }
    keys.sort();
    keys.dedup();
    keys
}
