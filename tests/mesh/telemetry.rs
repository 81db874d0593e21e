//! Istio's standard metrics as the proxies expose them: both reporters of one hop, the caller
//! named through the metadata exchange, sizes, and an exposition `promtool` accepts.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{get, series, sum, within, Mesh};

/// How often the collector is asked again for spans on their way.
const POLL: Duration = Duration::from_millis(100);

/// `promtool check metrics` on a proxy's exposition, when CI names promtool
/// (`MESHRIG_PROMTOOL`; `.ci/run` installs Debian's `prometheus` package for it). It must
/// parse (exit 1 is a format error) and lint clean but for the one problem Istio's own metric
/// name has: promtool wants seconds, Istio's name says milliseconds (exit 3, lint only).
fn promtool_accepts(admin: SocketAddr) {
    let Some(promtool) = crate::support::tool("MESHRIG_PROMTOOL", "checking the exposition with promtool") else {
        return;
    };
    let text = get(admin, "localhost", "/stats/prometheus").unwrap().body;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let istios_name = "istio_request_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\"";
    let only_istios_name =
        out.status.code() == Some(3) && said.lines().all(|l| l.trim().is_empty() || l == istios_name);
    assert!(out.status.success() || only_istios_name, "promtool check metrics:\n{said}\n{text}");
}

