//! Reading a trace in the terminal: a waterfall and one sentence per step.
//!
//! Trace viewers such as Jaeger draw a trace as a **waterfall**: one row per span, indented
//! under its parent, with a bar that shows *when* the span ran on a time axis shared by the
//! whole trace. Gaps between bars are time nobody was working on the request (waiting for a
//! watch event, a work queue, a timer); long bars are where the time went.
//! [`render_waterfall`] draws the same with plain characters, so it reads without colour:
//!
//! ```text
//! trace 4bf92f3577b34da6a3ce929d0e0e4736 · 4 spans · 20.0 ms · kulisse-cli, kulisse-apiserver
//!                                          0 ms                               20.0 ms
//! cli.apply               cli        |██████████████████████████████|   20.0 ms  →  configured
//! └─ cli.request          cli        |   ████████████               |    8.0 ms  Deployment default/web
//!    └─ apiserver.request apiserver  |    ██████████                |    6.5 ms  patch deployments default/web · HTTP 200
//!       └─ store.txn      store      |        ▏                     |    0.4 ms  update /registry/... · rev 12
//! ```
//!
//! [`narrate`] turns one span into one sentence for `kulisse apply --follow`, from the table
//! [`crate::catalogue::NARRATIONS`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::catalogue::{self, attrs};
use crate::span_store::{StoredSpan, summarize};

/// The attributes shown after the bar, in this order, with a label in front of the value.
/// `k8s.*` object attributes are shown together as one object reference first.
const DETAILS: &[(&str, &str)] = &[
    (attrs::COMPARE_RESULT, "→ "),
    (attrs::K8S_OUTCOME, "→ "),
    (attrs::OUTCOME, "→ "),
    ("http.response.status_code", "HTTP "),
    (attrs::STORE_OP, ""),
    (attrs::STORE_KEY, ""),
    (attrs::STORE_REVISION, "rev "),
    (attrs::CONTROLLER_NAME, ""),
    (attrs::CONTROLLER_KEY, ""),
    (attrs::CONTROLLER_REASON, "because "),
    (attrs::CONTROLLER_ACTION, "then "),
    (attrs::SCHEDULER_POD, "pod "),
    (attrs::SCHEDULER_NODE, "→ node "),
    (attrs::SCHEDULER_FEASIBLE_NODES, "feasible "),
    (attrs::SCHEDULER_SCORE, "score "),
    (attrs::SCHEDULER_PLUGIN_NAME, ""),
    (attrs::SCHEDULER_PLUGIN_NODE, "on "),
    (attrs::SCHEDULER_PLUGIN_VERDICT, ""),
    (attrs::SCHEDULER_PLUGIN_POINTS, "points "),
    (attrs::SCHEDULER_PLUGIN_REASON, ""),
    (attrs::KUBELET_POD, "pod "),
    (attrs::RUNTIME_CONTAINER_ID, "container "),
    (attrs::RUNTIME_IMAGE, "image "),
    (attrs::PROXY_SERVICE, "service "),
    (attrs::PROXY_RULE_DIFF, "rules "),
];

/// The width of the duration column (`  1234.5 ms`).
const DURATION_WIDTH: usize = 10;

/// The distinct trace ids of the drawn rows, in order (several in the links style).
fn trace_ids_of<'a>(rows: &[Row<'a>]) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    rows.iter()
        .map(|r| r.span.trace_id.as_str())
        .filter(|id| seen.insert(*id))
        .collect()
}

/// The first line of a drawing: `trace <id> · N spans · duration · services` (or
/// `N linked traces` in the links style).
fn headline(trace_ids: &[&str], spans: &[StoredSpan], total: u64) -> String {
    let summary = summarize(trace_ids.first().copied().unwrap_or(""), spans);
    let which = if trace_ids.len() == 1 {
        format!("trace {}", trace_ids[0])
    } else {
        format!("{} linked traces", trace_ids.len())
    };
    let plural = if spans.len() == 1 { "" } else { "s" };
    format!(
        "{which} · {} span{plural} · {} · {}",
        spans.len(),
        format_duration(total),
        summary.services.join(", ")
    )
}

