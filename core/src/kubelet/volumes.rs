//! # Volumes (mirrors the kubelet's volume manager and its in-tree volume plugins)
//!
//! A container's filesystem dies with the container. A **volume** is a directory that
//! outlives it: the kubelet prepares it on the node before the pod's containers start, and
//! the container runtime bind-mounts it into every container that lists it in
//! `volumeMounts`. Upstream keeps them under `/var/lib/kubelet/pods/<uid>/volumes/<plugin>/<name>`;
//! kulisse keeps them under its own root dir (`<data dir>/kubelet/<node>/pods/<uid>/volumes/...`)
//! with the same plugin names:
//!
//! | source | what the kubelet prepares |
//! |---|---|
//! | `emptyDir` | an empty directory (`kubernetes.io~empty-dir`), shared by the pod's containers, deleted with the pod; `medium: Memory` puts it on a tmpfs (kulisse uses `/dev/shm`, where upstream mounts a tmpfs of its own) |
//! | `configMap`, `secret` | one file per key (or per `items[]` entry, at its `path`), with `defaultMode`/`mode`; written by the [atomic writer](super::atomic_writer) and rewritten when the object changes; secrets live on the memory-backed root, as upstream puts them on tmpfs |
//! | `downwardAPI` | one file per item: a field of the pod (`metadata.labels`, ...) or a resource of a container |
//! | `projected` | configMap, secret and downwardAPI sources merged into one directory |
//! | `hostPath` | nothing to write: the node's own path, checked against `type` (`Directory`, `FileOrCreate`, ...) |
//!
//! The pod's containers wait (`ContainerCreating`) until every volume is ready. A ConfigMap
//! or Secret that does not exist (and is not `optional`) leaves the pod waiting, with a
//! `FailedMount` event in upstream's words (`MountVolume.SetUp failed for volume "conf" :
//! configmap "app" not found`); the kubelet tries again on every sync, so creating the object
//! lets the pod start. configMap, secret, downwardAPI and projected volumes are always
//! mounted read-only, as upstream does since 1.10.
//!
//! `subPath` mounts one entry of the volume instead of the whole directory; the kubelet
//! refuses a subPath that resolves (through symlinks a container may have planted) outside
//! the volume, the fix upstream made for CVE-2017-1002101.
//!
//! Where kulisse differs: `sizeLimit` is accepted but not enforced (upstream's eviction
//! manager evicts a pod whose emptyDir outgrows it); the root directories are only readable
//! by the kubelet's user (`0700`), and files get `defaultMode` (default `0644`) as upstream.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::atomic_writer::{self, FileContent, Payload};
use super::downward::{self, PodFacts};
use super::sources::{self, ConfigSources, Lookup};
use crate::runtime::Mount;

/// Where volumes live on the node: a disk-backed root and a memory-backed one. Nothing is
/// created until a pod has a volume, and the directories go again when the last pod with
/// volumes does.
#[derive(Debug, Clone)]
pub(crate) struct VolumeDirs {
    root: PathBuf,
    pub disk: PathBuf,
    pub memory: PathBuf,
    /// The kubelet made the root up for itself: remove it when it is empty.
    own_root: bool,
}

