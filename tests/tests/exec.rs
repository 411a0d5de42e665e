//! `kubectl exec` end to end with the real kubectl (WebSocket `v5.channel.k8s.io` through
//! the API server's upgrade proxy to the kubelet's HTTPS API), on the mock runtime.
//!
//! The mock runtime's exec answers from what it recorded: `cat` reads the files of the
//! pod's volumes on the node, `env` prints the container's environment, `sh -c 'exit N'`
//! exits N, `cat` with no file echoes stdin.

use std::process::Output;

use kulisse_tests::cluster::{Cluster, text};
use kulisse_tests::flows::{items, s, wait_for};
use kulisse_tests::kubectl::Kubectl;

/// The ConfigMap both tests mount.
const CONFIG_MAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: "hello from the configmap"}"#;

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: box
  labels: {app: box, tier: demo}
spec:
  containers:
  - name: main
    image: localhost/busybox:latest
    command: ["sleep", "3600"]
    env: [{name: COLOR, value: blue}]
    volumeMounts: [{name: info, mountPath: /etc/podinfo}, {name: cfg, mountPath: /etc/cfg}]
  - name: side
    image: localhost/busybox:latest
    command: ["sleep", "3600"]
    env: [{name: COLOR, value: green}]
  volumes:
  - name: cfg
    configMap: {name: cfg}
  - name: info
    downwardAPI:
      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
---
apiVersion: v1
kind: Pod
metadata: {name: nowhere}
spec:
  nodeSelector: {kulisse.dev/no-such-node: "true"}
  containers:
  - name: main
    image: localhost/busybox:latest
"#;

fn start() -> Option<(Cluster, Kubectl)> {
    let cluster = Cluster::start();
    let kubectl = Kubectl::for_cluster(&cluster)?;
    Some((cluster, kubectl))
}

/// `kubectl apply` the ConfigMap and `manifest`.
fn apply(k: &Kubectl, manifest: &str) {
    let path = k.work_dir().join("manifest.yaml");
    std::fs::write(&path, format!("{CONFIG_MAP}\n---\n{manifest}")).expect("write the manifest");
    k.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);
}

fn fails_with(out: &Output) -> (Option<i32>, String) {
    assert!(!out.status.success(), "should have failed: {}", text(&out.stdout));
    (out.status.code(), text(&out.stderr))
}

