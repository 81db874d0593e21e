//! Kubernetes object metadata shared by every kind: `ObjectMeta`, `LabelSelector`, `IntOrString`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `metadata` of a Kubernetes object.
///
/// Accepts the server-populated fields users paste from `kubectl get -o yaml`
/// (uid, resourceVersion, generation, creationTimestamp, managedFields, ...);
/// meshrig keeps them but never compares them (see `Resource::same_content`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Object name; required by the parser (`generateName` alone is not enough for `apply`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Namespace; `None` means "the default namespace of the command" for namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    /// Server-side-apply bookkeeping, kept opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_fields: Option<serde_json::Value>,
    /// Kept opaque: meshrig does no garbage collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_references: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

impl ObjectMeta {
    /// Metadata with just a name (handy in tests and generated objects).
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta { name: name.into(), ..ObjectMeta::default() }
    }
}

/// A Kubernetes label selector. Only `matchLabels` is enforced by meshrig;
/// `matchExpressions` is parsed and reported as not enforced.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry (`In`, `NotIn`, `Exists`, `DoesNotExist`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A command-line label selector, as `kubectl get -l` reads it: comma-separated `k=v`, `k==v`,
/// `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`; every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        // Split on commas outside parentheses.
        let (mut depth, mut start) = (0usize, 0usize);
        let mut parts = Vec::new();
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        let key_ok = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        let bad = |p: &str| {
            format!("label selector {s:?}: cannot read {p:?}; use key=value, key!=value, key, !key or key in (a,b)")
        };
        for part in parts.into_iter().map(str::trim) {
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let req = if let Some(k) = part.strip_prefix('!') {
                key_ok(k.trim()).then(|| Requirement::NotExists(k.trim().into()))
            } else if let Some((k, v)) = part.split_once("!=") {
                key_ok(k.trim()).then(|| Requirement::NotEquals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                key_ok(k.trim()).then(|| Requirement::Equals(k.trim().into(), v.trim().into()))
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                set(rest).filter(|_| key_ok(k.trim())).map(|v| Requirement::NotIn(k.trim().into(), v))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                set(rest).filter(|_| key_ok(k.trim())).map(|v| Requirement::In(k.trim().into(), v))
            } else {
                key_ok(part).then(|| Requirement::Exists(part.into()))
            };
            reqs.push(req.ok_or_else(|| bad(part))?);
        }
        Ok(Selector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Kubernetes `IntOrString` (e.g. a Service `targetPort: 8080` or `targetPort: http`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Selector;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_read_as_kubectl_reads_them() {
        let reviews_v1 = labels(&[("app", "reviews"), ("version", "v1")]);
        let ratings = labels(&[("app", "ratings")]);
        let sel = |s: &str| Selector::parse(s).unwrap();
        assert!(sel("app=reviews").matches(&reviews_v1));
        assert!(!sel("app=reviews").matches(&ratings));
        assert!(sel("app==reviews,version=v1").matches(&reviews_v1));
        assert!(sel("app!=reviews").matches(&ratings));
        assert!(sel("version").matches(&reviews_v1) && !sel("version").matches(&ratings));
        assert!(sel("!version").matches(&ratings));
        assert!(sel("version in (v1, v2)").matches(&reviews_v1));
        assert!(sel("app notin (reviews)").matches(&ratings) && !sel("app notin (reviews)").matches(&reviews_v1));
        assert!(Selector::parse("app in v1").unwrap_err().contains("cannot read"));
        assert!(Selector::parse("=x").is_err());
    }
}
