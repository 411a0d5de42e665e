//! Station ① · chapter "The store: keys, revisions, watches" (book/src/store.md, "Who wrote this revision?") · no span of its own
//!
//! # The audit log (mirrors kube-apiserver's `--audit-log-path` backend, `audit.k8s.io/v1`)
//!
//! An object in the store says *what* it is, never *who* made it so. Kubernetes answers
//! "who changed this?" with its **audit log**: for every request, the API server appends one
//! JSON line, an `audit.k8s.io/v1` `Event`, with the authenticated user, the verb, the object
//! and the outcome. Operators read it after an incident; `kulisse history` reads it to name
//! the writer of each stored revision of an object.
//!
//! Each line here is such an `Event` at level `Metadata` and stage `ResponseComplete`:
//!
//! ```text
//! {"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"…","stage":"ResponseComplete",
//!  "requestURI":"/apis/apps/v1/namespaces/default/deployments","verb":"create",
//!  "user":{"username":"kubernetes-admin","groups":["system:masters","system:authenticated"]},
//!  "objectRef":{"resource":"deployments","namespace":"default","name":"web","apiGroup":"apps","apiVersion":"v1","resourceVersion":"42"},
//!  "responseStatus":{"code":200},"requestReceivedTimestamp":"…","stageTimestamp":"…",
//!  "annotations":{"kulisse.dev/trace-id":"4bf92f3577b34da6a3ce929d0e0e4736"}}
//! ```
//!
//! Where kulisse differs from upstream, on purpose:
//!
//! - Upstream writes an event per *request* (and per stage, as its audit policy says).
//!   kulisse writes one per *successful store write*, from the storage layer, so each line
//!   names exactly one stored revision (`objectRef.resourceVersion` is the revision the write
//!   produced): a request that changed nothing leaves no line, and a request that wrote
//!   twice (a delete that first sets `deletionTimestamp`) leaves two. There is no audit
//!   policy: everything is logged at level `Metadata` (never request or response bodies,
//!   which may hold Secrets).
//! - The writer is known through a task-local ([`REQUEST`]) that the request pipeline sets
//!   after authentication; a write with no request around it (the API server's own
//!   bootstrap) is logged as upstream's loopback user `system:apiserver`.
//! - Rotation is by size only (`--audit-log-maxsize`, one old file kept as `audit.log.1`).
//!
//! Appending is one `write(2)` of one line to a file opened with `O_APPEND`, without
//! `fsync`: like upstream's log backend, the audit log is not part of a write's durability.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::auth::UserInfo;
use crate::objects::ResourceInfo;
use crate::store::Revision;

/// The user the API server's own writes are logged as (upstream's loopback client).
pub const LOOPBACK_USER: &str = "system:apiserver";
/// The audit annotation with the write's trace id, for `kulisse trace ID`.
pub const TRACE_ID_ANNOTATION: &str = "kulisse.dev/trace-id";
/// `--audit-log-maxsize`'s default, in megabytes (upstream has no default: 0, no rotation).
pub const DEFAULT_MAX_SIZE_MB: u64 = 100;

/// Who is asking and how, as the request pipeline knows it after authentication.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    pub user: UserInfo,
    pub verb: String,
    pub subresource: String,
    pub request_uri: String,
    pub received: chrono::DateTime<chrono::Utc>,
}

tokio::task_local! {
    /// The request whose handler is running, for the storage layer's audit lines.
    pub static REQUEST: RequestInfo;
}

/// An append-only audit log file, rotated by size.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<(File, u64)>,
}

impl AuditLog {
    /// Open (or create, mode 0600: it names every user) the log at `path`.
    pub fn open(path: &Path, max_size_mb: u64) -> std::io::Result<AuditLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(AuditLog {
            path: path.to_path_buf(),
            max_bytes: max_size_mb.saturating_mul(1024 * 1024),
            file: Mutex::new((file, size)),
        })
    }

    /// Log one successful store write of `info`'s object `ns/name` at `revision`.
    pub fn record(&self, info: &ResourceInfo, ns: Option<&str>, name: &str, revision: Revision, code: u16) {
        let request = REQUEST.try_with(Clone::clone).ok();
        let line = event_line(info, ns, name, revision, code, request.as_ref());
        if let Err(e) = self.append(line.as_bytes()) {
            tracing::warn!(path = %self.path.display(), "writing the audit log failed: {e}");
        }
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.max_bytes > 0 && guard.1 + line.len() as u64 > self.max_bytes {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            *guard = (open_append(&self.path)?, 0);
        }
        guard.0.write_all(line)?;
        guard.1 += line.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// One `audit.k8s.io/v1` `Event` as a JSON line (with its newline).
fn event_line(
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    revision: Revision,
    code: u16,
    request: Option<&RequestInfo>,
) -> String {
    let now = chrono::Utc::now();
    let (group, version) = (info.group, info.version);
    let mut object_ref = json!({
        "resource": info.plural, "name": name, "apiGroup": group, "apiVersion": version,
        "resourceVersion": revision.to_string(),
    });
    if let Some(ns) = ns.filter(|_| info.namespaced) {
        object_ref["namespace"] = json!(ns);
    }
    let (user, verb, uri, received) = match request {
        Some(r) => {
            if !r.subresource.is_empty() {
                object_ref["subresource"] = json!(r.subresource);
            }
            (
                json!({"username": r.user.name, "groups": r.user.groups}),
                r.verb.as_str(),
                r.request_uri.as_str(),
                r.received,
            )
        }
        None => (
            json!({"username": LOOPBACK_USER, "groups": ["system:masters"]}),
            "update",
            "",
            now,
        ),
    };
    let mut annotations = serde_json::Map::new();
    if let Some(trace) =
        kulisse_traces::propagation::traceparent_of_current().and_then(|tp| tp.split('-').nth(1).map(str::to_string))
    {
        annotations.insert(TRACE_ID_ANNOTATION.into(), Value::String(trace));
    }
    let event = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(), "stage": "ResponseComplete",
        "requestURI": uri, "verb": verb, "user": user, "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": received.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "stageTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "annotations": annotations,
    });
    let mut line = event.to_string();
    line.push('\n');
    line
}

