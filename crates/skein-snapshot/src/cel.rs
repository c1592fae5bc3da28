//! The subset of CEL that Istio's Telemetry API takes (`accessLogging[].filter.expression`,
//! `metrics[].overrides[].tagOverrides[].value`), over Envoy's request attributes.
//!
//! An expression is parsed and type-checked once ([`Program::compile`]: the control plane
//! at apply time for the error, the proxy once per snapshot) and evaluated per request
//! against [`Attributes`] without parsing. What is outside the subset is a [`CelError`]
//! naming what is unsupported, never a filter that silently passes everything.
//!
//! The subset: attributes `request.{method, path, url_path, host, scheme, protocol, id,
//! useragent, referer, size, headers['x']}`, `response.{code, code_details, flags, size,
//! grpc_status, headers['x']}`, `connection.{mtls, requested_server_name}`,
//! `source.{address, port}`, `destination.{address, port}`, `upstream.{address, port,
//! cluster}` and `xds.cluster_name`; literals (int, string, bool); `== != < <= > >=`,
//! `&& || !`, `x in [..]`, `'k' in request.headers`, `has(request.headers.k)`, `+` on
//! strings and ints, `.startsWith() .endsWith() .contains() .matches()` (the argument a
//! literal, the regex compiled here), parentheses. As in CEL, a missing header or a type
//! error at run time makes the expression an error, which `||`/`&&` absorb where the other
//! side decides; a filter that ends in an error does not match.

use std::borrow::Cow;
use std::fmt;

/// One request attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    RequestMethod,
    RequestPath,
    RequestUrlPath,
    RequestHost,
    RequestScheme,
    RequestProtocol,
    RequestId,
    RequestUserAgent,
    RequestReferer,
    RequestSize,
    /// Lower-cased header name.
    RequestHeader(String),
    ResponseCode,
    ResponseCodeDetails,
    /// Envoy's short response flags as the access log prints them (`UH`, `-` for none).
    ResponseFlags,
    ResponseSize,
    ResponseGrpcStatus,
    ResponseHeader(String),
    ConnectionMtls,
    ConnectionRequestedServerName,
    /// `ip:port`.
    SourceAddress,
    SourcePort,
    DestinationAddress,
    DestinationPort,
    UpstreamAddress,
    UpstreamPort,
    /// `upstream.cluster` / `xds.cluster_name`.
    UpstreamCluster,
}

/// A value at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Int(i64),
    Str(Cow<'a, str>),
    Bool(bool),
}

