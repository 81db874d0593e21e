//! The kind backend's commands: `up --backend kind --dry-run` (the kind config and every
//! manifest `up` would apply, as one YAML stream; without `--dry-run`, `kind_up.rs`),
//! `kube-inject` (istioctl's verb) and `image save`.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{anyhow, Context};

use crate::backend::kind::inject::{self, Outcome};
use crate::backend::kind::render::{self, Plan};
use crate::backend::kind::{self, SampleImages};
use crate::cli::lifecycle::GatewayPorts;
use crate::env::Env;

/// The plan for `env`: the ports asked for, else the environment's saved ones, else the
/// defaults. Nothing is saved.
pub fn plan(env: &Env, ports: &GatewayPorts, sample_images: Option<SampleImages>) -> anyhow::Result<Plan> {
    let saved = env.settings()?.unwrap_or_default();
    let binary = std::env::current_exe().and_then(std::fs::read).context("read meshrig's own binary")?;
    Ok(Plan {
        env: env.name.clone(),
        image: kind::image_tag(&binary),
        http_port: ports.http.unwrap_or(saved.http_port),
        https_port: ports.https.unwrap_or(saved.https_port),
        tcp_port: ports.tcp.unwrap_or(saved.tcp_port),
        sample_images: sample_images.unwrap_or(saved.sample_images),
    })
}

/// The kind backend's preflight for the gateway's host ports `[http, https, tcp]`.
pub fn preflight([http, https, tcp]: [u16; 3]) -> anyhow::Result<Vec<kind::preflight::Finding>> {
    let ports = [("gateway HTTP port", http), ("gateway HTTPS port", https), ("gateway TCP port", tcp)];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(kind::preflight::run(&ports, crate::cli::lifecycle::port_free)))
}

/// The kind backend's preflight without the host ports (a cluster that runs holds them).
pub fn preflight_tools() -> anyhow::Result<Vec<kind::preflight::Finding>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(kind::preflight::run(&[], crate::cli::lifecycle::port_free)))
}

