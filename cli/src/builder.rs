//! # The resource builder: what the words after a verb name (mirrors kubectl's `resource.Builder`)
//!
//! Every kubectl verb that works on existing objects (`get`, `describe`, `delete`, `label`,
//! `annotate`, `logs`, `scale`, ...) takes its targets in the same few shapes, and kubectl
//! parses them in one place, `k8s.io/cli-runtime/pkg/resource.Builder`. kulisse does the same
//! here, so every command understands every shape:
//!
//! | typed                        | means                                               |
//! |------------------------------|-----------------------------------------------------|
//! | `pods`, `pod`, `po`, `Pod`   | the kind, by plural, singular, short name or kind   |
//! | `deployments.apps`           | the kind, qualified with its group                  |
//! | `pods web-1 web-2`           | `TYPE NAME...`: these objects of one kind           |
//! | `pod/web-1 deploy/web`       | `TYPE/NAME...`: each argument names kind and object |
//! | `pods,services`              | several kinds (`a,b` list)                          |
//! | `all`                        | every kind in the category `all` (from discovery)   |
//!
//! The kinds come from the registry (`kulisse_core::objects::RESOURCES`), the same table
//! the API server serves as discovery (`kubectl api-resources` shows it): short names and
//! categories are read there, never repeated here.
//!
//! The builder then *fetches* what was named ([`fetch`]): `GET` for each name, or one
//! `LIST` per kind, filtered with `-l`/`--field-selector`. A name that does not exist is an
//! error of that name only; the others are still shown, as kubectl does.
//!
//! Where kulisse differs: kubectl resolves kinds through live discovery (so it also knows
//! CustomResourceDefinitions); kulisse's CLI reads the compiled-in registry, which is the
//! list the server serves.

use anyhow::{anyhow, bail};
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects::{self, ResourceInfo};
use serde_json::Value;

/// One kind the user named, with the names asked for (empty: every object of the kind).
#[derive(Debug, Clone)]
pub struct Request {
    pub info: &'static ResourceInfo,
    pub names: Vec<String>,
}

/// What the arguments of a command name.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// In the order typed, categories expanded in discovery order.
    pub requests: Vec<Request>,
    /// Several kinds were asked for as a list (`pods,svc`, `all`): kubectl then names every
    /// object `kind/name` in tables (`pod/a deploy/b` does so only when both are found).
    pub multiple_kinds: bool,
}

impl Selection {
    /// Did the user name objects (`pods a b`, `pod/a`), rather than whole kinds?
    pub fn has_names(&self) -> bool {
        self.requests.iter().any(|r| !r.names.is_empty())
    }

    /// Exactly one object named, as in `get pod/x` (`-o json` then prints it, not a List).
    pub fn single_object(&self) -> bool {
        self.requests.len() == 1 && self.requests[0].names.len() == 1
    }

    /// kubectl refuses names together with `-l` or `--all`.
    pub fn check_selector(&self, selector: Option<&str>, all: bool) -> anyhow::Result<()> {
        if self.has_names() && (selector.is_some() || all) {
            bail!("name cannot be provided when a selector is specified");
        }
        Ok(())
    }
}

/// Resolve one word (`po`, `deployments`, `deploy.apps`) to a resource, as kubectl's
/// RESTMapper does; the error is kubectl's.
pub fn resource(text: &str) -> anyhow::Result<&'static ResourceInfo> {
    objects::lookup(text).ok_or_else(|| anyhow!("the server doesn't have a resource type \"{text}\""))
}

/// A comma list of kinds (`pods,svc`, `all`), with categories expanded.
pub fn kinds(text: &str) -> anyhow::Result<Vec<&'static ResourceInfo>> {
    let mut out: Vec<&'static ResourceInfo> = Vec::new();
    for word in text.split(',').filter(|w| !w.is_empty()) {
        let expanded = category(word);
        let found = if expanded.is_empty() {
            vec![resource(word)?]
        } else {
            expanded
        };
        for info in found {
            if !out.contains(&info) {
                out.push(info);
            }
        }
    }
    if out.is_empty() {
        bail!("the server doesn't have a resource type \"{text}\"");
    }
    Ok(out)
}

/// The kinds in a category (`all`), in discovery order; empty if `word` is no category.
fn category(word: &str) -> Vec<&'static ResourceInfo> {
    let word = word.to_ascii_lowercase();
    if objects::lookup(&word).is_some() {
        return Vec::new();
    }
    objects::RESOURCES
        .iter()
        .filter(|r| r.categories.contains(&word.as_str()))
        .collect()
}

/// Parse a command's positional arguments: `TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...`.
pub fn parse(args: &[String]) -> anyhow::Result<Selection> {
    let Some(first) = args.first() else {
        bail!("Required resource not specified.");
    };
    if args.iter().any(|a| a.contains('/')) {
        if !first.contains('/') {
            bail!(
                "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kulisse get resource/<resource_name>' instead of 'kulisse get resource resource/<resource_name>'"
            );
        }
        return type_slash_name(args);
    }
    let kinds = kinds(first)?;
    let names: Vec<String> = args[1..].to_vec();
    if names.iter().any(String::is_empty) {
        bail!("a resource name cannot be empty");
    }
    Ok(Selection {
        multiple_kinds: kinds.len() > 1 || category(first).len() > 1 || first.eq_ignore_ascii_case("all"),
        requests: kinds
            .into_iter()
            .map(|info| Request {
                info,
                names: names.clone(),
            })
            .collect(),
    })
}

