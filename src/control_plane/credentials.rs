//! Who a proxy is: the credential check the API runs on a proxy's bearer token. Locally each
//! pod's proxy is given a token of its own when the runner starts it (`PodTokens`); on
//! Kubernetes the same question goes to the API server (a TokenReview of the pod's service
//! account token) behind the same trait.

use std::collections::HashMap;
use std::sync::Mutex;

pub trait Credentials: Send + Sync {
    /// A new credential for the proxy of pod `key` (`namespace/name`); the one before stops
    /// working.
    fn issue(&self, key: &str) -> String;
    /// The pod a credential belongs to, if it is one.
    fn owner(&self, token: &str) -> Option<String>;
    /// Pod `key` is gone: its credential stops working.
    fn revoke(&self, key: &str);
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

impl Credentials for PodTokens {
    fn issue(&self, key: &str) -> String {
        let token = crate::env::random_hex(32).unwrap_or_else(|_| format!("{:032x}", fastrand::u128(..)));
        let mut all = self.lock();
        all.retain(|_, pod| pod != key);
        all.insert(token.clone(), key.to_string());
        token
    }

    fn owner(&self, token: &str) -> Option<String> {
        self.lock().get(token).cloned()
    }

    fn revoke(&self, key: &str) {
        self.lock().retain(|_, pod| pod != key);
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
        assert_eq!(tokens.owner(&first), None, "a new credential replaces the old one");
        assert_eq!(tokens.owner(&second).as_deref(), Some("default/httpbin-1"));
        let other = tokens.issue("default/sleep-1");
        tokens.revoke("default/httpbin-1");
        assert_eq!(tokens.owner(&second), None);
        assert_eq!(tokens.owner(&other).as_deref(), Some("default/sleep-1"));
        assert_eq!(tokens.owner(""), None);
    }
}