fn private_dir(p: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

impl VolumeDirs {
    /// Volumes under `root` (the kubelet's root dir); memory-backed ones on `/dev/shm` when
    /// the machine has it, else under `root/memory`.
    pub fn new(root: &Path, own_root: bool) -> VolumeDirs {
        let disk = root.join("pods");
        let shm = Path::new("/dev/shm");
        let memory = if shm.is_dir() {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in root.as_os_str().as_encoded_bytes() {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            shm.join(format!("kulisse-{h:016x}"))
        } else {
            root.join("memory")
        };
        VolumeDirs {
            root: root.to_path_buf(),
            disk,
            memory,
            own_root,
        }
    }

    /// Create the (private, `0700`) directories of pod `uid`.
    fn ensure_pod(&self, uid: &str) -> std::io::Result<()> {
        private_dir(&self.root)?;
        private_dir(&self.disk.join(uid))?;
        private_dir(&self.memory.join(uid))
    }

    fn volume_dir(&self, memory: bool, uid: &str, plugin: &str, name: &str) -> PathBuf {
        let base = if memory { &self.memory } else { &self.disk };
        base.join(uid).join("volumes").join(plugin).join(name)
    }

    /// Delete everything of pod `uid`.
    pub fn remove_pod(&self, uid: &str) {
        if uid.is_empty() || uid.contains('/') || uid.starts_with('.') {
            return;
        }
        for base in [&self.disk, &self.memory] {
            let _ = fs::remove_dir_all(base.join(uid));
            let _ = fs::remove_dir(base); // only when no other pod has volumes
        }
        if self.own_root {
            let _ = fs::remove_dir(&self.root);
        }
    }

    /// The uids that have a directory.
    pub fn pod_uids(&self) -> Vec<String> {
        let mut uids: Vec<String> = [&self.disk, &self.memory]
            .iter()
            .flat_map(|b| fs::read_dir(b).into_iter().flatten().flatten())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        uids.sort();
        uids.dedup();
        uids
    }

    /// Remove both roots (a kubelet that made them up for itself, at the end).
    pub fn remove_all(&self) {
        if self.own_root {
            let _ = fs::remove_dir_all(&self.memory);
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// What one volume should be on the node.
#[derive(Debug, Clone)]
pub(crate) enum Want {
    /// An `emptyDir`.
    Dir(PathBuf),
    /// A `hostPath` and its `type`.
    Host(PathBuf, String),
    /// Files written by the atomic writer.
    Files(PathBuf, Payload),
}

/// The work of one volume: its name, its source kind and what to make.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub name: String,
    pub kind: &'static str,
    pub want: Want,
}

/// What a sync has to do about the pod's volumes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub work: Vec<Work>,
    /// The first volume that cannot be set up: `(volume, message)`.
    pub error: Option<(String, String)>,
    /// Some source is not known yet (caches still listing).
    pub waiting: bool,
}

struct SetUp {
    host_path: PathBuf,
    /// Written files (for configMap, secret, downwardAPI, projected).
    payload: Option<Payload>,
    /// A directory the container may write (emptyDir, a hostPath directory).
    writable_dir: bool,
}

/// The volumes of one pod that are set up.
#[derive(Default)]
pub(crate) struct PodVolumes {
    set_up: BTreeMap<String, SetUp>,
    /// The `FailedMount` message last reported (to report each failure once).
    pub reported_error: Option<String>,
}

/// Everything a volume's resolution reads.
pub(crate) struct Context<'a> {
    pub pod: &'a Value,
    pub uid: &'a str,
    pub namespace: &'a str,
    pub dirs: &'a VolumeDirs,
    pub sources: &'a ConfigSources,
    pub facts: &'a PodFacts<'a>,
}

enum Resolved {
    Ready(Want),
    NotYet,
    Failed(String),
}

/// The source kind of a volume (its only source key).
pub(crate) fn kind_of(vol: &Value) -> &'static str {
    crate::objects::validation::SUPPORTED_VOLUME_SOURCES
        .iter()
        .copied()
        .find(|k| vol.get(*k).is_some())
        .unwrap_or("unknown")
}

fn mode_of(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|m| u32::try_from(m & 0o777).ok())
}

/// The files of a configMap or secret source (also a projected one).
fn config_files(
    ctx: &Context,
    src: &Value,
    secret: bool,
    default_mode: u32,
    out: &mut Payload,
) -> Result<bool, String> {
    let name_key = if secret && src.get("secretName").is_some() {
        "secretName"
    } else {
        "name"
    };
    let name = src.get(name_key).and_then(Value::as_str).unwrap_or("");
    let optional = src.get("optional").and_then(Value::as_bool).unwrap_or(false);
    let (what, lookup) = if secret {
        ("secret", ctx.sources.secret(ctx.namespace, name))
    } else {
        ("configmap", ctx.sources.config_map(ctx.namespace, name))
    };
    let obj = match lookup {
        Lookup::NotYet => return Ok(false),
        Lookup::Missing if optional => return Ok(true),
        Lookup::Missing => return Err(format!("{what} \"{name}\" not found")),
        Lookup::Found(obj) => obj,
    };
    let mode = mode_of(src, "defaultMode").unwrap_or(default_mode);
    let items = src.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.is_empty() {
        for key in sources::keys_of(&obj, secret) {
            if let Some(data) = sources::value_of(&obj, secret, &key) {
                out.insert(key, FileContent { data, mode });
            }
        }
        return Ok(true);
    }
    for item in &items {
        let key = item.get("key").and_then(Value::as_str).unwrap_or("");
        let path = item.get("path").and_then(Value::as_str).unwrap_or(key);
        match sources::value_of(&obj, secret, key) {
            Some(data) => {
                let mode = mode_of(item, "mode").unwrap_or(mode);
                out.insert(path.to_string(), FileContent { data, mode });
            }
            None if optional => {}
            None if secret => return Err(format!("references non-existent secret key: {key}")),
            None => return Err(format!("configmap references non-existent config key: {key}")),
        }
    }
    Ok(true)
}

