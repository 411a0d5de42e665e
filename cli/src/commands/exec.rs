//! `kulisse exec POD|TYPE/NAME [-c CONTAINER] [-i] [-t] -- COMMAND [ARG...]` (mirrors
//! `kubectl exec`).
//!
//! Runs a command in a running container. The request is a WebSocket upgrade of
//! `pods/NAME/exec?command=...&container=...&stdin=...&stdout=true&stderr=...&tty=...`,
//! offering the channel protocols `v5.channel.k8s.io` and `v4.channel.k8s.io`; the API
//! server passes it to the pod's kubelet, which runs the command through the container
//! runtime ([`kulisse_core::remotecommand`] has the channels). This command is the client
//! end: stdin (with `-i`) goes out on channel 0 and, at its end, v5's close signal; channels
//! 1 and 2 are copied to stdout and stderr; the `Status` on channel 3 is the exit code.
//!
//! As kubectl does:
//! - without `-c` it runs in the `kubectl.kubernetes.io/default-container`, else the first
//!   container (and says so on stderr when there was a choice);
//! - `-t` gives the command a terminal only together with `-i` and a terminal on stdin (else
//!   it warns and goes on without one); the local terminal is then raw, and stderr comes
//!   merged into stdout, as a terminal has one output;
//! - a command that exits non-zero prints `command terminated with exit code N` and
//!   `kulisse exec` exits N;
//! - a finished pod is refused before anything is sent.
//!
//! The terminal's size is sent at the start and again on each SIGWINCH, as kubectl does.
//! Where kulisse differs: there is no SPDY fallback, since kulisse's API server speaks
//! WebSocket for exec.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use futures::{SinkExt, StreamExt};
use kulisse_core::client::ClientError;
use kulisse_core::objects;
use kulisse_core::remotecommand;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{client, namespace};
use crate::GlobalArgs;
use crate::output::Bare;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The pod's name, or `TYPE/NAME` (`pod/web-1`, `deploy/web`: one of its pods).
    pub target: String,
    /// The container to run in (default: the pod's default container, else its first).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Give the command a terminal (with `-i`, when stdin is one).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Print only what the command prints (no "Defaulted container" or TTY notes).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn run(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let api = client(global)?;
    let ns = namespace(global, &api);
    let pod = super::logs::pod_of(&api, &ns, &args.target).await?;
    let pod_name = objects::name(&pod).unwrap_or("").to_string();
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        bail!("cannot exec into a container in a completed pod; current phase is {phase}");
    }
    let container = container_of(&pod, args.container.as_deref(), args.quiet)?;
    let tty = args.tty && args.stdin && std::io::stdin().is_terminal();
    if args.tty && args.stdin && !tty && !args.quiet {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
    }
    let path = exec_path(&ns, &pod_name, &container, &args.command, args.stdin, tty);
    let (ws, protocol) = match api.websocket(&path, &remotecommand::PROTOCOLS).await {
        Ok(answer) => answer,
        // The server's refusal as kubectl prints it: `Error from server (BadRequest): ...`.
        Err(e @ ClientError::Api(_)) => return Err(e.into()),
        Err(e) => return Err(e).context("unable to upgrade connection"),
    };
    let _raw = if tty { RawTerminal::enter() } else { None };
    let status = session(ws, &protocol, args.stdin, tty).await?;
    drop(_raw);
    match remotecommand::exit_code_of(&status) {
        Ok(0) => Ok(ExitCode::SUCCESS),
        Ok(code) => {
            eprintln!("command terminated with exit code {code}");
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Err(message) => Err(Bare(format!("error: {message}")).into()),
    }
}

/// The container to run in: the one named (the API server checks that it exists, and
/// says so as kubectl shows it), else kubectl's default.
fn container_of(pod: &Value, named: Option<&str>, quiet: bool) -> anyhow::Result<String> {
    match named {
        Some(name) => Ok(name.to_string()),
        None => super::logs::first_container(pod, quiet)
            .with_context(|| format!("pod {} has no containers", objects::name(pod).unwrap_or(""))),
    }
}

