//! # The atomic writer (mirrors `pkg/volume/util/atomic_writer.go`)
//!
//! A ConfigMap, Secret, downward API or projected volume is a directory of files that the
//! kubelet rewrites whenever the source changes, while the container may be reading it. A
//! reader must never see half of an update (the new `tls.crt` with the old `tls.key`). The
//! kubelet's trick, which kulisse copies:
//!
//! ```text
//! <volume dir>/
//!   ..2026_12_05_08_24_35.123456789/   every file of one version of the payload
//!       app.conf
//!   ..data -> ..2026_12_05_08_24_35.123456789     one symlink names the current version
//!   app.conf -> ..data/app.conf                    what the container opens
//! ```
//!
//! An update writes a whole new timestamped directory, points a temporary symlink
//! `..data_tmp` at it and **renames** that over `..data`; a rename is atomic, so a reader
//! that opens `app.conf` resolves either the old version or the new one, whole. Then the
//! user-visible symlinks of new files are added, those of removed files dropped, and the old
//! directory is deleted. Names starting with `..` are reserved for this machinery, which is
//! why validation refuses item paths starting with `..`.
//!
//! A container that mounted the volume directory sees the update at once; one that mounted a
//! single file with `subPath` keeps the file it started with (as upstream).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path};

/// One file of a payload: its bytes and its mode (`0644`, or what `defaultMode`/`mode` say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileContent {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → content.
pub(crate) type Payload = BTreeMap<String, FileContent>;

const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

fn check_path(p: &str) -> io::Result<()> {
    let path = Path::new(p);
    let fine = !p.is_empty() && !p.starts_with("..") && path.components().all(|c| matches!(c, Component::Normal(_)));
    if fine {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file path {p:?} in a volume payload"),
        ))
    }
}

/// The payload currently on disk in `dir` (`None` when there is none yet).
fn current(dir: &Path, payload: &Payload) -> Option<Payload> {
    let data = dir.join(DATA_DIR);
    fs::read_link(&data).ok()?;
    let mut found = Payload::new();
    for path in payload.keys() {
        let file = data.join(path);
        let meta = fs::metadata(&file).ok()?;
        found.insert(
            path.clone(),
            FileContent {
                data: fs::read(&file).ok()?,
                mode: meta.permissions().mode() & 0o777,
            },
        );
    }
    Some(found)
}

/// The first component of each path: the names the user-visible symlinks have.
fn top_level(payload: &Payload) -> Vec<String> {
    let mut names: Vec<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    names.dedup();
    names
}

fn new_version_dir(dir: &Path) -> io::Result<String> {
    let stamp = chrono::Utc::now().format("..%Y_%m_%d_%H_%M_%S.%f").to_string();
    for n in 0..100u32 {
        let name = if n == 0 { stamp.clone() } else { format!("{stamp}{n}") };
        match fs::DirBuilder::new().mode(0o755).create(dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name for a new payload directory"))
}

fn write_files(version: &Path, payload: &Payload) -> io::Result<()> {
    for (path, content) in payload {
        let file = version.join(path);
        if let Some(parent) = file.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(parent)?;
        }
        fs::write(&file, &content.data)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(content.mode))?;
    }
    Ok(())
}

/// Write `payload` into `dir` the atomic way. Returns false when the files on disk were
/// already exactly these (nothing written).
pub(crate) fn write(dir: &Path, payload: &Payload) -> io::Result<bool> {
    for p in payload.keys() {
        check_path(p)?;
    }
    fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let old_version = fs::read_link(dir.join(DATA_DIR)).ok();
    let old_names = current_names(dir);
    if old_version.is_some() && current(dir, payload).as_ref() == Some(payload) && old_names == top_level(payload) {
        return Ok(false);
    }
    let version = new_version_dir(dir)?;
    write_files(&dir.join(&version), payload)?;
    let _ = fs::remove_file(dir.join(DATA_TMP));
    std::os::unix::fs::symlink(&version, dir.join(DATA_TMP))?;
    fs::rename(dir.join(DATA_TMP), dir.join(DATA_DIR))?;
    let names = top_level(payload);
    for name in &names {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)?;
        }
    }
    for name in old_names.iter().filter(|n| !names.contains(n)) {
        let _ = fs::remove_file(dir.join(name));
    }
    if let Some(old) = old_version.filter(|o| o.as_os_str() != version.as_str()) {
        let _ = fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// The user-visible names in `dir` now (symlinks not starting with `..`), sorted.
fn current_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with(".."))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileContent {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn writes_swaps_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        assert!(write(&dir, &payload(&[("a.conf", "one", 0o644), ("sub/b", "bee", 0o600)])).unwrap());
        assert_eq!(fs::read_to_string(dir.join("a.conf")).unwrap(), "one");
        assert_eq!(fs::read_to_string(dir.join("sub/b")).unwrap(), "bee");
        let mode = fs::metadata(dir.join("sub/b")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = fs::read_link(dir.join(DATA_DIR)).unwrap();
        // The same payload again writes nothing.
        assert!(!write(&dir, &payload(&[("a.conf", "one", 0o644), ("sub/b", "bee", 0o600)])).unwrap());
        // An update swaps `..data`, drops `sub` and removes the old version.
        assert!(write(&dir, &payload(&[("a.conf", "two", 0o644)])).unwrap());
        assert_eq!(fs::read_to_string(dir.join("a.conf")).unwrap(), "two");
        assert!(fs::symlink_metadata(dir.join("sub")).is_err());
        assert!(!dir.join(&first).exists());
        let versions: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..2"))
            .collect();
        assert_eq!(versions.len(), 1);
        assert!(write(&dir, &payload(&[("../x", "no", 0o644)])).is_err());
        assert!(write(&dir, &payload(&[("..data", "no", 0o644)])).is_err());
    }
}