/// The files of a downwardAPI source.
fn downward_files(ctx: &Context, src: &Value, default_mode: u32, out: &mut Payload) -> Result<(), String> {
    let mode = mode_of(src, "defaultMode").unwrap_or(default_mode);
    for item in src.get("items").and_then(Value::as_array).into_iter().flatten() {
        let path = item.get("path").and_then(Value::as_str).unwrap_or("");
        let value = if let Some(fr) = item.get("fieldRef") {
            let field = fr.get("fieldPath").and_then(Value::as_str).unwrap_or("");
            downward::field_value(ctx.pod, field, ctx.facts)?
        } else if let Some(rf) = item.get("resourceFieldRef") {
            let container = rf.get("containerName").and_then(Value::as_str).unwrap_or("");
            downward::resource_value(ctx.pod, container, rf, ctx.facts)?
        } else {
            continue;
        };
        let mode = mode_of(item, "mode").unwrap_or(mode);
        out.insert(
            path.to_string(),
            FileContent {
                data: value.into_bytes(),
                mode,
            },
        );
    }
    Ok(())
}

/// The files of a projected volume: each source in turn.
fn projected_files(ctx: &Context, src: &Value, out: &mut Payload) -> Result<bool, String> {
    let mode = mode_of(src, "defaultMode").unwrap_or(0o644);
    let mut complete = true;
    for s in src.get("sources").and_then(Value::as_array).into_iter().flatten() {
        if let Some(cm) = s.get("configMap") {
            complete &= config_files(ctx, cm, false, mode, out)?;
        } else if let Some(sec) = s.get("secret") {
            complete &= config_files(ctx, sec, true, mode, out)?;
        } else if let Some(d) = s.get("downwardAPI") {
            downward_files(ctx, d, mode, out)?;
        }
    }
    Ok(complete)
}

fn resolve(ctx: &Context, vol: &Value, name: &str) -> Resolved {
    let kind = kind_of(vol);
    let src = vol.get(kind).unwrap_or(&Value::Null);
    let files = |plugin: &str, memory: bool, result: Result<bool, String>, payload: Payload| match result {
        Ok(true) => Resolved::Ready(Want::Files(ctx.dirs.volume_dir(memory, ctx.uid, plugin, name), payload)),
        Ok(false) => Resolved::NotYet,
        Err(e) => Resolved::Failed(e),
    };
    let mut payload = Payload::new();
    match kind {
        "emptyDir" => match src.get("medium").and_then(Value::as_str).unwrap_or("") {
            m @ ("" | "Memory") => Resolved::Ready(Want::Dir(ctx.dirs.volume_dir(
                m == "Memory",
                ctx.uid,
                "kubernetes.io~empty-dir",
                name,
            ))),
            other => Resolved::Failed(format!(
                "kulisse supports emptyDir medium \"\" (the node's disk) and \"Memory\", not {other:?}"
            )),
        },
        "hostPath" => Resolved::Ready(Want::Host(
            PathBuf::from(src.get("path").and_then(Value::as_str).unwrap_or("")),
            src.get("type").and_then(Value::as_str).unwrap_or("").to_string(),
        )),
        "configMap" => {
            let r = config_files(ctx, src, false, 0o644, &mut payload);
            files("kubernetes.io~configmap", false, r, payload)
        }
        "secret" => {
            let r = config_files(ctx, src, true, 0o644, &mut payload);
            files("kubernetes.io~secret", true, r, payload)
        }
        "downwardAPI" => {
            let r = downward_files(ctx, src, 0o644, &mut payload).map(|()| true);
            files("kubernetes.io~downward-api", false, r, payload)
        }
        "projected" => {
            let r = projected_files(ctx, src, &mut payload);
            files("kubernetes.io~projected", true, r, payload)
        }
        other => Resolved::Failed(format!("kulisse's kubelet cannot set up {other} volumes")),
    }
}

/// `hostPath` `type` checks (upstream's `checkType`), creating what `...OrCreate` asks for.
fn check_host_path(path: &Path, ty: &str) -> Result<(), String> {
    let shown = path.display();
    let meta = fs::metadata(path);
    let fail = |what: &str| Err(format!("hostPath type check failed: {shown} is not {what}"));
    match ty {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_err() => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|e| format!("creating {shown}: {e}")),
        "FileOrCreate" if meta.is_err() => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            fs::File::create(path)
                .map(drop)
                .map_err(|e| format!("creating {shown}: {e}"))
        }
        "Directory" | "DirectoryOrCreate" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => fail("a directory"),
        "File" | "FileOrCreate" if !meta.as_ref().is_ok_and(|m| m.is_file()) => fail("a file"),
        "Socket" if !meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) => fail("a socket file"),
        "CharDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => fail("a character device"),
        "BlockDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()) => fail("a block device"),
        _ => Ok(()),
    }
}

