//! Strategic merge patch end to end: raw `PATCH` requests with
//! `Content-Type: application/strategic-merge-patch+json` against kulisse's API server (in
//! process, over a real embedded store, no controllers to change objects behind the test's
//! back), and the real `kubectl patch` / `kubectl apply` (client-side, three-way) when
//! kubectl is installed.
//!
//! kubectl (client-go) sends credentials only over TLS, so the kubectl test runs the API
//! server on HTTPS with its own CA, as `kulisse up` does.

use std::path::Path;
use std::process::Command;

use kulisse_core::client::kubeconfig::Kubeconfig;
use kulisse_tests::cluster::{http_with_ca, text};
use kulisse_tests::inproc::ApiServerFixture;
use serde_json::{Value, json};

const SMP: &str = "application/strategic-merge-patch+json";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";

struct Api {
    url: String,
    auth: String,
    ca: Option<Vec<u8>>,
}

impl Api {
    fn new(f: &ApiServerFixture) -> Api {
        Api {
            url: f.url.clone(),
            auth: format!("Bearer {}", f.token),
            ca: f.ca_pem.clone(),
        }
    }

    fn call(&self, method: &str, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).expect("encode");
        let (code, text) = http_with_ca(
            &self.url,
            self.ca.as_deref(),
            method,
            path,
            &[("Authorization", &self.auth), ("Content-Type", content_type)],
            &bytes,
        );
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (code, v)
    }

    fn create(&self, collection: &str, obj: Value) -> Value {
        let (code, v) = self.call("POST", collection, "application/json", &obj);
        assert_eq!(code, 201, "create: {v}");
        v
    }

    fn get(&self, path: &str) -> Value {
        let (code, v) = self.call("GET", path, "application/json", &Value::Null);
        assert_eq!(code, 200, "get {path}: {v}");
        v
    }

    fn patch(&self, path: &str, patch: Value) -> Value {
        let (code, v) = self.call("PATCH", path, SMP, &patch);
        assert_eq!(code, 200, "patch {patch}: {v}");
        v
    }
}

fn web_deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "web", "image": "busybox:1",
                     "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                     "ports": [{"containerPort": 8080}]},
                    {"name": "sidecar", "image": "busybox:1", "args": ["sleep", "3600"]}
                ]}
            }
        }
    })
}

fn container_names(d: &Value) -> Vec<String> {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string()
}

