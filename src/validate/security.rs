//! Security kinds' validation, as istiod's webhook checks them (`ValidatePeerAuthentication`).

use super::*;
use crate::resources::security::{AuthorizationPolicy, AuthzAction, AuthzOperation, AuthzSource, PeerAuthentication};

pub(super) fn validate_peer_authentication(pa: &PeerAuthentication, rep: &mut Report) {
    let spec = &pa.spec;
    check_selector(spec.selector.as_ref(), rep);
    let selected = spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
    if !spec.port_level_mtls.is_empty() && !selected {
        rep.err(
            "spec.portLevelMtls",
            "mesh/namespace peer authentication cannot have port level mTLS: add a spec.selector for the workload",
        );
    }
    for port in spec.port_level_mtls.keys() {
        if !(1..=65535).contains(port) {
            rep.err(format!("spec.portLevelMtls[{port}]"), "port must be in the range 1..65535");
        }
    }
    if selected && pa.metadata.namespace.as_deref() == Some(crate::resources::ROOT_NAMESPACE) {
        rep.warn(
            "spec.selector",
            "a PeerAuthentication with a selector in the root namespace (istio-system) applies to no other namespace; drop the selector for a mesh-wide policy",
        );
    }
}

/// The API server's rules for a Secret (keys, base64, the keys a TLS Secret must have), and a
/// warning when a certificate or key is not PEM (a gateway could not use it).
pub(super) fn validate_secret(s: &crate::resources::core::Secret, rep: &mut Report) {
    use base64::Engine as _;
    let bytes = s.data.iter().map(|(k, v)| k.len() + v.trim().len() / 4 * 3).sum::<usize>()
        + s.string_data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    super::data_size(bytes, rep);
    for key in s.keys() {
        let ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            rep.err(
                format!("data.{key}"),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            );
        }
    }
    for (key, v) in &s.data {
        if base64::engine::general_purpose::STANDARD.decode(v.trim()).is_err() {
            rep.err(
                format!("data.{key}"),
                "is not base64: put plain text under stringData, or encode it (`base64 -w0 FILE`)",
            );
        }
    }
    if s.secret_type() == "kubernetes.io/tls" {
        for key in ["tls.crt", "tls.key"] {
            if !s.keys().contains(key) {
                rep.err("data", format!("a kubernetes.io/tls Secret needs `{key}` (`meshrig create secret tls NAME --cert FILE --key FILE`)"));
            }
        }
    }
    for key in ["tls.crt", "cert", "ca.crt", "cacert"] {
        if let Some(pem) = s.text(&[key]) {
            if crate::tls::certs_from_pem(&pem).is_err() {
                rep.warn(
                    format!("data.{key}"),
                    "is not a PEM certificate (-----BEGIN CERTIFICATE-----); a gateway could not use it",
                );
            }
        }
    }
    for key in ["tls.key", "key"] {
        if let Some(pem) = s.text(&[key]) {
            if crate::tls::key_from_pem(&pem).is_err() {
                rep.warn(format!("data.{key}"), "is not a PEM private key; a gateway could not use it");
            }
        }
    }
}

