//! Hints that look at the learner's resources before guessing (pure): config applied to the wrong
//! namespace, an AuthorizationPolicy behind a 403 in a lab that teaches none, a route to a subset
//! no DestinationRule defines. Each says what it found and what to do.

use std::collections::BTreeSet;

use super::Lab;
use crate::resources::{Kind, Resource};

/// The namespaces a lab's config belongs in: its own, `istio-system`, and those its files name.
fn lab_namespaces(lab: &Lab, objects: &[Resource]) -> BTreeSet<String> {
    let mut out = BTreeSet::from([lab.spec.baseline.namespace.clone(), "istio-system".to_string()]);
    out.extend(objects.iter().map(|r| r.key().namespace));
    out
}

/// What the learner's resources say about a failed check that saw `saw`; the mesh's config
/// objects are `resources`. Most telling first.
pub fn advise(lab: &Lab, saw: &str, resources: &[Resource]) -> Vec<String> {
    let mut out = Vec::new();
    let objects = super::baseline::lab_objects(lab);
    let home = lab_namespaces(lab, &objects);
    let lab_ns = &lab.spec.baseline.namespace;
    for r in resources.iter().filter(|r| crate::labs::baseline::is_mesh_config(r.kind())) {
        let key = r.key();
        if !key.namespace.is_empty() && !home.contains(&key.namespace) {
            out.push(format!(
                "your {} {:?} is in namespace {:?}, where this lab looks at nothing: this lab's config lives in \
                 {lab_ns:?}. Apply it with `-n {lab_ns}` (or set `metadata.namespace: {lab_ns}`), and delete the \
                 stray one: `meshrig delete {} {} -n {}`",
                key.kind,
                key.name,
                key.namespace,
                key.kind.short_name(),
                key.name,
                key.namespace
            ));
        }
    }
    if saw.contains("403") && !objects.iter().any(|r| r.kind() == Kind::AuthorizationPolicy) {
        let policies: Vec<String> = resources
            .iter()
            .filter(|r| r.kind() == Kind::AuthorizationPolicy)
            .map(|r| format!("{}/{}", r.key().namespace, r.key().name))
            .collect();
        if !policies.is_empty() {
            out.push(format!(
                "the 403 comes from an authorization policy, not from the app: {} in force, and this lab uses none. \
                 `meshrig get authorizationpolicies -A` shows them; delete them (or `meshrig lab reset`)",
                if policies.len() == 1 {
                    format!("{} is", policies[0])
                } else {
                    format!("{} are", policies.join(", "))
                }
            ));
        }
    }
    out.extend(missing_subsets(resources));
    out
}

/// Routes to a subset no DestinationRule for that host defines (Istio answers 503 `no healthy
/// upstream`, or a 500 at the gateway).
fn missing_subsets(resources: &[Resource]) -> Vec<String> {
    let short = |host: &str, ns: &str| -> String {
        let h = host.strip_suffix(".svc.cluster.local").unwrap_or(host);
        match h.split_once('.') {
            Some((name, n)) => format!("{name}.{n}"),
            None => format!("{h}.{ns}"),
        }
    };
    let mut defined = BTreeSet::new();
    for r in resources {
        if let Resource::DestinationRule(dr) = r {
            let ns = dr.metadata.namespace.as_deref().unwrap_or("default");
            for s in &dr.spec.subsets {
                defined.insert((short(&dr.spec.host, ns), s.name.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for r in resources {
        let Resource::VirtualService(vs) = r else { continue };
        let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
        for route in vs.spec.http.iter().flat_map(|h| &h.route) {
            let d = &route.destination;
            let Some(subset) = &d.subset else { continue };
            let host = short(&d.host, ns);
            if !defined.contains(&(host.clone(), subset.clone())) {
                let line = format!(
                    "VirtualService {ns}/{} routes to subset {subset:?} of {}, but no DestinationRule defines that \
                     subset, so those requests fail: add it to the DestinationRule for {} (`meshrig get dr -A` shows them)",
                    vs.metadata.name, d.host, d.host
                );
                if !out.contains(&line) {
                    out.push(line);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<Resource> {
        crate::resources::parse_documents("t.yaml", yaml).unwrap().into_iter().map(|d| d.resource).collect()
    }

    #[test]
    fn a_route_in_the_wrong_namespace_is_named_with_the_fix() {
        let lab = crate::labs::find("2").unwrap();
        let rs = parse(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: foo}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}\n",
        );
        let a = advise(&lab, "status 200", &rs);
        assert!(
            a[0].contains("your VirtualService \"reviews\" is in namespace \"foo\"") && a[0].contains("-n default"),
            "{a:?}"
        );
        // Lab 06's namespaces are its own.
        let lab6 = crate::labs::find("6").unwrap();
        let rs = parse("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}}\n");
        assert!(advise(&lab6, "status 200", &rs).is_empty());
    }

    #[test]
    fn a_403_in_a_lab_without_policies_names_the_policy() {
        let lab = crate::labs::find("8").unwrap();
        let rs = parse("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: default}\nspec: {}\n");
        let a = advise(&lab, "status 403: \"RBAC: access denied\"", &rs);
        assert!(a.iter().any(|l| l.contains("not from the app: default/allow-nothing is in force")), "{a:?}");
        let lab7 = crate::labs::find("7").unwrap();
        assert!(advise(&lab7, "status 403", &rs).is_empty(), "lab 07 teaches policies: its own hints speak");
    }

    #[test]
    fn a_subset_without_a_destination_rule_is_named() {
        let lab = crate::labs::find("2").unwrap();
        let rs = parse(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}\n",
        );
        let a = advise(&lab, "status 200", &rs);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].contains("subset \"v2\" of reviews, but no DestinationRule defines"), "{a:?}");
    }
}