fn assert_no_directives(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                assert!(!k.starts_with('$'), "a patch directive ({k}) was stored: {v}");
                assert_no_directives(c);
            }
        }
        Value::Array(l) => l.iter().for_each(assert_no_directives),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_over_http() {
    let f = ApiServerFixture::start().await;
    let api = Api::new(&f);
    let path = format!("{DEPLOY}/web");
    tokio::task::spawn_blocking(move || {
        let created = api.create(DEPLOY, web_deployment("web"));

        // One env var of one container: everything else stays.
        let d = api.patch(
            &path,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "env": [{"name": "X", "value": "changed"}]}
            ]}}}}),
        );
        assert_eq!(container_names(&d), ["web", "sidecar"]);
        let web = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            web["env"],
            json!([{"name": "X", "value": "changed"}, {"name": "Y", "value": "2"}])
        );
        assert_eq!(web["image"], "busybox:1");
        assert_eq!(web["ports"][0]["containerPort"], 8080);
        assert_ne!(rv(&d), rv(&created), "a change is a new resourceVersion");

        // An empty patch is a no-op: no write, same resourceVersion.
        let same = api.patch(&path, json!({}));
        assert_eq!(rv(&same), rv(&d));
        assert_eq!(same, d);
        // A patch that sets what is already there is a no-op too.
        let same = api.patch(
            &path,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:1"}]}}}}),
        );
        assert_eq!(rv(&same), rv(&d));

        // Reorder, then delete one container.
        let d = api.patch(
            &path,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]
            }}}}),
        );
        assert_eq!(container_names(&d), ["sidecar", "web"]);
        let d = api.patch(
            &path,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
        );
        assert_eq!(container_names(&d), ["web"]);

        // RollingUpdate → Recreate: a plain merge keeps `rollingUpdate` (defaulted by the
        // server), which validation rejects; `$retainKeys` drops it, as kubectl sends it.
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let (code, status) = api.call(
            "PATCH",
            &path,
            SMP,
            &json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(code, 422, "{status}");
        assert_eq!(status["reason"], "Invalid");
        let d = api.patch(
            &path,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}}),
        );
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));

        // Nothing of the patches' directives was stored.
        let stored = api.get(&path);
        assert_no_directives(&stored);
        assert_eq!(stored, d);
    })
    .await
    .expect("test body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_other_kinds_and_errors() {
    let f = ApiServerFixture::start().await;
    let api = Api::new(&f);
    tokio::task::spawn_blocking(move || {
        // metadata.finalizers is a set: add, then remove one with $deleteFromPrimitiveList.
        let cms = "/api/v1/namespaces/default/configmaps";
        api.create(
            cms,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}),
        );
        let c = api.patch(
            &format!("{cms}/c"),
            json!({"metadata": {"finalizers": ["example.com/a", "example.com/b"]}, "data": {"b": "2"}}),
        );
        assert_eq!(c["metadata"]["finalizers"], json!(["example.com/a", "example.com/b"]));
        assert_eq!(c["data"], json!({"a": "1", "b": "2"}));
        let c = api.patch(
            &format!("{cms}/c"),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}, "data": {"a": null}}),
        );
        assert_eq!(c["metadata"]["finalizers"], json!(["example.com/b"]));
        assert_eq!(c["data"], json!({"b": "2"}));
        assert_no_directives(&c);

        // Service ports merge by `port`.
        let svcs = "/api/v1/namespaces/default/services";
        api.create(
            svcs,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                   "spec": {"selector": {"app": "web"}, "ports": [
                       {"name": "http", "port": 80, "targetPort": 8080},
                       {"name": "https", "port": 443, "targetPort": 8443}]}}),
        );
        let s = api.patch(
            &format!("{svcs}/s"),
            json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}),
        );
        let ports = s["spec"]["ports"].as_array().expect("ports");
        assert_eq!(ports.len(), 2, "{s}");
        assert_eq!(ports[0]["targetPort"], 8080);
        assert_eq!(ports[1]["targetPort"], 9443);
        assert_eq!(ports[1]["name"], "https");

        // Errors: Status objects a learner can read.
        api.create(DEPLOY, web_deployment("bad"));
        let path = format!("{DEPLOY}/bad");
        let (code, st) = api.call("PATCH", &path, SMP, &json!({"spec": {"$patch": "explode"}}));
        assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{st}");
        assert!(st["message"].as_str().unwrap_or("").contains("spec.$patch"), "{st}");
        let (code, st) = api.call(
            "PATCH",
            &path,
            SMP,
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        );
        assert_eq!(code, 422, "{st}");
        assert!(st["message"].as_str().unwrap_or("").contains("name"), "{st}");
        let (code, st) = api.call(
            "PATCH",
            &path,
            SMP,
            &json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
        );
        assert_eq!((code, st["reason"].as_str()), (400, Some("BadRequest")), "{st}");
        let (code, st) = api.call("PATCH", &path, SMP, &json!(["not", "an", "object"]));
        assert_eq!(code, 400, "{st}");
        let (code, st) = api.call("PATCH", &format!("{DEPLOY}/missing"), SMP, &json!({}));
        assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")), "{st}");
        // Nothing was written by the failed patches.
        assert_eq!(api.get(&path)["metadata"]["generation"], 1);
    })
    .await
    .expect("test body");
}

/// The real kubectl, or `None` (loudly) when it is not installed; with `CI=true` a missing
/// kubectl fails the test.
fn kubectl() -> Option<&'static str> {
    let bin = "/usr/bin/kubectl";
    if Path::new(bin).exists() {
        return Some(bin);
    }
    kulisse_tests::require::missing(&format!(
        "kubectl is not installed at {bin}: the kubectl part of strategic_patch needs it"
    ))
}

struct Kubectl {
    bin: &'static str,
    kubeconfig: String,
    cache: String,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
            .expect("run kubectl");
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args);
        assert!(ok, "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}");
        stdout
    }

    /// `kubectl apply -f file`; falls back to `--validate=false` (and says so) when kubectl
    /// cannot fetch the OpenAPI schema it validates with.
    fn apply(&self, file: &str) -> String {
        let (ok, stdout, stderr) = self.run(&["apply", "-f", file]);
        if ok {
            return stdout;
        }
        assert!(
            stderr.contains("openapi") || stderr.contains("validate"),
            "kubectl apply -f {file} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        eprintln!("kubectl apply needed --validate=false; kubectl said: {stderr}");
        self.ok(&["apply", "--validate=false", "-f", file])
    }
}