#[test]
fn kubectl_exec_runs_commands_with_stdin_exit_codes_containers_and_rbac() {
    let Some((cluster, k)) = start() else { return };
    apply(&k, PODS);
    wait_for(60, "pod box Running", || {
        let pods: serde_json::Value = serde_json::from_str(&k.ok(&["get", "pods", "-o", "json"])).ok()?;
        items(&pods)
            .iter()
            .any(|p| s(p, "/metadata/name") == "box" && s(p, "/status/phase") == "Running")
            .then_some(())
    });

    // A file of the pod's volume, read through exec.
    let labels = k.ok(&["exec", "box", "-c", "main", "--", "cat", "/etc/podinfo/labels"]);
    assert!(
        labels.contains("app=\"box\"") && labels.contains("tier=\"demo\""),
        "{labels}"
    );

    // A ConfigMap's file, and the same file once the ConfigMap changed (the kubelet's sync).
    assert_eq!(
        k.ok(&["exec", "box", "--", "cat", "/etc/cfg/greeting"]),
        "hello from the configmap"
    );
    k.ok(&["patch", "configmap", "cfg", "-p", r#"{"data":{"greeting":"changed"}}"#]);
    wait_for(60, "the changed ConfigMap in the pod", || {
        (k.ok(&["exec", "box", "--", "cat", "/etc/cfg/greeting"]) == "changed").then_some(())
    });

    // The exit code travels on the error channel and becomes kubectl's.
    let (code, stderr) = fails_with(&k.run(&["exec", "box", "-c", "main", "--", "sh", "-c", "exit 3"]));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("command terminated with exit code 3"), "{stderr}");

    // stdin, piped in with -i, comes back from cat.
    let out = k.run_stdin(
        &["exec", "-i", "box", "-c", "main", "--", "cat"],
        Some(b"through stdin\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through stdin\n");

    // -c picks the container; without it kubectl picks the first and says so.
    assert_eq!(
        k.ok(&["exec", "box", "-c", "side", "--", "env"])
            .lines()
            .find(|l| l.starts_with("COLOR=")),
        Some("COLOR=green")
    );
    let out = k.run(&["exec", "box", "--", "env"]);
    assert!(text(&out.stdout).contains("COLOR=blue"), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("Defaulted container \"main\" out of: main, side"),
        "{}",
        text(&out.stderr)
    );

    // kulisse's own exec speaks the same protocol and answers as kubectl does.
    assert_eq!(
        cluster.ok(&["exec", "box", "-c", "main", "--", "cat", "/etc/cfg/greeting"]),
        "changed"
    );
    let out = cluster.kulisse(&["exec", "box", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Defaulted container \"main\" out of: main, side")
            && text(&out.stderr).contains("command terminated with exit code 3"),
        "{}",
        text(&out.stderr)
    );
    let out = cluster.kulisse_stdin(
        &["exec", "-i", "box", "-c", "side", "--", "cat"],
        Some(b"kulisse stdin\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "kulisse stdin\n");
    let out = cluster.kulisse(&["exec", "box", "-c", "nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Error from server (BadRequest): container nope is not valid for pod box"),
        "{}",
        text(&out.stderr)
    );
    let out = cluster.kulisse(&["exec", "nowhere", "--", "true"]);
    assert!(
        text(&out.stderr).contains("pod nowhere has not been scheduled to a node yet"),
        "{}",
        text(&out.stderr)
    );

    // Errors: an unknown container, a pod with no node yet, a user without `create pods/exec`.
    let (_, stderr) = fails_with(&k.run(&["exec", "box", "-c", "nope", "--", "true"]));
    assert!(stderr.contains("container nope is not valid for pod box"), "{stderr}");
    let (_, stderr) = fails_with(&k.run(&["exec", "nowhere", "--", "true"]));
    assert!(
        stderr.contains("pod nowhere has not been scheduled to a node yet"),
        "{stderr}"
    );
    // jane may read pods (kubectl gets the pod first), not exec into them.
    k.ok(&["create", "role", "pod-reader", "--verb=get,list", "--resource=pods"]);
    k.ok(&[
        "create",
        "rolebinding",
        "jane-reads",
        "--role=pod-reader",
        "--user=jane",
    ]);
    let (_, stderr) = fails_with(&k.run(&["exec", "box", "--as", "jane", "--", "true"]));
    assert!(
        stderr.contains(
            "User \"jane\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""
        ),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// The same with podman: real processes in real containers, and `kubectl cp` (tar over exec).
// ---------------------------------------------------------------------------------------

use kulisse_tests::podman::{PodmanService, podman_cluster};

const PODMAN_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: box}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    volumeMounts: [{name: cfg, mountPath: /etc/cfg}]
    lifecycle:
      postStart: {exec: {command: ["sh", "-c", "echo written by the postStart hook > /tmp/hooked"]}}
  - name: side
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo side > /tmp/who; exec sleep 3600"]
  volumes: [{name: cfg, configMap: {name: cfg}}]
---
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    stdin: true
    command: ["sh", "-c", "read line; echo \"heard: $line\"; echo done >&2"]
"#;

#[test]
fn kubectl_exec_and_cp_with_podman() {
    let Some(svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    // The guard is dropped before the cluster's data dir goes: it removes what the cluster
    // left in podman.
    let (cluster, _cleanup) = podman_cluster(&svc, dir.path(), &[]);
    let Some(k) = Kubectl::for_cluster(&cluster) else {
        return;
    };
    apply(&k, PODMAN_POD);
    k.ok(&["wait", "--for=condition=Ready", "pod/box", "--timeout=120s"]);

    // The postStart hook ran in the container (podman exec), before the pod was Ready.
    assert_eq!(
        k.ok(&["exec", "box", "-c", "main", "--", "cat", "/tmp/hooked"]),
        "written by the postStart hook\n"
    );
    // Real commands: the ConfigMap's file, its change, exit codes, stdin, the other container.
    assert_eq!(
        k.ok(&["exec", "box", "-c", "main", "--", "cat", "/etc/cfg/greeting"]),
        "hello from the configmap"
    );
    k.ok(&["patch", "configmap", "cfg", "-p", r#"{"data":{"greeting":"changed"}}"#]);
    wait_for(90, "the changed ConfigMap in the container", || {
        (k.ok(&["exec", "box", "-c", "main", "--", "cat", "/etc/cfg/greeting"]) == "changed").then_some(())
    });
    let (code, stderr) = fails_with(&k.run(&["exec", "box", "-c", "main", "--", "sh", "-c", "echo oops >&2; exit 3"]));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("oops"), "{stderr}");
    let out = k.run_stdin(
        &["exec", "-i", "box", "-c", "main", "--", "sh", "-c", "tr a-z A-Z"],
        Some(b"shout\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "SHOUT\n");
    assert_eq!(k.ok(&["exec", "box", "-c", "side", "--", "cat", "/tmp/who"]), "side\n");

    // kulisse exec: stdout and stderr apart, the exit code; then `-it` under a pseudo-terminal
    // (util-linux's `script`): the command runs on a terminal of its own, sized as ours.
    let out = cluster.kulisse(&[
        "exec",
        "box",
        "-c",
        "main",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).starts_with("err\ncommand terminated with exit code 4"),
        "{}",
        text(&out.stderr)
    );
    // The real kubectl's `exec -it` the same way.
    for client in [
        format!("{} --kubeconfig", kulisse_tests::cluster::kulisse_bin().display()),
        format!("{} --kubeconfig", k.program().display()),
    ] {
        let exec_it = format!(
            "stty cols 97 rows 31; {client} {} exec -it box -c main -- sh -c 'tty; stty size; exit 5'",
            cluster.kubeconfig().display()
        );
        let out = on_a_terminal(&exec_it);
        let shown = text(&out.stdout);
        assert_eq!(out.status.code(), Some(5), "{client}: {shown}");
        assert!(
            shown.contains("/dev/pts/"),
            "{client}: the command had no terminal: {shown}"
        );
        assert!(
            shown.contains("31 97"),
            "{client}: the terminal's size did not travel: {shown}"
        );
    }

    // A resize while kulisse exec -it runs (SIGWINCH) reaches the command's terminal.
    let resize = format!(
        "stty cols 97 rows 31; (sleep 1; stty cols 50 rows 20 < /dev/tty) & {} --kubeconfig {} exec -it box -c main -- sh -c 'sleep 4; stty size'; wait",
        kulisse_tests::cluster::kulisse_bin().display(),
        cluster.kubeconfig().display()
    );
    let out = on_a_terminal(&resize);
    let shown = text(&out.stdout);
    assert!(shown.contains("20 50"), "the new size did not travel: {shown}");

    // kubectl attach -i: the main process' own stdin (the container has `stdin: true`) and
    // output; it reads one line, answers and exits, which ends the attach.
    k.ok(&["wait", "--for=condition=Ready", "pod/talker", "--timeout=120s"]);
    let out = k.run_stdin(&["attach", "-i", "talker"], Some(b"over the attach\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "heard: over the attach\n");
    assert!(text(&out.stderr).contains("done"), "{}", text(&out.stderr));

    // kubectl cp in and out: tar through exec.
    let local = k.work_dir().join("note.txt");
    std::fs::write(&local, "copied in\n").expect("write the local file");
    k.ok(&["cp", local.to_str().expect("utf-8"), "box:/tmp/note.txt", "-c", "main"]);
    assert_eq!(
        k.ok(&["exec", "box", "-c", "main", "--", "cat", "/tmp/note.txt"]),
        "copied in\n"
    );
    let back = k.work_dir().join("back.txt");
    k.ok(&["cp", "box:/tmp/note.txt", back.to_str().expect("utf-8"), "-c", "main"]);
    assert_eq!(
        std::fs::read_to_string(&back).expect("the copied-out file"),
        "copied in\n"
    );

    // The other volume kinds, mounted by podman and read with kubectl exec: a hostPath, a
    // projected volume (a ConfigMap and the downward API), a ConfigMap key by subPath, a
    // memory-backed emptyDir, and a Secret with `items` and `defaultMode`.
    let host = tempfile::tempdir().expect("a host directory");
    std::fs::write(host.path().join("host.txt"), "from the node\n").expect("write the host file");
    k.ok(&["create", "secret", "generic", "tok", "--from-literal=token=s3cret"]);
    // (Not with `apply`, which would set the ConfigMap back to its first value.)
    let path = k.work_dir().join("kinds.yaml");
    std::fs::write(
        &path,
        KINDS_POD.replace("HOST_DIR", host.path().to_str().expect("utf-8 path")),
    )
    .expect("write the manifest");
    k.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    k.ok(&["wait", "--for=condition=Ready", "pod/kinds", "--timeout=120s"]);
    let cat = |path: &str| k.ok(&["exec", "kinds", "--", "cat", path]);
    assert_eq!(cat("/host/host.txt"), "from the node\n");
    assert_eq!(cat("/all/greeting"), "changed");
    assert!(cat("/all/labels").contains("app=\"kinds\""), "{}", cat("/all/labels"));
    assert_eq!(cat("/etc/greeting.txt"), "changed");
    // A Secret's key under the path `items` gives it, with the mode `defaultMode` asks for.
    assert_eq!(cat("/secret/api-token"), "s3cret");
    assert_eq!(
        k.ok(&["exec", "kinds", "--", "stat", "-L", "-c", "%a", "/secret/api-token"]),
        "400\n"
    );
    let ram = k.ok(&["exec", "kinds", "--", "sh", "-c", "grep ' /ram ' /proc/mounts"]);
    assert!(ram.contains("tmpfs"), "the Memory emptyDir is not tmpfs: {ram}");
}

/// Run a shell command line under a pseudo-terminal of its own (util-linux's `script`), as a
/// learner at a terminal would; its output and exit status.
fn on_a_terminal(command_line: &str) -> Output {
    std::process::Command::new("script")
        .args(["-qec", command_line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script (util-linux)")
}

/// One pod with the volume kinds the first pod does not have (`HOST_DIR` is replaced).
const KINDS_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: kinds, labels: {app: kinds}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: host, mountPath: /host, readOnly: true}
    - {name: all, mountPath: /all}
    - {name: cfg, mountPath: /etc/greeting.txt, subPath: greeting}
    - {name: ram, mountPath: /ram}
    - {name: tok, mountPath: /secret}
  volumes:
  - name: host
    hostPath: {path: HOST_DIR, type: Directory}
  - name: all
    projected:
      sources:
      - configMap: {name: cfg}
      - downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - name: cfg
    configMap: {name: cfg}
  - name: ram
    emptyDir: {medium: Memory, sizeLimit: 16Mi}
  - name: tok
    secret: {secretName: tok, defaultMode: 0400, items: [{key: token, path: api-token}]}
"#;
