//! Focusing a trace: which spans a view shows (`kulisse trace --stage/--object/--depth/--no-events`).
//!
//! One `kulisse apply -f examples/web.yaml` makes a trace of about four hundred spans: every
//! component that reacted to the write added its steps. Trace viewers let you narrow such a
//! trace down (Jaeger's "span filter", Grafana Tempo's TraceQL `{ span.k8s.name =~ "web-.*" }`);
//! [`TraceFilter`] does the same for kulisse's views before they draw anything, so the
//! terminal waterfall, the SVG picture and the OTLP export all show the same selection:
//!
//! - **by stage** (`--stage scheduler,kubelet`): only spans whose `kulisse.stage` is one of
//!   the given components (see [`crate::catalogue`] for the stages);
//! - **by object** (`--object pod/web-*`): the spans about one Kubernetes object, named
//!   `kind/name` as kubectl names them (`pod`, `pods`, `po` and `Pod` are the same kind; the
//!   name may hold `*` and `?` wildcards). A span is *about* an object when its attributes
//!   name it (`k8s.kind`/`k8s.resource` and `k8s.name`, `scheduler.pod`, `kubelet.pod`,
//!   `controller.name` and `controller.key`, `proxy.service`). The view keeps such spans,
//!   the steps below them that name no other object (the store writes they caused, the
//!   runtime calls of a kubelet sync), and the spans above them, so you still see how the
//!   road got there;
//! - **by depth** (`--depth N`): only the first N levels of the call tree (the root is
//!   level 1), counted in the whole trace;
//! - **without event writes** (`--no-events`): Kubernetes Events (`Scheduled`, `Pulled`,
//!   `Started`, ...) are objects too, and each is an API request with its own store write;
//!   this hides those requests and everything below them.
//!
//! Filters combine: a span is shown when every given filter keeps it. A shown span hangs
//! under its nearest shown ancestor, so the tree stays a tree; a span whose ancestors are
//! all hidden is drawn at the top, marked `…` by the views as "more above".

use std::collections::{HashMap, HashSet};

use crate::catalogue::{self, attrs};
use crate::span_store::StoredSpan;

/// Which spans of a trace a view shows. The default shows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// Keep only spans of these stages (`kulisse.stage`); empty keeps every stage.
    pub stages: Vec<String>,
    /// Keep only the spans about this object (and their context).
    pub object: Option<ObjectPattern>,
    /// Keep only the first `depth` levels of the tree (the root is level 1).
    pub depth: Option<usize>,
    /// Hide the writes of Kubernetes Events and everything below them.
    pub no_events: bool,
}

/// `kind/name-glob`, as given to `--object` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPattern {
    /// The kind in canonical form (see [`canonical_kind`]).
    kind: String,
    /// The name, with `*` (any text) and `?` (one character) wildcards.
    name: String,
}

impl ObjectPattern {
    /// Parses `kind/name` (`pod/web-*`, `deployment/web`, `svc/web`).
    pub fn parse(text: &str) -> Result<ObjectPattern, String> {
        let (kind, name) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: name an object as KIND/NAME, for example pod/web-*"))?;
        if kind.trim().is_empty() || name.trim().is_empty() {
            return Err(format!(
                "`{text}`: both the kind and the name are needed, for example pod/web-*"
            ));
        }
        Ok(ObjectPattern {
            kind: canonical_kind(kind.trim()),
            name: name.trim().to_string(),
        })
    }

    fn matches(&self, kind: &str, name: &str) -> bool {
        canonical_kind(kind) == self.kind && glob_matches(&self.name, name)
    }
}

impl TraceFilter {
    /// Checks the stage names (a typo should not silently show an empty trace).
    pub fn new(
        stages: Vec<String>,
        object: Option<&str>,
        depth: Option<usize>,
        no_events: bool,
    ) -> Result<TraceFilter, String> {
        let stages: Vec<String> = stages
            .iter()
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = stages.iter().find(|s| !catalogue::is_stage(s)) {
            let known: Vec<&str> = catalogue::STAGE_SERVICES.iter().map(|(s, _)| *s).collect();
            return Err(format!("unknown stage `{bad}`; the stages are {}", known.join(", ")));
        }
        if depth == Some(0) {
            return Err("--depth counts levels from the root, which is level 1: give 1 or more".into());
        }
        let object = object.map(ObjectPattern::parse).transpose()?;
        Ok(TraceFilter {
            stages,
            object,
            depth,
            no_events,
        })
    }

