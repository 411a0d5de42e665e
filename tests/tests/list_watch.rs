//! Lists and watches at a revision, against an API server in this process: paging reads one
//! snapshot, `resourceVersion`/`resourceVersionMatch` pick the state, watches send
//! bookmarks, and a watch-list (`sendInitialEvents`) ends its initial events with the
//! annotated bookmark — checked with raw HTTP and with the kube crate's streaming-list watcher.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use http::Method;
use kulisse_core::client::Client;
use kulisse_tests::inproc::ApiServerFixture;
use serde_json::{Value, json};

const CM: &str = "/api/v1/namespaces/default/configmaps";

/// How long to wait for one expected watch line before failing (a hang guard only).
const LINE_WAIT: Duration = Duration::from_secs(30);

async fn raw(client: &Client, path: &str) -> (u16, Value) {
    let resp = client
        .request(Method::GET, path, &[("accept", "application/json")], None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let body: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("GET {path}: the answer is not JSON ({e}): {:?}", resp.body));
    (resp.status.as_u16(), body)
}

async fn create_cm(client: &Client, name: &str) -> Value {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": "1"}});
    client
        .json(Method::POST, CM, Some("application/json"), Some(&body))
        .await
        .unwrap_or_else(|e| panic!("create configmap {name}: {e}"))
        .0
}

