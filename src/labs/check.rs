//! One check: send a request, judge the answer, and say what was seen, what was expected, the
//! hint for that kind of failure, and the mesh's own reason (the gateway's decision record for
//! the request, looked up by its `x-request-id`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::header;
use serde::{Deserialize, Serialize};

use crate::labs::probe::{self, Dest, Outgoing, Route};
use crate::net;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    /// Stable id, for scripts, `needs` and JUnit.
    pub id: String,
    pub title: String,
    pub request: CheckRequest,
    pub expect: Expect,
    /// The hint when no hint for the kind of failure seen applies.
    pub hint: String,
    /// Hints for kinds of failure (a status, refused, reset, timeout, body), first match wins.
    #[serde(default)]
    pub hints: Vec<FailureHint>,
    /// Checks that must pass before this one means anything ("/headers is 404" proves nothing
    /// while nothing is routed); while one fails, this one fails as "not judged yet".
    #[serde(default)]
    pub needs: Vec<String>,
    /// Set (with the reason) for a check that may pass on the starting files: it guards against
    /// a solution that breaks something, rather than teaching. `lab verify` requires every other
    /// check to fail on the starting files.
    #[serde(default)]
    pub guard: Option<String>,
    /// Set (with the reason) for a check of step N that already passes once step N-1 is solved:
    /// it makes sure step N keeps what the step before built. `lab verify --in-order` lets it
    /// pass before step N's solution; it must still fail on the starting files.
    #[serde(default)]
    pub kept: Option<String>,
    /// The step of the lab this check judges (1-based), in a lab whose steps are states one
    /// after the other (a canary at 20%, then 50%, then 100%); none: the lab has one final state.
    #[serde(default)]
    pub step: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureHint {
    pub when: Failure,
    pub hint: String,
}

/// A kind of failure a hint can be for. In `lab.yaml`: `{status: 503}`, or one of `body`,
/// `refused`, `reset`, `timeout`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", try_from = "When")]
pub enum Failure {
    /// An answer with this status (when another was expected).
    Status(u16),
    /// The expected status, but the body lacks what was expected.
    Body,
    /// Nothing listens (connection refused).
    Refused,
    /// The connection was reset or closed without an answer.
    Reset,
    /// No answer in time.
    Timeout,
}

/// How `when:` is written (serde_yaml would otherwise want a YAML tag for an enum).
#[derive(Deserialize)]
#[serde(untagged)]
enum When {
    Status { status: u16 },
    Word(String),
}

