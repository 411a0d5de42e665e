//! # The machine's size (mirrors the kubelet's cAdvisor machine info)
//!
//! A real kubelet reports what its machine has: `status.capacity.cpu` is the number of
//! logical CPUs online, `status.capacity.memory` the total RAM, both read from the kernel
//! (cAdvisor reads `/proc/cpuinfo`, `/sys/devices/system/cpu` and `/proc/meminfo`).
//! `status.allocatable` is that minus what is reserved for the system and the kubelet
//! (`--kube-reserved`, `--system-reserved`) and the eviction threshold (100Mi of memory by
//! default): what the scheduler may hand out to pods.
//!
//! kulisse's podman nodes read the same files. Where kulisse differs: it reserves nothing,
//! so allocatable equals capacity, and all podman nodes of one machine report the same
//! machine (they share it). Mock nodes are simulated and take their size from flags
//! (`--node-cpu`, `--node-memory`, `--node-pods`).

/// The total memory in bytes from the text of `/proc/meminfo` (its `MemTotal:` line, in KiB).
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => kib.checked_mul(1024),
        Some(_) => None,
    }
}

/// The number of CPUs in a kernel CPU list such as `/sys/devices/system/cpu/online`
/// (`0-3,6,8-9` → 7).
pub fn cpu_list_count(list: &str) -> Option<u32> {
    let mut count: u32 = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let n = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
        count = count.checked_add(n)?;
    }
    (count > 0).then_some(count)
}

/// `(cpu, memory)` of this machine as Node quantities (`"8"`, `"16318412Ki"`), or an error
/// saying which file could not be read.
pub fn host_capacity() -> Result<(String, String), String> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok();
    let cpus = online
        .as_deref()
        .and_then(cpu_list_count)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get() as u32))
        .ok_or("cannot count the CPUs: /sys/devices/system/cpu/online is unreadable")?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("reading /proc/meminfo: {e}"))?;
    let bytes = mem_total_bytes(&meminfo).ok_or("/proc/meminfo has no readable MemTotal line")?;
    Ok((cpus.to_string(), format!("{}Ki", bytes / 1024)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_from_meminfo() {
        let meminfo = "MemTotal:       16318412 kB\nMemFree:         1234567 kB\nMemAvailable:   9000000 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(16318412 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: lots kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: 1 MB\n"), None);
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_list_count("0-3\n"), Some(4));
        assert_eq!(cpu_list_count("0"), Some(1));
        assert_eq!(cpu_list_count("0-3,6,8-9"), Some(7));
        assert_eq!(cpu_list_count(""), None);
        assert_eq!(cpu_list_count("3-1"), None);
        assert_eq!(cpu_list_count("x"), None);
    }

    #[test]
    fn this_machine_has_cpus_and_memory() {
        let (cpu, memory) = host_capacity().unwrap();
        assert!(cpu.parse::<u32>().unwrap() >= 1, "{cpu}");
        let mem = crate::objects::quantity::whole_units(&serde_json::json!(memory)).unwrap();
        assert!(mem > 64 << 20, "{memory}");
    }
}
