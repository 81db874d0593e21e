//! Scenarios from Istio's tasks, run on the project's samples (`tests/mesh`) and on Istio's own
//! (`tests/conformance`).

use std::path::Path;

use crate::support::{get, requests_total, Mesh};

/// Istio's httpbin task: httpbin, curl and the httpbin gateway from `dir` (Istio's layout).
pub fn httpbin_scenario(mesh: &Mesh, dir: &Path) {
    let files = ["httpbin/httpbin.yaml", "curl/curl.yaml", "httpbin/httpbin-gateway.yaml"]
        .map(|f| dir.join(f).display().to_string());
    let mut args = vec!["apply", "--wait"];
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    let applied = mesh.ok(&args);
    assert!(applied.contains("gateway/httpbin-gateway created"), "{applied}");
    assert!(!applied.contains("not enforced"), "everything in the samples is enforced:\n{applied}");

    // Through the ingress gateway on localhost: the VirtualService routes every host and path.
    let gw = mesh.gateway();
    let r = get(gw, "anything.example", "/headers").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("server"), Some("istio-envoy"));
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["headers"]["Host"][0], "anything.example", "the gateway keeps the Host header");
    assert!(json["headers"]["X-Request-Id"][0].as_str().is_some_and(|id| id.len() == 36));
    assert_eq!(get(gw, "x", "/status/503").unwrap().status, 503);

    // From inside the curl workload, by every name form, on port 8000.
    for host in ["httpbin", "httpbin.default", "httpbin.default.svc.cluster.local"] {
        assert_eq!(mesh.http_code("curl", "default", &format!("http://{host}:8000/get")), "200", "{host}");
    }
    let out = mesh.run(&["exec", "deploy/curl", "--", "curl", "-sS", "-D", "-", "http://httpbin:8000/status/418"]);
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("418") && reply.contains("I'm a teapot!"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("server: envoy"), "a sidecar answers with server: envoy:\n{reply}");

    // The gateway reports each request in Istio's metric, with Istio's label names.
    let series = requests_total(mesh.admin("istio-ingressgateway"));
    let (line, _) = series
        .iter()
        .find(|(labels, _)| labels.contains("response_code=\"503\""))
        .unwrap_or_else(|| panic!("no istio_requests_total for the 503: {series:?}"));
    for label in [
        "reporter=\"source\"",
        "source_workload=\"istio-ingressgateway\"",
        "destination_workload=\"httpbin\"",
        "destination_service=\"httpbin.default.svc.cluster.local\"",
        "destination_app=\"httpbin\"",
        "destination_version=\"v1\"",
        "response_flags=\"-\"",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }

    // A name the mesh does not know is not silently routed somewhere else.
    assert_ne!(mesh.http_code("curl", "default", "http://nosuchservice:8000/"), "200");
}

/// Istio's sleep sample in a namespace without injection reaches httpbin by its namespaced name.
pub fn sleep_scenario(mesh: &Mesh, sleep: &Path) {
    let legacy = mesh.work.path().join("legacy.yaml");
    std::fs::write(&legacy, "apiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n").unwrap();
    mesh.ok(&["apply", "-f", legacy.to_str().unwrap()]);
    let sleep = sleep.display().to_string();
    mesh.ok(&["apply", "--wait", "-n", "legacy", "-f", &sleep]);
    let status = mesh.status();
    let pod = status["pods"].as_array().unwrap().iter().find(|p| p["namespace"] == "legacy").unwrap();
    assert_eq!(pod["role"], "plain", "no injection label on the namespace: no sidecar");
    assert_eq!(mesh.http_code("sleep", "legacy", "http://httpbin.default:8000/ip"), "200");
    // The short name is only for clients in the same namespace, as in Kubernetes.
    assert_ne!(mesh.http_code("sleep", "legacy", "http://httpbin:8000/ip"), "200");
}

/// Stars on a product page: (full stars, their colours).
fn stars(page: &str) -> (usize, Vec<String>) {
    let colours = page
        .match_indices("class=\"flex gap-x-1 text-")
        .map(|(i, m)| page[i + m.len()..].split('-').next().unwrap_or("").to_string())
        .collect();
    (page.matches("glyphicon-star\"").count(), colours)
}

