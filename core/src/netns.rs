//! # Sockets in another network namespace (what a CRI runtime and a multi-host lab need)
//!
//! A Linux **network namespace** is a whole network stack of its own: interfaces, addresses,
//! routes, its own loopback. Every pod of a real cluster lives in one, and kulisse's node
//! hosts (`kulisse up --masters 3 --node-hosts 2`) are namespaces too, each joined to a hub
//! namespace by a virtual cable (a veth pair), as machines hang off a switch.
//!
//! A socket belongs to the namespace of the thread that created it, and stays there for its
//! whole life, whichever thread then uses it. So a process can reach into another namespace
//! without moving into it: one short-lived thread enters the namespace (`setns(2)`), creates
//! the socket and ends; the connection is then made from anywhere in the process. This is
//! how containerd dials a pod's port for `kubectl port-forward`, and how kulisse's API
//! server reaches the kubelets of node hosts without any route in the machine's own
//! namespace. `setns` needs `CAP_SYS_ADMIN` (root).
//!
//! Where kulisse differs: nothing here is part of Kubernetes itself. Upstream the API server
//! reaches kubelets over the machines' network; kulisse keeps all its traffic inside
//! namespaces it made, so that no packet leaves the machine.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A TCP socket, not yet connected, created inside the network namespace at `netns` (a file
/// such as `/run/netns/NAME` or `/proc/PID/ns/net`), for addresses of `addr`'s family.
pub fn tcp_socket_in(netns: &Path, addr: &SocketAddr) -> std::io::Result<OwnedFd> {
    let path = netns.to_path_buf();
    let ipv6 = addr.is_ipv6();
    // A thread of its own: setns changes only the calling thread, which then ends.
    std::thread::Builder::new()
        .name("netns-socket".into())
        .spawn(move || make_socket(&path, ipv6))?
        .join()
        .map_err(|_| std::io::Error::other("the thread that enters the network namespace panicked"))?
}

fn make_socket(netns: &PathBuf, ipv6: bool) -> std::io::Result<OwnedFd> {
    let ns = std::fs::File::open(netns).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("opening the network namespace {}: {e}", netns.display()),
        )
    })?;
    // SAFETY: setns with a valid, open namespace fd; it changes only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!(
                "entering the network namespace {}: {e} (this needs root)",
                netns.display()
            ),
        ));
    }
    let domain = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Connect to `addr` from inside the network namespace at `netns`, within `timeout`.
pub async fn connect_in(netns: &Path, addr: SocketAddr, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let path = netns.to_path_buf();
    let fd = tokio::task::spawn_blocking(move || tcp_socket_in(&path, &addr))
        .await
        .map_err(std::io::Error::other)??;
    // SAFETY: the fd is a TCP socket we own; TcpSocket takes it over.
    let socket = unsafe { tokio::net::TcpSocket::from_raw_fd(fd.into_raw_fd()) };
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "connecting to {addr} in {} timed out after {timeout:?}",
                netns.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process' own namespace is a namespace like any other: a socket made there reaches
    /// a listener on loopback. (Entering another one needs root; the node-hosts tests do.)
    #[tokio::test]
    async fn a_socket_made_in_our_own_namespace_connects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let own = Path::new("/proc/self/ns/net");
        if unsafe { libc::geteuid() } != 0 {
            let err = connect_in(own, addr, Duration::from_secs(2)).await.unwrap_err();
            assert!(err.to_string().contains("root"), "{err}");
            return;
        }
        let (client, accepted) = tokio::join!(connect_in(own, addr, Duration::from_secs(2)), listener.accept());
        assert_eq!(client.unwrap().peer_addr().unwrap(), addr);
        assert!(accepted.is_ok());
    }

    #[tokio::test]
    async fn a_missing_namespace_is_named_in_the_error() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = connect_in(Path::new("/run/netns/kulisse-no-such"), addr, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/run/netns/kulisse-no-such"), "{err}");
    }
}
