//! # Selectors: how Kubernetes picks a set of objects
//!
//! Kubernetes objects do not point at each other by name very often. A Service finds its
//! Pods, a ReplicaSet counts its Pods, `kubectl get pods -l app=web` filters — all with a
//! **label selector**: a condition on an object's `metadata.labels`
//! (`k8s.io/apimachinery/pkg/labels`).
//!
//! Label selectors come in two spellings:
//! - **text**, as in `kubectl get pods -l 'app=web,tier!=db'` and the `labelSelector=` URL
//!   parameter: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a` (exists), `!a` (does
//!   not exist), `a>5`, `a<5`; a comma means AND. See [`labels_match`].
//! - **structured**, as in a Deployment's `spec.selector`: `matchLabels` (all must be equal)
//!   plus `matchExpressions` with operators `In`, `NotIn`, `Exists`, `DoesNotExist`. See
//!   [`match_label_selector`].
//!
//! A **field selector** (`kubectl get pods --field-selector spec.nodeName=node-1`,
//! `fieldSelector=` in URLs) filters on a few well-known fields instead of labels. Kubelets
//! use it to watch only the Pods bound to their node. See [`field_selector_matches`].

use std::collections::BTreeMap;

use serde_json::Value;

use super::validation::{is_qualified_name, is_valid_label_value};

/// One condition of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(labels.get(&self.key).map(String::as_str))
    }

    /// `value`: the object's value of this requirement's key, `None` without that label.
    fn matches_value(&self, value: Option<&str>) -> bool {
        let listed = |vs: &[String], v: &str| vs.iter().any(|x| x == v);
        match &self.op {
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Equals(v) => value == Some(v.as_str()),
            // As in Kubernetes: `a!=b` also matches objects without the label `a`.
            Op::NotEquals(v) => value != Some(v.as_str()),
            Op::In(vs) => value.is_some_and(|v| listed(vs, v)),
            Op::NotIn(vs) => value.is_none_or(|v| !listed(vs, v)),
            Op::Gt(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            Op::Lt(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        }
    }
}

/// A label selector read once, to be matched against many objects: every event of a watch,
/// every item of a list, every pod a topology spread constraint counts. (Parsing it again
/// for each object cost a watch with a selector more CPU than encoding the event.) Like
/// upstream's `labels.Selector`, which `labels.Parse` builds from the text spelling once per
/// request, and `metav1.LabelSelectorAsSelector` from the structured one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parse kubectl's `-l` syntax; `Err` explains a syntax error.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        parse_label_selector(text)
            .map(|requirements| LabelSelector { requirements })
            .map_err(|e| format!("unable to parse label selector \"{text}\": {e}"))
    }

    /// A structured `LabelSelector` as requirements, to be matched against many label sets
    /// (upstream's `metav1.LabelSelectorAsSelector`); `None` for one that selects nothing: a
    /// missing selector, a `matchLabels` value that is not a string, an expression without a
    /// key, an unknown operator, or `In`/`NotIn` without values.
    pub fn from_structured(selector: &Value) -> Option<LabelSelector> {
        let sel = selector.as_object()?;
        let mut requirements = Vec::new();
        if let Some(ml) = sel.get("matchLabels").filter(|v| !v.is_null()) {
            for (k, v) in ml.as_object()? {
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::Equals(v.as_str()?.to_string()),
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").filter(|v| !v.is_null()) {
            for expr in exprs.as_array()? {
                let key = expr.get("key").and_then(Value::as_str)?.to_string();
                let values: Vec<String> = expr
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default();
                let op = match expr.get("operator").and_then(Value::as_str) {
                    Some("In") if !values.is_empty() => Op::In(values),
                    Some("NotIn") if !values.is_empty() => Op::NotIn(values),
                    Some("Exists") => Op::Exists,
                    Some("DoesNotExist") => Op::DoesNotExist,
                    _ => return None,
                };
                requirements.push(Requirement { key, op });
            }
        }
        Some(LabelSelector { requirements })
    }

    /// Do these labels match? (For selectors matched against labels already parsed.)
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Does the object's `metadata.labels` match? (Read in place: no copy of the labels.
    /// A value that is not a string counts as absent, as [`super::labels`] skips it.)
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.requirements.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            r.matches_value(value)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("'{s}'"),
            Token::Comma => "','".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Eq => "'='".into(),
            Token::DoubleEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
            Token::Not => "'!'".into(),
            Token::Gt => "'>'".into(),
            Token::Lt => "'<'".into(),
        }
    }
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' => {
                chars.next();
                tokens.push(Token::Comma);
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '>' => {
                chars.next();
                tokens.push(Token::Gt);
            }
            '<' => {
                chars.next();
                tokens.push(Token::Lt);
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::DoubleEq);
                } else {
                    tokens.push(Token::Eq);
                }
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::NotEq);
                } else {
                    tokens.push(Token::Not);
                }
            }
            _ => {
                let mut ident = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || ",()=!<>".contains(c) {
                        break;
                    }
                    ident.push(c);
                    chars.next();
                }
                tokens.push(Token::Ident(ident));
            }
        }
    }
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn found(&self) -> String {
        self.peek().map_or("end of selector".to_string(), Token::describe)
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(k)) => {
                if let Some(msg) = is_qualified_name(&k).into_iter().next() {
                    return Err(format!("invalid label key \"{k}\": {msg}"));
                }
                Ok(k)
            }
            other => Err(format!(
                "found {}, expected a label key",
                other.map_or("end of selector".to_string(), |t| t.describe())
            )),
        }
    }

    fn value(&mut self) -> Result<String, String> {
        let v = match self.peek() {
            Some(Token::Ident(v)) => {
                let v = v.clone();
                self.pos += 1;
                v
            }
            // `a=` selects an empty value.
            _ => String::new(),
        };
        if let Some(msg) = is_valid_label_value(&v).into_iter().next() {
            return Err(format!("invalid label value \"{v}\": {msg}"));
        }
        Ok(v)
    }

    fn value_set(&mut self, op_word: &str) -> Result<Vec<String>, String> {
        if self.next() != Some(Token::Open) {
            return Err(format!("expected '(' after '{op_word}'"));
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => break,
                other => {
                    return Err(format!(
                        "found {}, expected ',' or ')' in the value list of '{op_word}'",
                        other.map_or("end of selector".to_string(), |t| t.describe())
                    ));
                }
            }
        }
        if values.iter().all(String::is_empty) {
            return Err(format!("for '{op_word}', the set of values can't be empty"));
        }
        Ok(values)
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        let op = match self.peek().cloned() {
            None | Some(Token::Comma) => Op::Exists,
            Some(Token::Eq) | Some(Token::DoubleEq) => {
                self.pos += 1;
                Op::Equals(self.value()?)
            }
            Some(Token::NotEq) => {
                self.pos += 1;
                Op::NotEquals(self.value()?)
            }
            Some(t @ (Token::Gt | Token::Lt)) => {
                self.pos += 1;
                let v = match self.next() {
                    Some(Token::Ident(v)) => v,
                    _ => String::new(),
                };
                let n = v
                    .parse::<i64>()
                    .map_err(|_| format!("for '>' and '<', the value must be an integer, found \"{v}\""))?;
                if t == Token::Gt { Op::Gt(n) } else { Op::Lt(n) }
            }
            Some(Token::Ident(word)) if word == "in" => {
                self.pos += 1;
                Op::In(self.value_set("in")?)
            }
            Some(Token::Ident(word)) if word == "notin" => {
                self.pos += 1;
                Op::NotIn(self.value_set("notin")?)
            }
            Some(_) => {
                return Err(format!(
                    "found {}, expected one of '=', '==', '!=', 'in', 'notin', '>', '<' or ',' after \"{key}\"",
                    self.found()
                ));
            }
        };
        Ok(Requirement { key, op })
    }
}

