//! The validation rules, checked against Kubernetes' own messages.

use super::*;
use crate::objects::registry::by_gvk;
use serde_json::json;

fn info(api_version: &str, kind: &str) -> &'static ResourceInfo {
    by_gvk(api_version, kind).expect("known kind")
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}
            }
        }
    })
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    })
}

/// Validate and return (message, causes as "field: body").
fn errors(api_version: &str, kind: &str, obj: &Value) -> (String, Vec<String>) {
    let err = validate(info(api_version, kind), obj).expect_err("should be invalid");
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    let causes = err
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect())
        .unwrap_or_default();
    (err.message, causes)
}

fn has(causes: &[String], needle: &str) -> bool {
    causes.iter().any(|c| c.contains(needle))
}

#[test]
fn valid_objects_pass() {
    validate(info("apps/v1", "Deployment"), &deployment()).expect("deployment");
    validate(info("v1", "Pod"), &pod()).expect("pod");
    validate(info("v1", "Service"), &service()).expect("service");
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
        "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    validate(info("apps/v1", "ReplicaSet"), &rs).expect("replicaset");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}});
    validate(info("v1", "Namespace"), &ns).expect("namespace");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1.local"}});
    validate(info("v1", "Node"), &node).expect("node");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"app.properties": "a=b", "KEY_NAME": "x"}});
    validate(info("v1", "ConfigMap"), &cm).expect("configmap");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
    validate(info("coordination.k8s.io/v1", "Lease"), &lease).expect("lease");
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Scheduled"});
    validate(info("v1", "Event"), &ev).expect("event");
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "127.0.0.5"}], "ports": [{"port": 8080, "protocol": "TCP"}]}]});
    validate(info("v1", "Endpoints"), &ep).expect("endpoints");
}

#[test]
fn unknown_fields_are_not_errors() {
    let mut d = deployment();
    d["spec"]["someFutureField"] = json!({"x": 1});
    d["metadata"]["x-extra"] = json!(true);
    validate(info("apps/v1", "Deployment"), &d).expect("unknown fields are kept, not rejected");
}

#[test]
fn negative_replicas_message_as_kubernetes() {
    let mut d = deployment();
    d["spec"]["replicas"] = json!(-1);
    let (msg, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        msg,
        "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(causes.len(), 1);
    let err = validate(info("apps/v1", "Deployment"), &d).expect_err("invalid");
    let cause = &err.details.expect("details").causes[0];
    assert_eq!(cause.reason, "FieldValueInvalid");
    assert_eq!(cause.field, "spec.replicas");
}

#[test]
fn wrong_json_type_names_the_field() {
    let mut d = deployment();
    d["spec"]["replicas"] = json!("three");
    let (msg, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec!["spec.replicas: Invalid value: \"three\": spec.replicas in body must be of type integer: \"string\""]
    );
    assert!(msg.starts_with("Deployment.apps \"web\" is invalid: spec.replicas: "));
    let err = validate(info("apps/v1", "Deployment"), &d).expect_err("invalid");
    assert_eq!(err.details.expect("details").causes[0].reason, "FieldValueTypeInvalid");

    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(42);
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec![
            "spec.template.spec.containers[0].image: Invalid value: 42: spec.template.spec.containers[0].image in body must be of type string: \"integer\""
        ]
    );

    let mut p = pod();
    p["metadata"]["labels"] = json!({"app": 1});
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(
            &causes,
            "metadata.labels.app: Invalid value: 1: metadata.labels.app in body must be of type string: \"integer\""
        ),
        "{causes:?}"
    );

    let mut p = pod();
    p["spec"]["containers"] = json!({"name": "c"});
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(&causes, "spec.containers in body must be of type array: \"object\""),
        "{causes:?}"
    );
}

