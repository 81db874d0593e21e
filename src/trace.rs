//! Distributed tracing's shared parts (pure): the trace context in B3 and W3C `traceparent`
//! headers, ids, and the span a proxy reports to the control plane's collector.

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

/// The share of new traces a proxy samples when nothing says otherwise: 100%, as Istio's
/// `demo` profile (the one its tasks install; the default profile samples 1%, so a learner
/// would need a hundred requests before the first trace shows).
pub const DEFAULT_SAMPLING: f64 = 100.0;

/// A request's place in a trace, as its headers carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's sampling decision, when it made one.
    pub sampled: Option<bool>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// The incoming context: B3 multi-header first (what Istio's Zipkin tracer reads), then W3C
/// `traceparent`. Malformed or all-zero ids are no context.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    let b3 = || {
        let trace = header(headers, "x-b3-traceid").filter(|t| t.len() == 16 || t.len() == 32)?;
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(header(headers, "x-b3-spanid")?, 16).ok().filter(|s| *s != 0)?;
        let sampled = match (header(headers, "x-b3-sampled"), header(headers, "x-b3-flags")) {
            (_, Some("1")) | (Some("1" | "true"), _) => Some(true),
            (Some("0" | "false"), _) => Some(false),
            _ => None,
        };
        Some(Context { trace_id, span_id, sampled })
    };
    let w3c = || {
        let mut parts = header(headers, "traceparent")?.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
        Some(Context { trace_id, span_id, sampled: Some(sampled) })
    };
    b3().or_else(w3c)
}

/// The trace id of the request's `traceparent`, if it has a well-formed one.
pub fn w3c_trace_id(headers: &HeaderMap) -> Option<u128> {
    let trace = header(headers, "traceparent")?.split('-').nth(1).filter(|t| t.len() == 32)?;
    u128::from_str_radix(trace, 16).ok()
}

/// Sets the context the next hop sees, in both formats: B3 (`x-b3-traceid`, `x-b3-spanid`,
/// `x-b3-parentspanid`, `x-b3-sampled`) and `traceparent`.
pub fn inject(headers: &mut HeaderMap, trace_id: u128, span_id: u64, parent: Option<u64>, sampled: bool) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("x-b3-traceid", format!("{trace_id:032x}"));
    set("x-b3-spanid", format!("{span_id:016x}"));
    set("x-b3-sampled", if sampled { "1" } else { "0" }.into());
    set("traceparent", format!("00-{trace_id:032x}-{span_id:016x}-{}", if sampled { "01" } else { "00" }));
    match parent {
        Some(p) => set("x-b3-parentspanid", format!("{p:016x}")),
        None => {
            headers.remove("x-b3-parentspanid");
        }
    }
    headers.remove("x-b3-flags");
}

/// A new non-zero span id.
pub fn new_span_id(rng: &mut fastrand::Rng) -> u64 {
    rng.u64(1..)
}

/// A new non-zero trace id.
pub fn new_trace_id(rng: &mut fastrand::Rng) -> u128 {
    (u128::from(rng.u64(..)) << 64) | u128::from(rng.u64(1..))
}

/// Client spans come from a sidecar's outbound side and gateways, server spans from a
/// sidecar's inbound side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Client,
    Server,
}

/// One finished span, as a proxy reports it. The collector adds the reporting pod's service
/// (`app.namespace`), so a proxy cannot speak for another workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    pub parent_id: Option<String>,
    /// Istio's decorator: `reviews.default.svc.cluster.local:9080/*`.
    pub operation: String,
    pub kind: Kind,
    /// Microseconds since the Unix epoch, and microseconds.
    pub start_us: u64,
    pub duration_us: u64,
    pub tags: Vec<(String, String)>,
}

/// A random UUID v4, as Envoy generates for `x-request-id` (and httpbin's `/uuid`).
pub fn request_id() -> String {
    let mut b = [0u8; 16];
    fastrand::fill(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn b3_then_traceparent_and_both_are_written() {
        let b3 = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
        ]);
        let c = extract(&b3).unwrap();
        assert_eq!(
            (c.trace_id, c.span_id, c.sampled),
            (0x463ac35c9f6413ad48485a3953bb6124, 0xa2fb4a1d1a96d312, Some(true))
        );
        let w3c = headers(&[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]);
        let c = extract(&w3c).unwrap();
        assert_eq!(
            (c.trace_id, c.span_id, c.sampled),
            (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, Some(true))
        );
        let short = headers(&[("x-b3-traceid", "48485a3953bb6124"), ("x-b3-spanid", "0000000000000001")]);
        assert_eq!(extract(&short).unwrap().sampled, None);
        for bad in [
            headers(&[("x-b3-traceid", "zz"), ("x-b3-spanid", "1")]),
            headers(&[("traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01")]),
            headers(&[("traceparent", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]),
        ] {
            assert_eq!(extract(&bad), None, "{bad:?}");
        }

        let mut out = headers(&[("x-b3-parentspanid", "1111111111111111"), ("x-b3-flags", "1")]);
        inject(&mut out, 0xabc, 0x42, None, true);
        assert_eq!(out["x-b3-traceid"], "00000000000000000000000000000abc");
        assert_eq!(out["x-b3-spanid"], "0000000000000042");
        assert_eq!(out["traceparent"], "00-00000000000000000000000000000abc-0000000000000042-01");
        assert!(!out.contains_key("x-b3-parentspanid") && !out.contains_key("x-b3-flags"));
        inject(&mut out, 0xabc, 0x43, Some(0x42), false);
        assert_eq!(
            (&out["x-b3-parentspanid"], &out["x-b3-sampled"]),
            (&HeaderValue::from_static("0000000000000042"), &HeaderValue::from_static("0"))
        );
        let back = extract(&out).unwrap();
        assert_eq!((back.trace_id, back.span_id, back.sampled), (0xabc, 0x43, Some(false)));
    }
}
