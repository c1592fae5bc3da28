//! kubectl's JSONPath template dialect (`-o jsonpath=...`, `custom-columns`): text with
//! `{expressions}`, `$`, `.a.b`, `['a.b']`, `..name`, `[*]`, `[i]`, `[start:end:step]`,
//! negative indices, unions `[0,1]` and `['a','b']`, filters `[?(@.k=="v")]` (`==`, `!=`,
//! `<`, `>`, `<=`, `>=`, existence `[?(@.k)]`), `{range ...}...{end}` and quoted literals
//! `{"\t"}`. Several matches print space-separated; maps and lists print as JSON.

use serde_json::Value;

/// A template that does not parse or an expression that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonPathError {
    #[error("unclosed action in {0:?}: a `{{` without its `}}`")]
    Unclosed(String),
    #[error("{0}")]
    Syntax(String),
    #[error("{0} is not found")]
    NotFound(String),
    #[error("array index out of bounds: index {index}, length {len}")]
    OutOfBounds { index: i64, len: usize },
    #[error("not in range, nothing to end")]
    EndWithoutRange,
    #[error("a {{range}} without its {{end}}")]
    RangeWithoutEnd,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    /// `.*` or `[*]`: every element of a list, every value of a map.
    All,
    /// `..`: the node and all its descendants (the next step applies to each).
    Descend,
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Indices(Vec<i64>),
    Keys(Vec<String>),
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<Step>),
    Literal(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Exists(Vec<Step>),
    Compare(Operand, Op, Operand),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    nodes: Vec<Node>,
    /// kubectl's `--allow-missing-template-keys` (default true): a missing field prints
    /// nothing instead of failing.
    pub allow_missing: bool,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, JsonPathError> {
        let actions = split_actions(text)?;
        let mut stack: Vec<(Vec<Step>, Vec<Node>)> = Vec::new();
        let mut nodes = Vec::new();
        for a in actions {
            let node = match a {
                Action::Text(t) => Node::Text(t),
                Action::Expr(e) => {
                    let e = e.trim();
                    if let Some(rest) = e.strip_prefix("range ") {
                        stack.push((parse_path(rest.trim())?, std::mem::take(&mut nodes)));
                        continue;
                    }
                    if e == "end" {
                        let (path, outer) = stack.pop().ok_or(JsonPathError::EndWithoutRange)?;
                        let body = std::mem::replace(&mut nodes, outer);
                        Node::Range(path, body)
                    } else if let Some(lit) = parse_literal(e)? {
                        Node::Text(lit)
                    } else {
                        Node::Path(parse_path(e)?)
                    }
                }
            };
            nodes.push(node);
        }
        if !stack.is_empty() {
            return Err(JsonPathError::RangeWithoutEnd);
        }
        Ok(Template {
            source: text.to_string(),
            nodes,
            allow_missing: true,
        })
    }

    /// The template as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the template against `root`, as kubectl prints it.
    pub fn render(&self, root: &Value) -> Result<String, JsonPathError> {
        let mut out = String::new();
        self.render_nodes(&self.nodes, root, root, &mut out)?;
        Ok(out)
    }

    /// Every value each path expression of the template finds, in order (for custom
    /// columns, which join them with commas).
    pub fn find(&self, root: &Value) -> Result<Vec<Value>, JsonPathError> {
        let mut found = Vec::new();
        for n in &self.nodes {
            if let Node::Path(p) = n {
                found.extend(
                    eval(p, root, root, self.allow_missing)?
                        .into_iter()
                        .cloned(),
                );
            }
        }
        Ok(found)
    }

    fn render_nodes(
        &self,
        nodes: &[Node],
        root: &Value,
        current: &Value,
        out: &mut String,
    ) -> Result<(), JsonPathError> {
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Path(p) => {
                    let values = eval(p, root, current, self.allow_missing)?;
                    let texts: Vec<String> = values.iter().map(|v| to_text(v)).collect();
                    out.push_str(&texts.join(" "));
                }
                Node::Range(p, body) => {
                    for v in eval(p, root, current, self.allow_missing)? {
                        self.render_nodes(body, root, v, out)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A value as kubectl's JSONPath prints it: strings bare, maps and lists as JSON.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        // Go's `FormatFloat(f, 'f', -1, 64)`: `100`, not `100.0`.
        Value::Number(n) if n.is_f64() => n.as_f64().map(|f| format!("{f}")).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// Brackets and filters nest at most this deep (the parser recurses on them).
const MAX_DEPTH: usize = 32;

enum Action {
    Text(String),
    Expr(String),
}

/// Splits a template into text and `{...}` actions, honouring quotes and brackets inside
/// actions.
fn split_actions(text: &str) -> Result<Vec<Action>, JsonPathError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut literal = String::new();
    while let Some((start, c)) = chars.next() {
        if c != '{' {
            literal.push(c);
            continue;
        }
        if !literal.is_empty() {
            out.push(Action::Text(std::mem::take(&mut literal)));
        }
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        let mut expr = String::new();
        let mut closed = false;
        for (_, c) in chars.by_ref() {
            if let Some(q) = quote {
                expr.push(c);
                if c == '\\' {
                    continue;
                }
                if c == q && !expr.ends_with(&format!("\\{q}")) {
                    quote = None;
                }
                continue;
            }
            match c {
                '"' | '\'' => {
                    quote = Some(c);
                    expr.push(c);
                }
                '[' | '(' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(JsonPathError::Syntax(format!(
                            "more than {MAX_DEPTH} nested brackets"
                        )));
                    }
                    expr.push(c);
                }
                ']' | ')' => {
                    depth = depth.saturating_sub(1);
                    expr.push(c);
                }
                '}' if depth == 0 => {
                    closed = true;
                    break;
                }
                _ => expr.push(c),
            }
        }
        if !closed {
            return Err(JsonPathError::Unclosed(text[start..].to_string()));
        }
        out.push(Action::Expr(expr));
    }
    if !literal.is_empty() {
        out.push(Action::Text(literal));
    }
    Ok(out)
}

/// `"..."` or `'...'` with `\n`, `\t`, `\r`, `\\` and quote escapes; `None` if `e` is not a
/// quoted literal.
fn parse_literal(e: &str) -> Result<Option<String>, JsonPathError> {
    let Some(q) = e.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(None);
    };
    if e.len() < 2 || !e.ends_with(q) {
        return Err(JsonPathError::Syntax(format!(
            "unterminated quoted string {e}"
        )));
    }
    Ok(Some(unescape(&e[1..e.len() - 1])))
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
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
    out
}

