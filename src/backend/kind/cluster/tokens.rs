//! Who a proxy is on Kubernetes: its projected ServiceAccount token (audience `istio-ca`), sent
//! to the API server as a TokenReview, as istiod checks it. The answer names the pod the token
//! is bound to (`authentication.kubernetes.io/pod-name`) and its ServiceAccount; a token that
//! is not bound to a pod, or is for another audience, is nobody. Answers are kept for a minute
//! so a proxy's snapshot, certificate and span requests cost one review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

use crate::control_plane::credentials::{Credentials, Owner};
use crate::net;

/// The audience the proxy's token is projected for (Istio's).
pub const AUDIENCE: &str = "istio-ca";
/// How long an answer is kept.
const KEEP: Duration = Duration::from_secs(60);
/// The most answers kept (tokens are per pod and rotate hourly).
const MOST: usize = 10_000;

pub struct TokenReviews {
    client: kube::Client,
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl TokenReviews {
    pub fn new(client: kube::Client) -> TokenReviews {
        TokenReviews { client, cache: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, token: &str) -> Option<Option<String>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(token).filter(|(_, at)| at.elapsed() < KEEP).map(|(o, _)| o.clone())
    }

    async fn review(&self, token: &str) -> Result<Option<String>, kube::Error> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![AUDIENCE.to_string()]) },
            ..TokenReview::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        Ok(answer.status.as_ref().and_then(owner))
    }
}

/// The pod (`namespace/name`) a TokenReview's answer says the token is bound to. Pure.
pub fn owner(status: &TokenReviewStatus) -> Option<String> {
    if status.authenticated != Some(true) {
        return None;
    }
    if let Some(audiences) = &status.audiences {
        if !audiences.iter().any(|a| a == AUDIENCE) {
            return None;
        }
    }
    let user = status.user.as_ref()?;
    let username = user.username.as_deref()?;
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, _sa) = rest.split_once(':')?;
    let pod = user.extra.as_ref()?.get("authentication.kubernetes.io/pod-name")?.first()?;
    Some(format!("{namespace}/{pod}"))
}

impl Credentials for TokenReviews {
    fn owner<'a>(&'a self, token: &'a str) -> Owner<'a> {
        Box::pin(async move {
            if token.is_empty() {
                return None;
            }
            if let Some(known) = self.cached(token) {
                return known;
            }
            match self.review(token).await {
                Ok(owner) => {
                    let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    if cache.len() >= MOST {
                        cache.retain(|_, (_, at)| at.elapsed() < KEEP);
                    }
                    if cache.len() < MOST {
                        cache.insert(token.to_string(), (owner.clone(), Instant::now()));
                    }
                    owner
                }
                // Not known either way: refused now, asked again next time.
                Err(e) => {
                    net::log(&format!("credentials: a TokenReview failed: {e}"));
                    None
                }
            }
        })
    }
}
