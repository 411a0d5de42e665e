//! `kulisse trace [TRACE_ID|last]`: the whole road of an apply as a waterfall in the terminal.
//!
//! Every kulisse component keeps its spans, and sends them to the control plane, which
//! keeps the recent ones (no Jaeger needed). This command fetches one trace from the API
//! server (`GET /apis/kulisse.dev/v1/traces/<id>`) and draws it: one line per span,
//! indented under its parent, with the component, a bar on a shared time axis, the
//! duration and the attributes a learner cares about.
//!
//! - `kulisse trace --list` shows the recent traces.
//! - `kulisse trace last --export trace.json` writes OTLP JSON that Jaeger's UI loads
//!   through "Search → JSON File".
//! - `kulisse trace last --svg trace.svg` draws the same waterfall as an SVG picture (the
//!   book's figures are made this way).
//! - `kulisse trace ID --jaeger http://127.0.0.1:16686` draws the trace as a running Jaeger
//!   holds it ([`super::trace_jaeger`]).
//! - `--stage`, `--object`, `--depth` and `--no-events` focus every one of these views on
//!   part of the trace ([`kulisse_traces::filter`]).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use http::Method;
use kulisse_traces::StoredSpan;
use serde_json::Value;

use super::client;
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// A trace id (32 hex digits), or `last` for the newest apply.
    #[arg(default_value = "last")]
    pub id: String,
    /// List the recent traces instead.
    #[arg(long)]
    pub list: bool,
    /// Write the trace as OTLP JSON (for Jaeger's "JSON File" upload) instead of drawing it.
    #[arg(long, value_name = "FILE")]
    pub export: Option<std::path::PathBuf>,
    /// Draw the waterfall as an SVG picture into FILE (ten pixels per column of --width).
    #[arg(long, value_name = "FILE", conflicts_with = "export")]
    pub svg: Option<std::path::PathBuf>,
    /// Width of the drawing in columns.
    #[arg(long, default_value_t = 120)]
    pub width: usize,
    /// Follow span links too (for clusters running with --trace-style links).
    #[arg(long)]
    pub links: bool,
    /// Read the trace from a running Jaeger (the address of its UI and query API, e.g.
    /// http://127.0.0.1:16686) instead of the control plane, and print its link in Jaeger's UI.
    #[arg(long, value_name = "URL", conflicts_with_all = ["list", "export", "links"])]
    pub jaeger: Option<String>,
    /// Show only the spans of these stages (cli, apiserver, store, controller, scheduler,
    /// kubelet, runtime, proxy), comma-separated.
    #[arg(long, value_name = "STAGES", value_delimiter = ',')]
    pub stage: Vec<String>,
    /// Show only the spans about one object, KIND/NAME; the name may hold * and ? (pod/web-*).
    #[arg(long, value_name = "KIND/NAME")]
    pub object: Option<String>,
    /// Show only the first N levels of the call tree (the root is level 1).
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
    /// Hide the writes of Kubernetes Events (Scheduled, Pulled, Started, ...).
    #[arg(long)]
    pub no_events: bool,
}

pub async fn run(global: &GlobalArgs, args: TraceArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.jaeger {
        let url = url.trim_end_matches('/');
        let id = if args.id == "last" {
            // Jaeger does not know which trace is "the last apply"; the control plane does.
            let spans = fetch_spans(&client(global)?, "last", false).await?;
            match spans.first() {
                Some(span) => span.trace_id.clone(),
                None => anyhow::bail!("the control plane has no trace yet: run `kulisse apply` first"),
            }
        } else {
            args.id.to_ascii_lowercase()
        };
        let spans = super::trace_jaeger::fetch(url, &id).await?;
        show(&args, &spans)?;
        println!("in Jaeger: {url}/trace/{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let client = client(global)?;
    if args.list {
        let (list, _) = client
            .json(Method::GET, "/apis/kulisse.dev/v1/traces", None, None)
            .await?;
        write_stdout(&render_list(&list))?;
        return Ok(ExitCode::SUCCESS);
    }
    let filter =
        kulisse_traces::TraceFilter::new(args.stage.clone(), args.object.as_deref(), args.depth, args.no_events)
            .map_err(anyhow::Error::msg)?;
    let spans = filter.apply(&fetch_spans(&client, &args.id, args.links).await?);
    if let Some(path) = &args.export {
        let text = serde_json::to_string_pretty(&kulisse_traces::to_otlp_json(&spans))?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "wrote {} spans to {} (open Jaeger, Search → JSON File, and pick it)",
            spans.len(),
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    show(&args, &spans)?;
    Ok(ExitCode::SUCCESS)
}

/// Draws `spans` as `args` ask: an SVG file with `--svg`, else the waterfall on stdout.
pub fn show(args: &TraceArgs, spans: &[StoredSpan]) -> anyhow::Result<()> {
    if let Some(path) = &args.svg {
        let svg = kulisse_traces::render_svg(spans, args.width.saturating_mul(10));
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        println!("drew {} spans into {}", spans.len(), path.display());
        return Ok(());
    }
    write_stdout(&kulisse_traces::render_waterfall(spans, args.width))
}

/// Prints `text`; a reader that stopped reading (`kulisse trace last | head`) is not an
/// error — the waterfall is long, and a shell pipe that closes early is normal.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

/// The spans of one trace (`last` for the newest apply) from the control plane's store.
pub async fn fetch_spans(
    client: &kulisse_core::client::Client,
    id: &str,
    links: bool,
) -> anyhow::Result<Vec<StoredSpan>> {
    let links = if links { "?links=true" } else { "" };
    let (trace, _) = client
        .json(
            Method::GET,
            &format!("/apis/kulisse.dev/v1/traces/{id}{links}"),
            None,
            None,
        )
        .await?;
    let spans = trace.get("spans").cloned().unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(spans).context("the control plane sent spans in an unexpected shape")
}

fn render_list(list: &Value) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(vec!["TRACE ID", "ROOT", "SPANS", "DURATION", "SERVICES"]);
    for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let s = |k: &str| {
            item.get(k)
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .unwrap_or_default()
        };
        let nanos = item.get("durationNanos").and_then(Value::as_u64).unwrap_or(0);
        let services: Vec<String> = item
            .get("services")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(|s| s.trim_start_matches("kulisse-").to_string()))
            .collect();
        t.add_row(vec![
            s("traceId"),
            s("rootName"),
            s("spanCount"),
            kulisse_traces::view::format_duration(nanos),
            services.join(","),
        ]);
    }
    for col in t.column_iter_mut() {
        col.set_padding((0, 3));
    }
    let text = t.to_string();
    let mut out: String = text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n");
    out.push('\n');
    out
}