fn parse_label_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let mut parser = Parser {
        tokens: tokenize(text),
        pos: 0,
    };
    let mut reqs = Vec::new();
    if parser.peek().is_none() {
        return Ok(reqs);
    }
    loop {
        reqs.push(parser.requirement()?);
        match parser.next() {
            None => break,
            Some(Token::Comma) => continue,
            Some(t) => return Err(format!("found {}, expected ','", t.describe())),
        }
    }
    Ok(reqs)
}

/// Does a text label selector (kubectl's `-l`, the `labelSelector=` URL parameter) match
/// these labels? An empty selector matches everything. `Err` explains a syntax error,
/// e.g. `unable to parse label selector "app in web": expected '(' after 'in'`.
pub fn labels_match(selector_text: &str, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    Ok(LabelSelector::parse(selector_text)?.matches_labels(labels))
}

/// Check a text label selector for syntax errors without matching anything (the API server
/// answers `400 BadRequest` before listing).
pub fn parse_label_selector_text(selector_text: &str) -> Result<(), String> {
    LabelSelector::parse(selector_text).map(|_| ())
}

/// Does a structured `LabelSelector` (`{"matchLabels": {...}, "matchExpressions": [...]}`,
/// as in a Deployment's `spec.selector`) match these labels?
///
/// As in Kubernetes: an empty selector `{}` matches everything; a missing (`null`)
/// selector matches nothing; an unknown operator or a malformed expression matches nothing.
pub fn match_label_selector(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    LabelSelector::from_structured(selector).is_some_and(|s| s.matches_labels(labels))
}

/// The fields a field selector may name. Each is a dotted path into the object.
pub const SUPPORTED_FIELD_SELECTORS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.unschedulable",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "type",
    "source",
];