    /// Whether this filter shows every span.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty() && self.object.is_none() && self.depth.is_none() && !self.no_events
    }

    /// The spans to show, in their original order, each re-parented under its nearest shown
    /// ancestor.
    pub fn apply(&self, spans: &[StoredSpan]) -> Vec<StoredSpan> {
        if self.is_empty() {
            return spans.to_vec();
        }
        let tree = Tree::new(spans);
        let keep: Vec<bool> = (0..spans.len())
            .map(|i| {
                let span = &spans[i];
                (self.stages.is_empty()
                    || span
                        .stage
                        .as_deref()
                        .is_some_and(|s| self.stages.iter().any(|x| x == s)))
                    && self
                        .depth
                        .is_none_or(|d| tree.known_depth(spans, i).is_some_and(|k| k < d))
                    && !(self.no_events && tree.ancestors_and_self(i).any(|a| is_event_write(&spans[a])))
            })
            .collect();
        let keep: Vec<bool> = match &self.object {
            None => keep,
            Some(pattern) => {
                let about = tree.about(spans, pattern);
                keep.iter().zip(about).map(|(k, a)| *k && a).collect()
            }
        };
        spans
            .iter()
            .enumerate()
            .filter(|(i, _)| keep[*i])
            .map(|(i, span)| {
                let mut span = span.clone();
                if let Some(parent) = tree.ancestors_and_self(i).skip(1).find(|a| keep[*a]) {
                    span.parent_span_id = Some(spans[parent].span_id.clone());
                }
                span
            })
            .collect()
    }
}

/// Parent links by index, within one trace (span ids are unique per trace).
struct Tree {
    parent: Vec<Option<usize>>,
}

impl Tree {
    fn new(spans: &[StoredSpan]) -> Tree {
        let index: HashMap<(&str, &str), usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.trace_id.as_str(), s.span_id.as_str()), i))
            .collect();
        let parent = spans
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parent_span_id
                    .as_deref()
                    .and_then(|p| index.get(&(s.trace_id.as_str(), p)).copied())
                    .filter(|p| *p != i)
            })
            .collect();
        Tree { parent }
    }

    /// `i`, its parent, its grandparent, ... (stops on a cycle in bad input).
    fn ancestors_and_self(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut seen = HashSet::new();
        std::iter::successors(Some(i), move |at| self.parent[*at]).take_while(move |at| seen.insert(*at))
    }

    fn depth(&self, i: usize) -> usize {
        self.ancestors_and_self(i).count() - 1
    }

    /// `i`'s depth when its chain reaches the trace's root; `None` while an ancestor has not
    /// arrived yet (a span whose parent is missing is not a root: its level is unknown, so
    /// `--depth` leaves it out rather than drawing it as if it were level 1).
    fn known_depth(&self, spans: &[StoredSpan], i: usize) -> Option<usize> {
        let top = self.ancestors_and_self(i).last()?;
        spans[top].is_root().then(|| self.depth(i))
    }

    /// For each span: whether it belongs to the view of `pattern`'s object (it names the
    /// object; or an ancestor does and nothing in between names another object; or a
    /// descendant does).
    fn about(&self, spans: &[StoredSpan], pattern: &ObjectPattern) -> Vec<bool> {
        let named: Vec<Option<bool>> = spans
            .iter()
            .map(|s| object_of(s).map(|(kind, name)| pattern.matches(&kind, &name)))
            .collect();
        let mut about = vec![false; spans.len()];
        for i in 0..spans.len() {
            if named[i] == Some(true) {
                for a in self.ancestors_and_self(i) {
                    about[a] = true;
                }
            } else if named[i].is_none() {
                // Below a span about the object, with no other object in between.
                about[i] |= self
                    .ancestors_and_self(i)
                    .skip(1)
                    .find_map(|a| named[a])
                    .unwrap_or(false);
            }
        }
        about
    }
}

