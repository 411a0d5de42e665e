//! # `kulisse`: the command line (mirrors kubectl, and kube-apiserver's launcher)
//!
//! One binary, two roles:
//! - **server**: `kulisse up` runs the control plane (API server and store) in the foreground;
//! - **client**: `apply`, `get`, `describe`, `delete` talk to it over HTTP, exactly as
//!   kubectl talks to a real cluster, using the kubeconfig that `kulisse up` wrote.
//!
//! The binary is thin: every command is a few lines over `kulisse-core`. `main` only calls
//! [`try_main`] and turns its result into an exit code, printing an error exactly once.
//!
//! Exit codes: `0` success; `1` an error (from the server, or a bad manifest); `2` a usage
//! error (unknown flag, missing argument).

/// The memory allocator of every kulisse process: mimalloc instead of glibc's malloc.
/// A control plane allocates and frees small objects (decoded JSON, HTTP frames, spans)
/// from many threads at once; see ARCHITECTURE.md ("The allocator") for what it changed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod builder;
mod commands;
mod format;
mod jsonpath;
mod output;
mod signals;
mod tabwriter;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kulisse: a small Kubernetes that shows you what happens behind the scenes.
#[derive(Parser, Debug)]
#[command(name = "kulisse", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every client command understands, as kubectl's do.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The kubeconfig to use (default: $KULISSE_KUBECONFIG, else ~/.kulisse/kubeconfig).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace to work in (default: the kubeconfig context's, usually "default").
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// Work across all namespaces (get, describe).
    #[arg(short = 'A', long = "all-namespaces", global = true)]
    pub all_namespaces: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure how far kulisse scales here: whole clusters, the scheduler, durable writes.
    Bench(commands::bench::BenchArgs),
    /// Start a throwaway cluster, apply an example app and show every step behind the scenes.
    Demo(commands::demo::DemoArgs),
    /// Run the control plane (API server + store) in the foreground.
    Up(commands::up::UpArgs),
    /// List the processes of the cluster (role, address, pid, who leads).
    Ps(commands::ps::PsArgs),
    /// Kill one process of the cluster with SIGKILL (for the failure labs).
    Kill(commands::ps::KillArgs),
    /// Cut a node host off the network (its cable's hub end goes down), for the failure labs.
    Partition(commands::hosts::LinkArgs),
    /// Plug a partitioned node host back in.
    Heal(commands::hosts::LinkArgs),
    /// Run the controller manager (Deployment, ReplicaSet, Endpoints, EndpointSlice, namespace, garbage collector, node lifecycle).
    ControllerManager(commands::components::ControllerManagerArgs),
    /// Run the scheduler.
    Scheduler(commands::components::SchedulerArgs),
    /// Run the kubelet of one worker node.
    Kubelet(commands::components::KubeletArgs),
    /// Run kube-proxy for one node.
    Proxy(commands::components::ProxyArgs),
    /// Apply manifests: create objects, or change them to match the files.
    Apply(commands::apply::ApplyArgs),
    /// List objects, or show one, in kubectl's columns.
    Get(commands::get::GetArgs),
    /// Show an object in detail, with its events.
    Describe(commands::describe::DescribeArgs),
    /// Delete objects by file or by kind and name.
    Delete(commands::delete::DeleteArgs),
    /// Change fields of an object with a merge or JSON patch.
    Patch(commands::patch::PatchArgs),
    /// Change the number of replicas of a Deployment or ReplicaSet.
    Scale(commands::scale::ScaleArgs),
    /// Print a container's logs.
    Logs(commands::logs::LogsArgs),
    /// Run a command in a pod's container, through the API server and its kubelet.
    Exec(commands::exec::ExecArgs),
    /// Forward local ports to a pod's ports, through the API server and its kubelet.
    PortForward(commands::port_forward::PortForwardArgs),
    /// Follow a Deployment's rollout.
    Rollout(commands::rollout::RolloutArgs),
    /// Draw a trace (default: the last apply) as a waterfall, or export it for Jaeger.
    Trace(commands::trace::TraceArgs),
    /// Add, change or remove labels of objects.
    Label(commands::label::LabelArgs),
    /// Add, change or remove annotations of objects.
    Annotate(commands::annotate::AnnotateArgs),
    /// List events, oldest first (LAST SEEN, TYPE, REASON, OBJECT, MESSAGE).
    Events(commands::events::EventsArgs),
    /// Print the client's and the server's versions.
    Version(commands::version::VersionArgs),
    /// Print where the control plane runs.
    ClusterInfo(commands::cluster_info::ClusterInfoArgs),
    /// Print the documentation of a kind or field (from the server's OpenAPI), or, given a name, why an object is as it is.
    Explain(commands::explain::ExplainArgs),
    /// List every stored revision of an object: when, who wrote it, what changed, its trace.
    History(commands::history::HistoryArgs),
    /// Create a Deployment, ConfigMap, Secret or Namespace from flags.
    Create(commands::create::CreateArgs),
    /// Wait until objects meet a condition, or are deleted.
    Wait(commands::wait::WaitArgs),
    /// Step mode: show the writes that wait, let one through (next), run (continue), or stop (pause).
    Step(commands::step::StepArgs),
    /// Step mode's breakpoints: hold only the writes of one component (and object).
    Break(commands::step::BreakArgs),
    /// Mark a node unschedulable.
    Cordon(commands::cordon::CordonArgs),
    /// Mark a node schedulable again.
    Uncordon(commands::cordon::CordonArgs),
    /// Cordon a node and move its pods away.
    Drain(commands::drain::DrainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Like other Unix tools, a client command ends quietly when the reader of its output goes
    // away (`kulisse get pods | head -1`) instead of failing on a broken pipe. Long-running
    // components keep Rust's default (SIGPIPE ignored): a server must not die because
    // whoever read its log went away.
    let long_running = matches!(
        cli.command,
        Command::Up(_)
            | Command::Bench(_)
            | Command::Demo(_)
            | Command::ControllerManager(_)
            | Command::Scheduler(_)
            | Command::Kubelet(_)
            | Command::Proxy(_)
    );
    if !long_running {
        // SAFETY: called in main before the runtime starts, while this is the only thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match try_main(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", output::error_text(&err));
            ExitCode::from(1)
        }
    }
}

