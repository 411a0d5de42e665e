//! `kulisse annotate TYPE NAME KEY=VAL... KEY-...` (mirrors `kubectl annotate`).
//!
//! Annotations are the other string map of `metadata`: no selector looks at them, so they
//! carry notes for people and tools (`kubernetes.io/change-cause`, the last applied
//! configuration of client-side apply). The work is the same as `label`'s, on
//! `metadata.annotations` ([`super::label::run_map`]).

use std::process::ExitCode;

use super::label::{LabelArgs, MapKind, run_map};
use crate::GlobalArgs;

/// `annotate` takes exactly `label`'s arguments.
pub type AnnotateArgs = LabelArgs;

const ANNOTATIONS: MapKind = MapKind {
    field: "annotations",
    noun: "annotation",
    done: "annotated",
};

pub async fn run(global: &GlobalArgs, args: AnnotateArgs) -> anyhow::Result<ExitCode> {
    run_map(global, ANNOTATIONS, &args).await
}
