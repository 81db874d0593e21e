//! `meshrig analyze` as istioctl's: its line format, codes and exit code 79, files judged
//! against what is applied before they are applied, and `apply` printing what it finds.

use crate::support::{text, Mesh};

#[test]
fn analyze_reports_istioctls_messages_and_exit_code_and_apply_prints_them() {
    let mesh = Mesh::up();
    let clean = mesh.run(&["analyze"]);
    assert!(clean.status.success(), "{}", text(&clean));
    assert!(
        text(&clean).contains("\u{2714} No validation issues found when analyzing namespace: default."),
        "{}",
        text(&clean)
    );

    let file = mesh.work.path().join("vs.yaml");
    std::fs::write(
        &file,
        "# a route with three mistakes
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts: [httpbin]
  gateways: [httpbin-gateway-bogus]
  http:
  - route:
    - destination: {host: httpbin, subset: v9}
  - route:
    - destination: {host: httpbinn}
",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = mesh.run(&["analyze", "-f", f]);
    assert_eq!(out.status.code(), Some(79), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("Error [IST0101] (VirtualService default/httpbin {f}:2) Referenced gateway not found: \"httpbin-gateway-bogus\""),
            format!("Error [IST0101] (VirtualService default/httpbin {f}:2) Referenced host not found: \"httpbinn\""),
            format!("Error [IST0101] (VirtualService default/httpbin {f}:2) Referenced host+subset in destinationrule not found: \"httpbin+v9\""),
        ]
    );
    assert!(text(&out).contains("Error: Analyzers found issues when analyzing namespace: default."));
    assert!(mesh.ok(&["get", "virtualservices"]).lines().count() <= 1, "analyze -f applies nothing");
    let warn_only =
        mesh.run(&["analyze", "-f", f, "--failure-threshold", "Error", "--output-threshold", "Error", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&warn_only.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[0]["code"], "IST0101");
    assert_eq!(json[0]["level"], "Error");

    // Applied, the same mistakes are printed by apply itself, at the file's line.
    let applied = mesh.run(&["apply", "-f", f]);
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(
        text(&applied).contains(&format!(
            "Error [IST0101] (VirtualService default/httpbin {f}:2) Referenced host not found: \"httpbinn\""
        )),
        "{}",
        text(&applied)
    );
    // Two mesh VirtualServices for one host conflict.
    for name in ["httpbin-2", "httpbin-3"] {
        mesh.apply_yaml(
            &format!("{name}.yaml"),
            &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [httpbin]\n  http: [{{route: [{{destination: {{host: httpbin}}}}]}}]\n"),
        );
    }
    let out = mesh.run(&["analyze", "-A"]);
    assert_eq!(out.status.code(), Some(79));
    assert!(
        text(&out).contains("[IST0109]") && text(&out).contains("default/httpbin-2,default/httpbin-3"),
        "{}",
        text(&out)
    );

    // Telemetries: two for the namespace, and two whose selectors pick the running httpbin pod.
    let telemetry = |name: &str, spec: &str| {
        format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}}}\nspec:\n{spec}---\n")
    };
    let file = mesh.work.path().join("telemetry.yaml");
    let yaml = [
        telemetry("ns-a", "  tracing: [{randomSamplingPercentage: 10}]\n"),
        telemetry("ns-b", "  accessLogging: [{providers: [{name: envoy}]}]\n"),
        telemetry("hb-1", "  selector: {matchLabels: {app: httpbin}}\n"),
        telemetry("hb-2", "  selector: {matchLabels: {app: httpbin}}\n"),
    ]
    .concat();
    std::fs::write(&file, yaml).unwrap();
    let out = mesh.run(&["analyze", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(79), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("Error [IST0160] (Telemetry default/ns-a ") && said.contains("The Telemetries [ns-a ns-b] in namespace \"default\" have no workload selector, which can lead to undefined behavior."), "{said}");
    assert!(
        said.contains("Error [IST0159] (Telemetry default/hb-2 ")
            && said.contains(
                "The Telemetries [hb-1 hb-2] in namespace \"default\" select the same workload pod \"httpbin"
            ),
        "{said}"
    );
}
