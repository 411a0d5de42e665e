//! Stations ① and ⑦ · chapters "apply: from the CLI to the API server" (book/src/apply.md) and "The answer back, and reading the whole trace" (book/src/traces.md) · spans `cli.*`
//!
//! `kulisse apply -f FILE|DIR|-`: step 1 of the road (mirrors `kubectl apply --server-side`).
//!
//! 1. Read every file (a directory recursively: `*.yaml`, `*.yml`, `*.json`; `-` is stdin)
//!    and parse every document. **All or nothing**: if any document is malformed, names an
//!    unknown kind or fails validation, nothing is sent, and the error says file, document,
//!    line and column.
//! 2. Send each object to the API server as a server-side apply (`PATCH` with
//!    `application/apply-patch+yaml`); the server compares it with what the store holds.
//! 3. Print what the server did, as kubectl does: `deployment.apps/web created`,
//!    `configured` or `unchanged`.
//!
//! The whole command is one `cli.apply` span, the root of the trace; each object is a
//! `cli.request` child, whose context travels to the API server in the `traceparent` header.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use kulisse_core::objects::{self, Manifest};
use serde_json::Value;
use tracing::{Instrument, info_span};

use super::{client, object_ref};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Files or directories with manifests (YAML or JSON); `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// Only ask the server what would happen (server-side dry run); change nothing.
    #[arg(long, value_name = "server")]
    pub dry_run: Option<String>,
    /// The field manager name recorded in metadata.managedFields.
    #[arg(long, default_value = "kulisse")]
    pub field_manager: String,
    /// After the API server answered, narrate what the cluster does with the change, step by
    /// step, until the pods run and the proxy rules are in place (or something fails).
    #[arg(long)]
    pub follow: bool,
    /// How long --follow waits, in seconds.
    #[arg(long, default_value_t = 120)]
    pub follow_timeout: u64,
}

pub async fn run(global: &GlobalArgs, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let manifests = read_all(&args.files)?;
    let client = client(global)?;
    let tracing_guard = kulisse_traces::init_with(
        kulisse_traces::InitOptions::new("kulisse-cli").control_plane_sender(kulisse_traces::control_plane_sender({
            let client = client.clone();
            move |body| {
                let client = client.clone();
                async move { client.post_otlp(body).await.map_err(|e| e.to_string()) }
            }
        })),
    )?;
    let dry_run = match args.dry_run.as_deref() {
        None | Some("none") => false,
        Some("server") => true,
        Some(other) => bail!("--dry-run must be \"server\" or \"none\", not {other:?}"),
    };
    // Check everything before sending anything: kinds, namespaces, validation.
    let mut objects = Vec::new();
    for m in &manifests {
        objects.push(prepare(global, &client, m)?);
    }
    let result = apply_objects(
        &client,
        &manifests,
        &objects,
        &args.files.join(","),
        &args.field_manager,
        dry_run,
    )
    .await?;
    // The CLI's spans go to the control plane now, so the whole trace can be read there.
    tracing_guard.flush()?;
    let mut code = if result.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.follow && !dry_run {
        if let Some(trace_id) = &result.trace_id {
            let timeout = std::time::Duration::from_secs(args.follow_timeout);
            if let Err(e) = super::follow::follow(
                &client,
                super::follow::SpanSource::ControlPlane(&client),
                trace_id,
                &result.applied,
                timeout,
            )
            .await
            {
                eprintln!("{}", crate::output::error_text(&e));
                code = ExitCode::from(1);
            }
        }
    }
    tracing_guard.shutdown()?;
    Ok(code)
}

/// What an apply did.
pub struct ApplyResult {
    pub applied: Vec<super::follow::Applied>,
    pub failed: usize,
    /// The trace of this apply (the `cli.apply` span's trace id).
    pub trace_id: Option<String>,
}

/// Send prepared objects as server-side applies inside one `cli.apply` root span, printing
/// kubectl's line for each. Shared by `kulisse apply` and `kulisse demo`.
pub async fn apply_objects(
    client: &kulisse_core::client::Client,
    manifests: &[Manifest],
    objects: &[Value],
    files: &str,
    field_manager: &str,
    dry_run: bool,
) -> anyhow::Result<ApplyResult> {
    let root = info_span!(
        "cli.apply",
        "kulisse.stage" = "cli",
        "cli.files" = %files,
        "cli.objects" = objects.len(),
        "cli.dry_run" = dry_run,
    );
    let trace_id = root
        .in_scope(kulisse_traces::propagation::traceparent_of_current)
        .and_then(|tp| tp.split('-').nth(1).map(str::to_string));
    let mut result = ApplyResult {
        applied: Vec::new(),
        failed: 0,
        trace_id,
    };
    async {
        for (m, obj) in manifests.iter().zip(objects) {
            let (info, ns, name) = client.target_of(obj)?;
            let span = info_span!(
                "cli.request",
                "kulisse.stage" = "cli",
                "k8s.kind" = info.kind,
                "k8s.namespace" = ns.as_deref().unwrap_or(""),
                "k8s.name" = %name,
                "cli.source" = %format!("{}#{}", m.source, m.document),
                "k8s.outcome" = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
            );
            let outcome = client.apply(obj, field_manager, dry_run).instrument(span.clone()).await;
            let suffix = if dry_run { " (server dry run)" } else { "" };
            match outcome {
                Ok((_, outcome)) => {
                    span.record("k8s.outcome", outcome.as_str());
                    println!("{} {outcome}{suffix}", object_ref(info, &name));
                    result.applied.push(super::follow::Applied {
                        kind: info.kind,
                        namespace: ns.clone(),
                        name: name.clone(),
                        outcome,
                    });
                }
                Err(e) => {
                    result.failed += 1;
                    span.record("k8s.outcome", "error");
                    span.record("otel.status_code", "ERROR");
                    let context = format!(
                        "applying {} from {} (document {})",
                        object_ref(info, &name),
                        m.source,
                        m.document
                    );
                    eprintln!("{}", crate::output::error_text(&anyhow::Error::new(e).context(context)));
                }
            }
        }
        anyhow::Ok(())
    }
    .instrument(root)
    .await?;
    Ok(result)
}

/// Resolve the kind, settle the namespace, and validate on the client first (as kubectl's
/// schema validation does), so that a bad document stops the whole apply before anything
/// is written.
pub fn prepare(global: &GlobalArgs, client: &kulisse_core::client::Client, m: &Manifest) -> anyhow::Result<Value> {
    let mut obj = m.object.clone();
    let where_ = format!("{} (document {}, line {})", m.source, m.document, m.line);
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let info = objects::by_gvk(api_version, kind).ok_or_else(|| {
        anyhow::anyhow!(
            "{where_}: no kind \"{kind}\" is known for apiVersion \"{api_version}\"; kulisse knows: {}",
            objects::kind_names().join(", ")
        )
    })?;
    if info.namespaced {
        let ns = global
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace.clone());
        match objects::namespace(&obj) {
            Some(own) if global.namespace.as_deref().is_some_and(|flag| flag != own) => bail!(
                "{where_}: the namespace from the provided object \"{own}\" does not match the namespace \"{ns}\". You must pass '--namespace={own}' to perform this operation."
            ),
            Some(_) => {}
            None => {
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("namespace".into(), Value::String(ns));
                }
            }
        }
    }
    let mut checked = obj.clone();
    objects::apply_defaults(info, &mut checked);
    if let Err(e) = objects::validate(info, &checked) {
        bail!("{where_}: {}", e.message);
    }
    Ok(obj)
}

/// Read and parse every file, directory and `-`, all or nothing.
pub fn read_all(files: &[String]) -> anyhow::Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    for f in files {
        if f == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading standard input")?;
            manifests.extend(objects::parse_manifests("-", &buf).map_err(|e| anyhow::anyhow!("{e}"))?);
            continue;
        }
        let path = PathBuf::from(f);
        let meta = std::fs::metadata(&path).with_context(|| format!("the path \"{f}\" does not exist"))?;
        let paths = if meta.is_dir() {
            manifest_files(&path)?
        } else {
            vec![path]
        };
        for p in paths {
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            manifests.extend(
                objects::parse_manifests(&p.display().to_string(), &bytes).map_err(|e| anyhow::anyhow!("{e}"))?,
            );
        }
    }
    if manifests.is_empty() {
        bail!("no objects passed to apply");
    }
    Ok(manifests)
}

/// Every `*.yaml`, `*.yml` and `*.json` below `dir`, sorted.
fn manifest_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading directory {}", d.display()))? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
