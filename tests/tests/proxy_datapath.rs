//! kube-proxy's userspace data path with real sockets.
//!
//! Fake "Pods" are TCP servers on their own loopback addresses (`127.64.9.2`, `127.64.9.3`,
//! ...) that greet every connection with their name and then echo lines prefixed with it.
//! The tests put rules in a [`RuleTable`] (or run the whole kube-proxy against the
//! in-process API server with a Service and an EndpointSlice) and connect to the
//! Service's ClusterIP:port and NodePort the way a client Pod would: round-robin over both
//! backends, endpoint changes without a new listener, open connections surviving, fast
//! resets without endpoints, refused endpoints skipped, privileged ports and addresses in
//! use reported instead of crashing, and nothing outside 127.0.0.0/8 ever used.
//!
//! Every ClusterIP here comes from `127.1.201.0/24`–`127.1.203.0/24`, far from the
//! addresses a `kulisse up` hands out first, and every wait is bounded.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use kulisse_core::objects;
use kulisse_core::proxy::userspace::DataPath;
use kulisse_core::proxy::{self, Rule, RuleKind, RuleTable};
use kulisse_tests::inproc::{ApiServerFixture, eventually};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

/// The longest any single network step of these tests may take before it counts as hung.
const STEP: Duration = Duration::from_secs(5);

