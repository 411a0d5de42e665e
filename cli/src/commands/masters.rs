//! `kulisse up --masters 3`: a control plane that survives the loss of a master, as kubeadm's
//! high-availability guide builds it, with every part its own process on loopback:
//!
//! ```text
//!   kubectl, kubelets, kube-proxies, controller managers, schedulers
//!                     │ https://127.0.0.1:6443 (every kubeconfig)
//!                  HAProxy (TCP, health-checks /readyz)
//!          ┌──────────┼──────────┐
//!     apiserver-1  apiserver-2  apiserver-3       (each: kulisse up --components apiserver)
//!          └──────────┼──────────┘
//!        etcd-1 ─── etcd-2 ─── etcd-3             (one Raft cluster: a majority must agree)
//! ```
//!
//! - **etcd**: three members of one cluster (Debian's `etcd`). A write is committed once a
//!   majority (two of three) has it, so one member can die and writes go on; with two gone
//!   there is no majority and writes fail (after the API server's timeout) until one returns.
//! - **API servers**: stateless in front of etcd, so all three serve at once (active-active).
//!   They share the cluster CA and token; each signs its own serving certificate with it.
//! - **HAProxy** (Debian's `haproxy`) balances TCP connections over the API servers that
//!   answer `/readyz?exclude=etcd`, and is the single address in every kubeconfig, as in kubeadm's guide.
//!   A client whose API server dies reconnects through it to another one; informers resume
//!   their watch from the last resourceVersion they saw.
//! - **controller managers and schedulers**: three of each, leader-elected
//!   (`kulisse_core::client::leaderelection`): one acts, two stand by.
//! - the **nodes**: a kubelet and a kube-proxy each, as processes.
//!
//! `kulisse ps` lists the processes (`<data-dir>/processes.json`), `kulisse kill` kills one.
//! Everything started here is killed with this process (`PR_SET_PDEATHSIG`), so a crashed
//! `kulisse up` leaves nothing behind. A restart on the same data dir reuses the ports (etcd's
//! members know each other by their peer addresses) and the data.
//!
//! The embedded store cannot be shared: it is one redb file that one process opens, with its
//! own revisions and watches in memory. Several API servers need a store they all reach over
//! the network and that agrees on one order of writes: etcd. So `--masters 1` (the default)
//! keeps the single-process shape and `--masters 3` always runs etcd.
//!
//! Where kulisse differs: each API server allocates Service ClusterIPs from its own table
//! (rebuilt from the stored Services when it starts), where upstream keeps the allocation in
//! etcd; two API servers creating Services at the same moment could pick the same address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kulisse_core::client::Client;
use kulisse_core::client::kubeconfig::{Kubeconfig, default_data_dir, write_private};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::components::RuntimeKind;
use super::hosts::{self, Host};
use super::identities::Who;
use super::processes::{self, Process};
use super::up::{self, Component, UpArgs};

/// The ports of a cluster with several masters, chosen at its first start and kept in
/// `<data-dir>/masters.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Layout {
    masters: u32,
    /// Per member: (client port, peer port).
    etcd: Vec<(u16, u16)>,
    apiservers: Vec<u16>,
}

/// The processes started, with their handles, and the node hosts they run on (removed after
/// the processes: fields drop in order).
struct Running {
    table: Vec<Process>,
    children: Vec<Child>,
    hosts: Option<hosts::Owned>,
}

impl Layout {
    fn load_or_create(data_dir: &Path, masters: u32) -> anyhow::Result<Layout> {
        let file = data_dir.join("masters.json");
        if let Ok(text) = std::fs::read(&file) {
            let layout: Layout =
                serde_json::from_slice(&text).with_context(|| format!("reading {}", file.display()))?;
            if layout.masters != masters {
                bail!(
                    "{} holds a cluster of {} masters; start it with --masters {} (or use another --data-dir)",
                    data_dir.display(),
                    layout.masters,
                    layout.masters
                );
            }
            return Ok(layout);
        }
        // Every port differs: the picker never hands out one twice.
        let mut layout = Layout {
            masters,
            etcd: Vec::new(),
            apiservers: Vec::new(),
        };
        for _ in 0..masters {
            layout.etcd.push((super::cluster_port()?, super::cluster_port()?));
            layout.apiservers.push(super::cluster_port()?);
        }
        write_private(&file, &serde_json::to_vec_pretty(&layout)?)
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(layout)
    }

    fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect()
    }

    fn initial_cluster(&self) -> String {
        let members: Vec<String> = (self.etcd.iter().enumerate())
            .map(|(i, (_, p))| format!("etcd-{}=http://127.0.0.1:{p}", i + 1))
            .collect();
        members.join(",")
    }
}

/// A program on PATH (or Debian's place for it), or a clear error naming its package.
fn program(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([
            PathBuf::from(format!("/usr/bin/{name}")),
            PathBuf::from(format!("/usr/sbin/{name}")),
        ])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--masters needs {name}, which is not installed (apt-get install {package}, or scripts/install-deps.sh)"
            )
        })
}

/// Start `cmd` as process `name`, its output appended to `<data-dir>/logs/<name>.log`, killed
/// when this process dies.
fn spawn(run: &mut Running, data_dir: &Path, mut cmd: Command, proc: Process) -> anyhow::Result<()> {
    let log = data_dir.join("logs").join(format!("{}.log", proc.name));
    std::fs::create_dir_all(data_dir.join("logs"))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it only sets a flag of the new process.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let std = cmd.as_std();
    let command = std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let child = cmd.spawn().with_context(|| format!("starting {}", proc.name))?;
    let pid = child.id().unwrap_or(0);
    run.table.push(Process {
        pid,
        log: Some(log),
        command,
        ..proc
    });
    run.children.push(child);
    Ok(())
}

fn process(name: &str, role: &str, address: &str) -> Process {
    Process {
        name: name.into(),
        role: role.into(),
        address: address.into(),
        pid: 0,
        identity: None,
        command: Vec::new(),
        log: None,
    }
}

/// Poll `check` every 100 ms for at most `secs`.
async fn wait_until<F, Fut>(secs: u64, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not happen within {secs}s (see the logs in <data-dir>/logs)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// GET `path` of `server`, true on 200.
async fn answers(client: &Client, path: &str) -> bool {
    let req = client.request(http::Method::GET, path, &[], None);
    matches!(tokio::time::timeout(Duration::from_secs(2), req).await, Ok(Ok(r)) if r.status == 200)
}

async fn start_etcd(run: &mut Running, data_dir: &Path, layout: &Layout) -> anyhow::Result<()> {
    let etcd = program("etcd", "etcd-server")?;
    let fresh = !data_dir.join("etcd-1").exists();
    for (i, (client, peer)) in layout.etcd.iter().enumerate() {
        let name = format!("etcd-{}", i + 1);
        let (client_url, peer_url) = (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
        let mut cmd = Command::new(&etcd);
        cmd.arg("--name").arg(&name).arg("--data-dir").arg(data_dir.join(&name));
        cmd.args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ]);
        cmd.args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ]);
        cmd.args(["--initial-cluster", &layout.initial_cluster()]);
        cmd.args(["--initial-cluster-state", if fresh { "new" } else { "existing" }]);
        cmd.args(["--initial-cluster-token", "kulisse"]);
        cmd.args(["--experimental-watch-progress-notify-interval", "5s"]);
        cmd.args(["--logger", "zap", "--log-level", "warn"]);
        spawn(run, data_dir, cmd, process(&name, "etcd", &client_url))?;
    }
    for url in layout.etcd_endpoints() {
        let client = Client::new(&url, "")?;
        wait_until(60, &format!("etcd at {url} answering /health"), || {
            answers(&client, "/health")
        })
        .await?;
    }
    Ok(())
}

/// Each API server gets its own directory with the cluster's token, CA and service-account
/// key (it makes its own serving certificate, signed by that CA, and a kubeconfig of its own
/// that no one uses). One key for all: a token one API server signs checks out at the others.
fn apiserver_dir(data_dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join(format!("apiserver-{n}"));
    for file in ["token", "ca.crt", "ca.key", "pki/sa.key", "pki/sa.pub"] {
        let bytes = std::fs::read(data_dir.join(file)).with_context(|| format!("reading {file}"))?;
        write_private(&dir.join(file), &bytes)?;
    }
    Ok(dir)
}

