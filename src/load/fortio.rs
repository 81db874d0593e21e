//! The fortio pod's command line: `fortio load|curl [flags] URL` parsed as fortio's Go flags
//! are, and a load report printed in fortio's text layout (the `Code 200 : 17 (85.0 %)` lines,
//! the range table, `# target 50% …`, `All done …`), which Istio's tasks show and learners
//! read. Pure: the run itself is `load::run`.

use std::fmt::Write as _;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{Options, Report};

/// What was asked.
#[derive(Debug, PartialEq)]
pub enum Command {
    Load { options: OptionsSpec, url: String },
    Curl { headers: Vec<(String, String)>, timeout: Duration, url: String },
    Version,
}

/// `fortio load`'s settings, with fortio's defaults (`-c 4 -qps 8 -t 5s`).
#[derive(Debug, PartialEq)]
pub struct OptionsSpec {
    pub connections: usize,
    pub qps: f64,
    pub calls: Option<u64>,
    pub duration: Option<Duration>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub percentiles: Vec<f64>,
    pub method: String,
}

impl OptionsSpec {
    pub fn to_options(&self) -> Result<Options, String> {
        Ok(Options {
            connections: self.connections,
            qps: self.qps,
            calls: self.calls,
            duration: if self.calls.is_some() { None } else { self.duration },
            method: Method::from_bytes(self.method.as_bytes())
                .map_err(|_| format!("-X {}: not a method", self.method))?,
            headers: header_map(&self.headers)?,
            timeout: self.timeout,
        })
    }
}

pub fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("-H {k}: not a header name"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("-H {k}: {v:?} is not a header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Flags that change nothing a learner sees here (logging, labels, result files).
const QUIET_VALUE_FLAGS: [&str; 4] = ["loglevel", "labels", "r", "a"];
const QUIET_BOOL_FLAGS: [&str; 4] = ["quiet", "allow-initial-errors", "stdclient", "nocatchup"];

/// Parses the words after `fortio` (`load -c 2 -qps 0 -n 20 -loglevel Warning URL`).
pub fn parse(words: &[String]) -> Result<Command, String> {
    let (sub, rest) = words.split_first().ok_or("give a command: fortio load|curl [flags] URL")?;
    match sub.as_str() {
        "version" => return Ok(Command::Version),
        "load" | "curl" => {}
        "server" | "report" | "redirect" | "proxies" | "nc" | "grpcping" | "tcp-echo" | "udp-echo" => {
            return Err(format!(
                "fortio {sub}: not here; the fortio pod already serves fortio's echo on port 8080. \
                 `load` and `curl` run from the pod"
            ))
        }
        other => {
            return Err(format!(
                "fortio: unknown command {other:?}; use `fortio load [flags] URL` or `fortio curl URL`"
            ))
        }
    }
    let mut spec = OptionsSpec {
        connections: 4,
        qps: 8.0,
        calls: None,
        duration: Some(Duration::from_secs(5)),
        headers: Vec::new(),
        timeout: Duration::from_secs(3),
        percentiles: vec![50.0, 75.0, 90.0, 99.0, 99.9],
        method: "GET".into(),
    };
    let mut i = 0;
    let mut url = None;
    while i < rest.len() {
        let word = &rest[i];
        let Some(flag) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')).filter(|f| !f.is_empty()) else {
            if url.is_some() {
                return Err(format!("fortio {sub}: one URL only; extra argument {word:?}"));
            }
            url = Some(word.clone());
            i += 1;
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if QUIET_BOOL_FLAGS.contains(&name) {
            i += 1;
            continue;
        }
        let mut value = || -> Result<String, String> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            i += 1;
            rest.get(i).cloned().ok_or_else(|| format!("flag needs an argument: -{name}"))
        };
        match name {
            "c" => spec.connections = number(name, &value()?)?,
            "qps" => {
                let v = value()?;
                spec.qps = v.parse::<f64>().ok().filter(|q| q.is_finite()).ok_or(format!("-qps {v}: not a number"))?;
                if spec.qps < 0.0 {
                    spec.qps = 0.0;
                }
            }
            "n" => spec.calls = Some(number::<u64>(name, &value()?)?).filter(|n| *n > 0),
            "t" => {
                let v = value()?;
                let d = go_duration(&v).ok_or(format!("-t {v}: not a duration (5s, 1m, 0 for until interrupted)"))?;
                spec.duration = (!d.is_zero()).then_some(d);
            }
            "H" => {
                let v = value()?;
                let (k, val) = v.split_once(':').ok_or(format!("-H {v:?}: give `Name: value`"))?;
                spec.headers.push((k.trim().to_string(), val.trim().to_string()));
            }
            "timeout" => {
                let v = value()?;
                spec.timeout =
                    go_duration(&v).filter(|d| !d.is_zero()).ok_or(format!("-timeout {v}: not a duration"))?;
            }
            "p" => {
                let v = value()?;
                spec.percentiles = v
                    .split(',')
                    .map(|p| p.trim().parse::<f64>().map_err(|_| format!("-p {v}: not a list of percentiles")))
                    .collect::<Result<_, _>>()?;
            }
            "X" => spec.method = value()?,
            q if QUIET_VALUE_FLAGS.contains(&q) => {
                value()?;
            }
            other => {
                return Err(format!(
                    "flag provided but not defined: -{other} (meshrig's built-in fortio takes -c, -qps, -n, -t, -H, \
                     -timeout, -p, -X and -loglevel)"
                ))
            }
        }
        i += 1;
    }
    let url = url.ok_or_else(|| format!("fortio {sub}: give the URL, e.g. http://httpbin:8000/get"))?;
    Ok(match sub.as_str() {
        "curl" => Command::Curl { headers: spec.headers, timeout: spec.timeout, url },
        _ => Command::Load { options: spec, url },
    })
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("-{name} {v}: not a whole number"))
}