/// The object a span is about, as (kind, name), from its attributes.
fn object_of(span: &StoredSpan) -> Option<(String, String)> {
    let get = |key: &str| span.attributes.get(key).filter(|v| !v.is_empty());
    let after_slash = |v: &String| v.rsplit('/').next().unwrap_or(v).to_string();
    if let Some(name) = get(attrs::K8S_NAME) {
        if let Some(kind) = get(attrs::K8S_KIND).or_else(|| get(attrs::K8S_RESOURCE)) {
            return Some((kind.clone(), name.clone()));
        }
    }
    if let Some(pod) = get(attrs::SCHEDULER_POD).or_else(|| get(attrs::KUBELET_POD)) {
        return Some(("pod".into(), after_slash(pod)));
    }
    if let (Some(controller), Some(key)) = (get(attrs::CONTROLLER_NAME), get(attrs::CONTROLLER_KEY)) {
        return Some((controller.clone(), after_slash(key)));
    }
    get(attrs::PROXY_SERVICE).map(|service| ("service".into(), after_slash(service)))
}

/// Whether a span is the API request (or store write) of a Kubernetes Event.
fn is_event_write(span: &StoredSpan) -> bool {
    span.attributes.get(attrs::K8S_RESOURCE).is_some_and(|r| r == "events")
        || span
            .attributes
            .get(attrs::STORE_KEY)
            .is_some_and(|k| k.starts_with("/registry/events/"))
}

/// A kind as one spelling: lower case, singular, short names expanded (`po` → `pod`,
/// `deploy` → `deployment`, `svc` → `service`), so that kubectl's spellings all match.
pub fn canonical_kind(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    let lower = lower.split('.').next().unwrap_or(&lower).to_string(); // deployments.apps
    const SHORT: &[(&str, &str)] = &[
        ("po", "pod"),
        ("deploy", "deployment"),
        ("rs", "replicaset"),
        ("svc", "service"),
        ("ep", "endpoints"),
        ("endpoint", "endpoints"),
        ("ns", "namespace"),
        ("no", "node"),
        ("cm", "configmap"),
        ("ev", "event"),
        ("endpointslices", "endpointslice"),
    ];
    if let Some((_, long)) = SHORT.iter().find(|(short, _)| *short == lower) {
        return long.to_string();
    }
    if lower == "endpoints" {
        return lower;
    }
    lower.strip_suffix('s').map(str::to_string).unwrap_or(lower)
}

