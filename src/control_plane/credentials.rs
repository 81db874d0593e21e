//! Who a proxy is: the credential check the API runs on a proxy's bearer token, given to the
//! control plane by its backend. Locally each pod's proxy is given a token of its own when the
//! runner starts it (`PodTokens`, which the runner issues and revokes); on Kubernetes the same
//! question goes to the API server (a TokenReview of the pod's service-account token), which is
//! why the check is asynchronous.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// The answer of a credential check: the pod (`namespace/name`) a token belongs to, if any.
pub type Owner<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

pub trait Credentials: Send + Sync {
    /// The pod a credential belongs to, if it is one.
    fn owner<'a>(&'a self, token: &'a str) -> Owner<'a>;
}

/// A random token per pod, kept in memory (a restarted control plane restarts the pods, which
/// get new ones).
#[derive(Default)]
pub struct PodTokens {
    by_token: Mutex<HashMap<String, String>>,
}

impl PodTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PodTokens {
    /// A new credential for the proxy of pod `key` (`namespace/name`); the one before stops
    /// working.
    pub fn issue(&self, key: &str) -> String {
        let token = crate::env::random_hex(32).unwrap_or_else(|_| format!("{:032x}", fastrand::u128(..)));
        let mut all = self.lock();
        all.retain(|_, pod| pod != key);
        all.insert(token.clone(), key.to_string());
        token
    }

    /// The pod a credential belongs to, if it is one.
    pub fn owner_now(&self, token: &str) -> Option<String> {
        self.lock().get(token).cloned()
    }

    /// Pod `key` is gone: its credential stops working.
    pub fn revoke(&self, key: &str) {
        self.lock().retain(|_, pod| pod != key);
    }
}

impl Credentials for PodTokens {
    fn owner<'a>(&'a self, token: &'a str) -> Owner<'a> {
        Box::pin(std::future::ready(self.owner_now(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_holds_one_credential_and_loses_it_when_it_goes() {
        let tokens = PodTokens::default();
        let first = tokens.issue("default/httpbin-1");
        let second = tokens.issue("default/httpbin-1");
        assert_ne!(first, second);
        assert_eq!(tokens.owner_now(&first), None, "a new credential replaces the old one");
        assert_eq!(tokens.owner_now(&second).as_deref(), Some("default/httpbin-1"));
        let other = tokens.issue("default/sleep-1");
        tokens.revoke("default/httpbin-1");
        assert_eq!(tokens.owner_now(&second), None);
        assert_eq!(tokens.owner_now(&other).as_deref(), Some("default/sleep-1"));
        assert_eq!(tokens.owner_now(""), None);
        // The check the API runs answers the same.
        let check: &dyn Credentials = &tokens;
        let owner = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(check.owner(&other));
        assert_eq!(owner.as_deref(), Some("default/sleep-1"));
    }
}