struct Cursor<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c == b' ') {
            self.i += 1;
        }
    }
    fn error(&self, what: &str) -> JsonPathError {
        JsonPathError::Syntax(format!("{what} at position {} in {:?}", self.i, self.text))
    }
}

fn parse_path(text: &str) -> Result<Vec<Step>, JsonPathError> {
    let mut c = Cursor {
        s: text.as_bytes(),
        text,
        i: 0,
    };
    let steps = parse_steps(&mut c, false)?;
    if c.i != c.s.len() {
        return Err(c.error("unexpected character"));
    }
    Ok(steps)
}

/// Parses steps until the end, or (in a filter) until an operator, space or `)`.
fn parse_steps(c: &mut Cursor<'_>, in_filter: bool) -> Result<Vec<Step>, JsonPathError> {
    let mut steps = Vec::new();
    c.eat(b'$');
    if in_filter {
        c.eat(b'@');
    }
    loop {
        match c.peek() {
            None => break,
            Some(b'.') => {
                c.i += 1;
                if c.eat(b'.') {
                    steps.push(Step::Descend);
                }
                if c.eat(b'*') {
                    steps.push(Step::All);
                } else if c.peek() == Some(b'[') {
                    continue;
                } else {
                    let name = parse_ident(c);
                    if name.is_empty() {
                        // A lone `.` (the current node) is allowed: `{.}`.
                        if c.peek().is_none() || (in_filter && c.peek() != Some(b'.')) {
                            continue;
                        }
                        return Err(c.error("expected a field name"));
                    }
                    steps.push(Step::Field(name));
                }
            }
            Some(b'[') => {
                c.i += 1;
                steps.push(parse_bracket(c)?);
            }
            Some(_) if in_filter => break,
            Some(_) if steps.is_empty() => {
                // kubectl accepts a path without the leading dot (`{metadata.name}`).
                let name = parse_ident(c);
                if name.is_empty() {
                    return Err(c.error("unexpected character"));
                }
                steps.push(Step::Field(name));
            }
            Some(_) => return Err(c.error("unexpected character")),
        }
    }
    Ok(steps)
}

