//! istioctl's Telemetry analyzers (pure): access logging with no provider (IST0157), more than
//! one selector-less Telemetry in a namespace (IST0160), Telemetries whose selectors pick the
//! same pod (IST0159), and a selector no pod matches (IST0101). Texts are istioctl's.

use std::collections::BTreeMap;

use super::{message, Item, Level, Message, Pod};
use crate::resources::telemetry::Telemetry;
use crate::resources::Resource;

pub fn analyze(items: &[Item], pods: &[Pod], out: &mut Vec<Message>) {
    let telemetries: Vec<(&Item, &Telemetry)> = items
        .iter()
        .filter_map(|i| match &i.resource {
            Resource::Telemetry(t) => Some((i, t)),
            _ => None,
        })
        .collect();
    let namespace = |t: &Telemetry| t.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    // meshrig's mesh config has no `defaultProviders.accessLogging`: an entry must name one.
    for (item, t) in &telemetries {
        if t.spec.access_logging.iter().any(|l| l.providers.is_empty()) {
            let text = format!(
                "The Telemetry {} in namespace {:?} with empty providers will be ignored.",
                t.metadata.name,
                namespace(t)
            );
            out.push(message(item, Level::Warning, "IST0157", text));
        }
    }
    let mut selectorless: BTreeMap<String, Vec<&(&Item, &Telemetry)>> = BTreeMap::new();
    let mut by_pod: BTreeMap<(String, String), Vec<&(&Item, &Telemetry)>> = BTreeMap::new();
    for entry in &telemetries {
        let t = entry.1;
        let ns = namespace(t);
        let Some(selector) = &t.spec.selector else {
            if t.spec.target_ref.is_none() && t.spec.target_refs.is_empty() {
                selectorless.entry(ns).or_default().push(entry);
            }
            continue;
        };
        let labels = &selector.match_labels;
        if labels.is_empty() {
            continue;
        }
        let mut found = false;
        for pod in pods.iter().filter(|p| p.namespace == ns) {
            if labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v)) {
                found = true;
                by_pod.entry((ns.clone(), pod.name.clone())).or_default().push(entry);
            }
        }
        if !found {
            let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let text = format!("Referenced selector not found: {:?}", selector.join(","));
            out.push(message(entry.0, Level::Error, "IST0101", text));
        }
    }
    let names = |list: &[&(&Item, &Telemetry)]| {
        let mut names: Vec<&str> = list.iter().map(|(_, t)| t.metadata.name.as_str()).collect();
        names.sort();
        format!("[{}]", names.join(" "))
    };
    for (ns, list) in selectorless.iter().filter(|(_, l)| l.len() > 1) {
        let text = format!(
            "The Telemetries {} in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
            names(list)
        );
        for (item, _) in list {
            out.push(message(item, Level::Error, "IST0160", text.clone()));
        }
    }
    for ((ns, pod), list) in by_pod.iter().filter(|(_, l)| l.len() > 1) {
        let text = format!(
            "The Telemetries {} in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior.",
            names(list)
        );
        for (item, _) in list {
            out.push(message(item, Level::Error, "IST0159", text.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parse_documents;

    fn pod(name: &str, app: &str) -> Pod {
        Pod {
            namespace: "default".into(),
            name: name.into(),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            sidecar: true,
        }
    }

    #[test]
    fn telemetry_conflicts_and_missing_providers_are_istioctls_messages() {
        let doc = |name: &str, spec: &str| {
            format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}---\n")
        };
        let yaml = [
            doc("ns-a", "  tracing: [{randomSamplingPercentage: 10}]\n"),
            doc("ns-b", "  accessLogging: [{filter: {expression: 'response.code >= 400'}}]\n"),
            doc("httpbin-1", "  selector: {matchLabels: {app: httpbin}}\n"),
            doc("httpbin-2", "  selector: {matchLabels: {app: httpbin}}\n"),
            doc("nothing", "  selector: {matchLabels: {app: nothing}}\n"),
            doc("curl", "  selector: {matchLabels: {app: curl}}\n"),
        ]
        .concat();
        let items: Vec<Item> = parse_documents("t.yaml", &yaml)
            .unwrap()
            .into_iter()
            .map(|d| Item { origin: None, resource: d.resource, invalid: vec![] })
            .collect();
        let mut out = Vec::new();
        analyze(&items, &[pod("httpbin-v1-x", "httpbin"), pod("curl-x", "curl")], &mut out);
        let mut lines: Vec<String> = out.iter().map(|m| m.to_string()).collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "Error [IST0101] (Telemetry default/nothing) Referenced selector not found: \"app=nothing\"",
                "Error [IST0159] (Telemetry default/httpbin-1) The Telemetries [httpbin-1 httpbin-2] in namespace \"default\" select the same workload pod \"httpbin-v1-x\", which can lead to undefined behavior.",
                "Error [IST0159] (Telemetry default/httpbin-2) The Telemetries [httpbin-1 httpbin-2] in namespace \"default\" select the same workload pod \"httpbin-v1-x\", which can lead to undefined behavior.",
                "Error [IST0160] (Telemetry default/ns-a) The Telemetries [ns-a ns-b] in namespace \"default\" have no workload selector, which can lead to undefined behavior.",
                "Error [IST0160] (Telemetry default/ns-b) The Telemetries [ns-a ns-b] in namespace \"default\" have no workload selector, which can lead to undefined behavior.",
                "Warning [IST0157] (Telemetry default/ns-b) The Telemetry ns-b in namespace \"default\" with empty providers will be ignored.",
            ]
        );
    }
}
