//! # Informers (mirrors client-go's `SharedInformer` and its `Reflector`)
//!
//! A controller needs to know the state of many objects all the time, but asking the API
//! server over and over would crush it. An informer instead:
//!
//! 1. **lists** the objects once, and remembers the list's `resourceVersion`;
//! 2. **watches** from exactly that version, applying each event to a local **cache**;
//! 3. calls the registered **handlers** with each change (controllers turn these into
//!    keys on their work queue);
//! 4. if the watch breaks, watches again from the last version it saw; if that version is
//!    too old (`410 Expired`), lists again and tells the handlers what changed meanwhile;
//! 5. every `resync` period, hands every cached object to the handlers again, so a
//!    controller that dropped something gets a second chance.
//!
//! Reads by controllers hit the cache ([`Cache`]), never the API server. That is why
//! Kubernetes scales to thousands of nodes: each component keeps its own up-to-date copy
//! and only *writes* go to the API server.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;

use super::{Client, ClientError, ListParams, WatchEvent};
use crate::objects::{self, ResourceInfo};

/// A change seen by an informer.
#[derive(Debug, Clone)]
pub enum InformerEvent {
    Added(Arc<Value>),
    Modified {
        old: Arc<Value>,
        new: Arc<Value>,
    },
    Deleted(Arc<Value>),
    /// The periodic resync: "here is this object again, in case you missed it".
    Resync(Arc<Value>),
}

impl InformerEvent {
    /// The object as it is now (for a delete: as it was last seen).
    pub fn object(&self) -> &Arc<Value> {
        match self {
            InformerEvent::Added(o) | InformerEvent::Deleted(o) | InformerEvent::Resync(o) => o,
            InformerEvent::Modified { new, .. } => new,
        }
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects: how caches and queues name objects.
pub fn key_of(obj: &Value) -> String {
    match objects::namespace(obj) {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", objects::name(obj).unwrap_or("")),
        _ => objects::name(obj).unwrap_or("").to_string(),
    }
}

/// The informer's local copy of the objects. Cheap to clone; reads never block on the network.
#[derive(Clone, Default)]
pub struct Cache {
    /// Objects by key. A std `RwLock`: held only for map operations, never across an await.
    objects: Arc<RwLock<HashMap<String, Arc<Value>>>>,
}

impl Cache {
    /// One object by `namespace/name` (or `name`).
    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<Value>> {
        self.objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Cached objects that pass `keep`.
    pub fn filter(&self, keep: impl Fn(&Value) -> bool) -> Vec<Arc<Value>> {
        self.objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|o| keep(o))
            .cloned()
            .collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.objects.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, obj: Arc<Value>) -> Option<Arc<Value>> {
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_of(&obj), obj)
    }

    fn remove(&self, key: &str) -> Option<Arc<Value>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner()).remove(key)
    }

    fn replace(&self, new: HashMap<String, Arc<Value>>) -> HashMap<String, Arc<Value>> {
        std::mem::replace(&mut *self.objects.write().unwrap_or_else(|p| p.into_inner()), new)
    }
}

/// A function called with every change, on the informer's task. Keep it quick: enqueue a key.
pub type Handler = Box<dyn Fn(&InformerEvent) + Send + Sync>;

/// Lists and watches one resource, keeping a [`Cache`] and calling handlers.
pub struct Informer {
    client: Client,
    info: &'static ResourceInfo,
    namespace: Option<String>,
    params: ListParams,
    cache: Cache,
    handlers: Vec<Handler>,
    resync: Option<Duration>,
    synced_tx: watch::Sender<bool>,
    synced_rx: watch::Receiver<bool>,
}

impl Informer {
    /// An informer for `info` in `namespace` (`None`: all namespaces).
    pub fn new(client: Client, info: &'static ResourceInfo, namespace: Option<String>) -> Self {
        let (synced_tx, synced_rx) = watch::channel(false);
        Informer {
            client,
            info,
            namespace,
            params: ListParams::default(),
            cache: Cache::default(),
            handlers: Vec::new(),
            resync: None,
            synced_tx,
            synced_rx,
        }
    }

    /// Only objects matching these selectors (e.g. a kubelet watches `spec.nodeName=node-1`).
    pub fn with_params(mut self, params: ListParams) -> Self {
        self.params = params;
        self
    }

