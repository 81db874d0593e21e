//! The stand-in for images meshrig does not know: on each container port it answers with who
//! it is (pod, namespace, `app` and `version` labels, image, port) and what it received
//! (method, path, headers), so routing, canaries and ejection can be seen with anyone's
//! manifests. Pod annotations make it slow or failing.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::ready;

/// Every answer waits this long: `echo.meshrig.dev/delay: 500ms`.
pub const DELAY: &str = "echo.meshrig.dev/delay";
/// This fraction of answers fail (`0.3` or `30%`): `echo.meshrig.dev/error-rate`.
pub const ERROR_RATE: &str = "echo.meshrig.dev/error-rate";
/// The status of failed answers (default 503): `echo.meshrig.dev/error-status`.
pub const ERROR_STATUS: &str = "echo.meshrig.dev/error-status";
/// The environment variable the runner hands the stand-in's identity and behaviour in.
pub const ENV: &str = "MESHRIG_ECHO";

/// Who the stand-in is and how it misbehaves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub image: String,
    pub app: Option<String>,
    pub version: Option<String>,
    pub delay_ms: u64,
    pub error_rate: f64,
    pub error_status: u16,
}

impl Config {
    /// From the pod's labels and annotations; a bad annotation is an error naming it.
    pub fn new(
        image: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Config, String> {
        let delay_ms = match annotations.get(DELAY) {
            Some(d) => crate::validate::parse_duration(d)
                .map_err(|e| format!("annotation {DELAY}: {e}"))?
                .as_millis()
                .min(3_600_000) as u64,
            None => 0,
        };
        let error_rate = match annotations.get(ERROR_RATE) {
            Some(r) => parse_rate(r).ok_or_else(|| {
                format!("annotation {ERROR_RATE}: `{r}` is not a rate; use a fraction such as 0.3 or a percentage such as 30%")
            })?,
            None => 0.0,
        };
        let error_status = match annotations.get(ERROR_STATUS) {
            Some(s) => s
                .parse::<u16>()
                .ok()
                .filter(|n| (200..=599).contains(n))
                .ok_or_else(|| format!("annotation {ERROR_STATUS}: `{s}` is not an HTTP status (200-599)"))?,
            None => 503,
        };
        Ok(Config {
            image: image.to_string(),
            app: labels.get("app").cloned(),
            version: labels.get("version").cloned(),
            delay_ms,
            error_rate,
            error_status,
        })
    }
}

/// `0.3` or `30%` → 0.3, within 0..=1.
pub fn parse_rate(s: &str) -> Option<f64> {
    let s = s.trim();
    let r = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&r).then_some(r)
}

#[derive(Clone)]
struct Echo {
    config: Config,
    port: u16,
    pod: String,
    namespace: String,
}

/// The answer's JSON, in the order people read it.
#[derive(Serialize)]
struct Answer<'a> {
    pod: &'a str,
    namespace: &'a str,
    app: Option<&'a str>,
    version: Option<&'a str>,
    image: &'a str,
    port: u16,
    status: u16,
    method: &'a str,
    path: &'a str,
    headers: BTreeMap<String, Vec<String>>,
    #[serde(rename = "standIn")]
    stand_in: &'a str,
}

/// The answer for one request (pure but for the coin the caller flips).
fn answer(e: &Echo, req: &Request, failed: bool) -> (StatusCode, String) {
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_insert_with(Vec::new)
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let status = if failed {
        StatusCode::from_u16(e.config.error_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        StatusCode::OK
    };
    let body = Answer {
        pod: &e.pod,
        namespace: &e.namespace,
        app: e.config.app.as_deref(),
        version: e.config.version.as_deref(),
        image: &e.config.image,
        port: e.port,
        status: status.as_u16(),
        method: req.method().as_str(),
        path: req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        headers,
        stand_in: "meshrig runs this echo app in place of an image it does not have",
    };
    let body = serde_json::to_string_pretty(&body).unwrap_or_default();
    (status, body)
}

async fn handle(State(e): State<Echo>, req: Request) -> Response {
    if e.config.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(e.config.delay_ms)).await;
    }
    let failed = e.config.error_rate > 0.0 && fastrand::f64() < e.config.error_rate;
    let (status, body) = answer(&e, &req, failed);
    let mut resp = (status, body + "\n").into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Serves every port in `args` (the first is `container_port` when there are none).
pub async fn run(container_port: u16, args: &[String]) -> std::io::Result<()> {
    let config: Config = std::env::var(ENV).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    let mut ports: Vec<u16> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if ports.is_empty() {
        ports.push(container_port);
    }
    let pod = std::env::var("HOSTNAME").unwrap_or_default();
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_default();
    let mut addrs = ready::Addrs::new();
    let mut servers = tokio::task::JoinSet::new();
    for port in ports {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        addrs.insert(ready::Listener::App(port), listener.local_addr()?);
        let echo = Echo { config: config.clone(), port, pod: pod.clone(), namespace: namespace.clone() };
        let router = Router::new().fallback(handle).with_state(echo);
        servers.spawn(crate::shutdown::serve_with(move |stop| async move {
            axum::serve(listener, router).with_graceful_shutdown(stop).await
        }));
    }
    ready::announce(&addrs);
    match servers.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn annotations_choose_the_misbehaviour_and_bad_ones_say_which() {
        let labels = m(&[("app", "web"), ("version", "v2")]);
        let c = Config::new("nginx:1.27", &labels, &m(&[(DELAY, "250ms"), (ERROR_RATE, "30%")])).unwrap();
        assert_eq!((c.delay_ms, c.error_status), (250, 503));
        assert!((c.error_rate - 0.3).abs() < 1e-9);
        assert_eq!(c.version.as_deref(), Some("v2"));
        assert!(Config::new("x", &labels, &m(&[(ERROR_RATE, "2")])).unwrap_err().contains(ERROR_RATE));
        assert!(Config::new("x", &labels, &m(&[(ERROR_STATUS, "700")])).unwrap_err().contains("200-599"));
        assert!(Config::new("x", &labels, &m(&[(DELAY, "soon")])).unwrap_err().contains(DELAY));
        assert_eq!(parse_rate("0.5"), Some(0.5));
        assert_eq!(parse_rate("-1"), None);
    }

    #[test]
    fn the_answer_says_who_served_and_what_was_asked() {
        let e = Echo {
            config: Config {
                app: Some("web".into()),
                version: Some("v1".into()),
                error_status: 500,
                ..Config::default()
            },
            port: 8080,
            pod: "web-v1-abc".into(),
            namespace: "shop".into(),
        };
        let req =
            Request::builder().uri("/cart?x=1").header("end-user", "jason").body(axum::body::Body::empty()).unwrap();
        let (status, body) = answer(&e, &req, false);
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("{\n  \"pod\": \"web-v1-abc\""), "who served comes first:\n{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["version"], "v1");
        assert_eq!(body["path"], "/cart?x=1");
        assert_eq!(body["headers"]["end-user"][0], "jason");
        assert_eq!(answer(&e, &req, true).0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