/// The string value a field selector compares for `field` ("" when absent).
fn field_value(obj: &Value, field: &str) -> String {
    let path: &[&str] = if field == "source" {
        &["source", "component"]
    } else {
        &[]
    };
    let owned: Vec<&str>;
    let path = if path.is_empty() {
        owned = field.split('.').collect();
        owned.as_slice()
    } else {
        path
    };
    let mut cur = obj;
    for k in path {
        match cur.get(k) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Does a field selector (`metadata.name=web,status.phase!=Running`) match `obj`? Terms are
/// `field=value`, `field==value` or `field!=value`, joined by commas (AND); an empty
/// selector matches everything. Supported fields: [`SUPPORTED_FIELD_SELECTORS`]. An
/// unsupported field is an error (`field label not supported: spec.foo`), as in Kubernetes.
pub fn field_selector_matches(selector_text: &str, obj: &Value) -> Result<bool, String> {
    let mut all = true;
    for term in selector_text.split(',') {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let (field, negate, value) = if let Some((f, v)) = term.split_once("!=") {
            (f, true, v)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, false, v)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, false, v)
        } else {
            return Err(format!(
                "invalid field selector \"{selector_text}\": \"{term}\" is not of the form field=value, field==value or field!=value"
            ));
        };
        let field = field.trim();
        let value = value.trim();
        if !SUPPORTED_FIELD_SELECTORS.contains(&field) {
            return Err(format!("field label not supported: {field}"));
        }
        let equal = field_value(obj, field) == value;
        if equal == negate {
            all = false;
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equality_and_inequality() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert_eq!(labels_match("app=web", &l), Ok(true));
        assert_eq!(labels_match("app==web", &l), Ok(true));
        assert_eq!(labels_match("app = web", &l), Ok(true));
        assert_eq!(labels_match("app=db", &l), Ok(false));
        assert_eq!(labels_match("app!=db", &l), Ok(true));
        assert_eq!(labels_match("app!=web", &l), Ok(false));
        assert_eq!(labels_match("missing!=x", &l), Ok(true), "!= matches absent labels");
        assert_eq!(labels_match("app=web,tier=front", &l), Ok(true));
        assert_eq!(labels_match("app=web,tier=back", &l), Ok(false));
        assert_eq!(labels_match("", &l), Ok(true));
        assert_eq!(labels_match("  ", &l), Ok(true));
        assert_eq!(labels_match("app=", &labels(&[("app", "")])), Ok(true));
    }

    #[test]
    fn set_based() {
        let l = labels(&[("env", "prod"), ("app", "web")]);
        assert_eq!(labels_match("env in (prod,staging)", &l), Ok(true));
        assert_eq!(labels_match("env in (dev)", &l), Ok(false));
        assert_eq!(labels_match("env notin (dev, qa)", &l), Ok(true));
        assert_eq!(labels_match("env notin (prod)", &l), Ok(false));
        assert_eq!(labels_match("missing notin (x)", &l), Ok(true));
        assert_eq!(labels_match("missing in (x)", &l), Ok(false));
        assert_eq!(labels_match("app", &l), Ok(true));
        assert_eq!(labels_match("!app", &l), Ok(false));
        assert_eq!(labels_match("!missing", &l), Ok(true));
        assert_eq!(labels_match("env in (prod),app,!gone", &l), Ok(true));
        assert_eq!(
            labels_match("example.com/role", &labels(&[("example.com/role", "x")])),
            Ok(true)
        );
    }

    #[test]
    fn greater_and_less() {
        let l = labels(&[("gen", "5"), ("name", "x")]);
        assert_eq!(labels_match("gen>3", &l), Ok(true));
        assert_eq!(labels_match("gen<3", &l), Ok(false));
        assert_eq!(labels_match("name>3", &l), Ok(false));
        assert!(labels_match("gen>abc", &l).is_err());
    }

    #[test]
    fn syntax_errors_are_explained() {
        let l = labels(&[]);
        for bad in [
            "app in web",
            "app in (a",
            "app in ()",
            "=web",
            "app=web,",
            "app=web extra",
            "app=bad value!",
            "bad key!=x",
            "!",
            "app==",
            "app=(x)",
        ] {
            let r = labels_match(bad, &l);
            if bad == "app==" {
                // `app==` selects the empty value, like `app=`.
                assert_eq!(r, Ok(false));
                continue;
            }
            let err = r.expect_err(bad);
            assert!(
                err.starts_with(&format!("unable to parse label selector \"{bad}\"")),
                "{err}"
            );
        }
        assert!(
            labels_match("app in web", &l)
                .expect_err("e")
                .contains("expected '(' after 'in'")
        );
        assert!(parse_label_selector_text("a in (b)").is_ok());
        assert!(parse_label_selector_text("a in (b").is_err());
    }

    #[test]
    fn a_parsed_selector_matches_objects_as_the_text_matches_their_labels() {
        let selectors = [
            "",
            "app=web",
            "app!=web",
            "app",
            "!app",
            "env in (prod,staging)",
            "env notin (prod)",
            "gen>3",
            "gen<3",
            "app=web,env in (prod)",
            "tier==front",
        ];
        let objects = [
            json!({"metadata": {}}),
            json!({"metadata": {"labels": {"app": "web", "env": "prod", "gen": "5"}}}),
            json!({"metadata": {"labels": {"app": "db", "env": "staging", "tier": "front", "gen": "1"}}}),
            // A value that is not a string counts as absent, in both.
            json!({"metadata": {"labels": {"app": 7, "env": "prod"}}}),
        ];
        for text in selectors {
            let parsed = LabelSelector::parse(text).unwrap();
            for obj in &objects {
                let expected = labels_match(text, &super::super::labels(obj)).unwrap();
                assert_eq!(parsed.matches(obj), expected, "{text:?} on {obj}");
            }
        }
        assert_eq!(
            LabelSelector::parse("app in web").unwrap_err(),
            labels_match("app in web", &labels(&[])).unwrap_err()
        );
    }

    #[test]
    fn structured_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(match_label_selector(&json!({"matchLabels": {"app": "web"}}), &l));
        assert!(!match_label_selector(&json!({"matchLabels": {"app": "db"}}), &l));
        assert!(
            match_label_selector(&json!({}), &l),
            "empty selector matches everything"
        );
        assert!(!match_label_selector(&Value::Null, &l), "null selector matches nothing");
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "edge"]},
            {"key": "gone", "operator": "DoesNotExist"},
            {"key": "app", "operator": "Exists"},
            {"key": "env", "operator": "NotIn", "values": ["prod"]}
        ]});
        assert!(match_label_selector(&sel, &l));
        let sel = json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]});
        assert!(!match_label_selector(&sel, &l));
        let sel = json!({"matchExpressions": [{"key": "tier", "operator": "Near", "values": ["front"]}]});
        assert!(!match_label_selector(&sel, &l), "unknown operator matches nothing");
        let sel = json!({"matchLabels": {"app": 1}});
        assert!(!match_label_selector(&sel, &l), "non-string value matches nothing");
        let sel = json!({"matchLabels": "app=web"});
        assert!(!match_label_selector(&sel, &l));
        for (expr, why) in [
            (
                json!({"key": "tier", "operator": "In", "values": []}),
                "In without values",
            ),
            (json!({"key": "tier", "operator": "NotIn"}), "NotIn without values"),
            (json!({"operator": "Exists"}), "an expression without a key"),
        ] {
            let sel = json!({"matchExpressions": [expr]});
            assert!(!match_label_selector(&sel, &l), "{why} matches nothing");
            assert_eq!(LabelSelector::from_structured(&sel), None, "{why}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}});
        assert_eq!(field_selector_matches("metadata.name=p", &pod), Ok(true));
        assert_eq!(field_selector_matches("metadata.name==p", &pod), Ok(true));
        assert_eq!(field_selector_matches("metadata.name!=p", &pod), Ok(false));
        assert_eq!(
            field_selector_matches("spec.nodeName=node-1,status.phase!=Pending", &pod),
            Ok(true)
        );
        assert_eq!(field_selector_matches("spec.nodeName=node-2", &pod), Ok(false));
        assert_eq!(field_selector_matches("metadata.namespace=default", &pod), Ok(true));
        assert_eq!(field_selector_matches("", &pod), Ok(true));
        // Unscheduled pods: an absent nodeName compares as "".
        let pending = json!({"metadata": {"name": "q"}, "spec": {}});
        assert_eq!(field_selector_matches("spec.nodeName=", &pending), Ok(true));
        assert_eq!(field_selector_matches("spec.nodeName!=", &pod), Ok(true));

        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "default", "uid": "u1"},
            "reason": "Scheduled", "type": "Normal", "source": {"component": "default-scheduler"}});
        assert_eq!(
            field_selector_matches("involvedObject.name=p,involvedObject.kind=Pod", &ev),
            Ok(true)
        );
        assert_eq!(
            field_selector_matches("involvedObject.uid=u1,involvedObject.namespace=default", &ev),
            Ok(true)
        );
        assert_eq!(field_selector_matches("involvedObject.uid=u2", &ev), Ok(false));
        assert_eq!(
            field_selector_matches("source=default-scheduler,reason=Scheduled", &ev),
            Ok(true)
        );

        let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert_eq!(field_selector_matches("spec.unschedulable=true", &node), Ok(true));

        assert_eq!(
            field_selector_matches("spec.foo=bar", &pod),
            Err("field label not supported: spec.foo".to_string())
        );
        assert!(field_selector_matches("metadata.name", &pod).is_err());
    }
}