async fn start_apiservers(run: &mut Running, args: &UpArgs, data_dir: &Path, layout: &Layout) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the kulisse binary")?;
    let hub = run.hosts.as_ref().map(|h| h.0.hub_path());
    let endpoints = layout.etcd_endpoints().join(",");
    for (i, port) in layout.apiservers.iter().enumerate() {
        let name = format!("apiserver-{}", i + 1);
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(&exe);
        cmd.arg("up").arg("--data-dir").arg(apiserver_dir(data_dir, i + 1)?);
        cmd.args(["--listen", &listen, "--store", "etcd", "--etcd-endpoints", &endpoints]);
        cmd.args(["--components", "apiserver", "--nodes", "0"]);
        cmd.args(["--service-cidr", &args.service_cidr.to_string()]);
        if !args.tls_san.is_empty() {
            let sans: Vec<String> = args.tls_san.iter().map(ToString::to_string).collect();
            cmd.args(["--tls-san", &sans.join(",")]);
        }
        if let Some(hub) = &hub {
            cmd.arg("--kubelet-network").arg(hub);
        }
        cmd.args(args.retention.to_args());
        cmd.env("OTEL_RESOURCE_ATTRIBUTES", resource_attributes(&name));
        spawn(
            run,
            data_dir,
            cmd,
            process(&name, "apiserver", &format!("https://{listen}")),
        )?;
    }
    Ok(())
}

/// `service.instance.id=<name>`, added to what the environment already asks for: every span
/// of that process says which of the copies emitted it.
fn resource_attributes(name: &str) -> String {
    match std::env::var("OTEL_RESOURCE_ATTRIBUTES") {
        Ok(existing) if !existing.trim().is_empty() => format!("{existing},service.instance.id={name}"),
        _ => format!("service.instance.id={name}"),
    }
}

/// HAProxy's configuration, after kubeadm's HA guide: TCP (TLS passes through to the API
/// servers), round robin, a server is used only while its health check over TLS answers
/// 200. The check is `/readyz?exclude=etcd`: every API server reads the same etcd, so when
/// etcd has lost its majority all of them would fail the `etcd` check and HAProxy would
/// close every connection; kept in, they answer each request with etcd's error, which says
/// what is wrong (kubeadm's guide checks `/healthz`, which says only that the process lives).
/// Two additions for failure labs: a connection an API server refuses is tried on another
/// (`retries`, `option redispatch`), and the connections of a server marked down are cut
/// (`on-marked-down shutdown-sessions`), so watches through it reconnect at once.
/// With node hosts, HAProxy also listens in their hub namespace, on the same port
/// (`bind ... namespace`, which Debian's HAProxy is built with).
fn haproxy_config(listen: SocketAddr, layout: &Layout, hub: Option<&str>) -> String {
    let mut cfg = format!(
        "# written by kulisse up --masters {m}\n\
         global\n    maxconn 4096\n\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n    timeout tunnel 1h\n    timeout check 3s\n\
         \x20   # a connection refused by a dead API server is tried again on another one\n\
         \x20   retries 3\n    option redispatch 1\n\n\
         frontend kube-apiserver\n    bind {listen}\n{hub_bind}    default_backend apiservers\n\n\
         backend apiservers\n    balance roundrobin\n    option httpchk\n    http-check connect ssl\n\
         \x20   http-check send meth GET uri /readyz?exclude=etcd\n    http-check expect status 200\n",
        m = layout.masters,
        hub_bind = hub.map_or_else(String::new, |ns| format!(
            "    # the node hosts' way in, inside their hub namespace\n    bind {}:{} namespace {ns}\n",
            hosts::HUB_IP,
            listen.port()
        )),
    );
    for (i, port) in layout.apiservers.iter().enumerate() {
        cfg.push_str(&format!(
            "    server apiserver-{} 127.0.0.1:{port} check verify none inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n",
            i + 1
        ));
    }
    cfg
}

async fn start_haproxy(run: &mut Running, args: &UpArgs, data_dir: &Path, layout: &Layout) -> anyhow::Result<()> {
    let haproxy = program("haproxy", "haproxy")?;
    let cfg = data_dir.join("haproxy.cfg");
    let hub = run.hosts.as_ref().map(|h| h.0.hub.clone());
    write_private(&cfg, haproxy_config(args.listen, layout, hub.as_deref()).as_bytes())?;
    let mut cmd = Command::new(haproxy);
    cmd.arg("-db").arg("-f").arg(&cfg);
    spawn(
        run,
        data_dir,
        cmd,
        process("haproxy", "load-balancer", &format!("https://{}", args.listen)),
    )
}

