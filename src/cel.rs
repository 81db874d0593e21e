//! The part of CEL (Common Expression Language) a Telemetry's expressions use, over Envoy's
//! attribute names: access-log filters (`response.code >= 400`) and metric tag values
//! (`request.headers['x-user']`, `string(destination.port)`, `response.code >= 500 ? 'err' :
//! 'ok'`). Parsed and type-checked once at apply, with a message that says what meshrig knows;
//! evaluated per request against what the proxy captured. Pure.

use serde::{Deserialize, Serialize};

/// The longest expression accepted, in characters (Envoy's CEL has no smaller useful one; the
/// access-log and tag expressions of Istio's tasks are under a hundred).
pub const MAX_LENGTH: usize = 4096;
/// The deepest nesting accepted: parentheses, `!`, `? :` and function calls, counted together.
pub const MAX_DEPTH: usize = 32;
/// The most values and attributes one expression may hold; each is read on every request.
pub const MAX_TERMS: usize = 256;

/// A checked expression, kept with the text it was parsed from. A snapshot carries the text
/// (never the tree, whose depth a JSON reader would have to follow) and a proxy parses it again
/// with the same limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Expr {
    text: String,
    root: Node,
}

impl Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Expr, D::Error> {
        let text = String::deserialize(d)?;
        Expr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The tree of an expression. `&&`, `||` and `+` hold their terms side by side, so a long chain
/// is wide, not deep; the depth is bounded by [`MAX_DEPTH`] at parse time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Int(i64),
    Str(String),
    Bool(bool),
    Attr(Attr),
    /// `request.headers['name']` (the name lower-cased).
    Header(String),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Compare(Box<Node>, Op, Box<Node>),
    /// `a + b + …`: numbers add, strings join (all terms of one type).
    Add(Vec<Node>),
    /// `cond ? a : b`.
    If(Box<Node>, Box<Node>, Box<Node>),
    /// `string(x)`.
    ToString(Box<Node>),
    /// `int(x)`.
    ToInt(Box<Node>),
}

/// Envoy's attributes that meshrig's proxies supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Attr {
    RequestHost,
    RequestMethod,
    /// With the query.
    RequestPath,
    /// Without the query.
    RequestUrlPath,
    RequestScheme,
    RequestProtocol,
    RequestUserAgent,
    RequestId,
    ResponseCode,
    DestinationPort,
    ConnectionMtls,
}

const ATTRIBUTES: [(&str, Attr); 13] = [
    ("request.host", Attr::RequestHost),
    ("request.method", Attr::RequestMethod),
    ("request.path", Attr::RequestPath),
    ("request.url_path", Attr::RequestUrlPath),
    ("request.scheme", Attr::RequestScheme),
    ("request.protocol", Attr::RequestProtocol),
    ("request.useragent", Attr::RequestUserAgent),
    ("request.id", Attr::RequestId),
    ("response.code", Attr::ResponseCode),
    ("destination.port", Attr::DestinationPort),
    ("connection.mtls", Attr::ConnectionMtls),
    // Two spellings Envoy's docs and Istio's examples use for the same things.
    ("request.user_agent", Attr::RequestUserAgent),
    ("request.headers.host", Attr::RequestHost),
];

fn known() -> String {
    // The first eleven are the names to teach; the rest are other spellings of them.
    let names: Vec<&str> = ATTRIBUTES[..11].iter().map(|(n, _)| *n).collect();
    format!("{} and request.headers['name']", names.join(", "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Int,
    Str,
    Bool,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Int => "a number",
            Type::Str => "a string",
            Type::Bool => "true or false",
        }
    }
}

impl Attr {
    fn ty(self) -> Type {
        match self {
            Attr::ResponseCode | Attr::DestinationPort => Type::Int,
            Attr::ConnectionMtls => Type::Bool,
            _ => Type::Str,
        }
    }
}

/// A value an expression gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Str(String),
    Bool(bool),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// What the proxy knew of a request when it was captured (only when a Telemetry's expression
/// needs it): the request line and the headers the expressions name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub method: String,
    pub host: String,
    pub path: String,
    pub scheme: &'static str,
    pub protocol: &'static str,
    /// `(lower-case name, value)` of the headers the expressions read, plus `user-agent` and
    /// `x-request-id`.
    pub headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Everything an expression is evaluated against.
