//! `meshrig addons list|enable|disable` and `meshrig dashboard [NAME]`: the control plane runs
//! the addons; these ask it to, wait until each answers, and say where it is. Without a name,
//! `dashboard` serves meshrig's own web dashboard (`dashboard.rs`) from this process.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::api::{self, AddonStatus};
use crate::cli::term::{self, table};
use crate::cli::Output;
use crate::env::Env;

/// How long `enable` waits for an addon to answer.
const READY_WITHIN: Duration = Duration::from_secs(90);

fn client(env: &Env) -> anyhow::Result<api::Client> {
    crate::cli::backend::Backend::for_env(env)
        .client()
        .map_err(|e| anyhow!("{e}; `meshrig up` starts the environment first"))
}

/// What to try once Prometheus answers.
pub fn prometheus_hint(status: &AddonStatus) -> String {
    let address = status.address.map(|a| a.to_string()).unwrap_or_default();
    format!(
        "prometheus: http://{address}  (try: curl -s 'http://{address}/api/v1/query' --data-urlencode 'query=sum(rate(istio_requests_total[1m])) by (destination_workload)')"
    )
}

/// Enables each addon and waits until it answers; a message naming the one that did not.
pub async fn enable_all(client: &api::Client, names: &[String]) -> anyhow::Result<Vec<AddonStatus>> {
    let mut out = Vec::new();
    for name in names {
        client.addon(name, true).await?;
        out.push(wait_ready(client, name).await?);
    }
    Ok(out)
}