#[test]
fn out_of_range_and_odd_spec() {
    let mut d = deployment();
    d["spec"]["replicas"] = json!(99_999_999_999i64);
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec![
            "spec.replicas: Invalid value: 99999999999: must be a 32-bit integer (between -2147483648 and 2147483647)"
        ]
    );
    let mut d = deployment();
    d["spec"] = json!("nope");
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec!["spec: Invalid value: \"nope\": spec in body must be of type object: \"string\""]
    );
    let mut d = deployment();
    d["metadata"]["creationTimestamp"] = json!("yesterday");
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert!(
        has(&causes, "metadata.creationTimestamp: Invalid value: \"yesterday\""),
        "{causes:?}"
    );
}

#[test]
fn missing_required_typed_field_is_required_value() {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "targetPort": 80}]}});
    let (_, causes) = errors("v1", "Service", &svc);
    assert_eq!(causes, vec!["spec.ports[0].port: Required value"]);
}

#[test]
fn api_version_and_kind_must_match() {
    let mut d = deployment();
    d["apiVersion"] = json!("v1");
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec!["apiVersion: Invalid value: \"v1\": must be \"apps/v1\" for kind Deployment"]
    );
    let mut d = deployment();
    d["kind"] = json!("Pod");
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(causes, vec!["kind: Invalid value: \"Pod\": must be \"Deployment\""]);
    let mut d = deployment();
    d.as_object_mut().map(|m| m.remove("kind"));
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(causes, vec!["kind: Required value: must be \"Deployment\""]);
}

#[test]
fn non_object_is_rejected() {
    let (_, causes) = errors("v1", "Pod", &json!([1, 2]));
    assert_eq!(causes.len(), 1);
    assert!(causes[0].contains("must be of type object"), "{causes:?}");
}

#[test]
fn name_required_and_subdomain_rules() {
    let mut p = pod();
    p["metadata"].as_object_mut().map(|m| m.remove("name"));
    let (msg, _) = errors("v1", "Pod", &p);
    assert_eq!(
        msg,
        "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required"
    );
    // generateName alone is fine.
    p["metadata"]["generateName"] = json!("web-");
    validate(info("v1", "Pod"), &p).expect("generateName");

    let mut p = pod();
    p["metadata"]["name"] = json!("Web_1");
    let (msg, _) = errors("v1", "Pod", &p);
    assert_eq!(
        msg,
        "Pod \"Web_1\" is invalid: metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    for ok in ["a", "a.b", "web-1", "1web", "a-b.c-d"] {
        assert!(is_dns1123_subdomain(ok).is_empty(), "{ok}");
    }
    for bad in ["", "-a", "a-", "a..b", ".a", "a.", "A", "a_b", "a b"] {
        assert!(!is_dns1123_subdomain(bad).is_empty(), "{bad}");
    }
    let long = "a".repeat(254);
    assert_eq!(is_dns1123_subdomain(&long), vec!["must be no more than 253 characters"]);
    assert!(is_dns1123_subdomain(&"a".repeat(253)).is_empty());
}

#[test]
fn namespace_names_are_dns_labels() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}});
    let (msg, _) = errors("v1", "Namespace", &ns);
    assert_eq!(
        msg,
        "Namespace \"team.a\" is invalid: metadata.name: Invalid value: \"team.a\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    );
    let long = "a".repeat(64);
    assert_eq!(is_dns1123_label(&long), vec!["must be no more than 63 characters"]);
    assert!(is_dns1123_label(&"a".repeat(63)).is_empty());
}