/// Istio's Bookinfo tasks on the files in `dir` (Istio's layout): the page through the
/// gateway, request routing for jason, fault injection (abort and delay against productpage's
/// own timeouts), traffic shifting, and the JSON API.
pub fn bookinfo_scenario(mesh: &Mesh, dir: &Path) {
    let net = |f: &str| dir.join("bookinfo/networking").join(f).display().to_string();
    let kube = dir.join("bookinfo/platform/kube/bookinfo.yaml").display().to_string();
    let applied = mesh.ok(&[
        "apply",
        "--wait",
        "-f",
        &kube,
        "-f",
        &net("bookinfo-gateway.yaml"),
        "-f",
        &net("destination-rule-all.yaml"),
    ]);
    assert!(
        applied.contains("deployment/reviews-v3 created") || applied.contains("deployment/reviews-v3 unchanged"),
        "{applied}"
    );
    let pods = mesh.ok(&["get", "pods"]);
    for d in ["productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"] {
        assert!(pods.lines().any(|l| l.starts_with(d) && l.contains("2/2") && l.contains("Running")), "{d}:\n{pods}");
    }
    let gw = mesh.gateway();
    let page = |cookie: Option<&str>| {
        let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("Cookie", c)]).unwrap_or_default();
        let r = crate::support::request(gw, "GET", "bookinfo.local", "/productpage", &headers).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    // Until a route settles: ask up to 50 times for a page that satisfies `ok`.
    let until = |cookie: Option<&str>, what: &str, ok: &dyn Fn(&str) -> bool| -> String {
        let mut last = String::new();
        for _ in 0..50 {
            last = page(cookie);
            if ok(&last) {
                return last;
            }
        }
        panic!("never saw {what}; last page:\n{last}");
    };

    let first = page(None);
    assert!(first.contains("<title>Simple Bookstore App</title>"), "{first}");
    assert!(first.contains("Book Details") && first.contains("PublisherA"), "{first}");
    assert!(first.contains("Book Reviews") && first.contains("Reviews served by:"), "{first}");

    // Request routing: everyone to v1, then jason to v2.
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-all-v1.yaml")]);
    let v1 = until(None, "a page without stars", &|p| stars(p).0 == 0);
    assert!(v1.contains("reviews-v1-"), "served by reviews v1");
    for _ in 0..10 {
        assert_eq!(stars(&page(None)).0, 0, "all-v1 sends everyone to reviews v1");
    }
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-reviews-test-v2.yaml")]);
    let login = crate::support::sign_in(gw, "jason");
    assert_eq!(login.status, 302, "{}", login.body);
    assert_eq!(login.header("location"), Some("http://bookinfo.local/productpage"));
    let cookie = crate::support::session_cookie(&login);
    assert!(cookie.starts_with("session="), "{cookie}");
    let jason = until(Some(&cookie), "jason's black stars", &|p| stars(p).0 == 9);
    assert_eq!(stars(&jason).1, ["black", "black"]);
    assert!(jason.contains("jason") && jason.contains("Sign out"), "jason is shown as logged in");
    assert_eq!(stars(&page(None)).0, 0, "anonymous users still see v1");

    // Fault injection: an abort for jason shows ratings' error; a 7 s delay breaks the page
    // through productpage's own timeouts (3 s, twice), and anonymous users are unaffected.
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-ratings-test-abort.yaml")]);
    let aborted = until(Some(&cookie), "ratings' error", &|p| p.contains("Ratings service is currently unavailable"));
    assert_eq!(stars(&aborted).0, 0);
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-ratings-test-delay.yaml")]);
    let started = std::time::Instant::now();
    let delayed = until(Some(&cookie), "the reviews error", &|p| p.contains("Error fetching product reviews"));
    assert!(delayed.contains("Sorry, product reviews are currently unavailable for this book."), "{delayed}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(6), "two tries of 3 s: {:?}", started.elapsed());
    // Anonymous users are not delayed: their page has its reviews (a delay would have made
    // productpage give up on them, as it did for jason).
    let anonymous = page(None);
    assert!(anonymous.contains("Book Reviews") && !anonymous.contains("Sorry, product reviews"), "{anonymous}");

    // Traffic shifting: 50/50 between v1 (no stars) and v3 (red). Over 40 pages both show up
    // unless the split is broken (all 40 alike by chance: 2 × 0.5^40).
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-reviews-50-v3.yaml")]);
    until(None, "red stars", &|p| stars(p).1.contains(&"red".to_string()));
    let (mut none, mut red) = (0, 0);
    for _ in 0..40 {
        match stars(&page(None)).1.first().map(String::as_str) {
            None => none += 1,
            Some("red") => red += 1,
            Some(other) => panic!("{other} stars under a v1/v3 split"),
        }
    }
    assert!(none > 0 && red > 0, "v1 {none}, v3 {red}");
    // All to v3; then jason to v2 and everyone else to v3; then v2 and v3 half and half.
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-reviews-v3.yaml")]);
    until(None, "only red stars", &|p| stars(p).1 == ["red", "red"]);
    for _ in 0..10 {
        assert_eq!(stars(&page(None)).1, ["red", "red"], "reviews-v3 sends everyone to v3");
    }
    // (all-v1 first takes jason's ratings delay away.)
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-all-v1.yaml")]);
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-reviews-jason-v2-v3.yaml")]);
    until(Some(&cookie), "black stars for jason", &|p| stars(p).1 == ["black", "black"]);
    assert_eq!(stars(&page(None)).1, ["red", "red"]);
    mesh.ok(&["apply", "--wait", "-f", &net("virtual-service-reviews-v2-v3.yaml")]);
    until(None, "black stars for anyone", &|p| stars(p).1.first().map(String::as_str) == Some("black"));
    until(None, "red stars for anyone", &|p| stars(p).1.first().map(String::as_str) == Some("red"));

    // The JSON API and health.
    let api = crate::support::get(gw, "bookinfo.local", "/api/v1/products").unwrap();
    let products: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(products[0]["title"], "The Comedy of Errors");
    let reviews = crate::support::get(gw, "bookinfo.local", "/api/v1/products/0/reviews").unwrap();
    let reviews: serde_json::Value = serde_json::from_str(&reviews.body).unwrap();
    assert!(reviews["podname"].as_str().is_some_and(|p| p.starts_with("reviews-v")), "{reviews}");
    let details = crate::support::get(gw, "bookinfo.local", "/api/v1/products/abc").unwrap();
    assert_eq!(details.status, 400, "details refuses a non-numeric id: {}", details.body);

    // Request timeouts (Istio's task, its YAML written inline as istio.io does): reviews v2,
    // ratings slowed by 2 s, then a 0.5 s timeout on reviews: the page comes back in about 1 s
    // (productpage tries twice) with the reviews unavailable.
    mesh.apply_yaml(
        "request-timeouts.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v2}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault: {delay: {percentage: {value: 100}, fixedDelay: 2s}}
    route: [{destination: {host: ratings, subset: v1}}]
",
    );
    let slow = until(None, "black stars after the ratings delay", &|p| {
        stars(p).1.first().map(String::as_str) == Some("black")
    });
    assert!(slow.contains("Book Reviews"));
    let started = std::time::Instant::now();
    assert_eq!(stars(&page(None)).1.first().map(String::as_str), Some("black"));
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "ratings is delayed 2 s: {:?}", started.elapsed());
    mesh.apply_yaml(
        "reviews-timeout.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v2}}], timeout: 0.5s}]
",
    );
    until(None, "the reviews timeout", &|p| p.contains("Error fetching product reviews"));
    let started = std::time::Instant::now();
    let timed_out = page(None);
    let took = started.elapsed();
    assert!(timed_out.contains("Sorry, product reviews are currently unavailable for this book."), "{timed_out}");
    assert!(
        took >= std::time::Duration::from_millis(1000) && took < std::time::Duration::from_secs(3),
        "two tries of 0.5 s (productpage's own 3 s timeout did not decide): {took:?}"
    );
}