#[test]
fn one_hop_is_reported_by_both_sides_with_the_caller_named_and_its_sizes() {
    let mesh = Mesh::up();
    let body = mesh.curl(&[], "http://httpbin:8000/headers");
    // The server-side proxy takes the exchange headers off before the app sees the request.
    assert!(body.contains("X-Forwarded-Client-Cert"), "{body}");
    assert!(!body.to_ascii_lowercase().contains("x-envoy-peer-metadata"), "{body}");

    let (client, server) = (mesh.admin("curl"), mesh.admin("httpbin"));
    let hop = [
        "source_workload=\"curl\"",
        "source_app=\"curl\"",
        "source_workload_namespace=\"default\"",
        "destination_workload=\"httpbin\"",
        "destination_app=\"httpbin\"",
        "destination_version=\"v1\"",
        "destination_service=\"httpbin.default.svc.cluster.local\"",
        "destination_service_name=\"httpbin\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/curl\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/httpbin\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { hop.iter().chain(extra).copied().collect() };
    let outbound = with(&["reporter=\"source\"", "connection_security_policy=\"unknown\""]);
    let inbound = with(&["reporter=\"destination\"", "connection_security_policy=\"mutual_tls\""]);
    assert_eq!(sum(client, "istio_requests_total", &outbound), 1.0, "{:#?}", series(client, "istio_requests_total"));
    assert_eq!(sum(server, "istio_requests_total", &inbound), 1.0, "{:#?}", series(server, "istio_requests_total"));
    for admin in [client, server] {
        assert_eq!(sum(admin, "istio_request_duration_milliseconds_count", &hop), 1.0);
        assert_eq!(sum(admin, "istio_request_bytes_count", &hop), 1.0);
        // The response's size counts its headers and the body curl printed.
        let response = sum(admin, "istio_response_bytes_sum", &hop);
        assert!(response > body.len() as f64 && response < body.len() as f64 + 1024.0, "{response} for {}", body.len());
        let request = sum(admin, "istio_request_bytes_sum", &hop);
        assert!(request > 30.0 && request < 4096.0, "{request}");
    }
    assert_eq!(series(server, "istio_build").len(), 1);

    // A request through the ingress gateway: the gateway reports as the source, and the
    // server side names it as its caller.
    let gw = mesh.gateway();
    mesh.apply_yaml(
        "gw.yaml",
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: ['*']
  gateways: [httpbin-gateway]
  http: [{route: [{destination: {host: httpbin, port: {number: 8000}}}]}]
",
    );
    assert_eq!(get(gw, "httpbin.example.com", "/status/418").unwrap().status, 418);
    let from_gateway = [
        "source_workload=\"istio-ingressgateway\"",
        "source_workload_namespace=\"istio-system\"",
        "response_code=\"418\"",
    ];
    assert_eq!(
        sum(server, "istio_requests_total", &from_gateway),
        1.0,
        "{:#?}",
        series(server, "istio_requests_total")
    );
    let gateway_admin = mesh.admin_in("istio-system", "istio-ingressgateway");
    assert_eq!(sum(gateway_admin, "istio_requests_total", &["reporter=\"source\"", "response_code=\"418\""]), 1.0);

    for admin in [client, server, gateway_admin] {
        promtool_accepts(admin);
    }

    // `meshrig graph` draws the same two edges from the proxies' metrics.
    let edges: serde_json::Value = serde_json::from_str(&mesh.ok(&["graph", "-o", "json"])).unwrap();
    let edge = |src: &str| {
        edges
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"]["workload"] == src && e["destination"]["workload"] == "httpbin")
            .cloned()
    };
    let from_curl = edge("curl").unwrap_or_else(|| panic!("{edges:#}"));
    assert_eq!((from_curl["requests"].as_f64(), from_curl["errors"].as_f64()), (Some(1.0), Some(0.0)));
    assert_eq!(from_curl["mtls"], true);
    assert_eq!(from_curl["service"], "httpbin.default.svc.cluster.local");
    assert_eq!(edge("istio-ingressgateway").unwrap_or_else(|| panic!("{edges:#}"))["requests"].as_f64(), Some(1.0));
    let table = mesh.ok(&["graph"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("curl.default") && l.contains("→ httpbin.default v1") && l.contains("mTLS")),
        "{table}"
    );
}

/// The trace collector's address from `meshrig status -o json`.
fn tracing_address(mesh: &Mesh) -> SocketAddr {
    let status = mesh.status();
    status["control_plane"]["tracing"].as_str().expect("status names the tracing address").parse().unwrap()
}

/// Jaeger's query API on the collector: its JSON, after checking the answer is 200.
fn jaeger(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = get(addr, "localhost", path).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn a_bookinfo_page_is_one_trace_from_the_gateway_to_ratings_in_jaegers_api() {
    let mesh = Mesh::up();
    mesh.bookinfo_with("virtual-service-reviews-v3.yaml");
    let page = get(mesh.gateway(), "bookinfo.local", "/productpage").unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let tracing = tracing_address(&mesh);

    // Spans reach the collector within a second or so of the response: wait for the trace.
    let services = [
        "istio-ingressgateway.istio-system",
        "productpage.default",
        "details.default",
        "reviews.default",
        "ratings.default",
    ];
    let trace = within(Duration::from_secs(15), POLL, "a complete trace", || {
        let found = jaeger(tracing, "/jaeger/api/traces?service=productpage.default&lookback=1h&limit=20");
        let complete = found["data"].as_array().unwrap().iter().find(|t| {
            let named: Vec<&str> =
                t["processes"].as_object().unwrap().values().filter_map(|p| p["serviceName"].as_str()).collect();
            services.iter().all(|s| named.contains(s)) && t["spans"].as_array().unwrap().len() >= 8
        });
        complete.cloned().ok_or_else(|| format!("{found:#}"))
    });
    let spans = trace["spans"].as_array().unwrap();
    let service_of = |span: &serde_json::Value| {
        trace["processes"][span["processID"].as_str().unwrap()]["serviceName"].as_str().unwrap().to_string()
    };
    // The gateway's span is first and the root; every other span's parent is in the trace.
    assert_eq!(service_of(&spans[0]), "istio-ingressgateway.istio-system", "{trace:#}");
    assert_eq!(spans[0]["references"].as_array().unwrap().len(), 0);
    let ids: Vec<&str> = spans.iter().map(|s| s["spanID"].as_str().unwrap()).collect();
    for s in &spans[1..] {
        let parent = s["references"][0]["spanID"].as_str().unwrap_or_else(|| panic!("no parent: {s:#}"));
        assert!(ids.contains(&parent), "parent {parent} of {s:#} is in the trace");
        assert_eq!(s["traceID"], trace["traceID"]);
    }
    // Each hop is a client span on the caller's side and a server span on the callee's, named
    // by Istio's decorator; ratings answered reviews v3 (red stars).
    let named = |service: &str, op: &str, kind: &str| {
        spans.iter().any(|s| {
            service_of(s) == service
                && s["operationName"] == op
                && s["tags"].as_array().unwrap().iter().any(|t| t["key"] == "span.kind" && t["value"] == kind)
                && s["tags"].as_array().unwrap().iter().any(|t| t["key"] == "http.status_code" && t["value"] == "200")
        })
    };
    assert!(
        named("istio-ingressgateway.istio-system", "productpage.default.svc.cluster.local:9080/*", "client"),
        "{trace:#}"
    );
    assert!(named("productpage.default", "productpage.default.svc.cluster.local:9080/*", "server"), "{trace:#}");
    assert!(named("productpage.default", "reviews.default.svc.cluster.local:9080/*", "client"), "{trace:#}");
    assert!(named("reviews.default", "ratings.default.svc.cluster.local:9080/*", "client"), "{trace:#}");
    assert!(named("ratings.default", "ratings.default.svc.cluster.local:9080/*", "server"), "{trace:#}");

    // The rest of the query API: services, a trace by id, Jaeger's error for a missing service.
    let listed = jaeger(tracing, "/api/services");
    for s in services {
        assert!(listed["data"].as_array().unwrap().iter().any(|v| v == s), "{s} in {listed}");
    }
    let id = trace["traceID"].as_str().unwrap();
    let by_id = jaeger(tracing, &format!("/jaeger/api/traces/{id}"));
    assert_eq!(by_id["data"][0]["spans"].as_array().unwrap().len(), spans.len());
    let bad = get(tracing, "localhost", "/jaeger/api/traces").unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("parameter 'service' is required"), "{}", bad.body);
}

/// The lines of `meshrig logs WORKLOAD -c istio-proxy` that contain `want`, waiting (bounded)
/// for the proxy's writer to put them there.
fn proxy_log_lines(mesh: &Mesh, workload: &str, want: &str) -> Vec<String> {
    within(Duration::from_secs(10), POLL, &format!("{want:?} in {workload}'s proxy log"), || {
        let log = mesh.ok(&["logs", workload, "-c", "istio-proxy"]);
        let lines: Vec<String> = log.lines().filter(|l| l.contains(want)).map(str::to_string).collect();
        if lines.is_empty() {
            Err(log)
        } else {
            Ok(lines)
        }
    })
}

#[test]
fn the_mesh_config_turns_on_envoys_access_log_in_text_and_json() {
    let mesh = Mesh::up();
    let mesh_config = |extra: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    accessLogFile: /dev/stdout\n{extra}"
        )
    };
    let out = mesh.apply_yaml("mesh.yaml", &mesh_config(""));
    assert!(!out.contains("accessLogFile"), "applied, not warned about: {out}");
    mesh.curl(&["x-request-id: log-me-1"], "http://httpbin:8000/status/418");
    // Both sides log the request in Istio's default format: the client its cluster, the
    // server its inbound cluster, each with the request's id.
    let client = proxy_log_lines(&mesh, "curl", "log-me-1");
    assert_eq!(client.len(), 1, "{client:?}");
    assert!(client[0].contains("\"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 "), "{}", client[0]);
    assert!(client[0].contains(" outbound|8000||httpbin.default.svc.cluster.local "), "{}", client[0]);
    assert!(client[0].contains("\"httpbin:8000\""), "{}", client[0]);
    let server = proxy_log_lines(&mesh, "httpbin", "log-me-1");
    assert_eq!(server.len(), 1, "{server:?}");
    assert!(server[0].contains(" 418 - via_upstream ") && server[0].contains(" inbound|8080|| "), "{}", server[0]);

    // JSON carries the same fields, and a local reply says why.
    mesh.apply_yaml("mesh.yaml", &mesh_config("    accessLogEncoding: JSON\n"));
    mesh.curl(&["x-request-id: log-me-2"], "http://httpbin:8000/headers");
    let json = proxy_log_lines(&mesh, "curl", "log-me-2");
    assert_eq!(json.len(), 1, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap_or_else(|e| panic!("{e}: {}", json[0]));
    assert_eq!(v["response_code"], 200);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["upstream_cluster"], "outbound|8000||httpbin.default.svc.cluster.local");
    mesh.apply_yaml(
        "fault.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: httpbin}\nspec:\n  hosts: [httpbin]\n  http:\n  - match: [{uri: {prefix: /fault-me}}]\n    fault: {abort: {httpStatus: 555, percentage: {value: 100}}}\n    route: [{destination: {host: httpbin}}]\n  - route: [{destination: {host: httpbin}}]\n",
    );
    mesh.curl(&["x-request-id: log-me-fault"], "http://httpbin:8000/fault-me");
    let fault = proxy_log_lines(&mesh, "curl", "log-me-fault");
    assert_eq!(fault.len(), 1, "{fault:?}");
    let v: serde_json::Value = serde_json::from_str(&fault[0]).unwrap();
    assert_eq!(
        (&v["response_code"], &v["response_flags"], &v["response_code_details"], &v["upstream_host"]),
        (
            &serde_json::json!(555),
            &serde_json::json!("FI"),
            &serde_json::json!("fault_filter_abort"),
            &serde_json::Value::Null
        ),
        "{v:#}"
    );

    // Off: a request is not logged. (On again, the next one is, after it in the same log.)
    let off = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    accessLogFile: ''\n";
    mesh.apply_yaml("mesh.yaml", off);
    mesh.curl(&["x-request-id: log-me-3"], "http://httpbin:8000/headers");
    mesh.apply_yaml("mesh.yaml", &mesh_config(""));
    mesh.curl(&["x-request-id: log-me-4"], "http://httpbin:8000/headers");
    assert_eq!(proxy_log_lines(&mesh, "curl", "log-me-4").len(), 1);
    let log = mesh.ok(&["logs", "curl", "-c", "istio-proxy"]);
    assert!(!log.contains("log-me-3"), "logged while off:\n{log}");

    // A format of one's own (Envoy's operators), and one meshrig cannot write is refused.
    mesh.apply_yaml(
        "mesh.yaml",
        &mesh_config("    accessLogFormat: \"%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% id=%REQ(X-REQUEST-ID)% user=%REQ(X-USER?X-GUEST):5% type=%RESP(CONTENT-TYPE)%\\n\"\n"),
    );
    let request = |id: &str, user: &str, path: &str| {
        let (id, url) = (format!("x-request-id: {id}"), format!("http://httpbin:8000{path}"));
        mesh.curl(&[&id, user], &url);
    };
    request("log-me-5", "x-user: alice-and-bob", "/status/503");
    assert_eq!(
        proxy_log_lines(&mesh, "curl", "log-me-5"),
        ["GET /status/503 503 - id=log-me-5 user=alice type=text/plain; charset=utf-8"]
    );
    request("log-me-6", "x-guest: eve", "/headers");
    assert_eq!(
        proxy_log_lines(&mesh, "curl", "log-me-6"),
        ["GET /headers 200 - id=log-me-6 user=eve type=application/json; charset=utf-8"]
    );
    let file = mesh.work.path().join("bad-format.yaml");
    std::fs::write(&file, mesh_config("    accessLogFormat: '%START_TIME% %DYNAMIC_METADATA(istio.mixer:status)%'\n"))
        .unwrap();
    let bad = mesh.run(&["apply", "-f", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("accessLogFormat: meshrig's access log does not know"), "{err}");
}

