//! The expression language of Argo Rollouts' `successCondition` and `failureCondition`
//! (antonmedv/expr), in the subset Argo's documentation and examples use:
//!
//! - literals: numbers, `"strings"` / `'strings'`, `true`, `false`, `nil`, lists `[1, 2]`;
//! - the variable `result` (a number for a scalar, a list of numbers for a vector);
//! - `result[0]`, `result[-1]` (from the end);
//! - `+ - * / % **`, comparisons `== != < <= > >=`, `in` / `not in`, `&&` `and`, `||` `or`,
//!   `!` `not`, `cond ? a : b`, `a ?? b`;
//! - functions: `len`, `isNaN`, `isInf`, `isNil`, `default`, `asInt`, `asFloat`, `abs`,
//!   `ceil`, `floor`, `round`, `max`, `min`, `sum`, `mean`, `first`, `last`;
//! - predicates over lists: `all(result, {# > 0.9})`, `any`, `none`, `one`, `filter`, `map`,
//!   `count`, with `#` the element.
//!
//! Anything else is refused when the condition is compiled (at load time), with the column.
//! Compiling and evaluating are bounded: the text's length, the nesting depth and the number of
//! evaluation steps all have limits, so hostile text gives an error, never a panic or a hang.

use std::fmt;

/// The longest condition compiled.
pub const MAX_LEN: usize = 4096;
/// The deepest nesting of sub-expressions.
pub const MAX_DEPTH: usize = 32;
/// The most evaluation steps one evaluation takes (closures over long lists).
pub const MAX_STEPS: usize = 1_000_000;

/// A value of the language.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Num(f64),
    Str(String),
    List(Vec<Value>),
}

impl Value {
    /// A list of numbers: a vector's values.
    pub fn numbers(values: &[f64]) -> Value {
        Value::List(values.iter().map(|v| Value::Num(*v)).collect())
    }

    /// Go's type names, as expr's messages print them.
    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Num(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "[]interface {}",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Num(n) => f.write_str(&format_number(*n)),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A number as Prometheus' Go client prints a sample value: the shortest decimal that reads
/// back the same, `NaN`, `+Inf`, `-Inf`.
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n == f64::INFINITY {
        "+Inf".into()
    } else if n == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{n}")
    }
}

/// Why a condition does not compile or evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("{message} (1:{column})")]
    Syntax { message: String, column: usize },
    #[error("{0}")]
    Eval(String),
}

fn eval_err<T>(message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError::Eval(message.into()))
}

// === Tokens ===

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

const OPS: &[&str] = &[
    "**", "==", "!=", "<=", ">=", "&&", "||", "??", "<", ">", "+", "-", "*", "/", "%", "^", "!",
    "(", ")", "[", "]", "{", "}", ",", ".", "?", ":", "#",
];

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |message: String, at: usize| ExprError::Syntax {
        message,
        column: at + 1,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                // An exponent's sign belongs to the number.
                if (chars[i] == 'e' || chars[i] == 'E')
                    && matches!(chars.get(i + 1), Some('+') | Some('-'))
                {
                    i += 1;
                }
                i += 1;
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let n = parse_number(&text)
                .ok_or_else(|| err(format!("invalid number {text:?}"), start))?;
            out.push((Tok::Num(n), start));
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), start));
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(err("literal not terminated".into(), start));
                };
                i += 1;
                if d == c {
                    break;
                }
                if d == '\\' && c != '`' {
                    let Some(&e) = chars.get(i) else {
                        return Err(err("literal not terminated".into(), start));
                    };
                    i += 1;
                    s.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '\\' | '"' | '\'' => e,
                        _ => return Err(err(format!("invalid escape \\{e}"), i - 2)),
                    });
                } else {
                    s.push(d);
                }
            }
            out.push((Tok::Str(s), start));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match OPS.iter().find(|op| rest.starts_with(**op)) {
            Some(op) => {
                i += op.chars().count();
                out.push((Tok::Op(op), start));
            }
            None => return Err(err(format!("unexpected token {c:?}"), start)),
        }
    }
    Ok(out)
}

fn parse_number(text: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(|n| n as f64);
    }
    if lower.chars().any(|c| c.is_ascii_alphabetic() && c != 'e') {
        return None;
    }
    text.parse::<f64>().ok()
}