fn authorization_policy(name: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}\n---\n")
}

/// istio.io's HTTP traffic authorization task on Bookinfo from `dir`: allow-nothing, then
/// productpage for GET, then details and reviews for productpage's service account, then
/// ratings for reviews', each step showing the page the task documents.
pub fn authorization_scenario(mesh: &Mesh, dir: &Path) {
    let kube = dir.join("bookinfo/platform/kube/bookinfo.yaml").display().to_string();
    let gateway = dir.join("bookinfo/networking/bookinfo-gateway.yaml").display().to_string();
    mesh.ok(&["apply", "--wait", "-f", &kube, "-f", &gateway]);
    let gw = mesh.gateway();
    let page = || crate::support::get(gw, "bookinfo.local", "/productpage").unwrap();
    let until = |what: &str, ok: &dyn Fn(&crate::support::Reply) -> bool| {
        let mut last = page();
        for _ in 0..60 {
            if ok(&last) {
                return last;
            }
            last = page();
        }
        panic!("never saw {what}; last answer {}:\n{}", last.status, last.body);
    };
    assert_eq!(page().status, 200);

    let apply = |name: &str, yaml: &str| mesh.apply_yaml(name, yaml);
    apply("allow-nothing.yaml", &authorization_policy("allow-nothing", "  {}"));
    let denied = page();
    assert_eq!((denied.status, denied.body.as_str()), (403, "RBAC: access denied"));
    // From inside the mesh too.
    let code = mesh.http_code("productpage-v1", "default", "http://details:9080/details/0");
    assert_eq!(code, "403", "allow-nothing covers details");

    apply(
        "productpage-viewer.yaml",
        &authorization_policy(
            "productpage-viewer",
            "  selector:\n    matchLabels:\n      app: productpage\n  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]",
        ),
    );
    let p = page();
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("Error fetching product details"), "{}", p.body);
    assert!(p.body.contains("Error fetching product reviews"), "{}", p.body);

    let viewer = |app: &str, sa: &str| {
        authorization_policy(
            &format!("{app}-viewer"),
            &format!(
                "  selector:\n    matchLabels:\n      app: {app}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/{sa}\"]\n    to:\n    - operation:\n        methods: [\"GET\"]"
            ),
        )
    };
    apply("details-viewer.yaml", &viewer("details", "bookinfo-productpage"));
    apply("reviews-viewer.yaml", &viewer("reviews", "bookinfo-productpage"));
    let p = until("details and reviews without ratings", &|r| {
        r.status == 200 && r.body.contains("Ratings service is currently unavailable")
    });
    assert!(p.body.contains("PublisherA") && !p.body.contains("Error fetching product details"), "{}", p.body);
    assert!(!p.body.contains("Error fetching product reviews"), "{}", p.body);

    apply("ratings-viewer.yaml", &viewer("ratings", "bookinfo-reviews"));
    let p = until("stars", &|r| r.status == 200 && stars(&r.body).0 > 0);
    assert!(!p.body.contains("Ratings service is currently unavailable"), "{}", p.body);

    // A DENY wins over every ALLOW; a principal that is not productpage's is refused.
    assert_eq!(mesh.http_code("ratings-v1", "default", "http://details:9080/details/0"), "403");
    apply(
        "deny-api.yaml",
        &authorization_policy(
            "deny-api",
            "  selector:\n    matchLabels:\n      app: productpage\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/*\"]",
        ),
    );
    assert_eq!(crate::support::get(gw, "bookinfo.local", "/api/v1/products").unwrap().status, 403);
    assert_eq!(page().status, 200);
    // The denials are in productpage's metrics with Envoy's flag.
    let series = requests_total(mesh.admin("productpage-v1"));
    assert!(
        series.iter().any(|(l, _)| l.contains("response_code=\"403\"") && l.contains("response_flags=\"RBAC\"")),
        "{series:#?}"
    );
}