/// A leader-elected component, with the identity it will campaign as (so `kulisse ps` can
/// tell who leads).
fn elected(run: &mut Running, data_dir: &Path, args: &UpArgs, role: &str, n: u32) -> anyhow::Result<()> {
    let name = format!("{role}-{n}");
    let identity = kulisse_core::client::leaderelection::identity();
    let who = match role {
        "scheduler" => Who::Scheduler,
        _ => Who::ControllerManager,
    };
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(role)
        .arg("--kubeconfig")
        .arg(data_dir.join(who.kubeconfig_name()));
    if args.fast_failover {
        cmd.arg("--fast-failover");
    }
    cmd.env(super::election::IDENTITY_ENV, &identity);
    cmd.env("OTEL_RESOURCE_ATTRIBUTES", resource_attributes(&name));
    let mut proc = process(&name, role, "-");
    proc.identity = Some(identity);
    spawn(run, data_dir, cmd, proc)
}

/// A command that runs `kulisse ARGS`: here, or on `host` (`ip netns exec NS kulisse ...`,
/// so that `kulisse ps` shows where it runs).
fn kulisse_on(host: Option<&Host>) -> anyhow::Result<Command> {
    let exe = std::env::current_exe()?;
    Ok(match host {
        Some(h) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &h.netns]).arg(exe);
            cmd
        }
        None => Command::new(exe),
    })
}

/// Node `node-i`'s kubelet and kube-proxy, on this machine or on its host.
fn node(run: &mut Running, data_dir: &Path, args: &UpArgs, i: u32, host: Option<&Host>) -> anyhow::Result<()> {
    let name = format!("node-{i}");
    let address = host.map_or_else(|| "-".to_string(), |h| h.ip.to_string());
    let mut kubelet = kulisse_on(host)?;
    kubelet.args(["kubelet", "--node-name", &name, "--runtime"]);
    kubelet.arg(match args.runtime {
        RuntimeKind::Mock => "mock",
        RuntimeKind::Podman => "podman",
    });
    if let Some(socket) = &args.podman_socket {
        kubelet.arg("--podman-socket").arg(socket);
    }
    if args.fast_failover {
        kubelet.arg("--fast-failover");
    }
    if let Some(h) = host {
        kubelet.args(["--node-ip", &h.ip.to_string()]);
    }
    kubelet
        .arg("--kubeconfig")
        .arg(data_dir.join(Who::Kubelet(name.clone()).kubeconfig_name()));
    spawn(
        run,
        data_dir,
        kubelet,
        process(&format!("kubelet-{name}"), "kubelet", &address),
    )?;
    let mut proxy = kulisse_on(host)?;
    proxy.args(["proxy", "--node-name", &name]);
    if i == 1 {
        proxy.arg("--data-path");
    }
    let proxy_conf = match host {
        Some(_) => data_dir.join(HOSTS_PROXY_KUBECONFIG),
        None => data_dir.join(Who::Proxy.kubeconfig_name()),
    };
    proxy.arg("--kubeconfig").arg(proxy_conf);
    spawn(
        run,
        data_dir,
        proxy,
        process(&format!("proxy-{name}"), "proxy", &address),
    )
}

/// The kube-proxy kubeconfig of the node hosts: the same identity, the hub's address.
const HOSTS_PROXY_KUBECONFIG: &str = "kube-proxy-hosts.conf";

/// Point the node hosts' kubelets and kube-proxies at HAProxy's address in the hub: each
/// host kubelet's kubeconfig is written again with that server, and kube-proxy gets one of
/// its own for the hosts.
fn hosts_kubeconfigs(
    data_dir: &Path,
    args: &UpArgs,
    ca_pem: &str,
    proxy: &kulisse_core::client::tls::Identity,
) -> anyhow::Result<()> {
    let server = format!("https://{}:{}", hosts::HUB_IP, args.listen.port());
    for i in args.nodes + 1..=args.nodes + args.node_hosts {
        super::identities::write_kubeconfig(data_dir, &server, ca_pem, &Who::Kubelet(format!("node-{i}")))?;
    }
    let path = data_dir.join(HOSTS_PROXY_KUBECONFIG);
    Kubeconfig::for_identity(&server, ca_pem, proxy)
        .write(&path)
        .with_context(|| format!("writing {}", path.display()))
}

fn check_args(args: &UpArgs) -> anyhow::Result<()> {
    if args.masters % 2 == 0 || !(3..=7).contains(&args.masters) {
        bail!(
            "--masters must be 1, 3, 5 or 7, not {}: etcd needs a majority, and an even number of members tolerates no more failures than one fewer",
            args.masters
        );
    }
    if args.components.len() != 3 || !args.components.contains(&Component::Apiserver) {
        bail!(
            "--masters runs every control-plane component {} times; --components does not apply",
            args.masters
        );
    }
    if args.store != up::StoreKind::Embedded {
        bail!("--masters starts its own etcd cluster; --store and --etcd-endpoints do not apply");
    }
    if args.node_hosts > 0 && args.runtime != RuntimeKind::Mock {
        bail!(
            "--node-hosts runs mock nodes only: podman's containers would live in this machine's network, not in the host's"
        );
    }
    Ok(())
}