/// Istio's selector rules: no empty key, no wildcard.
fn check_selector(selector: Option<&crate::resources::networking::WorkloadSelector>, rep: &mut Report) {
    for (k, v) in selector.map(|s| &s.match_labels).into_iter().flatten() {
        if k.is_empty() {
            rep.err("spec.selector.matchLabels", format!("empty key is not supported in selector: \"{k}={v}\""));
        }
        if k.contains('*') || v.contains('*') {
            rep.err(
                format!("spec.selector.matchLabels.{k}"),
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
}

/// The `when` keys Istio documents (`request.headers[...]`, `request.auth.claims[...]` and
/// `experimental.envoy.filters.*` take a name).
const CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

fn check_values(path: &str, field: &str, values: &[String], rep: &mut Report) {
    if values.iter().any(String::is_empty) {
        rep.err(format!("{path}.{field}"), format!("empty value not allowed, found in {field}"));
    }
}

fn check_ips(path: &str, values: &[String], rep: &mut Report) {
    for v in values {
        if crate::authz::Cidr::parse(v).is_none() {
            rep.err(path, format!("`{v}` is not an IP address or CIDR block (e.g. 10.0.0.0/16)"));
        }
    }
}

fn check_ports(path: &str, values: &[String], rep: &mut Report) {
    for v in values {
        if !v.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
            rep.err(path, format!("`{v}` is not a port number (1..65535)"));
        }
    }
}

fn check_paths(path: &str, values: &[String], rep: &mut Report) {
    for v in values {
        if let Err(e) = crate::authz::PathPattern::parse(v) {
            rep.err(path, format!("invalid or unsupported path `{v}`: {e}"));
        }
    }
}

pub(super) fn validate_authorization_policy(ap: &AuthorizationPolicy, rep: &mut Report) {
    let spec = &ap.spec;
    check_selector(spec.selector.as_ref(), rep);
    let no_rules = spec.rules.as_ref().is_none_or(Vec::is_empty);
    match spec.action {
        AuthzAction::Custom => rep.err(
            "spec.action",
            "CUSTOM (an external authorizer) is not supported by meshrig: there is no ext-authz provider to call; use ALLOW or DENY",
        ),
        AuthzAction::Deny if no_rules => rep.err(
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        ),
        _ => {}
    }
    if spec.provider.is_some() && spec.action != AuthzAction::Custom {
        rep.err(
            "spec.provider",
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                format!("{:?}", spec.action).to_uppercase()
            ),
        );
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let rpath = format!("spec.rules[{i}]");
        if rule.from.as_ref().is_some_and(Vec::is_empty) {
            rep.err(format!("{rpath}.from"), format!("`from` must not be empty, found at rule {i}"));
        }
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let fpath = format!("{rpath}.from[{j}].source");
            let Some(s) = &from.source else {
                rep.err(&fpath, format!("`from.source` must not be nil, found at rule {i}"));
                continue;
            };
            if *s == AuthzSource::default() {
                rep.err(&fpath, format!("`from.source` must not be empty, found at rule {i}"));
            }
            for (field, values) in [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ] {
                check_values(&fpath, field, values, rep);
            }
            for (field, values) in [
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ] {
                check_ips(&format!("{fpath}.{field}"), values, rep);
            }
            let by_account = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
            let by_principal = !s.principals.is_empty()
                || !s.not_principals.is_empty()
                || !s.namespaces.is_empty()
                || !s.not_namespaces.is_empty();
            if by_account && by_principal {
                rep.err(&fpath, "serviceAccounts cannot be used with principals or namespaces");
            }
            for (k, sa) in s.service_accounts.iter().chain(&s.not_service_accounts).enumerate() {
                if sa.contains('*') || sa.split('/').count() != 2 {
                    rep.err(
                        format!("{fpath}.serviceAccounts[{k}]"),
                        format!("`{sa}` must be NAMESPACE/NAME, without wildcards"),
                    );
                }
            }
        }
        if rule.to.as_ref().is_some_and(Vec::is_empty) {
            rep.err(format!("{rpath}.to"), format!("`to` must not be empty, found at rule {i}"));
        }
        for (j, to) in rule.to.iter().flatten().enumerate() {
            let opath = format!("{rpath}.to[{j}].operation");
            let Some(op) = &to.operation else {
                rep.err(&opath, format!("`to.operation` must not be nil, found at rule {i}"));
                continue;
            };
            if *op == AuthzOperation::default() {
                rep.err(&opath, format!("`to.operation` must not be empty, found at rule {i}"));
            }
            for (field, values) in [
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("ports", &op.ports),
                ("notPorts", &op.not_ports),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ] {
                check_values(&opath, field, values, rep);
            }
            check_ports(&format!("{opath}.ports"), &op.ports, rep);
            check_ports(&format!("{opath}.notPorts"), &op.not_ports, rep);
            check_paths(&format!("{opath}.paths"), &op.paths, rep);
            check_paths(&format!("{opath}.notPaths"), &op.not_paths, rep);
        }
        for (j, c) in rule.when.iter().flatten().enumerate() {
            let cpath = format!("{rpath}.when[{j}]");
            let key = c.key.as_str();
            if key.is_empty() {
                rep.err(format!("{cpath}.key"), "`key` must not be empty");
                continue;
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                rep.err(&cpath, format!("at least one of `values` or `notValues` must be set for key {key}"));
            }
            check_values(&cpath, "values", &c.values, rep);
            check_values(&cpath, "notValues", &c.not_values, rep);
            let named = |prefix: &str| {
                key.strip_prefix(prefix).and_then(|k| k.strip_suffix(']')).is_some_and(|n| !n.is_empty())
            };
            let all = || c.values.iter().chain(&c.not_values).cloned().collect::<Vec<_>>();
            match key {
                "source.ip" | "remote.ip" | "destination.ip" => check_ips(&format!("{cpath}.values"), &all(), rep),
                "destination.port" => check_ports(&format!("{cpath}.values"), &all(), rep),
                k if CONDITION_KEYS.contains(&k) => {}
                _ if named("request.headers[") || named("request.auth.claims[") => {}
                k if k.starts_with("experimental.envoy.filters.") => {}
                "destination.namespace" | "destination.labels" => rep.err(
                    format!("{cpath}.key"),
                    format!("attribute {key} is replaced by the policy's metadata.namespace and spec.selector"),
                ),
                _ => rep.err(
                    format!("{cpath}.key"),
                    format!(
                        "unknown attribute `{key}`; use one of {}, request.headers[NAME], request.auth.claims[NAME]",
                        CONDITION_KEYS.join(", ")
                    ),
                ),
            }
        }
    }
}

