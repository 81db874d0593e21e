//! `meshrig analyze`, as `istioctl analyze` does it (pure): configuration mistakes found
//! before a request does, with istioctl's codes, levels and messages (reference §10).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::resources::{Kind, Resource};
use crate::translate::fqdn;

mod telemetry;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        })
    }
}

/// One finding, about one resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Message {
    pub level: Level,
    pub code: &'static str,
    pub kind: String,
    /// Empty for cluster-scoped resources.
    pub namespace: String,
    pub name: String,
    /// `file:line` when the resource came from a file.
    pub origin: Option<String>,
    pub text: String,
}

impl Message {
    /// `VirtualService default/httpbin` (or `Namespace default`), as istioctl names resources.
    pub fn resource(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// istioctl's line: `Error [IST0101] (VirtualService default/httpbin file.yaml:12) Referenced ...`.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.origin.as_ref().map(|o| format!(" {o}")).unwrap_or_default();
        write!(f, "{} [{}] ({}{origin}) {}", self.level, self.code, self.resource(), self.text)
    }
}

/// A resource to analyze and where it came from.
pub struct Item {
    pub resource: Resource,
    pub origin: Option<String>,
    /// Errors schema validation found (files given to `analyze -f` only; applied resources passed).
    pub invalid: Vec<String>,
}

/// A running pod, as far as the analyzers care.
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub sidecar: bool,
}

/// A finding about one item.
fn message(item: &Item, level: Level, code: &'static str, text: String) -> Message {
    let r = &item.resource;
    Message {
        level,
        code,
        kind: r.kind().as_str().to_string(),
        namespace: if r.kind().namespaced() { r.key().namespace } else { String::new() },
        name: r.name().to_string(),
        origin: item.origin.clone(),
        text,
    }
}