// === Syntax tree ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bin {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Coalesce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Len,
    IsNaN,
    IsInf,
    IsNil,
    Default,
    AsInt,
    AsFloat,
    Abs,
    Ceil,
    Floor,
    Round,
    Max,
    Min,
    Sum,
    Mean,
    First,
    Last,
    All,
    Any,
    None,
    One,
    Filter,
    Map,
    Count,
}

impl Func {
    fn by_name(name: &str) -> Option<Func> {
        Some(match name {
            "len" => Func::Len,
            "isNaN" => Func::IsNaN,
            "isInf" => Func::IsInf,
            "isNil" => Func::IsNil,
            "default" => Func::Default,
            "asInt" | "int" => Func::AsInt,
            "asFloat" | "float" => Func::AsFloat,
            "abs" => Func::Abs,
            "ceil" => Func::Ceil,
            "floor" => Func::Floor,
            "round" => Func::Round,
            "max" => Func::Max,
            "min" => Func::Min,
            "sum" => Func::Sum,
            "mean" => Func::Mean,
            "first" => Func::First,
            "last" => Func::Last,
            "all" => Func::All,
            "any" => Func::Any,
            "none" => Func::None,
            "one" => Func::One,
            "filter" => Func::Filter,
            "map" => Func::Map,
            "count" => Func::Count,
            _ => return None,
        })
    }

    /// Predicates take a list and a closure `{...}`.
    fn takes_closure(self) -> bool {
        matches!(
            self,
            Func::All | Func::Any | Func::None | Func::One | Func::Filter | Func::Map | Func::Count
        )
    }