#[test]
fn service_names_are_dns1035_labels() {
    let mut s = service();
    s["metadata"]["name"] = json!("1web");
    let (_, causes) = errors("v1", "Service", &s);
    assert_eq!(
        causes,
        vec![
            "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
    let mut s = service();
    s["metadata"]["name"] = json!("web.a");
    errors("v1", "Service", &s);
}

#[test]
fn namespace_field_checked_for_namespaced_kinds() {
    let mut p = pod();
    p["metadata"]["namespace"] = json!("Bad_NS");
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(&causes, "metadata.namespace: Invalid value: \"Bad_NS\""),
        "{causes:?}"
    );
}

#[test]
fn label_keys_and_values() {
    let mut p = pod();
    p["metadata"]["labels"] = json!({"bad key": "ok", "app": "bad value!", "example.com/x": "y", "a/b/c": "z"});
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(
            &causes,
            "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "metadata.labels: Invalid value: \"bad value!\": a valid label must be an empty string or consist of alphanumeric characters"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "metadata.labels: Invalid value: \"a/b/c\": a qualified name must consist of"
        ),
        "{causes:?}"
    );
    assert!(!has(&causes, "example.com/x"), "{causes:?}");
    assert_eq!(causes.len(), 3, "{causes:?}");

    assert!(is_valid_label_value("").is_empty());
    assert_eq!(
        is_valid_label_value(&"a".repeat(64)),
        vec!["must be no more than 63 characters"]
    );
    assert_eq!(is_qualified_name("/x"), vec!["prefix part must be non-empty"]);
    assert!(is_qualified_name("x/").contains(&"name part must be non-empty".to_string()));
    assert!(is_qualified_name(&"a".repeat(64))[0].starts_with("name part must be no more than 63"));
    assert!(is_qualified_name("Bad_Prefix/x")[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
}

#[test]
fn selector_required_and_must_match_template() {
    let mut d = deployment();
    d["spec"].as_object_mut().map(|m| m.remove("selector"));
    let (msg, _) = errors("apps/v1", "Deployment", &d);
    assert_eq!(msg, "Deployment.apps \"web\" is invalid: spec.selector: Required value");

    let mut d = deployment();
    d["spec"]["selector"]["matchLabels"] = json!({"app": "x"});
    let (msg, _) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        msg,
        "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"
    );

    let mut d = deployment();
    d["spec"]["selector"] = json!({});
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
    );

    let mut d = deployment();
    d["spec"]["selector"] = json!({"matchExpressions": [
        {"key": "app", "operator": "In"},
        {"key": "tier", "operator": "Exists", "values": ["x"]},
        {"key": "x", "operator": "Near", "values": ["y"]}
    ]});
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert!(
        has(
            &causes,
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.selector.matchExpressions[2].operator: Invalid value: \"Near\": not a valid selector operator"
        ),
        "{causes:?}"
    );
}

#[test]
fn containers_required_with_name_and_image() {
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"] = json!([]);
    let (msg, _) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        msg,
        "Deployment.apps \"web\" is invalid: spec.template.spec.containers: Required value"
    );
    let mut p = pod();
    p["spec"]["containers"] =
        json!([{}, {"name": "c", "image": "x"}, {"name": "c", "image": "y"}, {"name": "Bad_Name", "image": " "}]);
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(has(&causes, "spec.containers[0].name: Required value"), "{causes:?}");
    assert!(has(&causes, "spec.containers[0].image: Required value"), "{causes:?}");
    assert!(
        has(&causes, "spec.containers[2].name: Duplicate value: \"c\""),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.containers[3].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"
        ),
        "{causes:?}"
    );
    assert!(has(&causes, "spec.containers[3].image: Required value"), "{causes:?}");
    let mut p = pod();
    p["spec"].as_object_mut().map(|m| m.remove("containers"));
    let (_, causes) = errors("v1", "Pod", &p);
    assert_eq!(causes, vec!["spec.containers: Required value"]);
}

#[test]
fn container_ports() {
    let mut p = pod();
    p["spec"]["containers"][0]["ports"] = json!([
        {"containerPort": 0},
        {"containerPort": 70000},
        {"containerPort": 80, "name": "http", "protocol": "HTTP"},
        {"containerPort": 81, "name": "http"},
        {"containerPort": 82, "name": "Bad--"},
        {"containerPort": 83, "hostPort": -1}
    ]);
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(&causes, "spec.containers[0].ports[0].containerPort: Required value"),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.containers[0].ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        ),
        "{causes:?}"
    );
    assert!(
        has(&causes, "spec.containers[0].ports[3].name: Duplicate value: \"http\""),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.containers[0].ports[4].name: Invalid value: \"Bad--\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.containers[0].ports[4].name: Invalid value: \"Bad--\": must not contain consecutive hyphens (-)"
        ),
        "{causes:?}"
    );
    assert!(
        has(&causes, "spec.containers[0].ports[5].hostPort: Invalid value: -1"),
        "{causes:?}"
    );
    assert_eq!(
        is_valid_port_name("8080"),
        vec!["must contain at least one letter (a-z)"]
    );
    assert_eq!(
        is_valid_port_name("a-very-long-port-name"),
        vec!["must be no more than 15 characters"]
    );
    assert_eq!(
        is_valid_port_name("-a"),
        vec!["must not begin or end with a hyphen (-)"]
    );
}

