//! # kubectl's JSONPath templates (`-o jsonpath=...`, `-o custom-columns=...`)
//!
//! kubectl prints chosen fields with a *template*: plain text with JSONPath actions in
//! braces, e.g. `{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}`.
//! This module parses and runs that dialect (upstream: `k8s.io/client-go/util/jsonpath`):
//!
//! - paths: `.a.b`, `$` (the root), `@` (the current element), `..name` (recursive),
//!   `[*]`/`.*`, `[0]`, `[-1]`, `[1:3]`, `[0,2]`, `['a.b']`, `['a','b']`;
//! - filters: `[?(@.status.phase=="Running")]`, `[?(@.port>80)]`, `[?(@.x)]`;
//! - actions: `{range PATH}...{end}` repeats its body for each element, `{"text"}` prints
//!   a quoted literal (with `\n`, `\t` escapes), anything else outside braces is printed as is.
//!
//! One action prints each result it finds separated by spaces: strings as they are, other
//! values as compact JSON. A field that is missing prints nothing (kubectl's
//! `--allow-missing-template-keys=true`, the default).
//!
//! Why not a crate: the JSONPath crates (RFC 9535) evaluate one query to a list of values;
//! none knows kubectl's template layer (text between actions, `{range}`/`{end}`, literals),
//! which is what users type. The evaluator here is the small part of that dialect kubectl
//! users type; it runs on the JSON the server sent, as kubectl's does.

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Root,
    Current,
    Field(String),
    Wildcard,
    Recursive,
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Union(Vec<Step>),
    Filter(Box<Filter>),
}

/// `?(@.a == "x")` or `?(@.a)`.
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Operand,
    op: Option<(String, Operand)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<Step>),
    Literal(Value),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

/// A compiled template, ready to print objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parse `text`; the error says what is wrong, in the parser's words (`unclosed action`).
    pub fn parse(text: &str) -> Result<Template, String> {
        let pieces = split_actions(text)?;
        let mut pos = 0;
        let nodes = nodes_until_end(&pieces, &mut pos, false)?;
        Ok(Template { nodes })
    }

    /// Run the template on `data` and return the text it prints.
    pub fn render(&self, data: &Value) -> String {
        let mut out = String::new();
        render_nodes(&self.nodes, data, data, &mut out);
        out
    }

    /// The values one path-only template finds (custom columns print these).
    pub fn values(&self, data: &Value) -> Vec<Value> {
        let mut found = Vec::new();
        for node in &self.nodes {
            if let Node::Path(steps) = node {
                found.extend(eval(steps, data, data));
            }
        }
        found
    }
}

/// A piece of the template text: literal text, or the inside of one `{...}`.
enum Piece {
    Text(String),
    Action(String),
}

fn split_actions(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let Some(close) = closing_brace(after) else {
            // kubectl reports what is wrong inside the action first (`unterminated array`).
            if !after.trim().is_empty() {
                parse_path(after.trim())?;
            }
            return Err("unclosed action".into());
        };
        pieces.push(Piece::Action(after[..close].trim().to_string()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// The `}` that ends an action, skipping braces inside quotes.
fn closing_brace(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '}') => return Some(i),
            _ => {}
        }
        escaped = false;
    }
    None
}

fn nodes_until_end(pieces: &[Piece], pos: &mut usize, in_range: bool) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    while *pos < pieces.len() {
        let piece = &pieces[*pos];
        *pos += 1;
        match piece {
            Piece::Text(t) => nodes.push(Node::Text(t.clone())),
            Piece::Action(a) if a == "end" => {
                if in_range {
                    return Ok(nodes);
                }
                return Err("not in range, nothing to end".into());
            }
            Piece::Action(a) if a.starts_with("range ") || a == "range" => {
                let steps = parse_path(a["range".len()..].trim())?;
                let body = nodes_until_end(pieces, pos, true)?;
                nodes.push(Node::Range(steps, body));
            }
            Piece::Action(a) if a.starts_with('"') || a.starts_with('\'') => nodes.push(Node::Text(unquote(a)?)),
            Piece::Action(a) => nodes.push(Node::Path(parse_path(a)?)),
        }
    }
    if in_range {
        return Err("unclosed range".into());
    }
    Ok(nodes)
}

