//! The catalogue of every span kulisse emits.
//!
//! A trace is only useful if you know what its spans mean. This module lists each span name
//! kulisse emits, which component ("stage") emits it and what it measures, so that a learner
//! looking at a trace in Jaeger or Tempo can look up every step. The same list is the
//! contract for kulisse's code: a new span gets an entry here.
//!
//! Every span carries the attribute [`STAGE_KEY`] (`kulisse.stage`) with one of the
//! [`STAGES`], e.g. with `tracing`:
//!
//! ```
//! let span = tracing::info_span!("apiserver.validate", kulisse.stage = "apiserver");
//! let _entered = span.enter();
//! ```
//!
//! The stages mirror the components of a Kubernetes cluster: the client (`kubectl`, here
//! `cli`), the kube-apiserver (`apiserver`) and its storage, etcd (`store`), the
//! kube-controller-manager's controllers (`controller`), the kube-scheduler (`scheduler`), the
//! node agent (`kubelet`), the container runtime behind the CRI (`runtime`) and kube-proxy,
//! which routes Service traffic (`proxy`).

/// The span attribute that names the kulisse component a span belongs to.
pub const STAGE_KEY: &str = "kulisse.stage";

/// The allowed values of [`STAGE_KEY`], in the order a request flows through kulisse.
pub const STAGES: &[&str] = &[
    "cli",
    "apiserver",
    "store",
    "controller",
    "scheduler",
    "kubelet",
    "runtime",
    "proxy",
];

/// One entry of the catalogue: a span name kulisse emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanInfo {
    /// The span name, `<stage>.<step>` by convention, e.g. `apiserver.validate`.
    pub name: &'static str,
    /// The value of the span's `kulisse.stage` attribute: one of [`STAGES`].
    pub stage: &'static str,
    /// What the span measures, in one sentence for a learner.
    pub what: &'static str,
}

/// Every span name kulisse emits.
pub const SPANS: &[SpanInfo] = &[
    SpanInfo {
        name: "cli.apply",
        stage: "cli",
        what: "One `kulisse apply` command, from reading the manifests to the last answer of \
               the API server; the root span of the trace.",
    },
    SpanInfo {
        name: "cli.request",
        stage: "cli",
        what: "One HTTP request the CLI sends to the API server, including waiting for the \
               response; it carries the `traceparent` header.",
    },
    SpanInfo {
        name: "apiserver.request",
        stage: "apiserver",
        what: "One HTTP request received by the API server, from the first byte to the \
               response; the child of the caller's span named in `traceparent`.",
    },
    SpanInfo {
        name: "apiserver.authenticate",
        stage: "apiserver",
        what: "Finding out who sent the request (authentication), as the kube-apiserver does \
               before anything else.",
    },
    SpanInfo {
        name: "apiserver.decode",
        stage: "apiserver",
        what: "Parsing the request body (JSON or YAML) into an object.",
    },
    SpanInfo {
        name: "apiserver.validate",
        stage: "apiserver",
        what: "Defaulting (filling in omitted fields) and validation of the object, like the \
               kube-apiserver's defaulting and validation stages.",
    },
    SpanInfo {
        name: "apiserver.compare",
        stage: "apiserver",
        what: "Reading the stored object and comparing it with the new one, to decide \
               between create, update and no change.",
    },
    SpanInfo {
        name: "store.get",
        stage: "store",
        what: "Reading one key from the store (an etcd Range on a single key).",
    },
    SpanInfo {
        name: "store.range",
        stage: "store",
        what: "Reading the keys under a prefix from the store (an etcd Range on a key range), \
               e.g. for a list.",
    },
    SpanInfo {
        name: "store.txn",
        stage: "store",
        what: "An atomic compare-and-swap transaction on the store (an etcd Txn), e.g. \
               'create if absent' or 'update if unchanged since revision N'.",
    },
    SpanInfo {
        name: "apiserver.respond",
        stage: "apiserver",
        what: "Encoding and sending the response (the stored object or a Status error).",
    },
];

/// The catalogue entry for a span name, if kulisse emits a span by that name.
pub fn span_info(name: &str) -> Option<&'static SpanInfo> {
    SPANS.iter().find(|info| info.name == name)
}

/// Whether `stage` is one of the [`STAGES`].
pub fn is_stage(stage: &str) -> bool {
    STAGES.contains(&stage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn span_names_are_unique() {
        let mut seen = BTreeSet::new();
        for info in SPANS {
            assert!(seen.insert(info.name), "span name {:?} is listed twice", info.name);
        }
    }

    #[test]
    fn stages_are_unique_and_every_span_has_a_valid_stage() {
        let unique: BTreeSet<_> = STAGES.iter().collect();
        assert_eq!(unique.len(), STAGES.len(), "STAGES has duplicates");
        for info in SPANS {
            assert!(
                is_stage(info.stage),
                "span {:?} has stage {:?}, expected one of {STAGES:?}",
                info.name,
                info.stage
            );
        }
    }

    #[test]
    fn span_names_follow_the_stage_dot_step_convention() {
        for info in SPANS {
            let (prefix, step) = info.name.split_once('.').unwrap_or(("", ""));
            assert!(
                is_stage(prefix) && !step.is_empty(),
                "span name {:?} should look like <stage>.<step>",
                info.name
            );
            assert_eq!(prefix, info.stage, "span {:?} names a different stage", info.name);
            assert!(!info.what.trim().is_empty(), "span {:?} is not described", info.name);
        }
    }

    #[test]
    fn span_info_finds_entries() {
        assert_eq!(span_info("cli.apply").map(|i| i.stage), Some("cli"));
        assert_eq!(span_info("store.txn").map(|i| i.stage), Some("store"));
        assert!(span_info("no.such.span").is_none());
    }
}