#[test]
fn topology_spread_constraints_are_validated_as_upstream() {
    let mut p = pod();
    p["spec"]["topologySpreadConstraints"] = json!([
        {"maxSkew": 0, "topologyKey": "", "whenUnsatisfiable": "Sometimes", "minDomains": 2,
         "nodeAffinityPolicy": "Maybe", "matchLabelKeys": ["app"]},
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "Near"}]},
         "matchLabelKeys": ["app", "bad key"]},
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 0},
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
    ]);
    let (_, causes) = errors("v1", "Pod", &p);
    let c = "spec.topologySpreadConstraints";
    for want in [
        format!("{c}[0].maxSkew: Invalid value: 0: must be greater than zero"),
        format!("{c}[0].topologyKey: Required value: can not be empty"),
        format!(
            "{c}[0].whenUnsatisfiable: Unsupported value: \"Sometimes\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\""
        ),
        format!(
            "{c}[0].minDomains: Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not Sometimes"
        ),
        format!("{c}[0].nodeAffinityPolicy: Unsupported value: \"Maybe\": supported values: \"Honor\", \"Ignore\""),
        format!("{c}[0].matchLabelKeys: Forbidden: must not be specified when labelSelector is not set"),
        format!("{c}[1].{{topologyKey, whenUnsatisfiable}}: Duplicate value: \"{{zone, ScheduleAnyway}}\""),
        format!("{c}[1].matchLabelKeys[0]: Invalid value: \"app\": exists in both matchLabelKeys and labelSelector"),
        format!(
            "{c}[1].labelSelector.matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator"
        ),
        format!("{c}[2].minDomains: Invalid value: 0: must be greater than zero"),
    ] {
        assert!(has(&causes, &want), "missing {want:?} in {causes:?}");
    }
    assert!(
        causes
            .iter()
            .any(|x| x.starts_with(&format!("{c}[1].matchLabelKeys[1]: Invalid value: \"bad key\""))),
        "{causes:?}"
    );
    assert!(!causes.iter().any(|x| x.starts_with(&format!("{c}[3]"))), "{causes:?}");

    // a valid one passes, in a Deployment's template too
    let mut d = deployment();
    d["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
        "minDomains": 3, "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["pod-template-hash"],
        "nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Ignore"}]);
    validate(info("apps/v1", "Deployment"), &d).expect("valid");
    d["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["maxSkew"] = json!(-1);
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        ["spec.template.spec.topologySpreadConstraints[0].maxSkew: Invalid value: -1: must be greater than zero"]
    );
}

#[test]
fn pod_enums_and_template_restart_policy() {
    let mut p = pod();
    p["spec"]["restartPolicy"] = json!("Sometimes");
    p["spec"]["dnsPolicy"] = json!("Google");
    p["spec"]["containers"][0]["imagePullPolicy"] = json!("Maybe");
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(
            &causes,
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        ),
        "{causes:?}"
    );
    assert!(
        has(&causes, "spec.dnsPolicy: Unsupported value: \"Google\""),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
        ),
        "{causes:?}"
    );

    let mut d = deployment();
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]
    );
}

#[test]
fn deployment_strategy_rules() {
    let mut d = deployment();
    d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"]
    );

    d["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25", "maxUnavailable": "150%"}});
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert!(
        has(
            &causes,
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"25\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"
        ),
        "{causes:?}"
    );

    d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]
    );

    d["spec"]["strategy"] = json!({"type": "BlueGreen"});
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(
        causes,
        vec![
            "spec.strategy: Unsupported value: {\"type\":\"BlueGreen\"}: supported values: \"Recreate\", \"RollingUpdate\""
        ]
    );

    let mut d = deployment();
    d["spec"]["revisionHistoryLimit"] = json!(-2);
    d["spec"]["minReadySeconds"] = json!(10);
    d["spec"]["progressDeadlineSeconds"] = json!(5);
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert!(
        has(
            &causes,
            "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds"
        ),
        "{causes:?}"
    );
}

