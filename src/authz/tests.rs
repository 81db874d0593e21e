//! Table tests of the authorization decision: Istio's semantics, case by case (a test module:
//! `authz.rs` declares it under #[cfg(test)]).

use std::net::IpAddr;

use super::*;
use crate::resources::{parse_documents, Resource};

fn policies(yaml: &str) -> Vec<Policy> {
    parse_documents("t.yaml", yaml)
        .unwrap()
        .into_iter()
        .filter_map(|d| match d.resource {
            Resource::AuthorizationPolicy(ap) => {
                crate::validate::validate(&Resource::AuthorizationPolicy(ap.clone()))
                    .unwrap_or_else(|e| panic!("{e:?}"));
                compile(&ap)
            }
            _ => None,
        })
        .collect()
}

fn ap(name: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}\n---\n")
}

struct Req {
    principal: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    port: u16,
    ip: &'static str,
    headers: http::HeaderMap,
    tcp: bool,
    jwt: Option<&'static str>,
}

fn req() -> Req {
    Req {
        principal: Some("cluster.local/ns/default/sa/bookinfo-productpage"),
        method: "GET",
        path: "/productpage",
        host: "productpage:9080",
        port: 9080,
        ip: "127.0.0.1",
        headers: http::HeaderMap::new(),
        tcp: false,
        jwt: None,
    }
}

fn judge(ps: &[Policy], r: &Req) -> Verdict {
    let ip: IpAddr = r.ip.parse().unwrap();
    let a = Attrs {
        principal: r.principal,
        source_ip: ip,
        remote_ip: ip,
        destination_ip: "127.0.0.1".parse().unwrap(),
        destination_port: r.port,
        sni: None,
        http: (!r.tcp).then_some(Http {
            host: r.host,
            method: r.method,
            path: r.path,
            headers: &r.headers,
            request_principal: r.jwt,
            claims: None,
        }),
    };
    decide(ps, &a)
}

fn allowed(ps: &[Policy], r: &Req) -> bool {
    judge(ps, r) == Verdict::Allow
}

#[test]
fn values_follow_istios_syntax() {
    assert!(Value::parse("abc").matches("abc") && !Value::parse("abc").matches("abcd"));
    assert!(Value::parse("abc*").matches("abcd") && !Value::parse("abc*").matches("xabc"));
    assert!(Value::parse("*abc").matches("xabc") && !Value::parse("*abc").matches("abcx"));
    assert!(Value::parse("*").matches("x") && !Value::parse("*").matches(""));
}

#[test]
fn path_templates_match_segments() {
    let one = PathPattern::parse("/foo/{*}/bar").unwrap();
    assert!(one.matches("/foo/x/bar") && !one.matches("/foo/x/y/bar") && !one.matches("/foo//bar"));
    let any = PathPattern::parse("/foo/{**}").unwrap();
    assert!(any.matches("/foo/") && any.matches("/foo/a/b/c") && !any.matches("/bar/a"));
    assert!(PathPattern::parse("/foo/{**}/bar").is_err());
    assert!(PathPattern::parse("/foo/a{*}").is_err());
    assert!(PathPattern::parse("/foo/{x}").is_err());
}

#[test]
fn cidrs_contain_addresses() {
    let c = Cidr::parse("10.1.0.0/16").unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()) && !c.contains("10.2.0.1".parse().unwrap()));
    assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
    assert!(Cidr::parse("::ffff:127.0.0.1/128").is_some());
    assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
    assert!(Cidr::parse("10.0.0.0/33").is_none() && Cidr::parse("nope").is_none());
}

#[test]
fn no_policy_allows_and_an_empty_spec_allows_nothing() {
    assert!(allowed(&[], &req()));
    let nothing = policies(&ap("allow-nothing", "  {}"));
    assert_eq!(judge(&nothing, &req()), Verdict::Deny(None));
    // An empty rule matches everything.
    let all = policies(&ap("allow-all", "  rules: [{}]"));
    assert!(allowed(&all, &req()));
}

#[test]
fn deny_wins_then_any_allow_then_deny_by_default() {
    let ps = policies(&format!(
        "{}{}",
        ap("get-only", "  action: ALLOW\n  rules:\n  - to: [{operation: {methods: [GET]}}]"),
        ap("no-admin", "  action: DENY\n  rules:\n  - to: [{operation: {paths: [/admin*]}}]")
    ));
    assert!(allowed(&ps, &req()));
    assert_eq!(judge(&ps, &Req { path: "/admin/x", ..req() }), Verdict::Deny(Some("default/no-admin".into())));
    assert_eq!(judge(&ps, &Req { method: "POST", ..req() }), Verdict::Deny(None));
    // AUDIT changes nothing.
    let audit = policies(&ap("audit", "  action: AUDIT\n  rules: [{}]"));
    assert!(allowed(&audit, &Req { method: "DELETE", ..req() }));
}