/// What a request offers to an expression. `None`: absent (a missing header, no response
/// yet).
pub trait Attributes {
    fn get(&self, attr: &Attr) -> Option<Value<'_>>;
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CEL expression {expr:?}: {message} (at column {column})")]
pub struct CelError {
    pub expr: String,
    /// 1-based character column.
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Str,
    Bool,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Int => "int",
            Ty::Str => "string",
            Ty::Bool => "bool",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

/// A type-checked expression.
#[derive(Debug, Clone)]
enum Node {
    Lit(Value<'static>),
    Attr(Attr),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    InList(Box<Node>, Vec<Value<'static>>),
    /// `'k' in request.headers` / `has(request.headers.k)`.
    Has(Attr),
    Str(StrFn, Box<Node>, String),
    Matches(Box<Node>, Box<regex::Regex>),
    Concat(Box<Node>, Box<Node>),
    Add(Box<Node>, Box<Node>),
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Program {
    source: String,
    root: Node,
    ty: Ty,
}

/// A run-time error (a missing attribute, overflow): CEL's error value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalError;

impl Program {
    /// Parses and type-checks `expr`.
    pub fn compile(expr: &str) -> Result<Program, CelError> {
        let tokens = lex(expr)?;
        let mut p = Parser {
            src: expr,
            tokens,
            pos: 0,
        };
        let ast = p.expr()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(p.err_at(t.col, format!("unexpected {}", t.kind.describe())));
        }
        let (root, ty) = check(expr, ast)?;
        Ok(Program {
            source: expr.to_string(),
            root,
            ty,
        })
    }

    /// A filter: the expression must be a bool.
    pub fn compile_bool(expr: &str) -> Result<Program, CelError> {
        let p = Program::compile(expr)?;
        if p.ty != Ty::Bool {
            return Err(CelError {
                expr: expr.to_string(),
                column: 1,
                message: format!("a filter must be a bool expression, this is a {}", p.ty),
            });
        }
        Ok(p)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the program's value is a string or int (a tag value) rather than a bool.
    pub fn is_bool(&self) -> bool {
        self.ty == Ty::Bool
    }

    /// The filter's verdict: an error does not match.
    pub fn matches(&self, attrs: &dyn Attributes) -> bool {
        matches!(eval(&self.root, attrs), Ok(Value::Bool(true)))
    }

    /// The value as a label (`None` on error).
    pub fn eval_string(&self, attrs: &dyn Attributes) -> Option<String> {
        match eval(&self.root, attrs).ok()? {
            Value::Str(s) => Some(s.into_owned()),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
        }
    }

    /// Every attribute the program reads (e.g. to capture the headers it needs).
    pub fn attrs(&self) -> Vec<&Attr> {
        fn walk<'a>(n: &'a Node, out: &mut Vec<&'a Attr>) {
            match n {
                Node::Lit(_) => {}
                Node::Attr(a) | Node::Has(a) => out.push(a),
                Node::Not(a) | Node::InList(a, _) | Node::Str(_, a, _) | Node::Matches(a, _) => {
                    walk(a, out)
                }
                Node::And(a, b)
                | Node::Or(a, b)
                | Node::Cmp(_, a, b)
                | Node::Concat(a, b)
                | Node::Add(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Whether evaluating reads the request (an attribute); a literal-only program does not.
    pub fn reads_request(&self) -> bool {
        fn any(n: &Node) -> bool {
            match n {
                Node::Lit(_) => false,
                Node::Attr(_) | Node::Has(_) => true,
                Node::Not(a) | Node::InList(a, _) | Node::Str(_, a, _) | Node::Matches(a, _) => {
                    any(a)
                }
                Node::And(a, b)
                | Node::Or(a, b)
                | Node::Cmp(_, a, b)
                | Node::Concat(a, b)
                | Node::Add(a, b) => any(a) || any(b),
            }
        }
        any(&self.root)
    }
}

// === Lexer ===

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Int(i) => format!("number {i}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Op(o) => format!("`{o}`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    col: usize,
}

const OPS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ",", ".", "+", "-", "*",
    "/", "%", "?", ":", "{", "}",
];

fn lex(src: &str) -> Result<Vec<Token>, CelError> {
    let err = |col: usize, message: String| CelError {
        expr: src.to_string(),
        column: col,
        message,
    };
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if i < chars.len() && (chars[i] == '.' || chars[i] == 'e') {
                return Err(err(col, "floating-point numbers are not supported".into()));
            }
            if i < chars.len() && chars[i] == 'u' {
                i += 1; // an unsigned literal: compared as an int
            }
            let n = text
                .parse::<i64>()
                .map_err(|_| err(col, format!("integer {text} is out of range")))?;
            out.push(Token {
                kind: Tok::Int(n),
                col,
            });
        } else if c == '\'' || c == '"' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(err(col, "unterminated string".into()));
                };
                i += 1;
                if ch == quote {
                    break;
                }
                if ch == '\\' {
                    let Some(&esc) = chars.get(i) else {
                        return Err(err(col, "unterminated string".into()));
                    };
                    i += 1;
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '\\' | '\'' | '"' => esc,
                        other => {
                            return Err(err(i - 1, format!("escape \\{other} is not supported")));
                        }
                    });
                } else {
                    s.push(ch);
                }
            }
            out.push(Token {
                kind: Tok::Str(s),
                col,
            });
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token {
                kind: Tok::Ident(chars[start..i].iter().collect()),
                col,
            });
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPS.iter().find(|o| rest.starts_with(**o)) else {
                return Err(err(col, format!("unexpected character {c:?}")));
            };
            i += op.chars().count();
            out.push(Token {
                kind: Tok::Op(op),
                col,
            });
        }
    }
    Ok(out)
}

// === Parser (to an untyped tree) ===