#[test]
fn service_port_rules() {
    let mut s = service();
    s["spec"]["ports"] = json!([
        {"name": "http", "port": 0, "targetPort": 70000},
        {"name": "http", "port": 443, "targetPort": "Bad_Name", "nodePort": 30001},
        {"port": 8080, "protocol": "ICMP"}
    ]);
    let (_, causes) = errors("v1", "Service", &s);
    assert!(
        has(
            &causes,
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
        ),
        "{causes:?}"
    );
    assert!(
        has(&causes, "spec.ports[1].name: Duplicate value: \"http\""),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.ports[1].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.ports[1].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        ),
        "{causes:?}"
    );
    assert!(has(&causes, "spec.ports[2].name: Required value"), "{causes:?}");
    assert!(
        has(&causes, "spec.ports[2].protocol: Unsupported value: \"ICMP\""),
        "{causes:?}"
    );

    let mut s = service();
    s["spec"]["type"] = json!("NodePort");
    s["spec"]["ports"][0]["nodePort"] = json!(80);
    let (_, causes) = errors("v1", "Service", &s);
    assert_eq!(
        causes,
        vec![
            "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
        ]
    );
    s["spec"]["ports"][0]["nodePort"] = json!(30080);
    validate(info("v1", "Service"), &s).expect("nodePort in range");
}

#[test]
fn service_ports_required_unique_and_typed() {
    let mut s = service();
    s["spec"]["ports"] = json!([]);
    let (_, causes) = errors("v1", "Service", &s);
    assert_eq!(causes, vec!["spec.ports: Required value"]);
    s["spec"]["clusterIP"] = json!("None");
    validate(info("v1", "Service"), &s).expect("headless service without ports");

    let mut s = service();
    s["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]);
    let (_, causes) = errors("v1", "Service", &s);
    assert_eq!(
        causes,
        vec!["spec.ports[1]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}"]
    );

    let mut s = service();
    s["spec"]["type"] = json!("Magic");
    s["spec"]["clusterIP"] = json!("not-an-ip");
    s["spec"]["selector"] = json!({"app": "bad value!"});
    let (_, causes) = errors("v1", "Service", &s);
    assert!(
        has(
            &causes,
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        ),
        "{causes:?}"
    );
    assert!(
        has(&causes, "spec.clusterIP: Invalid value: \"not-an-ip\""),
        "{causes:?}"
    );
    assert!(
        has(&causes, "spec.selector: Invalid value: \"bad value!\""),
        "{causes:?}"
    );
}

#[test]
fn event_needs_involved_object() {
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}});
    let (_, causes) = errors("v1", "Event", &ev);
    assert_eq!(causes, vec!["involvedObject: Required value"]);
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}});
    let (_, causes) = errors("v1", "Event", &ev);
    assert_eq!(
        causes,
        vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
    );
}

#[test]
fn config_map_keys() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"bad key": "x", "..x": "y", "ok": "z"}, "binaryData": {"ok": "aGk="}});
    let (_, causes) = errors("v1", "ConfigMap", &cm);
    assert!(
        has(
            &causes,
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        ),
        "{causes:?}"
    );
    assert!(
        has(&causes, "data[..x]: Invalid value: \"..x\": must not start with '..'"),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "data[ok]: Invalid value: \"ok\": duplicate of key present in binaryData"
        ),
        "{causes:?}"
    );
    assert_eq!(is_config_map_key("."), vec!["must not be '.'"]);
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"big": "x".repeat(1024 * 1024 + 1)}});
    let (_, causes) = errors("v1", "ConfigMap", &big);
    assert_eq!(causes, vec!["data: Too long: may not be more than 1048576 bytes"]);
    let bad_b64 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "binaryData": {"k": "%%%"}});
    let (_, causes) = errors("v1", "ConfigMap", &bad_b64);
    assert!(has(&causes, "binaryData.k: Invalid value: \"%%%\""), "{causes:?}");
}