fn parse_ident(c: &mut Cursor<'_>) -> String {
    let mut name = Vec::new();
    while let Some(b) = c.peek() {
        if b == b'\\' && c.s.get(c.i + 1).is_some() {
            name.push(c.s[c.i + 1]);
            c.i += 2;
            continue;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/') || b >= 0x80 {
            name.push(b);
            c.i += 1;
        } else {
            break;
        }
    }
    String::from_utf8_lossy(&name).into_owned()
}

fn parse_bracket(c: &mut Cursor<'_>) -> Result<Step, JsonPathError> {
    c.skip_ws();
    let step = if c.eat(b'*') {
        Step::All
    } else if c.eat(b'?') {
        if !c.eat(b'(') {
            return Err(c.error("expected `(` after `?`"));
        }
        let f = parse_filter(c)?;
        if !c.eat(b')') {
            return Err(c.error("expected `)` closing the filter"));
        }
        Step::Filter(Box::new(f))
    } else if matches!(c.peek(), Some(b'\'' | b'"')) {
        let mut keys = vec![parse_quoted(c)?];
        loop {
            c.skip_ws();
            if !c.eat(b',') {
                break;
            }
            c.skip_ws();
            keys.push(parse_quoted(c)?);
        }
        if keys.len() == 1 {
            Step::Field(keys.remove(0))
        } else {
            Step::Keys(keys)
        }
    } else {
        let first = parse_int(c)?;
        c.skip_ws();
        if c.eat(b':') {
            let end = parse_int(c)?;
            let step = if c.eat(b':') { parse_int(c)? } else { None };
            Step::Slice(first, end, step)
        } else if c.peek() == Some(b',') {
            let mut idx = vec![first.ok_or_else(|| c.error("expected an index"))?];
            while c.eat(b',') {
                c.skip_ws();
                idx.push(parse_int(c)?.ok_or_else(|| c.error("expected an index"))?);
            }
            Step::Indices(idx)
        } else {
            Step::Index(first.ok_or_else(|| c.error("expected an index, `*`, `?()` or a key"))?)
        }
    };
    c.skip_ws();
    if !c.eat(b']') {
        return Err(c.error("expected `]`"));
    }
    Ok(step)
}

fn parse_int(c: &mut Cursor<'_>) -> Result<Option<i64>, JsonPathError> {
    c.skip_ws();
    let start = c.i;
    c.eat(b'-');
    while c.peek().is_some_and(|b| b.is_ascii_digit()) {
        c.i += 1;
    }
    if c.i == start {
        return Ok(None);
    }
    c.text[start..c.i]
        .parse()
        .map(Some)
        .map_err(|_| c.error("bad number"))
}

fn parse_quoted(c: &mut Cursor<'_>) -> Result<String, JsonPathError> {
    let Some(q) = c.peek() else {
        return Err(c.error("expected a quoted string"));
    };
    c.i += 1;
    let start = c.i;
    while let Some(b) = c.peek() {
        if b == b'\\' {
            c.i += 2;
            continue;
        }
        if b == q {
            let s = unescape(&c.text[start..c.i]);
            c.i += 1;
            return Ok(s);
        }
        c.i += 1;
    }
    Err(c.error("unterminated quoted string"))
}