/// Draws `spans` (one trace, or several linked traces) as a waterfall `width` characters wide
/// (wider lines are possible when `width` is very small). See the module docs for the shape.
///
/// Spans are nested under their parents and sorted by start time. A span whose parent is not
/// among `spans` (its process has not sent it yet, or it was forgotten) is drawn at the top
/// level with `…` in front of its name. Returns a short note for an empty slice.
pub fn render_waterfall(spans: &[StoredSpan], width: usize) -> String {
    if spans.is_empty() {
        return "no spans to show (the trace is unknown, or its spans have not arrived yet)\n".to_string();
    }
    let rows = tree_rows(spans);
    let t0 = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(t0).max(t0);
    let total = (t1 - t0).max(1);

    let labels: Vec<String> = rows.iter().map(|row| row_label(row)).collect();
    let whos: Vec<String> = rows.iter().map(|row| who(row.span)).collect();
    // Deep trees need room for their indentation: wider terminals give the names more.
    let name_w = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(8, (width / 3).max(48));
    let who_w = whos.iter().map(|w| w.chars().count()).max().unwrap_or(0).clamp(5, 24);
    let fixed = name_w + 1 + who_w + 1 + 2 + 1 + DURATION_WIDTH + 2;
    let avail = width.saturating_sub(fixed);
    let bar_w = (avail / 3).clamp(12, 48);
    let details_w = width.saturating_sub(fixed + bar_w).max(20);

    let mut out = String::new();
    let trace_ids = trace_ids_of(&rows);
    let header = headline(&trace_ids, spans, total);
    let _ = writeln!(out, "{}", cut(&header, width.max(60)));
    let left = "0 ms";
    let right = format_duration(total);
    let axis_gap = (bar_w + 2).saturating_sub(left.len() + right.len());
    let _ = writeln!(
        out,
        "{:pad$}{left}{:axis_gap$}{right}",
        "",
        "",
        pad = name_w + 1 + who_w + 1
    );

    let mut current_trace = "";
    for ((row, label), who) in rows.iter().zip(&labels).zip(&whos) {
        if trace_ids.len() > 1 && row.depth == 0 && row.span.trace_id != current_trace {
            current_trace = &row.span.trace_id;
            let _ = writeln!(out, "trace {current_trace}");
        }
        let bar = bar(row.span, t0, total, bar_w);
        let mut line = format!(
            "{} {} |{bar}| {:>dw$}",
            pad_or_cut(label, name_w),
            pad_or_cut(who, who_w),
            format_duration(row.span.duration_nanos()),
            dw = DURATION_WIDTH
        );
        let details = details(row.span);
        if !details.is_empty() {
            line.push_str("  ");
            line.push_str(&cut(&details, details_w));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.iter().any(|r| r.orphan) {
        out.push_str("… = the span's parent is not in this view (not received yet, or from another trace)\n");
    }
    out
}

struct Row<'a> {
    span: &'a StoredSpan,
    depth: usize,
    /// Tree-drawing prefix, e.g. `│  ├─ `.
    prefix: String,
    orphan: bool,
}

/// Orders spans depth-first, children by start time, and computes the tree prefixes.
fn tree_rows(spans: &[StoredSpan]) -> Vec<Row<'_>> {
    let key = |s: &StoredSpan| (s.trace_id.clone(), s.span_id.clone());
    let present: HashSet<(String, String)> = spans.iter().map(key).collect();
    let mut children: HashMap<(String, String), Vec<&StoredSpan>> = HashMap::new();
    let mut roots: Vec<(&StoredSpan, bool)> = Vec::new();
    for span in spans {
        match &span.parent_span_id {
            Some(parent) if present.contains(&(span.trace_id.clone(), parent.clone())) => children
                .entry((span.trace_id.clone(), parent.clone()))
                .or_default()
                .push(span),
            Some(_) => roots.push((span, true)),
            None => roots.push((span, false)),
        }
    }
    let by_start = |a: &&StoredSpan, b: &&StoredSpan| {
        (a.start_unix_nanos, std::cmp::Reverse(a.end_unix_nanos), &a.span_id).cmp(&(
            b.start_unix_nanos,
            std::cmp::Reverse(b.end_unix_nanos),
            &b.span_id,
        ))
    };
    for list in children.values_mut() {
        list.sort_by(by_start);
    }
    roots.sort_by(|a, b| by_start(&a.0, &b.0));

    let mut rows = Vec::with_capacity(spans.len());
    let mut visited: HashSet<(String, String)> = HashSet::new();
    // Explicit stack: (span, depth, prefix for its children, its own prefix, orphan).
    let mut stack: Vec<(&StoredSpan, usize, String, String, bool)> = roots
        .iter()
        .rev()
        .map(|(span, orphan)| (*span, 0, String::new(), String::new(), *orphan))
        .collect();
    while let Some((span, depth, child_indent, prefix, orphan)) = stack.pop() {
        if !visited.insert(key(span)) {
            continue; // a cycle in bad input: draw each span once
        }
        rows.push(Row {
            span,
            depth,
            prefix,
            orphan,
        });
        if let Some(kids) = children.get(&key(span)) {
            let last = kids.len().saturating_sub(1);
            for (i, kid) in kids.iter().enumerate().rev() {
                let (branch, cont) = if i == last {
                    ("└─ ", "   ")
                } else {
                    ("├─ ", "│  ")
                };
                stack.push((
                    kid,
                    depth + 1,
                    format!("{child_indent}{cont}"),
                    format!("{child_indent}{branch}"),
                    false,
                ));
            }
        }
    }
    rows
}