#[derive(Debug, Clone)]
enum Ast {
    Int(i64),
    Str(String),
    Bool(bool),
    /// `a.b.c`.
    Path(Vec<String>, usize),
    Index(Box<Ast>, Box<Ast>, usize),
    Call(Option<Box<Ast>>, String, Vec<Ast>, usize),
    List(Vec<Ast>, usize),
    Not(Box<Ast>, usize),
    Binary(&'static str, Box<Ast>, Box<Ast>, usize),
}

impl Ast {
    fn col(&self) -> usize {
        match self {
            Ast::Path(_, c)
            | Ast::Index(_, _, c)
            | Ast::Call(_, _, _, c)
            | Ast::List(_, c)
            | Ast::Not(_, c)
            | Ast::Binary(_, _, _, c) => *c,
            _ => 1,
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

/// Deeper nesting than this is refused (the parser recurses).
const MAX_DEPTH: usize = 200;

impl Parser<'_> {
    fn err_at(&self, column: usize, message: String) -> CelError {
        CelError {
            expr: self.src.to_string(),
            column,
            message,
        }
    }

    fn end_col(&self) -> usize {
        self.src.chars().count() + 1
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token { kind: Tok::Op(o), .. }) if *o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let yes = self.peek_op(op);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_op(&mut self, op: &str) -> Result<(), CelError> {
        if self.eat_op(op) {
            return Ok(());
        }
        let (col, found) = match self.tokens.get(self.pos) {
            Some(t) => (t.col, t.kind.describe()),
            None => (self.end_col(), "the end".into()),
        };
        Err(self.err_at(col, format!("expected `{op}`, found {found}")))
    }

    fn col(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end_col(), |t| t.col)
    }

    fn expr(&mut self) -> Result<Ast, CelError> {
        self.or(0)
    }

    fn depth(&self, depth: usize) -> Result<(), CelError> {
        if depth > MAX_DEPTH {
            return Err(self.err_at(self.col(), "expression is nested too deeply".into()));
        }
        Ok(())
    }

    fn or(&mut self, d: usize) -> Result<Ast, CelError> {
        self.depth(d)?;
        let mut left = self.and(d + 1)?;
        while self.peek_op("||") {
            let col = self.col();
            self.pos += 1;
            let right = self.and(d + 1)?;
            left = Ast::Binary("||", Box::new(left), Box::new(right), col);
        }
        if self.peek_op("?") {
            return Err(self.err_at(self.col(), "the conditional `? :` is not supported".into()));
        }
        Ok(left)
    }

    fn and(&mut self, d: usize) -> Result<Ast, CelError> {
        let mut left = self.rel(d + 1)?;
        while self.peek_op("&&") {
            let col = self.col();
            self.pos += 1;
            let right = self.rel(d + 1)?;
            left = Ast::Binary("&&", Box::new(left), Box::new(right), col);
        }
        Ok(left)
    }

    fn rel(&mut self, d: usize) -> Result<Ast, CelError> {
        let left = self.add(d + 1)?;
        let col = self.col();
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat_op(op) {
                let right = self.add(d + 1)?;
                return Ok(Ast::Binary(op, Box::new(left), Box::new(right), col));
            }
        }
        if matches!(self.tokens.get(self.pos), Some(Token { kind: Tok::Ident(s), .. }) if s == "in")
        {
            self.pos += 1;
            let right = self.add(d + 1)?;
            return Ok(Ast::Binary("in", Box::new(left), Box::new(right), col));
        }
        Ok(left)
    }