async fn wait_ready(client: &api::Client, name: &str) -> anyhow::Result<AddonStatus> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let status = client.status().await?;
        let addon = status.control_plane.addons.into_iter().find(|a| a.name == name);
        match addon {
            Some(a) if a.ready => return Ok(a),
            Some(a) if Instant::now() > deadline => bail!(
                "{name} did not answer within {}s: {}; its log is in the environment's logs/addon.{name}.log",
                READY_WITHIN.as_secs(),
                a.message.unwrap_or_else(|| "no reason given".into())
            ),
            Some(_) => {}
            None => bail!("{name} is not running (it was disabled meanwhile?)"),
        }
        // Polling the control plane's status: the addon says nothing when it becomes ready.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn enable(env: &Env, names: &[String]) -> anyhow::Result<ExitCode> {
    if let crate::cli::backend::Backend::Kind(_) = crate::cli::backend::Backend::for_env(env) {
        return crate::cli::kind_up::enable_addons(env, names).await;
    }
    let client = client(env)?;
    for status in enable_all(&client, names).await? {
        println!("{} {}", term::result_mark(true), prometheus_hint(&status));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn disable(env: &Env, names: &[String]) -> anyhow::Result<ExitCode> {
    if let crate::cli::backend::Backend::Kind(_) = crate::cli::backend::Backend::for_env(env) {
        return crate::cli::kind_up::disable_addons(env, names).await;
    }
    let client = client(env)?;
    for name in names {
        client.addon(name, false).await?;
        println!("{} {name} stopped", term::result_mark(true));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(env: &Env, output: Output) -> anyhow::Result<ExitCode> {
    if let crate::cli::backend::Backend::Kind(_) = crate::cli::backend::Backend::for_env(env) {
        return crate::cli::kind_up::list_addons(env, output).await;
    }
    let status = client(env)?.status().await?;
    let running = status.control_plane.addons;
    if output != Output::Table {
        crate::cli::print_data(output, &running)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = crate::addons::NAMES
        .iter()
        .map(|name| match running.iter().find(|a| a.name == *name) {
            Some(a) => vec![
                name.to_string(),
                if a.ready { "ready".into() } else { "starting".into() },
                a.address.map(|a| format!("http://{a}")).unwrap_or_default(),
                a.restarts.to_string(),
                a.message.clone().unwrap_or_default(),
            ],
            None => {
                let note = match crate::addons::prometheus_binary() {
                    Ok(path) => format!("`meshrig addons enable {name}` runs {}", path.display()),
                    Err(e) => e,
                };
                vec![name.to_string(), "disabled".into(), String::new(), String::new(), note]
            }
        })
        .collect();
    print!("{}", table(&["NAME", "STATE", "ADDRESS", "RESTARTS", "MESSAGE"], &rows));
    Ok(ExitCode::SUCCESS)
}

/// Prints where `name` answers, and opens it in the desktop's browser when there is one.
pub async fn dashboard(env: &Env, name: &str, open: bool) -> anyhow::Result<ExitCode> {
    if let crate::cli::backend::Backend::Kind(_) = crate::cli::backend::Backend::for_env(env) {
        return crate::cli::kind_forward::dashboard(env, name, open).await;
    }
    let status = client(env)?.status().await?;
    let url = match name {
        "prometheus" => {
            let addon = status.control_plane.addons.iter().find(|a| a.name == "prometheus");
            match addon.and_then(|a| a.address) {
                Some(address) => format!("http://{address}"),
                None => bail!("prometheus is not enabled: `meshrig addons enable prometheus` starts it"),
            }
        }
        "jaeger" | "tracing" => match status.control_plane.tracing {
            Some(address) => format!("http://{address}/jaeger/api/traces?service=productpage.default&lookback=1h"),
            None => bail!("the trace collector is not listening; `meshrig status` and the control plane's log say why"),
        },
        other => bail!("no dashboard {other:?}: choose prometheus or jaeger (the trace collector's Jaeger API)"),
    };
    println!("{url}");
    if open {
        open_browser(&url);
    }
    Ok(ExitCode::SUCCESS)
}

/// `meshrig dashboard`'s port unless `--port` says otherwise (Kiali's).
pub const DASHBOARD_PORT: u16 = 20001;

/// `meshrig dashboard` without a name: serves the web dashboard (`dashboard.rs`) on
/// 127.0.0.1:`port` (Kiali's 20001 unless chosen; a free one when taken) until interrupted,
/// scraping the proxies every few seconds (the pods are read again each time, as they come
/// and go).
pub async fn serve_dashboard(env: &Env, port: u16, open: bool) -> anyhow::Result<ExitCode> {
    use crate::dashboard::{self, Scrapes, Sources};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    let api = client(env)?;
    let status = api.status().await?;
    let sources = Arc::new(Sources { tracing: status.control_plane.tracing });
    let scrapes = Arc::new(Scrapes::default());
    let listener = match crate::net::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
        Ok(l) => l,
        Err(e) if port != 0 => {
            eprintln!("{} port {port} is taken ({e}); using a free port", term::warn_mark());
            crate::net::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?
        }
        Err(e) => return Err(e.into()),
    };
    let address = listener.local_addr()?;
    let url = format!("http://{address}");
    // The first scrape before the address is printed: the page has something at once.
    let http = crate::net::client();
    let backend_env = env.clone();
    let admins = move |s: &api::Status| crate::cli::backend::Backend::for_env(&backend_env).admins(s);
    scrapes.push(Instant::now(), dashboard::scrape_all(&http, &admins(&status)).await);
    let (s, api2) = (scrapes.clone(), api.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(dashboard::SCRAPE_EVERY).await;
            if let Ok(status) = api2.status().await {
                s.push(Instant::now(), dashboard::scrape_all(&http, &admins(&status)).await);
            }
        }
    });
    println!("{url}");
    eprintln!("meshrig dashboard: the graph, traces and golden signals at {url} (Ctrl-C stops it)");
    if open {
        open_browser(&url);
    }
    let (src, scr) = (sources.clone(), scrapes.clone());
    tokio::select! {
        _ = crate::net::serve(listener, move |req, _| dashboard::handle(req, src.clone(), scr.clone())) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens `url` in the desktop's browser when there is a desktop; says so when it cannot.
pub fn open_browser(url: &str) {
    let desktop = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !desktop {
        return;
    }
    if let Err(e) = std::process::Command::new("xdg-open")
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        eprintln!("{} could not open a browser (xdg-open: {e}); open the address above", term::warn_mark());
    }
}
