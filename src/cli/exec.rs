//! `exec WORKLOAD -- CMD`: runs a host command (usually curl) as if from inside the workload:
//! its HTTP traffic goes through the workload's sidecar (or plain forwarder).

use std::process::ExitCode;

use anyhow::{anyhow, bail};

use crate::api;
use crate::env::Env;
use crate::ready::Listener;

pub async fn run(env: &Env, workload: &str, namespace: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let client = crate::cli::backend::Backend::local(env).client()?;
    let status = client.status().await?;
    let name = workload
        .strip_prefix("deploy/")
        .or_else(|| workload.strip_prefix("deployment/"))
        .or_else(|| workload.strip_prefix("pod/"))
        .unwrap_or(workload);
    let pods: Vec<&api::PodStatus> =
        status.pods.iter().filter(|p| p.namespace == namespace && (p.workload == name || p.name == name)).collect();
    let Some(pod) = pods.iter().find(|p| p.ready).or(pods.first()) else {
        let known: Vec<String> =
            status.pods.iter().filter(|p| p.namespace == namespace).map(|p| p.workload.clone()).collect();
        bail!(
            "no workload {name:?} in namespace {namespace}; workloads there: {}",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        );
    };
    if !pod.ready {
        bail!("pod {}/{} is not ready ({}); see `meshrig status`", pod.namespace, pod.name, pod.phase);
    }
    let proxy =
        pod.proxy_addrs.get(&Listener::Outbound).ok_or_else(|| anyhow!("pod {} has no outbound listener", pod.name))?;
    let url = format!("http://{proxy}");
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("give a command after --, e.g. -- curl -s http://httpbin:8000/get"))?;
    let status = std::process::Command::new(program)
        .args(args)
        .env("http_proxy", &url)
        .env("HTTP_PROXY", &url)
        .env("HOSTNAME", &pod.name)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .status()
        .map_err(|e| anyhow!("cannot run {program:?}: {e}"))?;
    Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
}