fn mtls_setup(mesh: &Mesh, dir: &Path) {
    for ns in ["foo", "bar", "legacy"] {
        mesh.ok(&["create", "namespace", ns]);
    }
    mesh.ok(&["label", "namespace", "foo", "istio-injection=enabled"]);
    mesh.ok(&["label", "namespace", "bar", "istio-injection=enabled"]);
    let (httpbin, curl) = (dir.join("httpbin/httpbin.yaml"), dir.join("curl/curl.yaml"));
    for ns in ["foo", "bar"] {
        mesh.ok(&["apply", "-n", ns, "-f", httpbin.to_str().unwrap()]);
        mesh.ok(&["apply", "-n", ns, "-f", curl.to_str().unwrap()]);
    }
    mesh.ok(&["apply", "-n", "legacy", "-f", curl.to_str().unwrap(), "--wait"]);
}

/// `exec curl.FROM -- curl http://httpbin.TO:8000/ip`: the code curl printed and its exit code.
fn call(mesh: &Mesh, from: &str, to: &str) -> (String, i32) {
    let url = format!("http://httpbin.{to}:8000/ip");
    let out =
        mesh.run(&["exec", "-n", from, "curl", "--", "curl", &url, "-s", "-o", "/dev/null", "-w", "%{http_code}"]);
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1))
}

fn every_pair(mesh: &Mesh) -> Vec<String> {
    let mut out = vec![];
    for from in ["foo", "bar", "legacy"] {
        for to in ["foo", "bar"] {
            let (code, exit) = call(mesh, from, to);
            out.push(format!("curl.{from} to httpbin.{to}: {code} (exit {exit})"));
        }
    }
    out
}

