//! RequestAuthentication `jwksUri`: the control plane fetches each key set and inlines it in
//! the proxies' JWT rules, as istiod does (proxies never fetch keys themselves). A URI whose
//! host is a Service in the mesh (`name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`) is
//! fetched from one of its ready pods directly, so STRICT mTLS does not stand in the way;
//! any other host is fetched over the network (https with the system's roots).
//!
//! Keys are fetched when a URI first appears, again every 20 minutes (istiod's default), and
//! a failed fetch is retried when the mesh changes or after 10 seconds. Until a fetch works,
//! tokens of that issuer fail verification (istiod inlines a key set that verifies nothing);
//! a failed refresh keeps the last keys.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

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
    let path = parsed.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let stream = match world.mesh_app_addresses(&host, port) {
        Some(addrs) => {
            if https {
                return Err(format!(
                    "{host} is a Service in the mesh: use http:// (the control plane fetches from its pods directly)"
                ));
            }
            let addr = addrs.first().ok_or_else(|| format!("Service {host} port {port} has no ready pod"))?;
            TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))?
        }
        None => TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("{host}:{port}: {e}"))?,
    };
    let authority = parsed.authority().map(|a| a.to_string()).unwrap_or(host.clone());
    let (status, body) = if https {
        let tls = tls_connect(&host, stream).await?;
        get(tls, &authority, &path).await?
    } else {
        get(stream, &authority, &path).await?
    };
    if status != StatusCode::OK {
        return Err(format!("answered {status}"));
    }
    let text = String::from_utf8(body.to_vec()).map_err(|_| "the answer is not text".to_string())?;
    crate::jwt::check_jwks(&text)?;
    Ok(text)
}

async fn get<S>(stream: S, authority: &str, path: &str) -> Result<(StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = |e: &dyn std::fmt::Display| e.to_string();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| io(&e))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "meshrig-control-plane")
        .body(Empty::<Bytes>::new())
        .map_err(|e| io(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| io(&e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| io(&e))?.to_bytes();
    Ok((status, body))
}

async fn tls_connect(host: &str, stream: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(
            "no trusted root certificates on this machine (install ca-certificates, or set SSL_CERT_FILE)".into()
        );
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.map_err(|e| format!("TLS: {e}"))
}

/// The fetched key sets by URI (the ones that worked), for translation.
pub fn texts(all: &BTreeMap<String, Fetched>) -> BTreeMap<String, String> {
    all.iter().filter_map(|(u, f)| Some((u.clone(), f.text.clone()?))).collect()
}
