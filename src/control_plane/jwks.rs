//! RequestAuthentication `jwksUri`: the control plane fetches each key set and inlines it in
//! the proxies' JWT rules, as istiod does (proxies never fetch keys themselves). A URI whose
//! host is a Service in the mesh (`name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`) is
//! fetched from one of its ready pods directly, so STRICT mTLS does not stand in the way;
//! any other host is fetched over the network (https with the platform's trusted roots).
//!
//! Keys are fetched when a URI first appears, again every 20 minutes (istiod's default), and
//! a failed fetch is retried when the mesh changes or after 10 seconds. Until a fetch works,
//! tokens of that issuer fail verification (istiod inlines a key set that verifies nothing);
//! a failed refresh keeps the last keys.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::control_plane::state::State;
use crate::net::log;
use crate::translate::World;

/// How often keys that were fetched are fetched again (istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`).
const REFRESH: Duration = Duration::from_secs(20 * 60);
/// How soon a failed fetch is tried again when nothing in the mesh changes.
const RETRY: Duration = Duration::from_secs(10);
/// Largest key set read.
const MAX_BODY: usize = 1 << 20;

/// What is known of one `jwksUri`.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The last key set that was fetched and parsed.
    pub text: Option<String>,
    /// The last attempt's error, if it failed.
    pub error: Option<String>,
    /// When the last attempt ended, and the config version it saw.
    pub at: Instant,
    pub at_counter: u64,
}

impl Fetched {
    /// When it should be fetched again (a failed one also when the mesh changes).
    fn due(&self, counter: u64) -> Instant {
        match (&self.error, &self.text) {
            (None, _) => self.at + REFRESH,
            (Some(_), _) if self.at_counter < counter => self.at,
            (Some(_), _) => self.at + RETRY,
        }
    }
}

/// Keeps every `jwksUri` of the applied RequestAuthentications fetched.
pub async fn run(state: Arc<State>) {
    let mut changes = state.changes.subscribe();
    loop {
        let view = state.view();
        let counter = view.version.counter;
        let wanted = view.world.jwks_uris();
        let now = Instant::now();
        let known = state.jwks_retain(&wanted);
        for (uri, timeout) in &wanted {
            if known.get(uri).is_some_and(|f| f.due(counter) > now) {
                continue;
            }
            let result = match tokio::time::timeout(*timeout, fetch(&view.world, uri)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {timeout:?} (RequestAuthentication `timeout`)")),
            };
            match &result {
                Ok(_) => log(&format!("jwks: fetched {uri}")),
                Err(e) => log(&format!("jwks: {uri}: {e}; tokens of its issuer fail verification until it is fetched")),
            }
            state.record_jwks(uri, result, counter);
        }
        let next = state.jwks_retain(&wanted).values().map(|f| f.due(counter)).min();
        let wait =
            next.map_or(REFRESH, |t| t.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)));
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The key set at `uri`: `200` with a JWKS that parses.
pub async fn fetch(world: &World, uri: &str) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("not a URI: {e}"))?;
    let https = match parsed.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("only http and https URIs are fetched".into()),
    };
    let host = parsed.host().ok_or("the URI has no host")?.to_string();
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    // A Service in the mesh is reached at one of its pods, never through a proxy; anything else
    // through the network as the environment says (an `HTTPS_PROXY` included). Redirects are
    // followed, as istiod's Go client does.
    let client = reqwest::Client::builder().user_agent("meshrig-control-plane").http1_only();
    let mut url = uri.to_string();
    let mut authority = None;
    let client = if let Some(addrs) = world.mesh_app_addresses(&host, port) {
        if https {
            return Err(format!(
                "{host} is a Service in the mesh: use http:// (the control plane fetches from its pods directly)"
            ));
        }
        let addr = addrs.first().ok_or_else(|| format!("Service {host} port {port} has no ready pod"))?;
        // The pod's own address (the port a URL names would override a resolved one).
        url = format!("http://{addr}{}", parsed.path_and_query().map_or("/", |p| p.as_str()));
        authority = parsed.authority().map(|a| a.to_string());
        client.no_proxy()
    } else {
        client
    };
    let client = client.build().map_err(|e| crate::net::error_chain(&e))?;
    let fail = |e: reqwest::Error| crate::net::error_chain(&e);
    let mut req = client.get(url);
    if let Some(authority) = authority {
        req = req.header(http::header::HOST, authority);
    }
    let mut resp = req.send().await.map_err(fail)?;
    if resp.status() != StatusCode::OK {
        return Err(format!("answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fail)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the key set is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| "the answer is not text".to_string())?;
    crate::jwt::check_jwks(&text)?;
    Ok(text)
}

/// The fetched key sets by URI (the ones that worked), for translation.
pub fn texts(all: &BTreeMap<String, Fetched>) -> BTreeMap<String, String> {
    all.iter().filter_map(|(u, f)| Some((u.clone(), f.text.clone()?))).collect()
}
