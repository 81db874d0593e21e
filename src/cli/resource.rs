//! `apply`, `delete`, `get`: resources, kubectl-like.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};

use crate::api::{self, ApplyRequest};
use crate::cli::{term, Output};
use crate::env::Env;
use crate::resources::meta::Selector;
use crate::resources::parse::{parse_documents, read_limited, Document};
use crate::resources::{Kind, Resource, ResourceKey};

/// Reads FILE, DIR (its .yaml/.yml/.json files, sorted; with `recursive`, those of its
/// subdirectories too, as `kubectl apply -R`) or `-`, and parses every document.
/// Any error stops everything: nothing is sent.
pub fn load(paths: &[String], recursive: bool) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for p in paths {
        if p == "-" {
            let text = read_limited(std::io::stdin(), "<stdin>")?;
            docs.extend(parse_documents("<stdin>", &text)?);
            continue;
        }
        let path = Path::new(p);
        let mut files = Vec::new();
        if path.is_dir() {
            manifests_in(path, recursive, &mut files)?;
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        for f in files {
            let file = std::fs::File::open(&f).map_err(|e| anyhow!("{}: {e}", f.display()))?;
            let text = read_limited(file, &f.display().to_string())?;
            docs.extend(parse_documents(&f.display().to_string(), &text)?);
        }
    }
    Ok(docs)
}

/// The manifest files in `dir` (and below it when `recursive`).
fn manifests_in(dir: &Path, recursive: bool, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("read directory {}", dir.display()))? {
        let f = e?.path();
        if f.is_dir() {
            if recursive {
                manifests_in(&f, true, out)?;
            }
        } else if matches!(f.extension().and_then(|x| x.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(f);
        }
    }
    Ok(())
}

fn describe(key: &ResourceKey) -> String {
    format!("{}/{}", key.kind.as_str().to_lowercase(), key.name)
}