#[test]
fn the_telemetry_api_turns_on_a_filtered_access_log_and_sets_sampling_per_namespace() {
    let mesh = Mesh::up();
    // Istio's access-log task: the `envoy` provider mesh-wide, from the root namespace.
    let out = mesh.apply_yaml(
        "mesh-default.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  accessLogging:\n  - providers: [{name: envoy}]\n",
    );
    assert!(out.contains("telemetry/mesh-default created"), "{out}");
    mesh.curl(&["x-request-id: tel-1"], "http://httpbin:8000/status/200");
    assert_eq!(proxy_log_lines(&mesh, "curl", "tel-1").len(), 1);

    // httpbin's own Telemetry logs only errors, and takes precedence for it (not for curl).
    mesh.apply_yaml(
        "httpbin-errors.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: httpbin-errors}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: 'response.code >= 400'}\n",
    );
    mesh.curl(&["x-request-id: tel-ok"], "http://httpbin:8000/status/200");
    mesh.curl(&["x-request-id: tel-teapot"], "http://httpbin:8000/status/418");
    let teapot = proxy_log_lines(&mesh, "httpbin", "tel-teapot");
    assert_eq!(teapot.len(), 1, "{teapot:?}");
    assert!(teapot[0].contains(" 418 "), "{}", teapot[0]);
    assert_eq!(proxy_log_lines(&mesh, "curl", "tel-ok").len(), 1, "curl's sidecar logs everything still");
    let log = mesh.ok(&["logs", "httpbin", "-c", "istio-proxy"]);
    assert!(!log.contains("tel-ok"), "httpbin's sidecar logged a 200 its filter excludes:\n{log}");

    // A filter meshrig cannot read is refused with where it stopped, and nothing changes.
    let err = mesh.apply_refused(
        "bad.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: httpbin-errors}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: 'response.duration > 10'}\n",
    );
    assert!(err.contains("spec.accessLogging[0].filter.expression"), "{err}");
    assert!(err.contains("it knows request.host, request.method"), "{err}");

    let tracing = tracing_address(&mesh);
    let traces_of = |id: &str| -> serde_json::Value {
        let tags = format!("%7B%22guid%3Ax-request-id%22%3A%22{id}%22%7D");
        let found =
            get(tracing, "localhost", &format!("/api/traces?service=httpbin.default&lookback=1h&tags={tags}")).unwrap();
        serde_json::from_str::<serde_json::Value>(&found.body).unwrap()["data"].clone()
    };

    // Custom tags for the namespace: a literal, and a request header with a default.
    let tracing_yaml = |spec: &str| {
        format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: default-tracing}}\nspec:\n  tracing:\n  - {spec}\n")
    };
    mesh.apply_yaml(
        "tags.yaml",
        &tracing_yaml(
            "customTags: {team: {literal: {value: payments}}, user: {header: {name: x-user, defaultValue: anonymous}}}",
        ),
    );
    mesh.curl(&["x-request-id: tel-tags", "x-user: alice"], "http://httpbin:8000/get");
    let trace = within(Duration::from_secs(10), POLL, "the tagged request's trace", || {
        let t = traces_of("tel-tags");
        let both = t.as_array().and_then(|a| a.first()).filter(|t| t["spans"].as_array().is_some_and(|s| s.len() == 2));
        both.cloned().ok_or_else(|| t.to_string())
    });
    for span in trace["spans"].as_array().unwrap() {
        let tag = |k: &str| span["tags"].as_array().unwrap().iter().find(|t| t["key"] == k).map(|t| t["value"].clone());
        assert_eq!((tag("team"), tag("user")), (Some("payments".into()), Some("alice".into())), "{span}");
    }

    // Sampling: 0% in the default namespace (over the demo profile's 100%): a request through
    // the sidecars leaves no trace of httpbin.
    mesh.apply_yaml("no-traces.yaml", &tracing_yaml("randomSamplingPercentage: 0"));
    mesh.curl(&["x-request-id: tel-untraced"], "http://httpbin:8000/get");
    // Then a request whose caller decided to sample it (honoured whatever the rate): once its
    // spans are in, the earlier request's would be too, through the same proxies' queues.
    let sampled =
        ["x-b3-traceid: 0000000000000000000000000000c0de", "x-b3-spanid: 00000000000000aa", "x-b3-sampled: 1"];
    mesh.curl(&[&["x-request-id: tel-control"][..], &sampled].concat(), "http://httpbin:8000/get");
    within(Duration::from_secs(10), POLL, "the sampled request's trace", || {
        let t = traces_of("tel-control");
        t.as_array().is_some_and(|a| !a.is_empty()).then_some(()).ok_or_else(|| t.to_string())
    });
    assert_eq!(traces_of("tel-untraced"), serde_json::json!([]), "a trace at 0% sampling");
}