fn row_label(row: &Row<'_>) -> String {
    format!(
        "{}{}{}{}",
        row.prefix,
        if row.orphan { "… " } else { "" },
        row.span.name,
        if row.span.is_error() { " ✗" } else { "" }
    )
}

/// Who did the step: the stage, or `service/stage` when the service is not the stage's usual
/// one, or the short service name when there is no stage. With several copies of a
/// component (`kulisse up --masters 3`) the copy is named too: `scheduler-2` for the stage
/// `scheduler`, `store@apiserver-1` for the store step of an API server.
fn who(span: &StoredSpan) -> String {
    let short = span.service_name.strip_prefix("kulisse-").unwrap_or(&span.service_name);
    let base = match span.stage.as_deref() {
        Some(stage) if catalogue::service_for_stage(stage) == Some(span.service_name.as_str()) => stage.to_string(),
        Some(stage) if stage == short => stage.to_string(),
        Some(stage) => format!("{short}/{stage}"),
        None => short.to_string(),
    };
    match span.attr(crate::otlp_proto::SERVICE_INSTANCE_KEY) {
        Some(copy) if copy.starts_with(base.as_str()) => copy.to_string(),
        Some(copy) => format!("{base}@{copy}"),
        None => base,
    }
}

fn bar(span: &StoredSpan, t0: u64, total: u64, width: usize) -> String {
    let pos = |t: u64| -> f64 { (t.saturating_sub(t0) as f64 / total as f64 * width as f64).clamp(0.0, width as f64) };
    let start = pos(span.start_unix_nanos).floor() as usize;
    let end = pos(span.end_unix_nanos).ceil() as usize;
    let mut cells = vec![' '; width];
    if end <= start + 1 && span.duration_nanos() * (width as u64) < total {
        // Shorter than one cell: a thin mark where it starts.
        cells[start.min(width - 1)] = '▏';
    } else {
        for cell in cells.iter_mut().take(end.min(width)).skip(start.min(width - 1)) {
            *cell = '█';
        }
    }
    cells.into_iter().collect()
}

/// The object a span is about, e.g. `Deployment default/web` or `deployments default/web`.
fn object_of(span: &StoredSpan) -> Option<String> {
    let name = span.attr(attrs::K8S_NAME)?;
    let what = span.attr(attrs::K8S_KIND).or_else(|| span.attr(attrs::K8S_RESOURCE));
    let target = match span.attr(attrs::K8S_NAMESPACE) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    };
    Some(match what {
        Some(what) => format!("{what} {target}"),
        None => target,
    })
}

/// The key facts of a span, for the waterfall.
fn details(span: &StoredSpan) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(object) = object_of(span) {
        match span.attr(attrs::K8S_VERB) {
            Some(verb) => parts.push(format!("{verb} {object}")),
            None => parts.push(object),
        }
    }
    let mut shown_values: Vec<&str> = Vec::new();
    for (key, label) in DETAILS {
        let Some(value) = span.attr(key) else { continue };
        if label.starts_with('→') && shown_values.contains(&value) {
            continue; // compare.result and k8s.outcome often say the same
        }
        shown_values.push(value);
        let value = if *key == attrs::RUNTIME_CONTAINER_ID {
            value.chars().take(12).collect::<String>()
        } else {
            value.to_string()
        };
        parts.push(format!("{label}{value}"));
    }
    if span.is_error() {
        parts.push(if span.status_message.is_empty() {
            "ERROR".to_string()
        } else {
            format!("ERROR: {}", span.status_message)
        });
    }
    parts.join(" · ")
}