/// istiod's `ValidateRequestAuthentication`: an issuer per rule, non-empty audiences and
/// locations, a JWKS that parses.
pub(super) fn validate_request_authentication(
    ra: &crate::resources::security::RequestAuthentication,
    rep: &mut Report,
) {
    check_selector(ra.spec.selector.as_ref(), rep);
    for (i, r) in ra.spec.jwt_rules.iter().enumerate() {
        let path = format!("spec.jwtRules[{i}]");
        if r.issuer.is_empty() {
            rep.err(format!("{path}.issuer"), "issuer must be set");
        }
        if r.audiences.iter().any(String::is_empty) {
            rep.err(format!("{path}.audiences"), "audience must be non-empty string");
        }
        if let Some(jwks) = &r.jwks {
            if let Err(e) = crate::jwt::check_jwks(jwks) {
                rep.err(format!("{path}.jwks"), format!("jwks parse error: {e}"));
            }
        }
        if let Some(uri) = &r.jwks_uri {
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                rep.err(
                    format!("{path}.jwksUri"),
                    format!("URI scheme of `{uri}` is not supported: use http or https"),
                );
            }
        }
        for (j, h) in r.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                rep.err(format!("{path}.fromHeaders[{j}].name"), "location header name must be non-empty string");
            }
        }
        if r.from_params.iter().any(String::is_empty) {
            rep.err(format!("{path}.fromParams"), "location query must be non-empty string");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::resources::parse_documents;
    use crate::validate::validate;

    fn check(spec: &str) -> Result<Vec<String>, Vec<String>> {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: default}}\nspec:\n{spec}\n"
        );
        validate(&parse_documents("t.yaml", &yaml).unwrap().remove(0).resource)
    }

    fn refused(spec: &str, needle: &str) {
        let errs = check(spec).expect_err(spec);
        assert!(errs.iter().any(|e| e.contains(needle)), "{needle:?} not in {errs:?}");
    }

    #[test]
    fn authorization_policies_are_checked_as_istiod_checks_them() {
        check("  {}").unwrap();
        check("  rules: [{}]").unwrap();
        check("  action: DENY\n  rules:\n  - from: [{source: {notRequestPrincipals: [\"*\"]}}]\n    to: [{operation: {paths: [\"/headers\", \"/api/{**}\"], ports: [\"8000\"]}}]\n    when: [{key: \"request.headers[version]\", values: [v1]}, {key: source.ip, notValues: [10.0.0.0/8]}]").unwrap();
        refused(
            "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]",
            "CUSTOM (an external authorizer) is not supported",
        );
        refused("  action: DENY", "DENY action without `rules` is meaningless");
        refused("  provider: {name: ext}\n  rules: [{}]", "`provider` must not be with non CUSTOM action");
        refused("  rules:\n  - from: []", "`from` must not be empty");
        refused("  rules:\n  - from: [{}]", "`from.source` must not be nil");
        refused("  rules:\n  - from: [{source: {}}]", "`from.source` must not be empty");
        refused("  rules:\n  - to: [{operation: {}}]", "`to.operation` must not be empty");
        refused("  rules:\n  - from: [{source: {principals: [\"\"]}}]", "empty value not allowed, found in principals");
        refused("  rules:\n  - from: [{source: {ipBlocks: [10.0.0.300]}}]", "not an IP address or CIDR block");
        refused("  rules:\n  - to: [{operation: {ports: [http]}}]", "not a port number");
        refused("  rules:\n  - to: [{operation: {paths: [\"/a/{**}/b\"]}}]", "invalid or unsupported path");
        refused(
            "  rules:\n  - when: [{key: \"request.header[x]\", values: [a]}]",
            "unknown attribute `request.header[x]`",
        );
        refused("  rules:\n  - when: [{key: source.ip}]", "at least one of `values` or `notValues`");
        refused(
            "  rules:\n  - when: [{key: destination.namespace, values: [a]}]",
            "replaced by the policy's metadata.namespace",
        );
        refused(
            "  rules:\n  - from: [{source: {serviceAccounts: [default/a], principals: [x]}}]",
            "serviceAccounts cannot be used with principals or namespaces",
        );
        refused("  selector: {matchLabels: {app: \"*\"}}", "wildcard is not supported in selector");
    }

    #[test]
    fn request_authentications_need_an_issuer_and_keys_that_parse() {
        let check = |rules: &str| {
            let yaml = format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: r, namespace: default}}\nspec:\n  jwtRules:\n{rules}\n"
            );
            validate(&parse_documents("t.yaml", &yaml).unwrap().remove(0).resource)
        };
        let jwks = r#"{\"keys\":[{\"kty\":\"EC\",\"x\":\"a\",\"y\":\"b\"}]}"#;
        check(&format!("  - issuer: me\n    jwks: \"{jwks}\"")).unwrap();
        let errs = check("  - jwks: \"{}\"").unwrap_err();
        assert!(errs.iter().any(|e| e.contains("issuer must be set")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("jwks parse error")), "{errs:?}");
        let errs = check("  - issuer: me\n    jwksUri: ftp://x/jwks\n    fromHeaders: [{name: \"\"}]").unwrap_err();
        assert!(
            errs.iter().any(|e| e.contains("URI scheme")) && errs.iter().any(|e| e.contains("header name")),
            "{errs:?}"
        );
    }
}
