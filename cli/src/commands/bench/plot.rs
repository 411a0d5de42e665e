//! `kulisse bench --plot DIR` (and `--from FILE.tsv`): the bench's figures as SVG bar charts,
//! drawn from its own tab-separated output, so a book's pictures come from a run and not
//! from a drawing program.
//!
//! Four charts, each a file in DIR: `bench-cluster-pods.svg` (pods/s per cluster size, with
//! clusterloader2's 100 pods/s gate), `bench-cluster-rss.svg` (peak memory per size, with
//! the 2 GiB target), `bench-writes.svg` (creates/s, the embedded store beside etcd from the
//! same run) and `bench-latency.svg` (p50 and p99 of watch delivery and pod startup). A
//! chart whose figures the run does not have is left out.
//!
//! The bars are a few SVG rectangles written by hand, as `kulisse trace --svg`'s waterfall
//! is: a plotting crate would be a large dependency for four bar charts.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// One bar: its label, its value and how the value is printed.
struct Bar {
    label: String,
    value: f64,
    shown: String,
}

/// A chart: a title, bars, and an optional reference line (value, label).
struct Chart {
    file: &'static str,
    title: &'static str,
    bars: Vec<Bar>,
    line: Option<(f64, &'static str)>,
}

/// The figures of a `--out` file: (case, size, figure) → value.
fn parse(tsv: &str) -> Vec<(String, String, String, f64)> {
    tsv.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (case, size, name, value) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some((case.into(), size.into(), name.into(), value.parse().ok()?))
        })
        .collect()
}

/// `5000x10000` as `5,000 nodes, 10,000 pods`.
fn cluster_label(size: &str) -> String {
    let (n, r) = size.split_once('x').unwrap_or((size, ""));
    format!("{} nodes, {} pods", thousands(n), thousands(r))
}

fn thousands(digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The bars of every figure named `name` in `case`, labelled by `label`.
fn bars(
    figures: &[(String, String, String, f64)],
    case: &str,
    name: &str,
    label: impl Fn(&str) -> String,
    shown: impl Fn(f64) -> String,
) -> Vec<Bar> {
    figures
        .iter()
        .filter(|(c, _, n, _)| c == case && n == name)
        .map(|(_, size, _, v)| Bar {
            label: label(size),
            value: *v,
            shown: shown(*v),
        })
        .collect()
}

fn charts(figures: &[(String, String, String, f64)]) -> Vec<Chart> {
    let mut writes = Vec::new();
    for store in ["embedded", "etcd"] {
        writes.extend(bars(
            figures,
            "writes",
            &format!("creates/s ({store})"),
            |size| format!("{store}, {}", size.replace("clients", " client(s)")),
            |v| format!("{v:.0}/s"),
        ));
    }
    let mut latency = Vec::new();
    for (case, what) in [("watch", "create -> watch"), ("startup", "create -> Running")] {
        for q in ["p50", "p99"] {
            latency.extend(bars(
                figures,
                case,
                &format!("{what} {q} ms"),
                |size| format!("{case} {size}, {q}"),
                |v| format!("{v:.1} ms"),
            ));
        }
    }
    vec![
        Chart {
            file: "bench-cluster-pods.svg",
            title: "Whole cluster: pods available per second",
            bars: bars(figures, "cluster", "pods/s", cluster_label, |v| {
                format!("{v:.0} pods/s")
            }),
            line: Some((100.0, "clusterloader2: 100 pods/s")),
        },
        Chart {
            file: "bench-cluster-rss.svg",
            title: "Whole cluster: peak memory of the one process (MiB)",
            bars: bars(figures, "cluster", "peak RSS", cluster_label, |v| {
                format!("{:.0} MiB", v / 1048576.0)
            })
            .into_iter()
            .map(|b| Bar {
                value: b.value / 1048576.0,
                ..b
            })
            .collect(),
            line: Some((2048.0, "target: 2 GiB")),
        },
        Chart {
            file: "bench-writes.svg",
            title: "Durable ConfigMap creates per second",
            bars: writes,
            line: None,
        },
        Chart {
            file: "bench-latency.svg",
            title: "Latency: create to watch event, create to pod Running (ms)",
            bars: latency,
            line: None,
        },
    ]
}

/// One chart as SVG: a bar per row, its value at its end, the reference line dashed.
fn svg(chart: &Chart) -> String {
    const LABEL_W: f64 = 230.0;
    const BAR_MAX: f64 = 420.0;
    const ROW: f64 = 26.0;
    let top = 40.0;
    let max = chart
        .bars
        .iter()
        .map(|b| b.value)
        .chain(chart.line.map(|(v, _)| v))
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let height = top + ROW * chart.bars.len() as f64 + 40.0;
    let width = LABEL_W + BAR_MAX + 130.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"13\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"10\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        escape(chart.title)
    );
    for (i, b) in chart.bars.iter().enumerate() {
        let y = top + ROW * i as f64;
        let w = (b.value / max * BAR_MAX).max(1.0);
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LABEL_W}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#4878a8\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LABEL_W - 8.0,
            y + 16.0,
            escape(&b.label),
            y + 4.0,
            ROW - 8.0,
            LABEL_W + w + 6.0,
            y + 16.0,
            escape(&b.shown)
        );
    }
    if let Some((v, label)) = chart.line {
        let x = LABEL_W + v / max * BAR_MAX;
        let bottom = top + ROW * chart.bars.len() as f64;
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#c03030\" stroke-dasharray=\"5,4\"/>\
             <text x=\"{x:.1}\" y=\"{}\" fill=\"#c03030\" text-anchor=\"middle\">{}</text>",
            top - 4.0,
            bottom + 18.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Write the charts of `tsv`'s figures into `dir`; the files written.
pub(super) fn write(tsv: &str, dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for chart in charts(&parse(tsv)).iter().filter(|c| !c.bars.is_empty()) {
        let path = dir.join(chart.file);
        std::fs::write(&path, svg(chart)).with_context(|| format!("writing {}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_come_from_the_figures_and_escape_their_text() {
        let tsv = "cluster\t50x2000\tpods/s\t198.2\ncluster\t500x10000\tpods/s\t109.8\n\
                   cluster\t50x2000\tpeak RSS\t385978368\nwatch\t1000x200\tcreate -> watch p99 ms\t468.8\n";
        let charts = charts(&parse(tsv));
        let pods = &charts[0];
        assert_eq!(pods.bars.len(), 2);
        assert_eq!(pods.bars[1].label, "500 nodes, 10,000 pods");
        let drawn = svg(pods);
        assert!(
            drawn.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{drawn}"
        );
        assert_eq!(drawn.matches("fill=\"#4878a8\"").count(), 2);
        assert!(drawn.contains("198 pods/s") && drawn.contains("clusterloader2: 100 pods/s"));
        assert_eq!(charts[3].bars[0].label, "watch 1000x200, p99");
        assert_eq!(escape("a<b&c>"), "a&lt;b&amp;c&gt;");
        assert_eq!(charts[1].bars[0].shown, "368 MiB");
        assert!(charts[2].bars.is_empty(), "no write figures in this run");
    }
}