/// `0.42 ms`, `12.3 ms`, `1.52 s`.
pub fn format_duration(nanos: u64) -> String {
    let ms = nanos as f64 / 1_000_000.0;
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn pad_or_cut(text: &str, width: usize) -> String {
    let cut = cut(text, width);
    let len = cut.chars().count();
    format!("{cut}{}", " ".repeat(width.saturating_sub(len)))
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One sentence about one step, for `kulisse apply --follow`: the stage, padded to a column,
/// then what happened, e.g.
/// `apiserver  compared Deployment default/web with the store: created`.
///
/// Uses [`catalogue::NARRATIONS`]; `None` for spans that are not a meaningful step on their own
/// (and for rows whose attributes are missing). A failed span is always narrated.
pub fn narrate(span: &StoredSpan) -> Option<String> {
    let stage = span
        .stage
        .clone()
        .unwrap_or_else(|| span.name.split('.').next().unwrap_or("").to_string());
    let sentence = catalogue::narration_for(&span.name).and_then(|row| fill_template(row.template, span));
    let sentence = match (sentence, span.is_error()) {
        (Some(s), false) => s,
        (Some(s), true) => format!("{s} (failed{})", error_suffix(span)),
        (None, true) => format!("{} failed{}", span.name, error_suffix(span)),
        (None, false) => return None,
    };
    Some(format!("{stage:<10} {sentence}"))
}

fn error_suffix(span: &StoredSpan) -> String {
    if span.status_message.is_empty() {
        String::new()
    } else {
        format!(": {}", span.status_message)
    }
}

/// The object reference for sentences: kubectl's `kind.group/name` (`deployment.apps/web`),
/// plus the namespace when it is not `default`.
fn object_for_sentence(span: &StoredSpan) -> Option<String> {
    let name = span.attr(attrs::K8S_NAME)?;
    let what = match span.attr(attrs::K8S_KIND) {
        Some(kind) => {
            let lower = kind.to_ascii_lowercase();
            match group_of_kind(kind) {
                Some(group) => format!("{lower}.{group}"),
                None => lower,
            }
        }
        None => span.attr(attrs::K8S_RESOURCE).unwrap_or("object").to_string(),
    };
    Some(match span.attr(attrs::K8S_NAMESPACE) {
        Some(ns) if ns != "default" => format!("{what}/{name} in namespace {ns}"),
        _ => format!("{what}/{name}"),
    })
}

/// The API group of the built-in kinds kulisse serves that are not in the core group.
fn group_of_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ControllerRevision" => Some("apps"),
        "Job" | "CronJob" => Some("batch"),
        "EndpointSlice" => Some("discovery.k8s.io"),
        "Lease" => Some("coordination.k8s.io"),
        "Ingress" | "NetworkPolicy" => Some("networking.k8s.io"),
        "Event" => None,
        _ => None,
    }
}

/// Fills `{key}` placeholders from the span's attributes (`{object}`: see
/// [`object_for_sentence`]). `[ ... ]` parts are dropped when a placeholder inside is missing;
/// a missing placeholder outside them makes the whole template unusable (`None`).
fn fill_template(template: &str, span: &StoredSpan) -> Option<String> {
    let lookup = |key: &str| -> Option<String> {
        if key == "object" {
            object_for_sentence(span)
        } else {
            span.attr(key).map(str::to_string)
        }
    };
    let mut out = String::new();
    let mut optional: Option<(String, bool)> = None; // (text so far, all present)
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '[' if optional.is_none() => optional = Some((String::new(), true)),
            ']' if optional.is_some() => {
                if let Some((text, complete)) = optional.take()
                    && complete
                {
                    out.push_str(&text);
                }
            }
            '{' => {
                let mut key = String::new();
                for k in chars.by_ref() {
                    if k == '}' {
                        break;
                    }
                    key.push(k);
                }
                let value = lookup(&key);
                match (&mut optional, value) {
                    (Some((text, _)), Some(v)) => text.push_str(&v),
                    (Some((_, complete)), None) => *complete = false,
                    (None, Some(v)) => out.push_str(&v),
                    (None, None) => return None,
                }
            }
            other => match &mut optional {
                Some((text, _)) => text.push(other),
                None => out.push(other),
            },
        }
    }
    if let Some((text, true)) = optional {
        out.push_str(&text);
    }
    Some(out)
}