/// `pod/a pod/b deploy/web`: consecutive names of one kind share a request.
fn type_slash_name(args: &[String]) -> anyhow::Result<Selection> {
    let mut requests: Vec<Request> = Vec::new();
    for arg in args {
        let Some((kind, name)) = arg.split_once('/') else {
            bail!("arguments in resource/name form must have a single resource and name");
        };
        if kind.is_empty() || name.is_empty() || name.contains('/') || kind.contains(',') {
            bail!("arguments in resource/name form must have a single resource and name");
        }
        let info = resource(kind)?;
        match requests.iter_mut().find(|r| r.info == info) {
            Some(r) => r.names.push(name.to_string()),
            None => requests.push(Request {
                info,
                names: vec![name.to_string()],
            }),
        }
    }
    Ok(Selection {
        multiple_kinds: false,
        requests,
    })
}

/// Exactly one object: `deploy/web` or `deploy web` (scale, rollout, patch, logs).
pub fn one(args: &[String]) -> anyhow::Result<(&'static ResourceInfo, String)> {
    let sel = parse(args)?;
    match sel.requests.as_slice() {
        [r] if r.names.len() == 1 => Ok((r.info, r.names[0].clone())),
        [r] if r.names.is_empty() => bail!("resource(s) were provided, but no name was specified"),
        _ => bail!("expected one object: TYPE/NAME or TYPE NAME"),
    }
}

/// Where to look for objects of `info`: cluster-scoped kinds have no namespace; `-A` lists
/// every namespace (but a name is always looked up in one namespace, as in kubectl).
pub fn scope<'a>(info: &ResourceInfo, ns: &'a str, all_namespaces: bool, named: bool) -> Option<&'a str> {
    if !info.namespaced || (all_namespaces && !named) {
        None
    } else {
        Some(ns)
    }
}

/// The objects of one kind that a request found.
pub struct Found {
    pub info: &'static ResourceInfo,
    pub objects: Vec<Value>,
}

/// Fetch what a selection names: a `GET` per name, else a `LIST` per kind with `params`.
/// Objects that were found come back in order; each failure is returned on its own (kubectl
/// prints the objects it found, then the errors, and exits 1).
pub async fn fetch(
    client: &Client,
    sel: &Selection,
    ns: &str,
    all_namespaces: bool,
    params: &ListParams,
) -> (Vec<Found>, Vec<anyhow::Error>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for r in &sel.requests {
        let scope = scope(r.info, ns, all_namespaces, !r.names.is_empty());
        let mut objects = Vec::new();
        if r.names.is_empty() {
            match client.list(r.info, scope, params).await {
                Ok(list) => objects = with_kind(r.info, items(&list)),
                Err(e) => errors.push(anyhow::Error::new(e)),
            }
        } else {
            for name in &r.names {
                match client.get(r.info, scope, name).await {
                    Ok(obj) => objects.extend(with_kind(r.info, vec![obj])),
                    Err(e) => errors.push(anyhow::Error::new(e)),
                }
            }
        }
        found.push(Found { info: r.info, objects });
    }
    (found, errors)
}

/// The `items` of a list answer.
pub fn items(list: &Value) -> Vec<Value> {
    list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Items of a list carry no `kind`; kubectl's printers add it back (a mixed `List` needs it).
fn with_kind(info: &ResourceInfo, objects: Vec<Value>) -> Vec<Value> {
    objects
        .into_iter()
        .map(|mut o| {
            if o.get("kind").is_none() {
                o["kind"] = Value::from(info.kind);
                o["apiVersion"] = Value::from(info.api_version());
            }
            o
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_shape_kubectl_accepts() {
        let s = parse(&args(&["po", "a", "b"])).unwrap();
        assert_eq!((s.requests.len(), s.requests[0].info.kind), (1, "Pod"));
        assert_eq!(s.requests[0].names, ["a", "b"]);
        assert!(!s.multiple_kinds);
        let s = parse(&args(&["pod/a", "deploy/web", "pods/b"])).unwrap();
        let kinds: Vec<_> = s.requests.iter().map(|r| (r.info.kind, r.names.len())).collect();
        assert_eq!(kinds, [("Pod", 2), ("Deployment", 1)]);
        let s = parse(&args(&["pods,svc"])).unwrap();
        assert!(s.multiple_kinds && s.requests.len() == 2);
        let s = parse(&args(&["all"])).unwrap();
        let kinds: Vec<_> = s.requests.iter().map(|r| r.info.kind).collect();
        assert!(
            kinds.starts_with(&["Pod", "Service"]) && kinds.contains(&"Deployment"),
            "{kinds:?}"
        );
    }

    #[test]
    fn kubectl_errors_for_bad_shapes() {
        let e = parse(&args(&["pods", "pod/a"])).unwrap_err().to_string();
        assert!(e.starts_with("there is no need to specify a resource type"), "{e}");
        let e = parse(&args(&["foo"])).unwrap_err().to_string();
        assert_eq!(e, "the server doesn't have a resource type \"foo\"");
        let e = parse(&args(&["pod/"])).unwrap_err().to_string();
        assert!(e.contains("single resource and name"), "{e}");
        assert!(one(&args(&["deploy"])).is_err());
        assert_eq!(one(&args(&["deploy/web"])).unwrap().1, "web");
    }
}