fn rv(obj: &Value) -> i64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Continue tokens are URL-safe base64, but escape them anyway as a client would.
fn query(token: &str) -> String {
    token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_list_reads_one_snapshot_and_expires_as_upstream() {
    let api = ApiServerFixture::start().await;
    let c = &api.client;
    for i in 0..7 {
        create_cm(c, &format!("cm-{i}")).await;
    }
    let (code, first) = raw(c, &format!("{CM}?limit=3")).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(names(&first), ["cm-0", "cm-1", "cm-2"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 4, "{first}");
    let snapshot = first["metadata"]["resourceVersion"].clone();
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();

    // Writes between the pages: a new name in the middle, a delete, an update.
    create_cm(c, "cm-2a").await;
    let configmaps = kulisse_core::objects::by_resource("", "v1", "configmaps").expect("configmaps");
    c.delete(configmaps, Some("default"), "cm-4", None)
        .await
        .expect("delete cm-4");
    let (mut seen, mut token) = (names(&first), Some(token));
    while let Some(t) = token.take() {
        let (code, page) = raw(c, &format!("{CM}?limit=3&continue={}", query(&t))).await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(
            page["metadata"]["resourceVersion"], snapshot,
            "every page reads the first page's revision"
        );
        seen.extend(names(&page));
        token = page["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>(),
        "the pages together are the snapshot: each object once, none written later"
    );

    // A malformed token is a 400; a token with a resourceVersion too.
    let (code, status) = raw(c, &format!("{CM}?limit=3&continue=not-a-token")).await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")), "{status}");
    let second = first["metadata"]["continue"].as_str().expect("token");
    let (code, status) = raw(c, &format!("{CM}?limit=3&resourceVersion=5&continue={}", query(second))).await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "specifying resource version is not allowed when using continue"
    );

    // Compact past the snapshot: the token is too old. The Status carries a new token that
    // continues at the newest state.
    let now = api.store.current_revision().await.expect("revision");
    api.store.compact(now).await.expect("compact");
    let (code, status) = raw(c, &format!("{CM}?limit=3&continue={}", query(second))).await;
    assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")), "{status}");
    assert!(
        status["message"].as_str().is_some_and(|m| m.starts_with(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results."
        )),
        "{status}"
    );
    let fresh = status["metadata"]["continue"]
        .as_str()
        .expect("a new token in the Status");
    let (code, rest) = raw(c, &format!("{CM}?limit=10&continue={}", query(fresh))).await;
    assert_eq!(code, 200, "{rest}");
    assert_eq!(
        names(&rest),
        ["cm-2a", "cm-3", "cm-5", "cm-6"],
        "the rest, at the newest state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_honours_resource_version_and_match() {
    let api = ApiServerFixture::start().await;
    let c = &api.client;
    let a = create_cm(c, "a").await;
    let then = rv(&a);
    create_cm(c, "b").await;

    // Exact: the state as it was, from the store's history.
    let (code, old) = raw(c, &format!("{CM}?resourceVersion={then}&resourceVersionMatch=Exact")).await;
    assert_eq!(code, 200, "{old}");
    assert_eq!(names(&old), ["a"], "at revision {then} only a existed");
    assert_eq!(old["metadata"]["resourceVersion"], then.to_string());
    // The legacy rule: a resourceVersion with a limit is exact too.
    let (_, legacy) = raw(c, &format!("{CM}?resourceVersion={then}&limit=5")).await;
    assert_eq!(names(&legacy), ["a"], "{legacy}");
    // NotOlderThan, 0 and nothing: the newest state.
    for q in [
        format!("resourceVersion={then}&resourceVersionMatch=NotOlderThan"),
        "resourceVersion=0".to_string(),
        String::new(),
    ] {
        let (code, list) = raw(c, &format!("{CM}?{q}")).await;
        assert_eq!(
            (code, names(&list)),
            (200, vec!["a".to_string(), "b".to_string()]),
            "{q}: {list}"
        );
    }
    // A revision the store has not reached: 504 after a moment, as upstream.
    let future = then + 1000;
    let (code, status) = raw(
        c,
        &format!("{CM}?resourceVersion={future}&resourceVersionMatch=NotOlderThan"),
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (504, Some("Timeout")), "{status}");
    let current = api.store.current_revision().await.expect("revision");
    assert_eq!(
        status["message"],
        format!("Timeout: Too large resource version: {future}, current: {current}")
    );
    assert_eq!(status["details"]["causes"][0]["reason"], "ResourceVersionTooLarge");
    // Invalid combinations: 422 on ListOptions, in upstream's words.
    let (code, status) = raw(c, &format!("{CM}?resourceVersionMatch=Exact")).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
    );
    assert_eq!(status["details"]["kind"], "ListOptions");
    let (code, _) = raw(c, &format!("{CM}?resourceVersion=0&resourceVersionMatch=Exact")).await;
    assert_eq!(code, 422);
    // Exact at a compacted revision: 410 Expired.
    api.store.compact(current).await.expect("compact");
    let (code, status) = raw(c, &format!("{CM}?resourceVersion={then}&resourceVersionMatch=Exact")).await;
    assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")), "{status}");
    assert_eq!(
        status["message"],
        "The resourceVersion for the provided list is too old."
    );
}

/// A watch response, line by line.
struct Lines {
    stream:
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, kulisse_core::client::ClientError>> + Send>>,
    buf: Vec<u8>,
}

impl Lines {
    async fn open(client: &Client, path: &str) -> Lines {
        let stream = client
            .stream(Method::GET, path)
            .await
            .unwrap_or_else(|e| panic!("watch {path}: {e}"));
        Lines {
            stream,
            buf: Vec::new(),
        }
    }

    async fn next(&mut self) -> Value {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return serde_json::from_slice(&line).unwrap_or_else(|e| panic!("a watch line is not JSON: {e}"));
            }
            match tokio::time::timeout(LINE_WAIT, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                other => panic!("the watch ended or stalled: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_bookmarks_carry_the_current_revision() {
    let api = ApiServerFixture::start_with_bookmarks(Duration::from_millis(200)).await;
    let c = &api.client;
    let start = rv(&create_cm(c, "first").await);
    let mut watch = Lines::open(
        c,
        &format!("{CM}?watch=true&allowWatchBookmarks=true&resourceVersion={start}"),
    )
    .await;
    // Nothing changes under the watched namespace, but the store moves on.
    let elsewhere = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "elsewhere"}});
    let (written, _) = c
        .json(
            Method::POST,
            "/api/v1/namespaces/kube-system/configmaps",
            Some("application/json"),
            Some(&elsewhere),
        )
        .await
        .expect("create a configmap in another namespace");
    let target = rv(&written);
    let mut last = start;
    loop {
        let line = watch.next().await;
        assert_eq!(line["type"], "BOOKMARK", "only bookmarks are expected: {line}");
        let object = &line["object"];
        assert_eq!(
            (object["kind"].as_str(), object["apiVersion"].as_str()),
            (Some("ConfigMap"), Some("v1"))
        );
        assert_eq!(
            object["metadata"].as_object().map(|m| m.len()),
            Some(1),
            "only a resourceVersion: {line}"
        );
        let at = rv(object);
        assert!(at >= last, "bookmarks never go back: {at} after {last}");
        last = at;
        if at >= target {
            break;
        }
    }
    // A change after the bookmark arrives with a higher revision.
    let later = rv(&create_cm(c, "later").await);
    loop {
        let line = watch.next().await;
        if line["type"] == "ADDED" {
            assert_eq!(rv(&line["object"]), later);
            assert!(later > last);
            break;
        }
        assert_eq!(line["type"], "BOOKMARK", "{line}");
    }
}

/// Even with bookmarks a minute apart, one comes just before the watch's timeout, so the
/// client resumes from the newest revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bookmark_comes_before_the_timeout() {
    let api = ApiServerFixture::start().await;
    let c = &api.client;
    let start = rv(&create_cm(c, "one").await);
    let path = format!("{CM}?watch=true&allowWatchBookmarks=true&timeoutSeconds=3&resourceVersion={start}");
    let mut stream = c.stream(Method::GET, &path).await.expect("watch");
    let mut body = Vec::new();
    // The server ends the watch after 3 s; the 30 s are only a hang guard.
    while let Some(chunk) = tokio::time::timeout(LINE_WAIT, stream.next())
        .await
        .expect("the watch must end")
    {
        body.extend_from_slice(&chunk.expect("watch body"));
    }
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one bookmark, before the timeout: {lines:?}");
    assert_eq!(lines[0]["type"], "BOOKMARK");
    assert_eq!(rv(&lines[0]["object"]), start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_list_sends_state_then_end_bookmark_then_changes() {
    let api = ApiServerFixture::start().await;
    let c = &api.client;
    for name in ["x", "y"] {
        create_cm(c, name).await;
    }
    let listed = raw(c, CM).await.1;
    let list_rv = rv(&listed);
    let mut watch = Lines::open(
        c,
        &format!("{CM}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"),
    )
    .await;
    let mut added = HashSet::new();
    let end = loop {
        let line = watch.next().await;
        match line["type"].as_str() {
            Some("ADDED") => {
                assert!(added.insert(line["object"]["metadata"]["name"].as_str().unwrap_or("").to_string()))
            }
            Some("BOOKMARK") => break line,
            _ => panic!("unexpected line before the end bookmark: {line}"),
        }
    };
    assert_eq!(added, HashSet::from(["x".to_string(), "y".to_string()]));
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{end}"
    );
    assert_eq!(rv(&end["object"]), list_rv, "the bookmark carries the state's revision");
    let z = rv(&create_cm(c, "z").await);
    let line = watch.next().await;
    assert_eq!(
        (line["type"].as_str(), rv(&line["object"])),
        (Some("ADDED"), z),
        "{line}"
    );

    // Without resourceVersionMatch=NotOlderThan: 422 as upstream.
    let (code, status) = raw(c, &format!("{CM}?watch=true&sendInitialEvents=true")).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_streaming_list_watcher_gets_init_done() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher::{self, Event};

    let api = ApiServerFixture::start().await;
    for name in ["p", "q"] {
        create_cm(&api.client, name).await;
    }
    let mut config = kube::Config::new(api.url.parse().expect("fixture URL"));
    config.auth_info.token = Some(api.token.clone().into());
    let client = kube::Client::try_from(config).expect("a kube client for the fixture");
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
    let mut events = watcher::watcher(cms, watcher::Config::default().streaming_lists()).boxed();
    let mut initial = HashSet::new();
    loop {
        let event = tokio::time::timeout(LINE_WAIT, events.next())
            .await
            .expect("the streaming list must reach InitDone (it waits for the initial-events-end bookmark)")
            .expect("the watcher stream ended")
            .expect("the watcher failed");
        match event {
            Event::Init => {}
            Event::InitApply(cm) => {
                initial.insert(cm.metadata.name.unwrap_or_default());
            }
            Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, HashSet::from(["p".to_string(), "q".to_string()]));
    create_cm(&api.client, "r").await;
    let event = tokio::time::timeout(LINE_WAIT, events.next())
        .await
        .expect("the change after InitDone")
        .expect("stream")
        .expect("watcher");
    match event {
        Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("r")),
        other => panic!("expected Apply(r), got {other:?}"),
    }
}

/// The real kubectl pages with `--chunk-size` (`limit` and `continue`) and shows every
/// object exactly once.
#[test]
fn kubectl_get_in_chunks_shows_every_object_once() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cluster = kulisse_tests::cluster::Cluster::start_in(tmp.path(), &["--components", "apiserver"]);
    let Some(kubectl) = kulisse_tests::kubectl::Kubectl::for_cluster(&cluster) else {
        return;
    };
    let manifest: String = (0..9)
        .map(|i| format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: chunk-{i}\ndata:\n  n: \"{i}\"\n"))
        .collect();
    let out = kubectl.run_stdin(&["apply", "-f", "-"], Some(manifest.as_bytes()));
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl.run(&["get", "configmaps", "--chunk-size=2", "-o", "name", "-v=6"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "kubectl get --chunk-size=2: {stderr}");
    let shown: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = (0..9).map(|i| format!("configmap/chunk-{i}")).collect();
    assert_eq!(shown, expected, "every configmap once, in order");
    let pages = stderr
        .lines()
        .filter(|l| l.contains("limit=2") && l.contains("200 OK"))
        .count();
    assert_eq!(pages, 5, "9 objects in pages of 2 take 5 requests:\n{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("continue=")).count(),
        4,
        "every page after the first sends the continue token:\n{stderr}"
    );
}
