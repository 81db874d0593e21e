//! The command line: clap definitions and dispatch. Data goes to stdout, messages to stderr.
//!
//! Exit codes: 0 success; 1 a check or verification failed; 2 usage or runtime error.

pub mod addons;
pub mod analyze;
pub mod backend;
mod doctor;
pub mod exec;
pub mod exit;
mod graph;
mod kind;
mod kind_forward;
mod kind_objects;
mod kind_up;
mod kubectl;
mod lab;
mod lab_verify;
mod lab_watch;
pub mod lifecycle;
mod load;
pub mod logs;
mod proxy_config;
mod resource;
pub mod term;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::env::Env;
use crate::resources::Kind;

#[derive(Parser, Debug)]
#[command(
    name = "meshrig",
    version,
    about = "A service-mesh lab in one binary: Istio's YAML, checked labs, no cluster needed.",
    after_help = exit::HELP
)]
pub struct Cli {
    /// Environment name; each has its own state, ports and processes.
    #[arg(long, global = true, env = "MESHRIG_ENV", default_value = "default")]
    pub env: String,
    /// State directory (default: $XDG_STATE_HOME/meshrig/ENV or ~/.local/state/meshrig/ENV).
    #[arg(long, global = true, env = "MESHRIG_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// `image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Write the image of this binary as an OCI archive that `docker load` and `kind load
    /// image-archive` take: the binary, the libraries it loads, the CA roots.
    Save {
        /// The archive to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

/// `up --backend`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    Local,
    Kind,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

/// What `create` makes.
#[derive(Debug, clap::Subcommand)]
pub enum Create {
    /// A namespace.
    #[command(visible_alias = "ns")]
    Namespace {
        /// Its name.
        name: String,
    },
    /// A Secret: `tls` from a certificate and key, `generic` from files and literals.
    Secret {
        #[command(subcommand)]
        kind: SecretKind,
    },
}

/// The Secrets `create secret` makes, as kubectl.
#[derive(Debug, clap::Subcommand)]
pub enum SecretKind {
    /// `kubernetes.io/tls` with `tls.crt` and `tls.key` (e.g. a gateway's `credentialName`).
    Tls {
        /// The Secret's name (a Gateway's `credentialName`).
        name: String,
        /// The PEM certificate (chain).
        #[arg(long)]
        cert: std::path::PathBuf,
        /// The PEM private key.
        #[arg(long)]
        key: std::path::PathBuf,
        /// Its namespace (default: default; a gateway reads Secrets in its own, istio-system).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// `Opaque`, from `--from-file=[KEY=]FILE` and `--from-literal=KEY=VALUE`.
    Generic {
        /// The Secret's name.
        name: String,
        /// `[KEY=]FILE`: a key with the file's contents (the key defaults to the file's name).
        #[arg(long = "from-file")]
        from_file: Vec<String>,
        /// `KEY=VALUE`: a key with a literal value.
        #[arg(long = "from-literal")]
        from_literal: Vec<String>,
        /// The Secret's type (default `Opaque`).
        #[arg(long = "type")]
        type_: Option<String>,
        /// Its namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Bring up the mesh with the sample apps (running it again is harmless).
    Up {
        /// Localhost port of the ingress gateway's HTTP listener (0 picks a free one).
        #[arg(long)]
        http_port: Option<u16>,
        /// Localhost port of the ingress gateway's HTTPS listener (0 picks a free one).
        #[arg(long)]
        https_port: Option<u16>,
        /// Localhost port of the ingress gateway's TCP listener, Gateway port 31400 (0 picks a free one).
        #[arg(long)]
        tcp_port: Option<u16>,
        /// Localhost port of the trace collector's Jaeger query API [default: 16686] (0 picks a free one).
        #[arg(long)]
        tracing_port: Option<u16>,
        /// Sample apps to run, remembered for the next `up`: httpbin (with curl), bookinfo, or none
        /// [default on first up: httpbin,bookinfo].
        #[arg(long, value_delimiter = ',')]
        apps: Option<Vec<String>>,
        /// Addons to run as well, remembered for the next `up`: prometheus (`meshrig addons
        /// disable` stops one); with --backend kind also grafana, jaeger and kiali.
        #[arg(long, value_delimiter = ',')]
        addons: Vec<String>,
        /// How long to wait for every pod to be ready, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// The most connections each proxy listener holds at once, remembered for the next `up`
        /// [default: 4096]; past it a new connection is closed as it arrives.
        #[arg(long)]
        max_connections: Option<usize>,
        /// Where the mesh runs: local (processes on this machine's loopback, the default) or
        /// kind (a kind cluster; so far only with --dry-run).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// With --backend kind: print the kind config and every manifest `up` would apply, as
        /// one YAML stream, touching neither Docker nor a cluster.
        #[arg(long)]
        dry_run: bool,
        /// With --backend kind: run Istio's sample images as meshrig's built-in apps (builtin,
        /// the default: no internet needed) or pull them (upstream).
        #[arg(long, value_enum)]
        sample_images: Option<crate::backend::kind::SampleImages>,
    },
    /// Stop every process of the environment; applied config is kept unless --purge.
    Down {
        /// Also delete the environment's state (applied resources, lab progress).
        #[arg(long)]
        purge: bool,
    },
    /// Find configuration mistakes as istioctl analyze does (codes IST0101, IST0102, IST0103,
    /// IST0106, IST0109); exit code 79 when an issue reaches --failure-threshold.
    Analyze {
        /// Also judge these files, as if they were applied (nothing is applied).
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// Read directories given with -f recursively.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// The namespace to analyze (default: default).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Analyze every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format: istioctl's lines for people, or json / yaml for programs.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// The lowest level that makes the exit code 79: Error, Warning or Info.
        #[arg(long, default_value = "Error")]
        failure_threshold: String,
        /// The lowest level shown: Error, Warning or Info.
        #[arg(long, default_value = "Info")]
        output_threshold: String,
    },
    /// Show the control plane and every pod with its health.
    Status {
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Write the project's samples (httpbin, its gateway, curl, sleep) to DIR/samples/, at
    /// Istio's paths, so istio.io's commands run from DIR.
    Samples {
        /// Where to create `samples/` (default: the current directory).
        #[arg(default_value = ".")]
        dir: std::path::PathBuf,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Check what the local backend needs (or, --backend kind, the kind backend: kind, Docker,
    /// ports), with a fix for each problem.
    Doctor {
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// The backend to check for: local (the default) or kind (exits 3 when it cannot run).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
    },
    /// Apply resources from files, directories or - (stdin), all or nothing.
    Apply {
        /// A file, a directory of .yaml/.yml/.json files, or - for stdin (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Read directories given with -f recursively.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Namespace for resources that do not set one.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Validate and report what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Wait until every pod is ready and every proxy runs the new config.
        #[arg(long)]
        wait: bool,
    },
    /// Delete resources named in files, or by kind and name.
    Delete {
        /// Delete what these files describe (as `apply -f` reads them).
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// Read directories given with -f recursively.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// KIND NAME... (when no -f is given).
        args: Vec<String>,
        /// Namespace of the resources (default: `default`).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// List resources (and pods) like kubectl get.
    Get {
        /// gateway|virtualservice|destinationrule|service|deployment|namespace|serviceaccount|pods, or `all` (pods, services, deployments); short names work.
        kind: String,
        /// One object by name; default: all of that kind.
        name: Option<String>,
        /// Namespace to list (default: `default`).
        #[arg(short, long)]
        namespace: Option<String>,
        /// List across every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only objects whose labels match, as kubectl reads it: `app=reviews,version!=v1`, `version`, `!version`, `version in (v1,v2)`.
        #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
        selector: Option<String>,
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show one pod in detail, as kubectl describe: its containers (the app and `istio-proxy`),
    /// their state and addresses, and the pod's config sync.
    Describe {
        /// `pod` (the kind kubectl takes; only pods so far).
        kind: String,
        /// The pod's name, or its Deployment's (the first pod).
        name: String,
        /// Namespace of the pod (default: `default`).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Send load: a fixed rate (open loop) or as fast as answers come, then the status split,
    /// circuit-breaker overflows and latency percentiles.
    Load {
        /// `http://HOST:PORT/PATH`; a path alone (`/productpage`) goes to the ingress gateway.
        url: String,
        /// Send from this workload (`fortio-deploy`, `deploy/curl`), through its sidecar.
        #[arg(long)]
        from: Option<String>,
        /// Namespace of the --from workload (default: `default`).
        #[arg(long)]
        namespace: Option<String>,
        /// Connections, each with one call in flight.
        #[arg(short = 'c', long, default_value_t = 4)]
        connections: usize,
        /// Calls per second over all connections; 0: as fast as answers come.
        #[arg(short = 'q', long, default_value_t = 0.0)]
        qps: f64,
        /// Stop after this many calls (instead of after --duration).
        #[arg(short = 'n', long)]
        calls: Option<u64>,
        /// Stop after this long (`30s`, `1m`); 0: until Ctrl-C.
        #[arg(short = 't', long, default_value = "5s")]
        duration: String,
        /// A request header, `Name: value` (repeatable), e.g. `-H 'Host: bookinfo.example.com'`.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// One call's deadline, connect to last byte.
        #[arg(long, default_value = "3s")]
        timeout: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command (usually curl) from inside a workload, through its sidecar.
    Exec {
        /// Deployment (`curl`, `deploy/curl`) or pod name.
        workload: String,
        /// Namespace of the workload (default: `default`).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Container: the app's (default), or `istio-proxy`, where `pilot-agent request GET
        /// PATH` reads the proxy's admin (`stats`, `clusters`, `config_dump`...).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a pod's container log (`istio-proxy` or the app), as kubectl logs.
    Logs {
        /// Pod name, or a Deployment name for its first pod.
        pod: String,
        /// Namespace of the pod (default: `default`).
        #[arg(short, long)]
        namespace: Option<String>,
        /// `istio-proxy` or the app (default: the app when the pod has one).
        #[arg(short, long)]
        container: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print a shell completion script: `source <(meshrig completion bash)`.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Create a resource by name, as kubectl: `create namespace NAME`, `create secret tls NAME
    /// --cert FILE --key FILE`, `create secret generic NAME --from-file=KEY=FILE`.
    Create {
        #[command(subcommand)]
        what: Create,
    },
    /// Set or remove labels, as kubectl: `label namespace default istio-injection=enabled`.
    Label {
        /// Only `namespace` (or `ns`).
        kind: String,
        /// Its name.
        name: String,
        /// `key=value` to set, `key-` to remove.
        #[arg(required = true)]
        labels: Vec<String>,
        /// Change a label that already has another value.
        #[arg(long)]
        overwrite: bool,
    },
    /// Labs: list, start, check, verify.
    #[command(subcommand)]
    Lab(LabCommand),
    /// The addons the control plane runs beside the mesh (Prometheus).
    #[command(subcommand)]
    Addons(AddonsCommand),
    /// Serve meshrig's web dashboard (the service graph, traces, golden signals) until Ctrl-C;
    /// or, with a NAME, print (and on a desktop open) where an addon answers: prometheus, or
    /// jaeger (the trace collector's Jaeger API).
    Dashboard {
        /// prometheus or jaeger; none: meshrig's own dashboard.
        name: Option<String>,
        /// Print the address only; do not open a browser.
        #[arg(long)]
        no_browser: bool,
        /// Localhost port of meshrig's own dashboard (20001, Kiali's; 0 picks a free one).
        #[arg(long, default_value_t = addons::DASHBOARD_PORT)]
        port: u16,
    },
    /// The service graph from the proxies' metrics: who calls whom, requests, errors, p99, mTLS.
    Graph {
        /// Only edges from or to this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Measure rates over the next WINDOW (`5s`, `1m`: the command waits that long, then
        /// prints); 0: totals since the proxies started, at once.
        #[arg(short, long, default_value = "0")]
        window: String,
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Whether each proxy runs the config the control plane holds (SYNCED / STALE), as istioctl.
    ProxyStatus {
        /// One pod (`POD`, `POD.NAMESPACE` or a Deployment name); default: every proxy.
        pod: Option<String>,
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// What one proxy was sent: routes, clusters, listeners or endpoints, as istioctl.
    ProxyConfig {
        /// What to show.
        #[arg(value_enum)]
        section: proxy_config::Section,
        /// `POD`, `POD.NAMESPACE` or a Deployment name.
        pod: String,
        /// Namespace of the pod (default: `default`, or the one in POD.NAMESPACE).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Add the sidecar to every workload of a file, as istioctl kube-inject does (for the kind
    /// backend: istio-init and istio-proxy with meshrig's image).
    KubeInject {
        /// A file of Kubernetes YAML, or - for stdin.
        #[arg(short = 'f', long = "filename")]
        filename: String,
        /// Where to write the result (default: stdout).
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
        /// Istio's sample images as meshrig's built-in apps (builtin, the default) or as they are
        /// (upstream).
        #[arg(long, value_enum)]
        sample_images: Option<crate::backend::kind::SampleImages>,
    },
    /// meshrig's container image, made from this binary (for the kind backend).
    Image {
        #[command(subcommand)]
        what: ImageCommand,
    },
    /// (internal) Run the control plane.
    #[command(hide = true)]
    ControlPlane {
        /// As istiod in a Kubernetes cluster: the cluster's objects and Pods, from the API
        /// server the pod's ServiceAccount (or a kubeconfig) reaches.
        #[arg(long)]
        kubernetes: bool,
        /// With --kubernetes: the API's port (every interface).
        #[arg(long, default_value_t = crate::backend::kind::API_PORT, requires = "kubernetes")]
        api_port: u16,
        /// With --kubernetes: the admission webhooks' port.
        #[arg(long, default_value_t = crate::backend::kind::WEBHOOK_PORT, requires = "kubernetes")]
        webhook_port: u16,
        /// With --kubernetes: the readiness port (/ready).
        #[arg(long, default_value_t = crate::backend::kind::cluster::istiod::MONITORING_PORT, requires = "kubernetes")]
        monitoring_port: u16,
    },
    /// (internal) Run a proxy.
    #[command(hide = true)]
    Proxy {
        #[arg(long)]
        role: String,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        pod: String,
        #[arg(long = "inbound-port")]
        inbound_ports: Vec<u16>,
        /// The control plane's API, HOST:PORT (a name is resolved when the proxy starts). Its
        /// token comes in MESHRIG_PROXY_TOKEN, or from --token-file.
        #[arg(long)]
        control_plane: String,
        /// A file holding the proxy's token, read at every call (a projected ServiceAccount
        /// token in a Kubernetes pod).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// PORT=ADDR: publish a gateway container port on a localhost address.
        #[arg(long)]
        publish: Vec<String>,
        /// The most connections each listener holds at once.
        #[arg(long, default_value_t = crate::env::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Listen on Istio's fixed ports (outbound 15001, inbound 15006, admin 15000, health
        /// 15021, stats 15090) for traffic that iptables redirects, and route each connection
        /// by its original destination; without it, loopback ports the OS picks.
        #[arg(long)]
        capture: bool,
    },
    /// (internal) Redirect a pod's traffic to its proxy, as Istio's istio-init (the injected
    /// init container runs it; needs CAP_NET_ADMIN).
    #[command(hide = true)]
    CaptureInit {
        /// The proxy's UID: its own connections are not redirected.
        #[arg(long, default_value_t = 1337)]
        proxy_uid: u32,
        /// The proxy's GID [default: the UID].
        #[arg(long)]
        proxy_gid: Option<u32>,
        /// Where outbound TCP goes.
        #[arg(long, default_value_t = 15001)]
        outbound_port: u16,
        /// Where inbound TCP goes.
        #[arg(long, default_value_t = 15006)]
        inbound_port: u16,
        /// Inbound ports to redirect: * or a comma-separated list.
        #[arg(long, default_value = "*")]
        include_inbound_ports: String,
        /// Inbound ports never redirected (the proxy's own).
        #[arg(long, default_value = "15090,15021,15020")]
        exclude_inbound_ports: String,
    },
    /// (internal) Run a built-in app.
    #[command(hide = true)]
    App {
        name: String,
        #[arg(long)]
        container_port: u16,
        /// Where to listen (a pod listens on its container port on every address); default:
        /// a loopback port the OS picks.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The container's `args`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AddonsCommand {
    /// Every addon meshrig knows, and whether it runs.
    List {
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Run addons (remembered: `up` starts them again) and wait until they answer.
    Enable {
        /// Addon names: prometheus.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop addons (their data is kept for the next enable).
    Disable {
        /// Addon names: prometheus.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// List the labs and your progress ("n of 13 done", the step you are on).
    List {
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print lab N's text in the terminal, with this environment's addresses (default: the
    /// current lab).
    Show {
        /// The lab (default: the one started last).
        lab: Option<String>,
    },
    /// Apply the lab's files and check them again on every save, until Ctrl-C.
    Watch {
        /// The lab (default: the one started last).
        lab: Option<String>,
        /// Seconds each check may retry before it counts as failed.
        #[arg(long, default_value_t = 5)]
        wait: u64,
    },
    /// Bring the mesh to lab N's baseline and write its starting files into ./meshrig-labs/.
    Start {
        /// The lab's number (`1`, `01`) or directory name.
        lab: String,
    },
    /// Start the lab after the current one.
    Next,
    /// Put lab N back as it started: the mesh at its baseline, the starting files restored (your
    /// edited files are kept as backups).
    Reset {
        /// The lab (default: the one started last).
        lab: Option<String>,
    },
    /// Apply again what `lab start` or `lab reset` removed (the newest set, or FILE).
    Restore {
        /// A file `lab start` or `lab reset` saved (default: the newest).
        file: Option<std::path::PathBuf>,
    },
    /// Run lab N's checks (default: the current lab).
    Check {
        /// The lab (default: the one started last).
        lab: Option<String>,
        /// Seconds each check may retry before it counts as failed.
        #[arg(long, default_value_t = 5)]
        wait: u64,
        /// In a lab of steps, check this step (default: the step you are on).
        #[arg(long)]
        step: Option<u32>,
        /// Output format: a table for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show lab N's next hint (each call gives one more).
    Hint {
        /// The lab (default: the one started last).
        lab: Option<String>,
        /// Show every hint at once.
        #[arg(long)]
        all: bool,
    },
    /// Show (or apply) the solution of the step you are on in lab N.
    Solution {
        /// The lab (default: the one started last).
        lab: Option<String>,
        /// Apply it instead of printing it (with the starting files it does not replace).
        #[arg(long)]
        apply: bool,
        /// In a lab of steps, this step's solution (default: the step you are on).
        #[arg(long)]
        step: Option<u32>,
    },
    /// Prove the course, each lab in a scratch environment of its own (yours is not touched):
    /// its starting files fail every check it teaches and its solution passes them all.
    Verify {
        /// Labs to verify (default: all).
        labs: Vec<String>,
        /// Walk the labs in order in one scratch environment, as a learner does: each step fails
        /// before its solution and passes after it.
        #[arg(long)]
        in_order: bool,
        /// Seconds each check may retry before it counts as failed.
        #[arg(long, default_value_t = 10)]
        wait: u64,
        /// How many labs to verify at once (each runs its own small mesh).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Also write the results as a JUnit XML file (for CI).
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
        /// Output format: lines for people, or yaml / json for programs.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

pub fn env_of(cli: &Cli) -> anyhow::Result<Env> {
    Ok(Env::resolve(&cli.env, cli.state_dir.clone())?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Prints data on stdout as `-o json` (indented) or `-o yaml` asks.
pub fn print_data(output: Output, value: &impl serde::Serialize) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Output::Json | Output::Table => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

/// True for an environment brought up on the kind backend.
fn is_kind(env: &Env) -> bool {
    env.settings().ok().flatten().is_some_and(|s| s.backend == crate::env::BackendKind::Kind)
}

/// Runs a command to completion.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = env_of(&cli)?;
    match cli.command {
        Command::ControlPlane { kubernetes: true, api_port, webhook_port, monitoring_port } => {
            let ports = crate::backend::kind::cluster::istiod::Ports {
                api: api_port,
                webhooks: webhook_port,
                monitoring: monitoring_port,
            };
            match runtime()?.block_on(crate::backend::kind::cluster::istiod::run(env, ports)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("istiod: {e}");
                    Ok(ExitCode::from(exit::FAILED))
                }
            }
        }
        Command::ControlPlane { .. } => {
            // The backend the environment's settings name.
            let backend = |s: &crate::env::Settings| -> Box<dyn crate::control_plane::backend::Backend> {
                match s.backend {
                    // On kind the control plane is istiod in the cluster (`--kubernetes`); one
                    // started here for such an environment runs its apps locally, as `local`.
                    crate::env::BackendKind::Local | crate::env::BackendKind::Kind => {
                        Box::new(crate::backend::local::Local::new(s.clone()))
                    }
                }
            };
            runtime()?.block_on(crate::control_plane::run(env, backend))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Proxy {
            role,
            namespace,
            pod,
            inbound_ports,
            control_plane,
            token_file,
            publish,
            max_connections,
            capture,
        } => {
            let role = match role.as_str() {
                "sidecar" => crate::snapshot::Role::Sidecar,
                "gateway" => crate::snapshot::Role::Gateway,
                "plain" => crate::snapshot::Role::Plain,
                other => anyhow::bail!("unknown proxy role {other:?}"),
            };
            let mut published = std::collections::BTreeMap::new();
            for p in publish {
                let (port, addr) = p.split_once('=').ok_or_else(|| anyhow::anyhow!("--publish takes PORT=ADDR"))?;
                published.insert(port.parse()?, addr.parse()?);
            }
            let address = runtime()?
                .block_on(crate::net::resolve(&control_plane, std::time::Duration::from_secs(60)))
                .map_err(anyhow::Error::msg)?;
            let control_plane = match token_file {
                Some(path) => crate::api::Client::with_token_file(address, path),
                None => {
                    let token = std::env::var(crate::proxy::TOKEN_ENV).map_err(|_| {
                        anyhow::anyhow!(
                            "{} is not set and no --token-file is given: proxies are started by the control plane \
                             (`meshrig up`), which sets it",
                            crate::proxy::TOKEN_ENV
                        )
                    })?;
                    crate::api::Client::new(address, token)
                }
            };
            let config = crate::proxy::Config {
                role,
                control_plane,
                namespace,
                pod,
                inbound_ports,
                publish: published,
                max_connections,
                listen: if capture { crate::proxy::Listen::Capture } else { crate::proxy::Listen::Loopback },
            };
            // Two workers, as Istio sizes its proxies.
            runtime()?.block_on(crate::proxy::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::App { name, container_port, listen, args } => {
            let app = crate::apps::App::from_name(&name).ok_or_else(|| anyhow::anyhow!("unknown app {name:?}"))?;
            let listen = listen.unwrap_or(std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)));
            runtime()?.block_on(crate::apps::run(app, container_port, listen, &args, &env.dir))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            http_port,
            https_port,
            tcp_port,
            tracing_port,
            apps,
            addons,
            timeout,
            max_connections,
            backend,
            dry_run,
            sample_images,
        } => {
            let ports = lifecycle::GatewayPorts {
                http: http_port,
                https: https_port,
                tcp: tcp_port,
                tracing: tracing_port,
                max_connections,
            };
            // The backend asked for, else the one the environment was brought up on.
            let saved = env.settings().ok().flatten().map(|s| s.backend).unwrap_or_default();
            let backend = backend.or(match saved {
                crate::env::BackendKind::Kind => Some(BackendArg::Kind),
                crate::env::BackendKind::Local => None,
            });
            match backend {
                Some(BackendArg::Local) if saved == crate::env::BackendKind::Kind => anyhow::bail!(
                    "environment {:?} runs on the kind backend; `meshrig down --purge` deletes its cluster, or use another \
                     environment (`--env NAME`) for the local backend",
                    env.name
                ),
                Some(BackendArg::Kind) => kind::up(&env, &ports, sample_images, apps, &addons, dry_run),
                _ if dry_run => anyhow::bail!(
                    "--dry-run is for --backend kind (the local backend starts processes on this machine: `meshrig up`)"
                ),
                _ if sample_images.is_some() => anyhow::bail!("--sample-images is for --backend kind"),
                _ => runtime()?.block_on(lifecycle::up(&env, ports, apps, &addons, timeout)),
            }
        }
        Command::Image { what: ImageCommand::Save { output } } => kind::image_save(&output),
        Command::CaptureInit {
            proxy_uid,
            proxy_gid,
            outbound_port,
            inbound_port,
            include_inbound_ports,
            exclude_inbound_ports,
        } => {
            let config = crate::redirect::Config {
                proxy_uid,
                proxy_gid: proxy_gid.unwrap_or(proxy_uid),
                outbound_port,
                inbound_port,
                include_inbound: crate::redirect::Ports::parse(&include_inbound_ports)
                    .map_err(|e| anyhow::anyhow!("--include-inbound-ports: {e}"))?,
                exclude_inbound: crate::redirect::parse_ports(&exclude_inbound_ports)
                    .map_err(|e| anyhow::anyhow!("--exclude-inbound-ports: {e}"))?,
            };
            for r in crate::redirect::rules(&config) {
                println!("{}: {}", r.chain, crate::redirect::netlink::describe(&r));
            }
            let n = crate::redirect::install(&config).map_err(anyhow::Error::msg)?;
            println!("installed {n} rules in table ip {}", crate::redirect::TABLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::KubeInject { filename, output, sample_images } => {
            kind::kube_inject(&env, &filename, output.as_deref(), sample_images)
        }
        Command::Down { purge } if is_kind(&env) => {
            let plan = kind::plan(&env, &lifecycle::GatewayPorts::default(), None)?;
            crate::cli::kind_up::down(&env, &plan, purge)
        }
        Command::Down { purge } => lifecycle::down(&env, purge),
        Command::Status { output } => runtime()?.block_on(lifecycle::status(&env, output)),
        Command::Doctor { output, backend: Some(BackendArg::Kind) } => doctor::kind(&env, output),
        // An environment on kind is checked as one, unless `--backend local` asks otherwise.
        Command::Doctor { output, backend: None } if is_kind(&env) => doctor::kind(&env, output),
        Command::Doctor { output, backend: _ } => doctor::run(&env, output),
        Command::Create { what: Create::Namespace { name } } => {
            runtime()?.block_on(kubectl::create_namespace(&env, &name))
        }
        Command::Create { what: Create::Secret { kind } } => {
            let (name, namespace, secret) = kubectl::secret_from(&kind)?;
            runtime()?.block_on(kubectl::create_secret(&env, &name, namespace.as_deref(), secret))
        }
        Command::Label { kind, name, labels, overwrite } => {
            if Kind::from_user(&kind) != Some(Kind::Namespace) {
                anyhow::bail!(
                    "label edits namespaces only (`label namespace NAME key=value`); use apply -f for {kind}"
                );
            }
            runtime()?.block_on(kubectl::label_namespace(&env, &name, &labels, overwrite))
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            // Written whole from a buffer: clap_complete panics when stdout closes mid-way
            // (`meshrig completion bash | head -1`); a closed pipe ends the command quietly.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "meshrig", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::from(141)),
                other => other.map(|_| ExitCode::SUCCESS).map_err(Into::into),
            }
        }
        Command::Logs { pod, namespace, container, tail, follow } => {
            runtime()?.block_on(logs::run(&env, &pod, namespace.as_deref(), container.as_deref(), tail, follow))
        }
        Command::Samples { dir, force } => {
            let written = crate::samples::write(&dir, force)?;
            for p in &written {
                println!("{}", p.display());
            }
            eprintln!(
                "{} wrote {} sample files; try: meshrig apply -f {}",
                term::pass_mark(),
                written.len(),
                dir.join("samples/httpbin/httpbin-gateway.yaml").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply { files, recursive, namespace, dry_run, wait } => {
            runtime()?.block_on(resource::apply(&env, (&files, recursive), namespace.as_deref(), dry_run, wait))
        }
        Command::Delete { files, recursive, args, namespace } => {
            runtime()?.block_on(resource::delete(&env, (&files, recursive), &args, namespace.as_deref()))
        }
        Command::Get { kind, name, namespace, all_namespaces, selector, output } => {
            let ns = if all_namespaces { None } else { Some(namespace.unwrap_or_else(|| "default".into())) };
            let selector = selector
                .map(|s| crate::resources::meta::Selector::parse(&s))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let query =
                resource::Query { name: name.as_deref(), namespace: ns.as_deref(), selector: selector.as_ref() };
            runtime()?.block_on(resource::get(&env, &kind, query, output))
        }
        Command::Describe { kind, name, namespace } => {
            runtime()?.block_on(kubectl::describe(&env, &kind, &name, namespace.as_deref().unwrap_or("default")))
        }
        Command::Load { url, from, namespace, connections, qps, calls, duration, headers, timeout, json } => {
            let spec = load::Spec { url, from, namespace, connections, qps, calls, duration, headers, timeout };
            runtime()?.block_on(async {
                let (target, options) = load::prepare(&env, spec).await?;
                load::run(target, options, json).await
            })
        }
        Command::Exec { workload, namespace, container, command } => runtime()?.block_on(exec::run(
            &env,
            &workload,
            namespace.as_deref().unwrap_or("default"),
            container.as_deref(),
            &command,
        )),
        Command::Lab(cmd) => runtime()?.block_on(lab::run(&env, cmd)),
        Command::Addons(AddonsCommand::List { output }) => runtime()?.block_on(addons::list(&env, output)),
        Command::Addons(AddonsCommand::Enable { names }) => runtime()?.block_on(addons::enable(&env, &names)),
        Command::Addons(AddonsCommand::Disable { names }) => runtime()?.block_on(addons::disable(&env, &names)),
        Command::Dashboard { name: Some(name), no_browser, .. } => {
            runtime()?.block_on(addons::dashboard(&env, &name, !no_browser))
        }
        Command::Dashboard { name: None, no_browser, port } => {
            runtime()?.block_on(addons::serve_dashboard(&env, port, !no_browser))
        }
        Command::Analyze {
            files,
            recursive,
            namespace,
            all_namespaces,
            output,
            failure_threshold,
            output_threshold,
        } => {
            let o = analyze::Options {
                files,
                recursive,
                namespace,
                all_namespaces,
                output,
                failure_threshold,
                output_threshold,
            };
            runtime()?.block_on(analyze::run(&env, o))
        }
        Command::Graph { namespace, window, output } => {
            runtime()?.block_on(graph::graph(&env, namespace.as_deref(), &window, output))
        }
        Command::ProxyStatus { pod, output } => runtime()?.block_on(proxy_config::status(&env, pod.as_deref(), output)),
        Command::ProxyConfig { section, pod, namespace, output } => {
            runtime()?.block_on(proxy_config::config(&env, section, &pod, namespace.as_deref(), output))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && a.get_help().is_none() && !a.is_hide_set() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "meshrig", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
