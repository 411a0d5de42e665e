//! # Service address allocation (mirrors kube-apiserver's ClusterIP and NodePort allocators)
//!
//! A Service gets a stable virtual address, its **ClusterIP**, the moment it is created:
//! the API server hands out the next free address from the service range. Nothing listens
//! on that address by itself; kube-proxy makes connections to it reach the pods. A
//! `NodePort` Service also gets a **node port** (30000–32767) that kube-proxy opens on every
//! node.
//!
//! kulisse's service range is `127.1.0.0/16` by default (`kulisse up --service-cidr`), always
//! inside loopback, so on one machine a service address is directly reachable and a stray
//! connection never leaves the host. Two clusters on one machine should use different
//! ranges, since only one can listen on an address.
//!
//! Kubernetes keeps the allocation bitmaps in etcd so several API servers agree; kulisse
//! runs one API server and rebuilds the table from the stored Services when it starts.
//!
//! **Allocation is a transaction.** The addresses are taken *before* the Service is written,
//! so that two creates cannot both get the same one. If the request then fails (the name is
//! taken, the store refuses the write) or was a dry run (`?dryRun=All`), what it took is
//! given back ([`ServiceAllocator::revert`] with the [`Allocation`] that `allocate`
//! returned), as upstream's allocation transaction reverts. Nothing a request allocates
//! outlives it unless the Service was stored. (A request cancelled mid-way, by a client that
//! hangs up between the allocation and the write, is the one case not reverted; a restart
//! rebuilds the table from the stored Services.)
//!
//! A Service is identified by its `metadata.uid` (by `namespace/name` when it has none), so
//! a failed second create of an existing name cannot give back what the stored one holds.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::objects::{self, ApiError, ResourceInfo, StatusCause};

/// The default service range, `127.1.0.0/16`.
pub const DEFAULT_SERVICE_CIDR: ServiceCidr = ServiceCidr {
    base: Ipv4Addr::new(127, 1, 0, 0),
    prefix: 16,
};

/// A service address range such as `127.1.0.0/16`, always inside 127.0.0.0/8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl ServiceCidr {
    /// Parse `127.X.0.0/16`-style text; the range must lie inside loopback (127.0.0.0/8) and
    /// hold at least a few addresses (prefix 8..=28).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ip, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR like 127.1.0.0/16"))?;
        let base: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        if !(8..=28).contains(&prefix) {
            return Err(format!("the service range /{prefix} must be between /8 and /28"));
        }
        if base.octets()[0] != 127 {
            return Err(format!(
                "the service range {text} is outside loopback: kulisse keeps service addresses inside 127.0.0.0/8 so that traffic never leaves this machine"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(ServiceCidr {
            base: Ipv4Addr::from(u32::from(base) & mask),
            prefix,
        })
    }

    /// Number of addresses in the range.
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    fn contains_usable(&self, ip: Ipv4Addr) -> bool {
        let (base, v) = (u32::from(self.base), u32::from(ip));
        v > base && v < base + self.size() - 1
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}
/// The node port range.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Who holds which service address and node port (`namespace/name` of the Service).
#[derive(Debug)]
pub struct ServiceAllocator {
    cidr: ServiceCidr,
    ips: HashMap<Ipv4Addr, String>,
    node_ports: HashMap<u16, String>,
    next_ip: u32,
    next_port: u16,
}

fn owner_of(svc: &Value) -> String {
    match svc
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        Some(uid) => uid.to_string(),
        None => format!(
            "{}/{}",
            objects::namespace(svc).unwrap_or(""),
            objects::name(svc).unwrap_or("")
        ),
    }
}

/// What one [`ServiceAllocator::allocate`] call newly took (addresses and ports the Service
/// did not hold before). Give it back with [`ServiceAllocator::revert`] if the request that
/// allocated it does not store the Service.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use = "revert the allocation if the Service is not stored"]
pub struct Allocation {
    ips: Vec<Ipv4Addr>,
    node_ports: Vec<u16>,
}

impl Allocation {
    /// True when the call took nothing new.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.node_ports.is_empty()
    }
}

