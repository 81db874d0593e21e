//! `logs POD [-c CONTAINER] [--tail N] [-f]`: a pod's container log, as kubectl prints it. The
//! containers are `istio-proxy` and the app's (`httpbin`); the default is the app when the pod
//! has one, else `istio-proxy`. Lines carry RFC 3339 timestamps; files are bounded (rotated
//! when a process starts again, see `env::open_log`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::PodStatus;
use crate::cli::backend::Backend;
use crate::env::Env;

/// The log file of `container` in `pod`, and the containers the pod has.
fn log_file(backend: &Backend<'_>, pod: &PodStatus, container: Option<&str>) -> anyhow::Result<PathBuf> {
    let mut containers = vec!["istio-proxy".to_string()];
    if let Some(app) = &pod.app {
        containers.insert(0, app.clone());
    }
    let chosen = match container {
        Some(c) if containers.iter().any(|k| k == c) => c.to_string(),
        Some(c) => bail!("pod {} has no container {c:?}; its containers: {}", pod.key(), containers.join(", ")),
        None => containers[0].clone(),
    };
    Ok(backend.log_file(pod, &chosen))
}

/// The last `n` lines of `text` (all of it when `n` is None).
pub fn tail(text: &str, n: Option<usize>) -> &str {
    let Some(n) = n else { return text };
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

pub async fn run(
    env: &Env,
    pod: &str,
    namespace: Option<&str>,
    container: Option<&str>,
    lines: Option<usize>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let backend = Backend::for_env(env);
    let ns = namespace.unwrap_or("default");
    if let Backend::Kind(_) = backend {
        return crate::cli::kind_objects::logs(env, pod, ns, container, lines, follow).await;
    }
    let status = backend.client()?.status().await?;
    let name = pod.strip_prefix("deploy/").or_else(|| pod.strip_prefix("pod/")).unwrap_or(pod);
    let found = status
        .pods
        .iter()
        .find(|p| p.namespace == ns && p.name == name)
        .or_else(|| status.pods.iter().find(|p| p.namespace == ns && p.workload == name));
    let Some(found) = found else {
        let known: Vec<String> = status.pods.iter().filter(|p| p.namespace == ns).map(|p| p.name.clone()).collect();
        let msg = format!("no pod {name:?} in namespace {ns}; pods there: {}", known.join(", "));
        return Err(crate::cli::exit::NotFound(msg).into());
    };
    let path = log_file(&backend, found, container)?;
    let mut file = std::fs::File::open(&path).with_context(|| format!("no log yet at {}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(|| format!("read {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    out.write_all(tail(&text, lines).as_bytes())?;
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: print what is appended, as `tail -f` does (a poll of the file, not a readiness wait).
    let mut at = file.seek(SeekFrom::End(0))?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < at {
            // Rotated: the process restarted; continue from the new file's start.
            file = std::fs::File::open(&path)?;
            at = 0;
        }
        if len > at {
            let mut chunk = Vec::new();
            file.seek(SeekFrom::Start(at))?;
            (&mut file).take(len - at).read_to_end(&mut chunk)?;
            at = len;
            out.write_all(&chunk)?;
            out.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_keeps_the_last_lines() {
        let text = "a\nb\nc\n";
        assert_eq!(super::tail(text, Some(2)), "b\nc\n");
        assert_eq!(super::tail(text, Some(5)), text);
        assert_eq!(super::tail(text, None), text);
        assert_eq!(super::tail(text, Some(0)), "");
        assert_eq!(super::tail("a\nb", Some(1)), "b");
    }
}