#[test]
fn telemetry_metric_overrides_add_remove_and_disable_labels_and_metrics() {
    let mesh = Mesh::up();
    // Istio's "customizing metrics" task: two labels on REQUEST_COUNT for the namespace.
    let out = mesh.apply_yaml(
        "namespace-metrics.yaml",
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: namespace-metrics}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        destination_port: {value: string(destination.port)}
        request_host: {value: request.host}
        user: {value: \"request.headers['x-user']\"}
",
    );
    assert!(out.contains("telemetry/namespace-metrics created"), "{out}");
    let curl = |user: &str, path: &str| {
        mesh.curl(&[&format!("x-user: {user}")], &format!("http://httpbin:8000{path}"));
    };
    curl("alice", "/status/200");
    curl("alice", "/status/503");
    let (client, server) = (mesh.admin("curl"), mesh.admin("httpbin"));
    let added = ["request_host=\"httpbin:8000\"", "user=\"alice\""];
    // As Envoy's `destination.port`: the Service port on the client side, the pod's (the
    // Service's targetPort) on the server side.
    let sides = [
        (client, ["reporter=\"source\"", "destination_port=\"8000\""]),
        (server, ["reporter=\"destination\"", "destination_port=\"8080\""]),
    ];
    for (admin, side) in sides {
        let want: Vec<&str> = added.iter().copied().chain(side).collect();
        assert_eq!(sum(admin, "istio_requests_total", &want), 2.0, "{:#?}", series(admin, "istio_requests_total"));
        // Only REQUEST_COUNT was told: the duration keeps Istio's labels alone.
        let durations = series(admin, "istio_request_duration_milliseconds_count");
        assert!(durations.iter().all(|(l, _)| !l.contains("request_host=")), "{durations:#?}");
        promtool_accepts(admin);
    }

    // httpbin's own Telemetry, on top of the namespace's: its server side drops the code (two
    // codes become one series) and stops reporting durations.
    mesh.apply_yaml(
        "httpbin-metrics.yaml",
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: httpbin-metrics}
spec:
  selector: {matchLabels: {app: httpbin}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        response_code: {operation: REMOVE}
    - match: {metric: REQUEST_DURATION, mode: SERVER}
      disabled: true
",
    );
    let durations_before = sum(server, "istio_request_duration_milliseconds_count", &[]);
    curl("bob", "/status/200");
    curl("bob", "/status/418");
    let bob = ["user=\"bob\"", "reporter=\"destination\""];
    let merged: Vec<_> =
        series(server, "istio_requests_total").into_iter().filter(|(l, _)| bob.iter().all(|w| l.contains(w))).collect();
    assert_eq!(merged.len(), 1, "{merged:#?}");
    assert!(!merged[0].0.contains("response_code="), "{merged:#?}");
    assert_eq!(merged[0].1, 2.0);
    assert_eq!(sum(server, "istio_request_duration_milliseconds_count", &[]), durations_before, "durations disabled");
    let client_bob = ["user=\"bob\"", "response_code=\"418\""];
    assert_eq!(sum(client, "istio_requests_total", &client_bob), 1.0, "the client side keeps its codes");
    promtool_accepts(server);

    // A tag value meshrig cannot evaluate is refused at apply, naming the field; nothing changes.
    let err = mesh.apply_refused(
        "bad-metrics.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: httpbin-metrics}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides:\n        slow: {value: 'response.duration > 1000'}\n",
    );
    assert!(err.contains("spec.metrics[0].overrides[0].tagOverrides.slow.value"), "{err}");
    assert!(err.contains("response.duration"), "{err}");
    // The overrides in force stay: bob's next request joins his code-less series.
    curl("bob", "/status/204");
    let bobs: Vec<_> =
        series(server, "istio_requests_total").into_iter().filter(|(l, _)| bob.iter().all(|w| l.contains(w))).collect();
    assert!(bobs.len() == 1 && bobs[0].1 == 3.0, "{bobs:#?}");
}