#[test]
fn endpoints_and_lease_rules() {
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "nope"}, {}], "ports": [{"port": 0}]}]});
    let (_, causes) = errors("v1", "Endpoints", &ep);
    assert!(
        has(&causes, "subsets[0].addresses[0].ip: Invalid value: \"nope\""),
        "{causes:?}"
    );
    assert!(has(&causes, "subsets[0].addresses[1].ip: Required value"), "{causes:?}");
    assert!(has(&causes, "subsets[0].ports[0].port: Invalid value: 0"), "{causes:?}");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}});
    let (_, causes) = errors("coordination.k8s.io/v1", "Lease", &lease);
    assert_eq!(
        causes,
        vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );
}

#[test]
fn several_causes_are_bracketed() {
    let mut d = deployment();
    d["spec"]["replicas"] = json!(-1);
    d["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .map(|m| m.remove("image"));
    let (msg, causes) = errors("apps/v1", "Deployment", &d);
    assert_eq!(causes.len(), 2);
    assert_eq!(
        msg,
        "Deployment.apps \"web\" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.template.spec.containers[0].image: Required value]"
    );
}

#[test]
fn update_selector_is_immutable() {
    let old = deployment();
    let mut new = deployment();
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web2"}});
    new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web2"});
    let err = validate_update(info("apps/v1", "Deployment"), &old, &new).expect_err("immutable");
    assert_eq!(
        err.message,
        "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web2\"}}: field is immutable"
    );
    let mut same = deployment();
    same["spec"]["replicas"] = json!(5);
    validate_update(info("apps/v1", "Deployment"), &old, &same).expect("replicas may change");
    let mut renamed = deployment();
    renamed["metadata"]["name"] = json!("other");
    let err = validate_update(info("apps/v1", "Deployment"), &old, &renamed).expect_err("name");
    assert!(
        err.message
            .contains("metadata.name: Invalid value: \"other\": field is immutable")
    );
}

#[test]
fn update_service_cluster_ip_is_immutable_once_set() {
    let mut old = service();
    old["spec"]["clusterIP"] = json!("10.96.0.10");
    let mut new = service();
    new["spec"]["clusterIP"] = json!("10.96.0.11");
    let err = validate_update(info("v1", "Service"), &old, &new).expect_err("immutable");
    assert_eq!(
        err.message,
        "Service \"web\" is invalid: spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable"
    );
    validate_update(info("v1", "Service"), &old, &service()).expect("omitted clusterIP is carried over");
    validate_update(info("v1", "Service"), &service(), &new).expect("first allocation");
}

#[test]
fn update_immutable_config_map() {
    let mut old = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"a": "1"}, "immutable": true});
    let mut new = old.clone();
    new["data"]["a"] = json!("2");
    let err = validate_update(info("v1", "ConfigMap"), &old, &new).expect_err("immutable");
    assert!(
        err.message
            .contains("data: Forbidden: field is immutable when `immutable` is set")
    );
    old["immutable"] = json!(false);
    validate_update(info("v1", "ConfigMap"), &old, &new).expect("mutable config map");
}

#[test]
fn update_pod_spec_mostly_immutable() {
    let old = pod();
    let mut new = pod();
    new["spec"]["containers"][0]["image"] = json!("busybox:1.36");
    new["spec"]["nodeName"] = json!("node-1");
    validate_update(info("v1", "Pod"), &old, &new).expect("image and binding may change");
    let mut bound = new.clone();
    bound["spec"]["nodeName"] = json!("node-2");
    let err = validate_update(info("v1", "Pod"), &new, &bound).expect_err("rebinding");
    assert!(
        err.message
            .contains("spec: Forbidden: pod updates may not change fields")
    );
    let mut new = pod();
    new["spec"]["containers"][0]["name"] = json!("d");
    validate_update(info("v1", "Pod"), &old, &new).expect_err("container name");
}