fn parse_filter(c: &mut Cursor<'_>) -> Result<Filter, JsonPathError> {
    c.skip_ws();
    let left = parse_operand(c)?;
    c.skip_ws();
    let op = if c.s[c.i..].starts_with(b"==") {
        Some(Op::Eq)
    } else if c.s[c.i..].starts_with(b"!=") {
        Some(Op::Ne)
    } else if c.s[c.i..].starts_with(b"<=") {
        Some(Op::Le)
    } else if c.s[c.i..].starts_with(b">=") {
        Some(Op::Ge)
    } else if c.peek() == Some(b'<') {
        Some(Op::Lt)
    } else if c.peek() == Some(b'>') {
        Some(Op::Gt)
    } else {
        None
    };
    let Some(op) = op else {
        return match left {
            Operand::Path(p) => Ok(Filter::Exists(p)),
            Operand::Literal(_) => Err(c.error("a filter needs a path")),
        };
    };
    c.i += if matches!(op, Op::Lt | Op::Gt) { 1 } else { 2 };
    c.skip_ws();
    let right = parse_operand(c)?;
    c.skip_ws();
    Ok(Filter::Compare(left, op, right))
}

fn parse_operand(c: &mut Cursor<'_>) -> Result<Operand, JsonPathError> {
    match c.peek() {
        Some(b'@' | b'$' | b'.') => Ok(Operand::Path(parse_steps(c, true)?)),
        Some(b'\'' | b'"') => Ok(Operand::Literal(Value::String(parse_quoted(c)?))),
        _ => {
            let start = c.i;
            while c
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'+'))
            {
                c.i += 1;
            }
            let word = &c.text[start..c.i];
            match word {
                "true" => Ok(Operand::Literal(Value::Bool(true))),
                "false" => Ok(Operand::Literal(Value::Bool(false))),
                "nil" | "null" => Ok(Operand::Literal(Value::Null)),
                _ => serde_json::from_str::<serde_json::Number>(word)
                    .map(|n| Operand::Literal(Value::Number(n)))
                    .map_err(|_| c.error("expected a path, a quoted string or a number")),
            }
        }
    }
}

fn eval<'a>(
    steps: &[Step],
    root: &'a Value,
    current: &'a Value,
    allow_missing: bool,
) -> Result<Vec<&'a Value>, JsonPathError> {
    let mut nodes = vec![current];
    let mut descending = false;
    for step in steps {
        if matches!(step, Step::Descend) {
            let mut all = Vec::new();
            for n in &nodes {
                descendants(n, &mut all);
            }
            nodes = all;
            descending = true;
            continue;
        }
        let mut next = Vec::new();
        let had_input = !nodes.is_empty();
        for n in &nodes {
            apply(step, root, n, descending, &mut next)?;
        }
        // As kubectl: a field is missing when none of the nodes has it (an error only with
        // `--allow-missing-template-keys=false`).
        if let Step::Field(name) = step
            && next.is_empty()
            && had_input
            && !allow_missing
            && !descending
        {
            return Err(JsonPathError::NotFound(name.clone()));
        }
        descending = false;
        nodes = next;
    }
    Ok(nodes)
}

fn descendants<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(v);
    match v {
        Value::Object(m) => m.values().for_each(|c| descendants(c, out)),
        Value::Array(a) => a.iter().for_each(|c| descendants(c, out)),
        _ => {}
    }
}

fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    usize::try_from(i).ok().filter(|i| *i < len)
}

/// One step from `v`. `lenient` (under `..`) skips what does not apply instead of failing.
fn apply<'a>(
    step: &Step,
    root: &'a Value,
    v: &'a Value,
    lenient: bool,
    out: &mut Vec<&'a Value>,
) -> Result<(), JsonPathError> {
    match step {
        Step::Field(name) => {
            if let Some(x) = v.as_object().and_then(|m| m.get(name.as_str())) {
                out.push(x);
            }
        }
        Step::Keys(keys) => {
            for k in keys {
                apply(&Step::Field(k.clone()), root, v, lenient, out)?;
            }
        }
        Step::All => match v {
            Value::Array(a) => out.extend(a.iter()),
            Value::Object(m) => out.extend(m.values()),
            _ => {}
        },
        Step::Descend => out.push(v),
        Step::Index(i) => {
            if let Value::Array(a) = v {
                match index(*i, a.len()) {
                    Some(i) => out.push(&a[i]),
                    None if lenient => {}
                    None => {
                        return Err(JsonPathError::OutOfBounds {
                            index: *i,
                            len: a.len(),
                        });
                    }
                }
            }
        }
        Step::Indices(idx) => {
            for i in idx {
                apply(&Step::Index(*i), root, v, lenient, out)?;
            }
        }
        Step::Slice(start, end, step) => {
            if let Value::Array(a) = v {
                let len = a.len() as i64;
                let norm = |x: i64| if x < 0 { x + len } else { x };
                let s = norm(start.unwrap_or(0));
                let e = norm(end.unwrap_or(len));
                // kubectl's bounds: an empty range passes, anything else must fit.
                if s != e && !lenient {
                    let index = if s >= len || s < 0 {
                        Some(s)
                    } else if e > len || e < 0 {
                        Some(e - 1)
                    } else {
                        None
                    };
                    if let Some(index) = index {
                        return Err(JsonPathError::OutOfBounds {
                            index,
                            len: a.len(),
                        });
                    }
                    if s > e {
                        return Err(JsonPathError::Syntax(format!(
                            "starting index {s} is greater than ending index {e}"
                        )));
                    }
                }
                let (s, e) = (s.clamp(0, len), e.clamp(0, len));
                let st = step.unwrap_or(1).max(1);
                let mut i = s;
                while i < e {
                    out.push(&a[i as usize]);
                    i += st;
                }
            }
        }
        Step::Filter(f) => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for item in items {
                if matches(f, root, item)? {
                    out.push(item);
                }
            }
        }
    }
    Ok(())
}