/// `pods/NAME/exec` with the query kubectl sends (one `command` per word).
fn exec_path(ns: &str, pod: &str, container: &str, command: &[String], stdin: bool, tty: bool) -> String {
    let info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
    let mut q = form_urlencoded::Serializer::new(String::new());
    for word in command {
        q.append_pair("command", word);
    }
    q.append_pair("container", container);
    q.append_pair("stdin", &stdin.to_string());
    q.append_pair("stdout", "true");
    // A terminal has one output: stderr comes merged into stdout.
    q.append_pair("stderr", &(!tty).to_string());
    q.append_pair("tty", &tty.to_string());
    format!(
        "{}?{}",
        kulisse_core::client::path(info, Some(ns), Some(pod), Some("exec")),
        q.finish()
    )
}

/// Copy the streams until the command's status arrives and the server closes; the status.
async fn session(ws: kulisse_core::client::WebSocket, protocol: &str, stdin: bool, tty: bool) -> anyhow::Result<Value> {
    let (mut sink, mut stream) = ws.split();
    // The terminal's size goes first, and again whenever it changes (SIGWINCH).
    let mut resized = if tty {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    if tty && let Some(message) = resize_message() {
        sink.send(message).await?;
    }
    let mut in_rx = read_stdin(stdin);
    let close_supported = protocol == remotecommand::V5;
    let mut input_open = stdin;
    let mut status = None;
    loop {
        tokio::select! {
            chunk = in_rx.recv(), if input_open => match chunk {
                Some(Some(bytes)) => {
                    sink.send(Message::binary(channel(remotecommand::STDIN, &bytes))).await?;
                }
                _ => {
                    input_open = false;
                    if close_supported {
                        sink.send(Message::binary(vec![remotecommand::CLOSE, remotecommand::STDIN]))
                            .await?;
                    }
                }
            },
            Some(()) = async {
                match resized.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(message) = resize_message() {
                    sink.send(message).await?;
                }
            }
            message = stream.next() => match message {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                    if let Some(result) = deliver(data[0], &data[1..])? {
                        status = Some(result);
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if status.is_some() {
                        break;
                    }
                    return Err(e).context("the exec stream broke");
                }
            },
        }
    }
    status.context("the connection closed before the command's exit status arrived")
}

/// Stdin's chunks (`None` at its end), read on a thread of its own, not tokio's stdin: a
/// blocking read must not keep the process alive once the command has ended. Without
/// `stdin`, a channel that is closed at once.
fn read_stdin(stdin: bool) -> tokio::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(4);
    if !stdin {
        return in_rx;
    }
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = in_tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if in_tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    in_rx
}

/// The resize channel's message with the local terminal's size, if there is a terminal.
fn resize_message() -> Option<Message> {
    let (width, height) = terminal_size()?;
    let size = serde_json::json!({"Width": width, "Height": height}).to_string();
    Some(Message::binary(channel(remotecommand::RESIZE, size.as_bytes())))
}

/// What arrived on `channel`: output is written out at once; the error channel's Status is
/// the command's result, returned.
fn deliver(channel: u8, body: &[u8]) -> anyhow::Result<Option<Value>> {
    match channel {
        remotecommand::STDOUT => {
            let mut out = std::io::stdout().lock();
            out.write_all(body)?;
            out.flush()?;
        }
        remotecommand::STDERR => {
            let mut err = std::io::stderr().lock();
            err.write_all(body)?;
            err.flush()?;
        }
        remotecommand::ERROR => {
            return serde_json::from_slice::<Value>(body).map(Some).with_context(|| {
                format!(
                    "the error channel did not carry a Status: {}",
                    String::from_utf8_lossy(body)
                )
            });
        }
        _ => {}
    }
    Ok(None)
}

/// One message on `channel`: the channel byte, then the bytes.
fn channel(channel: u8, bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(bytes.len() + 1);
    message.push(channel);
    message.extend_from_slice(bytes);
    message
}

/// The local terminal's size (columns, rows), if stdout is one.
fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills the winsize struct we pass; fd 1 stays open.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some((size.ws_col, size.ws_row))
}

/// The local terminal in raw mode (keys go to the remote terminal as typed, Ctrl-C too),
/// restored when dropped.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        // SAFETY: tcgetattr/tcsetattr on stdin, which is a terminal (checked by the caller),
        // with a termios struct they fill.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}
