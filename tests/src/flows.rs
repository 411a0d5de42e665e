//! Small helpers shared by the end-to-end flows that drive a [`Cluster`] through the CLI:
//! bounded polling, `kulisse get ... -o json`, and reading fields of the objects it returns.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Cluster;

/// Poll `check` every 100 ms until it returns `Some`, or fail after `secs` seconds.
pub fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kulisse ARGS -o json` against `c`, parsed (`Null` if the output is not JSON).
pub fn json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&c.ok(&all)).unwrap_or(Value::Null)
}

/// The `items` of a list.
pub fn items(v: &Value) -> Vec<Value> {
    v.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// The string at JSON pointer `p`, or `""`.
pub fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// Does the pod report the condition `Ready=True`?
pub fn is_ready(pod: &Value) -> bool {
    kulisse_core::objects::pod::is_pod_ready(pod)
}

/// Create a bare Pod `name` (one container, image `nginx`) with `kulisse apply -f -`.
pub fn create_pod(c: &Cluster, name: &str) {
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: app\n    image: nginx\n"
    );
    let out = c.kulisse_stdin(&["apply", "-f", "-"], Some(pod.as_bytes()));
    assert!(
        out.status.success(),
        "apply {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
