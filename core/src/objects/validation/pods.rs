//! Pods and pod templates (`pkg/apis/core/validation` and `pkg/apis/apps/validation`):
//! containers and their ports, the pod spec, topology spread constraints, and the
//! replicated specs of Deployments and ReplicaSets that embed a pod template.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::*;

pub(super) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn validate_container_ports(ports: &[Value], path: &str, errs: &mut Errs) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        if let Some(name) = get_str(port, "name")
            && !name.is_empty()
        {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid_str(child(&p, "name"), name, msg));
                }
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&p, "name"), &Value::from(name)));
            }
        }
        match get(port, "containerPort").and_then(Value::as_i64) {
            None | Some(0) => {
                if get(port, "containerPort").is_none_or(|v| v.is_i64() || v.is_u64()) {
                    errs.push(FieldError::required(child(&p, "containerPort"), ""));
                }
            }
            Some(n) => {
                for msg in is_valid_port_num(n) {
                    errs.push(FieldError::invalid(child(&p, "containerPort"), &Value::from(n), msg));
                }
            }
        }
        if let Some(n) = get(port, "hostPort").and_then(Value::as_i64)
            && n != 0
        {
            for msg in is_valid_port_num(n) {
                errs.push(FieldError::invalid(child(&p, "hostPort"), &Value::from(n), msg));
            }
        }
        one_of(port, "protocol", &p, PROTOCOLS, errs);
    }
}

fn validate_containers(
    containers: &[Value],
    path: &str,
    names: &mut HashSet<String>,
    volumes: &HashSet<String>,
    errs: &mut Errs,
) {
    for (i, c) in containers.iter().enumerate() {
        let p = index(path, i);
        match get(c, "name") {
            None => errs.push(FieldError::required(child(&p, "name"), "")),
            Some(Value::String(name)) if name.is_empty() => errs.push(FieldError::required(child(&p, "name"), "")),
            Some(Value::String(name)) => {
                let msgs = is_dns1123_label(name);
                if msgs.is_empty() && !names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(child(&p, "name"), &Value::from(name.as_str())));
                }
                for msg in msgs {
                    errs.push(FieldError::invalid_str(child(&p, "name"), name, msg));
                }
            }
            Some(_) => {} // wrong type: the type check reports it
        }
        match get(c, "image") {
            None => errs.push(FieldError::required(child(&p, "image"), "")),
            Some(Value::String(s)) if s.trim().is_empty() => errs.push(FieldError::required(child(&p, "image"), "")),
            Some(_) => {}
        }
        one_of(c, "imagePullPolicy", &p, &["Always", "IfNotPresent", "Never"], errs);
        one_of(
            c,
            "terminationMessagePolicy",
            &p,
            &["FallbackToLogsOnError", "File"],
            errs,
        );
        validate_container_ports(get_arr(c, "ports"), &child(&p, "ports"), errs);
        validate_env(get_arr(c, "env"), &child(&p, "env"), errs);
        validate_env_from(get_arr(c, "envFrom"), &child(&p, "envFrom"), errs);
        validate_volume_mounts(get_arr(c, "volumeMounts"), volumes, &child(&p, "volumeMounts"), errs);
    }
}

/// What upstream's `validateInitContainers` adds for init containers: they run to
/// completion, so no probes and no lifecycle hooks. A container `restartPolicy` may only be
/// `Always` (a sidecar), which kulisse's kubelet does not run: refused with a clear error.
fn validate_init_only_fields(inits: &[Value], path: &str, errs: &mut Errs) {
    const WITHOUT_ALWAYS: &str = "may not be set for init containers without restartPolicy=Always";
    for (i, c) in inits.iter().enumerate() {
        let p = index(path, i);
        match get(c, "restartPolicy") {
            None => {}
            Some(Value::String(rp)) if rp == "Always" => errs.push(FieldError::forbidden(
                child(&p, "restartPolicy"),
                "sidecar containers (restartPolicy: Always) are not supported by kulisse's kubelet",
            )),
            Some(v) => errs.push(FieldError::not_supported(child(&p, "restartPolicy"), v, &["Always"])),
        }
        for field in ["lifecycle", "livenessProbe", "startupProbe"] {
            if get(c, field).is_some() {
                errs.push(FieldError::forbidden(child(&p, field), WITHOUT_ALWAYS));
            }
        }
        if get(c, "readinessProbe").is_some() {
            errs.push(FieldError::forbidden(
                child(&p, "readinessProbe"),
                "may not be set for init containers",
            ));
        }
    }
}