/// `*` matches any text (also none), `?` one character; everything else itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_store::tests::span;

    fn with(mut s: StoredSpan, attrs: &[(&str, &str)]) -> StoredSpan {
        for (k, v) in attrs {
            s.attributes.insert(k.to_string(), v.to_string());
        }
        s
    }

    /// cli.apply → apiserver.request (deployment web) → store.txn → controller.reconcile
    /// (replicaset web-1) → controller.create_pod (Pod web-1-a) → scheduler.schedule_pod
    /// (default/web-1-a) → kubelet.sync_pod → runtime.start_container; and an event write
    /// under the scheduler.
    fn trace() -> Vec<StoredSpan> {
        vec![
            span(1, 1, None, "cli.apply", 0, 100),
            with(
                span(1, 2, Some(1), "apiserver.request", 1, 10),
                &[("k8s.resource", "deployments"), ("k8s.name", "web")],
            ),
            span(1, 3, Some(2), "store.txn", 5, 6),
            with(
                span(1, 4, Some(3), "controller.reconcile", 11, 20),
                &[("controller.name", "replicaset"), ("controller.key", "default/web-1")],
            ),
            with(
                span(1, 5, Some(4), "controller.create_pod", 12, 19),
                &[("k8s.kind", "Pod"), ("k8s.name", "web-1-a")],
            ),
            with(
                span(1, 6, Some(5), "scheduler.schedule_pod", 21, 30),
                &[("scheduler.pod", "default/web-1-a")],
            ),
            with(
                span(1, 7, Some(6), "apiserver.request", 25, 28),
                &[("k8s.resource", "events"), ("k8s.name", "web-1-a.1")],
            ),
            span(1, 8, Some(7), "store.txn", 26, 27),
            with(
                span(1, 9, Some(6), "kubelet.sync_pod", 31, 50),
                &[("kubelet.pod", "default/web-1-a")],
            ),
            span(1, 10, Some(9), "runtime.start_container", 40, 45),
        ]
    }

    fn names(spans: &[StoredSpan]) -> Vec<String> {
        spans
            .iter()
            .map(|s| format!("{}#{}", s.name, u8::from_str_radix(&s.span_id, 16).unwrap()))
            .collect()
    }

    fn parent_of(spans: &[StoredSpan], id: u8) -> Option<u8> {
        spans
            .iter()
            .find(|s| s.span_id == format!("{id:016x}"))
            .and_then(|s| s.parent_span_id.as_deref())
            .map(|p| u8::from_str_radix(p, 16).unwrap())
    }

    #[test]
    fn no_filter_keeps_everything() {
        let spans = trace();
        assert_eq!(TraceFilter::default().apply(&spans), spans);
    }

    #[test]
    fn stages_keep_their_spans_under_the_nearest_shown_ancestor() {
        let f = TraceFilter::new(vec!["scheduler,kubelet".into()], None, None, false).unwrap();
        let out = f.apply(&trace());
        assert_eq!(names(&out), ["scheduler.schedule_pod#6", "kubelet.sync_pod#9"]);
        assert_eq!(parent_of(&out, 9), Some(6));
        // Its real parent is hidden and none above is shown: the view marks it as cut.
        assert_eq!(parent_of(&out, 6), Some(5));
    }

    #[test]
    fn depth_counts_levels_from_the_root() {
        let f = TraceFilter::new(vec![], None, Some(2), false).unwrap();
        assert_eq!(names(&f.apply(&trace())), ["cli.apply#1", "apiserver.request#2"]);
        assert!(TraceFilter::new(vec![], None, Some(0), false).is_err());
    }

    #[test]
    fn no_events_hides_event_writes_and_their_store_writes() {
        let f = TraceFilter::new(vec![], None, None, true).unwrap();
        let out = names(&f.apply(&trace()));
        assert!(!out.contains(&"apiserver.request#7".to_string()));
        assert!(!out.contains(&"store.txn#8".to_string()));
        assert!(out.contains(&"store.txn#3".to_string()));
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn an_object_keeps_its_spans_their_steps_and_the_road_above() {
        let f = TraceFilter::new(vec![], Some("po/web-1-*"), None, false).unwrap();
        let out = names(&f.apply(&trace()));
        assert_eq!(
            out,
            [
                "cli.apply#1",
                "apiserver.request#2",
                "store.txn#3",
                "controller.reconcile#4",
                "controller.create_pod#5",
                "scheduler.schedule_pod#6",
                "kubelet.sync_pod#9",
                "runtime.start_container#10",
            ]
        );
        // The Deployment's view stops where another object begins.
        let f = TraceFilter::new(vec![], Some("deployments/web"), None, false).unwrap();
        assert_eq!(
            names(&f.apply(&trace())),
            ["cli.apply#1", "apiserver.request#2", "store.txn#3"]
        );
        // Filters combine.
        let f = TraceFilter::new(vec!["runtime".into()], Some("Pod/web-1-a"), None, false).unwrap();
        assert_eq!(names(&f.apply(&trace())), ["runtime.start_container#10"]);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(ObjectPattern::parse("web").unwrap_err().contains("KIND/NAME"));
        assert!(ObjectPattern::parse("pod/").is_err());
        let err = TraceFilter::new(vec!["schedular".into()], None, None, false).unwrap_err();
        assert!(err.contains("unknown stage `schedular`"), "{err}");
    }

    #[test]
    fn kinds_and_globs() {
        for k in ["po", "pods", "Pod", "pod"] {
            assert_eq!(canonical_kind(k), "pod");
        }
        assert_eq!(canonical_kind("deployments.apps"), "deployment");
        assert_eq!(canonical_kind("endpoints"), "endpoints");
        assert_eq!(canonical_kind("svc"), "service");
        assert!(glob_matches("web-*", "web-6dc9c4df99-jw47h"));
        assert!(glob_matches("web-?", "web-1"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXbYbc"));
        assert!(!glob_matches("web-*", "web"));
        assert!(!glob_matches("web", "web-1"));
    }
}
