//! Bookinfo, built in: the project's own Bookinfo manifests behave as istio.io's tasks say
//! (`tests/conformance` runs the same scenario on Istio's files), `up` runs it by default, and
//! images meshrig does not have run as the echo stand-in with one warning.

use crate::scenarios::bookinfo_scenario;
use crate::support::{get, text, Mesh};

#[test]
fn bookinfo_follows_istios_traffic_management_tasks() {
    let mesh = Mesh::up();
    bookinfo_scenario(&mesh, &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples"));
}

#[test]
fn up_runs_bookinfo_by_default_and_remembers_the_apps() {
    let mesh = Mesh::up();
    let out = mesh.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    // A fresh environment brought up the way a user does: Bookinfo's page on the gateway.
    let fresh = Mesh {
        state: tempfile::tempdir().unwrap(),
        work: tempfile::tempdir().unwrap(),
        up_output: String::new(),
        netns: None,
    };
    let args = [vec!["up".to_string()], crate::support::port_args()].concat();
    let up = fresh.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(up.status.success(), "{}", text(&up));
    assert!(text(&up).contains("/productpage"), "up says where Bookinfo is:\n{}", text(&up));
    let page = get(fresh.gateway(), "localhost", "/productpage").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Simple Bookstore App") && page.body.contains("Book Reviews"), "{}", page.body);
    let bad = fresh.run(&["up", "--apps", "wordpress"]);
    assert!(!bad.status.success() && text(&bad).contains("httpbin, bookinfo"), "{}", text(&bad));
}

#[test]
fn an_unknown_image_runs_the_echo_stand_in_with_one_warning() {
    let mesh = Mesh::up();
    let out = mesh.apply_yaml(
        "shop.yaml",
        r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1}
spec:
  selector: {matchLabels: {app: web, version: v1}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers: [{name: web, image: "example.com/shop/web:1.0", ports: [{containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v2}
spec:
  selector: {matchLabels: {app: web, version: v2}}
  template:
    metadata:
      labels: {app: web, version: v2}
      annotations: {echo.meshrig.dev/error-rate: "100%", echo.meshrig.dev/error-status: "502"}
    spec:
      containers: [{name: web, image: "example.com/shop/web:1.0", ports: [{containerPort: 8080}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: web, subset: v2}}]
  - route: [{destination: {host: web, subset: v1}}]
"#,
    );
    assert_eq!(out.matches("echo app").count(), 1, "one warning for both Deployments:\n{out}");
    assert!(out.contains("example.com/shop/web:1.0 (web-v1, web-v2)"), "{out}");
    let v1 = mesh.ok(&["exec", "curl", "--", "curl", "-s", "http://web/cart?id=7"]);
    let v1: serde_json::Value = serde_json::from_str(&v1).unwrap_or_else(|e| panic!("{e}: {v1}"));
    assert_eq!((v1["app"].as_str(), v1["version"].as_str()), (Some("web"), Some("v1")), "{v1}");
    assert_eq!(v1["path"], "/cart?id=7");
    assert!(v1["pod"].as_str().is_some_and(|p| p.starts_with("web-v1-")), "{v1}");
    let code = mesh.http_code_with("curl", "default", "http://web/cart", &["-H", "x-canary: yes"]);
    assert_eq!(code, "502", "the annotated version fails with its status");

    // A misbehaviour that makes no sense is refused, naming the annotation.
    let bad = mesh.work.path().join("bad.yaml");
    std::fs::write(
        &bad,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v3}
spec:
  selector: {matchLabels: {app: web, version: v3}}
  template:
    metadata:
      labels: {app: web, version: v3}
      annotations: {echo.meshrig.dev/error-rate: "lots"}
    spec:
      containers: [{name: web, image: "example.com/shop/web:1.0", ports: [{containerPort: 8080}]}]
"#,
    )
    .unwrap();
    let out = mesh.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("echo.meshrig.dev/error-rate") && text(&out).contains("`lots`"), "{}", text(&out));
}

#[test]
fn productpage_forwards_trace_context_and_the_signed_in_user() {
    let mesh = Mesh::up();
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo");
    let kube = samples.join("platform/kube/bookinfo.yaml");
    let gateway = samples.join("networking/bookinfo-gateway.yaml");
    mesh.ok(&["apply", "--wait", "-f", kube.to_str().unwrap(), "-f", gateway.to_str().unwrap()]);
    // ratings answered by the echo stand-in, which shows the headers it received.
    mesh.apply_yaml(
        "ratings-echo.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-echo}
spec:
  selector: {matchLabels: {app: ratings, version: echo}}
  template:
    metadata: {labels: {app: ratings, version: echo}}
    spec:
      containers: [{name: ratings, image: "example.com/echo:1", ports: [{containerPort: 9080}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  subsets: [{name: echo, labels: {version: echo}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings, subset: echo}}]}]
"#,
    );
    let gw = mesh.gateway();
    let cookie = crate::support::session_cookie(&crate::support::sign_in(gw, "jason"));
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = crate::support::request(
        gw,
        "GET",
        "bookinfo.local",
        "/api/v1/products/0/ratings",
        &[
            ("Cookie", &cookie),
            ("x-request-id", "forwarding-test-1"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
            ("traceparent", trace),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert_eq!(seen["version"], "echo", "{seen}");
    let h = &seen["headers"];
    assert_eq!(h["x-request-id"][0], "forwarding-test-1", "{h}");
    assert_eq!(h["x-b3-traceid"][0], "80f198ee56343ba864fe8b2a57d3eff7", "{h}");
    assert_eq!(h["traceparent"][0], trace, "{h}");
    assert_eq!(h["end-user"][0], "jason", "productpage sends the signed-in user on: {h}");
    assert_eq!(h["user-agent"][0], "meshrig-test", "{h}");
}

#[test]
fn bookinfo_follows_istios_http_authorization_task() {
    let mesh = Mesh::up();
    crate::scenarios::authorization_scenario(&mesh, &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples"));
}
