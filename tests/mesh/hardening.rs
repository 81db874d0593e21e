//! Hostile and careless input, through the real binary: every reproduction gets a clear
//! refusal or Istio's/Envoy's answer, and the control plane outlives all of them.

use std::time::Duration;

use crate::support::{text, within, Mesh};

const POLL: Duration = Duration::from_millis(100);

fn access_log_filter(expression: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: httpbin-filter}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  accessLogging:\n  - providers: [{{name: envoy}}]\n    filter:\n      expression: \"{expression}\"\n"
    )
}

#[test]
fn hostile_expressions_are_refused_everywhere_and_the_widest_accepted_filter_reaches_the_proxies() {
    let mesh = Mesh::up();
    let control_plane = mesh.status()["control_plane"]["pid"].clone();
    let nested = format!("{}response.code >= 400{}", "(".repeat(2000), ")".repeat(2000));
    let ands = vec!["response.code == 1"; 8000].join(" && ");
    let nots = format!("{}true", "!".repeat(200_000));
    let choices = "true ? 'a' : ".repeat(30_000) + "'b'";
    for (name, expression, limit) in [
        ("nested.yaml", nested, "nests deeper than 32 levels"),
        ("ands.yaml", ands, "characters long; meshrig accepts at most 4096"),
        ("nots.yaml", nots, "characters long"),
        ("choices.yaml", choices, "characters long"),
    ] {
        let file = mesh.work.path().join(name);
        std::fs::write(&file, access_log_filter(&expression)).unwrap();
        let file = file.to_str().unwrap();
        for args in [vec!["analyze", "-f", file], vec!["apply", "--dry-run", "-f", file], vec!["apply", "-f", file]] {
            let out = mesh.run(&args);
            let all = text(&out);
            let code = if args[0] == "analyze" { 79 } else { 4 };
            assert_eq!(out.status.code(), Some(code), "{args:?}:\n{all}");
            assert!(all.contains(&format!("{name}:9")), "{args:?} names the file and line:\n{all}");
            assert!(all.contains("spec.accessLogging[0].filter.expression"), "{args:?}:\n{all}");
            assert!(all.contains(limit), "{args:?} names the limit {limit:?}:\n{all}");
        }
    }
    // The control plane is still the one `up` started, and takes changes.
    let status = mesh.status();
    assert_eq!((&status["running"], &status["control_plane"]["pid"]), (&true.into(), &control_plane), "{status}");

    // The widest filter the limits accept (a hundred OR-ed header tests) reaches the proxies,
    // which read it and log by it.
    let wide: Vec<String> = (0..100).map(|i| format!("request.headers['x-ticket'] == 't{i}'")).collect();
    let out = mesh.apply_yaml("wide.yaml", &access_log_filter(&wide.join(" || ")));
    assert!(out.contains("created"), "{out}");
    let status = mesh.ok(&["proxy-status"]);
    assert!(status.lines().skip(1).all(|l| l.contains("SYNCED")), "{status}");
    mesh.curl(&["x-ticket: t99", "x-request-id: wide-logged"], "http://httpbin:8000/get");
    mesh.curl(&["x-ticket: t100", "x-request-id: wide-skipped"], "http://httpbin:8000/get");
    mesh.curl(&["x-ticket: t0", "x-request-id: wide-first"], "http://httpbin:8000/get");
    let log = within(Duration::from_secs(10), POLL, "the logged requests", || {
        let log = mesh.ok(&["logs", "httpbin", "-c", "istio-proxy"]);
        (log.contains("wide-logged") && log.contains("wide-first")).then(|| log.clone()).ok_or(log)
    });
    assert!(!log.contains("wide-skipped"), "a request the filter does not match was logged:\n{log}");
}