#[test]
fn a_telemetry_match_mode_sets_the_client_and_server_sides_apart() {
    let mesh = Mesh::up();
    // One Telemetry for the namespace: every sidecar logs its inbound requests, and its
    // outbound ones only when they fail.
    mesh.apply_yaml(
        "sides.yaml",
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: sides}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    match: {mode: SERVER}
  - providers: [{name: envoy}]
    match: {mode: CLIENT}
    filter: {expression: 'response.code >= 400'}
",
    );
    let curl = |id: &str, path: &str| {
        mesh.curl(&[&format!("x-request-id: {id}")], &format!("http://httpbin:8000{path}"));
    };
    curl("sides-ok", "/status/200");
    curl("sides-teapot", "/status/418");
    for id in ["sides-ok", "sides-teapot"] {
        assert_eq!(proxy_log_lines(&mesh, "httpbin", id).len(), 1, "the server side logs {id}");
    }
    // The client side's writer is in order: once the teapot's line is there, the 200's would be.
    assert_eq!(proxy_log_lines(&mesh, "curl", "sides-teapot").len(), 1);
    let log = mesh.ok(&["logs", "curl", "-c", "istio-proxy"]);
    assert!(!log.contains("sides-ok"), "the client side logged a 200 its filter excludes:\n{log}");
}
