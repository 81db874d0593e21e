//! VirtualService delegation (`http[].delegate`): a root rule hands its matches to the rules of
//! a delegate VirtualService (one without hosts). As istiod merges them: each delegate rule
//! becomes a rule whose matches are the delegate's narrowed by the root's (a delegate match
//! must fit inside some root match, or the rule is dropped), and whose unset fields come from
//! the root rule. Short host names in the delegate resolve in the delegate's namespace.

use std::collections::BTreeMap;

use crate::resources::networking::{Destination, HttpMatchRequest, HttpRoute, StringMatch, VirtualService};

use super::{fqdn, ns};

/// `vs` with every delegating rule replaced by the merged rules of its delegate (`all` is
/// every VirtualService). A delegate that does not exist contributes no rules.
pub fn expand(vs: &VirtualService, all: &[VirtualService]) -> VirtualService {
    if !vs.spec.http.iter().any(|r| r.delegate.is_some()) {
        return vs.clone();
    }
    let root_ns = ns(&vs.metadata.namespace);
    let mut out = vs.clone();
    out.spec.http = Vec::new();
    for rule in &vs.spec.http {
        let Some(d) = &rule.delegate else {
            out.spec.http.push(rule.clone());
            continue;
        };
        let delegate_ns = d.namespace.as_deref().unwrap_or(root_ns);
        let Some(delegate) = all
            .iter()
            .find(|c| c.metadata.name == d.name && ns(&c.metadata.namespace) == delegate_ns && c.spec.hosts.is_empty())
        else {
            continue;
        };
        for sub in &delegate.spec.http {
            if sub.delegate.is_some() {
                continue; // Only one level of delegation.
            }
            if let Some(merged) = merge_route(rule, &qualified(sub, delegate_ns)) {
                out.spec.http.push(merged);
            }
        }
    }
    out
}

/// A delegate rule with its destination hosts made FQDNs in the delegate's namespace.
fn qualified(rule: &HttpRoute, delegate_ns: &str) -> HttpRoute {
    let mut r = rule.clone();
    let fix = |d: &mut Destination| d.host = fqdn(&d.host, delegate_ns);
    r.route.iter_mut().for_each(|w| fix(&mut w.destination));
    r.mirror.iter_mut().for_each(fix);
    r.mirrors.iter_mut().for_each(|m| fix(&mut m.destination));
    r
}

/// The delegate rule under the root rule, or None when their matches conflict.
pub fn merge_route(root: &HttpRoute, delegate: &HttpRoute) -> Option<HttpRoute> {
    let mut out = delegate.clone();
    out.r#match = merge_matches(&root.r#match, &delegate.r#match)?;
    out.name = match (&root.name, &delegate.name) {
        (Some(r), Some(d)) => Some(format!("{r}-{d}")),
        (r, d) => d.clone().or_else(|| r.clone()),
    };
    macro_rules! inherit {
        ($($field:ident),*) => {
            $(if out.$field.is_none() {
                out.$field = root.$field.clone();
            })*
        };
    }
    inherit!(
        rewrite,
        direct_response,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        headers
    );
    if out.mirrors.is_empty() {
        out.mirrors = root.mirrors.clone();
    }
    out.delegate = None;
    Some(out)
}

/// Each delegate match narrowed by every root match it fits in; None when one fits in none.
fn merge_matches(root: &[HttpMatchRequest], delegate: &[HttpMatchRequest]) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in delegate {
        let fits: Vec<&HttpMatchRequest> = root.iter().filter(|r| !conflicts(r, leaf)).collect();
        if fits.is_empty() {
            return None;
        }
        out.extend(fits.into_iter().map(|r| merge_match(r, leaf)));
    }
    Some(out)
}

fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.clone().or_else(|| r.clone()),
    };
    out.uri = leaf.uri.clone().or_else(|| root.uri.clone());
    out.scheme = leaf.scheme.clone().or_else(|| root.scheme.clone());
    out.method = leaf.method.clone().or_else(|| root.method.clone());
    out.authority = leaf.authority.clone().or_else(|| root.authority.clone());
    out.headers = merged(&root.headers, &leaf.headers);
    out.without_headers = merged(&root.without_headers, &leaf.without_headers);
    out.query_params = merged(&root.query_params, &leaf.query_params);
    out.source_labels = merged(&root.source_labels, &leaf.source_labels);
    out.port = leaf.port.or(root.port);
    out.source_namespace = leaf.source_namespace.clone().or_else(|| root.source_namespace.clone());
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out.stat_prefix = leaf.stat_prefix.clone().or_else(|| root.stat_prefix.clone());
    out
}