/// `up --backend kind`: with `--dry-run`, prints what would be created and applied; without,
/// creates (or reuses) the cluster and installs the mesh (`kind_up.rs`).
pub fn up(
    env: &Env,
    ports: &GatewayPorts,
    sample_images: Option<SampleImages>,
    apps: Option<Vec<String>>,
    addons: &[String],
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let plan = plan(env, ports, sample_images)?;
    // Rendered first, so a wrong addon or app name is said before anything else.
    let addon_manifests = render::addons(&plan, addons)?;
    let apps = match apps {
        Some(apps) => apps.into_iter().filter(|a| a != "none").collect(),
        None => env.settings()?.unwrap_or_default().apps,
    };
    let app_manifests = app_manifests(&apps)?;
    if !dry_run {
        return crate::cli::kind_up::up(env, &plan, (&apps, app_manifests), addons, addon_manifests);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "# meshrig up --backend kind --dry-run: environment {:?}, cluster {}, image {}\n",
        plan.env,
        kind::cluster_name(&plan.env),
        plan.image
    ));
    out.push_str("# kind create cluster --config (this document)\n");
    let cluster = render::cluster_config(&plan)?;
    out.push_str(&format!("# Source: {}\n{}", cluster.source, ensure_newline(&cluster.text)));
    for r in render::manifests(&plan)?.into_iter().chain(addon_manifests).chain(app_manifests) {
        out.push_str(&format!("---\n# Source: {}\n{}", r.source, ensure_newline(r.text.trim_start_matches("---\n"))));
    }
    write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The sample apps `up` runs (the local backend's `--apps`), as documents: the `default`
/// namespace labelled for injection, then each app's manifests from the project's samples.
pub fn app_manifests(apps: &[String]) -> anyhow::Result<Vec<render::Rendered>> {
    use crate::cli::lifecycle::{APPS, MANIFESTS};
    if let Some(bad) = apps.iter().find(|a| !APPS.contains(&a.as_str())) {
        anyhow::bail!("unknown app {bad:?} for --apps; choose from {} (or none)", APPS.join(", "));
    }
    if apps.is_empty() {
        return Ok(vec![]);
    }
    let namespace =
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels:\n    istio-injection: enabled\n";
    let mut out = vec![render::Rendered {
        source: "the default namespace, labelled for injection".into(),
        text: namespace.into(),
        documents: render::parse_stream(namespace).map_err(|e| anyhow!(e))?,
    }];
    for (app, file, text) in MANIFESTS.iter().filter(|(app, _, _)| apps.iter().any(|a| a == app)) {
        let documents = render::parse_stream(text).map_err(|e| anyhow!("{file}: {e}"))?;
        out.push(render::Rendered { source: format!("{file} ({app})"), text: text.to_string(), documents });
    }
    Ok(out)
}

fn ensure_newline(s: &str) -> String {
    let s = s.trim_start_matches('\n');
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

fn write_stdout(s: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|_| stdout.flush()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("write to stdout"),
    }
}

/// `kube-inject -f FILE`: every document of FILE (- for stdin), workloads injected, to stdout
/// or `-o FILE`; what was not injected and why on stderr.
pub fn kube_inject(
    env: &Env,
    file: &str,
    output: Option<&str>,
    sample_images: Option<SampleImages>,
) -> anyhow::Result<ExitCode> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("read stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {file}"))?
    };
    let mut docs = render::parse_stream(&text).map_err(|e| anyhow!("{file}: {e}"))?;
    let plan = plan(env, &GatewayPorts::default(), sample_images)?;
    for doc in &mut docs {
        let what = format!(
            "{} {}",
            doc.get("kind").and_then(|v| v.as_str()).unwrap_or("(no kind)"),
            doc.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("(no name)")
        );
        match inject::inject(doc, &plan).map_err(|e| anyhow!("{file}: {what}: {e}"))? {
            Outcome::Skipped(why) => eprintln!("{what}: not injected: {why}"),
            Outcome::Injected | Outcome::NotAWorkload => {}
        }
    }
    let yaml: Vec<String> = docs.iter().map(serde_yaml::to_string).collect::<Result<_, _>>()?;
    let out = yaml.join("---\n");
    match output {
        Some(path) if path != "-" => std::fs::write(path, out).with_context(|| format!("write {path}"))?,
        _ => write_stdout(&out)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `image save -o FILE`: the image of this binary, as an archive.
pub fn image_save(output: &std::path::Path) -> anyhow::Result<ExitCode> {
    let binary = std::env::current_exe().context("find meshrig's own binary")?;
    let (tag, archive) = kind::image::save(&binary).map_err(|e| anyhow!("image save: {e}"))?;
    let tmp = output.with_extension("partial");
    std::fs::write(&tmp, &archive).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("write {}", output.display()))?;
    println!("{} ({:.1} MB): {tag}", output.display(), archive.len() as f64 / 1e6);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::backend::kind::tests::{command_line, deployment, plan, RATINGS};
    use crate::backend::kind::{inject, render};

    /// Every container of meshrig's image in the manifests and in an injected pod runs a command
    /// line this binary takes.
    #[test]
    fn the_manifests_and_injection_run_command_lines_this_binary_takes() {
        let plan = plan();
        let mut pods: Vec<serde_json::Value> = render::manifests(&plan)
            .unwrap()
            .into_iter()
            .flat_map(|r| r.documents)
            .filter(|d| d["kind"] == "Deployment")
            .map(|d| d["spec"]["template"]["spec"].clone())
            .collect();
        let mut ratings = deployment(RATINGS);
        inject::inject(&mut ratings, &plan).unwrap();
        pods.push(ratings["spec"]["template"]["spec"].clone());
        // Istio's gateway injection template, on the local backend's own gateway Deployment.
        let local = render::parse_stream(include_str!("../../manifests/istio-system.yaml")).unwrap();
        let mut gateway = local.into_iter().find(|d| d["kind"] == "Deployment").unwrap();
        inject::inject(&mut gateway, &plan).unwrap();
        pods.push(gateway["spec"]["template"]["spec"].clone());
        let mut seen = 0;
        for pod in &pods {
            for list in ["initContainers", "containers"] {
                for c in pod[list].as_array().into_iter().flatten().filter(|c| c["image"] == plan.image.as_str()) {
                    let line = command_line(c);
                    if let Err(e) = crate::cli::Cli::try_parse_from(&line) {
                        panic!("meshrig does not take the command line {line:?}: {e}");
                    }
                    seen += 1;
                }
            }
        }
        assert_eq!(
            seen, 6,
            "istiod, the gateway, the ratings pod's istio-init, app and istio-proxy, an injected gateway"
        );
    }
}