#[derive(Debug, Default)]
pub struct Facts<'a> {
    /// `None` for a TCP connection: `request.*` are then absent.
    pub request: Option<&'a Request>,
    /// `None` before (or without) a response.
    pub code: Option<u16>,
    pub destination_port: Option<u16>,
    pub mtls: bool,
}

impl Facts<'_> {
    fn attr(&self, a: Attr) -> Option<Value> {
        let r = self.request;
        let s = |v: Option<&str>| v.map(|v| Value::Str(v.to_string()));
        match a {
            Attr::RequestHost => s(r.map(|r| r.host.as_str())),
            Attr::RequestMethod => s(r.map(|r| r.method.as_str())),
            Attr::RequestPath => s(r.map(|r| r.path.as_str())),
            Attr::RequestUrlPath => s(r.map(|r| r.path.split('?').next().unwrap_or(""))),
            Attr::RequestScheme => s(r.map(|r| r.scheme)),
            Attr::RequestProtocol => s(r.map(|r| r.protocol)),
            Attr::RequestUserAgent => s(r.and_then(|r| r.header("user-agent"))),
            Attr::RequestId => s(r.and_then(|r| r.header("x-request-id"))),
            Attr::ResponseCode => self.code.map(|c| Value::Int(i64::from(c))),
            Attr::DestinationPort => self.destination_port.map(|p| Value::Int(i64::from(p))),
            Attr::ConnectionMtls => Some(Value::Bool(self.mtls)),
        }
    }
}

impl Expr {
    /// Parses and type-checks; the message says where it stopped and what meshrig knows, or
    /// which limit the expression passes.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let length = text.chars().count();
        if length > MAX_LENGTH {
            return Err(format!("the expression is {length} characters long; meshrig accepts at most {MAX_LENGTH}"));
        }
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, at: 0, depth: 0, terms: 0 };
        let root = p.cond()?;
        match p.tokens.get(p.at) {
            None => {
                root.ty()?;
                Ok(Expr { text: text.to_string(), root })
            }
            Some(t) => Err(format!("unexpected {} in {text:?}", t.describe())),
        }
    }

    /// An access-log filter: an expression that is true or false.
    pub fn parse_filter(text: &str) -> Result<Expr, String> {
        let e = Expr::parse(text)?;
        match e.root.ty()? {
            Type::Bool => Ok(e),
            t => Err(format!(
                "a filter must be true or false (such as `response.code >= 400`); {text:?} is {}",
                t.name()
            )),
        }
    }

    /// The text the expression was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The header names the expression reads (lower-case).
    pub fn headers(&self, out: &mut Vec<String>) {
        self.root.headers(out)
    }

    /// The value, or `None` when an attribute is absent (CEL's "no such attribute" error).
    pub fn eval(&self, f: &Facts) -> Option<Value> {
        self.root.eval(f)
    }

    /// A filter's verdict: an absent attribute or a non-boolean is false (Envoy logs nothing).
    pub fn matches(&self, f: &Facts) -> bool {
        self.root.truth(f) == Some(true)
    }
}

impl Node {
    fn headers(&self, out: &mut Vec<String>) {
        match self {
            Node::Header(h) => {
                if !out.contains(h) {
                    out.push(h.clone());
                }
            }
            Node::Int(_) | Node::Str(_) | Node::Bool(_) | Node::Attr(_) => {}
            Node::Not(a) | Node::ToString(a) | Node::ToInt(a) => a.headers(out),
            Node::And(terms) | Node::Or(terms) | Node::Add(terms) => terms.iter().for_each(|t| t.headers(out)),
            Node::Compare(a, _, b) => {
                a.headers(out);
                b.headers(out);
            }
            Node::If(c, a, b) => {
                c.headers(out);
                a.headers(out);
                b.headers(out);
            }
        }
    }