/// `"a\tb"` → `a<TAB>b`.
fn unquote(s: &str) -> Result<String, String> {
    let q = s.chars().next().unwrap_or('"');
    let inner = s
        .strip_prefix(q)
        .and_then(|r| r.strip_suffix(q))
        .ok_or_else(|| format!("unterminated quoted string: {s}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Ok(out)
}

/// Parse one path such as `.items[*].metadata.name` or `$..name`.
fn parse_path(text: &str) -> Result<Vec<Step>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut steps = Vec::new();
    if text.is_empty() {
        return Err("missing path in action".into());
    }
    while i < chars.len() {
        match chars[i] {
            '$' if i == 0 => {
                steps.push(Step::Root);
                i += 1;
            }
            '@' if i == 0 => {
                steps.push(Step::Current);
                i += 1;
            }
            '.' if chars.get(i + 1) == Some(&'.') => {
                steps.push(Step::Recursive);
                i += 1;
            }
            '.' if chars.get(i + 1) == Some(&'*') => {
                steps.push(Step::Wildcard);
                i += 2;
            }
            '.' if chars.get(i + 1) == Some(&'[') || i + 1 == chars.len() => i += 1,
            '.' => {
                let (name, next) = field_name(&chars, i + 1);
                steps.push(Step::Field(name));
                i = next;
            }
            '[' => {
                let close = bracket_end(&chars, i).ok_or("unterminated array")?;
                let inner: String = chars[i + 1..close].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = close + 1;
            }
            c => return Err(format!("unrecognized character in action: {c:?}")),
        }
    }
    Ok(steps)
}

/// A dotted field name, up to the next `.` or `[` (`\.` keeps a dot in the name).
fn field_name(chars: &[char], mut i: usize) -> (String, usize) {
    let mut name = String::new();
    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
        if chars[i] == '\\' && chars.get(i + 1) == Some(&'.') {
            name.push('.');
            i += 2;
            continue;
        }
        name.push(chars[i]);
        i += 1;
    }
    (name, i)
}

/// The `]` matching the `[` at `open` (quotes and parentheses may contain `]`).
fn bracket_end(chars: &[char], open: usize) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    for (i, &c) in chars.iter().enumerate().skip(open + 1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, ']') if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(f) = inner.strip_prefix('?') {
        let f = f.trim();
        let body = f
            .strip_prefix('(')
            .and_then(|b| b.strip_suffix(')'))
            .ok_or("unmatched parentheses in filter")?;
        return Ok(Step::Filter(Box::new(parse_filter(body.trim())?)));
    }
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    let mut steps = Vec::new();
    for p in &parts {
        steps.push(bracket_item(p)?);
    }
    Ok(if steps.len() == 1 {
        steps.remove(0)
    } else {
        Step::Union(steps)
    })
}

fn bracket_item(p: &str) -> Result<Step, String> {
    if p.starts_with('\'') || p.starts_with('"') {
        return Ok(Step::Field(unquote(p)?));
    }
    if p.contains(':') {
        let n: Vec<Option<i64>> = p
            .split(':')
            .map(|x| x.trim())
            .map(|x| if x.is_empty() { Ok(None) } else { x.parse().map(Some) })
            .collect::<Result<_, _>>()
            .map_err(|_| format!("invalid array slice: {p}"))?;
        return Ok(Step::Slice(
            n.first().copied().flatten(),
            n.get(1).copied().flatten(),
            n.get(2).copied().flatten(),
        ));
    }
    p.parse::<i64>()
        .map(Step::Index)
        .map_err(|_| format!("invalid array index: {p}"))
}

fn parse_filter(body: &str) -> Result<Filter, String> {
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        if let Some((l, r)) = split_outside_quotes(body, op) {
            return Ok(Filter {
                left: operand(l.trim())?,
                op: Some((op.to_string(), operand(r.trim())?)),
            });
        }
    }
    Ok(Filter {
        left: operand(body)?,
        op: None,
    })
}

fn split_outside_quotes<'a>(s: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, _) if s[i..].starts_with(op) => return Some((&s[..i], &s[i + op.len()..])),
            _ => {}
        }
    }
    None
}

fn operand(s: &str) -> Result<Operand, String> {
    if s.starts_with('@') || s.starts_with('$') {
        return Ok(Operand::Path(parse_path(s)?));
    }
    if s.starts_with('"') || s.starts_with('\'') {
        return Ok(Operand::Literal(Value::String(unquote(s)?)));
    }
    serde_json::from_str::<Value>(s)
        .map(Operand::Literal)
        .map_err(|_| format!("unrecognized identifier {s}"))
}

fn render_nodes(nodes: &[Node], root: &Value, current: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Path(steps) => {
                let texts: Vec<String> = eval(steps, root, current).iter().map(text).collect();
                out.push_str(&texts.join(" "));
            }
            Node::Range(steps, body) => {
                for item in eval(steps, root, current) {
                    render_nodes(body, root, &item, out);
                }
            }
        }
    }
}

/// How one value prints: strings as they are, everything else as compact JSON with its
/// keys sorted (as Go's `json.Marshal` writes a map).
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => sorted(other).to_string(),
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn eval(steps: &[Step], root: &Value, current: &Value) -> Vec<Value> {
    let mut values = vec![current.clone()];
    for step in steps {
        values = values.iter().flat_map(|v| apply(step, root, v)).collect();
    }
    values
}