/// istio.io's mutual TLS migration and authentication policy tasks on httpbin and curl from
/// `dir`: `foo` and `bar` with sidecars, `legacy` without; PERMISSIVE, then STRICT in foo (the
/// client without a sidecar is reset: curl's 000 and exit 56), a workload exception by port,
/// then mesh-wide STRICT.
pub fn mtls_migration_scenario(mesh: &Mesh, dir: &Path) {
    mtls_setup(mesh, dir);
    let all_ok: Vec<String> = ["foo", "bar", "legacy"]
        .iter()
        .flat_map(|f| ["foo", "bar"].map(|t| format!("curl.{f} to httpbin.{t}: 200 (exit 0)")))
        .collect();
    assert_eq!(every_pair(mesh), all_ok, "PERMISSIVE (no policy): everyone gets through");

    // Sidecar to sidecar is mutual TLS: httpbin sees the client's certificate in XFCC.
    let headers = mesh.ok(&["exec", "-n", "foo", "curl", "--", "curl", "-s", "http://httpbin.foo:8000/headers"]);
    assert!(
        headers.contains("By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=")
            && headers.contains(r#";Subject=\"\";URI=spiffe://cluster.local/ns/foo/sa/curl""#),
        "{headers}"
    );
    let legacy = mesh.ok(&["exec", "-n", "legacy", "curl", "--", "curl", "-s", "http://httpbin.foo:8000/headers"]);
    assert!(!legacy.contains("X-Forwarded-Client-Cert"), "{legacy}");

    // The server side reports who called over mTLS.
    let admin = mesh.admin_in("foo", "httpbin");
    let series = requests_total(admin);
    let mtls = series.iter().any(|(l, _)| {
        l.contains(r#"reporter="destination""#)
            && l.contains(r#"source_principal="spiffe://cluster.local/ns/foo/sa/curl""#)
            && l.contains(r#"destination_principal="spiffe://cluster.local/ns/foo/sa/httpbin""#)
            && l.contains(r#"connection_security_policy="mutual_tls""#)
    });
    let plain = series.iter().any(|(l, _)| {
        l.contains(r#"reporter="destination""#)
            && l.contains(r#"source_principal="unknown""#)
            && l.contains(r#"connection_security_policy="none""#)
    });
    assert!(mtls && plain, "{series:#?}");

    mesh.apply_yaml(
        "strict-foo.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: foo\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    let mut expected = all_ok.clone();
    expected[4] = "curl.legacy to httpbin.foo: 000 (exit 56)".into();
    assert_eq!(every_pair(mesh), expected, "STRICT in foo: the client without a sidecar is reset");

    // A workload exception: httpbin's port 8080 takes plaintext again (sidecars then send
    // plaintext to it too, as auto mTLS follows the server's mode).
    mesh.apply_yaml(
        "httpbin-port.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: httpbin\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    8080:\n      mode: DISABLE\n",
    );
    assert_eq!(every_pair(mesh), all_ok, "port 8080 of httpbin.foo is DISABLE");
    let headers = mesh.ok(&["exec", "-n", "foo", "curl", "--", "curl", "-s", "http://httpbin.foo:8000/headers"]);
    assert!(!headers.contains("X-Forwarded-Client-Cert"), "plaintext now: {headers}");

    // Mesh-wide STRICT: bar's httpbin refuses legacy too; foo keeps its exception.
    mesh.ok(&["delete", "peerauthentication", "httpbin", "-n", "foo"]);
    mesh.apply_yaml(
        "mesh-strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    let mut expected = all_ok;
    expected[4] = "curl.legacy to httpbin.foo: 000 (exit 56)".into();
    expected[5] = "curl.legacy to httpbin.bar: 000 (exit 56)".into();
    assert_eq!(every_pair(mesh), expected);
}

/// istio.io's authentication policy task on httpbin and curl from `dir`: mutual TLS per
/// workload and per port, a workload policy over its namespace's (with its DestinationRule),
/// then end-user authentication at the ingress gateway with keys fetched from `jwksUri` (the
/// project's JWT issuer sample, as the task's GitHub URL needs the internet) and the two
/// AuthorizationPolicies that require a token.
pub fn authentication_policy_scenario(mesh: &Mesh, dir: &Path) {
    mtls_setup(mesh, dir);
    let all_ok: Vec<String> = ["foo", "bar", "legacy"]
        .iter()
        .flat_map(|f| ["foo", "bar"].map(|t| format!("curl.{f} to httpbin.{t}: 200 (exit 0)")))
        .collect();
    let but = |resets: &[usize]| {
        let mut out = all_ok.clone();
        for i in resets {
            out[*i] = out[*i].replace(": 200 (exit 0)", ": 000 (exit 56)");
        }
        out
    };
    let pa = |name: &str, ns: &str, body: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}")
    };
    // Per workload: STRICT for bar's httpbin only; then its port 8080 takes plaintext again.
    let workload = "  selector:\n    matchLabels:\n      app: httpbin\n  mtls:\n    mode: STRICT\n";
    mesh.apply_yaml("bar-httpbin.yaml", &pa("httpbin", "bar", workload));
    assert_eq!(every_pair(mesh), but(&[5]), "only legacy to httpbin.bar is reset");
    let port = format!("{workload}  portLevelMtls:\n    8080:\n      mode: DISABLE\n");
    mesh.apply_yaml("bar-httpbin.yaml", &pa("httpbin", "bar", &port));
    assert_eq!(every_pair(mesh), all_ok, "port 8080 is DISABLE");

    // Precedence: foo is STRICT, and a workload policy (with its DestinationRule) turns it off
    // for foo's httpbin.
    mesh.apply_yaml("foo-strict.yaml", &pa("default", "foo", "  mtls:\n    mode: STRICT\n"));
    assert_eq!(every_pair(mesh), but(&[4]));
    mesh.apply_yaml(
        "overwrite.yaml",
        &format!(
            "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: overwrite-example\n  namespace: foo\nspec:\n  host: httpbin.foo.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n",
            pa("overwrite-example", "foo", "  selector:\n    matchLabels:\n      app: httpbin\n  mtls:\n    mode: DISABLE\n")
        ),
    );
    assert_eq!(every_pair(mesh), all_ok, "the workload policy wins over its namespace's");
    for (kind, name, ns) in [
        ("peerauthentication", "overwrite-example", "foo"),
        ("destinationrule", "overwrite-example", "foo"),
        ("peerauthentication", "default", "foo"),
        ("peerauthentication", "httpbin", "bar"),
    ] {
        mesh.ok(&["delete", kind, name, "-n", ns]);
    }

    // End-user authentication at the ingress gateway.
    mesh.ok(&["apply", "-n", "foo", "-f", dir.join("httpbin/httpbin-gateway.yaml").to_str().unwrap(), "--wait"]);
    let issuer = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/jwt-issuer/jwt-issuer.yaml");
    mesh.ok(&["apply", "-n", "istio-system", "-f", issuer.to_str().unwrap(), "--wait"]);
    let gw = mesh.gateway();
    let call = |path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default();
        crate::support::request(gw, "GET", "httpbin.example.com", path, &headers).unwrap().status
    };
    assert_eq!(call("/headers", None), 200);
    mesh.apply_yaml(
        "jwt-example.yaml",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt-example\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  jwtRules:\n  - issuer: \"testing@meshrig.local\"\n    jwksUri: \"http://jwt-issuer.istio-system.svc.cluster.local:8000/jwks.json\"\n",
    );
    let out = mesh.run(&["exec", "-n", "foo", "curl", "--", "curl", "-s", "http://jwt-issuer.istio-system:8000/token"]);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!((call("/headers", None), call("/headers", Some("deadbeef"))), (200, 401), "no token, a bad one");
    assert_eq!(call("/headers", Some(&token)), 200, "a valid token");
    let deny = |to: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: frontend-ingress\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  action: DENY\n  rules:\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]\n{to}"
        )
    };
    mesh.apply_yaml("frontend-ingress.yaml", &deny(""));
    assert_eq!((call("/headers", None), call("/headers", Some(&token))), (403, 200), "a token is required");
    mesh.apply_yaml("frontend-ingress.yaml", &deny("    to:\n    - operation:\n        paths: [\"/headers\"]\n"));
    assert_eq!((call("/headers", None), call("/ip", None)), (403, 200), "only on /headers");
}

/// A CA and certificates it signs, as the secure ingress task makes them with openssl.
pub struct Pki {
    pub ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "example Inc.");
        Pki { ca: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }
    /// (certificate PEM, key PEM) for `name`.
    pub fn issue(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// `curl --cacert ca.crt --resolve host:PORT:127.0.0.1 https://host:PORT/path` with `extra`
/// arguments: (the code curl printed, its exit code).
pub fn https(mesh: &Mesh, port: &str, path: &str, extra: &[&str]) -> (String, i32) {
    let resolve = format!("httpbin.example.com:{port}:127.0.0.1");
    let url = format!("https://httpbin.example.com:{port}{path}");
    let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", "ca.crt", "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = std::process::Command::new("curl").args(&args).current_dir(mesh.work.path()).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1))
}

/// The certificate the gateway serves for `host`, as a TLS client sees it.
pub fn served_certificate(addr: std::net::SocketAddr, host: &'static str, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in meshrig::tls::certs_from_pem(ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(meshrig::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), host.try_into().unwrap()).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    conn.complete_io(&mut sock).unwrap();
    conn.peer_certificates().unwrap()[0].to_vec()
}

/// istio.io's secure ingress task on httpbin from `dir`: SIMPLE TLS from a Secret (HTTP/2 by
/// ALPN, the teapot), `httpsRedirect`, a rotated Secret served without a restart, then MUTUAL
/// with and without a client certificate.
pub fn secure_ingress_scenario(mesh: &Mesh, samples: &Path) {
    mesh.ok(&["apply", "-f", samples.join("httpbin/httpbin.yaml").to_str().unwrap(), "--wait"]);
    let dir = mesh.work.path();
    let pki = Pki::new();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("ca.crt", &pki.ca.pem());
    let (cert, key) = pki.issue("httpbin.example.com");
    write("httpbin.crt", &cert);
    write("httpbin.key", &key);
    mesh.ok(&[
        "create",
        "secret",
        "tls",
        "httpbin-credential",
        "-n",
        "istio-system",
        "--cert",
        "httpbin.crt",
        "--key",
        "httpbin.key",
    ]);
    let gateway = |mode: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: mygateway\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    tls:\n      mode: {mode}\n      credentialName: httpbin-credential\n    hosts: [httpbin.example.com]\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    tls: {{httpsRedirect: true}}\n    hosts: [httpbin.example.com]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts: [httpbin.example.com]\n  gateways: [mygateway]\n  http:\n  - match: [{{uri: {{prefix: /status}}}}, {{uri: {{prefix: /delay}}}}]\n    route:\n    - destination: {{port: {{number: 8000}}, host: httpbin}}\n"
        )
    };
    let applied = mesh.apply_yaml("gateway.yaml", &gateway("SIMPLE"));
    assert!(!applied.contains("not served") && !applied.contains("not enforced"), "{applied}");
    let port = mesh.status()["gateway"]["https"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    assert_eq!(https(mesh, &port, "/status/418", &[]), ("418".into(), 0), "SIMPLE: the teapot over TLS");
    // HTTP/2 by ALPN, as istio.io's `curl -v` shows it (`< HTTP/2 418`), and HTTP/1.1 on request.
    let version = |extra: &[&str]| {
        let mut args = vec!["-w", "%{http_code} %{http_version}"];
        args.extend_from_slice(extra);
        https(mesh, &port, "/status/418", &args).0
    };
    assert_eq!(version(&[]), "418 2");
    assert_eq!(version(&["--http1.1"]), "418 1.1");
    let body = std::process::Command::new("curl")
        .args(["-s", "--cacert", "ca.crt", "--resolve", &format!("httpbin.example.com:{port}:127.0.0.1")])
        .arg(format!("https://httpbin.example.com:{port}/status/418"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&body.stdout).contains("I'm a teapot"), "the body over HTTP/2");
    assert_eq!(https(mesh, &port, "/headers", &[]).0, "404", "only /status and /delay are routed");
    // Plain HTTP for that host is redirected to https.
    let redirect = get(mesh.gateway(), "httpbin.example.com", "/status/200").unwrap();
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("https://httpbin.example.com/status/200"));

    // Rotation: a new certificate in the same Secret is served to new handshakes, with no restart.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let gateway_pid =
        mesh.status()["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "istio-ingressgateway").unwrap()
            ["pids"]
            .clone();
    let before = served_certificate(addr, "httpbin.example.com", &pki.ca.pem());
    let (cert2, key2) = pki.issue("httpbin.example.com");
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    mesh.apply_yaml(
        "rotated.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: httpbin-credential\n  namespace: istio-system\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
            b64(&cert2),
            b64(&key2)
        ),
    );
    let after = served_certificate(addr, "httpbin.example.com", &pki.ca.pem());
    assert_ne!(before, after);
    assert_eq!(after, meshrig::tls::certs_from_pem(&cert2).unwrap()[0].to_vec());
    let still =
        mesh.status()["pods"].as_array().unwrap().iter().find(|p| p["workload"] == "istio-ingressgateway").unwrap()
            ["pids"]
            .clone();
    assert_eq!(gateway_pid, still, "the gateway was not restarted");

    // MUTUAL: the Secret gains ca.crt; a client without a certificate fails, one with works.
    mesh.ok(&["delete", "secret", "httpbin-credential", "-n", "istio-system"]);
    write("httpbin.crt", &cert2);
    write("httpbin.key", &key2);
    mesh.ok(&[
        "create",
        "secret",
        "generic",
        "httpbin-credential",
        "-n",
        "istio-system",
        "--from-file=tls.crt=httpbin.crt",
        "--from-file=tls.key=httpbin.key",
        "--from-file=ca.crt=ca.crt",
    ]);
    mesh.apply_yaml("gateway.yaml", &gateway("MUTUAL"));
    let (code, exit) = https(mesh, &port, "/status/418", &[]);
    assert!(code == "000" && exit != 0, "no client certificate: {code} (exit {exit})");
    let (client_cert, client_key) = pki.issue("client.example.com");
    write("client.crt", &client_cert);
    write("client.key", &client_key);
    assert_eq!(https(mesh, &port, "/status/418", &["--cert", "client.crt", "--key", "client.key"]), ("418".into(), 0));
}

/// The DestinationRule of Istio's circuit-breaking task.
const CIRCUIT_BREAKER: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n        maxRequestsPerConnection: 1\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n";

/// `Code NNN : count` from fortio's report.
fn fortio_code(report: &str, code: u16) -> u64 {
    let prefix = format!("Code {code:3} : ");
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |rest| rest.split_whitespace().next().unwrap().parse().unwrap())
}

