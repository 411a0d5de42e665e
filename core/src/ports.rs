//! # Picking a port for a process that must be told its port
//!
//! kulisse's own servers never need a port number in advance: they are handed a listener,
//! and a test binds `127.0.0.1:0` and reads the port the kernel gave. etcd, HAProxy, Jaeger
//! and the API servers of `kulisse up --masters 3` are different. Each is *told* its port,
//! on its command line or in a config file, and binds it a moment (or a restart) later.
//!
//! The usual trick, bind port 0, read the port and close the socket, hands out a port from
//! the kernel's *ephemeral* range (`net.ipv4.ip_local_port_range`, 32768–60999 by default).
//! That is the range the kernel also takes the local port of every outgoing connection from,
//! and a cluster opens thousands of connections a minute. A port picked that way and bound
//! minutes later can be in use by then. This happened in CI: Jaeger, started in the fifth lab
//! of a chapter, found its query port taken by one of the cluster's own connections. A restart
//! of `kulisse up --masters 3` is exposed in the same way, because it reuses the ports it
//! wrote to `masters.json`.
//!
//! Kubernetes avoids the problem with fixed, well-known ports below that range: 6443 for the
//! API server, 2379 and 2380 for etcd, 10250 for the kubelet. kulisse needs several copies of
//! each on one machine, so it picks at random below the ephemeral range and checks that
//! nothing listens there:
//!
//! - [`CLUSTER`] (20000–32767) for the processes kulisse starts;
//! - [`TESTS`] (10000–19999) for the test harness. A chapter's port for Jaeger may wait minutes
//!   to be bound while the cluster it is testing picks ports of its own; two bands mean the two
//!   can never pick the same one.
//!
//! One process never hands out the same port twice. A band that the ephemeral range covers
//! (on a machine that lowered it) is cut at the range's start. If nothing is left, the kernel
//! picks, as before.
//!
//! `portpicker` does the random pick, but it has a single band and no record of the
//! ports it handed out, so this module is hand-written (about 40 lines).

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use rand::Rng;

/// Ports for the processes kulisse starts (etcd members, API servers, HAProxy, the bench).
pub const CLUSTER: Range<u16> = 20000..32768;
/// Ports for test harnesses, which may hold a number for minutes before anything binds it.
pub const TESTS: Range<u16> = 10000..20000;

/// Ports this process handed out already.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port in `band` on 127.0.0.1 that nothing listens on now and this process has not
/// handed out before.
pub fn free(band: Range<u16>) -> io::Result<u16> {
    free_on(IpAddr::V4(Ipv4Addr::LOCALHOST), band)
}

/// [`free`] on another address (a 127.x address, or one inside a network namespace).
pub fn free_on(ip: IpAddr, band: Range<u16>) -> io::Result<u16> {
    let band = below_ephemeral(band);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    if given.range(band.clone()).count() < band.len() {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let port = rng.random_range(band.clone());
            if !given.contains(&port) && TcpListener::bind((ip, port)).is_ok() {
                given.insert(port);
                return Ok(port);
            }
        }
    }
    let port = TcpListener::bind((ip, 0))?.local_addr()?.port();
    given.insert(port);
    Ok(port)
}

/// `band` cut where the kernel's ephemeral range starts (read once per process).
fn below_ephemeral(band: Range<u16>) -> Range<u16> {
    static START: OnceLock<u16> = OnceLock::new();
    let start = *START.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|s| s.parse::<u16>().ok()))
            .unwrap_or(32768)
    });
    band.start..band.end.min(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_band_and_are_never_handed_out_twice() {
        let mut seen = BTreeSet::new();
        for _ in 0..300 {
            let p = free(TESTS).expect("a port");
            assert!(TESTS.contains(&p), "{p} is outside {TESTS:?}");
            assert!(seen.insert(p), "{p} was handed out twice");
        }
    }

    #[test]
    fn a_port_someone_listens_on_is_skipped() {
        // A band of ten ports that this test can hold all of (another process may hold one).
        let (band, mut held) = (30100..32700)
            .step_by(10)
            .map(|s| s..s + 10)
            .find_map(|band| {
                let held: Vec<TcpListener> = band
                    .clone()
                    .filter_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
                    .collect();
                (held.len() == band.len()).then_some((band, held))
            })
            .expect("ten free ports in a row somewhere below 32700");
        // Free only the first: the pick must be that one.
        held.remove(0);
        assert_eq!(free(band.clone()).unwrap(), band.start);
        // Now every port of the band is held or given: the kernel picks, outside it.
        let p = free(band.clone()).unwrap();
        assert!(!band.contains(&p), "{p} is in the full band {band:?}");
    }

    #[test]
    fn the_band_stops_below_the_ephemeral_range() {
        // The ephemeral range starts below 65000 on every Linux default (32768).
        assert!(below_ephemeral(20000..65000).end < 65000);
        assert_eq!(below_ephemeral(TESTS), TESTS);
    }
}
