//! Pod volumes and volume mounts (`pkg/apis/core/validation/validation.go`:
//! `ValidateVolumes`, `validateVolumeSource`, `ValidateVolumeMounts`).
//!
//! A pod declares its **volumes** once, in `spec.volumes`, each with a name and exactly one
//! *source* (`emptyDir`, `configMap`, `secret`, `hostPath`, `downwardAPI`, `projected`, ...).
//! Each container then *mounts* some of them by name (`volumeMounts`), at a path of its own.
//! The rules kept here are upstream's: volume names are DNS-1123 labels and unique, a volume
//! has exactly one source, file paths inside a volume (`items[].path`, `subPath`) stay
//! inside it (relative, no `..`), file modes fit in `0777`, and a mount names a volume that
//! exists at a path no other mount of that container uses.
//!
//! Where kulisse differs: sources that need a storage system kulisse does not have
//! (`persistentVolumeClaim`, `nfs`, `csi`, ...) are refused here with `Forbidden`, instead of
//! being accepted and then failing on the node; and kulisse accepts only the sources its
//! kubelet can set up.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::*;

/// The volume sources kulisse's kubelet can set up.
pub const SUPPORTED_VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "configMap",
    "secret",
    "hostPath",
    "downwardAPI",
    "projected",
];

/// Every other volume source of the Kubernetes API (refused: kulisse has no storage for them).
const OTHER_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// `fileModeErrorMsg` of upstream.
const FILE_MODE_ERROR_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// The `type`s a `hostPath` volume may have (`""` means no check).
pub const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// The fields a `downwardAPI` volume file may name (besides `metadata.labels['k']` and
/// `metadata.annotations['k']`).
pub const DOWNWARD_VOLUME_FIELDS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

/// The resources a `resourceFieldRef` may name.
pub const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

/// `validatePathNoBacksteps`: no path segment is `..`.
fn no_backsteps(p: &str, path: &str, errs: &mut Errs) {
    if p.split('/').any(|seg| seg == "..") {
        errs.push(FieldError::invalid_str(path, p, "must not contain '..'"));
    }
}

/// `validateLocalDescendingPath`: relative, and no `..` segment.
pub(super) fn local_descending_path(p: &str, path: &str, errs: &mut Errs) {
    if p.starts_with('/') {
        errs.push(FieldError::invalid_str(path, p, "must be a relative path"));
    }
    no_backsteps(p, path, errs);
}

/// `validateLocalNonReservedPath`: a descending path that does not start with `..`
/// (the `..data` names of the atomic writer are reserved).
fn local_non_reserved_path(p: &str, path: &str, errs: &mut Errs) {
    local_descending_path(p, path, errs);
    if p.starts_with("..") && !p.starts_with("../") {
        errs.push(FieldError::invalid_str(path, p, "must not start with '..'"));
    }
}

fn file_mode(obj: &Value, k: &str, path: &str, errs: &mut Errs) {
    if let Some(mode) = get(obj, k).and_then(Value::as_i64)
        && !(0..=0o777).contains(&mode)
    {
        errs.push(FieldError::invalid(
            child(path, k),
            &Value::from(mode),
            FILE_MODE_ERROR_MSG,
        ));
    }
}

/// `validateKeyToPath` for each of `items`; returns the paths.
fn key_to_paths(items: &[Value], path: &str, errs: &mut Errs) -> Vec<String> {
    let mut paths = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        if get_str(item, "key").is_none_or(str::is_empty) {
            errs.push(FieldError::required(child(&p, "key"), ""));
        }
        match get_str(item, "path") {
            None | Some("") => errs.push(FieldError::required(child(&p, "path"), "")),
            Some(fp) => {
                local_non_reserved_path(fp, &child(&p, "path"), errs);
                paths.push(fp.to_string());
            }
        }
        file_mode(item, "mode", &p, errs);
    }
    paths
}