/// What every process of the cluster shares, made before any starts: the layout of ports,
/// the admin token and the cluster CA (kubeadm's "certs" phase).
struct Prepared {
    layout: Layout,
    token: String,
    ca_pem: String,
}

/// Check the arguments, pick HAProxy's port, and make (or load) the layout, the token, the
/// certificates and the service-account key.
fn prepare(args: &mut UpArgs, data_dir: &Path) -> anyhow::Result<Prepared> {
    check_args(args)?;
    if args.listen.port() == 0 {
        // HAProxy's address goes into every kubeconfig: pick the port now.
        args.listen.set_port(super::cluster_port()?);
    }
    up::create_private_dir(data_dir)?;
    let layout = Layout::load_or_create(data_dir, args.masters)?;
    let token = up::load_or_create_token(data_dir)?;
    if args.node_hosts > 0 && !args.tls_san.contains(&hosts::HUB_IP.into()) {
        // The host nodes reach the API servers at the hub's address, through HAProxy.
        args.tls_san.push(hosts::HUB_IP.into());
    }
    let certs = kulisse_core::apiserver::certs::ensure(data_dir, args.listen.ip(), &args.tls_san)
        .context("creating the cluster certificates")?;
    // One service-account key for every API server, made before any starts (each would
    // otherwise make its own, and one's tokens would not check out at the others).
    kulisse_core::apiserver::serviceaccount::ServiceAccountTokens::load_or_create(data_dir)
        .context("creating the service-account key")?;
    Ok(Prepared {
        layout,
        token,
        ca_pem: certs.ca_pem,
    })
}

/// One line per phase as it completes, with the time since the start (kubeadm prints its
/// phases the same way): on a busy machine the wait is visible, not a silent minute.
struct Phases(std::time::Instant);

impl Phases {
    fn done(&self, name: &str, what: String) {
        println!("[{name}] {what} ({:.1}s)", self.0.elapsed().as_secs_f64());
    }
}

/// The node hosts, if any (before anything that binds or dials in their hub).
fn start_hosts(run: &mut Running, args: &UpArgs, data_dir: &Path, phases: &Phases) -> anyhow::Result<()> {
    let host_nodes: Vec<String> = (args.nodes + 1..=args.nodes + args.node_hosts)
        .map(|i| format!("node-{i}"))
        .collect();
    if host_nodes.is_empty() {
        return Ok(());
    }
    run.hosts = Some(hosts::Hosts::create(data_dir, &host_nodes)?);
    let count = match host_nodes.len() {
        1 => "1 node host".to_string(),
        n => format!("{n} node hosts"),
    };
    phases.done("hosts", format!("{count} on 10.213.0.0/16, hub {}", hosts::HUB_IP));
    Ok(())
}

/// etcd, the API servers and HAProxy, each phase waited for; writes the admin kubeconfig
/// and returns HAProxy's URL.
async fn start_masters(
    run: &mut Running,
    args: &UpArgs,
    data_dir: &Path,
    prep: &Prepared,
    phases: &Phases,
) -> anyhow::Result<String> {
    let (layout, token, ca) = (&prep.layout, &prep.token, prep.ca_pem.as_bytes());
    start_etcd(run, data_dir, layout).await?;
    phases.done("etcd", format!("{} members answer /health", layout.etcd.len()));
    start_apiservers(run, args, data_dir, layout).await?;
    for port in &layout.apiservers {
        let client = Client::with_ca(&format!("https://127.0.0.1:{port}"), token, Some(ca))?;
        wait_until(60, &format!("the API server on port {port} ready"), || {
            answers(&client, "/readyz")
        })
        .await?;
    }
    phases.done(
        "apiserver",
        format!("{} API servers answer /readyz", layout.apiservers.len()),
    );
    start_haproxy(run, args, data_dir, layout).await?;
    let url = format!("https://{}", args.listen);
    let kubeconfig = data_dir.join("kubeconfig");
    Kubeconfig::for_cluster(&url, token, Some(&prep.ca_pem))
        .write(&kubeconfig)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let client = Client::with_ca(&url, token, Some(ca))?;
    wait_until(30, "HAProxy passing requests to an API server", || {
        answers(&client, "/readyz")
    })
    .await?;
    phases.done("haproxy", format!("{} passes requests to the API servers", args.listen));
    Ok(url)
}

