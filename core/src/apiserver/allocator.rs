//! # Service address allocation (mirrors kube-apiserver's ClusterIP and NodePort allocators)
//!
//! A Service gets a stable virtual address, its **ClusterIP**, the moment it is created:
//! the API server hands out the next free address from the service range. Nothing listens
//! on that address by itself; kube-proxy makes connections to it reach the pods. A
//! `NodePort` Service also gets a **node port** (30000–32767) that kube-proxy opens on every
//! node.
//!
//! kulisse's service range is `127.1.0.0/16`, inside loopback, so on one machine a service
//! address is directly reachable and a stray connection never leaves the host.
//!
//! Kubernetes keeps the allocation bitmaps in etcd so several API servers agree; kulisse
//! runs one API server and rebuilds the table from the stored Services when it starts.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::objects::{self, ApiError, ResourceInfo, StatusCause};

/// The first address of the service range (`127.1.0.0/16`).
pub const SERVICE_RANGE_BASE: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 0);
/// Addresses in the service range.
pub const SERVICE_RANGE_SIZE: u32 = 1 << 16;
/// The node port range.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Who holds which service address and node port (`namespace/name` of the Service).
#[derive(Default, Debug)]
pub struct ServiceAllocator {
    ips: HashMap<Ipv4Addr, String>,
    node_ports: HashMap<u16, String>,
    next_ip: u32,
    next_port: u16,
}

fn owner_of(svc: &Value) -> String {
    format!(
        "{}/{}",
        objects::namespace(svc).unwrap_or(""),
        objects::name(svc).unwrap_or("")
    )
}

fn in_range(ip: Ipv4Addr) -> bool {
    let base = u32::from(SERVICE_RANGE_BASE);
    let v = u32::from(ip);
    v > base && v < base + SERVICE_RANGE_SIZE - 1
}