/// The colour of each stage's bars in [`render_svg`] (one hue per component, as Jaeger gives
/// each service its own colour).
const STAGE_COLOURS: &[(&str, &str)] = &[
    ("cli", "#4e79a7"),
    ("apiserver", "#f28e2b"),
    ("store", "#9c755f"),
    ("controller", "#59a14f"),
    ("scheduler", "#b07aa1"),
    ("kubelet", "#e15759"),
    ("runtime", "#ff9da7"),
    ("proxy", "#76b7b2"),
];

fn stage_colour(span: &StoredSpan) -> &'static str {
    let stage = span
        .stage
        .as_deref()
        .unwrap_or_else(|| span.name.split('.').next().unwrap_or(""));
    STAGE_COLOURS
        .iter()
        .find(|(s, _)| *s == stage)
        .map_or("#8c8c8c", |(_, c)| *c)
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// Draws `spans` as an SVG waterfall `width` pixels wide: the same rows as
/// [`render_waterfall`] (nested under their parents, sorted by start time), with one bar per
/// span on a shared time axis, coloured by the component (stage) that did the step, its
/// duration next to it, and the details as a tooltip (`<title>`). A legend at the bottom
/// names the colours. The picture is self-contained (no scripts, no external fonts), so the
/// book can show it as an image.
pub fn render_svg(spans: &[StoredSpan], width: usize) -> String {
    let width = width.max(400);
    if spans.is_empty() {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"30\" font-family=\"monospace\" font-size=\"12\"><text x=\"8\" y=\"20\">no spans to show</text></svg>\n"
        );
    }
    let rows = tree_rows(spans);
    let labels: Vec<String> = rows.iter().map(|row| row_label(row)).collect();
    let frame = SvgFrame::new(spans, &labels, width);
    let legend_y = SVG_TOP + rows.len() * SVG_ROW + 14;
    let height = legend_y + 30;

    let title = headline(&trace_ids_of(&rows), spans, frame.total);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<title>{}</title>", xml_escape(&title));
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>");
    let _ = writeln!(
        out,
        "<text x=\"8\" y=\"18\" font-weight=\"bold\">{}</text>",
        xml_escape(&cut(&title, (width as f64 / SVG_CHAR_W) as usize))
    );
    svg_time_axis(&mut out, &frame);
    for (i, (row, label)) in rows.iter().zip(&labels).enumerate() {
        svg_span_row(&mut out, &frame, i, row.span, label);
    }
    svg_legend(&mut out, &rows, legend_y);
    out.push_str("</svg>\n");
    out
}

/// Height of one row of [`render_svg`], in pixels.
const SVG_ROW: usize = 18;
/// Where the first row starts (below the title and the time axis' labels).
const SVG_TOP: usize = 46;
/// Width of one character of the 12 px monospace font.
const SVG_CHAR_W: f64 = 7.2;

/// The geometry of one [`render_svg`] picture: the label column, then the bars' time axis,
/// then the durations.
struct SvgFrame {
    width: usize,
    rows: usize,
    /// The earliest start: the axis' zero.
    t0: u64,
    /// From the earliest start to the latest end, at least 1 ns.
    total: u64,
    label_w: usize,
    bar_x: f64,
    bar_w: f64,
}

impl SvgFrame {
    fn new(spans: &[StoredSpan], labels: &[String], width: usize) -> SvgFrame {
        let t0 = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
        let t1 = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(t0).max(t0);
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(8);
        let label_w = ((longest as f64 * SVG_CHAR_W) as usize + 16).min(width * 45 / 100);
        let dur_w = 80;
        SvgFrame {
            width,
            rows: labels.len(),
            t0,
            total: (t1 - t0).max(1),
            label_w,
            bar_x: label_w as f64,
            bar_w: (width.saturating_sub(label_w + dur_w + 8)).max(100) as f64,
        }
    }
}

/// The time axis: five ticks, with grid lines down the whole picture.
fn svg_time_axis(out: &mut String, frame: &SvgFrame) {
    for i in 0..=4 {
        let x = frame.bar_x + frame.bar_w * i as f64 / 4.0;
        let label = if i == 0 {
            "0 ms".to_string()
        } else {
            format_duration(frame.total * i / 4)
        };
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#dddddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"#555555\">{}</text>",
            SVG_TOP - 8,
            SVG_TOP + frame.rows * SVG_ROW,
            SVG_TOP - 12,
            xml_escape(&label)
        );
    }
}