const APPLIED_V1: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: applied
  labels: {app: applied}
spec:
  replicas: 1
  selector:
    matchLabels: {app: applied}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: applied}
    spec:
      containers:
      - name: web
        image: busybox:1
        env:
        - {name: FOO, value: \"1\"}
        - {name: BAR, value: \"2\"}
      - name: sidecar
        image: busybox:1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_patch_and_client_side_apply() {
    let Some(bin) = kubectl() else { return };
    // HTTPS with the cluster's own CA: kubectl sends its token only over TLS.
    let f = ApiServerFixture::start_tls().await;
    let api = Api::new(&f);
    let tmp = tempfile::tempdir().expect("temp dir");
    let kubeconfig = tmp.path().join("kubeconfig");
    let ca = String::from_utf8(f.ca_pem.clone().expect("TLS fixture has a CA")).expect("PEM is text");
    Kubeconfig::for_cluster(&f.url, &f.token, Some(&ca))
        .write(&kubeconfig)
        .expect("write kubeconfig");
    let k = Kubectl {
        bin,
        kubeconfig: kubeconfig.display().to_string(),
        cache: tmp.path().join("cache").display().to_string(),
    };
    let dir = tmp.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        // kubectl patch (a strategic merge patch by default).
        api.create(DEPLOY, web_deployment("web"));
        let out = k.ok(&[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:2"}]}}}}"#,
        ]);
        assert_eq!(out.trim(), "deployment.apps/web patched", "{out}");
        let d = api.get(&format!("{DEPLOY}/web"));
        assert_eq!(container_names(&d), ["web", "sidecar"]);
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:2");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["env"][1]["name"], "Y");
        // The same patch again changes nothing.
        let out = k.ok(&[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:2"}]}}}}"#,
        ]);
        assert_eq!(out.trim(), "deployment.apps/web patched (no change)", "{out}");

        // Client-side apply: created, unchanged (no new resourceVersion), configured.
        let file = dir.join("applied.yaml");
        std::fs::write(&file, APPLIED_V1).expect("write manifest");
        let file = file.display().to_string();
        let out = k.apply(&file);
        assert_eq!(out.trim(), "deployment.apps/applied created", "{out}");
        let first = api.get(&format!("{DEPLOY}/applied"));
        assert!(
            first["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string(),
            "{first}"
        );
        let out = k.apply(&file);
        assert_eq!(out.trim(), "deployment.apps/applied unchanged", "{out}");
        assert_eq!(rv(&api.get(&format!("{DEPLOY}/applied"))), rv(&first));

        // Change the file: new image for web, env BAR and the sidecar removed, a new
        // container, and the strategy switched to Recreate. kubectl computes a three-way
        // patch with $patch: delete, $setElementOrder and $retainKeys.
        let v2 = APPLIED_V1
            .replace("    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n", "    type: Recreate\n")
            .replace(
                "        image: busybox:1\n        env:\n        - {name: FOO, value: \"1\"}\n        - {name: BAR, value: \"2\"}\n      - name: sidecar\n        image: busybox:1\n",
                "        image: busybox:3\n        env:\n        - {name: FOO, value: \"1\"}\n      - name: log\n        image: busybox:1\n",
            );
        assert_ne!(v2, APPLIED_V1);
        let file2 = dir.join("applied-v2.yaml");
        std::fs::write(&file2, &v2).expect("write manifest");
        let file2 = file2.display().to_string();
        let out = k.apply(&file2);
        assert_eq!(out.trim(), "deployment.apps/applied configured", "{out}");
        let d = api.get(&format!("{DEPLOY}/applied"));
        assert_no_directives(&d);
        assert_eq!(container_names(&d), ["web", "log"]);
        let web = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(web["image"], "busybox:3");
        assert_eq!(web["env"], json!([{"name": "FOO", "value": "1"}]));
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = k.apply(&file2);
        assert_eq!(out.trim(), "deployment.apps/applied unchanged", "{out}");
        assert_eq!(rv(&api.get(&format!("{DEPLOY}/applied"))), rv(&d));
    })
    .await
    .expect("test body");
}
