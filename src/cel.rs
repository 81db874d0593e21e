//! The part of CEL (Common Expression Language) a Telemetry's expressions use, over Envoy's
//! attribute names: access-log filters (`response.code >= 400`) and metric tag values
//! (`request.headers['x-user']`, `string(destination.port)`, `response.code >= 500 ? 'err' :
//! 'ok'`). Parsed and type-checked once at apply, with a message that says what meshrig knows;
//! evaluated per request against what the proxy captured. Pure.

use serde::{Deserialize, Serialize};

/// A checked expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expr {
    Int(i64),
    Str(String),
    Bool(bool),
    Attr(Attr),
    /// `request.headers['name']` (the name lower-cased).
    Header(String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, Op, Box<Expr>),
    /// `a + b`: numbers add, strings join.
    Add(Box<Expr>, Box<Expr>),
    /// `cond ? a : b`.
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `string(x)`.
    ToString(Box<Expr>),
    /// `int(x)`.
    ToInt(Box<Expr>),
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
    /// Parses and type-checks; the message says where it stopped and what meshrig knows.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, at: 0 };
        let e = p.cond()?;
        match p.tokens.get(p.at) {
            None => {
                e.ty()?;
                Ok(e)
            }
            Some(t) => Err(format!("unexpected {} in {text:?}", t.describe())),
        }
    }

    /// An access-log filter: an expression that is true or false.
    pub fn parse_filter(text: &str) -> Result<Expr, String> {
        let e = Expr::parse(text)?;
        match e.ty()? {
            Type::Bool => Ok(e),
            t => Err(format!(
                "a filter must be true or false (such as `response.code >= 400`); {text:?} is {}",
                t.name()
            )),
        }
    }

    /// The header names the expression reads (lower-case).
    pub fn headers(&self, out: &mut Vec<String>) {
        match self {
            Expr::Header(h) => {
                if !out.contains(h) {
                    out.push(h.clone());
                }
            }
            Expr::Int(_) | Expr::Str(_) | Expr::Bool(_) | Expr::Attr(_) => {}
            Expr::Not(a) | Expr::ToString(a) | Expr::ToInt(a) => a.headers(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(a, _, b) | Expr::Add(a, b) => {
                a.headers(out);
                b.headers(out);
            }
            Expr::If(c, a, b) => {
                c.headers(out);
                a.headers(out);
                b.headers(out);
            }
        }
    }

    fn ty(&self) -> Result<Type, String> {
        let want = |e: &Expr, t: Type, what: &str| -> Result<(), String> {
            let got = e.ty()?;
            if got == t {
                Ok(())
            } else {
                Err(format!("{what} takes {}, not {}", t.name(), got.name()))
            }
        };
        Ok(match self {
            Expr::Int(_) => Type::Int,
            Expr::Str(_) | Expr::Header(_) => Type::Str,
            Expr::Bool(_) => Type::Bool,
            Expr::Attr(a) => a.ty(),
            Expr::Not(a) => {
                want(a, Type::Bool, "`!`")?;
                Type::Bool
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                want(a, Type::Bool, "`&&` and `||`")?;
                want(b, Type::Bool, "`&&` and `||`")?;
                Type::Bool
            }
            Expr::Compare(a, op, b) => {
                let (ta, tb) = (a.ty()?, b.ty()?);
                if ta != tb {
                    let hint = match (&**a, &**b) {
                        (Expr::Attr(at), other) | (other, Expr::Attr(at)) if at.ty() == Type::Int => {
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
            Expr::Add(a, b) => {
                let ta = a.ty()?;
                if ta == Type::Bool {
                    return Err("`+` adds numbers or joins strings".into());
                }
                want(b, ta, "`+`")?;
                ta
            }
            Expr::If(c, a, b) => {
                want(c, Type::Bool, "the condition of `? :`")?;
                let ta = a.ty()?;
                want(b, ta, "both branches of `? :`")?;
                ta
            }
            Expr::ToString(a) => {
                a.ty()?;
                Type::Str
            }
            Expr::ToInt(a) => {
                if a.ty()? == Type::Bool {
                    return Err("int() takes a number or a string".into());
                }
                Type::Int
            }
        })
    }

    /// The value, or `None` when an attribute is absent (CEL's "no such attribute" error).
    pub fn eval(&self, f: &Facts) -> Option<Value> {
        Some(match self {
            Expr::Int(n) => Value::Int(*n),
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Attr(a) => f.attr(*a)?,
            Expr::Header(h) => Value::Str(f.request?.header(h)?.to_string()),
            Expr::Not(a) => Value::Bool(!a.truth(f)?),
            Expr::And(a, b) => Value::Bool(a.truth(f)? && b.truth(f)?),
            Expr::Or(a, b) => Value::Bool(a.truth(f)? || b.truth(f)?),
            Expr::Compare(a, op, b) => {
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
            Expr::Add(a, b) => match (a.eval(f)?, b.eval(f)?) {
                (Value::Int(x), Value::Int(y)) => Value::Int(x.checked_add(y)?),
                (Value::Str(x), Value::Str(y)) => Value::Str(x + &y),
                _ => return None,
            },
            Expr::If(c, a, b) => {
                if c.truth(f)? {
                    a.eval(f)?
                } else {
                    b.eval(f)?
                }
            }
            Expr::ToString(a) => Value::Str(a.eval(f)?.to_string()),
            Expr::ToInt(a) => match a.eval(f)? {
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

    /// A filter's verdict: an absent attribute or a non-boolean is false (Envoy logs nothing).
    pub fn matches(&self, f: &Facts) -> bool {
        self.truth(f) == Some(true)
    }
}

fn describe(e: &Expr) -> String {
    match e {
        Expr::Int(n) => n.to_string(),
        Expr::Str(s) => format!("{s:?}"),
        Expr::Attr(a) => ATTRIBUTES.iter().find(|(_, x)| x == a).map_or("it", |(n, _)| n).to_string(),
        Expr::Header(h) => format!("request.headers[{h:?}]"),
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

    fn cond(&mut self) -> Result<Expr, String> {
        let c = self.or()?;
        if !self.eat("?") {
            return Ok(c);
        }
        let a = self.cond()?;
        self.expect(":", "`? :`")?;
        let b = self.cond()?;
        Ok(Expr::If(Box::new(c), Box::new(a), Box::new(b)))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.relation()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.relation()?));
        }
        Ok(left)
    }

    fn relation(&mut self) -> Result<Expr, String> {
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
        Ok(Expr::Compare(Box::new(left), op, Box::new(self.sum()?)))
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.eat("+") {
            left = Expr::Add(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.cond()?;
            if !self.eat(")") {
                return Err("a `(` is not closed".into());
            }
            return Ok(inner);
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Int(n)) => Ok(Expr::Int(n)),
            Some(Token::Str(s)) => Ok(Expr::Str(s)),
            Some(Token::Ident(name)) => self.name(name),
            other => Err(format!(
                "expected a value or an attribute such as response.code, found {}",
                describe_at(other.as_ref())
            )),
        }
    }

    fn name(&mut self, name: String) -> Result<Expr, String> {
        match name.as_str() {
            "true" => return Ok(Expr::Bool(true)),
            "false" => return Ok(Expr::Bool(false)),
            "string" | "int" if self.eat("(") => {
                let inner = self.cond()?;
                self.expect(")", &format!("{name}(…)"))?;
                return Ok(if name == "string" {
                    Expr::ToString(Box::new(inner))
                } else {
                    Expr::ToInt(Box::new(inner))
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
                return Ok(Expr::Header(header.to_ascii_lowercase()));
            }
            _ => {}
        }
        // CEL's field syntax for a map key (`request.headers.foo` is the key `foo`).
        if let Some(header) = name.strip_prefix("request.headers.").filter(|h| !h.contains('.') && *h != "host") {
            return Ok(Expr::Header(header.to_ascii_lowercase()));
        }
        match ATTRIBUTES.iter().find(|(n, _)| *n == name) {
            Some((_, a)) => Ok(Expr::Attr(*a)),
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
}
