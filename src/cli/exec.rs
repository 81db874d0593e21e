//! `exec WORKLOAD -- CMD`: runs a host command (usually curl) as if from inside the workload:
//! its HTTP traffic goes through the workload's sidecar (or plain forwarder). In the
//! `istio-proxy` container, `pilot-agent request GET PATH` reads the proxy's admin listener,
//! as Istio's documentation does (`... -c istio-proxy -- pilot-agent request GET stats`). In
//! the fortio pod, `fortio load|curl` runs meshrig's built-in fortio through the sidecar.

use std::process::ExitCode;

use anyhow::{anyhow, bail};

use crate::api;
use crate::cli::backend::Backend;
use crate::env::Env;

pub async fn run(
    env: &Env,
    workload: &str,
    namespace: &str,
    container: Option<&str>,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let backend = Backend::for_env(env);
    if let Backend::Kind(_) = backend {
        return crate::cli::kind_objects::exec(env, workload, namespace, container, command).await;
    }
    let pod = &ready_pod(env, workload, namespace).await?;
    if container == Some("istio-proxy") {
        return pilot_agent(&backend, pod, command).await;
    }
    let proxy = backend.outbound(pod).ok_or_else(|| anyhow!("pod {} has no outbound listener", pod.name))?;
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("give a command after --, e.g. -- curl -s http://httpbin:8000/get"))?;
    if std::path::Path::new(program).file_name().is_some_and(|n| n == "fortio") {
        if pod.app.as_deref() != Some("fortio") {
            bail!(
                "{program}: not found in pod {}; fortio runs in the fortio pod (Istio's \
                 samples/httpbin/sample-client/fortio-deploy.yaml), or use `meshrig load --from {}`",
                pod.name,
                pod.workload
            );
        }
        return crate::cli::load::fortio(proxy, args).await;
    }
    backend.exec(pod, program, args)
}

/// The outbound listener (sidecar or plain forwarder) of `workload`'s ready pod.
pub async fn outbound_of(env: &Env, workload: &str, namespace: &str) -> anyhow::Result<std::net::SocketAddr> {
    let pod = ready_pod(env, workload, namespace).await?;
    Backend::for_env(env).outbound(&pod).ok_or_else(|| anyhow!("pod {} has no outbound listener", pod.name))
}

/// `workload` (a Deployment, `deploy/NAME` or a pod name): its ready pod, or why there is none.
async fn ready_pod(env: &Env, workload: &str, namespace: &str) -> anyhow::Result<api::PodStatus> {
    let client = Backend::for_env(env).client()?;
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
    Ok((*pod).clone())
}

/// `pilot-agent request METHOD PATH` in the `istio-proxy` container: the proxy's admin answer,
/// printed as Envoy's admin gives it (`stats`, `clusters`, `config_dump`, `listeners`, `certs`).
async fn pilot_agent(backend: &Backend<'_>, pod: &api::PodStatus, command: &[String]) -> anyhow::Result<ExitCode> {
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    let path = match words.as_slice() {
        ["pilot-agent", "request", method, path] if method.eq_ignore_ascii_case("GET") => *path,
        ["pilot-agent", "request", method, _] => bail!("pilot-agent request: only GET is served here, not {method}"),
        _ => bail!(
            "the istio-proxy container runs `pilot-agent request GET PATH` here (PATH: stats, clusters, config_dump, \
             listeners, certs); run other commands from the app's container (leave out -c)"
        ),
    };
    let admin = backend.admin(pod).ok_or_else(|| anyhow!("pod {} has no istio-proxy (no sidecar)", pod.name))?;
    let url = format!("http://{admin}/{}", path.trim_start_matches('/'));
    let (status, bytes) = crate::net::get(&crate::net::client(), &url, std::time::Duration::from_secs(5))
        .await
        .map_err(|e| anyhow!("the proxy did not answer: {e}"))?;
    let ok = status.is_success();
    use std::io::Write as _;
    std::io::stdout().write_all(&bytes)?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
