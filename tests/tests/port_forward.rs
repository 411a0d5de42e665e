//! `kubectl port-forward` and `kulisse port-forward` end to end: a WebSocket tunnel
//! (`SPDY/3.1+portforward.k8s.io`) to the API server, SPDY from there to the kubelet, and a
//! connection inside the pod's network namespace. On the mock runtime (a declared port
//! answers one HTTP request naming the container) and with podman (busybox's httpd on a
//! port the pod does not declare, so nothing is published: only port-forward reaches it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kulisse_tests::cluster::{Cluster, kulisse_bin, terminate, text};
use kulisse_tests::kubectl::Kubectl;

/// Wait for the `Forwarding from 127.0.0.1:PORT -> REMOTE` line of a port-forward that
/// picked its own local port; the port, and the rest of its stdout as it comes.
fn forwarding(child: &mut Child) -> (u16, mpsc::Receiver<String>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens: a closed pipe would kill the forwarder
        // (SIGPIPE) at its next "Handling connection" line.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("port-forward printed nothing within 60 s");
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a Forwarding line: {line}"));
    (port, rx)
}

/// `GET /` through `127.0.0.1:port`; the whole answer.
fn get(port: u16) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to the forwarded port");
    conn.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    conn.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    text(&answer)
}

/// Connect, send a request, and wait for the forwarder to exit; its status and stderr.
fn refused(mut child: Child, port: u16) -> (Option<i32>, String) {
    let _ = get(port);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("the forwarder ends");
    (status.code(), stderr)
}

fn kulisse_port_forward(cluster: &Cluster, args: &[&str]) -> Child {
    Command::new(kulisse_bin())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .arg("port-forward")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kulisse port-forward")
}

const MOCK_PODS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: httpd
    image: localhost/busybox:latest
    ports: [{name: http, containerPort: 8080}]
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

#[test]
fn port_forward_reaches_a_pods_port_with_kubectl_and_kulisse() {
    let cluster = Cluster::start();
    let Some(k) = Kubectl::for_cluster(&cluster) else {
        return;
    };
    let manifest = k.work_dir().join("pods.yaml");
    std::fs::write(&manifest, MOCK_PODS).expect("write the manifest");
    k.ok(&["apply", "-f", manifest.to_str().expect("utf-8 path")]);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let expected = "mock container httpd of pod web answers on port 8080\n";

    // The real kubectl, two connections over one forward, the port named and numbered.
    for remote in [":8080", ":http"] {
        let mut child = k.spawn(&["port-forward", "pod/web", remote]);
        let (port, lines) = forwarding(&mut child);
        for _ in 0..2 {
            let answer = get(port);
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
            assert!(answer.ends_with(expected), "{answer}");
        }
        let handled = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(10)).ok())
            .find(|line| line.starts_with("Handling connection for "));
        assert!(handled.is_some(), "kubectl never said it handled a connection");
        terminate(child, Duration::from_secs(5));
    }

    // kulisse's own client speaks the same protocol.
    let mut child = kulisse_port_forward(&cluster, &["web", ":8080"]);
    let (port, _) = forwarding(&mut child);
    assert!(get(port).ends_with(expected));
    terminate(child, Duration::from_secs(5));

    // A port nobody listens on: the kubelet's reason on the error stream, then both
    // clients give up as kubectl does.
    let mut child = k.spawn(&["port-forward", "pod/web", ":9999"]);
    let (port, _) = forwarding(&mut child);
    let (code, stderr) = refused(child, port);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("an error occurred forwarding")
            && stderr.contains("error forwarding port 9999 to pod web, uid "),
        "{stderr}"
    );
    assert!(stderr.contains("error: lost connection to pod"), "{stderr}");
    let mut child = kulisse_port_forward(&cluster, &["pod/web", ":9999"]);
    let (port, _) = forwarding(&mut child);
    let (code, stderr) = refused(child, port);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error forwarding port 9999 to pod web, uid "),
        "{stderr}"
    );
    assert!(stderr.contains("lost connection to pod"), "{stderr}");

    // A pod that does not run yet is refused before anything listens.
    let stderr = k.fails(&["port-forward", "pod/nowhere", ":80"]);
    assert!(
        stderr.contains("unable to forward port because pod is not running. Current status=Pending"),
        "{stderr}"
    );
    let out = cluster.kulisse(&["port-forward", "nowhere", ":80"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unable to forward port because pod is not running. Current status=Pending"),
        "{}",
        text(&out.stderr)
    );
    // And a named port the pod does not have.
    let out = cluster.kulisse(&["port-forward", "web", "8080:grpc"]);
    assert!(
        text(&out.stderr).contains("Pod 'web' does not have a named port 'grpc'"),
        "{}",
        text(&out.stderr)
    );
}

// With podman: a real server in a real network namespace.
// ---------------------------------------------------------------------------------------

use kulisse_tests::podman::{PodmanService, podman_cluster};

/// busybox's httpd on 8081, a port the pod does not declare: podman publishes nothing for
/// it, so only a connection made inside the pod's network namespace reaches it.
const PODMAN_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo served from inside the pod > /www/index.html && exec httpd -f -p 8081 -h /www"]
    readinessProbe:
      exec: {command: ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8081/"]}
      periodSeconds: 1
"#;

#[test]
fn port_forward_reaches_an_undeclared_port_inside_a_podman_pod() {
    let Some(svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    // The guard is dropped before the cluster's data dir goes: it removes what the cluster
    // left in podman.
    let (cluster, _cleanup) = podman_cluster(&svc, dir.path(), &[]);
    let Some(k) = Kubectl::for_cluster(&cluster) else {
        return;
    };
    let manifest = k.work_dir().join("pod.yaml");
    std::fs::write(&manifest, PODMAN_POD).expect("write the manifest");
    k.ok(&["apply", "-f", manifest.to_str().expect("utf-8 path")]);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=120s"]);

    let mut child = k.spawn(&["port-forward", "pod/web", ":8081"]);
    let (port, _) = forwarding(&mut child);
    for _ in 0..3 {
        let answer = get(port);
        assert!(answer.starts_with("HTTP/1.") && answer.contains(" 200 "), "{answer}");
        assert!(answer.ends_with("served from inside the pod\n"), "{answer}");
    }
    terminate(child, Duration::from_secs(5));

    let mut child = kulisse_port_forward(&cluster, &["pod/web", ":8081"]);
    let (port, _) = forwarding(&mut child);
    assert!(get(port).ends_with("served from inside the pod\n"));
    terminate(child, Duration::from_secs(5));

    // Nothing listens on 8082 in the pod: the runtime's refusal reaches kubectl.
    let mut child = k.spawn(&["port-forward", "pod/web", ":8082"]);
    let (port, _) = forwarding(&mut child);
    let (code, stderr) = refused(child, port);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("connection refused"), "{stderr}");
}