pub async fn apply(
    env: &Env,
    (files, recursive): (&[String], bool),
    namespace: Option<&str>,
    dry_run: bool,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let docs = load(files, recursive)?;
    if docs.is_empty() {
        bail!("no resources found in {}", files.join(", "));
    }
    let resources: Vec<Resource> = docs
        .iter()
        .map(|d| {
            let mut r = d.resource.clone();
            if let Some(ns) = namespace {
                r.set_default_namespace(ns);
            }
            r
        })
        .collect();
    if let crate::cli::backend::Backend::Kind(_) = crate::cli::backend::Backend::for_env(env) {
        let locate = |f: &api::Finding| locate(&docs, namespace, f);
        let origin = |m: &crate::analyze::Message| origin(&docs, namespace, m);
        return crate::cli::kind_objects::apply(env, resources, (locate, origin), dry_run).await;
    }
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    let resp = match client.apply(&ApplyRequest { resources, create_only: false, dry_run }).await {
        Err(api::Error::Status { status, findings, message }) if !findings.is_empty() => {
            let located: Vec<String> = findings.iter().map(|f| locate(&docs, namespace, f)).collect();
            let message =
                if located.is_empty() { message } else { format!("nothing was applied:\n  {}", located.join("\n  ")) };
            return Err(api::Error::Status { status, message, findings }.into());
        }
        other => other?,
    };
    for r in &resp.results {
        for w in &r.warnings {
            let f = api::Finding::new(Some(r.key.clone()), w);
            eprintln!("Warning: {}", locate(&docs, namespace, &f));
        }
        let suffix = if dry_run { " (dry run)" } else { "" };
        println!("{} {}{suffix}", describe(&r.key), r.action.as_str());
    }
    if !dry_run {
        let applied: Vec<_> = resp.results.iter().map(|r| r.key.clone()).collect();
        for mut m in crate::cli::analyze::after_apply(&client, &applied).await {
            m.origin = origin(&docs, namespace, &m);
            eprintln!("{m}");
        }
    }
    if wait && !dry_run {
        crate::cli::lifecycle::wait_ready(&client, Some(resp.version), std::time::Duration::from_secs(60)).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where an analyzer's message points in the applied files: `file:line` of its document.
fn origin(docs: &[Document], namespace: Option<&str>, m: &crate::analyze::Message) -> Option<String> {
    let doc = docs.iter().find(|d| {
        let mut r = d.resource.clone();
        r.set_default_namespace(namespace.unwrap_or("default"));
        r.kind().as_str() == m.kind && r.name() == m.name && r.key().namespace == m.namespace
    });
    doc.map(|d| format!("{}:{}", d.file, d.line))
}

/// `file:line: Kind ns/name: field: message`: a finding of the control plane placed in the
/// file it came from (the line of its field, or of its document).
fn locate(docs: &[Document], namespace: Option<&str>, f: &api::Finding) -> String {
    let doc = f.key.as_ref().and_then(|key| {
        docs.iter().find(|d| {
            let mut r = d.resource.clone();
            r.set_default_namespace(namespace.unwrap_or("default"));
            &r.key() == key
        })
    });
    match doc {
        Some(d) => format!("{}:{}: {f}", d.file, d.line_of(f.field.as_deref().unwrap_or(""))),
        None => f.to_string(),
    }
}

pub async fn delete(
    env: &Env,
    (files, recursive): (&[String], bool),
    args: &[String],
    namespace: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let ns = namespace.unwrap_or("default");
    let keys: Vec<ResourceKey> = if !files.is_empty() {
        load(files, recursive)?
            .into_iter()
            .map(|d| {
                let mut r = d.resource;
                r.set_default_namespace(ns);
                r.key()
            })
            .collect()
    } else {
        let (kinds, names) = args.split_first().ok_or_else(|| anyhow!("give -f FILE, or KIND NAME"))?;
        let mut keys = Vec::new();
        for (kind, slash_name) in split_kinds(kinds) {
            let kind = Kind::from_user(kind).ok_or_else(|| {
                crate::cli::exit::Usage(format!("unknown kind {kind:?}; `meshrig get --help` lists them"))
            })?;
            let names: Vec<&str> = slash_name.into_iter().chain(names.iter().map(String::as_str)).collect();
            if names.is_empty() {
                return Err(crate::cli::exit::Usage(format!("give the name of the {} to delete", kind.as_str())).into());
            }
            for n in names {
                let namespace = if kind.namespaced() { ns.to_string() } else { String::new() };
                keys.push(ResourceKey { kind, namespace, name: n.to_string() });
            }
        }
        keys
    };
    if let crate::cli::backend::Backend::Kind(_) = crate::cli::backend::Backend::for_env(env) {
        return crate::cli::kind_objects::delete(env, keys).await;
    }
    let client = crate::cli::backend::Backend::for_env(env).client()?;
    let resp = client.delete(keys).await?;
    let mut missing = false;
    for r in &resp.results {
        match r.action {
            api::Action::NotFound => {
                missing = true;
                eprintln!("error: {} {:?} not found", r.key.kind.as_str(), r.key.name);
            }
            a => println!("{} {}", describe(&r.key), a.as_str()),
        }
    }
    Ok(if missing { ExitCode::from(crate::cli::exit::NOT_FOUND) } else { ExitCode::SUCCESS })
}

/// What `get` lists: one name or all, one namespace or all (None), and a label selector.
#[derive(Clone, Copy)]
pub struct Query<'a> {
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub selector: Option<&'a Selector>,
}

/// kubectl's forms of what to get: `vs`, `vs,dr` (comma lists), `vs/reviews`.
fn split_kinds(arg: &str) -> Vec<(&str, Option<&str>)> {
    arg.split(',')
        .filter(|k| !k.is_empty())
        .map(|k| match k.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (k, None),
        })
        .collect()
}