    /// (fewest, most) arguments.
    fn arity(self) -> (usize, usize) {
        match self {
            Func::Default => (2, 2),
            Func::Max | Func::Min => (1, 64),
            f if f.takes_closure() => (2, 2),
            _ => (1, 1),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Lit(Value),
    Result,
    /// `#`: the element of the closure around it.
    Elem,
    List(Vec<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Bin(Bin, Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Index(Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
    Closure(Box<Node>),
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    depth: usize,
    closures: usize,
}

impl Parser {
    fn column(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.1) + 1
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError::Syntax {
            message: message.into(),
            column: self.column(),
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == w)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let yes = self.peek_op(op);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            match self.peek() {
                Some(t) => self.fail(format!("unexpected token {}; expected {op:?}", show(t))),
                None => self.fail(format!("unexpected end of expression; expected {op:?}")),
            }
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(format!("expression nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    /// A binary node, refused when the tree would be deeper than [`MAX_DEPTH`] (a long chain
    /// such as `1+1+...` is built without recursion but evaluated with it).
    fn bin(&self, op: Bin, l: Node, r: Node) -> Result<Node, ExprError> {
        let node = Node::Bin(op, Box::new(l), Box::new(r));
        self.check_depth(&node)?;
        Ok(node)
    }

    fn check_depth(&self, node: &Node) -> Result<(), ExprError> {
        if depth(node) > MAX_DEPTH {
            return self.fail(format!("expression nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Node, ExprError> {
        self.enter()?;
        let cond = self.coalesce()?;
        let out = if self.eat_op("?") {
            let a = self.expr()?;
            self.expect_op(":")?;
            let b = self.expr()?;
            Node::Cond(Box::new(cond), Box::new(a), Box::new(b))
        } else {
            cond
        };
        self.depth -= 1;
        Ok(out)
    }

    fn coalesce(&mut self) -> Result<Node, ExprError> {
        let mut left = self.or()?;
        while self.eat_op("??") {
            let right = self.or()?;
            left = self.bin(Bin::Coalesce, left, right)?;
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut left = self.and()?;
        while self.eat_op("||") || self.eat_word("or") {
            let right = self.and()?;
            left = self.bin(Bin::Or, left, right)?;
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut left = self.compare()?;
        while self.eat_op("&&") || self.eat_word("and") {
            let right = self.compare()?;
            left = self.bin(Bin::And, left, right)?;
        }
        Ok(left)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.peek_word(w);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn compare(&mut self) -> Result<Node, ExprError> {
        let mut left = self.additive()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op("==")) => Bin::Eq,
                Some(Tok::Op("!=")) => Bin::Ne,
                Some(Tok::Op("<")) => Bin::Lt,
                Some(Tok::Op("<=")) => Bin::Le,
                Some(Tok::Op(">")) => Bin::Gt,
                Some(Tok::Op(">=")) => Bin::Ge,
                Some(Tok::Ident(w)) if w == "in" => Bin::In,
                Some(Tok::Ident(w))
                    if w == "not"
                        && matches!(self.toks.get(self.pos + 1), Some((Tok::Ident(n), _)) if n == "in") =>
                {
                    self.pos += 1;
                    Bin::NotIn
                }
                Some(Tok::Ident(w))
                    if matches!(
                        w.as_str(),
                        "matches" | "contains" | "startsWith" | "endsWith"
                    ) =>
                {
                    return self.fail(format!("operator {w} is not supported by skein"));
                }
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.additive()?;
            left = self.bin(op, left, right)?;
        }
    }

    fn additive(&mut self) -> Result<Node, ExprError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.eat_op("+") {
                Bin::Add
            } else if self.eat_op("-") {
                Bin::Sub
            } else {
                return Ok(left);
            };
            let right = self.multiplicative()?;
            left = self.bin(op, left, right)?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node, ExprError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                Bin::Mul
            } else if self.eat_op("/") {
                Bin::Div
            } else if self.eat_op("%") {
                Bin::Mod
            } else {
                return Ok(left);
            };
            let right = self.unary()?;
            left = self.bin(op, left, right)?;
        }
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        self.enter()?;
        let out = if self.eat_op("!") || self.eat_word("not") {
            Node::Not(Box::new(self.unary()?))
        } else if self.eat_op("-") {
            Node::Neg(Box::new(self.unary()?))
        } else if self.eat_op("+") {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(out)
    }

    fn power(&mut self) -> Result<Node, ExprError> {
        let base = self.postfix()?;
        if self.eat_op("**") || self.eat_op("^") {
            let exp = self.unary()?;
            return self.bin(Bin::Pow, base, exp);
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Node, ExprError> {
        let mut node = self.primary()?;
        loop {
            if self.eat_op("[") {
                if self.peek_op(":") {
                    return self.fail("slices are not supported by skein");
                }
                let index = self.expr()?;
                if self.peek_op(":") {
                    return self.fail("slices are not supported by skein");
                }
                self.expect_op("]")?;
                node = Node::Index(Box::new(node), Box::new(index));
                self.check_depth(&node)?;
            } else if self.peek_op(".") || self.peek_op("?") && self.is_optional_chain() {
                return self.fail(
                    "field access is not supported: result is a number or a list of numbers",
                );
            } else {
                return Ok(node);
            }
        }
    }

    fn is_optional_chain(&self) -> bool {
        matches!(self.toks.get(self.pos + 1), Some((Tok::Op("."), _)))
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        let Some((tok, _)) = self.toks.get(self.pos).cloned() else {
            return self.fail("unexpected end of expression");
        };
        match tok {
            Tok::Num(n) => {
                self.pos += 1;
                Ok(Node::Lit(Value::Num(n)))
            }
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Node::Lit(Value::Str(s)))
            }
            Tok::Op("(") => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Op("[") => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat_op("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat_op("]") {
                            break;
                        }
                        self.expect_op(",")?;
                        if self.eat_op("]") {
                            break;
                        }
                    }
                }
                Ok(Node::List(items))
            }
            Tok::Op("#") => {
                if self.closures == 0 {
                    return self
                        .fail("# is only valid inside a predicate such as all(result, {# > 0})");
                }
                self.pos += 1;
                Ok(Node::Elem)
            }
            Tok::Ident(name) => {
                self.pos += 1;
                match name.as_str() {
                    "true" => return Ok(Node::Lit(Value::Bool(true))),
                    "false" => return Ok(Node::Lit(Value::Bool(false))),
                    "nil" => return Ok(Node::Lit(Value::Nil)),
                    _ => {}
                }
                if self.peek_op("(") {
                    self.pos -= 1;
                    let Some(func) = Func::by_name(&name) else {
                        return self.fail(format!("unknown func {name}"));
                    };
                    self.pos += 2;
                    return self.call(func, &name);
                }
                if name == "result" {
                    return Ok(Node::Result);
                }
                self.pos -= 1;
                self.fail(format!("unknown name {name}"))
            }
            Tok::Op(op) => self.fail(format!("unexpected token Operator({op:?})")),
        }
    }

    fn call(&mut self, func: Func, name: &str) -> Result<Node, ExprError> {
        let mut args = Vec::new();
        if !self.eat_op(")") {
            loop {
                if func.takes_closure() && args.len() == 1 {
                    self.expect_op("{")?;
                    self.closures += 1;
                    let body = self.expr()?;
                    self.closures -= 1;
                    self.expect_op("}")?;
                    args.push(Node::Closure(Box::new(body)));
                } else {
                    args.push(self.expr()?);
                }
                if self.eat_op(")") {
                    break;
                }
                self.expect_op(",")?;
            }
        }
        let (lo, hi) = func.arity();
        if args.len() < lo || args.len() > hi {
            let want = if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo} to {hi}")
            };
            return self.fail(format!(
                "{name}() takes {want} argument(s), got {}",
                args.len()
            ));
        }
        Ok(Node::Call(func, args))
    }
}

/// The tree's depth. Every tree the parser keeps is at most [`MAX_DEPTH`] deep, so this
/// recursion is bounded too.
fn depth(n: &Node) -> usize {
    1 + match n {
        Node::Lit(_) | Node::Result | Node::Elem => 0,
        Node::List(items) | Node::Call(_, items) => items.iter().map(depth).max().unwrap_or(0),
        Node::Not(a) | Node::Neg(a) | Node::Closure(a) => depth(a),
        Node::Bin(_, a, b) | Node::Index(a, b) => depth(a).max(depth(b)),
        Node::Cond(a, b, c) => depth(a).max(depth(b)).max(depth(c)),
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("Number({})", format_number(*n)),
        Tok::Str(s) => format!("String({s:?})"),
        Tok::Ident(i) => format!("Identifier({i:?})"),
        Tok::Op(o) => format!("Operator({o:?})"),
    }
}

// === Programs ===

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    root: Node,
}

impl Program {
    /// Compiles `src`, refusing what is outside the subset, with the column of the problem.
    pub fn compile(src: &str) -> Result<Program, ExprError> {
        if src.len() > MAX_LEN {
            return Err(ExprError::Syntax {
                message: format!("expression longer than {MAX_LEN} bytes"),
                column: 1,
            });
        }
        let toks = lex(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            end: src.chars().count(),
            depth: 0,
            closures: 0,
        };
        if p.toks.is_empty() {
            return p.fail("empty expression");
        }
        let root = p.expr()?;
        if let Some(t) = p.peek() {
            let t = show(t);
            return p.fail(format!("unexpected token {t}"));
        }
        Ok(Program { root })
    }

    /// Evaluates with `result` bound to `result`.
    pub fn eval(&self, result: &Value) -> Result<Value, ExprError> {
        let mut cx = Eval {
            result,
            elems: Vec::new(),
            steps: 0,
        };
        cx.eval(&self.root)
    }

    /// Evaluates a condition, which must give a boolean (expr: `expected bool, but got T`).
    pub fn eval_bool(&self, result: &Value) -> Result<bool, ExprError> {
        match self.eval(result)? {
            Value::Bool(b) => Ok(b),
            other => eval_err(format!("expected bool, but got {}", other.type_name())),
        }
    }
}

struct Eval<'a> {
    result: &'a Value,
    elems: Vec<Value>,
    steps: usize,
}

impl Eval<'_> {
    fn eval(&mut self, n: &Node) -> Result<Value, ExprError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return eval_err(format!("evaluation takes more than {MAX_STEPS} steps"));
        }
        Ok(match n {
            Node::Lit(v) => v.clone(),
            Node::Result => self.result.clone(),
            Node::Elem => self.elems.last().cloned().unwrap_or(Value::Nil),
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.eval(i)?);
                }
                Value::List(out)
            }
            Node::Not(a) => match self.eval(a)? {
                Value::Bool(b) => Value::Bool(!b),
                v => return eval_err(format!("invalid operation: ! ({})", v.type_name())),
            },
            Node::Neg(a) => match self.eval(a)? {
                Value::Num(x) => Value::Num(-x),
                v => return eval_err(format!("invalid operation: - ({})", v.type_name())),
            },
            Node::Cond(c, a, b) => match self.eval(c)? {
                Value::Bool(true) => self.eval(a)?,
                Value::Bool(false) => self.eval(b)?,
                v => {
                    return eval_err(format!(
                        "non-bool expression (type {}) used as condition",
                        v.type_name()
                    ));
                }
            },
            Node::Bin(op, a, b) => self.binary(*op, a, b)?,
            Node::Index(list, index) => {
                let list = self.eval(list)?;
                let index = self.eval(index)?;
                index_of(&list, &index)?
            }
            Node::Call(f, args) => self.call(*f, args)?,
            Node::Closure(_) => return eval_err("a predicate is only valid as an argument"),
        })
    }

    fn bool_of(&mut self, n: &Node, op: &str) -> Result<bool, ExprError> {
        match self.eval(n)? {
            Value::Bool(b) => Ok(b),
            v => eval_err(format!(
                "invalid operation: {op} (mismatched types {} and bool)",
                v.type_name()
            )),
        }
    }

    fn binary(&mut self, op: Bin, a: &Node, b: &Node) -> Result<Value, ExprError> {
        match op {
            Bin::And => {
                return Ok(Value::Bool(
                    self.bool_of(a, "&&")? && self.bool_of(b, "&&")?,
                ));
            }
            Bin::Or => {
                return Ok(Value::Bool(
                    self.bool_of(a, "||")? || self.bool_of(b, "||")?,
                ));
            }
            Bin::Coalesce => {
                let l = self.eval(a)?;
                return if l == Value::Nil { self.eval(b) } else { Ok(l) };
            }
            _ => {}
        }
        let l = self.eval(a)?;
        let r = self.eval(b)?;
        let mismatch = |sym: &str| {
            eval_err(format!(
                "invalid operation: {sym} (mismatched types {} and {})",
                l.type_name(),
                r.type_name()
            ))
        };
        Ok(match op {
            Bin::Eq => Value::Bool(equal(&l, &r)),
            Bin::Ne => Value::Bool(!equal(&l, &r)),
            Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge => {
                let sym = match op {
                    Bin::Lt => "<",
                    Bin::Le => "<=",
                    Bin::Gt => ">",
                    _ => ">=",
                };
                let ord = match (&l, &r) {
                    (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
                    (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
                    _ => return mismatch(sym),
                };
                use std::cmp::Ordering::*;
                Value::Bool(match (op, ord) {
                    (_, None) => false,
                    (Bin::Lt, Some(o)) => o == Less,
                    (Bin::Le, Some(o)) => o != Greater,
                    (Bin::Gt, Some(o)) => o == Greater,
                    (_, Some(o)) => o != Less,
                })
            }
            Bin::In | Bin::NotIn => {
                let found = match &r {
                    Value::List(items) => items.iter().any(|i| equal(i, &l)),
                    _ => return mismatch(if op == Bin::In { "in" } else { "not in" }),
                };
                Value::Bool(found == (op == Bin::In))
            }
            Bin::Add => match (&l, &r) {
                (Value::Num(x), Value::Num(y)) => Value::Num(x + y),
                (Value::Str(x), Value::Str(y)) => {
                    if x.len() + y.len() > MAX_LEN * 16 {
                        return eval_err("string too long");
                    }
                    Value::Str(format!("{x}{y}"))
                }
                _ => return mismatch("+"),
            },
            Bin::Sub | Bin::Mul | Bin::Div | Bin::Mod | Bin::Pow => {
                let (Value::Num(x), Value::Num(y)) = (&l, &r) else {
                    let sym = match op {
                        Bin::Sub => "-",
                        Bin::Mul => "*",
                        Bin::Div => "/",
                        Bin::Mod => "%",
                        _ => "**",
                    };
                    return mismatch(sym);
                };
                let (x, y) = (*x, *y);
                Value::Num(match op {
                    Bin::Sub => x - y,
                    Bin::Mul => x * y,
                    Bin::Div => x / y,
                    Bin::Mod => {
                        if x.fract() != 0.0 || y.fract() != 0.0 {
                            return mismatch("%");
                        }
                        if y == 0.0 {
                            return eval_err("integer divide by zero");
                        }
                        x % y
                    }
                    _ => x.powf(y),
                })
            }
            Bin::And | Bin::Or | Bin::Coalesce => unreachable_value(),
        })
    }

    fn list_arg(&mut self, n: &Node, name: &str) -> Result<Vec<Value>, ExprError> {
        match self.eval(n)? {
            Value::List(items) => Ok(items),
            v => eval_err(format!(
                "invalid argument for {name} (type {})",
                v.type_name()
            )),
        }
    }

    fn num_arg(&mut self, n: &Node, name: &str) -> Result<f64, ExprError> {
        match self.eval(n)? {
            Value::Num(x) => Ok(x),
            v => eval_err(format!(
                "invalid argument for {name} (type {})",
                v.type_name()
            )),
        }
    }

    fn call(&mut self, f: Func, args: &[Node]) -> Result<Value, ExprError> {
        Ok(match f {
            Func::Len => match self.eval(&args[0])? {
                Value::List(items) => Value::Num(items.len() as f64),
                Value::Str(s) => Value::Num(s.chars().count() as f64),
                v => return eval_err(format!("invalid argument for len (type {})", v.type_name())),
            },
            Func::IsNaN => Value::Bool(self.num_arg(&args[0], "isNaN")?.is_nan()),
            Func::IsInf => Value::Bool(self.num_arg(&args[0], "isInf")?.is_infinite()),
            Func::IsNil => Value::Bool(self.eval(&args[0])? == Value::Nil),
            Func::Default => {
                let v = self.eval(&args[0])?;
                if v == Value::Nil {
                    self.eval(&args[1])?
                } else {
                    v
                }
            }
            Func::AsInt => match self.eval(&args[0])? {
                Value::Num(x) if x.is_finite() => Value::Num(x.trunc()),
                Value::Str(s) => match s.trim().parse::<i64>() {
                    Ok(n) => Value::Num(n as f64),
                    Err(e) => return eval_err(format!("strconv.ParseInt: parsing {s:?}: {e}")),
                },
                v => return eval_err(format!("asInt() not supported on {}", v.type_name())),
            },
            Func::AsFloat => match self.eval(&args[0])? {
                Value::Num(x) => Value::Num(x),
                Value::Str(s) => match s.trim().parse::<f64>() {
                    Ok(n) => Value::Num(n),
                    Err(e) => return eval_err(format!("strconv.ParseFloat: parsing {s:?}: {e}")),
                },
                v => return eval_err(format!("asFloat() not supported on {}", v.type_name())),
            },
            Func::Abs => Value::Num(self.num_arg(&args[0], "abs")?.abs()),
            Func::Ceil => Value::Num(self.num_arg(&args[0], "ceil")?.ceil()),
            Func::Floor => Value::Num(self.num_arg(&args[0], "floor")?.floor()),
            Func::Round => Value::Num(self.num_arg(&args[0], "round")?.round()),
            Func::Max | Func::Min => {
                let name = if f == Func::Max { "max" } else { "min" };
                let mut values = Vec::new();
                for a in args {
                    match self.eval(a)? {
                        Value::List(items) => values.extend(items),
                        v => values.push(v),
                    }
                }
                let mut best: Option<f64> = None;
                for v in values {
                    let Value::Num(x) = v else {
                        return eval_err(format!(
                            "invalid argument for {name} (type {})",
                            v.type_name()
                        ));
                    };
                    best = Some(match best {
                        None => x,
                        Some(b) if (f == Func::Max && x > b) || (f == Func::Min && x < b) => x,
                        Some(b) => b,
                    });
                }
                match best {
                    Some(b) => Value::Num(b),
                    None => return eval_err(format!("not enough arguments to call {name}")),
                }
            }
            Func::Sum | Func::Mean => {
                let name = if f == Func::Sum { "sum" } else { "mean" };
                let items = self.list_arg(&args[0], name)?;
                let mut total = 0.0;
                for v in &items {
                    let Value::Num(x) = v else {
                        return eval_err(format!(
                            "invalid argument for {name} (type {})",
                            v.type_name()
                        ));
                    };
                    total += x;
                }
                if f == Func::Sum {
                    Value::Num(total)
                } else if items.is_empty() {
                    Value::Num(0.0)
                } else {
                    Value::Num(total / items.len() as f64)
                }
            }
            Func::First | Func::Last => {
                let items =
                    self.list_arg(&args[0], if f == Func::First { "first" } else { "last" })?;
                let v = if f == Func::First {
                    items.first()
                } else {
                    items.last()
                };
                v.cloned().unwrap_or(Value::Nil)
            }
            Func::All
            | Func::Any
            | Func::None
            | Func::One
            | Func::Filter
            | Func::Map
            | Func::Count => {
                let items = self.list_arg(&args[0], "a predicate")?;
                let Node::Closure(body) = &args[1] else {
                    return eval_err("a predicate needs a closure {...}");
                };
                let mut hits = 0usize;
                let mut kept = Vec::new();
                for item in items {
                    self.elems.push(item.clone());
                    let v = self.eval(body);
                    self.elems.pop();
                    let v = v?;
                    if f == Func::Map {
                        kept.push(v);
                        continue;
                    }
                    let Value::Bool(b) = v else {
                        return eval_err(format!(
                            "predicate should return boolean (got {})",
                            v.type_name()
                        ));
                    };
                    if b {
                        hits += 1;
                        if f == Func::Filter {
                            kept.push(item);
                        }
                    } else if f == Func::All {
                        return Ok(Value::Bool(false));
                    }
                    if b && f == Func::Any {
                        return Ok(Value::Bool(true));
                    }
                }
                match f {
                    Func::All => Value::Bool(true),
                    Func::Any => Value::Bool(false),
                    Func::None => Value::Bool(hits == 0),
                    Func::One => Value::Bool(hits == 1),
                    Func::Count => Value::Num(hits as f64),
                    _ => Value::List(kept),
                }
            }
        })
    }
}

/// Never reached: `&&`, `||` and `??` return before their operands are both evaluated.
fn unreachable_value() -> Value {
    Value::Nil
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        _ => a == b,
    }
}