/// Row `i`: the tree label, the span's bar and its duration, with the details as a tooltip.
fn svg_span_row(out: &mut String, frame: &SvgFrame, i: usize, span: &StoredSpan, label: &str) {
    let y = SVG_TOP + i * SVG_ROW;
    if i % 2 == 1 {
        let _ = writeln!(
            out,
            "<rect x=\"0\" y=\"{y}\" width=\"{}\" height=\"{SVG_ROW}\" fill=\"#f6f6f6\"/>",
            frame.width
        );
    }
    let start = span.start_unix_nanos.saturating_sub(frame.t0) as f64 / frame.total as f64 * frame.bar_w;
    let len = (span.duration_nanos() as f64 / frame.total as f64 * frame.bar_w).max(1.5);
    let colour = stage_colour(span);
    let tooltip = {
        let d = details(span);
        format!(
            "{} ({}) · {}{}",
            span.name,
            who(span),
            format_duration(span.duration_nanos()),
            if d.is_empty() {
                String::new()
            } else {
                format!(" · {d}")
            }
        )
    };
    let _ = writeln!(
        out,
        "<g><title>{}</title><text x=\"6\" y=\"{}\" fill=\"{}\" xml:space=\"preserve\" style=\"white-space:pre\">{}</text><rect x=\"{:.1}\" y=\"{}\" width=\"{len:.1}\" height=\"{}\" rx=\"2\" fill=\"{colour}\"{}/><text x=\"{:.1}\" y=\"{}\" fill=\"#333333\">{}</text></g>",
        xml_escape(&tooltip),
        y + 13,
        if span.is_error() { "#c00000" } else { "#222222" },
        // SVG collapses runs of spaces; the tree's indentation needs no-break spaces.
        xml_escape(&cut(label, ((frame.label_w - 10) as f64 / SVG_CHAR_W) as usize)).replace(' ', "\u{a0}"),
        frame.bar_x + start,
        y + 3,
        SVG_ROW - 6,
        if span.is_error() {
            " stroke=\"#c00000\" stroke-width=\"2\""
        } else {
            ""
        },
        frame.bar_x + frame.bar_w + 6.0,
        y + 13,
        xml_escape(&format_duration(span.duration_nanos()))
    );
}