pub async fn get(env: &Env, kinds: &str, q: Query<'_>, output: Output) -> anyhow::Result<ExitCode> {
    let parts = split_kinds(kinds);
    if parts.len() > 1 && output != Output::Table {
        bail!("`get {kinds}` lists several kinds as tables; `-o {}` takes one kind at a time", output_name(output));
    }
    let client = match crate::cli::backend::Backend::for_env(env) {
        crate::cli::backend::Backend::Kind(_) => Source::Cluster(crate::cli::kind_up::client(env).await?),
        local => Source::Api(local.client()?),
    };
    let mut code = ExitCode::SUCCESS;
    for (i, (kind, name)) in parts.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let q = Query { name: name.or(q.name), ..q };
        let one = match kind.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => get_pods(&client, q, output, parts.len() > 1).await?,
            "all" => get_all(&client, q, output).await?,
            _ => {
                let k = Kind::from_user(kind).ok_or_else(|| {
                    crate::cli::exit::Usage(format!(
                        "unknown kind {kind:?}; known: pods, all, {}",
                        Kind::ALL.iter().map(|k| k.plural()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                get_kind(&client, k, q, output, parts.len() > 1).await?
            }
        };
        if one != ExitCode::SUCCESS {
            code = one;
        }
    }
    Ok(code)
}

/// Where `get` reads: the control plane's API (local), or the cluster's API server (kind).
enum Source {
    Api(api::Client),
    Cluster(kube::Client),
}

impl Source {
    async fn list(&self, k: Kind, namespace: Option<&str>, name: Option<&str>) -> anyhow::Result<Vec<Resource>> {
        match self {
            Source::Api(c) => Ok(c.list(k, namespace, name).await?),
            Source::Cluster(c) => crate::cli::kind_objects::list(c, k, namespace, name).await,
        }
    }
}

/// `get all`: pods, services and deployments, as kubectl shows them (names prefixed by kind).
async fn get_all(client: &Source, q: Query<'_>, output: Output) -> anyhow::Result<ExitCode> {
    if output != Output::Table {
        bail!(
            "`get all` prints a table; use `get pods -o {0}`, `get services -o {0}`... for data",
            output_name(output)
        );
    }
    get_pods(client, q, output, true).await?;
    for k in [Kind::Service, Kind::Deployment] {
        println!();
        get_kind(client, k, q, output, true).await?;
    }
    Ok(ExitCode::SUCCESS)
}

fn output_name(o: Output) -> &'static str {
    match o {
        Output::Json => "json",
        Output::Yaml => "yaml",
        Output::Table => "table",
    }
}

async fn get_kind(
    client: &Source,
    k: Kind,
    Query { name, namespace, selector }: Query<'_>,
    output: Output,
    prefixed: bool,
) -> anyhow::Result<ExitCode> {
    let mut items = client.list(k, namespace, name).await?;
    if let Some(sel) = selector {
        items.retain(|r| sel.matches(&r.meta().labels));
    }
    if items.is_empty() {
        if let Some(n) = name {
            eprintln!("error: {} {n:?} not found", k.as_str());
            return Ok(ExitCode::from(crate::cli::exit::NOT_FOUND));
        }
        eprintln!("No resources found{}.", namespace.map(|n| format!(" in {n} namespace")).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let values: Vec<serde_json::Value> = items.iter().map(Resource::to_value).collect();
    let one_or_list = || {
        if name.is_some() && values.len() == 1 {
            values[0].clone()
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values})
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&one_or_list())?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&one_or_list())?),
        Output::Table => {
            let all_ns = namespace.is_none() && k.namespaced();
            let mut headers = vec![];
            if all_ns {
                headers.push("NAMESPACE");
            }
            headers.push("NAME");
            let extra: &[&str] = match k {
                Kind::VirtualService => &["GATEWAYS", "HOSTS"],
                Kind::Gateway | Kind::DestinationRule => &["HOSTS"],
                Kind::Service => &["PORTS"],
                Kind::Deployment => &["REPLICAS", "IMAGES"],
                Kind::ServiceEntry => &["HOSTS", "LOCATION", "RESOLUTION"],
                Kind::ConfigMap => &["DATA"],
                Kind::Secret => &["TYPE", "DATA"],
                _ => &[],
            };
            headers.extend(extra);
            headers.push("AGE");
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|r| {
                    let mut row = vec![];
                    if all_ns {
                        row.push(r.meta().namespace.clone().unwrap_or_default());
                    }
                    // kubectl's `get all` names: `service/x`, `deployment.apps/x`.
                    let prefix = match (prefixed, k) {
                        (false, _) => String::new(),
                        (true, Kind::Deployment) => "deployment.apps/".into(),
                        (true, k) => format!("{}/", k.as_str().to_lowercase()),
                    };
                    row.push(format!("{prefix}{}", r.meta().name));
                    match r {
                        Resource::VirtualService(vs) => {
                            row.push(format!("[{}]", vs.spec.gateways.join(",")));
                            row.push(format!("[{}]", vs.spec.hosts.join(",")));
                        }
                        Resource::Gateway(g) => {
                            let hosts: Vec<String> = g.spec.servers.iter().flat_map(|s| s.hosts.clone()).collect();
                            row.push(format!("[{}]", hosts.join(",")));
                        }
                        Resource::DestinationRule(d) => row.push(d.spec.host.clone()),
                        Resource::ServiceEntry(se) => {
                            row.push(format!("[{}]", se.spec.hosts.join(",")));
                            row.push(se.spec.location.clone().unwrap_or_default());
                            row.push(se.spec.resolution().to_string());
                        }
                        Resource::ConfigMap(cm) => row.push(cm.data.len().to_string()),
                        Resource::Secret(s) => {
                            row.push(s.secret_type().to_string());
                            row.push(s.keys().len().to_string());
                        }
                        Resource::Service(s) => {
                            let ports: Vec<String> = s.spec.ports.iter().map(|p| format!("{}/TCP", p.port)).collect();
                            row.push(ports.join(","));
                        }
                        Resource::Deployment(d) => {
                            row.push(d.replicas().to_string());
                            let images: Vec<String> = d
                                .spec
                                .template
                                .spec
                                .containers
                                .iter()
                                .map(|c| c.image.clone().unwrap_or_default())
                                .collect();
                            row.push(images.join(","));
                        }
                        _ => {}
                    }
                    row.push(r.meta().creation_timestamp.as_deref().map(crate::env::age).unwrap_or_default());
                    row
                })
                .collect();
            print!("{}", term::table(&headers, &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn get_pods(
    client: &Source,
    Query { name, namespace, selector }: Query<'_>,
    output: Output,
    prefixed: bool,
) -> anyhow::Result<ExitCode> {
    let client = match client {
        Source::Api(c) => c,
        Source::Cluster(c) => return get_cluster_pods(c, Query { name, namespace, selector }, output, prefixed).await,
    };
    let status = client.status().await?;
    let pods: Vec<&api::PodStatus> = status
        .pods
        .iter()
        .filter(|p| namespace.is_none_or(|n| p.namespace == n))
        .filter(|p| name.is_none_or(|n| p.name == n || p.workload == n))
        .filter(|p| selector.is_none_or(|s| s.matches(&p.labels)))
        .collect();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&pods)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&pods)?),
        Output::Table => {
            if pods.is_empty() {
                eprintln!("No pods found.");
                return Ok(ExitCode::SUCCESS);
            }
            let rows = pods.iter().map(|p| PodRow {
                namespace: &p.namespace,
                name: &p.name,
                ready: p.ready_column(),
                status: p.phase.to_string(),
                restarts: p.restarts.to_string(),
                created: &p.created,
            });
            print!("{}", pods_table(namespace.is_none(), prefixed, rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `get pods` on kind: the cluster's Pods, in kubectl's columns (`-o json|yaml`: the rows as data).
async fn get_cluster_pods(
    client: &kube::Client,
    Query { name, namespace, selector }: Query<'_>,
    output: Output,
    prefixed: bool,
) -> anyhow::Result<ExitCode> {
    let pods: Vec<crate::cli::kind_objects::PodRow> = crate::cli::kind_objects::pods(client, namespace)
        .await?
        .into_iter()
        .filter(|p| name.is_none_or(|n| p.name == n))
        .filter(|p| selector.is_none_or(|s| s.matches(&p.labels)))
        .collect();
    if output != Output::Table {
        let data: Vec<serde_json::Value> = pods
            .iter()
            .map(|p| {
                serde_json::json!({"namespace": p.namespace, "name": p.name, "ready": p.ready, "status": p.status,
                    "restarts": p.restarts, "created": p.created, "labels": p.labels})
            })
            .collect();
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&data)?),
            _ => print!("{}", serde_yaml::to_string(&data)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if pods.is_empty() {
        eprintln!("No pods found.");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = pods.iter().map(|p| PodRow {
        namespace: &p.namespace,
        name: &p.name,
        ready: p.ready.clone(),
        status: p.status.clone(),
        restarts: p.restarts.to_string(),
        created: &p.created,
    });
    print!("{}", pods_table(namespace.is_none(), prefixed, rows));
    Ok(ExitCode::SUCCESS)
}

/// One line of `get pods`, whichever backend it came from.
struct PodRow<'a> {
    namespace: &'a str,
    name: &'a str,
    ready: String,
    status: String,
    restarts: String,
    created: &'a str,
}

/// `get pods` as kubectl prints it: NAMESPACE when listing every namespace, `pod/` before the
/// name in `get all`.
fn pods_table<'a>(all_namespaces: bool, prefixed: bool, pods: impl Iterator<Item = PodRow<'a>>) -> String {
    let rows: Vec<Vec<String>> = pods
        .map(|p| {
            let mut row = vec![];
            if all_namespaces {
                row.push(p.namespace.to_string());
            }
            row.extend([
                if prefixed { format!("pod/{}", p.name) } else { p.name.to_string() },
                p.ready,
                p.status,
                p.restarts,
                crate::env::age(p.created),
            ]);
            row
        })
        .collect();
    let mut headers = vec![];
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    term::table(&headers, &rows)
}