    /// Hand every cached object to the handlers again every `period`.
    pub fn with_resync(mut self, period: Duration) -> Self {
        self.resync = Some(period);
        self
    }

    /// Register a handler; call before [`Informer::run`].
    pub fn on_event(&mut self, handler: impl Fn(&InformerEvent) + Send + Sync + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// The cache (fills once the informer runs).
    pub fn cache(&self) -> Cache {
        self.cache.clone()
    }

    /// Resolves once the first list is in the cache.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced_rx.clone()
    }

    fn emit(&self, ev: InformerEvent) {
        for h in &self.handlers {
            h(&ev);
        }
    }

    /// List and watch until `shutdown` becomes true. Reconnects with a back-off on errors.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let result = tokio::select! {
                r = self.list_and_watch() => r,
                _ = shutdown.changed() => return,
            };
            match result {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::debug!(resource = self.info.plural, "informer: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One list, then watches until the version expires (Ok: list again) or an error
    /// (the reflector's `ListAndWatch`).
    async fn list_and_watch(&self) -> Result<(), ClientError> {
        let mut rv = self.list_into_cache().await?;
        let _ = self.synced_tx.send(true);
        loop {
            let mut events = self
                .client
                .watch(self.info, self.namespace.as_deref(), &self.params, Some(&rv))
                .await?;
            let mut resync = self
                .resync
                .map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
            loop {
                let next = match resync.as_mut() {
                    Some(timer) => tokio::select! {
                        ev = events.next() => ev,
                        _ = timer.tick() => {
                            for obj in self.cache.list() {
                                self.emit(InformerEvent::Resync(obj));
                            }
                            continue;
                        }
                    },
                    None => events.next().await,
                };
                let Some(ev) = next else { break }; // the server ended the watch: watch again
                if !self.handle_watch_event(ev?, &mut rv)? {
                    return Ok(()); // too old: list again
                }
            }
        }
    }

    /// List, replace the cache with the result and emit the difference as events (the
    /// reflector's `list` and the store's `Replace`). Returns the list's resourceVersion, where
    /// the watch starts.
    async fn list_into_cache(&self) -> Result<String, ClientError> {
        let list = self
            .client
            .list(self.info, self.namespace.as_deref(), &self.params)
            .await?;
        let rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("0")
            .to_string();
        let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        let fresh: HashMap<String, Arc<Value>> = items.into_iter().map(|o| (key_of(&o), Arc::new(o))).collect();
        let old = self.cache.replace(fresh.clone());
        for (k, obj) in &fresh {
            match old.get(k) {
                None => self.emit(InformerEvent::Added(obj.clone())),
                Some(prev) if prev.pointer("/metadata/resourceVersion") != obj.pointer("/metadata/resourceVersion") => {
                    self.emit(InformerEvent::Modified {
                        old: prev.clone(),
                        new: obj.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        for (k, obj) in old {
            if !fresh.contains_key(&k) {
                self.emit(InformerEvent::Deleted(obj));
            }
        }
        Ok(rv)
    }

    /// Apply one watch event to the cache and emit it (the reflector's `watchHandler`),
    /// moving `rv` on. `Ok(false)`: the version is too old (410), list again.
    fn handle_watch_event(&self, ev: WatchEvent, rv: &mut String) -> Result<bool, ClientError> {
        if let Some(v) = ev.object.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            *rv = v.to_string();
        }
        match ev.kind.as_str() {
            "ADDED" | "MODIFIED" => {
                let obj = Arc::new(ev.object);
                match self.cache.insert(obj.clone()) {
                    Some(old) => self.emit(InformerEvent::Modified { old, new: obj }),
                    None => self.emit(InformerEvent::Added(obj)),
                }
            }
            "DELETED" => {
                let key = key_of(&ev.object);
                let last = self.cache.remove(&key).unwrap_or_else(|| Arc::new(ev.object));
                self.emit(InformerEvent::Deleted(last));
            }
            "ERROR" => {
                let code = ev.object.get("code").and_then(Value::as_u64).unwrap_or(0);
                if code == 410 {
                    return Ok(false);
                }
                return Err(ClientError::Protocol(format!("watch error: {}", ev.object)));
            }
            _ => {} // BOOKMARK: only the version matters
        }
        Ok(true)
    }
}