/// `validateObjectFieldSelector`: one of `supported`, or a subscripted
/// `metadata.labels['k']` / `metadata.annotations['k']`.
pub(super) fn object_field_selector(fr: &Value, path: &str, supported: &[&str], errs: &mut Errs) {
    match get_str(fr, "fieldPath") {
        None | Some("") => errs.push(FieldError::required(child(path, "fieldPath"), "")),
        Some(f) => {
            let subscripted = ["metadata.labels['", "metadata.annotations['"]
                .iter()
                .any(|pre| f.starts_with(pre) && f.ends_with("']") && f.len() > pre.len() + 2);
            if !subscripted && !supported.contains(&f) {
                errs.push(FieldError::not_supported(
                    child(path, "fieldPath"),
                    &Value::from(f),
                    supported,
                ));
            }
        }
    }
}

/// `validateContainerResourceFieldSelector`; a volume must name the container.
pub(super) fn resource_field_selector(rf: &Value, path: &str, volume: bool, errs: &mut Errs) {
    if volume && get_str(rf, "containerName").is_none_or(str::is_empty) {
        errs.push(FieldError::required(child(path, "containerName"), ""));
    }
    match get_str(rf, "resource") {
        None | Some("") => errs.push(FieldError::required(child(path, "resource"), "")),
        Some(r) if !RESOURCE_FIELDS.contains(&r) => {
            errs.push(FieldError::not_supported(
                child(path, "resource"),
                &Value::from(r),
                RESOURCE_FIELDS,
            ));
        }
        Some(_) => {}
    }
}

/// `validateDownwardAPIVolumeFile` for each of `items`; returns the paths.
fn downward_items(items: &[Value], path: &str, errs: &mut Errs) -> Vec<String> {
    let mut paths = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        match get_str(item, "path") {
            None | Some("") => errs.push(FieldError::required(child(&p, "path"), "")),
            Some(fp) => {
                local_non_reserved_path(fp, &child(&p, "path"), errs);
                paths.push(fp.to_string());
            }
        }
        match (get(item, "fieldRef"), get(item, "resourceFieldRef")) {
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                p.clone(),
                &Value::from("resource"),
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            )),
            (Some(fr), None) => object_field_selector(fr, &child(&p, "fieldRef"), DOWNWARD_VOLUME_FIELDS, errs),
            (None, Some(rf)) => resource_field_selector(rf, &child(&p, "resourceFieldRef"), true, errs),
            (None, None) => errs.push(FieldError::required(
                p.clone(),
                "one of fieldRef and resourceFieldRef is required",
            )),
        }
        file_mode(item, "mode", &p, errs);
    }
    paths
}

/// One `configMap` or `secret` source (also inside `projected`): its name field, items and
/// modes.
fn config_source(src: &Value, name_field: &str, path: &str, errs: &mut Errs) -> Vec<String> {
    if get_str(src, name_field).is_none_or(str::is_empty) {
        errs.push(FieldError::required(child(path, name_field), ""));
    }
    file_mode(src, "defaultMode", path, errs);
    key_to_paths(get_arr(src, "items"), &child(path, "items"), errs)
}

/// `validateProjectedVolumeSource`: exactly one source per entry, and no path twice.
fn projected_source(src: &Value, path: &str, errs: &mut Errs) {
    file_mode(src, "defaultMode", path, errs);
    let mut all_paths: HashSet<String> = HashSet::new();
    const KINDS: &[&str] = &[
        "secret",
        "configMap",
        "downwardAPI",
        "serviceAccountToken",
        "clusterTrustBundle",
        "podCertificate",
    ];
    for (i, s) in get_arr(src, "sources").iter().enumerate() {
        let sp = index(&child(path, "sources"), i);
        let present: Vec<&str> = KINDS.iter().copied().filter(|k| get(s, k).is_some()).collect();
        if present.is_empty() {
            errs.push(FieldError::required(
                sp.clone(),
                "must specify exactly 1 volume type per source",
            ));
            continue;
        }
        for extra in &present[1..] {
            errs.push(FieldError::forbidden(
                child(&sp, extra),
                "may not specify more than 1 volume type per source",
            ));
        }
        let kind = present[0];
        let kp = child(&sp, kind);
        let src = get(s, kind).unwrap_or(&Value::Null);
        let paths = match kind {
            "secret" | "configMap" => config_source(src, "name", &kp, errs),
            "downwardAPI" => downward_items(get_arr(src, "items"), &child(&kp, "items"), errs),
            _ => {
                errs.push(FieldError::forbidden(
                    kp.clone(),
                    format!(
                        "kulisse's kubelet does not project {kind} (it projects secret, configMap and downwardAPI)"
                    ),
                ));
                Vec::new()
            }
        };
        for p in paths {
            if !all_paths.insert(p.clone()) {
                errs.push(FieldError::invalid_str(kp.clone(), &p, "conflicting duplicate paths"));
            }
        }
    }
}