#[test]
fn go_value_rendering() {
    assert_eq!(go_value(&json!("a\"b")), "\"a\\\"b\"");
    assert_eq!(go_value(&json!(-1)), "-1");
    assert_eq!(go_value(&json!(true)), "true");
    assert_eq!(go_value(&Value::Null), "null");
    assert_eq!(go_value(&json!({"b": 1, "a": [2]})), "{\"a\":[2],\"b\":1}");
}

fn pod_with(volumes: Value, mounts: Value) -> Value {
    let mut p = pod();
    p["spec"]["volumes"] = volumes;
    p["spec"]["containers"][0]["volumeMounts"] = mounts;
    p
}

#[test]
fn volumes_of_every_supported_kind_pass() {
    let p = pod_with(
        json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "conf", "configMap": {"name": "app", "items": [{"key": "a.conf", "path": "etc/a.conf", "mode": 0o600}], "defaultMode": 0o644, "optional": true}},
            {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}},
            {"name": "host", "hostPath": {"path": "/tmp", "type": "Directory"}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory"}}]}},
            {"name": "all", "projected": {"sources": [
                {"configMap": {"name": "app"}},
                {"secret": {"name": "db", "items": [{"key": "k", "path": "s/k"}]}},
                {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}}
        ]),
        json!([
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "conf", "mountPath": "/etc/app", "readOnly": true},
            {"name": "conf", "mountPath": "/etc/a.conf", "subPath": "etc/a.conf"}
        ]),
    );
    validate(info("v1", "Pod"), &p).unwrap_or_else(|e| panic!("{}", e.message));
}

#[test]
fn volume_names_sources_and_paths_as_upstream() {
    let p = pod_with(
        json!([
            {"name": "Bad_Name", "emptyDir": {}},
            {"name": "twice", "emptyDir": {}},
            {"name": "twice", "emptyDir": {}},
            {"name": "none"},
            {"name": "two", "emptyDir": {}, "hostPath": {"path": "/tmp"}},
            {"name": "cm", "configMap": {"items": [{"key": "k", "path": "/abs"}, {"key": "k", "path": "a/../../b"}, {"key": "k", "path": "..data"}], "defaultMode": 0o1000}},
            {"name": "sec", "secret": {}},
            {"name": "hp", "hostPath": {"path": "/tmp", "type": "Dir"}},
            {"name": "pvc", "persistentVolumeClaim": {"claimName": "x"}}
        ]),
        json!([]),
    );
    let (message, causes) = errors("v1", "Pod", &p);
    assert!(message.starts_with("Pod \"p\" is invalid: "), "{message}");
    for needle in [
        "spec.volumes[0].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of",
        "spec.volumes[2].name: Duplicate value: \"twice\"",
        "spec.volumes[3]: Required value: must specify a volume type",
        "spec.volumes[4].hostPath: Forbidden: may not specify more than 1 volume type",
        "spec.volumes[5].configMap.name: Required value",
        "spec.volumes[5].configMap.items[0].path: Invalid value: \"/abs\": must be a relative path",
        "spec.volumes[5].configMap.items[1].path: Invalid value: \"a/../../b\": must not contain '..'",
        "spec.volumes[5].configMap.items[2].path: Invalid value: \"..data\": must not start with '..'",
        "spec.volumes[5].configMap.defaultMode: Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive",
        "spec.volumes[6].secret.secretName: Required value",
        "spec.volumes[7].hostPath.type: Unsupported value: \"Dir\"",
        "spec.volumes[8].persistentVolumeClaim: Forbidden: kulisse has no storage for persistentVolumeClaim volumes",
    ] {
        assert!(has(&causes, needle), "missing {needle:?} in {causes:#?}");
    }
}