    fn add(&mut self, d: usize) -> Result<Ast, CelError> {
        let mut left = self.unary(d + 1)?;
        loop {
            let col = self.col();
            if self.eat_op("+") {
                let right = self.unary(d + 1)?;
                left = Ast::Binary("+", Box::new(left), Box::new(right), col);
            } else if ["-", "*", "/", "%"].iter().any(|o| self.peek_op(o)) {
                return Err(self.err_at(col, "arithmetic other than `+` is not supported".into()));
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self, d: usize) -> Result<Ast, CelError> {
        self.depth(d)?;
        let col = self.col();
        if self.eat_op("!") {
            let inner = self.unary(d + 1)?;
            return Ok(Ast::Not(Box::new(inner), col));
        }
        if self.eat_op("-") {
            return match self.tokens.get(self.pos).map(|t| t.kind.clone()) {
                Some(Tok::Int(n)) => {
                    self.pos += 1;
                    Ok(Ast::Int(-n))
                }
                _ => Err(self.err_at(col, "unary minus is only supported on numbers".into())),
            };
        }
        self.member(d + 1)
    }

    fn member(&mut self, d: usize) -> Result<Ast, CelError> {
        let mut node = self.primary(d + 1)?;
        loop {
            let col = self.col();
            if self.eat_op(".") {
                let name = match self.tokens.get(self.pos).map(|t| t.kind.clone()) {
                    Some(Tok::Ident(s)) => s,
                    _ => return Err(self.err_at(self.col(), "expected a field name".into())),
                };
                self.pos += 1;
                if self.eat_op("(") {
                    let args = self.args(d + 1, ")")?;
                    node = Ast::Call(Some(Box::new(node)), name, args, col);
                } else {
                    node = match node {
                        Ast::Path(mut p, c) => {
                            p.push(name);
                            Ast::Path(p, c)
                        }
                        other => {
                            return Err(self.err_at(
                                other.col(),
                                format!(
                                    "field selection `.{name}` is only supported on attributes"
                                ),
                            ));
                        }
                    };
                }
            } else if self.eat_op("[") {
                let key = self.expr_at(d + 1)?;
                self.expect_op("]")?;
                node = Ast::Index(Box::new(node), Box::new(key), col);
            } else {
                return Ok(node);
            }
        }
    }

    fn expr_at(&mut self, d: usize) -> Result<Ast, CelError> {
        self.or(d)
    }

    fn args(&mut self, d: usize, close: &str) -> Result<Vec<Ast>, CelError> {
        let mut args = Vec::new();
        if self.eat_op(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr_at(d + 1)?);
            if self.eat_op(close) {
                return Ok(args);
            }
            self.expect_op(",")?;
        }
    }

    fn primary(&mut self, d: usize) -> Result<Ast, CelError> {
        self.depth(d)?;
        let col = self.col();
        let Some(tok) = self.tokens.get(self.pos).map(|t| t.kind.clone()) else {
            return Err(self.err_at(col, "unexpected end of expression".into()));
        };
        self.pos += 1;
        match tok {
            Tok::Int(n) => Ok(Ast::Int(n)),
            Tok::Str(s) => Ok(Ast::Str(s)),
            Tok::Ident(s) if s == "true" => Ok(Ast::Bool(true)),
            Tok::Ident(s) if s == "false" => Ok(Ast::Bool(false)),
            Tok::Ident(s) if s == "null" => Err(self.err_at(col, "null is not supported".into())),
            Tok::Ident(s) => {
                if self.eat_op("(") {
                    let args = self.args(d + 1, ")")?;
                    Ok(Ast::Call(None, s, args, col))
                } else {
                    Ok(Ast::Path(vec![s], col))
                }
            }
            Tok::Op("(") => {
                let inner = self.expr_at(d + 1)?;
                self.expect_op(")")?;
                Ok(inner)
            }
            Tok::Op("[") => {
                let items = self.args(d + 1, "]")?;
                Ok(Ast::List(items, col))
            }
            Tok::Op("{") => Err(self.err_at(col, "map literals are not supported".into())),
            other => Err(self.err_at(col, format!("unexpected {}", other.describe()))),
        }
    }
}

// === Type check ===

fn attr_of(path: &[String]) -> Option<(Attr, Ty)> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    Some(match p.as_slice() {
        ["request", "method"] => (Attr::RequestMethod, Ty::Str),
        ["request", "path"] => (Attr::RequestPath, Ty::Str),
        ["request", "url_path"] => (Attr::RequestUrlPath, Ty::Str),
        ["request", "host"] => (Attr::RequestHost, Ty::Str),
        ["request", "scheme"] => (Attr::RequestScheme, Ty::Str),
        ["request", "protocol"] => (Attr::RequestProtocol, Ty::Str),
        ["request", "id"] => (Attr::RequestId, Ty::Str),
        ["request", "useragent"] => (Attr::RequestUserAgent, Ty::Str),
        ["request", "referer"] => (Attr::RequestReferer, Ty::Str),
        ["request", "size"] => (Attr::RequestSize, Ty::Int),
        ["response", "code"] => (Attr::ResponseCode, Ty::Int),
        ["response", "code_details"] => (Attr::ResponseCodeDetails, Ty::Str),
        ["response", "flags"] => (Attr::ResponseFlags, Ty::Str),
        ["response", "size"] => (Attr::ResponseSize, Ty::Int),
        ["response", "grpc_status"] => (Attr::ResponseGrpcStatus, Ty::Int),
        ["connection", "mtls"] => (Attr::ConnectionMtls, Ty::Bool),
        ["connection", "requested_server_name"] => (Attr::ConnectionRequestedServerName, Ty::Str),
        ["source", "address"] => (Attr::SourceAddress, Ty::Str),
        ["source", "port"] => (Attr::SourcePort, Ty::Int),
        ["destination", "address"] => (Attr::DestinationAddress, Ty::Str),
        ["destination", "port"] => (Attr::DestinationPort, Ty::Int),
        ["upstream", "address"] => (Attr::UpstreamAddress, Ty::Str),
        ["upstream", "port"] => (Attr::UpstreamPort, Ty::Int),
        ["upstream", "cluster"] | ["xds", "cluster_name"] => (Attr::UpstreamCluster, Ty::Str),
        _ => return None,
    })
}

fn header_attr(map: &[String], key: &str) -> Option<Attr> {
    match map {
        [a, b] if a == "request" && b == "headers" => {
            Some(Attr::RequestHeader(key.to_ascii_lowercase()))
        }
        [a, b] if a == "response" && b == "headers" => {
            Some(Attr::ResponseHeader(key.to_ascii_lowercase()))
        }
        _ => None,
    }
}

fn check(src: &str, ast: Ast) -> Result<(Node, Ty), CelError> {
    let err = |column: usize, message: String| CelError {
        expr: src.to_string(),
        column,
        message,
    };
    let lit_of = |a: &Ast| -> Option<Value<'static>> {
        match a {
            Ast::Int(n) => Some(Value::Int(*n)),
            Ast::Str(s) => Some(Value::Str(Cow::Owned(s.clone()))),
            Ast::Bool(b) => Some(Value::Bool(*b)),
            _ => None,
        }
    };
    match ast {
        Ast::Int(n) => Ok((Node::Lit(Value::Int(n)), Ty::Int)),
        Ast::Str(s) => Ok((Node::Lit(Value::Str(Cow::Owned(s))), Ty::Str)),
        Ast::Bool(b) => Ok((Node::Lit(Value::Bool(b)), Ty::Bool)),
        Ast::Path(path, col) => match attr_of(&path) {
            Some((a, ty)) => Ok((Node::Attr(a), ty)),
            None => Err(err(
                col,
                format!("attribute `{}` is not supported", path.join(".")),
            )),
        },
        Ast::Index(map, key, col) => {
            let Ast::Path(path, _) = *map else {
                return Err(err(
                    col,
                    "indexing is only supported on request.headers and response.headers".into(),
                ));
            };
            let Ast::Str(k) = *key else {
                return Err(err(col, "a header name must be a string literal".into()));
            };
            match header_attr(&path, &k) {
                Some(a) => Ok((Node::Attr(a), Ty::Str)),
                None => Err(err(
                    col,
                    format!(
                        "indexing `{}` is not supported (only request.headers and response.headers)",
                        path.join(".")
                    ),
                )),
            }
        }
        Ast::List(_, col) => Err(err(col, "a list is only supported after `in`".into())),
        Ast::Not(inner, col) => {
            let (n, ty) = check(src, *inner)?;
            if ty != Ty::Bool {
                return Err(err(col, format!("`!` needs a bool, found {ty}")));
            }
            Ok((Node::Not(Box::new(n)), Ty::Bool))
        }
        Ast::Call(None, name, args, col) => {
            if name != "has" {
                return Err(err(col, format!("function `{name}` is not supported")));
            }
            let [arg] = args.as_slice() else {
                return Err(err(col, "has() takes one field selection".into()));
            };
            match arg {
                Ast::Path(p, _) if p.len() == 3 => match header_attr(&p[..2], &p[2]) {
                    Some(a) => Ok((Node::Has(a), Ty::Bool)),
                    None => Err(err(col, format!("has({}) is not supported", p.join(".")))),
                },
                Ast::Index(map, key, _) => match (map.as_ref(), key.as_ref()) {
                    (Ast::Path(p, _), Ast::Str(k)) if header_attr(p, k).is_some() => {
                        let a = header_attr(p, k).ok_or_else(|| err(col, "unreachable".into()))?;
                        Ok((Node::Has(a), Ty::Bool))
                    }
                    _ => Err(err(
                        col,
                        "has() takes an attribute such as request.headers.x".into(),
                    )),
                },
                Ast::Path(p, _) if attr_of(p).is_some() => {
                    let (a, _) = attr_of(p).ok_or_else(|| err(col, "unreachable".into()))?;
                    Ok((Node::Has(a), Ty::Bool))
                }
                _ => Err(err(
                    col,
                    "has() takes an attribute such as request.headers.x".into(),
                )),
            }
        }
        Ast::Call(Some(recv), name, args, col) => {
            let (r, ty) = check(src, *recv)?;
            let f = match name.as_str() {
                "startsWith" => Some(StrFn::StartsWith),
                "endsWith" => Some(StrFn::EndsWith),
                "contains" => Some(StrFn::Contains),
                "matches" => None,
                other => return Err(err(col, format!("method `{other}()` is not supported"))),
            };
            if ty != Ty::Str {
                return Err(err(col, format!("`{name}()` needs a string, found {ty}")));
            }
            let [Ast::Str(arg)] = args.as_slice() else {
                return Err(err(col, format!("`{name}()` takes one string literal")));
            };
            match f {
                Some(f) => Ok((Node::Str(f, Box::new(r), arg.clone()), Ty::Bool)),
                None => {
                    let re = regex::Regex::new(arg)
                        .map_err(|e| err(col, format!("invalid regex {arg:?}: {e}")))?;
                    Ok((Node::Matches(Box::new(r), Box::new(re)), Ty::Bool))
                }
            }
        }
        Ast::Binary(op, a, b, col) => {
            if op == "in" {
                return match *b {
                    Ast::List(items, lcol) => {
                        let (n, ty) = check(src, *a)?;
                        let mut vals = Vec::with_capacity(items.len());
                        for it in &items {
                            let Some(v) = lit_of(it) else {
                                return Err(err(lcol, "list items must be literals".into()));
                            };
                            let vty = match v {
                                Value::Int(_) => Ty::Int,
                                Value::Str(_) => Ty::Str,
                                Value::Bool(_) => Ty::Bool,
                            };
                            if vty != ty {
                                return Err(err(
                                    lcol,
                                    format!("cannot look for a {ty} in a list with a {vty}"),
                                ));
                            }
                            vals.push(v);
                        }
                        Ok((Node::InList(Box::new(n), vals), Ty::Bool))
                    }
                    Ast::Path(p, _) => {
                        let Ast::Str(k) = *a else {
                            return Err(err(
                                col,
                                "`in` a header map needs a string literal on the left".into(),
                            ));
                        };
                        match header_attr(&p, &k) {
                            Some(h) => Ok((Node::Has(h), Ty::Bool)),
                            None => Err(err(col, format!("`in {}` is not supported", p.join(".")))),
                        }
                    }
                    _ => Err(err(col, "`in` takes a list literal or a header map".into())),
                };
            }
            let (l, lt) = check(src, *a)?;
            let (r, rt) = check(src, *b)?;
            match op {
                "&&" | "||" => {
                    if lt != Ty::Bool || rt != Ty::Bool {
                        return Err(err(col, format!("`{op}` needs bools, found {lt} and {rt}")));
                    }
                    let node = if op == "&&" {
                        Node::And(Box::new(l), Box::new(r))
                    } else {
                        Node::Or(Box::new(l), Box::new(r))
                    };
                    Ok((node, Ty::Bool))
                }
                "+" => match (lt, rt) {
                    (Ty::Str, Ty::Str) => Ok((Node::Concat(Box::new(l), Box::new(r)), Ty::Str)),
                    (Ty::Int, Ty::Int) => Ok((Node::Add(Box::new(l), Box::new(r)), Ty::Int)),
                    _ => Err(err(col, format!("cannot add {lt} and {rt}"))),
                },
                _ => {
                    if lt != rt {
                        return Err(err(col, format!("cannot compare {lt} with {rt}")));
                    }
                    let cmp = match op {
                        "==" => CmpOp::Eq,
                        "!=" => CmpOp::Ne,
                        "<" => CmpOp::Lt,
                        "<=" => CmpOp::Le,
                        ">" => CmpOp::Gt,
                        _ => CmpOp::Ge,
                    };
                    if lt == Ty::Bool && !matches!(cmp, CmpOp::Eq | CmpOp::Ne) {
                        return Err(err(col, format!("cannot order bools with `{op}`")));
                    }
                    Ok((Node::Cmp(cmp, Box::new(l), Box::new(r)), Ty::Bool))
                }
            }
        }
    }
}