    fn ty(&self) -> Result<Type, String> {
        let want = |e: &Node, t: Type, what: &str| -> Result<(), String> {
            let got = e.ty()?;
            if got == t {
                Ok(())
            } else {
                Err(format!("{what} takes {}, not {}", t.name(), got.name()))
            }
        };
        Ok(match self {
            Node::Int(_) => Type::Int,
            Node::Str(_) | Node::Header(_) => Type::Str,
            Node::Bool(_) => Type::Bool,
            Node::Attr(a) => a.ty(),
            Node::Not(a) => {
                want(a, Type::Bool, "`!`")?;
                Type::Bool
            }
            Node::And(terms) | Node::Or(terms) => {
                for t in terms {
                    want(t, Type::Bool, "`&&` and `||`")?;
                }
                Type::Bool
            }
            Node::Compare(a, op, b) => {
                let (ta, tb) = (a.ty()?, b.ty()?);
                if ta != tb {
                    let hint = match (&**a, &**b) {
                        (Node::Attr(at), other) | (other, Node::Attr(at)) if at.ty() == Type::Int => {
                            format!(" (write {} without quotes)", describe(other))
                        }
                        _ => String::new(),
                    };
                    return Err(format!(
                        "cannot compare {} with {}{hint}: {} is {}",
                        ta.name(),
                        tb.name(),
                        describe(a),
                        ta.name()
                    ));
                }
                if ta == Type::Bool && !matches!(op, Op::Eq | Op::Ne) {
                    return Err("true/false values compare only with == and !=".into());
                }
                Type::Bool
            }
            Node::Add(terms) => {
                let ta = terms[0].ty()?;
                if ta == Type::Bool {
                    return Err("`+` adds numbers or joins strings".into());
                }
                for t in &terms[1..] {
                    want(t, ta, "`+`")?;
                }
                ta
            }
            Node::If(c, a, b) => {
                want(c, Type::Bool, "the condition of `? :`")?;
                let ta = a.ty()?;
                want(b, ta, "both branches of `? :`")?;
                ta
            }
            Node::ToString(a) => {
                a.ty()?;
                Type::Str
            }
            Node::ToInt(a) => {
                if a.ty()? == Type::Bool {
                    return Err("int() takes a number or a string".into());
                }
                Type::Int
            }
        })
    }

    fn eval(&self, f: &Facts) -> Option<Value> {
        Some(match self {
            Node::Int(n) => Value::Int(*n),
            Node::Str(s) => Value::Str(s.clone()),
            Node::Bool(b) => Value::Bool(*b),
            Node::Attr(a) => f.attr(*a)?,
            Node::Header(h) => Value::Str(f.request?.header(h)?.to_string()),
            Node::Not(a) => Value::Bool(!a.truth(f)?),
            Node::And(terms) => {
                for t in terms {
                    if !t.truth(f)? {
                        return Some(Value::Bool(false));
                    }
                }
                Value::Bool(true)
            }
            Node::Or(terms) => {
                for t in terms {
                    if t.truth(f)? {
                        return Some(Value::Bool(true));
                    }
                }
                Value::Bool(false)
            }
            Node::Compare(a, op, b) => {
                let ord = match (a.eval(f)?, b.eval(f)?) {
                    (Value::Int(x), Value::Int(y)) => x.cmp(&y),
                    (Value::Str(x), Value::Str(y)) => x.cmp(&y),
                    (Value::Bool(x), Value::Bool(y)) => x.cmp(&y),
                    _ => return None,
                };
                use std::cmp::Ordering::*;
                Value::Bool(match op {
                    Op::Eq => ord == Equal,
                    Op::Ne => ord != Equal,
                    Op::Lt => ord == Less,
                    Op::Le => ord != Greater,
                    Op::Gt => ord == Greater,
                    Op::Ge => ord != Less,
                })
            }
            Node::Add(terms) => {
                let mut sum = terms[0].eval(f)?;
                for t in &terms[1..] {
                    sum = match (sum, t.eval(f)?) {
                        (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_add(y)?),
                        (Value::Str(x), Value::Str(y)) => Value::Str(x + &y),
                        _ => return None,
                    };
                }
                sum
            }
            Node::If(c, a, b) => {
                if c.truth(f)? {
                    a.eval(f)?
                } else {
                    b.eval(f)?
                }
            }
            Node::ToString(a) => Value::Str(a.eval(f)?.to_string()),
            Node::ToInt(a) => match a.eval(f)? {
                Value::Int(n) => Value::Int(n),
                Value::Str(s) => Value::Int(s.trim().parse().ok()?),
                Value::Bool(_) => return None,
            },
        })
    }