/// `validateVolumeSource`: exactly one source, then that source's own rules.
fn volume_source(vol: &Value, path: &str, errs: &mut Errs) {
    let present: Vec<&str> = SUPPORTED_VOLUME_SOURCES
        .iter()
        .chain(OTHER_SOURCES)
        .copied()
        .filter(|k| get(vol, k).is_some())
        .collect();
    if present.is_empty() {
        errs.push(FieldError::required(path, "must specify a volume type"));
        return;
    }
    for extra in &present[1..] {
        errs.push(FieldError::forbidden(
            child(path, extra),
            "may not specify more than 1 volume type",
        ));
    }
    let kind = present[0];
    let sp = child(path, kind);
    let src = get(vol, kind).unwrap_or(&Value::Null);
    match kind {
        "emptyDir" => {
            if let Some(limit) = get(src, "sizeLimit")
                && crate::objects::quantity::whole_units(limit).is_ok_and(|n| n < 0)
            {
                errs.push(FieldError::forbidden(
                    child(&sp, "sizeLimit"),
                    "SizeLimit field must be a valid resource quantity",
                ));
            }
        }
        "configMap" => {
            config_source(src, "name", &sp, errs);
        }
        "secret" => {
            config_source(src, "secretName", &sp, errs);
        }
        "hostPath" => match get_str(src, "path") {
            None | Some("") => errs.push(FieldError::required(child(&sp, "path"), "")),
            Some(p) => {
                no_backsteps(p, &child(&sp, "path"), errs);
                one_of(src, "type", &sp, HOST_PATH_TYPES, errs);
            }
        },
        "downwardAPI" => {
            file_mode(src, "defaultMode", &sp, errs);
            downward_items(get_arr(src, "items"), &child(&sp, "items"), errs);
        }
        "projected" => projected_source(src, &sp, errs),
        other => errs.push(FieldError::forbidden(
            sp.clone(),
            format!(
                "kulisse has no storage for {other} volumes; its kubelet sets up {}",
                SUPPORTED_VOLUME_SOURCES.join(", ")
            ),
        )),
    }
}

/// `ValidateVolumes` at `path` (`spec.volumes`): returns the names of the volumes, for the
/// mounts to be checked against.
pub(super) fn validate_volumes(volumes: &[Value], path: &str, errs: &mut Errs) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = index(path, i);
        volume_source(vol, &p, errs);
        let name_path = child(&p, "name");
        match get_str(vol, "name") {
            None | Some("") => errs.push(FieldError::required(name_path, "")),
            Some(name) => {
                for msg in is_dns1123_label(name) {
                    errs.push(FieldError::invalid_str(name_path.clone(), name, msg));
                }
                if !names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(name_path, &Value::from(name)));
                }
            }
        }
    }
    names
}

/// `ValidateVolumeMounts` of one container at `path` (`spec.containers[0].volumeMounts`).
pub(super) fn validate_volume_mounts(mounts: &[Value], volumes: &HashSet<String>, path: &str, errs: &mut Errs) {
    let mut mount_points: HashMap<&str, usize> = HashMap::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = index(path, i);
        let name = get_str(m, "name").unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
        if !volumes.contains(name) {
            errs.push(FieldError::not_found(child(&p, "name"), &Value::from(name)));
        }
        let mount_path = get_str(m, "mountPath").unwrap_or("");
        if mount_path.is_empty() {
            errs.push(FieldError::required(child(&p, "mountPath"), ""));
        }
        if mount_points.insert(mount_path, i).is_some() {
            errs.push(FieldError::invalid_str(
                child(&p, "mountPath"),
                mount_path,
                "must be unique",
            ));
        }
        if let Some(sub) = get_str(m, "subPath").filter(|s| !s.is_empty()) {
            local_descending_path(sub, &child(&p, "subPath"), errs);
        }
        one_of(
            m,
            "mountPropagation",
            &p,
            &["Bidirectional", "HostToContainer", "None"],
            errs,
        );
    }
}