/// Istio's circuit-breaking task: httpbin and the fortio client from `dir`, the task's
/// DestinationRule; `fortio curl` gets through; `fortio load` at `-c 2 -n 20` and `-c 3 -n 30`
/// sees 200s and overflow 503s; the fortio pod's proxy counts exactly those overflows in the
/// pending stats the task greps for.
pub fn circuit_breaking_scenario(mesh: &Mesh, dir: &Path) {
    for f in ["httpbin/httpbin.yaml", "httpbin/sample-client/fortio-deploy.yaml"] {
        mesh.ok(&["apply", "-f", dir.join(f).to_str().unwrap(), "--wait"]);
    }
    mesh.apply_yaml("httpbin-circuit-breaker.yaml", CIRCUIT_BREAKER);
    let fortio = |args: &[&str]| {
        let mut all = vec!["exec", "fortio-deploy", "-c", "fortio", "--", "/usr/bin/fortio"];
        all.extend_from_slice(args);
        mesh.run(&all)
    };
    let curl = fortio(&["curl", "-quiet", "http://httpbin:8000/get"]);
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(curl.status.success(), "{}", crate::support::text(&curl));
    assert!(body.contains("fortio.org/fortio") && body.contains("\"httpbin:8000\""), "{body}");
    assert!(String::from_utf8_lossy(&curl.stderr).starts_with("HTTP/1.1 200 OK"), "headers go to stderr, as fortio's");
    // The pod serves fortio's echo on 8080; `status=` shapes the answer, and `fortio curl`
    // fails on anything but 200.
    let teapot = fortio(&["curl", "http://fortio:8080/echo?status=418"]);
    let err = String::from_utf8_lossy(&teapot.stderr);
    assert_eq!(teapot.status.code(), Some(1), "{err}");
    assert!(err.starts_with("HTTP/1.1 418") && err.contains("Error status 418"), "{err}");

    let mut overflows = 0;
    for (c, n) in [("2", 20), ("3", 30)] {
        let n_text = n.to_string();
        let out =
            fortio(&["load", "-c", c, "-qps", "0", "-n", &n_text, "-loglevel", "Warning", "http://httpbin:8000/get"]);
        assert!(out.status.success(), "{}", crate::support::text(&out));
        // fortio prints its whole report on stderr.
        let report = String::from_utf8_lossy(&out.stderr);
        let (ok, overflowed) = (fortio_code(&report, 200), fortio_code(&report, 503));
        assert!(ok > 0 && overflowed > 0 && ok + overflowed == n, "-c {c}:\n{report}");
        assert!(report.contains(&format!("All done {n} calls (plus 0 warmup)")), "{report}");
        assert!(report.contains("# target 50% "), "{report}");
        overflows += overflowed;
    }
    let stats =
        mesh.ok(&["exec", "fortio-deploy", "-c", "istio-proxy", "--", "pilot-agent", "request", "GET", "stats"]);
    let pending: Vec<&str> = stats.lines().filter(|l| l.contains("httpbin") && l.contains("pending")).collect();
    let prefix = "cluster.outbound|8000||httpbin.default.svc.cluster.local.";
    for (stat, value) in [
        ("circuit_breakers.default.remaining_pending", Some(1)),
        ("circuit_breakers.default.rq_pending_open", Some(0)),
        ("circuit_breakers.high.rq_pending_open", Some(0)),
        ("upstream_rq_pending_active", Some(0)),
        ("upstream_rq_pending_failure_eject", Some(0)),
        ("upstream_rq_pending_overflow", Some(overflows)),
        ("upstream_rq_pending_total", None),
    ] {
        let line = pending
            .iter()
            .find(|l| l.starts_with(&format!("{prefix}{stat}: ")))
            .unwrap_or_else(|| panic!("{stat}: {pending:#?}"));
        if let Some(v) = value {
            assert_eq!(line.rsplit_once(": ").unwrap().1, v.to_string(), "{line}");
        }
    }
}