/// Rules for a `PodSpec` at `path` (`spec` for a Pod, `spec.template.spec` for a template).
pub(super) fn validate_pod_spec(spec: &Value, path: &str, in_template: bool, errs: &mut Errs) {
    let containers = get_arr(spec, "containers");
    let containers_field = get(spec, "containers");
    if containers.is_empty() && containers_field.is_none_or(Value::is_array) {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    let volumes = validate_volumes(get_arr(spec, "volumes"), &child(path, "volumes"), errs);
    let mut names = HashSet::new();
    validate_containers(containers, &child(path, "containers"), &mut names, &volumes, errs);
    validate_containers(
        get_arr(spec, "initContainers"),
        &child(path, "initContainers"),
        &mut names,
        &volumes,
        errs,
    );
    validate_init_only_fields(get_arr(spec, "initContainers"), &child(path, "initContainers"), errs);
    for (i, c) in containers.iter().enumerate() {
        if get(c, "restartPolicy").is_some() {
            let p = index(&child(path, "containers"), i);
            errs.push(FieldError::forbidden(
                child(&p, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    if let Some(rp) = get_str(spec, "restartPolicy") {
        if in_template {
            if rp != "Always" {
                errs.push(FieldError::not_supported(
                    child(path, "restartPolicy"),
                    &Value::from(rp),
                    &["Always"],
                ));
            }
        } else {
            one_of(spec, "restartPolicy", path, &["Always", "OnFailure", "Never"], errs);
        }
    }
    one_of(
        spec,
        "dnsPolicy",
        path,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        errs,
    );
    nonnegative(spec, "terminationGracePeriodSeconds", path, errs);
    if let Some(ads) = get(spec, "activeDeadlineSeconds") {
        if in_template {
            errs.push(FieldError::forbidden(
                child(path, "activeDeadlineSeconds"),
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            ));
        } else if ads.as_i64().is_some_and(|n| n <= 0) {
            errs.push(FieldError::invalid(
                child(path, "activeDeadlineSeconds"),
                ads,
                "must be greater than 0",
            ));
        }
    }
    if let Some(node) = get_str(spec, "nodeName")
        && !node.is_empty()
    {
        for msg in is_dns1123_subdomain(node) {
            errs.push(FieldError::invalid_str(child(path, "nodeName"), node, msg));
        }
    }
    validate_topology_spread_constraints(
        get_arr(spec, "topologySpreadConstraints"),
        &child(path, "topologySpreadConstraints"),
        errs,
    );
}

/// `spec.topologySpreadConstraints` (upstream's `validateTopologySpreadConstraints`).
fn validate_topology_spread_constraints(constraints: &[Value], path: &str, errs: &mut Errs) {
    const ACTIONS: &[&str] = &["DoNotSchedule", "ScheduleAnyway"];
    const POLICIES: &[&str] = &["Honor", "Ignore"];
    for (i, c) in constraints.iter().enumerate() {
        let p = index(path, i);
        let max_skew = get(c, "maxSkew").and_then(Value::as_i64).unwrap_or(0);
        if max_skew <= 0 {
            errs.push(FieldError::invalid(
                child(&p, "maxSkew"),
                &Value::from(max_skew),
                IS_NOT_POSITIVE_ERROR_MSG,
            ));
        }
        let key = get_str(c, "topologyKey").unwrap_or("");
        if key.is_empty() {
            errs.push(FieldError::required(child(&p, "topologyKey"), "can not be empty"));
        }
        let action = get_str(c, "whenUnsatisfiable").unwrap_or("");
        if !ACTIONS.contains(&action) {
            errs.push(FieldError::not_supported(
                child(&p, "whenUnsatisfiable"),
                &Value::from(action),
                ACTIONS,
            ));
        }
        let same_pair = |o: &Value| {
            get_str(o, "topologyKey").unwrap_or("") == key && get_str(o, "whenUnsatisfiable").unwrap_or("") == action
        };
        if constraints[i + 1..].iter().any(same_pair) {
            errs.push(FieldError::duplicate(
                child(&p, "{topologyKey, whenUnsatisfiable}"),
                &Value::from(format!("{{{key}, {action}}}")),
            ));
        }
        if let Some(md) = get(c, "minDomains") {
            if md.as_i64().is_some_and(|n| n <= 0) {
                errs.push(FieldError::invalid(
                    child(&p, "minDomains"),
                    md,
                    IS_NOT_POSITIVE_ERROR_MSG,
                ));
            }
            if action != "DoNotSchedule" {
                errs.push(FieldError::invalid(
                    child(&p, "minDomains"),
                    md,
                    format!("can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"),
                ));
            }
        }
        one_of(c, "nodeAffinityPolicy", &p, POLICIES, errs);
        one_of(c, "nodeTaintsPolicy", &p, POLICIES, errs);
        let selector = get(c, "labelSelector");
        validate_match_label_keys(
            get_arr(c, "matchLabelKeys"),
            selector,
            &child(&p, "matchLabelKeys"),
            errs,
        );
        if let Some(sel) = selector {
            validate_label_selector(sel, &child(&p, "labelSelector"), errs);
        }
    }
}

/// `matchLabelKeys`: label names, only next to a `labelSelector`, none of its keys.
fn validate_match_label_keys(keys: &[Value], selector: Option<&Value>, path: &str, errs: &mut Errs) {
    if keys.is_empty() {
        return;
    }
    let Some(selector) = selector else {
        errs.push(FieldError::forbidden(
            path,
            "must not be specified when labelSelector is not set",
        ));
        return;
    };
    let mut selector_keys: HashSet<&str> = HashSet::new();
    if let Some(ml) = get(selector, "matchLabels").and_then(Value::as_object) {
        selector_keys.extend(ml.keys().map(String::as_str));
    }
    selector_keys.extend(
        get_arr(selector, "matchExpressions")
            .iter()
            .filter_map(|e| get_str(e, "key")),
    );
    for (i, k) in keys.iter().enumerate() {
        let k = k.as_str().unwrap_or("");
        for msg in is_qualified_name(k) {
            errs.push(FieldError::invalid_str(index(path, i), k, msg));
        }
        if selector_keys.contains(k) {
            errs.push(FieldError::invalid_str(
                index(path, i),
                k,
                "exists in both matchLabelKeys and labelSelector",
            ));
        }
    }
}

/// Rules shared by Deployment and ReplicaSet: replicas, selector, template.
pub(super) fn validate_replicated_spec(spec: &Value, kind_word: &str, errs: &mut Errs) {
    nonnegative(spec, "replicas", "spec", errs);
    nonnegative(spec, "minReadySeconds", "spec", errs);
    let selector = get(spec, "selector");
    match selector {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            validate_label_selector(sel, "spec.selector", errs);
            let n = get(sel, "matchLabels").and_then(Value::as_object).map_or(0, Map::len)
                + get_arr(sel, "matchExpressions").len();
            if n == 0 {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    format!("empty selector is invalid for {kind_word}"),
                ));
            }
        }
    }
    let template = get(spec, "template");
    let Some(template) = template else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    let template_meta = get(template, "metadata").unwrap_or(&Value::Null);
    let labels_value = get(template_meta, "labels");
    if let Some(sel) = selector {
        let labels = crate::objects::string_map(labels_value);
        let n = get(sel, "matchLabels").and_then(Value::as_object).map_or(0, Map::len)
            + get_arr(sel, "matchExpressions").len();
        if n > 0 && !super::super::match_label_selector(sel, &labels) {
            let shown = labels_value.cloned().unwrap_or(Value::Null);
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                &shown,
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(labels) = labels_value {
        errs.extend(validate_labels(labels, "spec.template.metadata.labels"));
    }
    let pod_spec = get(template, "spec").unwrap_or(&Value::Null);
    validate_pod_spec(pod_spec, "spec.template.spec", true, errs);
}

/// `ValidatePositiveIntOrPercent` plus the percentage bound for `maxUnavailable`.
fn int_or_percent(v: &Value, path: &str, errs: &mut Errs) -> Option<i64> {
    match v {
        Value::String(s) => {
            let digits = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            match digits {
                Some(d) => d.parse::<i64>().ok(),
                None => {
                    errs.push(FieldError::invalid(
                        path,
                        v,
                        regex_error(PERCENT_ERR, PERCENT_FMT, &["1%", "93%"]),
                    ));
                    None
                }
            }
        }
        Value::Number(n) => {
            let n = n.as_i64()?;
            if n < 0 {
                errs.push(FieldError::invalid(path, v, IS_NEGATIVE_ERROR_MSG));
            }
            Some(n)
        }
        _ => None,
    }
}

pub(super) fn validate_deployment(obj: &Value, errs: &mut Errs) {
    let spec = get(obj, "spec").unwrap_or(&Value::Null);
    validate_replicated_spec(spec, "deployment", errs);
    if let Some(strategy) = get(spec, "strategy") {
        match get_str(strategy, "type") {
            Some("Recreate") => {
                if get(strategy, "rollingUpdate").is_some() {
                    errs.push(FieldError::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            Some("RollingUpdate") | None => {
                if let Some(ru) = get(strategy, "rollingUpdate") {
                    let p = "spec.strategy.rollingUpdate";
                    let mu =
                        get(ru, "maxUnavailable").map(|v| (v, int_or_percent(v, &child(p, "maxUnavailable"), errs)));
                    let ms = get(ru, "maxSurge").map(|v| int_or_percent(v, &child(p, "maxSurge"), errs));
                    if let (Some((mu_v, Some(0))), Some(Some(0))) = (mu, ms) {
                        errs.push(FieldError::invalid(
                            child(p, "maxUnavailable"),
                            mu_v,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                    if let Some((mu_v @ Value::String(_), Some(pct))) = mu
                        && pct > 100
                    {
                        errs.push(FieldError::invalid(
                            child(p, "maxUnavailable"),
                            mu_v,
                            "must not be greater than 100%",
                        ));
                    }
                }
            }
            Some(_) => errs.push(FieldError::not_supported(
                "spec.strategy",
                strategy,
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    nonnegative(spec, "revisionHistoryLimit", "spec", errs);
    if let Some(pds) = get(spec, "progressDeadlineSeconds").and_then(Value::as_i64) {
        if pds < 0 {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(pds),
                IS_NEGATIVE_ERROR_MSG,
            ));
        } else if pds <= get(spec, "minReadySeconds").and_then(Value::as_i64).unwrap_or(0) {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(pds),
                "must be greater than minReadySeconds",
            ));
        }
    }
}