impl ServiceAllocator {
    /// A table holding the addresses and ports of `services`.
    pub fn from_services(services: &[Value]) -> Self {
        let mut a = ServiceAllocator {
            next_ip: 1,
            next_port: *NODE_PORTS.start(),
            ..Default::default()
        };
        for svc in services {
            let owner = owner_of(svc);
            if let Some(ip) = svc
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            {
                a.ips.insert(ip, owner.clone());
            }
            for p in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(np) = p
                    .get("nodePort")
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
                {
                    a.node_ports.insert(np, owner.clone());
                }
            }
        }
        a
    }

    /// Fill in `spec.clusterIP`/`clusterIPs` and missing node ports of a Service, checking
    /// the ones the user chose. Idempotent: addresses the Service already holds are kept.
    pub fn allocate(&mut self, info: &ResourceInfo, svc: &mut Value) -> Result<(), ApiError> {
        let owner = owner_of(svc);
        let name = objects::name(svc).unwrap_or("").to_string();
        let invalid = |field: &str, value: &str, msg: &str| {
            ApiError::invalid(
                info,
                &name,
                vec![StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: \"{value}\": {msg}"),
                    field: field.into(),
                }],
            )
        };
        let svc_type = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if svc_type == "ExternalName" {
            return Ok(());
        }
        match svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            Some(ip) if ip == "None" => {}
            Some(ip) if !ip.is_empty() => {
                let addr: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| invalid("spec.clusterIP", &ip, "must be a valid IP address"))?;
                if !in_range(addr) {
                    return Err(invalid(
                        "spec.clusterIP",
                        &ip,
                        "provided IP is not in the valid range. The range of valid IPs is 127.1.0.0/16",
                    ));
                }
                match self.ips.get(&addr) {
                    Some(holder) if *holder != owner => {
                        return Err(invalid("spec.clusterIP", &ip, "provided IP is already allocated"));
                    }
                    _ => {
                        self.ips.insert(addr, owner.clone());
                    }
                }
            }
            _ => {
                let ip = self
                    .next_free_ip()
                    .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?;
                self.ips.insert(ip, owner.clone());
                svc["spec"]["clusterIP"] = json!(ip.to_string());
            }
        }
        if let Some(ip) = svc.pointer("/spec/clusterIP").cloned() {
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
        if matches!(svc_type.as_str(), "NodePort" | "LoadBalancer") {
            let count = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
            for i in 0..count {
                let current = svc["spec"]["ports"][i].get("nodePort").and_then(Value::as_u64);
                match current {
                    Some(np) => {
                        let port = u16::try_from(np)
                            .ok()
                            .filter(|p| NODE_PORTS.contains(p))
                            .ok_or_else(|| {
                                invalid(
                                    &format!("spec.ports[{i}].nodePort"),
                                    &np.to_string(),
                                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                                )
                            })?;
                        match self.node_ports.get(&port) {
                            Some(holder) if *holder != owner => {
                                return Err(invalid(
                                    &format!("spec.ports[{i}].nodePort"),
                                    &np.to_string(),
                                    "provided port is already allocated",
                                ));
                            }
                            _ => {
                                self.node_ports.insert(port, owner.clone());
                            }
                        }
                    }
                    None => {
                        let port = self
                            .next_free_port()
                            .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?;
                        self.node_ports.insert(port, owner.clone());
                        svc["spec"]["ports"][i]["nodePort"] = json!(port);
                    }
                }
            }
        }
        Ok(())
    }

    /// Give back everything `svc` held.
    pub fn release(&mut self, svc: &Value) {
        let owner = owner_of(svc);
        self.ips.retain(|_, o| *o != owner);
        self.node_ports.retain(|_, o| *o != owner);
    }

    fn next_free_ip(&mut self) -> Option<Ipv4Addr> {
        let base = u32::from(SERVICE_RANGE_BASE);
        for _ in 0..SERVICE_RANGE_SIZE {
            let offset = self.next_ip;
            self.next_ip = if self.next_ip + 2 >= SERVICE_RANGE_SIZE {
                1
            } else {
                self.next_ip + 1
            };
            let ip = Ipv4Addr::from(base + offset);
            if in_range(ip) && !self.ips.contains_key(&ip) {
                return Some(ip);
            }
        }
        None
    }

    fn next_free_port(&mut self) -> Option<u16> {
        for _ in NODE_PORTS {
            let p = self.next_port;
            self.next_port = if p >= *NODE_PORTS.end() {
                *NODE_PORTS.start()
            } else {
                p + 1
            };
            if !self.node_ports.contains_key(&p) {
                return Some(p);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn allocates_in_loopback_range_and_detects_conflicts() {
        let info = objects::by_gvk("v1", "Service").unwrap();
        let mut a = ServiceAllocator::from_services(&[]);
        let mut s1 = svc("a", json!({"ports": [{"port": 80}]}));
        a.allocate(info, &mut s1).unwrap();
        assert_eq!(s1["spec"]["clusterIP"], "127.1.0.1");
        let mut s2 = svc("b", json!({"type": "NodePort", "ports": [{"port": 80}]}));
        a.allocate(info, &mut s2).unwrap();
        assert_eq!(s2["spec"]["clusterIP"], "127.1.0.2");
        assert_eq!(s2["spec"]["ports"][0]["nodePort"], 30000);
        // idempotent for the holder
        a.allocate(info, &mut s2).unwrap();
        assert_eq!(s2["spec"]["ports"][0]["nodePort"], 30000);
        let mut s3 = svc("c", json!({"clusterIP": "127.1.0.1", "ports": [{"port": 80}]}));
        assert_eq!(a.allocate(info, &mut s3).unwrap_err().code, 422);
        let mut s4 = svc("d", json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}));
        assert_eq!(a.allocate(info, &mut s4).unwrap_err().code, 422);
        a.release(&s1);
        let mut s5 = svc("e", json!({"clusterIP": "127.1.0.1", "ports": [{"port": 80}]}));
        a.allocate(info, &mut s5).unwrap();
        let mut headless = svc("h", json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        a.allocate(info, &mut headless).unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }
}