/// Every finding about `items` and `pods`, Errors first.
pub fn analyze(items: &[Item], pods: &[Pod]) -> Vec<Message> {
    let mut out = Vec::new();
    let say =
        |out: &mut Vec<Message>, item: &Item, level, code, text: String| out.push(message(item, level, code, text));
    telemetry::analyze(items, pods, &mut out);
    let registry = registry(items);
    let gateways: BTreeSet<(String, String)> = items
        .iter()
        .filter_map(|i| match &i.resource {
            Resource::Gateway(g) => Some((ns(&g.metadata.namespace).to_string(), g.metadata.name.clone())),
            _ => None,
        })
        .collect();
    let subsets = subsets(items);
    let mut mesh_hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in items {
        for e in &item.invalid {
            say(&mut out, item, Level::Error, "IST0106", format!("Schema validation error: {e}"));
        }
        match &item.resource {
            Resource::VirtualService(vs) => {
                let vs_ns = ns(&vs.metadata.namespace);
                for g in vs.spec.gateways.iter().filter(|g| g.as_str() != "mesh") {
                    let key = match g.split_once('/') {
                        Some((n, name)) => (n.to_string(), name.to_string()),
                        None => (vs_ns.to_string(), g.clone()),
                    };
                    if !gateways.contains(&key) {
                        say(&mut out, item, Level::Error, "IST0101", format!("Referenced gateway not found: {g:?}"));
                    }
                }
                let mut destinations = Vec::new();
                for r in &vs.spec.http {
                    destinations.extend(r.route.iter().map(|d| ("host", &d.destination)));
                    destinations.extend(r.mirror.iter().map(|d| ("mirror host", d)));
                    destinations.extend(r.mirrors.iter().map(|m| ("mirror host", &m.destination)));
                }
                for r in &vs.spec.tcp {
                    destinations.extend(r.route.iter().map(|d| ("host", &d.destination)));
                }
                for r in &vs.spec.tls {
                    destinations.extend(r.route.iter().map(|d| ("host", &d.destination)));
                }
                let mut said = BTreeSet::new();
                for (what, d) in destinations {
                    let host = fqdn(&d.host, vs_ns);
                    let text = if !known(&registry, &host) && !d.host.contains('*') {
                        format!("Referenced {what} not found: {:?}", d.host)
                    } else if let Some(s) = &d.subset {
                        if subsets.get(&host).is_some_and(|names| names.contains(s)) {
                            continue;
                        }
                        let what = if what == "host" {
                            "host+subset in destinationrule"
                        } else {
                            "mirror+subset in destinationrule"
                        };
                        format!("Referenced {what} not found: \"{}+{s}\"", d.host)
                    } else {
                        continue;
                    };
                    if said.insert(text.clone()) {
                        say(&mut out, item, Level::Error, "IST0101", text);
                    }
                }
                if vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh") {
                    for h in &vs.spec.hosts {
                        mesh_hosts.entry(fqdn(h, vs_ns)).or_default().push(format!("{vs_ns}/{}", vs.metadata.name));
                    }
                }
            }
            Resource::Gateway(g) => {
                // istioctl looks for the Secret in the namespace of the gateway's pods (the
                // Gateway's own when none is selected).
                let tls = g.spec.servers.iter().filter_map(|sv| sv.tls.as_ref());
                let names: BTreeSet<&String> =
                    tls.flat_map(|t| t.credential_name.iter().chain(&t.credential_names)).collect();
                let gw_ns = item.resource.key().namespace;
                let mut where_: BTreeSet<&str> = pods
                    .iter()
                    .filter(|p| {
                        !g.spec.selector.is_empty() && g.spec.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                    })
                    .map(|p| p.namespace.as_str())
                    .collect();
                if where_.is_empty() {
                    where_.insert(gw_ns.as_str());
                }
                let secret_exists = |name: &str| {
                    items.iter().any(|i| {
                        matches!(&i.resource, Resource::Secret(s) if s.metadata.name == name)
                            && where_.contains(i.resource.key().namespace.as_str())
                    })
                };
                for name in names.into_iter().filter(|n| !secret_exists(n)) {
                    say(
                        &mut out,
                        item,
                        Level::Error,
                        "IST0101",
                        format!("Referenced credentialName not found: {name:?}"),
                    );
                }
                let matches = g.spec.selector.is_empty()
                    || pods.iter().any(|p| g.spec.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)));
                if !matches {
                    let sel: Vec<String> = g.spec.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    say(
                        &mut out,
                        item,
                        Level::Error,
                        "IST0101",
                        format!("Referenced selector not found: {:?}", sel.join(",")),
                    );
                }
            }
            Resource::Namespace(n) => {
                let system = n.metadata.name == "istio-system" || n.metadata.name.starts_with("kube-");
                let labelled =
                    n.metadata.labels.contains_key("istio-injection") || n.metadata.labels.contains_key("istio.io/rev");
                let has_pods = pods.iter().any(|p| p.namespace == n.metadata.name);
                if !system && !labelled && has_pods {
                    let name = &n.metadata.name;
                    say(&mut out, item, Level::Info, "IST0102", format!(
                        "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {name} istio-injection=enabled' to enable it, or 'kubectl label namespace {name} istio-injection=disabled' to explicitly mark it as not needing injection."
                    ));
                }
                let injected = n.metadata.labels.get("istio-injection").map(String::as_str) == Some("enabled");
                for p in pods.iter().filter(|p| injected && p.namespace == n.metadata.name && !p.sidecar) {
                    if p.labels.get("sidecar.istio.io/inject").map(String::as_str) == Some("false") {
                        continue;
                    }
                    out.push(Message {
                        level: Level::Warning,
                        code: "IST0103",
                        kind: "Pod".into(),
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                        origin: None,
                        text: format!(
                            "The pod {}/{} is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
                            p.namespace, p.name
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    for (host, names) in mesh_hosts.iter().filter(|(_, names)| names.len() > 1) {
        let list = names.join(",");
        for item in items.iter().filter(|i| {
            i.resource.kind() == Kind::VirtualService
                && names.contains(&format!("{}/{}", i.resource.key().namespace, i.resource.name()))
        }) {
            say(&mut out, item, Level::Error, "IST0109", format!(
                "The VirtualServices {list} associated with mesh gateway define the same host {host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
            ));
        }
    }
    out.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.resource().cmp(&b.resource()))
            .then(a.code.cmp(b.code))
            .then(a.text.cmp(&b.text))
    });
    out.dedup();
    out
}

fn ns(n: &Option<String>) -> &str {
    n.as_deref().unwrap_or("default")
}

/// Service FQDNs and ServiceEntry hosts (which may be wildcards).
fn registry(items: &[Item]) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    for i in items {
        match &i.resource {
            Resource::Service(s) => {
                hosts.insert(fqdn(&s.metadata.name, ns(&s.metadata.namespace)));
            }
            Resource::ServiceEntry(se) => {
                hosts.extend(se.spec.hosts.iter().map(|h| fqdn(h, ns(&se.metadata.namespace))));
            }
            _ => {}
        }
    }
    hosts
}

fn known(registry: &BTreeSet<String>, host: &str) -> bool {
    registry.contains(host) || registry.iter().any(|h| h.strip_prefix('*').is_some_and(|suffix| host.ends_with(suffix)))
}

