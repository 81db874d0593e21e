//! `meshrig load URL` (through the gateway, any URL, or `--from` a workload's sidecar) and the
//! fortio pod's `fortio load`/`fortio curl` under `meshrig exec`: one engine (`crate::load`),
//! a live progress line on a terminal, Ctrl-C ends the run early and still reports.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::env::Env;

use crate::load::{self, fortio, summary, Options, Progress, Target};

/// Runs `options` against `target`: a progress line on stderr when it is a terminal, Ctrl-C
/// stops early.
pub async fn drive(target: Target, options: Options) -> load::Report {
    let progress = Arc::new(Progress::default());
    let ticker = std::io::stderr().is_terminal().then(|| {
        let p = progress.clone();
        let total = options.calls;
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let done = p.done.load(Ordering::Relaxed);
                let ok = p.ok.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                let of = total.map(|n| format!("/{n}")).unwrap_or_default();
                eprint!(
                    "\r{secs:6.1} s  {done}{of} calls  {:.1}% 2xx  {:.0}/s   ",
                    ok as f64 * 100.0 / done.max(1) as f64,
                    done as f64 / secs.max(0.001)
                );
            }
        })
    });
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = load::run(target, options, progress, stop).await;
    if let Some(t) = ticker {
        t.abort();
        eprint!("\r{:60}\r", "");
    }
    report
}

/// `meshrig load`'s arguments as given.
pub struct Spec {
    pub url: String,
    pub from: Option<String>,
    pub namespace: Option<String>,
    pub connections: usize,
    pub qps: f64,
    pub calls: Option<u64>,
    pub duration: String,
    pub headers: Vec<String>,
    pub timeout: String,
}

/// Where the load goes and how: a path alone goes to the ingress gateway, `--from` through
/// that workload's sidecar.
pub async fn prepare(env: &Env, spec: Spec) -> anyhow::Result<(Target, Options)> {
    let duration = fortio::go_duration(&spec.duration)
        .ok_or_else(|| anyhow!("--duration {}: not a duration (30s, 1m, 0 for until Ctrl-C)", spec.duration))?;
    let timeout = fortio::go_duration(&spec.timeout)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow!("--timeout {}: not a duration (3s, 500ms)", spec.timeout))?;
    if spec.connections == 0 {
        bail!("-c 0: give at least one connection");
    }
    if !(spec.qps >= 0.0 && spec.qps.is_finite()) {
        bail!("--qps {}: give a rate ≥ 0 (0: as fast as answers come)", spec.qps);
    }
    let mut headers = Vec::new();
    for h in &spec.headers {
        let (k, v) = h.split_once(':').ok_or_else(|| anyhow!("-H {h:?}: give `Name: value`"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let options = Options {
        connections: spec.connections,
        qps: spec.qps,
        calls: spec.calls.filter(|n| *n > 0),
        duration: if spec.calls.is_some() || duration.is_zero() { None } else { Some(duration) },
        method: http::Method::GET,
        headers: fortio::header_map(&headers).map_err(|e| anyhow!(e))?,
        timeout,
    };
    let target = match &spec.from {
        Some(workload) => {
            let namespace = spec.namespace.as_deref().unwrap_or("default");
            let proxy = crate::cli::exec::outbound_of(env, workload, namespace).await?;
            Target::via(&spec.url, proxy).map_err(|e| anyhow!(e))?
        }
        None if spec.url.starts_with('/') => {
            let s = env.settings()?.ok_or_else(|| anyhow!("no mesh is up; run `meshrig up` first"))?;
            let gateway = s.gateway_address(8080);
            Target::direct(&format!("http://{gateway}{}", spec.url)).await.map_err(|e| anyhow!(e))?
        }
        None => Target::direct(&spec.url).await.map_err(|e| anyhow!(e))?,
    };
    Ok((target, options))
}

/// `meshrig load`.
pub async fn run(target: Target, options: Options, json: bool) -> anyhow::Result<ExitCode> {
    let report = drive(target, options).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary::json(&report))?);
    } else {
        print!("{}", summary::text(&report));
    }
    Ok(if report.calls() > 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// What the built-in fortio sends as `User-Agent` (fortio's is `fortio.org/fortio-VERSION`).
const USER_AGENT: &str = concat!("fortio.org/fortio-meshrig-", env!("CARGO_PKG_VERSION"));

/// `fortio ARGS` from inside a pod whose outbound listener is `proxy`.
pub async fn fortio(proxy: SocketAddr, args: &[String]) -> anyhow::Result<ExitCode> {
    let command = fortio::parse(args).map_err(|e| anyhow!("fortio: {e}"))?;
    match command {
        fortio::Command::Version => {
            println!("meshrig built-in fortio {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        fortio::Command::Load { options, url } => {
            let target = Target::via(&url, proxy).map_err(|e| anyhow!("fortio: {e}"))?;
            let mut o = options.to_options().map_err(|e| anyhow!("fortio: {e}"))?;
            o.headers.entry(http::header::USER_AGENT).or_insert(http::HeaderValue::from_static(USER_AGENT));
            // fortio writes its whole report to stderr; so does this.
            eprint!("{}", fortio::header(&options, &url));
            let report = drive(target.clone(), o).await;
            eprint!("{}", fortio::report(&report, &options, &target.url));
            Ok(ExitCode::SUCCESS)
        }
        fortio::Command::Curl { headers, timeout, url } => {
            let target = Target::via(&url, proxy).map_err(|e| anyhow!("fortio: {e}"))?;
            curl(&target, &fortio::header_map(&headers).map_err(|e| anyhow!("fortio: {e}"))?, timeout).await
        }
    }
}

/// One GET as `fortio curl` does it: the status line and headers on stderr, the body on
/// stdout, exit 1 unless the status is 200.
async fn curl(target: &Target, headers: &http::HeaderMap, timeout: Duration) -> anyhow::Result<ExitCode> {
    let mut req = http::Request::get(target.url.clone()).body(crate::net::empty())?;
    *req.headers_mut() = headers.clone();
    req.headers_mut().entry(http::header::USER_AGENT).or_insert(http::HeaderValue::from_static(USER_AGENT));
    if let Some(a) = target.url.authority() {
        req.headers_mut().insert(http::header::HOST, a.as_str().parse()?);
    }
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target.connect))
        .await
        .map_err(|_| anyhow!("fortio: no connection within {timeout:?}"))??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(timeout, sender.send_request(req))
        .await
        .map_err(|_| anyhow!("fortio: no answer within {timeout:?}"))??;
    let mut head = format!("HTTP/1.1 {}\r\n", resp.status());
    for (k, v) in resp.headers() {
        head.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v.as_bytes())));
    }
    head.push_str("\r\n");
    let status = resp.status();
    let body = crate::net::read_body(resp.into_body(), 64 << 20).await.map_err(|e| anyhow!(e))?;
    use std::io::Write as _;
    std::io::stderr().write_all(head.as_bytes())?;
    std::io::stdout().write_all(&body)?;
    std::io::stdout().flush()?;
    if status != http::StatusCode::OK {
        eprintln!("Error status {}", status.as_u16());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
