//! ServiceEntry validation: hosts, ports, resolution and endpoints, as istiod checks them.

use std::net::IpAddr;

use super::*;
use crate::resources::networking::ServiceEntry;

const RESOLUTIONS: &[&str] = &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"];
const LOCATIONS: &[&str] = &["MESH_EXTERNAL", "MESH_INTERNAL"];

pub(super) fn validate_service_entry(se: &ServiceEntry, rep: &mut Report) {
    let spec = &se.spec;
    if spec.hosts.is_empty() {
        rep.err("spec.hosts", "at least one host is required");
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        if h == "*" {
            rep.err(format!("spec.hosts[{i}]"), "`*` is not allowed: name the hosts (or `*.domain`)");
        } else if h.contains('/') || !is_wildcard_domain(h) {
            rep.err(format!("spec.hosts[{i}]"), format!("`{h}` is not a valid host name"));
        }
    }
    if spec.ports.is_empty() {
        rep.err("spec.ports", "a service entry must have at least one port");
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if !(1..=65535).contains(&p.number) {
            rep.err(format!("{path}.number"), "must be between 1 and 65535");
        } else if !numbers.insert(p.number) {
            rep.err(format!("{path}.number"), format!("duplicate port {}", p.number));
        }
        if p.name.is_empty() {
            rep.err(format!("{path}.name"), "is required");
        } else if !names.insert(p.name.as_str()) {
            rep.err(format!("{path}.name"), format!("duplicate port name `{}`", p.name));
        }
        if let Some(proto) = &p.protocol {
            if !GATEWAY_PROTOCOLS.contains(&proto.to_ascii_uppercase().as_str()) {
                rep.err(
                    format!("{path}.protocol"),
                    format!("unsupported protocol `{proto}`: use one of {}", GATEWAY_PROTOCOLS.join("|")),
                );
            }
        }
        if p.target_port.is_some_and(|t| !(1..=65535).contains(&t)) {
            rep.err(format!("{path}.targetPort"), "must be between 1 and 65535");
        }
    }
    let resolution = spec.resolution();
    if !RESOLUTIONS.contains(&resolution) {
        rep.err("spec.resolution", format!("`{resolution}` is not one of {}", RESOLUTIONS.join("|")));
    }
    if let Some(l) = &spec.location {
        if !LOCATIONS.contains(&l.as_str()) {
            rep.err("spec.location", format!("`{l}` is not one of {}", LOCATIONS.join("|")));
        }
    }
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        rep.err("spec.workloadSelector", "only one of workloadSelector or endpoints can be set");
    }
    match resolution {
        "NONE" if !spec.endpoints.is_empty() => {
            rep.err("spec.endpoints", "no endpoints should be provided for resolution NONE");
        }
        "STATIC" if spec.endpoints.is_empty() && spec.workload_selector.is_none() => {
            rep.err("spec.endpoints", "resolution STATIC needs endpoints (or a workloadSelector)");
        }
        _ => {}
    }
    for (i, e) in spec.endpoints.iter().enumerate() {
        let path = format!("spec.endpoints[{i}]");
        match e.address.as_deref() {
            None | Some("") => rep.err(format!("{path}.address"), "is required"),
            Some(a) if resolution == "STATIC" && a.parse::<IpAddr>().is_err() => {
                rep.err(format!("{path}.address"), format!("`{a}` must be an IP address with resolution STATIC"));
            }
            Some(a) if a.parse::<IpAddr>().is_err() && !is_dns1123_subdomain(&a.to_ascii_lowercase()) => {
                rep.err(format!("{path}.address"), format!("`{a}` is neither an IP address nor a host name"));
            }
            Some(_) => {}
        }
        for (name, port) in &e.ports {
            if !spec.ports.iter().any(|p| &p.name == name) {
                rep.err(format!("{path}.ports.{name}"), "names no port of the service entry");
            }
            if !(1..=65535).contains(port) {
                rep.err(format!("{path}.ports.{name}"), "must be between 1 and 65535");
            }
        }
        check_labels(&format!("{path}.labels"), &e.labels, rep);
    }
    check_export_to("spec.exportTo", &spec.export_to, rep);
}

#[cfg(test)]
mod tests {
    use crate::resources::parse::parse_documents;

    fn errors(spec: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: e, namespace: default}}\nspec: {spec}\n"
        );
        let doc = parse_documents("se.yaml", &yaml).unwrap().remove(0);
        crate::validate::validate(&doc.resource).err().unwrap_or_default()
    }

    #[test]
    fn service_entries_are_checked_as_istiod_does() {
        assert!(errors("{hosts: [a.example.com], ports: [{number: 80, name: http}]}").is_empty());
        let e = errors("{hosts: ['*'], ports: []}").join("\n");
        assert!(e.contains("spec.hosts[0]") && e.contains("at least one port"), "{e}");
        let e = errors("{hosts: [a.example.com], ports: [{number: 80, name: http}], resolution: STATIC}").join("\n");
        assert!(e.contains("resolution STATIC needs endpoints"), "{e}");
        let e = errors(
            "{hosts: [a.example.com], ports: [{number: 80, name: http}], resolution: STATIC, \
             endpoints: [{address: db.example.com, ports: {web: 8080}}]}",
        )
        .join("\n");
        assert!(e.contains("must be an IP address") && e.contains("spec.endpoints[0].ports.web"), "{e}");
        let e = errors("{hosts: [a.example.com], ports: [{number: 80, name: http}], endpoints: [{address: 1.2.3.4}]}")
            .join("\n");
        assert!(e.contains("no endpoints should be provided for resolution NONE"), "{e}");
        let e = errors("{hosts: [a.example.com], ports: [{number: 80, name: http, protocol: SMTP}], resolution: DNS}")
            .join("\n");
        assert!(e.contains("spec.ports[0].protocol"), "{e}");
    }
}