#[test]
fn volume_mounts_name_a_volume_once_per_path() {
    let p = pod_with(
        json!([{"name": "data", "emptyDir": {}}]),
        json!([
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/data"},
            {"name": "missing", "mountPath": "/m"},
            {"name": "data", "mountPath": "/sub", "subPath": "../up"},
            {"name": "data", "mountPath": "/abs", "subPath": "/etc"},
            {"name": "data"}
        ]),
    );
    let (_, causes) = errors("v1", "Pod", &p);
    for needle in [
        "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/data\": must be unique",
        "spec.containers[0].volumeMounts[2].name: Not found: \"missing\"",
        "spec.containers[0].volumeMounts[3].subPath: Invalid value: \"../up\": must not contain '..'",
        "spec.containers[0].volumeMounts[4].subPath: Invalid value: \"/etc\": must be a relative path",
        "spec.containers[0].volumeMounts[5].mountPath: Required value",
    ] {
        assert!(has(&causes, needle), "missing {needle:?} in {causes:#?}");
    }
    // The same rules hold in a Deployment's pod template, with the template's field path.
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "nope", "mountPath": "/x"}]);
    let (_, causes) = errors("apps/v1", "Deployment", &d);
    assert!(
        has(
            &causes,
            "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"nope\""
        ),
        "{causes:#?}"
    );
}

#[test]
fn env_sources_as_upstream() {
    let mut p = pod();
    p["spec"]["containers"][0]["env"] = json!([
        {"name": "OK", "value": "1"},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "colour"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": true}}}
    ]);
    p["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "app"}, "prefix": "APP_"}, {"secretRef": {"name": "db"}}]);
    validate(info("v1", "Pod"), &p).unwrap_or_else(|e| panic!("{}", e.message));

    p["spec"]["containers"][0]["env"] = json!([
        {"name": "A=B", "value": "x"},
        {"name": "BOTH", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NONE", "valueFrom": {}},
        {"name": "TWO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}, "secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "BAD_FIELD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
        {"name": "NO_KEY", "valueFrom": {"configMapKeyRef": {"name": "app"}}},
        {"name": "BAD_RES", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}
    ]);
    p["spec"]["containers"][0]["envFrom"] = json!([{}, {"configMapRef": {"name": "app"}, "prefix": "X="}]);
    let (_, causes) = errors("v1", "Pod", &p);
    for needle in [
        "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
        "spec.containers[0].env[1].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
        "spec.containers[0].env[2].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        "spec.containers[0].env[3].valueFrom: Invalid value: \"\": may not have more than one field specified at a time",
        "spec.containers[0].env[4].valueFrom.fieldRef.fieldPath: Unsupported value: \"metadata.labels\"",
        "spec.containers[0].env[5].valueFrom.configMapKeyRef.key: Required value",
        "spec.containers[0].env[6].valueFrom.resourceFieldRef.resource: Unsupported value: \"limits.gpu\"",
        "spec.containers[0].envFrom[0]: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`",
        "spec.containers[0].envFrom[1].prefix: Invalid value: \"X=\"",
    ] {
        assert!(has(&causes, needle), "missing {needle:?} in {causes:#?}");
    }
}

#[test]
fn init_containers_as_upstream_validates_them() {
    let mut p = pod();
    p["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
    validate(info("v1", "Pod"), &p).expect("an init container");
    // Names are unique across init and app containers.
    p["spec"]["initContainers"][0]["name"] = json!("c");
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(&causes, "spec.initContainers[0].name: Duplicate value: \"c\""),
        "{causes:?}"
    );
    p["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox",
        "readinessProbe": {"exec": {"command": ["true"]}},
        "livenessProbe": {"exec": {"command": ["true"]}},
        "lifecycle": {"postStart": {"exec": {"command": ["true"]}}},
        "restartPolicy": "OnFailure"}]);
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(
            &causes,
            "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers"
        ),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always"
        ),
        "{causes:?}"
    );
    assert!(
        has(&causes, "spec.initContainers[0].lifecycle: Forbidden"),
        "{causes:?}"
    );
    assert!(
        has(
            &causes,
            "spec.initContainers[0].restartPolicy: Unsupported value: \"OnFailure\""
        ),
        "{causes:?}"
    );
    let mut p = pod();
    p["spec"]["containers"][0]["restartPolicy"] = json!("Always");
    let (_, causes) = errors("v1", "Pod", &p);
    assert!(
        has(
            &causes,
            "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"
        ),
        "{causes:?}"
    );
}