// === Evaluation ===

fn eval<'a>(n: &'a Node, attrs: &'a dyn Attributes) -> Result<Value<'a>, EvalError> {
    let bool_of = |v: Value<'_>| match v {
        Value::Bool(b) => Ok(b),
        _ => Err(EvalError),
    };
    let str_of = |v: Value<'a>| match v {
        Value::Str(s) => Ok(s),
        _ => Err(EvalError),
    };
    Ok(match n {
        Node::Lit(v) => match v {
            Value::Str(s) => Value::Str(Cow::Borrowed(s.as_ref())),
            Value::Int(i) => Value::Int(*i),
            Value::Bool(b) => Value::Bool(*b),
        },
        Node::Attr(a) => attrs.get(a).ok_or(EvalError)?,
        Node::Has(a) => Value::Bool(attrs.get(a).is_some()),
        Node::Not(a) => Value::Bool(!bool_of(eval(a, attrs)?)?),
        Node::And(a, b) => {
            // CEL: false && error = false, error && false = false.
            let l = eval(a, attrs).and_then(bool_of);
            if l == Ok(false) {
                return Ok(Value::Bool(false));
            }
            let r = eval(b, attrs).and_then(bool_of);
            match (l, r) {
                (_, Ok(false)) => Value::Bool(false),
                (Ok(true), Ok(true)) => Value::Bool(true),
                _ => return Err(EvalError),
            }
        }
        Node::Or(a, b) => {
            let l = eval(a, attrs).and_then(bool_of);
            if l == Ok(true) {
                return Ok(Value::Bool(true));
            }
            let r = eval(b, attrs).and_then(bool_of);
            match (l, r) {
                (_, Ok(true)) => Value::Bool(true),
                (Ok(false), Ok(false)) => Value::Bool(false),
                _ => return Err(EvalError),
            }
        }
        Node::Cmp(op, a, b) => {
            let l = eval(a, attrs)?;
            let r = eval(b, attrs)?;
            let ord = match (&l, &r) {
                (Value::Int(x), Value::Int(y)) => x.cmp(y),
                (Value::Str(x), Value::Str(y)) => x.as_ref().cmp(y.as_ref()),
                (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
                _ => return Err(EvalError),
            };
            use std::cmp::Ordering::*;
            Value::Bool(match op {
                CmpOp::Eq => ord == Equal,
                CmpOp::Ne => ord != Equal,
                CmpOp::Lt => ord == Less,
                CmpOp::Le => ord != Greater,
                CmpOp::Gt => ord == Greater,
                CmpOp::Ge => ord != Less,
            })
        }
        Node::InList(a, items) => {
            let v = eval(a, attrs)?;
            Value::Bool(items.iter().any(|i| match (i, &v) {
                (Value::Int(x), Value::Int(y)) => x == y,
                (Value::Str(x), Value::Str(y)) => x.as_ref() == y.as_ref(),
                (Value::Bool(x), Value::Bool(y)) => x == y,
                _ => false,
            }))
        }
        Node::Str(f, a, arg) => {
            let s = str_of(eval(a, attrs)?)?;
            Value::Bool(match f {
                StrFn::StartsWith => s.starts_with(arg.as_str()),
                StrFn::EndsWith => s.ends_with(arg.as_str()),
                StrFn::Contains => s.contains(arg.as_str()),
            })
        }
        Node::Matches(a, re) => Value::Bool(re.is_match(&str_of(eval(a, attrs)?)?)),
        Node::Concat(a, b) => {
            let mut l = str_of(eval(a, attrs)?)?.into_owned();
            l.push_str(&str_of(eval(b, attrs)?)?);
            Value::Str(Cow::Owned(l))
        }
        Node::Add(a, b) => match (eval(a, attrs)?, eval(b, attrs)?) {
            (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_add(y).ok_or(EvalError)?),
            _ => return Err(EvalError),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Req {
        code: i64,
        method: &'static str,
        path: &'static str,
        host: &'static str,
        mtls: bool,
        headers: HashMap<&'static str, &'static str>,
    }

    impl Attributes for Req {
        fn get(&self, a: &Attr) -> Option<Value<'_>> {
            Some(match a {
                Attr::ResponseCode => Value::Int(self.code),
                Attr::RequestMethod => Value::Str(self.method.into()),
                Attr::RequestPath | Attr::RequestUrlPath => Value::Str(self.path.into()),
                Attr::RequestHost => Value::Str(self.host.into()),
                Attr::ConnectionMtls => Value::Bool(self.mtls),
                Attr::DestinationPort => Value::Int(8080),
                Attr::RequestHeader(h) => Value::Str((*self.headers.get(h.as_str())?).into()),
                _ => return None,
            })
        }
    }

    fn req(code: i64) -> Req {
        Req {
            code,
            method: "GET",
            path: "/api/posts",
            host: "was-service:8080",
            mtls: true,
            headers: HashMap::from([("x-user", "alice")]),
        }
    }

    fn yes(expr: &str, r: &Req) -> bool {
        Program::compile_bool(expr)
            .unwrap_or_else(|e| panic!("{e}"))
            .matches(r)
    }

    #[test]
    fn the_istio_example_filter() {
        assert!(yes("response.code >= 400", &req(503)));
        assert!(yes("response.code >= 400", &req(404)));
        assert!(!yes("response.code >= 400", &req(200)));
    }

    #[test]
    fn every_operator() {
        let r = req(200);
        for (expr, want) in [
            ("response.code == 200", true),
            ("response.code != 200", false),
            ("response.code < 300", true),
            ("response.code <= 200", true),
            ("response.code > 200", false),
            ("response.code >= 201", false),
            ("response.code == 200 && request.method == 'GET'", true),
            ("response.code == 500 || request.method == \"GET\"", true),
            ("!(response.code == 200)", false),
            ("request.method in ['GET', 'HEAD']", true),
            ("response.code in [500, 503]", false),
            ("request.path.startsWith('/api/')", true),
            ("request.path.endsWith('posts')", true),
            ("request.host.contains('was')", true),
            ("request.path.matches('^/api/[a-z]+$')", true),
            ("has(request.headers.x_user)", false),
            ("has(request.headers['x-user'])", true),
            ("'x-user' in request.headers", true),
            ("'X-User' in request.headers", true),
            ("request.headers['x-user'] == 'alice'", true),
            ("connection.mtls", true),
            ("connection.mtls == false", false),
            ("destination.port == 8080", true),
            ("response.code + 1 == 201", true),
            ("(response.code >= 400) == false", true),
            ("response.code > -1", true),
            ("true", true),
        ] {
            assert_eq!(yes(expr, &r), want, "{expr}");
        }
    }

    #[test]
    fn has_with_a_dotted_header_name() {
        let mut r = req(200);
        r.headers.insert("x_user", "a");
        assert!(yes("has(request.headers.x_user)", &r));
    }

    #[test]
    fn a_missing_header_is_an_error_that_or_and_and_absorb() {
        let r = req(200);
        assert!(!yes("request.headers['nope'] == 'a'", &r));
        assert!(!yes("request.headers['nope'] != 'a'", &r));
        assert!(yes(
            "request.headers['nope'] == 'a' || response.code == 200",
            &r
        ));
        assert!(!yes(
            "request.headers['nope'] == 'a' && response.code == 200",
            &r
        ));
        assert!(!yes(
            "request.headers['nope'] == 'a' && response.code == 500",
            &r
        ));
    }

    #[test]
    fn strings_for_tags() {
        let r = req(200);
        let p = Program::compile("request.headers['x-user']").unwrap();
        assert_eq!(p.eval_string(&r).as_deref(), Some("alice"));
        assert!(p.reads_request());
        let p = Program::compile("'v' + request.host").unwrap();
        assert_eq!(p.eval_string(&r).as_deref(), Some("vwas-service:8080"));
        let p = Program::compile("'literal'").unwrap();
        assert!(!p.reads_request());
        assert_eq!(p.eval_string(&r).as_deref(), Some("literal"));
        let p = Program::compile("request.headers['nope']").unwrap();
        assert_eq!(p.eval_string(&r), None);
    }

    fn refused(expr: &str) -> String {
        match Program::compile_bool(expr) {
            Ok(_) => panic!("{expr} compiled"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn outside_the_subset_is_an_error_naming_what() {
        for (expr, part) in [
            (
                "response.cod >= 400",
                "attribute `response.cod` is not supported",
            ),
            ("response.code >= '400'", "cannot compare int with string"),
            ("size(request.path) > 3", "function `size` is not supported"),
            (
                "request.path.lowerAscii() == 'a'",
                "method `lowerAscii()` is not supported",
            ),
            (
                "response.code * 2 > 3",
                "arithmetic other than `+` is not supported",
            ),
            (
                "response.code >= 4.0",
                "floating-point numbers are not supported",
            ),
            (
                "response.code > 1 ? true : false",
                "the conditional `? :` is not supported",
            ),
            (
                "request.path",
                "a filter must be a bool expression, this is a string",
            ),
            ("response.code >=", "unexpected end of expression"),
            ("(response.code >= 400", "expected `)`, found the end"),
            ("request.path.matches('[')", "invalid regex"),
            (
                "request.method in [request.path]",
                "list items must be literals",
            ),
            ("response.code == 200 200", "unexpected number 200"),
            ("'abc", "unterminated string"),
            ("response.code >= 400 @", "unexpected character '@'"),
            ("connection.mtls < true", "cannot order bools"),
            ("{'a': 1}", "map literals are not supported"),
            (
                "request.query['a'] == 'b'",
                "indexing `request.query` is not supported",
            ),
        ] {
            let e = refused(expr);
            assert!(e.contains(part), "{expr}: {e}");
            assert!(e.contains(&format!("{expr:?}")), "{e}");
        }
        assert!(refused("response.cod >= 400").ends_with("(at column 1)"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let expr = format!("{}true{}", "(".repeat(5000), ")".repeat(5000));
        assert!(refused(&expr).contains("nested too deeply"));
        let expr = format!("{}true", "!".repeat(5000));
        assert!(refused(&expr).contains("nested too deeply"));
    }
}
