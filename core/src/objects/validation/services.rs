//! Services, Endpoints, EndpointSlices, Events, ConfigMaps and Leases: the rules
//! `pkg/apis/core/validation`, `pkg/apis/discovery/validation` and
//! `pkg/apis/coordination/validation` apply to each.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::*;

pub(super) fn validate_service(obj: &Value, errs: &mut Errs) {
    let spec = get(obj, "spec").unwrap_or(&Value::Null);
    let svc_type = get_str(spec, "type").unwrap_or("ClusterIP");
    let headless = get_str(spec, "clusterIP") == Some("None");
    let ports = get_arr(spec, "ports");
    if ports.is_empty() && !headless && svc_type != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let require_name = ports.len() > 1;
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index("spec.ports", i);
        validate_service_port(port, &p, require_name, &mut names, errs);
        validate_node_port(port, &p, svc_type, errs);
        if let Some(n) = get(port, "port").and_then(Value::as_i64) {
            let protocol = get_str(port, "protocol").unwrap_or("TCP");
            if !seen.insert((n, protocol.to_string())) {
                let mut key = Map::new();
                key.insert("port".into(), Value::from(n));
                key.insert("protocol".into(), Value::from(protocol));
                errs.push(FieldError::duplicate(p.clone(), &Value::Object(key)));
            }
        }
    }
    one_of(
        spec,
        "type",
        "spec",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        errs,
    );
    one_of(spec, "sessionAffinity", "spec", &["ClientIP", "None"], errs);
    if svc_type == "ExternalName" && get_str(spec, "externalName").is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    if let Some(ip) = get_str(spec, "clusterIP")
        && !ip.is_empty()
        && ip != "None"
        && ip.parse::<IpAddr>().is_err()
    {
        errs.push(FieldError::invalid_str(
            "spec.clusterIP",
            ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if let Some(sel) = get(spec, "selector") {
        errs.extend(validate_labels(sel, "spec.selector"));
    }
}

/// One entry of `spec.ports` (upstream's `validateServicePort`): its name (required when
/// there are several, unique), port, protocol and target port.
fn validate_service_port(port: &Value, p: &str, require_name: bool, names: &mut HashSet<String>, errs: &mut Errs) {
    match get_str(port, "name").unwrap_or("") {
        "" => {
            if require_name {
                errs.push(FieldError::required(child(p, "name"), ""));
            }
        }
        name => {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid_str(child(p, "name"), name, msg));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(p, "name"), &Value::from(name)));
            }
        }
    }
    if let Some(n) = get(port, "port").and_then(Value::as_i64) {
        for msg in is_valid_port_num(n) {
            errs.push(FieldError::invalid(child(p, "port"), &Value::from(n), msg));
        }
    } else if get(port, "port").is_none() {
        errs.push(FieldError::required(child(p, "port"), ""));
    }
    one_of(port, "protocol", p, PROTOCOLS, errs);
    match get(port, "targetPort") {
        Some(Value::Number(n)) => {
            if let Some(n) = n.as_i64() {
                // 0 means "not set" (defaulting copies `port`).
                if n != 0 {
                    for msg in is_valid_port_num(n) {
                        errs.push(FieldError::invalid(child(p, "targetPort"), &Value::from(n), msg));
                    }
                }
            }
        }
        Some(Value::String(s)) if !s.is_empty() => {
            for msg in is_valid_port_name(s) {
                errs.push(FieldError::invalid_str(child(p, "targetPort"), s, msg));
            }
        }
        _ => {}
    }
}

/// A port's `nodePort`: forbidden on a `ClusterIP` Service, otherwise inside the node port range.
fn validate_node_port(port: &Value, p: &str, svc_type: &str, errs: &mut Errs) {
    let Some(np) = get(port, "nodePort").and_then(Value::as_i64).filter(|np| *np != 0) else {
        return;
    };
    if svc_type == "ClusterIP" {
        errs.push(FieldError::forbidden(
            child(p, "nodePort"),
            "may not be used when `type` is 'ClusterIP'",
        ));
    } else if !NODE_PORT_RANGE.contains(&np) {
        errs.push(FieldError::invalid(
            child(p, "nodePort"),
            &Value::from(np),
            format!(
                "provided port is not in the valid range. The range of valid ports is {}-{}",
                NODE_PORT_RANGE.start(),
                NODE_PORT_RANGE.end()
            ),
        ));
    }
}

pub(super) fn validate_endpoints(obj: &Value, errs: &mut Errs) {
    for (i, subset) in get_arr(obj, "subsets").iter().enumerate() {
        let sp = index("subsets", i);
        for list in ["addresses", "notReadyAddresses"] {
            for (j, addr) in get_arr(subset, list).iter().enumerate() {
                let ap = index(&child(&sp, list), j);
                match get_str(addr, "ip") {
                    None | Some("") => errs.push(FieldError::required(child(&ap, "ip"), "")),
                    Some(ip) if ip.parse::<IpAddr>().is_err() => errs.push(FieldError::invalid_str(
                        child(&ap, "ip"),
                        ip,
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )),
                    Some(_) => {}
                }
            }
        }
        for (k, port) in get_arr(subset, "ports").iter().enumerate() {
            let pp = index(&child(&sp, "ports"), k);
            if let Some(n) = get(port, "port").and_then(Value::as_i64) {
                for msg in is_valid_port_num(n) {
                    errs.push(FieldError::invalid(child(&pp, "port"), &Value::from(n), msg));
                }
            }
            one_of(port, "protocol", &pp, PROTOCOLS, errs);
        }
    }
}