impl ServiceAllocator {
    /// A table holding the addresses and ports of `services`.
    /// A table for `cidr` holding the addresses and ports of `services`. Node ports are
    /// handed out from a random starting point, as kube-apiserver does, so two clusters on
    /// one machine rarely pick the same one.
    pub fn from_services(cidr: ServiceCidr, services: &[Value]) -> Self {
        let span = u32::from(*NODE_PORTS.end() - *NODE_PORTS.start()) + 1;
        let next_port = *NODE_PORTS.start() + (rand::random::<u32>() % span) as u16;
        let mut a = ServiceAllocator {
            cidr,
            ips: HashMap::new(),
            node_ports: HashMap::new(),
            next_ip: 1,
            next_port,
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
    /// Returns what was newly taken; on an error nothing stays taken.
    pub fn allocate(&mut self, info: &ResourceInfo, svc: &mut Value) -> Result<Allocation, ApiError> {
        let mut taken = Allocation::default();
        let result = self.allocate_into(info, svc, &mut taken);
        match result {
            Ok(()) => Ok(taken),
            Err(e) => {
                self.revert(taken);
                Err(e)
            }
        }
    }

    fn allocate_into(&mut self, info: &ResourceInfo, svc: &mut Value, taken: &mut Allocation) -> Result<(), ApiError> {
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
        // A spec that is not an object is for validation to reject; nothing to allocate.
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let svc_type = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if svc_type == "ExternalName" {
            return Ok(());
        }
        match spec.get("clusterIP").and_then(Value::as_str).map(str::to_string) {
            Some(ip) if ip == "None" => {}
            Some(ip) if !ip.is_empty() => {
                let addr: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| invalid("spec.clusterIP", &ip, "must be a valid IP address"))?;
                if !self.cidr.contains_usable(addr) {
                    let msg = format!(
                        "provided IP is not in the valid range. The range of valid IPs is {}",
                        self.cidr
                    );
                    return Err(invalid("spec.clusterIP", &ip, &msg));
                }
                match self.ips.get(&addr) {
                    Some(holder) if *holder == owner => {}
                    Some(_) => return Err(invalid("spec.clusterIP", &ip, "provided IP is already allocated")),
                    None => {
                        self.ips.insert(addr, owner.clone());
                        taken.ips.push(addr);
                    }
                }
            }
            _ => {
                let ip = self
                    .next_free_ip()
                    .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?;
                self.ips.insert(ip, owner.clone());
                taken.ips.push(ip);
                spec.insert("clusterIP".into(), json!(ip.to_string()));
            }
        }
        if let Some(ip) = spec.get("clusterIP").cloned() {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        if matches!(svc_type.as_str(), "NodePort" | "LoadBalancer") {
            let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
            for (i, port) in ports.into_iter().flatten().enumerate() {
                if let Some(port) = port.as_object_mut() {
                    self.allocate_node_port(port, i, &owner, taken, &invalid)?;
                }
            }
        }
        Ok(())
    }

    /// The node port of `ports[i]`: check the one asked for, or hand out a free one.
    fn allocate_node_port(
        &mut self,
        port: &mut serde_json::Map<String, Value>,
        i: usize,
        owner: &str,
        taken: &mut Allocation,
        invalid: &dyn Fn(&str, &str, &str) -> ApiError,
    ) -> Result<(), ApiError> {
        let field = format!("spec.ports[{i}].nodePort");
        // `nodePort: 0` (or null) asks for one, as upstream.
        match port.get("nodePort").filter(|v| !v.is_null() && v.as_u64() != Some(0)) {
            Some(v) => {
                let shown = v.to_string();
                let wanted = v
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|p| NODE_PORTS.contains(p))
                    .ok_or_else(|| {
                        invalid(
                            &field,
                            &shown,
                            "provided port is not in the valid range. The range of valid ports is 30000-32767",
                        )
                    })?;
                match self.node_ports.get(&wanted) {
                    Some(holder) if holder == owner => {}
                    Some(_) => return Err(invalid(&field, &shown, "provided port is already allocated")),
                    None => {
                        self.node_ports.insert(wanted, owner.to_string());
                        taken.node_ports.push(wanted);
                    }
                }
            }
            None => {
                let free = self
                    .next_free_port()
                    .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?;
                self.node_ports.insert(free, owner.to_string());
                taken.node_ports.push(free);
                port.insert("nodePort".into(), json!(free));
            }
        }
        Ok(())
    }

    /// Give back what one [`ServiceAllocator::allocate`] call took (the request failed, or
    /// was a dry run).
    pub fn revert(&mut self, taken: Allocation) {
        for ip in taken.ips {
            self.ips.remove(&ip);
        }
        for port in taken.node_ports {
            self.node_ports.remove(&port);
        }
    }

    /// Give back everything `svc` held.
    pub fn release(&mut self, svc: &Value) {
        let owner = owner_of(svc);
        self.ips.retain(|_, o| *o != owner);
        self.node_ports.retain(|_, o| *o != owner);
    }

    fn next_free_ip(&mut self) -> Option<Ipv4Addr> {
        let (base, size) = (u32::from(self.cidr.base), self.cidr.size());
        for _ in 0..size {
            let offset = self.next_ip;
            self.next_ip = if self.next_ip + 2 >= size { 1 } else { self.next_ip + 1 };
            let ip = Ipv4Addr::from(base + offset);
            if self.cidr.contains_usable(ip) && !self.ips.contains_key(&ip) {
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
        let mut a = ServiceAllocator::from_services(DEFAULT_SERVICE_CIDR, &[]);
        let mut s1 = svc("a", json!({"ports": [{"port": 80}]}));
        let _ = a.allocate(info, &mut s1).unwrap();
        assert_eq!(s1["spec"]["clusterIP"], "127.1.0.1");
        let mut s2 = svc("b", json!({"type": "NodePort", "ports": [{"port": 80}]}));
        let _ = a.allocate(info, &mut s2).unwrap();
        assert_eq!(s2["spec"]["clusterIP"], "127.1.0.2");
        let port = s2["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&port), "{port}");
        // idempotent for the holder
        assert!(a.allocate(info, &mut s2).unwrap().is_empty());
        assert_eq!(s2["spec"]["ports"][0]["nodePort"], port);
        let mut s3 = svc("c", json!({"clusterIP": "127.1.0.1", "ports": [{"port": 80}]}));
        assert_eq!(a.allocate(info, &mut s3).unwrap_err().code, 422);
        let mut s4 = svc("d", json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}));
        assert_eq!(a.allocate(info, &mut s4).unwrap_err().code, 422);
        a.release(&s1);
        let mut s5 = svc("e", json!({"clusterIP": "127.1.0.1", "ports": [{"port": 80}]}));
        let _ = a.allocate(info, &mut s5).unwrap();
        let mut headless = svc("h", json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        let _ = a.allocate(info, &mut headless).unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn service_ranges_stay_inside_loopback() {
        assert_eq!(
            ServiceCidr::parse("127.42.0.0/16").unwrap().to_string(),
            "127.42.0.0/16"
        );
        assert!(
            ServiceCidr::parse("10.96.0.0/12")
                .unwrap_err()
                .contains("outside loopback")
        );
        assert!(ServiceCidr::parse("127.0.0.0/30").is_err());
        let info = objects::by_gvk("v1", "Service").unwrap();
        let mut a = ServiceAllocator::from_services(ServiceCidr::parse("127.42.0.0/24").unwrap(), &[]);
        let mut s = svc("x", json!({"ports": [{"port": 80}]}));
        let _ = a.allocate(info, &mut s).unwrap();
        assert_eq!(s["spec"]["clusterIP"], "127.42.0.1");
    }

    #[test]
    fn a_reverted_or_failed_allocation_leaves_nothing_taken() {
        let info = objects::by_gvk("v1", "Service").unwrap();
        let mut a = ServiceAllocator::from_services(DEFAULT_SERVICE_CIDR, &[]);
        let spec = json!({"type": "NodePort", "clusterIP": "127.1.0.9", "ports": [{"port": 80, "nodePort": 30555}]});
        let mut dry = svc("dry", spec.clone());
        let taken = a.allocate(info, &mut dry).unwrap();
        a.revert(taken);
        let mut real = svc("real", spec.clone());
        let _ = a.allocate(info, &mut real).expect("the dry run gave everything back");
        // The second port is taken: the first port and the address must not stay taken.
        let mut clash = svc(
            "clash",
            json!({"type": "NodePort", "clusterIP": "127.1.0.10", "ports": [{"port": 80, "nodePort": 30600}, {"port": 81, "nodePort": 30555}]}),
        );
        assert_eq!(a.allocate(info, &mut clash).unwrap_err().code, 422);
        let mut again = svc(
            "again",
            json!({"type": "NodePort", "clusterIP": "127.1.0.10", "ports": [{"port": 80, "nodePort": 30600}]}),
        );
        let _ = a
            .allocate(info, &mut again)
            .expect("the failed allocation gave everything back");
        // Hostile shapes are left to validation, never a panic.
        let _ = a.allocate(info, &mut svc("x", json!([]))).unwrap();
        let _ = a
            .allocate(info, &mut svc("y", json!({"type": "NodePort", "ports": ["80", 7]})))
            .unwrap();
    }
}