/// Go's duration syntax as fortio takes it (`5s`, `1m30s`, `250ms`; a bare number is seconds).
pub fn go_duration(s: &str) -> Option<Duration> {
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    crate::duration::parse_std(s)
}

/// Go's `%g` (shortest) and `%.Ng`: exponent form below 1e-4 or at/above 10^precision.
pub fn g(v: f64, precision: Option<usize>) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let p = precision.unwrap_or(0);
    let text = if p == 0 { format!("{v:e}") } else { format!("{:.*e}", p.saturating_sub(1), v) };
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let limit = if p == 0 { 21 } else { p as i32 };
    if exp < -4 || exp >= limit {
        let m = trim_zeros(mantissa);
        return format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    // Fixed notation with the same significant digits.
    let digits: f64 = mantissa.parse().unwrap_or(v);
    let fixed = digits * 10f64.powi(exp);
    let decimals = if p == 0 {
        mantissa.trim_start_matches('-').split('.').nth(1).map_or(0, str::len) as i32 - exp
    } else {
        p as i32 - 1 - exp
    };
    trim_zeros(&format!("{fixed:.*}", decimals.max(0) as usize)).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// fortio's range boundaries, in units of its 1 ms default resolution.
const BOUNDARIES: [u32; 57] = [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    14,
    16,
    18,
    20,
    25,
    30,
    35,
    40,
    45,
    50,
    60,
    70,
    80,
    90,
    100,
    120,
    140,
    160,
    180,
    200,
    250,
    300,
    350,
    400,
    450,
    500,
    600,
    700,
    800,
    900,
    1000,
    2000,
    3000,
    4000,
    5000,
    7500,
    10000,
    20000,
    30000,
    40000,
    50000,
    75000,
    100000,
    u32::MAX,
];

/// `<name> : count N avg … +/- … min … max … sum …`, values in seconds.
fn counter_line(out: &mut String, name: &str, h: &super::Histogram, scale: f64) {
    let _ = writeln!(
        out,
        "{name} : count {} avg {} +/- {} min {} max {} sum {}",
        h.count,
        g(h.mean() * scale, Some(8)),
        g(h.stddev() * scale, Some(4)),
        g(h.min as f64 * scale, None),
        g(h.max as f64 * scale, None),
        g(h.sum() * scale, Some(9)),
    );
}

/// A latency histogram as fortio prints it: the counter line, the range table on fortio's
/// 1 ms boundaries, then `# target P% seconds` for each percentile.
fn histogram(out: &mut String, name: &str, h: &super::Histogram, percentiles: &[f64]) {
    if h.count == 0 {
        let _ = writeln!(out, "{name} : no data");
        return;
    }
    counter_line(out, name, h, 1e-6);
    let _ = writeln!(out, "# range, mid point, percentile, count");
    let mut rows: Vec<(usize, u64)> = Vec::new();
    for (micros, count) in h.buckets() {
        let at = BOUNDARIES.iter().position(|b| u64::from(*b) * 1000 >= micros).unwrap_or(BOUNDARIES.len() - 1);
        match rows.last_mut() {
            Some((i, c)) if *i == at => *c += count,
            _ => rows.push((at, count)),
        }
    }
    let mut cumulative = 0;
    let last = rows.len() - 1;
    for (n, (i, count)) in rows.iter().enumerate() {
        cumulative += count;
        let start = if n == 0 { h.min as f64 * 1e-6 } else { f64::from(BOUNDARIES[i.saturating_sub(1)]) * 1e-3 };
        let end = if n == last { h.max as f64 * 1e-6 } else { f64::from(BOUNDARIES[*i]) * 1e-3 };
        let _ = writeln!(
            out,
            "{} {} <= {} , {} , {:.2}, {count}",
            if n == 0 { ">=" } else { ">" },
            g(start, Some(6)),
            g(end, Some(6)),
            g((start + end) / 2.0, Some(6)),
            cumulative as f64 * 100.0 / h.count as f64
        );
    }
    for p in percentiles {
        let _ = writeln!(out, "# target {}% {}", g(*p, None), g(h.percentile(*p) as f64 * 1e-6, Some(6)));
    }
}

/// What `fortio load` prints before the run.
pub fn header(spec: &OptionsSpec, url: &str) -> String {
    let procs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let what = match (spec.calls, spec.duration) {
        (Some(n), _) => format!("for {n} calls"),
        (None, Some(d)) => format!("for {}", crate::duration::string_std(d)),
        (None, None) => "until interrupted".into(),
    };
    let mut out = format!(
        "Fortio (meshrig built-in) running at {} queries per second, {procs}->{procs} procs, {what}: {url}\n",
        g(spec.qps, None)
    );
    let c = spec.connections.max(1);
    let _ = match (spec.qps > 0.0, spec.calls, spec.duration) {
        (false, Some(n), _) => writeln!(
            out,
            "Starting at max qps with {c} thread(s) [gomax {procs}] for exactly {n} calls ({} per thread + {})",
            n / c as u64,
            n % c as u64
        ),
        (false, None, Some(d)) => {
            writeln!(
                out,
                "Starting at max qps with {c} thread(s) [gomax {procs}] for {}",
                crate::duration::string_std(d)
            )
        }
        (true, Some(n), _) => writeln!(
            out,
            "Starting at {} qps with {c} thread(s) [gomax {procs}] : exactly {n}, {} calls each (total {} + {})",
            g(spec.qps, None),
            n / c as u64,
            n / c as u64 * c as u64,
            n % c as u64
        ),
        (true, None, Some(d)) => {
            let each = (spec.qps * d.as_secs_f64()) as u64 / c as u64;
            writeln!(
                out,
                "Starting at {} qps with {c} thread(s) [gomax {procs}] for {} : {each} calls each (total {})",
                g(spec.qps, None),
                crate::duration::string_std(d),
                each * c as u64
            )
        }
        (q, None, None) => writeln!(
            out,
            "Starting at {} with {c} thread(s) [gomax {procs}] until interrupted",
            if q { format!("{} qps", g(spec.qps, None)) } else { "max qps".into() }
        ),
    };
    out
}

/// What `fortio load` prints after the run.
pub fn report(r: &Report, spec: &OptionsSpec, url: &http::Uri) -> String {
    let mut out = String::new();
    let calls = r.calls();
    let _ = writeln!(
        out,
        "Ended after {} : {calls} calls. qps={}",
        crate::duration::string_std(r.elapsed),
        g(r.qps(), Some(5))
    );
    histogram(&mut out, "Aggregated Function Time", &r.latency, &spec.percentiles);
    histogram(&mut out, "Error cases", &r.error_latency, &spec.percentiles);
    let _ = writeln!(out, "Sockets used: {} (for perfect keepalive, would be {})", r.sockets, r.options_connections);
    let _ = writeln!(out, "Uniform: false, Jitter: false, Catchup allowed: true");
    let _ = writeln!(out, "IP addresses distribution:");
    if r.sockets > 0 {
        let host = url.host().unwrap_or("");
        let _ = writeln!(out, "{host}:{}: {}", url.port_u16().unwrap_or(80), r.sockets);
    }
    let total = calls.max(1) as f64;
    let errors: u64 = r.errors.values().sum();
    if errors > 0 {
        let _ = writeln!(out, "Code  -1 : {errors} ({:.1} %)", errors as f64 * 100.0 / total);
    }
    for (code, n) in &r.codes {
        let _ = writeln!(out, "Code {code:3} : {n} ({:.1} %)", *n as f64 * 100.0 / total);
    }
    counter_line(&mut out, "Response Header Sizes", &r.header_bytes, 1.0);
    counter_line(&mut out, "Response Body/Total Sizes", &r.sizes, 1.0);
    let _ = writeln!(
        out,
        "All done {calls} calls (plus 0 warmup) {:.3} ms avg, {:.1} qps",
        r.latency.mean() / 1000.0,
        r.qps()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn istios_circuit_breaking_command_parses() {
        let Command::Load { options, url } =
            parse(&words("load -c 2 -qps 0 -n 20 -loglevel Warning http://httpbin:8000/get")).unwrap()
        else {
            panic!("a load")
        };
        assert_eq!(url, "http://httpbin:8000/get");
        assert_eq!((options.connections, options.qps, options.calls), (2, 0.0, Some(20)));
        let o = options.to_options().unwrap();
        assert_eq!(o.duration, None, "-n wins over the default -t 5s");
        let Command::Load { options, .. } = parse(&words("load --qps=10 -t 1m30s -H x-a:b u")).unwrap() else {
            panic!()
        };
        assert_eq!((options.connections, options.qps, options.duration), (4, 10.0, Some(Duration::from_secs(90))));
        assert_eq!(options.headers, vec![("x-a".to_string(), "b".to_string())]);
        assert!(matches!(parse(&words("curl -quiet http://httpbin:8000/get")), Ok(Command::Curl { .. })));
        assert!(parse(&words("load -h2 u")).unwrap_err().contains("not defined: -h2"));
        assert!(parse(&words("load -c")).unwrap_err().contains("needs an argument"));
        assert!(parse(&words("load -c 2")).unwrap_err().contains("give the URL"));
    }

    #[test]
    fn numbers_and_durations_print_as_go_does() {
        assert_eq!(g(0.0056869, Some(8)), "0.0056869");
        assert_eq!(g(0.000499, None), "0.000499");
        assert_eq!(g(0.00004, None), "4e-05");
        assert_eq!(g(334.1612, Some(5)), "334.16");
        assert_eq!(g(3913.0, Some(9)), "3913");
        assert_eq!(g(99.9, None), "99.9");
        assert_eq!(g(123456.0, Some(4)), "1.235e+05");
        assert_eq!(crate::duration::string_std(Duration::from_micros(59_852)), "59.852ms");
        assert_eq!(crate::duration::string_std(Duration::from_secs(5)), "5s");
        assert_eq!(crate::duration::string_std(Duration::from_millis(62_500)), "1m2.5s");
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(go_duration("5x"), None);
    }

    #[test]
    fn the_report_has_fortios_lines() {
        let mut r =
            Report { options_connections: 2, elapsed: Duration::from_millis(100), sockets: 4, ..Report::default() };
        for (i, code) in [(0u64, 200u16); 17].iter().chain([(0, 503); 3].iter()).enumerate() {
            r.latency.record(500 + i as u64 * 700);
            *r.codes.entry(code.1).or_default() += 1;
            r.sizes.record(800);
            r.header_bytes.record(200);
        }
        let spec = match parse(&words("load -c 2 -qps 0 -n 20 http://httpbin:8000/get")).unwrap() {
            Command::Load { options, .. } => options,
            _ => panic!(),
        };
        let text = report(&r, &spec, &"http://httpbin:8000/get".parse().unwrap());
        assert!(text.contains("Code 200 : 17 (85.0 %)\nCode 503 : 3 (15.0 %)\n"), "{text}");
        assert!(text.contains("Sockets used: 4 (for perfect keepalive, would be 2)"), "{text}");
        assert!(text.contains("# target 50% 0.0067"), "{text}");
        assert!(text.contains("\n>= 0.0005 <= 0.001 , 0.00075 , 5.00, 1\n"), "{text}");
        assert!(text.ends_with("All done 20 calls (plus 0 warmup) 7.150 ms avg, 200.0 qps\n"), "{text}");
        assert!(header(&spec, "u").contains("for exactly 20 calls (10 per thread + 0)"));
    }
}