/// Subset names by the FQDN of the DestinationRule's host.
fn subsets(items: &[Item]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in items {
        if let Resource::DestinationRule(dr) = &i.resource {
            out.entry(fqdn(&dr.spec.host, ns(&dr.metadata.namespace)))
                .or_default()
                .extend(dr.spec.subsets.iter().map(|s| s.name.clone()));
        }
    }
    out
}

/// Only what concerns `namespace` (None: everything).
/// A file's schema errors (IST0106) are always kept: `analyze -f` refuses what `apply` would,
/// whichever namespace the file's resource is in.
pub fn in_namespace(messages: Vec<Message>, namespace: Option<&str>) -> Vec<Message> {
    match namespace {
        None => messages,
        Some(n) => messages
            .into_iter()
            .filter(|m| m.namespace == n || (m.kind == "Namespace" && m.name == n) || m.code == "IST0106")
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parse_documents;

    fn items(yaml: &str) -> Vec<Item> {
        parse_documents("t.yaml", yaml)
            .unwrap()
            .into_iter()
            .map(|d| Item { origin: Some(format!("t.yaml:{}", d.line)), resource: d.resource, invalid: vec![] })
            .collect()
    }

    const BASE: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
";

    fn gateway_pod() -> Pod {
        Pod {
            namespace: "istio-system".into(),
            name: "istio-ingressgateway-x".into(),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            sidecar: false,
        }
    }

    #[test]
    fn missing_gateways_hosts_and_subsets_are_ist0101_with_istioctls_text() {
        let yaml = format!(
            "{BASE}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  gateways: [gw-bogus, gw, mesh]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v3}}}}
    - {{destination: {{host: ratings}}}}
    - {{destination: {{host: reviews, subset: v1}}}}
"
        );
        let msgs = analyze(&items(&yaml), &[gateway_pod()]);
        let lines: Vec<String> = msgs.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            lines,
            [
                "Error [IST0101] (VirtualService default/reviews t.yaml:22) Referenced gateway not found: \"gw-bogus\"",
                "Error [IST0101] (VirtualService default/reviews t.yaml:22) Referenced host not found: \"ratings\"",
                "Error [IST0101] (VirtualService default/reviews t.yaml:22) Referenced host+subset in destinationrule not found: \"reviews+v3\"",
            ]
        );
    }

    #[test]
    fn two_mesh_virtual_services_for_one_host_conflict_and_a_clean_set_says_nothing() {
        let vs = |name: &str| {
            format!(
                "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: reviews, subset: v1}}}}]}}]
"
            )
        };
        assert!(analyze(&items(&format!("{BASE}{}", vs("a"))), &[gateway_pod()]).is_empty());
        let msgs = analyze(&items(&format!("{BASE}{}{}", vs("a"), vs("b"))), &[gateway_pod()]);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs.iter().all(|m| m.code == "IST0109" && m.text.contains("default/a,default/b")), "{msgs:?}");
        // A credentialName without its Secret.
        let https = BASE.replace("servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]",
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: bookinfo-credential}}]");
        let msgs = analyze(&items(&https), &[gateway_pod()]);
        assert_eq!(msgs[0].to_string(), "Error [IST0101] (Gateway default/gw t.yaml:15) Referenced credentialName not found: \"bookinfo-credential\"");
        // With the Secret in the gateway pod's namespace, nothing is said; in another, it is.
        let secret = |ns: &str| {
            format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bookinfo-credential, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: x, tls.key: y}}\n")
        };
        let ns = &gateway_pod().namespace;
        assert!(analyze(&items(&format!("{https}{}", secret(ns))), &[gateway_pod()]).is_empty());
        let msgs = analyze(&items(&format!("{https}{}", secret("elsewhere"))), &[gateway_pod()]);
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        // A Gateway whose selector matches no pod.
        let msgs = analyze(&items(BASE), &[]);
        assert_eq!(
            msgs[0].to_string(),
            "Error [IST0101] (Gateway default/gw t.yaml:15) Referenced selector not found: \"istio=ingressgateway\""
        );
    }

    #[test]
    fn namespaces_without_injection_and_pods_without_a_proxy_are_reported() {
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: web, labels: {istio-injection: enabled}}\n";
        let pod =
            |n: &str| Pod { namespace: n.into(), name: format!("{n}-pod"), labels: BTreeMap::new(), sidecar: false };
        let msgs = analyze(&items(ns), &[pod("shop"), pod("web")]);
        let codes: Vec<(&str, Level)> = msgs.iter().map(|m| (m.code, m.level)).collect();
        assert_eq!(codes, [("IST0103", Level::Warning), ("IST0102", Level::Info)]);
        assert!(msgs[0].text.starts_with("The pod web/web-pod is missing the Istio proxy."));
        assert_eq!(in_namespace(msgs, Some("shop")).len(), 1);
    }
}