impl TryFrom<When> for Failure {
    type Error = String;
    fn try_from(w: When) -> Result<Failure, String> {
        match w {
            When::Status { status } => Ok(Failure::Status(status)),
            When::Word(w) => match w.as_str() {
                "body" => Ok(Failure::Body),
                "refused" => Ok(Failure::Refused),
                "reset" => Ok(Failure::Reset),
                "timeout" => Ok(Failure::Timeout),
                other => Err(format!("`when: {other}`: use {{status: N}}, body, refused, reset or timeout")),
            },
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckRequest {
    /// Where the request is sent from: `gateway` (a client outside the mesh, at the ingress), or
    /// `workload` (from inside the pod named by `from`, as `meshrig exec` does: through its
    /// sidecar, or its plain forwarder when it has none).
    pub via: Via,
    /// With `via: workload`: `NAMESPACE/DEPLOYMENT` whose pod sends the request.
    #[serde(default)]
    pub from: Option<String>,
    /// HTTPS to the gateway's port 443 (published on `up --https-port`), SNI and Host from
    /// `host`, trusting the CA in a Secret and, for MUTUAL, presenting a certificate from another.
    #[serde(default)]
    pub tls: Option<CheckTls>,
    /// Host header.
    pub host: String,
    pub path: String,
    #[serde(default = "get")]
    pub method: String,
    /// Sign in first as this user, as a browser does on Bookinfo's product page (POST /login
    /// with the form, then send its session cookie).
    #[serde(default)]
    pub login: Option<String>,
    /// Send the request this many times; every answer must meet the expectation (a route
    /// that only sometimes holds, such as a weighted split, fails).
    #[serde(default = "once")]
    pub repeat: u32,
    /// How long one answer may take, in seconds (default 5; a page that shows a timeout of the
    /// app itself needs longer).
    #[serde(default = "five")]
    pub timeout_seconds: u64,
    /// Send the `repeat` requests over this many connections at once, as fast as answers come
    /// (the load generator, as `fortio load -c N -qps 0`); the answers are judged together by
    /// `expect.load`.
    #[serde(default)]
    pub concurrency: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckTls {
    /// `NAMESPACE/NAME` of the Secret whose `ca.crt` (else `tls.crt`) the client trusts.
    pub ca_secret: String,
    /// `NAMESPACE/NAME` of a Secret whose `tls.crt` and `tls.key` the client presents.
    #[serde(default)]
    pub client_secret: Option<String>,
}

fn five() -> u64 {
    5
}

impl CheckRequest {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.clamp(1, 120))
    }
}

fn once() -> u32 {
    1
}

fn get() -> String {
    "GET".into()
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Via {
    Gateway,
    Workload,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    /// The status (not needed when `reset` is expected).
    #[serde(default)]
    pub status: u16,
    /// The connection is reset without an answer (a plaintext client against STRICT mTLS).
    #[serde(default)]
    pub reset: bool,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Text the body must not contain.
    #[serde(default)]
    pub body_not_contains: Option<String>,
    /// Over `request.repeat` answers, this share of them must contain a text (a weighted
    /// split), judged with a tolerance that a right split fails less than once in a million.
    #[serde(default)]
    pub share: Option<Share>,
    /// With `request.concurrency`: how the answers may split. Some must have `status`; without
    /// this block, all must.
    #[serde(default)]
    pub load: Option<LoadExpect>,
    /// The request's trace, as the collector's Jaeger API gives it (found by the request's
    /// `x-request-id`, which its first hop's span carries as `guid:x-request-id`: the ingress
    /// gateway's, or the sending workload's sidecar's).
    #[serde(default)]
    pub trace: Option<TraceExpect>,
    /// What the mesh's own metrics say about the calls the requests caused, as `meshrig graph`
    /// draws them (every proxy's `istio_requests_total`, before and after the requests).
    #[serde(default)]
    pub graph: Option<GraphExpect>,
    /// A PromQL query the learner wrote in a file of the lab, run in the Prometheus addon beside
    /// the lab's reference query while the check's requests flow: the same series, values
    /// within the tolerance.
    #[serde(default)]
    pub promql: Option<PromQlExpect>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromQlExpect {
    /// The learner's file in the lab's folder (lines starting with `#` are comments).
    pub file: String,
    /// The query whose answer is right.
    pub reference: String,
    /// How far a value may be from the reference's, in percent (different windows or
    /// functions give slightly different rates).
    #[serde(default = "twenty_five")]
    pub tolerance_percent: f64,
}

fn twenty_five() -> f64 {
    25.0
}

/// A PromQL answer: one value per series, by its labels.
pub type Vector = Vec<(BTreeMap<String, String>, f64)>;

/// The learner's query without its comments.
pub fn promql_text(file: &str) -> String {
    file.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n").trim().to_string()
}

/// An instant query's answer as a vector (a scalar is one series without labels); Prometheus's
/// error message otherwise.
pub fn vector(answer: &serde_json::Value) -> Result<Vector, String> {
    if answer["status"] != "success" {
        return Err(answer["error"].as_str().unwrap_or("Prometheus refused the query").to_string());
    }
    let value = |v: &serde_json::Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
    match answer["data"]["resultType"].as_str() {
        Some("vector") => Ok(answer["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                            .unwrap_or_default();
                        (labels, value(&s["value"]))
                    })
                    .collect()
            })
            .unwrap_or_default()),
        Some("scalar") => Ok(vec![(BTreeMap::new(), value(&answer["data"]["result"]))]),
        other => Err(format!("the query gives a {}, not an instant vector", other.unwrap_or("nothing"))),
    }
}

/// Does `got` give the reference's series, each value within `tolerance` percent?
pub fn same_answer(got: &Vector, want: &Vector, tolerance: f64) -> bool {
    got.len() == want.len()
        && want.iter().all(|(labels, w)| {
            got.iter().any(|(l, g)| l == labels && ((g - w).abs() <= w.abs() * tolerance / 100.0 + 1e-9))
        })
}

fn show_vector(v: &Vector) -> String {
    if v.is_empty() {
        return "no series".into();
    }
    v.iter()
        .map(|(labels, value)| {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{{{}}} {value:.3}", l.join(","))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphExpect {
    /// The calling app (`app` label), e.g. `reviews`.
    pub from: String,
    /// The called app, e.g. `ratings`.
    pub to: String,
    /// With `percent` or `atMost`: the called app's version whose share of the calls is judged.
    #[serde(default)]
    pub version: Option<String>,
    /// The share of `from` → `to` calls that went to `version`, 0 to 100 (give or take chance).
    #[serde(default)]
    pub percent: Option<f64>,
    /// Instead of `percent`: at most this share, 0 to 100.
    #[serde(default)]
    pub at_most: Option<f64>,
    /// At most this share (0 to 100) of `from` → `to` calls failed (5xx, or no answer).
    #[serde(default)]
    pub errors_at_most: Option<f64>,
}

impl GraphExpect {
    /// The counts of calls to `version` out of `n` it accepts.
    fn accepts(&self, n: u64) -> (u64, u64) {
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        match (self.percent, self.at_most) {
            (Some(p), _) => {
                let (lo, hi) = acceptance(n32, p / 100.0);
                (u64::from(lo), u64::from(hi))
            }
            (None, Some(m)) => (0, (n as f64 * m / 100.0).floor() as u64),
            (None, None) => (0, n),
        }
    }

    /// Passes, given the calls seen from `from` to `to`: to `version`, in all, failed.
    fn judge(&self, to_version: u64, total: u64, errors: u64) -> bool {
        let (lo, hi) = self.accepts(total);
        let errors_ok = self.errors_at_most.is_none_or(|p| errors as f64 <= total as f64 * p / 100.0);
        total > 0 && (lo..=hi).contains(&to_version) && errors_ok
    }
}

/// The calls `from` → `to` in the window between two scrapes of every proxy: to `version`,
/// in all, and failed.
pub fn graph_calls(
    before: &[crate::graph::Sample],
    after: &[crate::graph::Sample],
    g: &GraphExpect,
) -> (u64, u64, u64) {
    let edges = crate::graph::edges(Some(before), after, None);
    let calls = edges.iter().filter(|e| e.source.app == g.from && e.destination.app == g.to);
    let (mut to_version, mut total, mut errors) = (0.0, 0.0, 0.0);
    for e in calls {
        total += e.requests;
        errors += e.errors;
        if g.version.as_ref().is_some_and(|v| *v == e.destination.version) {
            to_version += e.requests;
        }
    }
    (to_version.round() as u64, total.round() as u64, errors.round() as u64)
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceExpect {
    /// Services (`app.namespace`, as Jaeger lists them) that have a span in the trace.
    #[serde(default)]
    pub services: Vec<String>,
    /// A span with this operation name lasts at least this long.
    #[serde(default)]
    pub slow: Option<SlowSpan>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlowSpan {
    /// The span's operation name (Istio's: `ratings.default.svc.cluster.local:9080/*`).
    pub operation: String,
    pub at_least_ms: u64,
}

/// What a request's trace held: its services, and each span's operation, service and length.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TraceSeen {
    pub services: Vec<String>,
    pub spans: Vec<(String, String, u64)>,
}

impl TraceSeen {
    /// The longest span with this operation, in milliseconds.
    fn longest(&self, operation: &str) -> Option<u64> {
        self.spans.iter().filter(|(op, _, _)| op == operation).map(|(_, _, ms)| *ms).max()
    }

    fn meets(&self, t: &TraceExpect) -> bool {
        t.services.iter().all(|s| self.services.contains(s))
            && t.slow.as_ref().is_none_or(|s| self.longest(&s.operation).is_some_and(|ms| ms >= s.at_least_ms))
    }
}

/// A Jaeger API answer's first trace, as services and spans.
pub fn trace_seen(answer: &serde_json::Value) -> Option<TraceSeen> {
    let trace = answer["data"].get(0)?;
    let service = |pid: &serde_json::Value| {
        pid.as_str().and_then(|p| trace["processes"][p]["serviceName"].as_str()).unwrap_or("").to_string()
    };
    let spans: Vec<(String, String, u64)> = trace["spans"]
        .as_array()?
        .iter()
        .map(|s| {
            let op = s["operationName"].as_str().unwrap_or("").to_string();
            (op, service(&s["processID"]), s["duration"].as_u64().unwrap_or(0) / 1000)
        })
        .collect();
    let mut services: Vec<String> = spans.iter().map(|(_, s, _)| s.clone()).collect();
    services.sort();
    services.dedup();
    Some(TraceSeen { services, spans })
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadExpect {
    /// At least this many answers are a circuit breaker's overflow (503 with
    /// `x-envoy-overloaded`), and every other answer has `status`.
    #[serde(default)]
    pub overloaded_at_least: Option<u64>,
    /// At most this share (0 to 100) of the answers lack `status` (overflows included).
    #[serde(default)]
    pub failed_at_most: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Share {
    pub body_contains: String,
    /// The share expected, 0 to 100 (give or take chance).
    #[serde(default)]
    pub percent: Option<f64>,
    /// Instead of `percent`: at most this share, 0 to 100 (a bound, not an estimate).
    #[serde(default)]
    pub at_most: Option<f64>,
}

impl Share {
    /// The counts out of `n` it accepts.
    pub fn accepts(&self, n: u32) -> (u32, u32) {
        match (self.percent, self.at_most) {
            (Some(p), _) => acceptance(n, p / 100.0),
            (None, Some(m)) => (0, (f64::from(n) * m / 100.0).floor() as u32),
            (None, None) => (0, n),
        }
    }
}

/// How rarely a right split may be judged wrong, both tails together.
pub const FALSE_FAILURE: f64 = 1e-6;

/// The counts out of `n` answers that a share of `p` (0..=1) accepts: everything but the two
/// binomial tails of `FALSE_FAILURE / 2` each. A count outside is a wrong split, not chance.
pub fn acceptance(n: u32, p: f64) -> (u32, u32) {
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    // pmf(k+1) = pmf(k) · (n−k)/(k+1) · p/(1−p), from pmf(0) = (1−p)^n, in logs for large n.
    let ln_ratio = (p / (1.0 - p)).ln();
    let mut ln_pmf = f64::from(n) * (1.0 - p).ln();
    let mut pmf = Vec::with_capacity(n as usize + 1);
    for k in 0..=n {
        pmf.push(ln_pmf.exp());
        ln_pmf += (f64::from(n - k) / f64::from(k + 1)).ln() + ln_ratio;
    }
    let tail = FALSE_FAILURE / 2.0;
    let mut below = 0.0;
    let mut lo = 0;
    for (k, m) in pmf.iter().enumerate() {
        if below + m > tail {
            lo = k as u32;
            break;
        }
        below += m;
    }
    let mut above = 0.0;
    let mut hi = n;
    for (k, m) in pmf.iter().enumerate().rev() {
        if above + m > tail {
            hi = k as u32;
            break;
        }
        above += m;
    }
    (lo, hi)
}

/// What one attempt saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Seen {
    Answer {
        status: u16,
        body: String,
    },
    Refused,
    Reset(String),
    Timeout,
    /// The request could not even be made (a bad check).
    Invalid(String),
    /// A share check's count: `matched` of `total` answers (all with the expected status) had
    /// the text.
    Sample {
        matched: u32,
        total: u32,
    },
    /// A load's answers: counts by status, how many were overflows, how many got no answer.
    Load {
        codes: std::collections::BTreeMap<u16, u64>,
        overloaded: u64,
        no_answer: u64,
    },
    /// The answer was right; this is its trace (None: the collector has none for it).
    Trace(Option<TraceSeen>),
    /// The answers were right; Prometheus gave the learner's query (or refused it) and the
    /// reference query these answers.
    PromQl {
        query: String,
        got: Result<Vector, String>,
        want: Vector,
    },
    /// The answers were right; the mesh's metrics counted these `from` → `to` calls meanwhile.
    Graph {
        to_version: u64,
        total: u64,
        errors: u64,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub title: String,
    pub passed: bool,
    /// True when the check was not run because a check it needs failed.
    pub skipped: bool,
    pub guard: bool,
    /// The check keeps what the step before built (`kept:`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    pub saw: String,
    pub expected: String,
    pub hint: String,
    /// The mesh's reason for its answer to the last attempt, when the proxy recorded one.
    pub mesh_reason: Option<String>,
    pub request_id: String,
    pub attempts: u32,
    pub millis: u64,
}

/// Where checks send their requests.
#[derive(Clone, Debug)]
pub struct Target {
    pub gateway: SocketAddr,
    /// The gateway proxy's admin listener, for its decision records.
    pub gateway_admin: Option<SocketAddr>,
    /// `namespace/deployment` → the outbound listener of its (first) pod, for `via: workload`.
    pub workloads: std::collections::BTreeMap<String, SocketAddr>,
    /// `namespace/deployment` → its service name in traces (`<app>.<namespace>`), for a trace
    /// check on a request `via: workload`.
    pub trace_services: std::collections::BTreeMap<String, String>,
    /// The gateway's published HTTPS port (container port 8443).
    pub gateway_https: SocketAddr,
    /// The control plane, for the Secrets an HTTPS check trusts and presents.
    pub api: Option<crate::api::Client>,
    /// The trace collector's Jaeger API, for checks on a request's trace.
    pub tracing: Option<SocketAddr>,
    /// Every proxy's admin listener, for checks on the mesh's metrics.
    pub admins: Vec<SocketAddr>,
    /// The Prometheus addon, when it runs.
    pub prometheus: Option<SocketAddr>,
    /// Where the learner's answer files are read from.
    pub answers: Answers,
}

/// The learner's files a check reads (a PromQL query): the lab's folder in the learner's
/// workspace, or, for `lab verify`, the lab's own starting or solution files.
#[derive(Clone, Debug, Default)]
pub enum Answers {
    #[default]
    None,
    Dir(std::path::PathBuf),
    Files(BTreeMap<String, String>),
}

impl Answers {
    pub fn read(&self, name: &str) -> Result<String, String> {
        match self {
            Answers::None => Err(format!("no lab folder to read {name} from")),
            Answers::Dir(dir) => {
                let path = dir.join(name);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e} (`meshrig lab start` writes it)", path.display()))
            }
            Answers::Files(files) => files.get(name).cloned().ok_or_else(|| format!("the lab has no file {name}")),
        }
    }
}

fn describe_request(c: &Check, target: &Target) -> String {
    let r = &c.request;
    let mut out = match (&r.via, &r.from) {
        (Via::Workload, Some(from)) => format!("{} http://{}{} from {from}", r.method, r.host, r.path),
        (Via::Gateway, _) if r.tls.is_some() => {
            format!("{} https://{}{} (via {})", r.method, r.host, r.path, target.gateway_https)
        }
        _ => format!("{} http://{}{} (Host: {})", r.method, target.gateway, r.path, r.host),
    };
    if let Some(user) = &r.login {
        out.push_str(&format!(", signed in as {user}"));
    }
    match r.concurrency {
        Some(c) => out.push_str(&format!(", {} times over {c} connections at once", r.repeat)),
        None if r.repeat > 1 => out.push_str(&format!(", {} times", r.repeat)),
        None => {}
    }
    out
}

fn describe_expect(e: &Expect) -> String {
    if e.reset {
        return "the connection reset, without an answer".into();
    }
    if let Some(l) = &e.load {
        return match (l.overloaded_at_least, l.failed_at_most) {
            (Some(n), _) => format!(
                "some answers with status {}, the rest (at least {n}) the circuit breaker's overflow (503 with x-envoy-overloaded)",
                e.status
            ),
            (None, Some(p)) => format!("status {}, other answers at most {p}%", e.status),
            (None, None) => format!("status {} for every answer", e.status),
        };
    }
    let mut out = format!("status {}", e.status);
    if let Some(text) = &e.body_contains {
        out.push_str(&format!(" with {text:?} in the body"));
    }
    if let Some(text) = &e.body_not_contains {
        out.push_str(&format!(" {} {text:?}", if e.body_contains.is_some() { "and without" } else { "without" }));
    }
    if let Some(p) = &e.promql {
        out.push_str(&format!(
            "; in Prometheus, the query in {} gives the same series as `{}`, within {}%",
            p.file, p.reference, p.tolerance_percent
        ));
    }
    if let Some(g) = &e.graph {
        out.push_str(&format!("; in the mesh's metrics, calls from {} to {}", g.from, g.to));
        match (&g.version, g.percent, g.at_most) {
            (Some(v), Some(p), _) => out.push_str(&format!(", {p}% of them to {v} (give or take chance)")),
            (Some(v), None, Some(m)) => out.push_str(&format!(", at most {m}% of them to {v}")),
            _ => {}
        }
        if let Some(p) = g.errors_at_most {
            out.push_str(&format!(", at most {p}% failed"));
        }
    }
    if let Some(t) = &e.trace {
        if !t.services.is_empty() {
            out.push_str(&format!(", its trace with spans of {}", t.services.join(", ")));
        }
        if let Some(slow) = &t.slow {
            out.push_str(&format!(", a {} span of at least {} ms", slow.operation, slow.at_least_ms));
        }
    }
    if let Some(s) = &e.share {
        match (s.percent, s.at_most) {
            (Some(p), _) => {
                out.push_str(&format!(", {p}% of the answers with {:?} (give or take chance)", s.body_contains))
            }
            (None, Some(m)) => out.push_str(&format!(", at most {m}% of the answers with {:?}", s.body_contains)),
            (None, None) => {}
        }
    }
    out
}

/// Passes, or the kind of failure.
pub fn judge(expect: &Expect, seen: &Seen) -> Result<(), Failure> {
    if expect.reset {
        return match seen {
            Seen::Reset(_) => Ok(()),
            Seen::Answer { status, .. } => Err(Failure::Status(*status)),
            Seen::Refused => Err(Failure::Refused),
            Seen::Timeout => Err(Failure::Timeout),
            Seen::Invalid(_)
            | Seen::Sample { .. }
            | Seen::Load { .. }
            | Seen::Trace(_)
            | Seen::Graph { .. }
            | Seen::PromQl { .. } => Err(Failure::Body),
        };
    }
    match seen {
        Seen::Answer { status, .. } if *status != expect.status => Err(Failure::Status(*status)),
        Seen::Answer { body, .. } => {
            let lacks = expect.body_contains.as_ref().is_some_and(|t| !body.contains(t.as_str()));
            let has = expect.body_not_contains.as_ref().is_some_and(|t| body.contains(t.as_str()));
            if lacks || has {
                Err(Failure::Body)
            } else {
                Ok(())
            }
        }
        Seen::Refused => Err(Failure::Refused),
        Seen::Reset(_) | Seen::Invalid(_) => Err(Failure::Reset),
        Seen::Timeout => Err(Failure::Timeout),
        Seen::Sample { matched, total } => {
            let (lo, hi) = expect.share.as_ref().map(|s| s.accepts(*total)).unwrap_or((0, 0));
            if (lo..=hi).contains(matched) {
                Ok(())
            } else {
                Err(Failure::Body)
            }
        }
        Seen::Load { codes, overloaded, no_answer } => judge_load(expect, codes, *overloaded, *no_answer),
        Seen::Trace(seen) => match (&expect.trace, seen) {
            (Some(t), Some(seen)) if seen.meets(t) => Ok(()),
            _ => Err(Failure::Body),
        },
        Seen::Graph { to_version, total, errors } => match &expect.graph {
            Some(g) if g.judge(*to_version, *total, *errors) => Ok(()),
            _ => Err(Failure::Body),
        },
        Seen::PromQl { got: Ok(got), want, .. } => match &expect.promql {
            Some(p) if !want.is_empty() && same_answer(got, want, p.tolerance_percent) => Ok(()),
            _ => Err(Failure::Body),
        },
        Seen::PromQl { got: Err(_), .. } => Err(Failure::Body),
    }
}

/// A load's answers against `expect.status` and `expect.load`.
fn judge_load(
    expect: &Expect,
    codes: &std::collections::BTreeMap<u16, u64>,
    overloaded: u64,
    no_answer: u64,
) -> Result<(), Failure> {
    let ok = codes.get(&expect.status).copied().unwrap_or(0);
    let total = codes.values().sum::<u64>() + no_answer;
    // The most frequent other status names the failure (for its hint).
    let other = || {
        codes
            .iter()
            .filter(|(c, _)| **c != expect.status)
            .max_by_key(|(_, n)| **n)
            .map_or(Failure::Reset, |(c, _)| Failure::Status(*c))
    };
    if ok == 0 {
        return Err(if total == no_answer { Failure::Reset } else { other() });
    }
    let failed = total - ok;
    let load = expect.load.as_ref();
    if let Some(n) = load.and_then(|l| l.overloaded_at_least) {
        if failed > overloaded {
            return Err(other());
        }
        return if overloaded >= n { Ok(()) } else { Err(Failure::Status(expect.status)) };
    }
    let allowed = load.and_then(|l| l.failed_at_most).map_or(0.0, |p| total as f64 * p / 100.0);
    if failed as f64 > allowed {
        return Err(other());
    }
    Ok(())
}

/// The hint for this kind of failure: the first that names it, else the check's general hint.
pub fn hint_for<'a>(c: &'a Check, failure: &Failure) -> &'a str {
    c.hints.iter().find(|h| &h.when == failure).map(|h| h.hint.as_str()).unwrap_or(&c.hint)
}

fn describe_seen(seen: &Seen, expect: &Expect) -> String {
    if let Seen::Load { codes, overloaded, no_answer } = seen {
        let mut parts: Vec<String> = codes.iter().map(|(c, n)| format!("{n} × {c}")).collect();
        if *no_answer > 0 {
            parts.push(format!("{no_answer} without an answer"));
        }
        let total = codes.values().sum::<u64>() + no_answer;
        let mut out = format!("{total} answers: {}", parts.join(", "));
        if *overloaded > 0 {
            out.push_str(&format!(
                " ({overloaded} of the 503s with x-envoy-overloaded: the circuit breaker's overflow)"
            ));
        } else {
            out.push_str(" (none was a circuit breaker's overflow)");
        }
        return out;
    }
    if let Seen::Sample { matched, total } = seen {
        let text = expect.share.as_ref().map(|s| s.body_contains.as_str()).unwrap_or("");
        let (lo, hi) = expect.share.as_ref().map(|s| s.accepts(*total)).unwrap_or((0, 0));
        return format!(
            "{matched} of {total} answers ({:.0}%) with {text:?}; {lo} to {hi} would pass",
            f64::from(*matched) * 100.0 / f64::from((*total).max(1))
        );
    }
    if let (Seen::Answer { status, .. }, Ok(())) = (seen, judge(expect, seen)) {
        return match &expect.body_contains {
            Some(t) => format!("status {status} with {t:?} in the body"),
            None => format!("status {status}"),
        };
    }
    match seen {
        Seen::Answer { status, body } if *status == expect.status => match &expect.body_not_contains {
            Some(t) if body.contains(t.as_str()) => format!("status {status} with {t:?} in the body"),
            _ => format!(
                "status {status} without the expected text: {}",
                super::body::view(body, expect.body_contains.as_deref())
            ),
        },
        Seen::Answer { status, body } if body.trim().is_empty() => format!("status {status}, empty body"),
        Seen::Answer { status, body } => {
            format!("status {status}: {}", super::body::view(body, expect.body_contains.as_deref()))
        }
        Seen::Refused => "connection refused: nothing listens there (no Gateway server for that port yet?)".into(),
        Seen::Reset(why) => format!("no HTTP answer: {why}"),
        Seen::Timeout => "no answer in time".to_string(),
        Seen::Invalid(why) => format!("the check's request is invalid: {why}"),
        Seen::Sample { matched, total } => format!("{matched} of {total} answers with the text"),
        Seen::Load { .. } => String::new(), // described above
        Seen::PromQl { query, got, want } => {
            let file = expect.promql.as_ref().map_or("", |p| p.file.as_str());
            if query.is_empty() {
                return format!("{file} holds no query yet (only comments)");
            }
            match got {
                Err(why) => format!("Prometheus refused the query in {file}: {why}"),
                Ok(_) if want.is_empty() => {
                    "Prometheus has no data for the reference query yet (it scrapes every 5 s: the check keeps sending pages; try again)".into()
                }
                Ok(got) => format!("{file} gives {}; the right answer now is {}", show_vector(got), show_vector(want)),
            }
        }
        Seen::Graph { to_version, total, errors } => {
            let Some(g) = &expect.graph else { return String::new() };
            if *total == 0 {
                return format!("no calls from {} to {} in the mesh's metrics", g.from, g.to);
            }
            let mut out = format!("{total} calls from {} to {}", g.from, g.to);
            if let Some(v) = &g.version {
                let (lo, hi) = g.accepts(*total);
                out.push_str(&format!(
                    ", {to_version} of them ({:.0}%) to {v}; {lo} to {hi} would pass",
                    *to_version as f64 * 100.0 / *total as f64
                ));
            }
            out.push_str(&format!(", {errors} failed ({:.0}%)", *errors as f64 * 100.0 / *total as f64));
            out
        }
        Seen::Trace(None) => {
            "the right answer, but no trace of it in the collector (is tracing off in the mesh config?)".into()
        }
        Seen::Trace(Some(t)) => {
            let mut out = format!("a trace of {} spans across {}", t.spans.len(), t.services.join(", "));
            if let Some(slow) = expect.trace.as_ref().and_then(|e| e.slow.as_ref()) {
                match t.longest(&slow.operation) {
                    Some(ms) => out.push_str(&format!("; its longest {} span took {ms} ms", slow.operation)),
                    None => out.push_str(&format!("; no span named {}", slow.operation)),
                }
            }
            out
        }
    }
}

/// One attempt: sign in if the check says so, then send the request `repeat` times; the first
/// answer that fails the expectation is what was seen.
async fn attempt(client: &net::HttpClient, c: &Check, target: &Target, request_id: &str) -> Seen {
    let cookie = match &c.request.login {
        Some(user) => match login(client, c, target, user).await {
            Ok(cookie) => Some(cookie),
            Err(seen) => return seen,
        },
        None => None,
    };
    // Where this attempt's requests go, decided once: the gateway (HTTP, or HTTPS with the
    // check's Secrets, read now since the learner may have just made them), or a workload's
    // outbound listener in proxy form, as the app's HTTP_PROXY setting sends it.
    let dest = match (c.request.via, &c.request.tls) {
        (Via::Gateway, Some(t)) => match tls_client(target, t).await {
            Ok(config) => Dest::Tls(target.gateway_https, Box::new(config)),
            Err(why) => return Seen::Invalid(why),
        },
        (Via::Gateway, None) => Dest::Gateway(target.gateway),
        (Via::Workload, _) => {
            let from = c.request.from.as_deref().unwrap_or_default();
            let Some(outbound) = target.workloads.get(from) else {
                return Seen::Invalid(format!("no running pod of {from} to send the request from"));
            };
            Dest::Proxy(*outbound)
        }
    };
    let route = match Route::new(dest, &c.request.host, client) {
        Ok(r) => r,
        Err(why) => return Seen::Invalid(why),
    };
    let uri = route.url(&c.request.host, &c.request.path);
    if let Some(connections) = c.request.concurrency {
        return load(c, &uri, &route.dest, connections).await;
    }
    let mut seen = Seen::Invalid("the check sends no request (repeat: 0)".into());
    let mut matched = 0u32;
    // The proxies' counts before the requests, for a graph check.
    let before = match &c.expect.graph {
        Some(_) => Some(crate::dashboard::scrape_all(client, &target.admins).await),
        None => None,
    };
    for i in 0..c.request.repeat {
        // The first request carries the id whose decision record explains a failure; later
        // ones get their own so that each is recorded.
        let id = if i == 0 { request_id.to_string() } else { format!("{request_id}-{i}") };
        let mut headers = http::HeaderMap::new();
        headers.insert(header::USER_AGENT, http::HeaderValue::from_static("meshrig-lab-check"));
        match http::HeaderValue::from_str(&id) {
            Ok(v) => headers.insert("x-request-id", v),
            Err(e) => return Seen::Invalid(e.to_string()),
        };
        if let Some(cookie) = cookie.as_deref().and_then(|c| http::HeaderValue::from_str(c).ok()) {
            headers.insert(header::COOKIE, cookie);
        }
        let out =
            Outgoing { method: &c.request.method, host: &c.request.host, path: &c.request.path, headers, body: None };
        seen = route.send(out, c.request.timeout()).await;
        if let (Some(share), Seen::Answer { status, body }) = (&c.expect.share, &seen) {
            if *status != c.expect.status {
                return seen;
            }
            matched += u32::from(body.contains(share.body_contains.as_str()));
            continue;
        }
        if judge(&c.expect, &seen).is_err() {
            return seen;
        }
    }
    if c.expect.share.is_some() {
        return Seen::Sample { matched, total: c.request.repeat };
    }
    if let Some(t) = &c.expect.trace {
        // The trace is found under its first hop: the gateway, or the sending workload.
        let first = match (c.request.via, &c.request.from) {
            (Via::Workload, Some(from)) => target.trace_services.get(from).cloned(),
            _ => Some("istio-ingressgateway.istio-system".to_string()),
        };
        let seen = match first {
            Some(service) => find_trace(client, target, &service, request_id, t).await,
            None => None,
        };
        return Seen::Trace(seen);
    }
    if let Some(p) = &c.expect.promql {
        return promql(client, c, &route, target, p).await;
    }
    if let (Some(g), Some(before)) = (&c.expect.graph, before) {
        // A client-side proxy counts a call when its answer ends, before the page's answer does.
        let after = crate::dashboard::scrape_all(client, &target.admins).await;
        let (to_version, total, errors) = graph_calls(&before, &after, g);
        return Seen::Graph { to_version, total, errors };
    }
    seen
}

/// The learner's query and the reference, run while pages keep flowing: Prometheus needs two
/// scrapes with traffic between them before a rate means anything, so pages are sent (one every
/// 200 ms) until the reference query has an answer, for at most 30 s.
async fn promql(client: &net::HttpClient, c: &Check, route: &Route, target: &Target, p: &PromQlExpect) -> Seen {
    let Some(prometheus) = target.prometheus else {
        return Seen::Invalid("the Prometheus addon is not running: `meshrig addons enable prometheus`".into());
    };
    let query = match target.answers.read(&p.file) {
        Ok(text) => promql_text(&text),
        Err(why) => return Seen::Invalid(why),
    };
    let ask = |q: String| async move {
        let uri = format!("http://{prometheus}/api/v1/query?query={}", net::percent_encode(&q));
        probe::get_json(client, &uri, Duration::from_secs(5)).await
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = loop {
        let want = ask(p.reference.clone()).await.map(|a| vector(&a)).unwrap_or_else(|| Ok(vec![]));
        match want {
            Ok(want) if !want.is_empty() || Instant::now() >= deadline => break want,
            Err(why) => return Seen::Invalid(format!("the lab's reference query: {why}")),
            Ok(_) => {}
        }
        if let Dest::Gateway(_) = route.dest {
            let mut headers = http::HeaderMap::new();
            headers.insert(header::USER_AGENT, http::HeaderValue::from_static("meshrig-lab-check"));
            let out = Outgoing { method: "GET", host: &c.request.host, path: &c.request.path, headers, body: None };
            let _ = route.send(out, c.request.timeout()).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if query.is_empty() {
        return Seen::PromQl { query, got: Ok(vec![]), want };
    }
    let got = match ask(query.clone()).await {
        Some(answer) => vector(&answer),
        None => Err("no answer from Prometheus".into()),
    };
    Seen::PromQl { query, got, want }
}

/// The trace of the request `request_id` from the collector, waiting (bounded) for its spans:
/// proxies send them within a second or so of the answer.
async fn find_trace(
    client: &net::HttpClient,
    target: &Target,
    service: &str,
    request_id: &str,
    want: &TraceExpect,
) -> Option<TraceSeen> {
    let tracing = target.tracing?;
    let tags = net::percent_encode(&serde_json::json!({ "guid:x-request-id": request_id }).to_string());
    let service = net::percent_encode(service);
    let uri = format!("http://{tracing}/api/traces?service={service}&lookback=1h&limit=1&tags={tags}");
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut last = None;
    loop {
        if let Some(seen) = probe::get_json(client, &uri, Duration::from_secs(5)).await.as_ref().and_then(trace_seen) {
            if seen.meets(want) {
                return Some(seen);
            }
            last = Some(seen);
        }
        if Instant::now() >= deadline {
            return last;
        }
        // The spans arrive in batches; there is nothing to wait on but the collector itself.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `repeat` requests over `connections` connections at once, with the load generator.
async fn load(c: &Check, uri: &str, dest: &Dest, connections: u32) -> Seen {
    let load_target = match dest {
        Dest::Proxy(proxy) => crate::load::Target::via(uri, *proxy),
        Dest::Gateway(gateway) => crate::load::Target::via(uri, *gateway),
        Dest::Tls(..) => Err("a check with concurrency goes over plain HTTP only".to_string()),
    };
    let mut load_target = match load_target {
        Ok(t) => t,
        Err(why) => return Seen::Invalid(why),
    };
    // The gateway takes origin-form requests; the Host header says where.
    load_target.via_proxy = matches!(dest, Dest::Proxy(_));
    let mut headers = http::HeaderMap::new();
    headers.insert(header::USER_AGENT, http::HeaderValue::from_static("meshrig-lab-check"));
    if let Ok(h) = http::HeaderValue::from_str(&c.request.host) {
        headers.insert(header::HOST, h);
    }
    let options = crate::load::Options {
        connections: connections.max(1) as usize,
        qps: 0.0,
        calls: Some(u64::from(c.request.repeat.max(1))),
        duration: None,
        method: http::Method::from_bytes(c.request.method.as_bytes()).unwrap_or(http::Method::GET),
        headers,
        timeout: c.request.timeout(),
    };
    let progress = std::sync::Arc::new(crate::load::Progress::default());
    let report = crate::load::run(load_target, options, progress, std::future::pending()).await;
    Seen::Load { codes: report.codes, overloaded: report.overloaded, no_answer: report.errors.values().sum() }
}

/// Signs in on Bookinfo's product page through the gateway; the session cookie, or what was seen.
async fn login(client: &net::HttpClient, c: &Check, target: &Target, user: &str) -> Result<String, Seen> {
    let form: String = format!("username={}&passwd=", user.replace('&', "%26").replace('=', "%3D").replace(' ', "+"));
    let req = client
        .post(format!("http://{}/login", target.gateway))
        .header(header::HOST, &c.request.host)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::REFERER, format!("http://{}/productpage", c.request.host))
        .header(header::USER_AGENT, "meshrig-lab-check")
        .body(form);
    let resp = match tokio::time::timeout(c.request.timeout(), req.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(Seen::Reset(format!("signing in: {}", crate::api::error_chain(&e)))),
        Err(_) => return Err(Seen::Timeout),
    };
    let cookie = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().filter(|c| c.starts_with("session=")).map(str::to_string));
    match cookie {
        Some(c) => Ok(c),
        None => Err(Seen::Answer {
            status: resp.status().as_u16(),
            body: format!("signing in as {user} gave no session cookie (POST /login answered {})", resp.status()),
        }),
    }
}

/// A TLS client that trusts the CA of the check's Secret and presents its client Secret.
async fn tls_client(target: &Target, t: &CheckTls) -> Result<rustls::ClientConfig, String> {
    let api = target.api.as_ref().ok_or("no control plane to read Secrets from")?;
    let secret = |name: &str| {
        let name = name.to_string();
        async move {
            let (ns, n) = name.split_once('/').ok_or_else(|| format!("`{name}`: use NAMESPACE/NAME"))?;
            let found = api.list(crate::resources::Kind::Secret, Some(ns), Some(n)).await.map_err(|e| e.to_string())?;
            match found.into_iter().next() {
                Some(crate::resources::Resource::Secret(s)) => Ok(s),
                _ => Err(format!("Secret {name} does not exist (yet)")),
            }
        }
    };
    let ca_secret = secret(&t.ca_secret).await?;
    let ca = ca_secret.text(&["ca.crt", "tls.crt"]).ok_or_else(|| format!("Secret {} has no ca.crt", t.ca_secret))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::tls::certs_from_pem(&ca)? {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match &t.client_secret {
        Some(name) => {
            let s = secret(name).await?;
            let (Some(cert), Some(key)) = (s.text(&["tls.crt"]), s.text(&["tls.key"])) else {
                return Err(format!("Secret {name} has no tls.crt and tls.key"));
            };
            builder
                .with_client_auth_cert(crate::tls::certs_from_pem(&cert)?, crate::tls::key_from_pem(&key)?)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The gateway's decision record for the request, if it kept one.
async fn mesh_reason(client: &net::HttpClient, admin: SocketAddr, request_id: &str) -> Option<String> {
    let record =
        probe::get_json(client, &format!("http://{admin}/explain?id={request_id}"), Duration::from_secs(2)).await?;
    let reason = record.get("reason")?.as_str()?;
    let flags = record.get("response_flags").and_then(|f| f.as_str()).filter(|f| *f != "-");
    Some(match flags {
        Some(f) => format!("{reason} [response flags {f}]"),
        None => reason.to_string(),
    })
}

/// The outcome of a check that was not run because `needed` (a title) has not passed.
pub fn not_judged(c: &Check, needed: &str) -> Outcome {
    Outcome {
        id: c.id.clone(),
        title: c.title.clone(),
        passed: false,
        skipped: true,
        guard: c.guard.is_some(),
        kept: c.kept.is_some(),
        saw: format!("not judged yet: it needs \"{needed}\" to pass first"),
        expected: describe_expect(&c.expect),
        hint: format!("fix \"{needed}\" first"),
        mesh_reason: None,
        request_id: String::new(),
        attempts: 0,
        millis: 0,
    }
}

/// Runs a check until it passes or `wait` has passed; `retrying` is told each failed attempt
/// (for a spinner).
pub async fn run(c: &Check, target: &Target, wait: Duration, mut retrying: impl FnMut(u32, &str)) -> Outcome {
    // A fresh client per check: no pooled connection carries over between checks.
    let client = net::client();
    let started = Instant::now();
    let deadline = started + wait;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let request_id = format!("meshrig-check-{}-{}", c.id, crate::env::random_hex(6).unwrap_or_default());
        let seen = attempt(&client, c, target, &request_id).await;
        let verdict = judge(&c.expect, &seen);
        if verdict.is_ok() || Instant::now() >= deadline {
            let (hint, mesh_reason) = match &verdict {
                Ok(()) => (String::new(), None),
                Err(failure) => {
                    let reason = match target.gateway_admin {
                        Some(admin) if matches!(seen, Seen::Answer { .. }) => {
                            mesh_reason(&client, admin, &request_id).await
                        }
                        _ => None,
                    };
                    (hint_for(c, failure).to_string(), reason)
                }
            };
            return Outcome {
                id: c.id.clone(),
                title: c.title.clone(),
                passed: verdict.is_ok(),
                skipped: false,
                guard: c.guard.is_some(),
                kept: c.kept.is_some(),
                saw: format!("{} from {}", describe_seen(&seen, &c.expect), describe_request(c, target)),
                expected: describe_expect(&c.expect),
                hint,
                mesh_reason,
                request_id,
                attempts,
                millis: started.elapsed().as_millis() as u64,
            };
        }
        retrying(attempts, &describe_seen(&seen, &c.expect));
        // Mesh config is eventually consistent: try again shortly, until the deadline.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a lab's checks in order, telling `done` each outcome as it is known. A check whose
/// `needs` failed is not run.
pub async fn run_all(
    checks: &[Check],
    target: &Target,
    wait: Duration,
    mut started: impl FnMut(&Check),
    mut retrying: impl FnMut(&Check, u32, &str),
    mut done: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = Vec::new();
    for c in checks {
        let failed_need = c.needs.iter().find_map(|id| out.iter().find(|o| &o.id == id && !o.passed));
        let outcome = match failed_need {
            Some(need) => not_judged(c, &need.title),
            None => {
                started(c);
                run(c, target, wait, |n, seen| retrying(c, n, seen)).await
            }
        };
        done(&outcome);
        out.push(outcome);
    }
    out
}

/// Problems in a lab's checks (unknown or later `needs`, duplicate ids), for the course test.
pub fn lint(checks: &[Check]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        if checks[..i].iter().any(|d| d.id == c.id) {
            problems.push(format!("check id {:?} is used twice", c.id));
        }
        for n in &c.needs {
            if !checks[..i].iter().any(|d| &d.id == n) {
                problems.push(format!("check {:?} needs {n:?}, which is not an earlier check", c.id));
            }
        }
        if c.guard.as_deref().is_some_and(|g| g.trim().is_empty()) {
            problems.push(format!("check {:?} is a guard without a reason", c.id));
        }
        if c.kept.as_deref().is_some_and(|g| g.trim().is_empty()) || (c.kept.is_some() && c.step.is_none_or(|s| s < 2))
        {
            problems.push(format!("check {:?}: `kept:` needs a reason and a step after the first", c.id));
        }
        let from_ok = c.request.from.as_deref().is_some_and(|f| f.split('/').filter(|p| !p.is_empty()).count() == 2);
        match c.request.via {
            Via::Workload if !from_ok => {
                problems.push(format!("check {:?} is sent via a workload: give `from: NAMESPACE/DEPLOYMENT`", c.id))
            }
            Via::Gateway if c.request.from.is_some() => {
                problems.push(format!("check {:?} has `from` but is sent via the gateway", c.id))
            }
            _ => {}
        }
        if c.expect.graph.as_ref().is_some_and(|g| (g.percent.is_some() || g.at_most.is_some()) != g.version.is_some())
        {
            problems.push(format!("check {:?}: a graph share names a `version` and a `percent` or `atMost`", c.id));
        }
        if c.expect.promql.is_some()
            && (c.expect.graph.is_some() || c.expect.trace.is_some() || c.request.concurrency.is_some())
        {
            problems.push(format!("check {:?} runs a PromQL query: no graph, trace or concurrency with it", c.id));
        }
        if c.expect.graph.is_some() && (c.expect.trace.is_some() || c.request.concurrency.is_some()) {
            problems.push(format!("check {:?} judges the graph: no trace or concurrency with it", c.id));
        }
        if c.expect.trace.is_some() && (c.expect.share.is_some() || c.request.concurrency.is_some()) {
            problems.push(format!(
                "check {:?} looks for a trace: it sends one request, without share or concurrency",
                c.id
            ));
        }
        if !c.expect.reset && c.expect.status == 0 {
            problems.push(format!("check {:?} expects neither a status nor a reset", c.id));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Seen {
        Seen::Answer { status, body: body.into() }
    }

    #[test]
    fn a_promql_answer_is_judged_series_by_series_within_the_tolerance() {
        assert_eq!(promql_text("# a comment\n  # another\nsum(rate(x[1m]))\n  by (v)\n"), "sum(rate(x[1m]))\n  by (v)");
        let answer = |series: serde_json::Value| serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": series}});
        let want =
            vector(&answer(serde_json::json!([{"metric": {"destination_version": "faulty"}, "value": [1.0, "0.50"]}])))
                .unwrap();
        let close =
            vector(&answer(serde_json::json!([{"metric": {"destination_version": "faulty"}, "value": [1.0, "0.55"]}])))
                .unwrap();
        let doubled =
            vector(&answer(serde_json::json!([{"metric": {"destination_version": "faulty"}, "value": [1.0, "1.0"]}])))
                .unwrap();
        let unlabelled = vector(&answer(serde_json::json!([{"metric": {}, "value": [1.0, "0.5"]}]))).unwrap();
        assert!(same_answer(&close, &want, 25.0));
        assert!(!same_answer(&doubled, &want, 25.0), "both reporters counted");
        assert!(!same_answer(&unlabelled, &want, 25.0), "one series per version was asked for");
        assert!(!same_answer(&vec![], &want, 25.0));
        let scalar = serde_json::json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2"]}});
        assert_eq!(vector(&scalar).unwrap(), vec![(BTreeMap::new(), 2.0)]);
        let refused = serde_json::json!({"status": "error", "error": "parse error at char 5"});
        assert_eq!(vector(&refused).unwrap_err(), "parse error at char 5");
        let e = Expect {
            reset: false,
            status: 200,
            body_contains: None,
            body_not_contains: None,
            share: None,
            load: None,
            trace: None,
            graph: None,
            promql: Some(PromQlExpect { file: "query.promql".into(), reference: "r".into(), tolerance_percent: 25.0 }),
        };
        let seen = Seen::PromQl { query: "q".into(), got: Ok(doubled), want: want.clone() };
        assert_eq!(judge(&e, &seen), Err(Failure::Body));
        assert_eq!(
            describe_seen(&seen, &e),
            "query.promql gives {destination_version=\"faulty\"} 1.000; the right answer now is {destination_version=\"faulty\"} 0.500"
        );
        assert_eq!(judge(&e, &Seen::PromQl { query: "q".into(), got: Ok(close), want }), Ok(()));
        assert_eq!(judge(&e, &Seen::PromQl { query: "q".into(), got: Ok(vec![]), want: vec![] }), Err(Failure::Body));
    }

    #[test]
    fn the_graph_is_judged_by_the_calls_made_between_two_scrapes() {
        let line = |version: &str, code: u16, n: u32| {
            format!(
                "istio_requests_total{{reporter=\"source\",source_workload=\"reviews-v2\",source_workload_namespace=\"default\",source_app=\"reviews\",source_version=\"v2\",destination_workload=\"ratings-{version}\",destination_workload_namespace=\"default\",destination_app=\"ratings\",destination_version=\"{version}\",destination_service=\"ratings.default.svc.cluster.local\",response_code=\"{code}\"}} {n}\n"
            )
        };
        let before = crate::graph::parse(&(line("v1", 200, 100) + &line("faulty", 200, 10) + &line("faulty", 503, 10)));
        let after = crate::graph::parse(&(line("v1", 200, 140) + &line("faulty", 200, 15) + &line("faulty", 503, 15)));
        let g = |version: Option<&str>, percent: Option<f64>, at_most: Option<f64>, errors: Option<f64>| GraphExpect {
            from: "reviews".into(),
            to: "ratings".into(),
            version: version.map(str::to_string),
            percent,
            at_most,
            errors_at_most: errors,
        };
        // 50 calls in the window: 40 to v1, 10 to faulty (5 of them failed).
        assert_eq!(graph_calls(&before, &after, &g(Some("faulty"), Some(20.0), None, None)), (10, 50, 5));
        assert!(g(Some("faulty"), Some(20.0), None, None).judge(10, 50, 5));
        assert!(!g(Some("faulty"), None, Some(0.0), None).judge(10, 50, 5), "the canary still gets calls");
        assert!(!g(None, None, None, Some(0.0)).judge(10, 50, 5), "some calls failed");
        assert!(g(Some("faulty"), None, Some(0.0), Some(0.0)).judge(0, 50, 0));
        assert!(!g(None, None, None, Some(0.0)).judge(0, 0, 0), "no calls at all proves nothing");
        let e = Expect {
            reset: false,
            status: 200,
            body_contains: None,
            body_not_contains: None,
            share: None,
            load: None,
            trace: None,
            graph: Some(g(Some("faulty"), None, Some(0.0), None)),
            promql: None,
        };
        let seen = Seen::Graph { to_version: 10, total: 50, errors: 5 };
        assert_eq!(judge(&e, &seen), Err(Failure::Body));
        assert_eq!(
            describe_seen(&seen, &e),
            "50 calls from reviews to ratings, 10 of them (20%) to faulty; 0 to 0 would pass, 5 failed (10%)"
        );
    }

    #[test]
    fn a_trace_is_judged_by_its_services_and_its_slowest_span() {
        let answer = serde_json::json!({"data": [{
        "processes": {"p1": {"serviceName": "reviews.default"}, "p2": {"serviceName": "ratings.default"}},
        "spans": [
            {"operationName": "ratings.default.svc.cluster.local:9080/*", "processID": "p1", "duration": 2_004_000},
            {"operationName": "ratings.default.svc.cluster.local:9080/*", "processID": "p2", "duration": 3_000},
            {"operationName": "reviews.default.svc.cluster.local:9080/*", "processID": "p1", "duration": 2_010_000},
        ]}]});
        let seen = trace_seen(&answer).unwrap();
        assert_eq!(seen.services, ["ratings.default", "reviews.default"]);
        let e = |services: &[&str], ms: u64| Expect {
            reset: false,
            status: 200,
            body_contains: None,
            body_not_contains: None,
            share: None,
            load: None,
            trace: Some(TraceExpect {
                services: services.iter().map(|s| s.to_string()).collect(),
                slow: Some(SlowSpan { operation: "ratings.default.svc.cluster.local:9080/*".into(), at_least_ms: ms }),
            }),
            graph: None,
            promql: None,
        };
        let traced = Seen::Trace(Some(seen));
        assert_eq!(judge(&e(&["reviews.default", "ratings.default"], 2000), &traced), Ok(()));
        assert_eq!(judge(&e(&["details.default"], 2000), &traced), Err(Failure::Body));
        assert_eq!(judge(&e(&[], 2500), &traced), Err(Failure::Body));
        assert!(describe_seen(&traced, &e(&[], 2500))
            .contains("its longest ratings.default.svc.cluster.local:9080/* span took 2004 ms"));
        assert_eq!(judge(&e(&[], 0), &Seen::Trace(None)), Err(Failure::Body));
        assert_eq!(trace_seen(&serde_json::json!({"data": []})), None);
    }

    #[test]
    fn a_reset_can_be_what_is_expected() {
        let e = Expect {
            reset: true,
            status: 0,
            body_contains: None,
            body_not_contains: None,
            share: None,
            load: None,
            trace: None,
            graph: None,
            promql: None,
        };
        assert_eq!(judge(&e, &Seen::Reset("connection reset by peer".into())), Ok(()));
        assert_eq!(judge(&e, &answer(200, "")), Err(Failure::Status(200)));
        assert_eq!(describe_expect(&e), "the connection reset, without an answer");
    }

    #[test]
    fn the_verdict_names_the_kind_of_failure() {
        let e = Expect {
            reset: false,
            status: 404,
            body_contains: None,
            body_not_contains: None,
            share: None,
            load: None,
            trace: None,
            graph: None,
            promql: None,
        };
        assert_eq!(judge(&e, &answer(404, "")), Ok(()));
        assert_eq!(judge(&e, &answer(200, "")), Err(Failure::Status(200)));
        assert_eq!(judge(&e, &Seen::Refused), Err(Failure::Refused));
        assert_eq!(judge(&e, &Seen::Timeout), Err(Failure::Timeout));
        assert_eq!(judge(&e, &Seen::Reset("closed".into())), Err(Failure::Reset));
        let e = Expect {
            reset: false,
            status: 200,
            body_contains: Some("stars".into()),
            body_not_contains: None,
            share: None,
            load: None,
            trace: None,
            graph: None,
            promql: None,
        };
        assert_eq!(judge(&e, &answer(200, "no ratings")), Err(Failure::Body));
        assert_eq!(judge(&e, &answer(200, "two stars")), Ok(()));
        let e = Expect {
            reset: false,
            status: 200,
            body_contains: Some("Book Reviews".into()),
            body_not_contains: Some("star".into()),
            share: None,
            load: None,
            trace: None,
            graph: None,
            promql: None,
        };
        assert_eq!(judge(&e, &answer(200, "Book Reviews")), Ok(()));
        assert_eq!(judge(&e, &answer(200, "Book Reviews, two stars")), Err(Failure::Body));
        assert!(describe_seen(&answer(200, "Book Reviews, two stars"), &e).contains("with \"star\" in the body"));
    }

    #[test]
    fn a_load_passes_on_the_split_it_names() {
        let codes = |pairs: &[(u16, u64)]| pairs.iter().copied().collect::<std::collections::BTreeMap<_, _>>();
        let seen =
            |pairs: &[(u16, u64)], overloaded, no_answer| Seen::Load { codes: codes(pairs), overloaded, no_answer };
        let tripped = Expect {
            reset: false,
            status: 200,
            body_contains: None,
            body_not_contains: None,
            share: None,
            load: Some(LoadExpect { overloaded_at_least: Some(1), failed_at_most: None }),
            trace: None,
            graph: None,
            promql: None,
        };
        assert_eq!(judge(&tripped, &seen(&[(200, 8), (503, 22)], 22, 0)), Ok(()));
        // No overflow: the breaker never tripped; app 503s are not overflows; none got through.
        assert_eq!(judge(&tripped, &seen(&[(200, 30)], 0, 0)), Err(Failure::Status(200)));
        assert_eq!(judge(&tripped, &seen(&[(200, 8), (503, 22)], 20, 0)), Err(Failure::Status(503)));
        assert_eq!(judge(&tripped, &seen(&[(503, 30)], 30, 0)), Err(Failure::Status(503)));
        assert_eq!(judge(&tripped, &seen(&[], 0, 30)), Err(Failure::Reset));
        let text = describe_seen(&seen(&[(200, 8), (503, 22)], 22, 0), &tripped);
        assert_eq!(
            text,
            "30 answers: 8 × 200, 22 × 503 (22 of the 503s with x-envoy-overloaded: the circuit breaker's overflow)"
        );
        let all = Expect { load: None, ..tripped.clone() };
        assert_eq!(judge(&all, &seen(&[(200, 30)], 0, 0)), Ok(()));
        assert_eq!(judge(&all, &seen(&[(200, 29), (503, 1)], 1, 0)), Err(Failure::Status(503)));
        let few =
            Expect { load: Some(LoadExpect { overloaded_at_least: None, failed_at_most: Some(10.0) }), ..tripped };
        assert_eq!(judge(&few, &seen(&[(200, 27), (503, 3)], 0, 0)), Ok(()));
        assert_eq!(judge(&few, &seen(&[(200, 26), (503, 4)], 0, 0)), Err(Failure::Status(503)));
    }

    #[test]
    fn a_share_accepts_chance_and_rejects_the_neighbouring_splits() {
        // 300 pages at 20%: a right split lands in the interval (it is wide), and the learner's
        // likely mistakes (0%, 50%, 100%) land outside it; the intervals of 20% and 50% do not
        // even overlap.
        let (lo, hi) = acceptance(300, 0.2);
        assert!(lo > 0 && lo < 60 && hi > 60 && hi < 150, "{lo}..{hi}");
        let (lo50, hi50) = acceptance(300, 0.5);
        assert!(hi < lo50 && hi50 < 300, "20% and 50% do not overlap: {hi} < {lo50}, {hi50}");
        assert_eq!(acceptance(50, 1.0), (50, 50));
        assert_eq!(acceptance(50, 0.0), (0, 0));
        // The tails outside are at most the promised false-failure rate (checked by summing).
        let n = 300u32;
        let p: f64 = 0.2;
        let pmf = |k: u32| {
            let mut c = 1f64;
            for i in 0..k {
                c *= f64::from(n - i) / f64::from(i + 1);
            }
            c * p.powi(k as i32) * (1.0 - p).powi((n - k) as i32)
        };
        let outside: f64 = (0..lo).chain(hi + 1..=n).map(pmf).sum();
        assert!(outside <= FALSE_FAILURE, "{outside}");
        let e = Expect {
            reset: false,
            status: 200,
            body_contains: None,
            body_not_contains: None,
            share: Some(Share { body_contains: "red".into(), percent: Some(20.0), at_most: None }),
            load: None,
            trace: None,
            graph: None,
            promql: None,
        };
        assert_eq!(judge(&e, &Seen::Sample { matched: 61, total: 300 }), Ok(()));
        assert_eq!(judge(&e, &Seen::Sample { matched: 150, total: 300 }), Err(Failure::Body));
        assert!(describe_seen(&Seen::Sample { matched: 150, total: 300 }, &e).contains("150 of 300 answers (50%)"));
        let bound = Share { body_contains: "error".into(), percent: None, at_most: Some(20.0) };
        assert_eq!(bound.accepts(100), (0, 20));
    }

    #[test]
    fn hints_follow_the_failure_and_fall_back_to_the_general_one() {
        let c: Check = serde_yaml::from_str(
            r#"
id: a
title: A
request: {via: gateway, host: h, path: /}
expect: {status: 200}
hint: general
hints:
  - {when: {status: 503}, hint: destination}
  - {when: refused, hint: listener}
"#,
        )
        .unwrap();
        assert_eq!(hint_for(&c, &Failure::Status(503)), "destination");
        assert_eq!(hint_for(&c, &Failure::Refused), "listener");
        assert_eq!(hint_for(&c, &Failure::Status(404)), "general");
        assert_eq!(hint_for(&c, &Failure::Body), "general");
    }

    #[test]
    fn lint_finds_bad_needs_and_duplicates() {
        let mk = |id: &str, needs: &[&str]| Check {
            id: id.into(),
            title: id.into(),
            request: CheckRequest {
                via: Via::Gateway,
                from: None,
                tls: None,
                host: "h".into(),
                path: "/".into(),
                method: get(),
                login: None,
                repeat: 1,
                timeout_seconds: 5,
                concurrency: None,
            },
            expect: Expect {
                reset: false,
                status: 200,
                body_contains: None,
                body_not_contains: None,
                share: None,
                load: None,
                trace: None,
                graph: None,
                promql: None,
            },
            hint: String::new(),
            hints: vec![],
            needs: needs.iter().map(|s| s.to_string()).collect(),
            guard: None,
            kept: None,
            step: None,
        };
        assert!(lint(&[mk("a", &[]), mk("b", &["a"])]).is_empty());
        assert_eq!(lint(&[mk("a", &["b"]), mk("b", &[])]).len(), 1);
        assert_eq!(lint(&[mk("a", &[]), mk("a", &[])]).len(), 1);
    }
}
