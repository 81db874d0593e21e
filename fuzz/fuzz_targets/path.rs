//! A request as a proxy judges it: the method and path normalised (every option of
//! `meshConfig.pathNormalization`), then matched against a VirtualService's routes and an
//! AuthorizationPolicy's paths. Normalising twice gives the same path.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshrig::normalize::{self, PathNormalization};
use meshrig::proxy::route::{RequestView, Table};

const ROUTES: &str = "
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: default}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - match: [{uri: {exact: /admin}, method: {exact: DELETE}}]
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /api/v1/}, ignoreUriCase: true}, {uri: {regex: '/items/[0-9]+(/.*)?'}}]
    route: [{destination: {host: httpbin}}]
  - match: [{headers: {x-user: {exact: jason}}, queryParams: {debug: {regex: 'on|1'}}}]
    route: [{destination: {host: httpbin}}]
  - route: [{destination: {host: httpbin}}]
";

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        use meshrig::snapshot::{ProxyIdentity, Role};
        let docs = meshrig::resources::parse::parse_documents("routes.yaml", ROUTES).expect("the fixture parses");
        let gateway = meshrig::registry::Workload::new(ProxyIdentity {
            namespace: "istio-system".into(),
            pod: "istio-ingressgateway-0".into(),
            workload: "istio-ingressgateway".into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            service_account: "istio-ingressgateway".into(),
            role: Role::Gateway,
        });
        let world = meshrig::translate::World::new(docs.into_iter().map(|d| d.resource), [gateway.clone()]);
        let snap = meshrig::translate::snapshot(&world, &gateway, Default::default());
        Table::new(&snap.listeners[0].virtual_hosts)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(4, '\n');
    let (method, authority, target, user) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or("/"), parts.next());
    let mut headers = http::HeaderMap::new();
    if let Some(v) = user.and_then(|u| http::HeaderValue::from_str(u).ok()) {
        headers.append("x-user", v.clone());
        headers.append("x-user", v);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let _ = normalize::method_ok(method);
    for mode in [
        PathNormalization::None,
        PathNormalization::Base,
        PathNormalization::MergeSlashes,
        PathNormalization::DecodeAndMergeSlashes,
    ] {
        let Ok(normal) = normalize::path(path, mode) else { continue };
        assert!(!normal.contains("%00"), "{path:?} under {mode:?} gave {normal:?}");
        if mode != PathNormalization::None && !normal.contains('%') {
            // Without escapes left, a second pass changes nothing: dot segments and slashes are
            // settled by the first. (With escapes it may decode what the first produced, as
            // decoding happens once, so `%%3%300` → `%%300` → a refused `%00`.)
            let again = normalize::path(&normal, mode).expect("a path without escapes normalises");
            assert_eq!(again, normal, "{path:?} under {mode:?}");
        }
        let view = RequestView { method, authority, scheme: "http", path: &normal, query, headers: &headers };
        if let Some(vh) = table().virtual_host(authority) {
            let _ = vh.route(&view);
        }
    }
});