fn index_of(list: &Value, index: &Value) -> Result<Value, ExprError> {
    let Value::List(items) = list else {
        return eval_err(format!("cannot fetch {index} from {}", list.type_name()));
    };
    let Value::Num(i) = index else {
        return eval_err(format!(
            "non-integer index {index} of type {}",
            index.type_name()
        ));
    };
    if i.fract() != 0.0 || !i.is_finite() {
        return eval_err(format!("non-integer index {}", format_number(*i)));
    }
    let len = items.len() as f64;
    let at = if *i < 0.0 { len + i } else { *i };
    if at < 0.0 || at >= len {
        return eval_err(format!(
            "index out of range: {} (array length is {})",
            format_number(*i),
            items.len()
        ));
    }
    Ok(items[at as usize].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str, result: Value) -> Result<bool, ExprError> {
        Program::compile(src)?.eval_bool(&result)
    }

    #[test]
    fn argo_documented_conditions_evaluate() {
        let v = |x: &[f64]| Value::numbers(x);
        assert_eq!(check("result[0] >= 0.95", v(&[0.97])), Ok(true));
        assert_eq!(check("result[0] >= 0.95", v(&[0.61])), Ok(false));
        assert_eq!(check("len(result) == 0", v(&[])), Ok(true));
        assert_eq!(check("len(result) == 0", v(&[1.0])), Ok(false));
        assert_eq!(check("isNaN(result[0])", v(&[f64::NAN])), Ok(true));
        assert_eq!(check("result[0] >= 0.95", v(&[f64::NAN])), Ok(false));
        assert_eq!(
            check("isNaN(result[0]) || result[0] >= 0.95", v(&[f64::NAN])),
            Ok(true)
        );
        assert_eq!(check("all(result, {# > 0.9})", v(&[0.95, 0.91])), Ok(true));
        assert_eq!(check("all(result, {# > 0.9})", v(&[0.95, 0.2])), Ok(false));
        assert!(check("any(result, # < 0.5 ? false : true)", v(&[1.0])).is_err());
        assert_eq!(check("result < 100", Value::Num(42.0)), Ok(true));
        assert_eq!(
            check("result == 1 && not (result > 2)", Value::Num(1.0)),
            Ok(true)
        );
        assert_eq!(
            check("result[0] <= 0.05 and result[1] <= 0.1", v(&[0.01, 0.2])),
            Ok(false)
        );
        assert_eq!(check("default(result, 0) >= 0", Value::Nil), Ok(true));
        assert_eq!(check("isNil(result)", Value::Nil), Ok(true));
        assert_eq!(check("asInt(result[0]) == 5", v(&[5.7])), Ok(true));
        assert_eq!(check("result[-1] == 3", v(&[1.0, 3.0])), Ok(true));
        assert_eq!(
            check(
                "2 ** 3 == 8 && 7 % 4 == 3 && -1 + 2 * 3 / 2 == 2",
                Value::Nil
            ),
            Ok(true)
        );
        assert_eq!(
            check("max(result) < 1 && min(result) > 0.1", v(&[0.2, 0.9])),
            Ok(true)
        );
        assert_eq!(
            check("sum(result) / len(result) == mean(result)", v(&[1.0, 2.0])),
            Ok(true)
        );
        assert_eq!(
            check("count(result, {# > 1}) == 1", v(&[1.0, 2.0])),
            Ok(true)
        );
        assert_eq!(
            check("1 in [1, 2] && 3 not in [1, 2]", Value::Nil),
            Ok(true)
        );
        assert_eq!(check("'a' + \"b\" == 'ab'", Value::Nil), Ok(true));
        assert_eq!(check("isInf(result[0])", v(&[f64::INFINITY])), Ok(true));
    }

    #[test]
    fn an_empty_vector_is_an_evaluation_error() {
        let e = check("result[0] >= 0.95", Value::numbers(&[])).unwrap_err();
        assert_eq!(e.to_string(), "index out of range: 0 (array length is 0)");
    }

    #[test]
    fn type_errors_say_the_types() {
        let e = check("result >= 0.95", Value::numbers(&[1.0])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid operation: >= (mismatched types []interface {} and float64)"
        );
        let e = check("result[0]", Value::numbers(&[1.0])).unwrap_err();
        assert_eq!(e.to_string(), "expected bool, but got float64");
        assert!(check("result[0] && true", Value::numbers(&[1.0])).is_err());
    }

    #[test]
    fn outside_the_subset_is_refused_at_compile_time_with_a_column() {
        for (src, want) in [
            ("result[0] >=", "unexpected end of expression (1:13)"),
            ("foo > 1", "unknown name foo (1:1)"),
            ("NaN == result", "unknown name NaN (1:1)"),
            ("bar(result)", "unknown func bar (1:1)"),
            (
                "result.x > 1",
                "field access is not supported: result is a number or a list of numbers (1:7)",
            ),
            ("result[0] > 1 )", "unexpected token Operator(\")\") (1:15)"),
            ("'abc", "literal not terminated (1:1)"),
            (
                "# > 1",
                "# is only valid inside a predicate such as all(result, {# > 0}) (1:1)",
            ),
            ("len(result, 1)", "len() takes 1 argument(s), got 2 (1:15)"),
            (
                "result matches 'x'",
                "operator matches is not supported by skein (1:8)",
            ),
            ("", "empty expression (1:1)"),
            ("1 @ 2", "unexpected token '@' (1:3)"),
        ] {
            assert_eq!(
                Program::compile(src).map(|_| ()).unwrap_err().to_string(),
                want,
                "{src}"
            );
        }
    }

    #[test]
    fn hostile_text_is_bounded() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Program::compile(&deep).is_err());
        let nots = format!("{}true", "!".repeat(5000));
        assert!(Program::compile(&nots).is_err());
        let ok = format!("{}1 == 21", "1+".repeat(20));
        assert_eq!(
            Program::compile(&ok).unwrap().eval_bool(&Value::Nil),
            Ok(true)
        );
        let long = format!("{}1", "1+".repeat(1500));
        let e = Program::compile(&long).unwrap_err().to_string();
        assert!(e.contains("nested deeper than"), "{e}");
        let list = format!("[{}]", "[".repeat(40) + &"]".repeat(40));
        assert!(Program::compile(&list).is_err());
        assert!(Program::compile(&format!("{}1", "-".repeat(100))).is_err());
        assert!(Program::compile(&"x".repeat(MAX_LEN + 1)).is_err());
        let big = Value::numbers(&vec![1.0; 2000]);
        let nested = "all(result, {all(result, {all(result, {# == 1})})})";
        let e = Program::compile(nested)
            .unwrap()
            .eval_bool(&big)
            .unwrap_err();
        assert!(e.to_string().contains("steps"), "{e}");
    }

    #[test]
    fn numbers_print_as_prometheus_prints_them() {
        assert_eq!(format_number(0.61), "0.61");
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::INFINITY), "+Inf");
        assert_eq!(Value::numbers(&[0.5, 1.0]).to_string(), "[0.5,1]");
    }
}
