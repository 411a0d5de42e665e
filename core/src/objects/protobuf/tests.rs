use super::*;
use serde_json::json;

fn round_trip(obj: Value) {
    let bytes = encode(&obj).unwrap_or_else(|e| panic!("encode {}: {e}", obj["kind"]));
    assert!(bytes.starts_with(MAGIC));
    let back = decode(&bytes).unwrap_or_else(|e| panic!("decode {}: {e}", obj["kind"]));
    assert_eq!(back, obj, "JSON → protobuf → JSON changed the {}", obj["kind"]);
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "uid": "0b5e6a1c-3f0f-4d0e-9a47-3d1c1c7a2f10",
           "resourceVersion": "42", "generation": 3, "creationTimestamp": "2026-01-02T03:04:05Z",
           "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "x"},
           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                "uid": "u-1", "controller": true, "blockOwnerDeletion": true}],
           "finalizers": ["kulisse.dev/test"],
           "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                              "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                              "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}}]})
}

fn pod_spec() -> Value {
    json!({
        "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "cfg", "configMap": {"name": "c", "defaultMode": 420, "optional": false}}],
        "containers": [{
            "name": "web", "image": "busybox", "command": ["sh", "-c", "sleep 3600"],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5,
                               "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
            "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "Always"
        }],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 0, "dnsPolicy": "ClusterFirst",
        "nodeName": "node-1", "automountServiceAccountToken": false, "schedulerName": "default-scheduler",
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
    })
}

#[test]
fn every_served_kind_round_trips() {
    for info in crate::objects::RESOURCES {
        assert!(
            message_for(&info.api_version(), info.kind).is_some(),
            "{} has no protobuf schema",
            info.kind
        );
        assert!(message_for(&info.api_version(), &info.list_kind()).is_some());
    }
    round_trip(json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("c"),
        "data": {"a": "b", "empty": ""}, "binaryData": {"bin": "AAEC"}, "immutable": false}));
    round_trip(json!({"kind": "Secret", "apiVersion": "v1", "metadata": meta("s"),
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}, "type": "kubernetes.io/tls"}));
    round_trip(
        json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": meta("web-abc"),
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.64.1.5"], "nodeName": "node-1",
                       "conditions": {"ready": true, "serving": true, "terminating": false},
                       "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "u1"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
    );
    round_trip(
        json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
    );
    round_trip(
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": meta("web"), "spec": pod_spec(),
        "status": {"phase": "Running", "podIP": "127.64.1.2", "startTime": "2026-01-02T03:04:05Z",
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:06Z"}],
                   "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "busybox",
                                          "imageID": "", "started": true,
                                          "state": {"running": {"startedAt": "2026-01-02T03:04:05Z"}}}]}}),
    );
    round_trip(
        json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": meta("web"),
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
                 "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        "status": {"observedGeneration": 3, "replicas": 2, "readyReplicas": 2,
                   "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}}),
    );
    round_trip(
        json!({"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": meta("web-1"),
        "spec": {"replicas": 2, "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()}},
        "status": {"replicas": 0}}),
    );
    round_trip(json!({"kind": "Service", "apiVersion": "v1", "metadata": meta("web"),
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "127.1.0.10", "clusterIPs": ["127.1.0.10"],
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}],
                 "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"},
        "status": {"loadBalancer": {}}}));
    round_trip(json!({"kind": "Endpoints", "apiVersion": "v1", "metadata": meta("web"),
        "subsets": [{"addresses": [{"ip": "127.64.1.2", "nodeName": "node-1",
                                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u"}}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}));
    round_trip(json!({"kind": "Event", "apiVersion": "v1", "metadata": meta("web.1"),
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web"}, "reason": "Scheduled",
        "message": "assigned", "source": {"component": "default-scheduler"}, "count": 2, "type": "Normal",
        "firstTimestamp": "2026-01-02T03:04:05Z", "lastTimestamp": "2026-01-02T03:04:07Z",
        "eventTime": "2026-01-02T03:04:05.123456Z", "reportingComponent": "kulisse", "reportingInstance": "n"}));
    round_trip(
        json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "spec": {"podCIDR": "127.64.1.0/24", "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}], "unschedulable": true},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-02T03:04:05Z"}],
                   "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                                "containerRuntimeVersion": "mock", "kubeletVersion": "v1.33.0", "kubeProxyVersion": "",
                                "operatingSystem": "linux", "architecture": "amd64"}}}),
    );
    round_trip(
        json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": "2026-01-02T03:04:05.000001Z"}}),
    );
}

#[test]
fn lists_status_and_options_round_trip() {
    round_trip(
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7", "continue": "abc"},
        "items": [{"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}]}),
    );
    round_trip(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "configmaps \"c\" not found", "reason": "NotFound",
        "details": {"name": "c", "kind": "configmaps", "causes": [{"reason": "FieldValueInvalid", "message": "m", "field": "data"}]},
        "code": 404}),
    );
    round_trip(
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
        "propagationPolicy": "Foreground", "preconditions": {"uid": "u"}}),
    );
}