    fn truth(&self, f: &Facts) -> Option<bool> {
        match self.eval(f)? {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

fn describe(e: &Node) -> String {
    match e {
        Node::Int(n) => n.to_string(),
        Node::Str(s) => format!("{s:?}"),
        Node::Attr(a) => ATTRIBUTES.iter().find(|(_, x)| x == a).map_or("it", |(n, _)| n).to_string(),
        Node::Header(h) => format!("request.headers[{h:?}]"),
        _ => "the expression".into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Str(String),
    Op(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("`{s}`"),
            Token::Int(n) => format!("`{n}`"),
            Token::Str(s) => format!("{s:?}"),
            Token::Op(o) => format!("`{o}`"),
        }
    }
}

fn describe_at(t: Option<&Token>) -> String {
    t.map_or_else(|| "the end".into(), Token::describe)
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push(Token::Int(s.parse().map_err(|_| format!("number {s} is too large"))?));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            let end = chars[i + 1..].iter().position(|d| *d == c).ok_or("a string is not closed")?;
            out.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            match ["&&", "||", "==", "!=", "<=", ">="].into_iter().find(|o| two == *o) {
                Some(o) => {
                    out.push(Token::Op(o));
                    i += 2;
                }
                None => {
                    let o = ["<", ">", "!", "(", ")", "[", "]", "?", ":", "+"].into_iter().find(|o| o.starts_with(c));
                    out.push(Token::Op(o.ok_or_else(|| format!("unexpected {c:?}"))?));
                    i += 1;
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Nesting entered so far (parentheses, `!`, `? :`, calls); never above [`MAX_DEPTH`].
    depth: usize,
    /// Values and attributes read so far; never above [`MAX_TERMS`].
    terms: usize,
}

impl Parser {
    fn eat(&mut self, op: &'static str) -> bool {
        let found = self.tokens.get(self.at) == Some(&Token::Op(op));
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, op: &'static str, what: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("{what}: expected `{op}`, found {}", describe_at(self.tokens.get(self.at))))
        }
    }

    /// Parses `inner` one level deeper; refused past [`MAX_DEPTH`], so the parser's own
    /// recursion, and every walk of the tree after it, is bounded.
    fn nested(&mut self, inner: impl FnOnce(&mut Self) -> Result<Node, String>) -> Result<Node, String> {
        if self.depth == MAX_DEPTH {
            return Err(format!(
                "the expression nests deeper than {MAX_DEPTH} levels (parentheses, `!`, `? :` and calls count); write it flatter"
            ));
        }
        self.depth += 1;
        let node = inner(self);
        self.depth -= 1;
        node
    }

    fn term(&mut self, node: Node) -> Result<Node, String> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(format!(
                "the expression has more than {MAX_TERMS} values and attributes; meshrig accepts at most {MAX_TERMS}"
            ));
        }
        Ok(node)
    }

    fn cond(&mut self) -> Result<Node, String> {
        let c = self.or()?;
        if !self.eat("?") {
            return Ok(c);
        }
        self.nested(|p| {
            let a = p.cond()?;
            p.expect(":", "`? :`")?;
            let b = p.cond()?;
            Ok(Node::If(Box::new(c), Box::new(a), Box::new(b)))
        })
    }

    fn or(&mut self) -> Result<Node, String> {
        let mut terms = vec![self.and()?];
        while self.eat("||") {
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 { terms.pop().unwrap() } else { Node::Or(terms) })
    }

    fn and(&mut self) -> Result<Node, String> {
        let mut terms = vec![self.relation()?];
        while self.eat("&&") {
            terms.push(self.relation()?);
        }
        Ok(if terms.len() == 1 { terms.pop().unwrap() } else { Node::And(terms) })
    }

    fn relation(&mut self) -> Result<Node, String> {
        let left = self.sum()?;
        let op = match self.tokens.get(self.at) {
            Some(Token::Op("==")) => Op::Eq,
            Some(Token::Op("!=")) => Op::Ne,
            Some(Token::Op("<")) => Op::Lt,
            Some(Token::Op("<=")) => Op::Le,
            Some(Token::Op(">")) => Op::Gt,
            Some(Token::Op(">=")) => Op::Ge,
            _ => return Ok(left),
        };
        self.at += 1;
        Ok(Node::Compare(Box::new(left), op, Box::new(self.sum()?)))
    }

    fn sum(&mut self) -> Result<Node, String> {
        let mut terms = vec![self.unary()?];
        while self.eat("+") {
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 { terms.pop().unwrap() } else { Node::Add(terms) })
    }

    fn unary(&mut self) -> Result<Node, String> {
        if self.eat("!") {
            return self.nested(|p| Ok(Node::Not(Box::new(p.unary()?))));
        }
        if self.eat("(") {
            return self.nested(|p| {
                let inner = p.cond()?;
                if !p.eat(")") {
                    return Err("a `(` is not closed".into());
                }
                Ok(inner)
            });
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Int(n)) => self.term(Node::Int(n)),
            Some(Token::Str(s)) => self.term(Node::Str(s)),
            Some(Token::Ident(name)) => self.name(name),
            other => Err(format!(
                "expected a value or an attribute such as response.code, found {}",
                describe_at(other.as_ref())
            )),
        }
    }

    fn name(&mut self, name: String) -> Result<Node, String> {
        match name.as_str() {
            "true" => return self.term(Node::Bool(true)),
            "false" => return self.term(Node::Bool(false)),
            "string" | "int" if self.eat("(") => {
                return self.nested(|p| {
                    let inner = p.cond()?;
                    p.expect(")", &format!("{name}(…)"))?;
                    Ok(if name == "string" { Node::ToString(Box::new(inner)) } else { Node::ToInt(Box::new(inner)) })
                });
            }
            "request.headers" => {
                self.expect("[", "request.headers['name']")?;
                let Some(Token::Str(header)) = self.tokens.get(self.at).cloned() else {
                    return Err(format!(
                        "request.headers takes a quoted header name, found {}",
                        describe_at(self.tokens.get(self.at))
                    ));
                };
                self.at += 1;
                self.expect("]", "request.headers['name']")?;
                return self.term(Node::Header(header.to_ascii_lowercase()));
            }
            _ => {}
        }
        // CEL's field syntax for a map key (`request.headers.foo` is the key `foo`).
        if let Some(header) = name.strip_prefix("request.headers.").filter(|h| !h.contains('.') && *h != "host") {
            return self.term(Node::Header(header.to_ascii_lowercase()));
        }
        match ATTRIBUTES.iter().find(|(n, _)| *n == name) {
            Some((_, a)) => self.term(Node::Attr(*a)),
            None => Err(format!("meshrig does not know the attribute {name:?}; it knows {}", known())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            method: "GET".into(),
            host: "httpbin:8000".into(),
            path: "/status/418?x=1".into(),
            scheme: "http",
            protocol: "HTTP/1.1",
            headers: vec![("x-user".into(), "alice".into()), ("user-agent".into(), "curl/8".into())],
        }
    }

    fn eval(text: &str, code: u16) -> Option<Value> {
        let r = request();
        let f = Facts { request: Some(&r), code: Some(code), destination_port: Some(8000), mtls: true };
        Expr::parse(text).unwrap().eval(&f)
    }

    #[test]
    fn filters_are_the_cel_istios_access_log_task_uses() {
        let r = request();
        let facts = |code| Facts { request: Some(&r), code: Some(code), destination_port: None, mtls: false };
        let f = Expr::parse_filter("response.code >= 400").unwrap();
        assert!(f.matches(&facts(418)) && !f.matches(&facts(200)));
        let f = Expr::parse_filter("response.code >= 500 || (request.method == 'POST' && !(response.code == 201))")
            .unwrap();
        assert!(f.matches(&facts(503)) && !f.matches(&facts(404)));
        assert!(Expr::parse_filter("request.url_path != \"/health\"").unwrap().matches(&facts(200)));
        let tcp = Facts { request: None, code: None, destination_port: None, mtls: false };
        assert!(!Expr::parse_filter("request.method == 'GET'").unwrap().matches(&tcp), "absent is not true");
    }

    #[test]
    fn tag_values_are_strings_numbers_headers_and_choices() {
        assert_eq!(eval("request.host", 200), Some(Value::Str("httpbin:8000".into())));
        assert_eq!(eval("string(destination.port)", 200).unwrap().to_string(), "8000");
        assert_eq!(eval("request.headers['X-User']", 200), Some(Value::Str("alice".into())));
        assert_eq!(eval("request.headers.x_user", 200), None, "the key `x_user`, which the request has not");
        assert_eq!(eval("request.headers['absent']", 200), None);
        assert_eq!(eval("request.url_path", 200), Some(Value::Str("/status/418".into())));
        let kind = "response.code >= 500 ? 'server_error' : (response.code >= 400 ? 'client_error' : 'none')";
        assert_eq!(eval(kind, 503).unwrap().to_string(), "server_error");
        assert_eq!(eval(kind, 418).unwrap().to_string(), "client_error");
        assert_eq!(eval("request.method + ' ' + request.useragent", 200).unwrap().to_string(), "GET curl/8");
        assert_eq!(eval("connection.mtls", 200), Some(Value::Bool(true)));
        assert_eq!(eval("int('12') + 1", 200), Some(Value::Int(13)));
        let mut headers = Vec::new();
        Expr::parse("request.headers['a'] == request.headers.b ? 'x' : request.headers['a']")
            .unwrap()
            .headers(&mut headers);
        assert_eq!(headers, ["a", "b"]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| Expr::parse_filter(t).unwrap_err();
        assert!(
            err("response.duration > 10").contains("it knows request.host, request.method"),
            "{}",
            err("response.duration > 10")
        );
        assert!(
            err("response.code >= '400'").contains("write \"400\" without quotes"),
            "{}",
            err("response.code >= '400'")
        );
        assert!(err("(response.code == 200").contains("not closed"));
        assert!(err("response.code == 200 200").contains("unexpected `200`"));
        assert!(err("request.host").contains("must be true or false"));
        assert!(Expr::parse("response.code > 1 ? 'a' : 2").unwrap_err().contains("both branches"));
        assert!(Expr::parse("request.headers[x]").unwrap_err().contains("quoted header name"));
        assert!(Expr::parse("'open").unwrap_err().contains("not closed"));
    }

    #[test]
    fn hostile_expressions_are_refused_by_a_named_limit_without_recursing() {
        let err = |t: &str| Expr::parse(t).unwrap_err();
        let parens = format!("{}response.code == 200{}", "(".repeat(2000), ")".repeat(2000));
        assert!(err(&parens).contains("nests deeper than 32"), "{}", err(&parens));
        let parens = format!("{}response.code == 200{}", "(".repeat(33), ")".repeat(33));
        assert!(err(&parens).contains("nests deeper than 32"), "{}", err(&parens));
        let nots = format!("{}true", "!".repeat(200_000));
        assert!(err(&nots).contains("characters long"));
        assert!(err(&format!("{}true", "!".repeat(33))).contains("nests deeper"));
        let choices = "true ? 1 : ".repeat(40) + "0";
        assert!(err(&choices).contains("nests deeper"), "{}", err(&choices));
        let ands = vec!["true"; 300].join("&&");
        assert!(err(&ands).contains(&format!("more than {MAX_TERMS} values")), "{}", err(&ands));
        let ands = vec!["true"; 8000].join(" && ");
        assert!(err(&ands).contains("characters long"));
    }

    #[test]
    fn the_largest_accepted_expressions_survive_a_json_round_trip_and_evaluate() {
        // As wide as the limits allow: a chain of OR-ed comparisons, flat in the tree.
        let term = "request.headers['x-user'] == 'u";
        let n = MAX_LENGTH / (term.len() + 6);
        let wide = (0..n).map(|i| format!("{term}{}'", i % 10)).collect::<Vec<_>>().join(" || ");
        assert!(wide.len() <= MAX_LENGTH && n >= 70, "{n} terms");
        // As deep as the limits allow.
        let deep = format!("{}response.code >= 400{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        let r = Request { headers: vec![("x-user".into(), "u7".into())], ..request() };
        let f = Facts { request: Some(&r), code: Some(503), destination_port: None, mtls: false };
        for text in [wide, deep] {
            let e = Expr::parse_filter(&text).unwrap();
            let json = serde_json::to_string(&vec![vec![vec![e.clone()]]]).unwrap();
            let back: Vec<Vec<Vec<Expr>>> = serde_json::from_str(&json).unwrap();
            assert_eq!(back[0][0][0], e);
            assert!(back[0][0][0].matches(&f), "{text}");
        }
        assert!(serde_json::from_str::<Expr>("\"response.code >=\"").is_err(), "a bad text is refused");
    }
}