/// Legend: the stages that appear, in the order a request flows.
fn svg_legend(out: &mut String, rows: &[Row<'_>], legend_y: usize) {
    let mut x = 8.0;
    for (stage, colour) in STAGE_COLOURS {
        if !rows.iter().any(|r| r.span.stage.as_deref() == Some(*stage)) {
            continue;
        }
        let _ = writeln!(
            out,
            "<rect x=\"{x:.1}\" y=\"{}\" width=\"12\" height=\"12\" rx=\"2\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{}\">{stage}</text>",
            legend_y,
            x + 16.0,
            legend_y + 10
        );
        x += 16.0 + stage.len() as f64 * SVG_CHAR_W + 18.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_store::SpanStatusCode;
    use crate::span_store::tests::span;

    fn synthetic_trace() -> Vec<StoredSpan> {
        let mut apply = span(1, 1, None, "cli.apply", 0, 100);
        apply.attributes.insert("cli.files".into(), "web.yaml".into());
        let mut request = span(1, 2, Some(1), "cli.request", 2, 40);
        request.attributes.insert("k8s.kind".into(), "Deployment".into());
        request.attributes.insert("k8s.namespace".into(), "default".into());
        request.attributes.insert("k8s.name".into(), "web".into());
        request.attributes.insert("k8s.outcome".into(), "created".into());
        let mut server = span(1, 3, Some(2), "apiserver.request", 5, 35);
        server.attributes.insert("k8s.verb".into(), "patch".into());
        server.attributes.insert("k8s.resource".into(), "deployments".into());
        server.attributes.insert("k8s.namespace".into(), "default".into());
        server.attributes.insert("k8s.name".into(), "web".into());
        server
            .attributes
            .insert("http.response.status_code".into(), "201".into());
        let mut compare = span(1, 4, Some(3), "apiserver.compare", 10, 30);
        compare.attributes.insert("k8s.kind".into(), "Deployment".into());
        compare.attributes.insert("k8s.name".into(), "web".into());
        compare.attributes.insert("compare.result".into(), "created".into());
        let mut txn = span(1, 5, Some(4), "store.txn", 20, 20);
        txn.attributes
            .insert("store.key".into(), "/registry/deployments/default/web".into());
        txn.attributes.insert("store.revision".into(), "12".into());
        let mut reconcile = span(1, 6, Some(5), "controller.reconcile", 60, 90);
        reconcile
            .attributes
            .insert("controller.name".into(), "deployment".into());
        reconcile
            .attributes
            .insert("controller.key".into(), "default/web".into());
        reconcile
            .attributes
            .insert("controller.reason".into(), "object added".into());
        reconcile.status = SpanStatusCode::Error;
        reconcile.status_message = "quota exceeded".into();
        let late = span(1, 7, Some(42), "scheduler.schedule", 95, 99);
        vec![txn, apply, server, request, compare, reconcile, late]
    }

    #[test]
    fn who_names_the_copy_of_a_component_that_did_a_step() {
        let mut bind = span(1, 1, None, "scheduler.bind", 0, 10);
        assert_eq!(who(&bind), "scheduler");
        bind.attributes
            .insert(crate::otlp_proto::SERVICE_INSTANCE_KEY.into(), "scheduler-2".into());
        assert_eq!(who(&bind), "scheduler-2");
        let mut txn = span(1, 2, Some(1), "store.txn", 1, 2);
        txn.service_name = "kulisse-apiserver".into();
        txn.attributes
            .insert(crate::otlp_proto::SERVICE_INSTANCE_KEY.into(), "apiserver-3".into());
        assert_eq!(who(&txn), "store@apiserver-3");
    }

    #[test]
    fn waterfall_draws_a_tree_on_a_shared_time_axis() {
        let narrow = render_waterfall(&synthetic_trace(), 120);
        println!("{narrow}");
        for line in narrow.lines() {
            assert!(line.chars().count() <= 120, "line longer than the width: {line}");
        }
        let text = render_waterfall(&synthetic_trace(), 170);
        println!("{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(&format!("trace {:032x} · 7 spans · 100.0 ms", 1)),
            "{text}"
        );
        assert!(lines[0].contains("kulisse-cli, kulisse-apiserver, kulisse-controller-manager"));
        assert!(lines[1].trim_start().starts_with("0 ms") && lines[1].ends_with("100.0 ms"));
        let names: Vec<&str> = lines[2..].iter().filter_map(|l| l.split_whitespace().next()).collect();
        assert_eq!(names[0], "cli.apply");
        assert!(lines[3].starts_with("└─ cli.request "), "{}", lines[3]);
        assert!(lines[4].starts_with("   └─ apiserver.request "), "{}", lines[4]);
        assert!(lines[5].starts_with("      └─ apiserver.compare "), "{}", lines[5]);
        assert!(lines[6].starts_with("         └─ store.txn "), "{}", lines[6]);
        assert!(
            lines[7].starts_with("            └─ controller.reconcile ✗ "),
            "{}",
            lines[7]
        );
        assert!(
            lines[8].starts_with("… scheduler.schedule "),
            "an orphan is drawn at the top: {}",
            lines[8]
        );
        assert!(text.ends_with("(not received yet, or from another trace)\n"));

        // The bars share one axis: the root fills it, later spans start further right.
        let bar_of = |line: &str| -> String {
            let start = line.find('|').expect("bar start");
            let end = line[start + 1..].find('|').expect("bar end") + start + 1;
            line[start + 1..end].to_string()
        };
        let root = bar_of(lines[2]);
        assert!(root.chars().all(|c| c == '█'), "{root:?}");
        let width = root.chars().count();
        for line in &lines[2..9] {
            assert_eq!(bar_of(line).chars().count(), width, "{line}");
        }
        let first_block = |bar: &str| bar.chars().position(|c| c != ' ');
        assert!(first_block(&bar_of(lines[7])) > first_block(&bar_of(lines[3])));
        assert!(bar_of(lines[6]).contains('▏'), "a zero-length span is a thin mark");

        // Key attributes a learner cares about.
        assert!(lines[3].contains("Deployment default/web · → created"), "{}", lines[3]);
        assert!(
            lines[4].contains("patch deployments default/web · HTTP 201"),
            "{}",
            lines[4]
        );
        assert!(lines[6].contains("rev 12"), "{}", lines[6]);
        assert!(lines[7].contains("because object added"), "{}", lines[7]);
        assert!(lines[7].contains("ERROR: quota exceeded"), "{}", lines[7]);
        assert!(lines[3].contains("  38.0 ms  "), "{}", lines[3]);
    }

    #[test]
    fn waterfall_handles_empty_single_and_linked_input() {
        assert!(render_waterfall(&[], 80).starts_with("no spans"));
        let one = render_waterfall(&[span(1, 1, None, "cli.apply", 0, 0)], 10);
        assert_eq!(one.lines().count(), 3, "{one}");
        let mut linked = span(2, 9, None, "controller.reconcile", 50, 60);
        linked.links.push(crate::span_store::StoredLink {
            trace_id: format!("{:032x}", 1),
            span_id: format!("{:016x}", 1),
            attributes: Default::default(),
        });
        let text = render_waterfall(&[span(1, 1, None, "cli.apply", 0, 20), linked], 100);
        assert!(text.starts_with("2 linked traces"), "{text}");
        assert!(text.contains(&format!("trace {:032x}\n", 2)), "{text}");
    }

    #[test]
    fn narration_is_table_driven_and_skips_incomplete_rows() {
        let trace = synthetic_trace();
        let by_name = |name: &str| trace.iter().find(|s| s.name == name).expect("span");
        assert_eq!(
            narrate(by_name("apiserver.compare")).as_deref(),
            Some("apiserver  compared deployment.apps/web with the store: created")
        );
        assert_eq!(
            narrate(by_name("store.txn")).as_deref(),
            Some("store      wrote /registry/deployments/default/web at revision 12")
        );
        assert_eq!(
            narrate(by_name("controller.reconcile")).as_deref(),
            Some(
                "controller deployment controller reconciled default/web because object added \
                 (failed: quota exceeded)"
            )
        );
        // No narration row for the root, and the scheduler span lacks its attributes.
        assert_eq!(narrate(by_name("cli.apply")), None);
        assert_eq!(narrate(by_name("scheduler.schedule")), None);

        let mut schedule = span(3, 1, None, "scheduler.schedule_pod", 0, 1);
        schedule
            .attributes
            .insert("scheduler.pod".into(), "default/web-7d4b9-x2k4p".into());
        schedule
            .attributes
            .insert("scheduler.result".into(), "scheduled".into());
        schedule.attributes.insert("scheduler.node".into(), "node-2".into());
        schedule
            .attributes
            .insert("scheduler.nodes.feasible".into(), "3".into());
        schedule.attributes.insert("scheduler.nodes.total".into(), "3".into());
        assert_eq!(
            narrate(&schedule).as_deref(),
            Some("scheduler  scheduled default/web-7d4b9-x2k4p: scheduled on node-2 (3 of 3 nodes feasible)")
        );
    }

    #[test]
    fn templates_fill_optional_parts() {
        let mut s = span(1, 1, None, "x.y", 0, 1);
        s.attributes.insert("a".into(), "A".into());
        assert_eq!(fill_template("{a}[ and {b}] end", &s).as_deref(), Some("A end"));
        s.attributes.insert("b".into(), "B".into());
        assert_eq!(fill_template("{a}[ and {b}] end", &s).as_deref(), Some("A and B end"));
        assert_eq!(fill_template("{missing}", &s), None);
        assert_eq!(fill_template("unclosed [{a}", &s).as_deref(), Some("unclosed A"));
        assert_eq!(format_duration(420_000), "0.42 ms");
        assert_eq!(format_duration(1_520_000_000), "1.52 s");
    }

    #[test]
    fn svg_waterfall_has_a_bar_per_span_and_escapes_text() {
        let mut spans = synthetic_trace();
        spans[0].attributes.insert("k8s.name".into(), "a<b>&\"c\"".into());
        let svg = render_svg(&spans, 900);
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\""),
            "{svg}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        // One group (label + bar + duration) per span.
        assert_eq!(svg.matches("<g><title>").count(), spans.len());
        for name in ["cli.apply", "apiserver.compare", "store.txn", "controller.reconcile"] {
            assert!(svg.contains(name), "{name} missing");
        }
        // Raw text never reaches the XML unescaped.
        assert!(svg.contains("a&lt;b&gt;&amp;&quot;c&quot;"));
        assert!(!svg.contains("a<b>"));
        // The failed span is outlined in red, and every stage that occurs is in the legend.
        assert!(svg.contains("stroke=\"#c00000\""));
        assert!(svg.contains(">controller</text>"));
        // The root spans the whole axis: its bar starts at the axis origin.
        let empty = render_svg(&[], 10);
        assert!(empty.contains("no spans to show") && empty.contains("width=\"400\""));
    }
}