#[test]
fn special_json_forms() {
    assert_eq!(format_duration(0), "0s");
    assert_eq!(format_duration(3_723_500_000_000), "1h2m3.5s");
    assert_eq!(format_duration(90_000_000_000), "1m30s");
    assert_eq!(format_duration(1_500_000), "1.5ms");
    for text in ["1h2m3.5s", "1m30s", "1.5ms", "0s", "-2s"] {
        assert_eq!(format_duration(parse_duration(text).expect(text)), text);
    }
    assert!(parse_duration("1 day").is_err());
    // int64 stays a number, bytes are base64.
    let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c", "generation": 9007199254740993_i64},
                    "binaryData": {"k": "/w=="}});
    let back = decode(&encode(&cm).expect("encode")).expect("decode");
    assert_eq!(back["metadata"]["generation"], json!(9007199254740993_i64));
    assert_eq!(back["binaryData"]["k"], json!("/w=="));
    assert!(message_for("v1", "Table").is_none(), "Tables have no protobuf form");
    assert!(!has_schema(&json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1"})));
}

/// Bodies captured from kubectl v1.32 (`kubectl create ...` against a recording server).
#[test]
fn what_kubectl_really_sends() {
    let cm = decode(include_bytes!("kubectl-configmap.pb")).expect("configmap");
    assert_eq!(
        cm,
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"}, "data": {"a": "b"}})
    );
    let ns = decode(include_bytes!("kubectl-namespace.pb")).expect("namespace");
    assert_eq!(
        ns,
        json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"}, "spec": {}, "status": {}})
    );
    let deploy = decode(include_bytes!("kubectl-deployment.pb")).expect("deployment");
    assert_eq!(deploy["spec"]["replicas"], json!(0), "an explicit replicas: 0 survives");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0],
        json!({"name": "busybox", "image": "busybox", "resources": {}})
    );
    assert!(
        deploy["metadata"].get("creationTimestamp").is_none(),
        "a zero time is left out"
    );
    assert!(
        deploy["metadata"].get("namespace").is_none(),
        "empty strings are left out"
    );
    let svc = decode(include_bytes!("kubectl-service-nodeport.pb")).expect("service");
    assert_eq!(svc["spec"]["type"], json!("NodePort"));
    assert_eq!(svc["spec"]["ports"][0]["port"], json!(80));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!(8080));
    let tls = decode(include_bytes!("kubectl-secret-tls.pb")).expect("secret");
    assert_eq!(tls["type"], json!("kubernetes.io/tls"));
    let crt = tls["data"]["tls.crt"].as_str().expect("base64 cert");
    let pem = base64::engine::general_purpose::STANDARD.decode(crt).expect("base64");
    assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
}

/// No input makes the decoder panic: truncations, flipped bytes, garbage, deep nesting.
#[test]
fn hostile_input_never_panics() {
    let good = include_bytes!("kubectl-deployment.pb").to_vec();
    for len in 0..good.len() {
        let _ = decode(&good[..len]);
    }
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = 4 + (seed as usize) % (bytes.len() - 4);
            bytes[at] = (seed >> 32) as u8;
        }
        let _ = decode(&bytes);
    }
    assert!(decode(b"").is_err());
    assert!(decode(b"k8s\0").is_err(), "no typeMeta");
    assert!(decode(b"{\"kind\":\"Pod\"}").is_err());
    // A RawExtension holding itself, many times over (WatchEvent.object).
    let mut inner = envelope("v1", "ConfigMap", Vec::new());
    for _ in 0..50 {
        let raw_ext = [&[0x0a][..], &varint(inner.len()), &inner].concat();
        let event = [&[0x0a, 0x01, b'A', 0x12][..], &varint(raw_ext.len()), &raw_ext].concat();
        inner = envelope("v1", "WatchEvent", event);
    }
    let e = decode(&inner).expect_err("too deep");
    assert!(e.0.contains("nested too deeply"), "{e}");
    // A kind the server does not know.
    let e = decode(&envelope("v1", "Gadget", Vec::new())).expect_err("unknown kind");
    assert!(e.0.contains("Gadget"), "{e}");
}

fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}