/// Run a command. Errors are printed once, by `main`.
fn try_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Demo(args) => commands::demo::run(&cli.global, args).await,
            Command::Up(args) if args.masters != 1 => commands::masters::run(args).await,
            Command::Up(args) => commands::up::run(args).await,
            Command::Ps(args) => commands::ps::ps(&cli.global, args).await,
            Command::Kill(args) => commands::ps::kill(&cli.global, args).await,
            Command::Partition(args) => commands::hosts::set_link(&cli.global, &args, false),
            Command::Heal(args) => commands::hosts::set_link(&cli.global, &args, true),
            Command::ControllerManager(args) => commands::components::controller_manager(&cli.global, args).await,
            Command::Scheduler(args) => commands::components::scheduler(&cli.global, args).await,
            Command::Kubelet(args) => commands::components::kubelet(&cli.global, args).await,
            Command::Proxy(args) => commands::components::proxy(&cli.global, args).await,
            Command::Apply(args) => commands::apply::run(&cli.global, args).await,
            Command::Get(args) => commands::get::run(&cli.global, args).await,
            Command::Describe(args) => commands::describe::run(&cli.global, args).await,
            Command::Delete(args) => commands::delete::run(&cli.global, args).await,
            Command::Patch(args) => commands::patch::run(&cli.global, args).await,
            Command::Scale(args) => commands::scale::run(&cli.global, args).await,
            Command::Logs(args) => commands::logs::run(&cli.global, args).await,
            Command::Exec(args) => commands::exec::run(&cli.global, args).await,
            Command::PortForward(args) => commands::port_forward::run(&cli.global, args).await,
            Command::Rollout(args) => commands::rollout::run(&cli.global, args).await,
            Command::Trace(args) => commands::trace::run(&cli.global, args).await,
            Command::Label(args) => commands::label::run(&cli.global, args).await,
            Command::Annotate(args) => commands::annotate::run(&cli.global, args).await,
            Command::Events(args) => commands::events::run(&cli.global, args).await,
            Command::Version(args) => commands::version::run(&cli.global, args).await,
            Command::ClusterInfo(args) => commands::cluster_info::run(&cli.global, args).await,
            Command::Explain(args) => commands::explain::run(&cli.global, args).await,
            Command::History(args) => commands::history::run(&cli.global, args).await,
            Command::Create(args) => commands::create::run(&cli.global, args).await,
            Command::Wait(args) => commands::wait::run(&cli.global, args).await,
            Command::Cordon(args) => commands::cordon::run(&cli.global, args, true).await,
            Command::Uncordon(args) => commands::cordon::run(&cli.global, args, false).await,
            Command::Drain(args) => commands::drain::run(&cli.global, args).await,
            Command::Step(args) => commands::step::step(&cli.global, args).await,
            Command::Break(args) => commands::step::breakpoint(&cli.global, args).await,
        }
    })
}