/// The root's entries, overridden by the leaf's.
fn merged<V: Clone>(root: &BTreeMap<String, V>, leaf: &BTreeMap<String, V>) -> BTreeMap<String, V> {
    let mut out = root.clone();
    out.extend(leaf.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// Does the leaf ask for something outside the root match?
fn conflicts(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [(&root.uri, &leaf.uri), (&root.scheme, &leaf.scheme), (&root.method, &leaf.method)];
    if pairs
        .into_iter()
        .chain([(&root.authority, &leaf.authority)])
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let maps = [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ];
    if maps.into_iter().any(|(r, l)| l.iter().any(|(k, v)| string_conflict(r.get(k), Some(v)))) {
        return true;
    }
    root.ignore_uri_case != leaf.ignore_uri_case
        || matches!((root.port, leaf.port), (Some(r), Some(l)) if r != l)
        || root.source_namespace.as_ref().is_some_and(|r| leaf.source_namespace.as_ref() != Some(r))
        || leaf.source_labels.iter().any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
        || (!root.gateways.is_empty()
            && !leaf.gateways.is_empty()
            && leaf.gateways.iter().any(|g| !root.gateways.contains(g)))
}

/// istiod's rule for one string match: exact fits only the same exact, prefix fits a longer
/// prefix or an exact under it, regex fits only an unset leaf.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else { return false };
    if root.regex.is_some() || leaf.regex.is_some() {
        return true;
    }
    if let Some(exact) = &root.exact {
        return leaf.prefix.is_some() || leaf.exact.as_ref() != Some(exact);
    }
    if let Some(prefix) = &root.prefix {
        if let Some(p) = &leaf.prefix {
            return !p.starts_with(prefix.as_str());
        }
        if let Some(e) = &leaf.exact {
            return !e.starts_with(prefix.as_str());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parse::parse_documents;
    use crate::resources::Resource;

    fn vss(yaml: &str) -> Vec<VirtualService> {
        parse_documents("vs.yaml", yaml)
            .unwrap()
            .into_iter()
            .filter_map(|d| match d.resource {
                Resource::VirtualService(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    const YAML: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [shop]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    timeout: 3s
    delegate: {name: api, namespace: team}
  - name: rest
    route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: team}
spec:
  http:
  - name: v2
    match: [{uri: {prefix: /api/v2}, headers: {x-beta: {exact: 'yes'}}}]
    route: [{destination: {host: api-v2}}]
  - name: outside
    match: [{uri: {prefix: /other}}]
    route: [{destination: {host: nowhere}}]
  - name: all
    timeout: 1s
    route: [{destination: {host: api}}]
";

    #[test]
    fn delegate_rules_are_narrowed_by_the_root_and_inherit_what_they_leave_unset() {
        let all = vss(YAML);
        let out = expand(&all[0], &all);
        let names: Vec<&str> = out.spec.http.iter().map(|r| r.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["api-v2", "api-all", "rest"], "the conflicting delegate rule is dropped");
        let v2 = &out.spec.http[0];
        assert_eq!(v2.r#match[0].uri.as_ref().unwrap().prefix.as_deref(), Some("/api/v2"));
        assert_eq!(v2.r#match[0].headers["x-beta"].exact.as_deref(), Some("yes"));
        assert_eq!(v2.timeout.as_deref(), Some("3s"), "unset fields come from the root rule");
        assert_eq!(
            v2.route[0].destination.host, "api-v2.team.svc.cluster.local",
            "short names in the delegate's namespace"
        );
        let rest = &out.spec.http[1];
        assert_eq!(rest.r#match[0].uri.as_ref().unwrap().prefix.as_deref(), Some("/api"), "no match takes the root's");
        assert_eq!(rest.timeout.as_deref(), Some("1s"), "the delegate's own fields win");
        assert!(out.spec.http.iter().all(|r| r.delegate.is_none()));
    }

    #[test]
    fn string_matches_fit_as_istiod_decides() {
        let m = |e: Option<&str>, p: Option<&str>, r: Option<&str>| StringMatch {
            exact: e.map(str::to_string),
            prefix: p.map(str::to_string),
            regex: r.map(str::to_string),
        };
        let prefix = m(None, Some("/a"), None);
        assert!(!string_conflict(Some(&prefix), Some(&m(None, Some("/a/b"), None))));
        assert!(!string_conflict(Some(&prefix), Some(&m(Some("/a/x"), None, None))));
        assert!(string_conflict(Some(&prefix), Some(&m(None, Some("/b"), None))));
        assert!(string_conflict(Some(&m(Some("/a"), None, None)), Some(&prefix)));
        assert!(string_conflict(Some(&m(None, None, Some("/a.*"))), Some(&prefix)));
        assert!(!string_conflict(None, Some(&prefix)));
        // A missing delegate contributes nothing.
        let mut all = vss(YAML);
        all.truncate(1);
        let out = expand(&all[0], &all);
        assert_eq!(out.spec.http.len(), 1);
    }
}
