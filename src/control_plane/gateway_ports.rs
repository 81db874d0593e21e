//! Which localhost address each server of a Gateway for the ingress gateway is published on, and
//! what `apply` says about it: where a port other than 80/8080, 443/8443 and 31400 went, and a
//! warning when that address is taken by another program (pure, with the port check passed in).

use std::collections::{BTreeMap, BTreeSet};

use crate::env::Settings;
use crate::resources::core::Service;
use crate::resources::meta::IntOrString;
use crate::resources::networking::Gateway;

/// The ingress gateway pod's labels, as `up` installs it (`manifests/istio-system.yaml`).
pub fn ingress_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("istio".into(), "ingressgateway".into()), ("app".into(), "istio-ingressgateway".into())])
}

/// Does the Gateway select the ingress gateway (every selector label matches its pod)?
pub fn for_ingress(gw: &Gateway, pod_labels: &BTreeMap<String, String>) -> bool {
    gw.spec.selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

/// The container port a server port number binds on the ingress gateway: the Service port's
/// numeric targetPort when its Service has that port, else the number itself (Istio's rule).
pub fn container_port(service: Option<&Service>, number: u32) -> Option<u16> {
    let sp = service.and_then(|s| s.spec.ports.iter().find(|p| u32::from(p.port) == number));
    match sp.map(|p| &p.target_port) {
        Some(Some(IntOrString::Int(n))) => u16::try_from(*n).ok(),
        Some(Some(IntOrString::String(name))) => name.parse().ok(),
        Some(None) => sp.map(|p| p.port),
        None => u16::try_from(number).ok(),
    }
}

/// Container ports the ingress gateway serves for these Gateways (servers it listens for:
/// HTTP-like and TCP).
pub fn served_ports<'a>(
    gateways: impl Iterator<Item = &'a Gateway>,
    service: Option<&Service>,
    pod_labels: &BTreeMap<String, String>,
) -> BTreeSet<u16> {
    gateways
        .filter(|gw| for_ingress(gw, pod_labels))
        .flat_map(|gw| gw.spec.servers.iter())
        .filter(|s| served(&s.port.protocol))
        .filter_map(|s| container_port(service, s.port.number))
        .collect()
}

fn served(protocol: &str) -> bool {
    matches!(protocol.to_ascii_uppercase().as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "TCP")
}

/// What `apply` says about a Gateway's ports: where a port other than the ones `up` publishes
/// went, and a warning when that address is in use by another program. `before` are the
/// container ports already served (the gateway holds those itself).
pub fn notes(
    gw: &Gateway,
    service: Option<&Service>,
    pod_labels: &BTreeMap<String, String>,
    settings: &Settings,
    before: &BTreeSet<u16>,
    free: impl Fn(u16) -> bool,
) -> Vec<String> {
    if !for_ingress(gw, pod_labels) {
        return vec![];
    }
    let mut out = Vec::new();
    for (i, server) in gw.spec.servers.iter().enumerate() {
        if !served(&server.port.protocol) {
            continue;
        }
        let Some(cport) = container_port(service, server.port.number) else { continue };
        let addr = settings.gateway_address(cport);
        let field = format!("spec.servers[{i}].port.number");
        if !matches!(cport, 8080 | 8443 | 31400) {
            let moved = if cport < 1024 { " (ports below 1024 need root, so 10000 is added)" } else { "" };
            out.push(format!(
                "{field}: the ingress gateway serves port {} on http://{addr}{moved}; `meshrig status` lists every gateway port",
                server.port.number
            ));
        }
        if !before.contains(&cport) && !free(addr.port()) {
            out.push(format!(
                "{field}: {addr} is in use by another program, so the ingress gateway cannot publish port {} \
                 until it is free (`meshrig doctor` helps find it)",
                server.port.number
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(yaml: &str) -> Gateway {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn service() -> Service {
        serde_yaml::from_str(
            "apiVersion: v1\nkind: Service\nmetadata: {name: istio-ingressgateway, namespace: istio-system}\n\
             spec:\n  selector: {istio: ingressgateway}\n  ports:\n  - {name: http2, port: 80, targetPort: 8080}\n  - {name: tcp, port: 31400, targetPort: 31400}\n",
        )
        .unwrap()
    }

    const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n";

    #[test]
    fn ports_follow_the_service_then_the_number() {
        let s = service();
        assert_eq!(container_port(Some(&s), 80), Some(8080));
        assert_eq!(container_port(Some(&s), 31400), Some(31400));
        assert_eq!(container_port(Some(&s), 9000), Some(9000));
        assert_eq!(container_port(None, 80), Some(80));
    }

    #[test]
    fn other_ports_are_said_and_a_taken_one_is_a_warning() {
        let settings = Settings { http_port: 18080, https_port: 18443, tcp_port: 31400, ..Settings::default() };
        let gw = gateway(&format!(
            "{GW}  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n  - port: {{number: 9000, name: h, protocol: HTTP}}\n    hosts: ['*']\n  - port: {{number: 81, name: h2, protocol: HTTP}}\n    hosts: ['*']\n"
        ));
        let s = service();
        let labels = ingress_labels();
        let notes_free = notes(&gw, Some(&s), &labels, &settings, &BTreeSet::new(), |_| true);
        assert_eq!(notes_free.len(), 2, "{notes_free:?}");
        assert!(notes_free[0]
            .starts_with("spec.servers[1].port.number: the ingress gateway serves port 9000 on http://127.0.0.1:9000"));
        assert!(notes_free[1].contains("port 81 on http://127.0.0.1:10081 (ports below 1024 need root"));
        let taken = notes(&gw, Some(&s), &labels, &settings, &BTreeSet::new(), |p| p != 9000);
        assert!(taken.iter().any(|n| n.contains("127.0.0.1:9000 is in use by another program")), "{taken:?}");
        // A port the gateway already serves is held by the gateway itself, not by another program.
        let held = notes(&gw, Some(&s), &labels, &settings, &BTreeSet::from([9000]), |p| p != 9000);
        assert!(!held.iter().any(|n| n.contains("in use")), "{held:?}");
        let other = gateway("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: e}\nspec:\n  selector: {istio: egressgateway}\n  servers:\n  - port: {number: 9000, name: h, protocol: HTTP}\n    hosts: ['*']\n");
        assert!(notes(&other, Some(&s), &labels, &settings, &BTreeSet::new(), |_| false).is_empty());
        assert_eq!(served_ports([&gw, &other].into_iter(), Some(&s), &labels), BTreeSet::from([81, 8080, 9000]));
    }
}
