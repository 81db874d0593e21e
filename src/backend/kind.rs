//! The kind backend: a kind cluster per environment, meshrig's image in it, the control plane
//! as `istiod`, injection and transparent capture, the ingress gateway on the environment's
//! ports. Built so far: what `up --backend kind` would create and apply, rendered as data
//! (`render.rs`: the kind config and the manifests from `manifests/kind/`, the CRDs from the
//! kinds table), and injection (`inject.rs`, `meshrig kube-inject`).

pub mod cluster;
pub mod image;
pub mod inject;
pub mod pods;
pub mod preflight;
pub mod render;
pub mod schema;
#[cfg(test)]
pub(crate) mod tests;
pub mod webhook;

/// The node image kind v0.27.0 was released with (Kubernetes v1.32.2), pinned by digest.
pub const NODE_IMAGE: &str =
    "kindest/node:v1.32.2@sha256:f226345927d7e348497136874b6d207e0b32cc52154ad8323129352923a3142f";

/// The UID the proxy runs as; its own traffic is never redirected (Istio's 1337).
pub const PROXY_UID: u32 = 1337;

/// Where the control plane's API listens in its pod, and its Service port.
pub const API_PORT: u16 = 15010;
/// Where the control plane serves its admission webhooks (Service port 443).
pub const WEBHOOK_PORT: u16 = 15017;
/// The projected ServiceAccount token a proxy authenticates with (audience `istio-ca`).
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_PATH: &str = "/var/run/secrets/tokens/istio-token";
/// The proxy's own ports on a pod (stats, health, merged metrics): inbound capture never takes
/// them and they are never an app's (Istio's default exclusions).
pub const PROXY_PORTS: [u16; 3] = [15090, 15021, 15020];

/// `PROXY_PORTS` as istio-init's `--exclude-inbound-ports` takes them.
pub fn excluded_inbound() -> String {
    PROXY_PORTS.map(|p| p.to_string()).join(",")
}

/// The kind cluster of environment `env`.
pub fn cluster_name(env: &str) -> String {
    format!("meshrig-{env}")
}

/// The image tag of this binary: `docker.io/library/meshrig:VERSION-HASH`, the hash of the
/// binary's bytes, so a rebuilt binary is a new image and `kind load` never serves a stale one.
pub fn image_tag(binary: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, binary);
    let hex: String = digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("docker.io/library/meshrig:{}-{hex}", env!("CARGO_PKG_VERSION"))
}

/// What sample images run as (a setting of the environment, `up --sample-images`).
pub use crate::env::SampleImages;