fn matches(f: &Filter, root: &Value, item: &Value) -> Result<bool, JsonPathError> {
    match f {
        Filter::Exists(p) => Ok(!eval(p, root, item, true)?.is_empty()),
        Filter::Compare(l, op, r) => {
            let left = operand(l, root, item)?;
            let right = operand(r, root, item)?;
            Ok(left
                .iter()
                .any(|a| right.iter().any(|b| compare(a, *op, b))))
        }
    }
}

fn operand(o: &Operand, root: &Value, item: &Value) -> Result<Vec<Value>, JsonPathError> {
    match o {
        Operand::Literal(v) => Ok(vec![v.clone()]),
        Operand::Path(p) => Ok(eval(p, root, item, true)?.into_iter().cloned().collect()),
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ if matches!(op, Op::Eq | Op::Ne) => {
            // Mixed types: a number or a boolean written as a string compares by its text.
            if to_text(a) == to_text(b) && !a.is_object() && !a.is_array() {
                Some(Ordering::Equal)
            } else {
                None
            }
        }
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "kind": "VirtualService",
            "metadata": {"name": "web-vsvc", "labels": {"app": "web", "app.kubernetes.io/name": "w"}},
            "spec": {
                "hosts": ["web-service"],
                "http": [
                    {"name": "canary-testing", "match": [{"headers": {"x": {"exact": "y"}}}], "timeout": "5s",
                     "route": [{"destination": {"host": "web-service", "subset": "canary"}, "weight": 100}]},
                    {"name": "primary",
                     "route": [{"destination": {"host": "web-service", "subset": "stable"}, "weight": 90},
                               {"destination": {"host": "web-service", "subset": "canary"}, "weight": 10}]}
                ]
            }
        })
    }

    fn run(t: &str) -> String {
        Template::parse(t).unwrap().render(&doc()).unwrap()
    }

    #[test]
    fn fields_wildcards_and_indices() {
        assert_eq!(run("{.spec.http[*].name}"), "canary-testing primary");
        assert_eq!(run("{$.metadata.name}"), "web-vsvc");
        assert_eq!(run("{metadata.name}"), "web-vsvc");
        assert_eq!(run("{.spec.http[0].name}"), "canary-testing");
        assert_eq!(run("{.spec.http[-1].name}"), "primary");
        assert_eq!(run("{.spec.http[0:1].name}"), "canary-testing");
        assert_eq!(run("{.spec.http[1].route[*].weight}"), "90 10");
        assert_eq!(run("{.spec.http[0,1].name}"), "canary-testing primary");
        assert_eq!(run("{.metadata['name','kind']}"), "web-vsvc");
        assert_eq!(run("{.metadata.labels['app.kubernetes.io/name']}"), "w");
        assert_eq!(run("{.metadata.labels.app\\.kubernetes\\.io/name}"), "w");
        assert_eq!(run("{.spec.hosts}"), r#"["web-service"]"#);
        assert_eq!(
            run("{.metadata.labels}"),
            r#"{"app":"web","app.kubernetes.io/name":"w"}"#
        );
        assert_eq!(run("{.spec.http[0].route[0].destination.subset}"), "canary");
    }

    #[test]
    fn filters_recursive_descent_and_ranges() {
        assert_eq!(
            run(r#"{.spec.http[?(@.name=="primary")].route[0].weight}"#),
            "90"
        );
        assert_eq!(
            run(r#"{.spec.http[?(@.name!="primary")].name}"#),
            "canary-testing"
        );
        assert_eq!(
            run("{.spec.http[1].route[?(@.weight<50)].destination.subset}"),
            "canary"
        );
        assert_eq!(
            run("{.spec.http[1].route[?(@.weight>=90)].destination.subset}"),
            "stable"
        );
        assert_eq!(run("{.spec.http[1].route[?(@.weight<=10)].weight}"), "10");
        assert_eq!(run("{.spec.http[1].route[?(@.weight > 10)].weight}"), "90");
        assert_eq!(run("{.spec.http[?(@.timeout)].name}"), "canary-testing");
        assert_eq!(run("{..subset}"), "canary stable canary");
        assert_eq!(run("{..weight}"), "100 90 10");
        assert_eq!(
            run(r#"{range .spec.http[*]}{.name}{"\t"}{.route[*].weight}{"\n"}{end}"#),
            "canary-testing\t100\nprimary\t90 10\n"
        );
        assert_eq!(run("name: {.metadata.name}!"), "name: web-vsvc!");
        assert_eq!(run("{'\\n'}"), "\n");
    }

    #[test]
    fn missing_keys_print_nothing_unless_disallowed() {
        assert_eq!(run("{.spec.nothere}"), "");
        // Some nodes have the field: no error even when missing keys are errors.
        let mut t = Template::parse("{.spec.http[*].timeout}").unwrap();
        t.allow_missing = false;
        assert_eq!(t.render(&doc()).unwrap(), "5s");
        // Indices out of range are errors either way, as in kubectl.
        let t = Template::parse("{.spec.http[5].name}").unwrap();
        assert!(t.render(&doc()).is_err());
        let t = Template::parse("{.spec.http[0:3].name}").unwrap();
        assert_eq!(
            t.render(&doc()).unwrap_err().to_string(),
            "array index out of bounds: index 2, length 2"
        );
        assert_eq!(run("{.spec.http[1:1].name}"), "");
        assert_eq!(run("{.n}"), "");
        assert_eq!(
            Template::parse("{.f} {.g}")
                .unwrap()
                .render(&json!({"f": 100.0, "g": 0.5}))
                .unwrap(),
            "100 0.5"
        );
        let mut t = Template::parse("{.spec.nothere}").unwrap();
        t.allow_missing = false;
        assert_eq!(
            t.render(&doc()).unwrap_err().to_string(),
            "nothere is not found"
        );
        let mut t = Template::parse("{.spec.http[5]}").unwrap();
        t.allow_missing = false;
        assert_eq!(
            t.render(&doc()).unwrap_err().to_string(),
            "array index out of bounds: index 5, length 2"
        );
    }

    #[test]
    fn bad_templates_are_errors_not_panics() {
        for bad in [
            "{.a",
            "{.a[}",
            "{.a[?(@.x==)]}",
            "{end}",
            "{range .a}",
            "{.a[\"x}",
            "{.a[1:x]}",
            "{\"x}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let deep = format!("{{.a{}}}", "[?(@.b".repeat(40));
        assert!(Template::parse(&deep).is_err());
        // Deep or odd input stays bounded.
        let t = Template::parse("{..a}").unwrap();
        let mut v = json!(1);
        for _ in 0..200 {
            v = json!({"a": v});
        }
        assert_eq!(t.render(&v).unwrap().split(' ').count(), 200);
    }

    #[test]
    fn find_returns_each_match_for_custom_columns() {
        let t = Template::parse("{.spec.http[*].name}").unwrap();
        assert_eq!(
            t.find(&doc()).unwrap(),
            vec![json!("canary-testing"), json!("primary")]
        );
    }
}