/// At most this many endpoints in one EndpointSlice, and addresses in one endpoint.
const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_ENDPOINT_ADDRESSES: usize = 100;

/// `discovery.k8s.io/v1` EndpointSlice (upstream's `ValidateEndpointSlice`).
pub(super) fn validate_endpoint_slice(obj: &Value, errs: &mut Errs) {
    let address_type = get_str(obj, "addressType");
    match address_type {
        None | Some("") => errs.push(FieldError::required("addressType", "")),
        Some(_) => one_of(obj, "addressType", "", &["FQDN", "IPv4", "IPv6"], errs),
    }
    let endpoints = get_arr(obj, "endpoints");
    if endpoints.len() > MAX_SLICE_ENDPOINTS {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), MAX_SLICE_ENDPOINTS));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let path = index("endpoints", i);
        let addresses = get_arr(ep, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(
                child(&path, "addresses"),
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ENDPOINT_ADDRESSES {
            errs.push(FieldError::too_many(
                child(&path, "addresses"),
                addresses.len(),
                MAX_ENDPOINT_ADDRESSES,
            ));
        }
        for (j, addr) in addresses.iter().enumerate() {
            let ap = index(&child(&path, "addresses"), j);
            let text = addr.as_str().unwrap_or("");
            let bad = match address_type {
                Some("IPv4") => text
                    .parse::<std::net::Ipv4Addr>()
                    .is_err()
                    .then_some("must be a valid IPv4 address"),
                Some("IPv6") => text
                    .parse::<std::net::Ipv6Addr>()
                    .is_err()
                    .then_some("must be a valid IPv6 address"),
                _ => None,
            };
            if let Some(msg) = bad {
                errs.push(FieldError::invalid_str(ap, text, msg));
            }
        }
        if let Some(node) = get_str(ep, "nodeName") {
            for msg in is_dns1123_subdomain(node) {
                errs.push(FieldError::invalid_str(child(&path, "nodeName"), node, msg));
            }
        }
        if let Some(host) = get_str(ep, "hostname") {
            for msg in is_dns1123_label(host) {
                errs.push(FieldError::invalid_str(child(&path, "hostname"), host, msg));
            }
        }
    }
    validate_slice_ports(get_arr(obj, "ports"), errs);
}

fn validate_slice_ports(ports: &[Value], errs: &mut Errs) {
    let mut names = HashSet::new();
    for (k, port) in ports.iter().enumerate() {
        let pp = index("ports", k);
        let name = get_str(port, "name").unwrap_or("");
        if !name.is_empty() {
            for msg in is_valid_port_name(name) {
                errs.push(FieldError::invalid_str(child(&pp, "name"), name, msg));
            }
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&pp, "name"), &Value::from(name)));
        }
        if let Some(n) = get(port, "port").and_then(Value::as_i64) {
            for msg in is_valid_port_num(n) {
                errs.push(FieldError::invalid(child(&pp, "port"), &Value::from(n), msg));
            }
        }
        one_of(port, "protocol", &pp, PROTOCOLS, errs);
    }
}

pub(super) fn validate_event(obj: &Value, errs: &mut Errs) {
    match get(obj, "involvedObject") {
        None => errs.push(FieldError::required("involvedObject", "")),
        Some(io) => {
            let ev_ns = get(obj, "metadata").and_then(|m| get_str(m, "namespace"));
            if let (Some(ev_ns), Some(io_ns)) = (ev_ns, get_str(io, "namespace"))
                && !ev_ns.is_empty()
                && !io_ns.is_empty()
                && ev_ns != io_ns
            {
                errs.push(FieldError::invalid_str(
                    "involvedObject.namespace",
                    io_ns,
                    "does not match event.namespace",
                ));
            }
        }
    }
}

pub(super) fn validate_config_map(obj: &Value, errs: &mut Errs) {
    let mut total = 0usize;
    let data_keys: BTreeSet<&str> = get(obj, "data")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for field in ["data", "binaryData"] {
        if let Some(m) = get(obj, field).and_then(Value::as_object) {
            for (k, v) in m {
                for msg in is_config_map_key(k) {
                    errs.push(FieldError::invalid_str(key(field, k), k, msg));
                }
                if field == "binaryData" && data_keys.contains(k.as_str()) {
                    errs.push(FieldError::invalid_str(
                        key("data", k),
                        k,
                        "duplicate of key present in binaryData",
                    ));
                }
                total += k.len() + v.as_str().map_or(0, str::len);
            }
        }
    }
    const MAX_CONFIG_MAP_SIZE: usize = 1024 * 1024;
    if total > MAX_CONFIG_MAP_SIZE {
        errs.push(FieldError::too_long("data", MAX_CONFIG_MAP_SIZE));
    }
}

pub(super) fn validate_lease(obj: &Value, errs: &mut Errs) {
    let spec = get(obj, "spec").unwrap_or(&Value::Null);
    if let Some(n) = get(spec, "leaseDurationSeconds").and_then(Value::as_i64)
        && n <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            &Value::from(n),
            "must be greater than 0",
        ));
    }
    nonnegative(spec, "leaseTransitions", "spec", errs);
}
