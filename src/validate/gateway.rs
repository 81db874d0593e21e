//! Gateway validation: servers, ports, hosts and TLS settings.

use super::*;

pub(super) fn validate_gateway(g: &Gateway, rep: &mut Report) {
    let spec = &g.spec;
    check_labels("spec.selector", &spec.selector, rep);
    if spec.servers.is_empty() {
        rep.err("spec.servers", "at least one server is required");
    }
    let mut port_names = BTreeSet::new();
    for (i, s) in spec.servers.iter().enumerate() {
        let path = format!("spec.servers[{i}]");
        let p = &s.port;
        if p.number == 0 || p.number > 65535 {
            rep.err(format!("{path}.port.number"), "is required and must be between 1 and 65535");
        }
        let proto = p.protocol.to_ascii_uppercase();
        if p.protocol.is_empty() {
            rep.err(format!("{path}.port.protocol"), format!("is required: one of {}", GATEWAY_PROTOCOLS.join("|")));
        } else if !GATEWAY_PROTOCOLS.contains(&proto.as_str()) {
            rep.err(
                format!("{path}.port.protocol"),
                format!("unsupported protocol `{}`: use one of {}", p.protocol, GATEWAY_PROTOCOLS.join("|")),
            );
        }
        if p.name.is_empty() {
            rep.err(format!("{path}.port.name"), "is required");
        } else if !port_names.insert(p.name.clone()) {
            rep.err(
                format!("{path}.port.name"),
                format!("port names in servers must be unique: duplicate name `{}`", p.name),
            );
        }
        if let Some(t) = p.target_port {
            if t == 0 || t > 65535 {
                rep.err(format!("{path}.port.targetPort"), "must be between 1 and 65535");
            }
        }
        if s.hosts.is_empty() {
            rep.err(format!("{path}.hosts"), "at least one host is required");
        }
        for (j, h) in s.hosts.iter().enumerate() {
            let hpath = format!("{path}.hosts[{j}]");
            let (ns, dns) = match h.split_once('/') {
                Some((ns, dns)) => (Some(ns), dns),
                None => (None, h.as_str()),
            };
            if let Some(ns) = ns {
                if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                    rep.err(&hpath, format!("namespace part of `{h}` must be `*`, `.` or a namespace name"));
                }
            }
            if !is_wildcard_domain(dns) {
                rep.err(
                    &hpath,
                    format!("`{h}` must be `[namespace/]dnsName` where dnsName is a host name, `*` or `*.suffix`"),
                );
            }
        }
        let is_tls_proto = proto == "HTTPS" || proto == "TLS";
        match &s.tls {
            None if is_tls_proto => {
                rep.err(format!("{path}.tls"), format!("server must have TLS settings for {proto} servers"))
            }
            Some(tls) if !is_tls_proto => {
                let only_redirect = tls
                    == &crate::resources::networking::ServerTlsSettings {
                        https_redirect: tls.https_redirect,
                        ..Default::default()
                    };
                if !only_redirect {
                    rep.err(
                        format!("{path}.tls"),
                        format!("server cannot have TLS settings for plain-text {proto} ports (only httpsRedirect)"),
                    );
                }
            }
            Some(tls) => {
                let mode = tls.mode.as_deref().unwrap_or("PASSTHROUGH");
                let tpath = format!("{path}.tls");
                let has_certs = tls.server_certificate.is_some() || tls.private_key.is_some();
                let has_cred = tls.credential_name.is_some() || !tls.credential_names.is_empty();
                match mode {
                    "PASSTHROUGH" | "AUTO_PASSTHROUGH" => {
                        if has_certs || has_cred {
                            rep.warn(&tpath, format!("{mode} mode does not use certificates, they will be ignored"));
                        }
                    }
                    "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" => {
                        if !has_cred && tls.tls_certificates.is_empty() {
                            if tls.server_certificate.is_none() {
                                rep.err(format!("{tpath}.serverCertificate"), format!("is required for {mode} mode without credentialName"));
                            }
                            if tls.private_key.is_none() {
                                rep.err(format!("{tpath}.privateKey"), format!("is required for {mode} mode without credentialName"));
                            }
                            if mode != "SIMPLE" && tls.ca_certificates.is_none() {
                                rep.err(format!("{tpath}.caCertificates"), format!("is required for {mode} mode without credentialName"));
                            }
                        }
                    }
                    "ISTIO_MUTUAL" => {
                        if has_certs || has_cred || tls.ca_certificates.is_some() {
                            rep.err(&tpath, "ISTIO_MUTUAL mode must not set certificates or credentialName");
                        }
                    }
                    other => rep.err(
                        format!("{tpath}.mode"),
                        format!("unsupported mode `{other}`: use PASSTHROUGH, SIMPLE, MUTUAL, OPTIONAL_MUTUAL, AUTO_PASSTHROUGH or ISTIO_MUTUAL"),
                    ),
                }
            }
            None => {}
        }
    }
}