fn apply(step: &Step, root: &Value, v: &Value) -> Vec<Value> {
    match step {
        Step::Root => vec![root.clone()],
        Step::Current => vec![v.clone()],
        Step::Field(name) => v.get(name.as_str()).cloned().into_iter().collect(),
        Step::Wildcard => match v {
            Value::Array(a) => a.clone(),
            Value::Object(m) => m.values().cloned().collect(),
            _ => Vec::new(),
        },
        Step::Recursive => {
            let mut all = Vec::new();
            descendants(v, &mut all);
            all
        }
        Step::Index(i) => v
            .as_array()
            .and_then(|a| index(a.len(), *i).map(|i| a[i].clone()))
            .into_iter()
            .collect(),
        Step::Slice(start, end, by) => v.as_array().map(|a| slice(a, *start, *end, *by)).unwrap_or_default(),
        Step::Union(steps) => steps.iter().flat_map(|s| apply(s, root, v)).collect(),
        Step::Filter(f) => {
            let items = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
            items.into_iter().filter(|item| matches(f, root, item)).collect()
        }
    }
}

fn descendants(v: &Value, out: &mut Vec<Value>) {
    out.push(v.clone());
    match v {
        Value::Array(a) => a.iter().for_each(|x| descendants(x, out)),
        Value::Object(m) => m.values().for_each(|x| descendants(x, out)),
        _ => {}
    }
}

fn index(len: usize, i: i64) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

fn slice(a: &[Value], start: Option<i64>, end: Option<i64>, by: Option<i64>) -> Vec<Value> {
    let len = a.len() as i64;
    let clamp = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
    let (s, e) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(len)));
    let by = by.unwrap_or(1).max(1) as usize;
    (s..e.max(s)).step_by(by).map(|i| a[i as usize].clone()).collect()
}

fn matches(f: &Filter, root: &Value, item: &Value) -> bool {
    let left = operand_values(&f.left, root, item);
    let Some((op, right)) = &f.op else {
        return left.iter().any(|v| !v.is_null() && v != &Value::Bool(false));
    };
    let right = operand_values(right, root, item);
    left.iter().any(|l| right.iter().any(|r| compare(l, op, r)))
}

fn operand_values(o: &Operand, root: &Value, item: &Value) -> Vec<Value> {
    match o {
        Operand::Literal(v) => vec![v.clone()],
        Operand::Path(steps) => eval(steps, root, item),
    }
}

fn compare(l: &Value, op: &str, r: &Value) -> bool {
    let ordering = match (l.as_f64(), r.as_f64()) {
        (Some(a), Some(b)) => a.partial_cmp(&b),
        _ => Some(text(l).cmp(&text(r))),
    };
    let Some(ord) = ordering else { return false };
    match op {
        "==" => ord.is_eq(),
        "!=" => ord.is_ne(),
        "<" => ord.is_lt(),
        ">" => ord.is_gt(),
        "<=" => ord.is_le(),
        ">=" => ord.is_ge(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v)
    }

    #[test]
    fn the_templates_kubectl_users_type() {
        let list = json!({"items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x"}}, "status": {"phase": "Running"}, "n": 1},
            {"metadata": {"name": "b"}, "status": {"phase": "Pending"}, "n": 3}
        ]});
        assert_eq!(run("{.items[*].metadata.name}", &list), "a b");
        assert_eq!(
            run(
                "{range .items[*]}{.metadata.name}{\"\\t\"}{.status.phase}{\"\\n\"}{end}",
                &list
            ),
            "a\tRunning\nb\tPending\n"
        );
        assert_eq!(
            run("{.items[?(@.status.phase==\"Running\")].metadata.name}", &list),
            "a"
        );
        assert_eq!(run("{.items[?(@.n>2)].metadata.name}", &list), "b");
        assert_eq!(run("{.items[-1].metadata.name}", &list), "b");
        assert_eq!(run("{.items[0:1].metadata.name}", &list), "a");
        assert_eq!(run("{..phase}", &list), "Running Pending");
        assert_eq!(run("names: {$.items[*].metadata.name}!", &list), "names: a b!");
        assert_eq!(run("{.items[0].metadata.labels['app.kubernetes.io/name']}", &list), "x");
        assert_eq!(
            run("{.items[0].metadata.labels.app\\.kubernetes\\.io/name}", &list),
            "x"
        );
        assert_eq!(run("{.items[0].status}", &list), "{\"phase\":\"Running\"}");
        assert_eq!(run("{.m}", &json!({"m": {"b": 1, "a": 2}})), "{\"a\":2,\"b\":1}");
        assert_eq!(run("{.missing}", &list), "");
        assert_eq!(run("{.items[*]['n']}", &list), "1 3");
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!(Template::parse("{.items[*]").unwrap_err(), "unclosed action");
        assert_eq!(Template::parse("{.items[").unwrap_err(), "unterminated array");
        assert_eq!(Template::parse("{.items[}").unwrap_err(), "unterminated array");
        assert_eq!(Template::parse("{range .items[*]}x").unwrap_err(), "unclosed range");
        assert_eq!(Template::parse("{end}").unwrap_err(), "not in range, nothing to end");
    }
}
