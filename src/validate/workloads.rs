//! Kubernetes core kinds: Service and Deployment checks the API server would make.

use super::*;

pub(super) fn validate_service(s: &Service, rep: &mut Report) {
    let spec = &s.spec;
    let headless_or_external =
        spec.type_.as_deref() == Some("ExternalName") || spec.cluster_ip.as_deref() == Some("None");
    if spec.ports.is_empty() && !headless_or_external {
        rep.err("spec.ports", "at least one port is required");
    }
    if let Some(t) = &spec.type_ {
        if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&t.as_str()) {
            rep.err(
                "spec.type",
                format!("unsupported value `{t}`: use ClusterIP, NodePort, LoadBalancer or ExternalName"),
            );
        }
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if p.port == 0 {
            rep.err(format!("{path}.port"), "must be between 1 and 65535");
        }
        match &p.name {
            Some(n) => {
                if !is_dns1123_label(n) {
                    rep.err(format!("{path}.name"), format!("`{n}` must be a DNS-1123 label"));
                }
                if !names.insert(n.clone()) {
                    rep.err(format!("{path}.name"), format!("duplicate port name `{n}`"));
                }
            }
            None if spec.ports.len() > 1 => {
                rep.err(format!("{path}.name"), "is required when the Service has more than one port")
            }
            None => {}
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            rep.err(format!("{path}.protocol"), format!("unsupported value `{proto}`: use TCP, UDP or SCTP"));
        }
        if !numbers.insert((p.port, proto.to_string())) {
            rep.err(format!("{path}.port"), format!("duplicate port {}/{proto}", p.port));
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                rep.err(format!("{path}.targetPort"), "must be between 1 and 65535")
            }
            Some(IntOrString::String(n)) if n.is_empty() || n.len() > 15 => {
                rep.err(format!("{path}.targetPort"), "a named target port must be 1-15 characters")
            }
            _ => {}
        }
    }
    check_labels("spec.selector", &spec.selector, rep);
}

pub(super) fn validate_deployment(d: &Deployment, rep: &mut Report) {
    let spec = &d.spec;
    if let Some(n) = spec.replicas {
        if n < 0 {
            rep.err("spec.replicas", "must be greater than or equal to 0");
        }
    }
    let sel = &spec.selector;
    if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
        rep.err("spec.selector", "must select at least one label (set matchLabels)");
    }
    let tmpl = &spec.template.metadata.labels;
    let mismatch: Vec<String> =
        sel.match_labels.iter().filter(|(k, v)| tmpl.get(*k) != Some(v)).map(|(k, v)| format!("{k}={v}")).collect();
    if !mismatch.is_empty() {
        rep.err(
            "spec.template.metadata.labels",
            format!("selector does not match template labels (missing {})", mismatch.join(", ")),
        );
    }
    check_labels("spec.template.metadata.labels", tmpl, rep);
    let pod = &spec.template.spec;
    if pod.containers.is_empty() {
        rep.err("spec.template.spec.containers", "at least one container is required");
    }
    let volumes: BTreeSet<&str> = pod.volumes.iter().map(|v| v.name.as_str()).collect();
    let mut names = BTreeSet::new();
    for (i, c) in pod.containers.iter().chain(pod.init_containers.iter()).enumerate() {
        let path = if i < pod.containers.len() {
            format!("spec.template.spec.containers[{i}]")
        } else {
            format!("spec.template.spec.initContainers[{}]", i - pod.containers.len())
        };
        if !is_dns1123_label(&c.name) {
            rep.err(format!("{path}.name"), format!("`{}` must be a DNS-1123 label", c.name));
        }
        if !names.insert(c.name.as_str()) {
            rep.err(format!("{path}.name"), format!("duplicate container name `{}`", c.name));
        }
        if c.image.as_deref().is_none_or(str::is_empty) {
            rep.err(format!("{path}.image"), "is required");
        }
        for (j, p) in c.ports.iter().enumerate() {
            if p.container_port == 0 {
                rep.err(format!("{path}.ports[{j}].containerPort"), "must be between 1 and 65535");
            }
        }
        for (j, e) in c.env.iter().enumerate() {
            if e.name.is_empty() {
                rep.err(format!("{path}.env[{j}].name"), "is required");
            }
        }
        for (j, m) in c.volume_mounts.iter().enumerate() {
            if !volumes.contains(m.name.as_str()) {
                rep.err(
                    format!("{path}.volumeMounts[{j}].name"),
                    format!("volume `{}` is not declared in spec.template.spec.volumes", m.name),
                );
            }
        }
    }
}