/// What `kulisse history` needs of one audit line: the revision it wrote and by whom.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteRecord {
    pub revision: Revision,
    pub user: String,
    pub verb: String,
    pub time: String,
    pub trace_id: Option<String>,
}

/// The audit lines about `resource` `ns/name`, from the text of an audit log (lines that are
/// not audit events, or about other objects, are skipped).
pub fn records_for(text: &str, resource: &str, ns: Option<&str>, name: &str) -> Vec<WriteRecord> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| {
            let r = &e["objectRef"];
            r["resource"] == resource && r["name"] == name && r["namespace"].as_str() == ns
        })
        .filter_map(|e| {
            Some(WriteRecord {
                revision: e["objectRef"]["resourceVersion"].as_str()?.parse().ok()?,
                user: e["user"]["username"].as_str()?.to_string(),
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                time: e["stageTimestamp"].as_str().unwrap_or_default().to_string(),
                trace_id: e["annotations"][TRACE_ID_ANNOTATION].as_str().map(str::to_string),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> &'static ResourceInfo {
        crate::objects::by_gvk("apps/v1", "Deployment").expect("Deployment")
    }

    #[tokio::test]
    async fn a_write_inside_a_request_names_its_user_and_verb_and_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, DEFAULT_MAX_SIZE_MB).expect("open");
        let request = RequestInfo {
            user: UserInfo {
                name: "system:kube-scheduler".into(),
                uid: String::new(),
                groups: vec!["system:authenticated".into()],
            },
            verb: "patch".into(),
            subresource: "scale".into(),
            request_uri: "/apis/apps/v1/namespaces/default/deployments/web/scale".into(),
            received: chrono::Utc::now(),
        };
        REQUEST
            .scope(request, async { log.record(info(), Some("default"), "web", 42, 200) })
            .await;
        log.record(info(), Some("default"), "web", 43, 200);
        log.record(info(), Some("other"), "web", 44, 200);
        let text = std::fs::read_to_string(&path).expect("read");
        let event: Value = serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert_eq!(event["objectRef"]["subresource"], "scale");
        assert_eq!(event["objectRef"]["apiGroup"], "apps");
        let records = records_for(&text, "deployments", Some("default"), "web");
        let who: Vec<(Revision, &str, &str)> = records
            .iter()
            .map(|r| (r.revision, r.user.as_str(), r.verb.as_str()))
            .collect();
        assert_eq!(
            who,
            vec![(42, "system:kube-scheduler", "patch"), (43, LOOPBACK_USER, "update")]
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn the_log_rotates_to_one_old_file_at_its_size_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        let log = AuditLog {
            path: path.clone(),
            max_bytes: 2000,
            file: Mutex::new((open_append(&path).expect("open"), 0)),
        };
        for rev in 0..20 {
            log.record(info(), Some("default"), "web", rev, 200);
        }
        let old = std::fs::read_to_string(dir.path().join("audit.log.1")).expect("rotated file");
        let new = std::fs::read_to_string(&path).expect("current file");
        assert!(new.len() <= 2000 && old.len() <= 2000);
        let revisions = |t: &str| {
            records_for(t, "deployments", Some("default"), "web")
                .into_iter()
                .map(|r| r.revision)
                .collect::<Vec<_>>()
        };
        let all: Vec<Revision> = revisions(&old).into_iter().chain(revisions(&new)).collect();
        assert_eq!(all.last(), Some(&19), "the newest line is in the current file");
        assert!(all.windows(2).all(|w| w[0] + 1 == w[1]), "consecutive: {all:?}");
    }
}