/// A fake Pod: greets each connection with `hello from NAME`, then answers every line `L`
/// with `NAME L`. Runs until the test's runtime ends.
async fn fake_pod(name: &'static str, addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("fake pod {name}: cannot listen on {addr}: {e}"));
    let local = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                if w.write_all(format!("hello from {name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{name} {line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    local
}

/// A port on `ip` that nothing listens on right now.
fn free_port(ip: &str) -> u16 {
    let addr = ip.parse().expect("an IP address");
    kulisse_core::ports::free_on(addr, kulisse_core::ports::TESTS)
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// A client connection through the proxy, reading line by line.
struct Conn {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    /// Connect and read the greeting; returns the backend's name.
    async fn open(addr: SocketAddr) -> io::Result<(Conn, String)> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} hung")))??;
        let (r, w) = stream.into_split();
        let mut conn = Conn {
            lines: BufReader::new(r).lines(),
            w,
        };
        let greeting = conn.line().await?;
        let name = greeting
            .strip_prefix("hello from ")
            .ok_or_else(|| io::Error::other(format!("unexpected greeting {greeting:?}")))?
            .to_string();
        Ok((conn, name))
    }

    async fn line(&mut self) -> io::Result<String> {
        match tokio::time::timeout(STEP, self.lines.next_line()).await {
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(Err(e)) => Err(e),
        }
    }

    async fn ask(&mut self, text: &str) -> io::Result<String> {
        self.w.write_all(format!("{text}\n").as_bytes()).await?;
        self.line().await
    }
}

/// Which backend answers one new connection.
async fn who_answers(addr: SocketAddr) -> io::Result<String> {
    Conn::open(addr).await.map(|(_, name)| name)
}

/// Connect `n` times, one after the other; count the answers by backend name.
async fn spread(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let name = who_answers(addr)
            .await
            .unwrap_or_else(|e| panic!("connection {i} to {addr} failed: {e}"));
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

/// What a client sees on a connection the proxy refuses: the connection is closed (or
/// reset) without a byte — `Ok(())` — or it hangs (an error).
async fn closed_without_answer(addr: SocketAddr) -> Result<(), String> {
    let mut stream = match tokio::time::timeout(STEP, TcpStream::connect(addr)).await {
        Err(_) => return Err(format!("connect to {addr} hung")),
        // The reset can arrive before the client's connect call has even returned.
        Ok(Err(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(());
        }
        Ok(Err(e)) => return Err(format!("connect to {addr}: {e}")),
        Ok(Ok(s)) => s,
    };
    let mut buf = [0u8; 64];
    match tokio::time::timeout(STEP, tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await {
        Err(_) => Err(format!("{addr} neither answered nor closed the connection")),
        Ok(Ok(0)) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
        Ok(Ok(n)) => Err(format!(
            "{addr} answered {:?} although it should refuse",
            String::from_utf8_lossy(&buf[..n])
        )),
        Ok(Err(e)) => Err(format!("unexpected error from {addr}: {e}")),
    }
}

/// The rule for Service port `port_name` (`service_port`) of `service`, as kube-proxy's sync
/// would compute it.
fn rule(
    service: &str,
    port_name: &str,
    service_port: u16,
    kind: RuleKind,
    frontend: SocketAddr,
    endpoints: &[SocketAddr],
) -> Rule {
    let mut eps = endpoints.to_vec();
    eps.sort();
    Rule {
        service: service.to_string(),
        port_name: port_name.to_string(),
        service_port,
        kind,
        frontend,
        protocol: "TCP".to_string(),
        endpoints: eps,
    }
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

async fn wait_listening(dp: &DataPath, addr: SocketAddr) -> u64 {
    eventually(10, &format!("a listener on {addr}"), || async {
        dp.listeners().iter().find(|l| l.address == addr).map(|l| l.serial)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_endpoint_changes_node_port_and_no_endpoints() {
    let a = fake_pod("pod-a", sock("127.64.9.2:0")).await;
    let b = fake_pod("pod-b", sock(&format!("127.64.9.3:{}", a.port()))).await;
    let cluster = sock("127.1.201.1:8080");
    let node_port = SocketAddr::new([127, 0, 0, 1].into(), free_port("127.0.0.1"));
    let svc = "default/web";
    let rules = |eps: &[SocketAddr]| {
        vec![
            rule(svc, "http", 8080, RuleKind::ClusterIp, cluster, eps),
            rule(svc, "http", 8080, RuleKind::NodePort, node_port, eps),
        ]
    };

    let table = RuleTable::new();
    let (stop, stop_rx) = watch::channel(false);
    let dp = DataPath::start(table.clone(), "node-1", stop_rx);
    table.apply(svc, rules(&[a, b]));
    let serial = wait_listening(&dp, cluster).await;
    wait_listening(&dp, node_port).await;
    assert_eq!(dp.stats().listeners_opened, 2);

    // Round-robin: sequential connections alternate between the two Pods.
    let seen = spread(cluster, 20).await;
    assert_eq!(
        seen,
        BTreeMap::from([("pod-a".to_string(), 10), ("pod-b".to_string(), 10)]),
        "20 connections to the ClusterIP spread evenly over both endpoints"
    );

    // Keep one connection open, then take its endpoint out of the rule.
    let (mut open, first) = Conn::open(cluster).await.expect("a connection to stay open");
    let (remaining, remaining_name) = if first == "pod-a" { (b, "pod-b") } else { (a, "pod-a") };
    table.apply(svc, rules(&[remaining]));

    let seen = spread(cluster, 6).await;
    assert_eq!(
        seen,
        BTreeMap::from([(remaining_name.to_string(), 6)]),
        "after the endpoint change only the remaining Pod answers"
    );
    assert_eq!(
        wait_listening(&dp, cluster).await,
        serial,
        "an endpoint change keeps the listener (the table is read on every accept)"
    );
    assert_eq!(dp.stats().listeners_opened, 2, "no listener was opened again");
    assert_eq!(
        open.ask("still there?")
            .await
            .expect("the open connection keeps working"),
        format!("{first} still there?"),
        "a connection opened before the change keeps its endpoint (as conntrack keeps it)"
    );

    // The NodePort on 127.0.0.1 reaches the same endpoints.
    assert_eq!(
        who_answers(node_port).await.expect("connect to the NodePort"),
        remaining_name
    );

    // No ready endpoints: the connection is reset at once, the listener stays.
    table.apply(svc, rules(&[]));
    closed_without_answer(cluster)
        .await
        .expect("without endpoints the proxy closes the connection");
    closed_without_answer(node_port)
        .await
        .expect("without endpoints the NodePort closes the connection");
    assert_eq!(wait_listening(&dp, cluster).await, serial);
    assert!(dp.stats().connections_rejected >= 2);

    // Endpoints come back: the same listener forwards again.
    table.apply(svc, rules(&[a, b]));
    let seen = spread(cluster, 4).await;
    assert_eq!(seen.len(), 2, "both Pods answer again: {seen:?}");

    // The Service goes away: both listeners close, connections are refused.
    table.apply(svc, vec![]);
    eventually(10, "both listeners closed", || async {
        dp.listeners().is_empty().then_some(())
    })
    .await;
    for addr in [cluster, node_port] {
        let err = TcpStream::connect(addr)
            .await
            .expect_err("nothing listens after the Service is gone");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{addr}: {err}");
    }
    assert_eq!(dp.stats().listeners_closed, 2);
    // The connection opened earlier is still served by its Pod.
    assert_eq!(
        open.ask("and now?").await.expect("still open"),
        format!("{first} and now?")
    );

    // A new rule gets a new listener.
    table.apply(svc, rules(&[a]));
    let new_serial = wait_listening(&dp, cluster).await;
    assert_ne!(new_serial, serial, "a new rule opens a new listener");
    assert_eq!(who_answers(cluster).await.expect("new listener forwards"), "pod-a");

    let _ = stop.send(true);
    eventually(10, "listeners closed at shutdown", || async {
        dp.listeners().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_skipped() {
    let live = fake_pod("pod-live", sock("127.64.10.2:0")).await;
    // Nothing listens on the dead endpoint: connecting to it is refused.
    let dead = SocketAddr::new([127, 64, 10, 3].into(), free_port("127.64.10.3"));
    let cluster = sock("127.1.201.2:8080");
    let table = RuleTable::new();
    let (_stop, stop_rx) = watch::channel(false);
    let dp = DataPath::start(table.clone(), "node-1", stop_rx);
    table.apply(
        "default/flaky",
        vec![rule(
            "default/flaky",
            "http",
            8080,
            RuleKind::ClusterIp,
            cluster,
            &[live, dead],
        )],
    );
    wait_listening(&dp, cluster).await;
    let seen = spread(cluster, 6).await;
    assert_eq!(
        seen,
        BTreeMap::from([("pod-live".to_string(), 6)]),
        "every connection ends at the endpoint that answers"
    );
    let stats = dp.stats();
    assert!(
        stats.endpoint_dial_failures >= 1,
        "the refused endpoint was tried: {stats:?}"
    );
    assert_eq!(stats.connections_forwarded, 6);
    assert_eq!(stats.connections_failed, 0);

    // Only refusing endpoints: bounded retries, then the client sees the connection closed.
    table.apply(
        "default/flaky",
        vec![rule(
            "default/flaky",
            "http",
            8080,
            RuleKind::ClusterIp,
            cluster,
            &[dead],
        )],
    );
    closed_without_answer(cluster)
        .await
        .expect("a connection no endpoint accepts is closed");
    eventually(10, "the failed connection counted", || async {
        (dp.stats().connections_failed == 1).then_some(())
    })
    .await;
    assert!(dp.stats().endpoint_dial_failures >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_port_is_a_warning_not_a_crash() {
    let pod = fake_pod("pod-80", sock("127.64.11.2:0")).await;
    let low = sock("127.1.201.3:80");
    let high = sock("127.1.201.3:8080");
    // Can this process bind ports below 1024 (root, CAP_NET_BIND_SERVICE, or a lowered
    // net.ipv4.ip_unprivileged_port_start)? Ask the kernel on a neighbouring address.
    let privileged = match std::net::TcpListener::bind("127.1.201.99:81") {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => false,
        Err(e) => panic!("probing whether ports below 1024 can be bound failed: {e}"),
    };
    let table = RuleTable::new();
    let (_stop, stop_rx) = watch::channel(false);
    let dp = DataPath::start(table.clone(), "node-1", stop_rx);
    table.apply(
        "default/web80",
        vec![
            rule("default/web80", "http", 80, RuleKind::ClusterIp, low, &[pod]),
            rule("default/web80", "alt", 8080, RuleKind::ClusterIp, high, &[pod]),
        ],
    );
    // The unprivileged rule works in any case: the failure of the other one crashed nothing.
    wait_listening(&dp, high).await;
    assert_eq!(who_answers(high).await.expect("port 8080 works"), "pod-80");
    if privileged {
        eprintln!("this process may bind ports below 1024: checking that port 80 is served");
        wait_listening(&dp, low).await;
        assert_eq!(who_answers(low).await.expect("port 80 works as root"), "pod-80");
        assert!(dp.bind_failures().is_empty(), "{:?}", dp.bind_failures());
    } else {
        let failure = eventually(10, "the bind failure on port 80 reported", || async {
            dp.bind_failures().into_iter().find(|f| f.address == low)
        })
        .await;
        eprintln!("kube-proxy warned: {}", failure.message);
        assert_eq!(failure.kind, io::ErrorKind::PermissionDenied);
        for needle in ["default/web80", "127.1.201.3:80", "permission denied", "below 1024"] {
            assert!(
                failure.message.contains(needle),
                "{needle:?} missing in: {}",
                failure.message
            );
        }
        assert_eq!(dp.stats().bind_permission_denied, 1);
        assert!(dp.listeners().iter().all(|l| l.address != low));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_in_use_is_reported_and_retried() {
    let pod = fake_pod("pod-busy", sock("127.64.12.2:0")).await;
    let cluster = sock("127.1.201.4:8080");
    // Someone else owns the address (e.g. another cluster on this machine).
    let squatter = std::net::TcpListener::bind(cluster).expect("occupy the ClusterIP:port");
    let table = RuleTable::new();
    let (_stop, stop_rx) = watch::channel(false);
    let dp = DataPath::start(table.clone(), "node-1", stop_rx);
    table.apply(
        "default/busy",
        vec![rule("default/busy", "http", 8080, RuleKind::ClusterIp, cluster, &[pod])],
    );
    let failure = eventually(10, "the address-in-use failure reported", || async {
        dp.bind_failures().into_iter().find(|f| f.address == cluster)
    })
    .await;
    assert_eq!(failure.kind, io::ErrorKind::AddrInUse);
    assert!(
        failure.message.contains("already in use") && failure.message.contains("default/busy"),
        "{}",
        failure.message
    );
    assert_eq!(dp.stats().bind_address_in_use, 1);
    // Once the address is free, the periodic retry (every 10 s) takes it.
    drop(squatter);
    wait_listening(&dp, cluster).await;
    assert_eq!(
        who_answers(cluster).await.expect("forwarding after the retry"),
        "pod-busy"
    );
    assert!(dp.bind_failures().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_loopback_is_used() {
    let table = RuleTable::new();
    let (_stop, stop_rx) = watch::channel(false);
    let dp = DataPath::start(table.clone(), "node-1", stop_rx);
    let foreign_endpoint = sock("10.88.0.5:8080");
    let local = sock("127.1.201.5:8080");
    let mut udp = rule(
        "default/dns",
        "dns",
        53,
        RuleKind::ClusterIp,
        sock("127.1.201.5:53"),
        &[],
    );
    udp.protocol = "UDP".into();
    table.apply(
        "default/outside",
        vec![
            // A frontend outside 127.0.0.0/8: never listened on.
            rule(
                "default/outside",
                "http",
                80,
                RuleKind::ClusterIp,
                sock("10.96.0.10:80"),
                &[],
            ),
            // A loopback frontend whose only endpoint is outside: listened on, never dialled.
            rule(
                "default/outside",
                "http",
                80,
                RuleKind::NodePort,
                local,
                &[foreign_endpoint],
            ),
        ],
    );
    table.apply("default/dns", vec![udp]);
    wait_listening(&dp, local).await;
    closed_without_answer(local)
        .await
        .expect("a connection whose only endpoint is outside loopback is closed");
    let stats = dp.stats();
    assert_eq!(
        stats.rules_skipped, 2,
        "the non-loopback frontend and the UDP rule: {stats:?}"
    );
    assert_eq!(
        stats.endpoint_dial_failures, 0,
        "no connection was attempted: {stats:?}"
    );
    assert_eq!(stats.connections_rejected, 1);
    assert_eq!(
        dp.listeners().iter().map(|l| l.address).collect::<Vec<_>>(),
        vec![local],
        "only the loopback TCP frontend is listened on"
    );
}

fn info(kind: &str) -> &'static objects::ResourceInfo {
    objects::by_gvk("v1", kind).expect("built-in kind")
}

/// A node port in the NodePort range that nothing listens on right now.
fn free_node_port() -> u16 {
    let start = 30000 + (std::process::id() % 2000) as u16;
    (start..32768)
        .chain(30000..start)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 30000-32767")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_proxy_forwards_a_service_from_the_api_server() {
    let a = fake_pod("pod-a", sock("127.64.13.2:0")).await;
    let _b = fake_pod("pod-b", sock(&format!("127.64.13.3:{}", a.port()))).await;
    kulisse_tests::local_traces::install("proxy-datapath-test");
    let fx = ApiServerFixture::start().await;
    let c = &fx.client;
    tokio::spawn(proxy::run(
        c.clone(),
        proxy::Options {
            node_name: "node-1".into(),
            data_path: true,
        },
        fx.shutdown_rx(),
        RuleTable::new(),
    ));

    let node_port = free_node_port();
    // No selector: the test writes the EndpointSlice itself, as the EndpointSlice controller
    // would.
    // Both writes belong to one trace, which the listener's `proxy.listen` span continues.
    let write_span = tracing::info_span!("test.create_service", "kulisse.stage" = "cli");
    let svc = c
        .create(
            info("Service"),
            Some("default"),
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"type": "NodePort", "clusterIP": "127.1.202.10",
                         "ports": [{"name": "http", "port": 8080, "targetPort": a.port(),
                                    "nodePort": node_port}]}}),
        )
        .instrument(write_span.clone())
        .await
        .expect("create service");
    let slices = objects::by_gvk("discovery.k8s.io/v1", "EndpointSlice").expect("built-in kind");
    let endpoints = |ips: &[&str]| {
        ips.iter()
            .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
            .collect::<Vec<_>>()
    };
    c.create(
        slices,
        Some("default"),
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": endpoints(&["127.64.13.2", "127.64.13.3"]),
                "ports": [{"name": "http", "port": a.port(), "protocol": "TCP"}]}),
    )
    .instrument(write_span)
    .await
    .expect("create endpointslice");
    let cluster = sock("127.1.202.10:8080");
    let node = SocketAddr::new([127, 0, 0, 1].into(), node_port);

    // Both Pods answer on the ClusterIP once kube-proxy has the rules.
    eventually(15, "both Pods answering on the ClusterIP", || async {
        let seen = spread_lenient(cluster, 4).await;
        (seen.len() == 2).then_some(())
    })
    .await;
    // kube-proxy's listen is in the trace of the Service's write.
    {
        let traceparent = svc["metadata"]["annotations"]["kulisse.dev/traceparent"]
            .as_str()
            .expect("the API server records the write's trace on the Service");
        let trace_id = traceparent.split('-').nth(1).unwrap_or("").to_string();
        let listen = eventually(15, "a proxy.listen span in the Service's trace", || async {
            kulisse_traces::span_store::global()
                .spans_of(&trace_id)
                .into_iter()
                .find(|s| s.name == "proxy.listen" && s.attr("proxy.address") == Some("127.1.202.10:8080"))
        })
        .await;
        assert_eq!(listen.attr("proxy.action"), Some("open"));
        assert_eq!(listen.attr("kulisse.stage"), Some("proxy"));
        assert_eq!(listen.attr("proxy.service"), Some("default/web"));
    }
    let (mut open, first) = Conn::open(cluster).await.expect("a connection to stay open");
    assert_eq!(
        who_answers(node).await.map(|n| n.starts_with("pod-")).ok(),
        Some(true),
        "the NodePort on 127.0.0.1 forwards too"
    );

    // Scale down to pod-b only: the data path follows the EndpointSlice.
    let mut current = c
        .get(slices, Some("default"), "web-1")
        .await
        .expect("get endpointslice");
    current["endpoints"] = json!(endpoints(&["127.64.13.3"]));
    c.replace(slices, Some("default"), "web-1", None, &current)
        .await
        .expect("update endpointslice");
    eventually(15, "only pod-b answering", || async {
        let seen = spread_lenient(cluster, 4).await;
        (seen.keys().map(String::as_str).collect::<Vec<_>>() == ["pod-b"]).then_some(())
    })
    .await;
    assert_eq!(
        open.ask("ping").await.expect("the open connection survived the change"),
        format!("{first} ping")
    );

    // Deleting the Service closes the listeners.
    c.delete(info("Service"), Some("default"), "web", None)
        .await
        .expect("delete service");
    eventually(15, "the ClusterIP refusing connections", || async {
        match TcpStream::connect(cluster).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
}

/// Like [`spread`], but a failed connection (the rules are not there yet) counts nothing.
async fn spread_lenient(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        if let Ok(name) = who_answers(addr).await {
            *seen.entry(name).or_insert(0) += 1;
        }
    }
    seen
}