fn spec_volumes(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

impl PodVolumes {
    /// Compare the pod's volumes with what is set up: the work to do, or why it cannot be done.
    pub fn plan(&self, ctx: &Context) -> Plan {
        let mut plan = Plan::default();
        for vol in spec_volumes(ctx.pod) {
            let name = vol.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let kind = kind_of(&vol);
            let want = match resolve(ctx, &vol, &name) {
                Resolved::Ready(want) => want,
                Resolved::NotYet => {
                    plan.waiting = true;
                    continue;
                }
                Resolved::Failed(message) => {
                    plan.error.get_or_insert((name, message));
                    continue;
                }
            };
            let needed = match (self.set_up.get(&name), &want) {
                (None, _) => true,
                (Some(s), Want::Files(_, payload)) => s.payload.as_ref() != Some(payload),
                _ => false,
            };
            if needed {
                plan.work.push(Work { name, kind, want });
            }
        }
        plan
    }

    /// Do the work of a plan for pod `uid` on the node's filesystem.
    pub fn apply(&mut self, dirs: &VolumeDirs, uid: &str, work: &[Work]) -> Result<(), (String, String)> {
        if let Err(e) = dirs.ensure_pod(uid) {
            let name = work.first().map(|w| w.name.clone()).unwrap_or_default();
            return Err((name, format!("creating the pod's volume directory: {e}")));
        }
        for w in work {
            let fail = |e: String| (w.name.clone(), e);
            let set_up = match &w.want {
                Want::Dir(path) => {
                    // Anyone in the pod may write an emptyDir (0777, as upstream).
                    fs::DirBuilder::new()
                        .recursive(true)
                        .create(path)
                        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o777)))
                        .map_err(|e| fail(format!("creating {}: {e}", path.display())))?;
                    SetUp {
                        host_path: path.clone(),
                        payload: None,
                        writable_dir: true,
                    }
                }
                Want::Host(path, ty) => {
                    check_host_path(path, ty).map_err(fail)?;
                    SetUp {
                        host_path: path.clone(),
                        payload: None,
                        writable_dir: path.is_dir(),
                    }
                }
                Want::Files(path, payload) => {
                    atomic_writer::write(path, payload)
                        .map_err(|e| fail(format!("writing {}: {e}", path.display())))?;
                    SetUp {
                        host_path: path.clone(),
                        payload: Some(payload.clone()),
                        writable_dir: false,
                    }
                }
            };
            self.set_up.insert(w.name.clone(), set_up);
        }
        Ok(())
    }

    /// Is every volume of the pod set up?
    pub fn ready(&self, pod: &Value) -> bool {
        spec_volumes(pod).iter().all(|v| {
            v.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| self.set_up.contains_key(n))
        })
    }

    /// The mounts of container `c` (its `volumeMounts`), for the runtime.
    pub fn mounts(&self, c: &Value) -> Result<Vec<Mount>, String> {
        let mut mounts = Vec::new();
        for m in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten() {
            let name = m.get("name").and_then(Value::as_str).unwrap_or("");
            let path = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
            let set_up = self
                .set_up
                .get(name)
                .ok_or_else(|| format!("volume {name:?} is not set up"))?;
            if !path.starts_with('/') {
                return Err(format!("the mount path {path:?} of volume {name:?} is not absolute"));
            }
            let host_path = match m.get("subPath").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                Some(sub) => sub_path(set_up, sub)?,
                None => set_up.host_path.clone(),
            };
            mounts.push(Mount {
                container_path: path.to_string(),
                host_path: host_path.display().to_string(),
                readonly: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false) || set_up.payload.is_some(),
                volume: name.to_string(),
            });
        }
        Ok(mounts)
    }
}

/// The host path of a `subPath` inside a volume: created (as a directory) if missing in a
/// writable volume, and refused if it resolves outside the volume.
fn sub_path(set_up: &SetUp, sub: &str) -> Result<PathBuf, String> {
    let joined = set_up.host_path.join(sub);
    if set_up.writable_dir && fs::symlink_metadata(&joined).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o777)
            .create(&joined)
            .map_err(|e| format!("creating subPath {sub:?}: {e}"))?;
    }
    let real = fs::canonicalize(&joined).map_err(|e| format!("subPath {sub:?}: {e}"))?;
    let base = fs::canonicalize(&set_up.host_path).map_err(|e| format!("volume directory: {e}"))?;
    if !real.starts_with(&base) {
        return Err(format!(
            "subpath {sub:?} resolves outside the volume ({})",
            real.display()
        ));
    }
    Ok(real)
}

/// `conf (configMap), data (emptyDir)`: the pod's volumes in words, for spans.
pub(crate) fn describe(work: &[Work]) -> String {
    work.iter()
        .map(|w| format!("{} ({})", w.name, w.kind))
        .collect::<Vec<_>>()
        .join(", ")
}
