//! `meshrig graph`: the service graph in the terminal, from every proxy's metrics (`graph.rs`
//! computes the edges): who calls whom, requests (per second over `--window`), errors, p99
//! and whether the hop is mutual TLS.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::anyhow;

use crate::cli::term::table;
use crate::cli::Output;
use crate::env::Env;
use crate::graph::{self, Edge, Sample};

/// Every proxy's samples (`dashboard::scrape_all`: a proxy that does not answer adds nothing).
async fn scrape(admins: &[SocketAddr]) -> Vec<Sample> {
    crate::dashboard::scrape_all(&crate::net::client(), admins).await
}

pub async fn graph(env: &Env, namespace: Option<&str>, window: &str, output: Output) -> anyhow::Result<ExitCode> {
    let window = crate::load::fortio::go_duration(window)
        .ok_or_else(|| anyhow!("--window {window}: not a duration (5s, 1m; 0 for totals since the proxies started)"))?;
    let backend = crate::cli::backend::Backend::for_env(env);
    let status = backend.client()?.status().await?;
    let admins = backend.admins(&status);
    let (before, seconds) = if window.is_zero() {
        (None, None)
    } else {
        let before = scrape(&admins).await;
        // The measurement window itself: the rates are over this time, from now on (the proxies
        // keep counters, not history).
        if output == Output::Table {
            eprintln!("measuring the next {} (rates over that window)...", humantime(window));
        }
        tokio::time::sleep(window).await;
        (Some(before), Some(window.as_secs_f64()))
    };
    let after = scrape(&admins).await;
    let mut edges = graph::edges(before.as_deref(), &after, seconds);
    if let Some(ns) = namespace {
        edges.retain(|e| e.source.namespace == ns || e.destination.namespace == ns);
    }
    edges.sort_by(|a, b| (&a.source, &a.destination, &a.service).cmp(&(&b.source, &b.destination, &b.service)));
    if output != Output::Table {
        crate::cli::print_data(output, &edges)?;
        return Ok(ExitCode::SUCCESS);
    }
    if edges.is_empty() {
        let when = if window.is_zero() { "yet".to_string() } else { format!("in those {}", humantime(window)) };
        println!(
            "no requests between workloads {when}: send some traffic (`meshrig load /productpage`) and look again"
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&edges, seconds.is_some()));
    Ok(ExitCode::SUCCESS)
}

/// `10s`, `1m30s`, `500ms`.
fn humantime(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let (m, s) = (ms / 60_000, ms / 1000 % 60);
    match (m, s) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

fn name(n: &graph::Node) -> String {
    if n.workload == "unknown" {
        return "unknown (no sidecar)".into();
    }
    let version = if n.version == "unknown" { String::new() } else { format!(" {}", n.version) };
    format!("{}.{}{version}", n.workload, n.namespace)
}

/// The table: one row per edge.
fn render(edges: &[Edge], rates: bool) -> String {
    let rows: Vec<Vec<String>> = edges
        .iter()
        .map(|e| {
            let service = e.service.strip_suffix(".svc.cluster.local").unwrap_or(&e.service).to_string();
            let errors = if e.requests > 0.0 { e.errors / e.requests * 100.0 } else { 0.0 };
            vec![
                name(&e.source),
                format!("→ {}", name(&e.destination)),
                service,
                if rates { format!("{:.1}/s", e.rps.unwrap_or(0.0)) } else { format!("{:.0}", e.requests) },
                format!("{errors:.1}%"),
                e.p99_ms.map_or("-".into(), |p| if p.is_finite() { format!("<{p}ms") } else { ">1h".into() }),
                match e.mtls {
                    Some(true) => "mTLS".into(),
                    Some(false) => "plaintext".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let volume = if rates { "RATE" } else { "REQUESTS" };
    table(&["SOURCE", "DESTINATION", "SERVICE", volume, "ERRORS", "P99", "SECURITY"], &rows)
}
