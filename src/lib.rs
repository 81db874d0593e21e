//! meshrig: a service-mesh lab in one binary — Istio's YAML, a Rust control plane and proxy,
//! sample apps, and labs whose checks say what they saw.
//!
//! # Layout
//! - `cli`: the commands users type (`up`, `apply`, `lab check`, ...).
//! - `resources`: strict Kubernetes and Istio API types, YAML parsing with file/line errors.
//! - `validate`: Istio's semantic rules over those types, and the fields meshrig does not enforce yet.
//! - `control_plane`: store, runner (Deployments → processes), API server.
//! - `registry`: the workloads translation reads (identity, labels, addresses).
//! - `translate`: resources + workloads → one proxy's snapshot (pure).
//! - `snapshot`: the config data a proxy receives.
//! - `proxy`: sidecar, gateway and plain forwarder.
//! - `apps`: built-in sample apps (httpbin) and the image → app mapping.
//! - `labs`: the lab format, checks and the verifier.
//! - `samples`: the project's own sample manifests (httpbin, curl, sleep, the httpbin gateway).
//! - `api`: the control plane's wire types and client.
//! - `env`: an environment's state directory.
//! - `graph`: the service graph from the proxies' metrics (pure).
//! - `trace`: trace context headers and the span type proxies report (pure).
//! - `net`: loopback HTTP plumbing; `ready`: the readiness line; `reaper`: stopping processes.
//! - `redirect`: a pod's traffic redirect to its proxy (istio-init's rules, as nf_tables over netlink).

pub mod access_format;
pub mod addons;
pub mod analyze;
pub mod api;
pub mod apps;
pub mod authz;
pub mod backend;
pub mod ca;
pub mod cel;
pub mod cli;
pub mod control_plane;
pub mod dashboard;
pub mod duration;
pub mod env;
pub mod graph;
pub mod jwt;
pub mod labs;
pub mod load;
pub mod net;
pub mod normalize;
pub mod proxy;
pub mod ready;
pub mod reaper;
pub mod redirect;
pub mod registry;
pub mod resources;
pub mod samples;
pub mod shutdown;
pub mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod trace;
pub mod translate;
pub mod uri;
pub mod validate;