/// Every component's identity, then the leader-elected components and the nodes.
fn start_components(run: &mut Running, args: &UpArgs, data_dir: &Path, url: &str, ca_pem: &str) -> anyhow::Result<()> {
    // Every component's certificate and kubeconfig, issued here once, before any of them
    // starts (kubeadm's "certs" and "kubeconfig" phases): three schedulers issuing their
    // shared identity at the same moment would race on the same files.
    let issued = super::identities::issue_all(data_dir, url, ca_pem, args.nodes + args.node_hosts)?;
    if args.node_hosts > 0 {
        hosts_kubeconfigs(data_dir, args, ca_pem, &issued.proxy)?;
    }
    for role in ["controller-manager", "scheduler"] {
        for n in 1..=args.masters {
            elected(run, data_dir, args, role, n)?;
        }
    }
    for i in 1..=args.nodes {
        node(run, data_dir, args, i, None)?;
    }
    let on_hosts: Vec<Host> = run.hosts.as_ref().map(|h| h.0.hosts.clone()).unwrap_or_default();
    for (i, host) in (args.nodes + 1..).zip(&on_hosts) {
        node(run, data_dir, args, i, Some(host))?;
    }
    Ok(())
}

/// Start everything; on error, what was started is killed (the children are dropped) and
/// the node hosts removed.
async fn start(args: &mut UpArgs, data_dir: &Path) -> anyhow::Result<Running> {
    let prep = prepare(args, data_dir)?;
    let mut run = Running {
        table: Vec::new(),
        children: Vec::new(),
        hosts: None,
    };
    let phases = Phases(std::time::Instant::now());
    start_hosts(&mut run, args, data_dir, &phases)?;
    let url = start_masters(&mut run, args, data_dir, &prep, &phases).await?;
    start_components(&mut run, args, data_dir, &url, &prep.ca_pem)?;
    let on_hosts = match args.node_hosts {
        0 => String::new(),
        n => format!(" ({n} on node hosts)"),
    };
    phases.done(
        "components",
        format!(
            "{m} controller managers, {m} schedulers and {} nodes started{on_hosts}",
            args.nodes + args.node_hosts,
            m = args.masters
        ),
    );
    processes::write(data_dir, &run.table)?;
    Ok(run)
}

/// `kulisse up --masters N`.
pub async fn run(mut args: UpArgs) -> anyhow::Result<ExitCode> {
    super::step::check_up(args.step, args.masters)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let mut running = start(&mut args, &data_dir).await?;
    let m = args.masters;
    println!("kulisse control plane is up ({m} masters)");
    println!(
        "  API server:  https://{}  (HAProxy in front of {m} API servers; store: etcd, {m} members)",
        args.listen
    );
    println!("  kubeconfig:  {}", data_dir.join("kubeconfig").display());
    println!("  components:  {m} controller managers and {m} schedulers, leader-elected");
    let runtime = match args.runtime {
        RuntimeKind::Mock => "mock",
        RuntimeKind::Podman => "podman",
    };
    let fast = if args.fast_failover { ", fast failover" } else { "" };
    println!(
        "  nodes:       {} ({runtime} runtime{fast})",
        args.nodes + args.node_hosts
    );
    if let Some(h) = &running.hosts {
        let names: Vec<String> = h.0.hosts.iter().map(|h| format!("{} ({})", h.node, h.ip)).collect();
        println!(
            "  node hosts:  {} (kulisse partition NODE, kulisse heal NODE)",
            names.join(", ")
        );
    }
    println!(
        "  processes:   {} (kulisse ps lists them, logs in {})",
        running.table.len(),
        data_dir.join("logs").display()
    );
    println!();
    println!("In another terminal:");
    println!("  export KULISSE_KUBECONFIG={}", data_dir.join("kubeconfig").display());
    println!("  kulisse ps");
    println!("  kulisse kill --leader scheduler");
    println!();
    println!("Press Ctrl-C to stop.");
    crate::signals::shutdown_signal().await;
    stop(&mut running).await;
    println!("kulisse control plane stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM everything, the nodes and components first and etcd last; SIGKILL what is still
/// there after 10 s.
async fn stop(running: &mut Running) {
    for child in running.children.iter().rev() {
        if let Some(pid) = child.id() {
            // SAFETY: sending a signal to a child we started and have not reaped.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
    for child in running.children.iter_mut().rev() {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