#[test]
fn sources_match_principals_namespaces_accounts_and_ips() {
    let by_principal = policies(&ap(
        "p",
        "  rules:\n  - from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}]",
    ));
    assert!(allowed(&by_principal, &req()));
    assert!(!allowed(&by_principal, &Req { principal: Some("cluster.local/ns/default/sa/other"), ..req() }));
    // Without mTLS there is no principal: a principal rule never matches, its negation does.
    assert!(!allowed(&by_principal, &Req { principal: None, ..req() }));
    let not_principal = policies(&ap("np", "  rules:\n  - from: [{source: {notPrincipals: [\"*\"]}}]"));
    assert!(allowed(&not_principal, &Req { principal: None, ..req() }));
    assert!(!allowed(&not_principal, &req()));

    let ns = policies(&ap("ns", "  rules:\n  - from: [{source: {namespaces: [default, prod-*]}}]"));
    assert!(allowed(&ns, &req()));
    assert!(allowed(&ns, &Req { principal: Some("cluster.local/ns/prod-eu/sa/x"), ..req() }));
    assert!(!allowed(&ns, &Req { principal: Some("cluster.local/ns/dev/sa/x"), ..req() }));
    let sa = policies(&ap("sa", "  rules:\n  - from: [{source: {serviceAccounts: [default/bookinfo-productpage]}}]"));
    assert!(allowed(&sa, &req()));
    assert!(!allowed(&sa, &Req { principal: Some("cluster.local/ns/other/sa/bookinfo-productpage"), ..req() }));
    let ips =
        policies(&ap("ip", "  rules:\n  - from: [{source: {ipBlocks: [10.0.0.0/8], notIpBlocks: [10.9.0.0/16]}}]"));
    assert!(allowed(&ips, &Req { ip: "10.1.1.1", ..req() }));
    assert!(!allowed(&ips, &Req { ip: "10.9.1.1", ..req() }));
    assert!(!allowed(&ips, &req()));
    // Fields inside one source are ANDed.
    let both = policies(&ap("both", "  rules:\n  - from: [{source: {namespaces: [default], ipBlocks: [10.0.0.0/8]}}]"));
    assert!(!allowed(&both, &req()));
    assert!(allowed(&both, &Req { ip: "10.0.0.1", ..req() }));
}

#[test]
fn operations_match_hosts_ports_methods_and_paths() {
    let op = policies(&ap(
        "op",
        "  rules:\n  - to: [{operation: {hosts: [PRODUCTPAGE*], ports: [\"9080\"], methods: [GET, HEAD], paths: [/productpage, \"/api/v1/products/{*}\"]}}]",
    ));
    assert!(allowed(&op, &req()), "hosts are case-insensitive, the port in Host is ignored");
    assert!(allowed(&op, &Req { path: "/api/v1/products/0", method: "HEAD", ..req() }));
    assert!(!allowed(&op, &Req { path: "/api/v1/products/0/reviews", ..req() }));
    assert!(!allowed(&op, &Req { method: "get", ..req() }), "methods are case-sensitive");
    assert!(!allowed(&op, &Req { port: 9081, ..req() }));
    assert!(!allowed(&op, &Req { host: "details", ..req() }));
    // Two operations are ORed; not-fields exclude.
    let ops = policies(&ap("ops", "  rules:\n  - to: [{operation: {paths: [/a]}}, {operation: {notPaths: [/a*]}}]"));
    assert!(allowed(&ops, &Req { path: "/a", ..req() }));
    assert!(allowed(&ops, &Req { path: "/b", ..req() }));
    assert!(!allowed(&ops, &Req { path: "/ab", ..req() }));
}

#[test]
fn conditions_hold_all_together() {
    let mut headers = http::HeaderMap::new();
    headers.insert("version", "v1".parse().unwrap());
    let when = policies(&ap(
        "when",
        "  rules:\n  - when:\n    - {key: \"request.headers[Version]\", values: [v1, v2]}\n    - {key: source.namespace, notValues: [dev]}\n    - {key: source.ip, values: [127.0.0.0/8]}",
    ));
    assert!(allowed(&when, &Req { headers: headers.clone(), ..req() }));
    assert!(!allowed(&when, &req()), "the header is missing");
    assert!(!allowed(&when, &Req { headers: headers.clone(), principal: Some("cluster.local/ns/dev/sa/x"), ..req() }));
    // Sent twice, a header is its values joined with commas (Istio's normalisation).
    headers.append("version", "v9".parse().unwrap());
    assert!(!allowed(&when, &Req { headers: headers.clone(), ..req() }), "v1,v9 is not v1");
    let joined =
        policies(&ap("joined", "  rules:\n  - when: [{key: \"request.headers[version]\", values: [\"v1,v9\"]}]"));
    assert!(allowed(&joined, &Req { headers: headers.clone(), ..req() }));
    let port = policies(&ap("port", "  rules:\n  - when: [{key: destination.port, values: [\"9080\"]}]"));
    assert!(allowed(&port, &req()) && !allowed(&port, &Req { port: 1, ..req() }));
}

#[test]
fn tcp_skips_http_only_rules_for_allow_and_ignores_them_for_deny() {
    let tcp = Req { tcp: true, ..req() };
    let allow_get = policies(&ap("get", "  rules:\n  - to: [{operation: {methods: [GET]}}]"));
    assert!(!allowed(&allow_get, &tcp), "an ALLOW rule on methods never matches TCP");
    let allow_port = policies(&ap("port", "  rules:\n  - to: [{operation: {ports: [\"9080\"]}}]"));
    assert!(allowed(&allow_port, &tcp));
    let deny_paths = policies(&ap("deny", "  action: DENY\n  rules:\n  - to: [{operation: {paths: [/admin]}}]"));
    assert!(!allowed(&deny_paths, &tcp), "a DENY rule on paths denies all TCP");
    assert!(allowed(&deny_paths, &req()));
}

#[test]
fn request_principals_need_a_validated_token() {
    let deny_anonymous =
        policies(&ap("jwt", "  action: DENY\n  rules:\n  - from: [{source: {notRequestPrincipals: [\"*\"]}}]"));
    assert!(!allowed(&deny_anonymous, &req()));
    assert!(allowed(&deny_anonymous, &Req { jwt: Some("testing@secure.istio.io/testing@secure.istio.io"), ..req() }));
}
