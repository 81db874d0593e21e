//! Push: what a change sends each proxy (nothing when its config did not change), and an
//! `apply` under steady load through the gateway that fails no request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crate::support::{get, request, Mesh};

/// One long poll on the control plane's watch, as the proxy of `pod` would make it.
fn poll(mesh: &Mesh, pod: &str, version: &serde_json::Value) -> serde_json::Value {
    let (api, token) = mesh.api();
    let path = format!(
        "/v1/snapshot?namespace=default&pod={pod}&epoch={}&counter={}",
        version["epoch"].as_u64().unwrap_or(0),
        version["counter"].as_u64().unwrap_or(0)
    );
    let bearer = format!("Bearer {token}");
    let reply = request(api, "GET", "cp", &path, &[("Authorization", &bearer)]).expect("the control plane answers");
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

#[test]
fn a_change_a_proxy_does_not_see_is_acknowledged_without_resending_its_snapshot() {
    let mesh = Mesh::up();
    let curl = mesh.pod("curl");
    let first = poll(&mesh, &curl, &serde_json::Value::Null);
    let held = first["snapshot"]["version"].clone();
    assert!(held["counter"].is_u64(), "a proxy without config gets the whole snapshot: {first}");

    // A new namespace changes the store but no proxy's config.
    let namespace = mesh.work.path().join("ns.yaml");
    std::fs::write(&namespace, "apiVersion: v1\nkind: Namespace\nmetadata: {name: unrelated}\n").unwrap();
    let poller = thread::scope(|s| {
        let h = s.spawn(|| poll(&mesh, &curl, &held));
        mesh.ok(&["apply", "-f", namespace.to_str().unwrap()]);
        h.join().unwrap()
    });
    let unchanged = &poller["unchanged"];
    assert!(
        unchanged.is_object(),
        "the proxy already has this content: {}",
        &poller.to_string()[..300.min(poller.to_string().len())]
    );
    assert!(
        unchanged["counter"].as_u64().unwrap() > held["counter"].as_u64().unwrap(),
        "the version moves and only the version is sent: {poller}"
    );

    // A route for httpbin changes what curl's sidecar routes: the whole snapshot comes.
    let route = mesh.work.path().join("route.yaml");
    std::fs::write(
        &route,
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - name: pushed
    route: [{destination: {host: httpbin}}]
",
    )
    .unwrap();
    let changed = thread::scope(|s| {
        let h = s.spawn(|| poll(&mesh, &curl, unchanged));
        mesh.ok(&["apply", "-f", route.to_str().unwrap()]);
        h.join().unwrap()
    });
    let routes = changed["snapshot"]["outbound"].to_string();
    assert!(routes.contains("default/pushed"), "the new route is in the snapshot: {changed}");
}

#[test]
fn an_apply_under_steady_load_through_the_gateway_fails_no_request() {
    let mesh = Mesh::up();
    let rules = mesh.work.path().join("rules.yaml");
    let write = |weight_v1: u32, extra_match: &str| {
        std::fs::write(
            &rules,
            format!(
                "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: steady}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [steady.example.com]}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin}}
spec:
  host: httpbin
  subsets: [{{name: all, labels: {{app: httpbin}}}}, {{name: any}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: steady}}
spec:
  hosts: [steady.example.com]
  gateways: [steady]
  http:
  - match: [{{headers: {{x-never: {{exact: '{extra_match}'}}}}}}]
    route: [{{destination: {{host: httpbin}}}}]
  - route:
    - {{destination: {{host: httpbin, subset: all}}, weight: {weight_v1}}}
    - {{destination: {{host: httpbin, subset: any}}, weight: {}}}
",
                100 - weight_v1
            ),
        )
        .unwrap();
    };
    write(100, "0");
    mesh.ok(&["apply", "-f", rules.to_str().unwrap(), "--wait"]);
    let gateway = mesh.gateway();
    assert_eq!(get(gateway, "steady.example.com", "/status/200").unwrap().status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    statuses.push(get(gateway, "steady.example.com", "/status/200").map(|r| r.status).unwrap_or(0));
                }
                statuses
            })
        })
        .collect();
    // Every apply changes the gateway's and every sidecar's routes and clusters.
    for (i, weight) in [50, 0, 75, 100, 20, 100].into_iter().enumerate() {
        write(weight, &i.to_string());
        mesh.ok(&["apply", "-f", rules.to_str().unwrap(), "--wait"]);
    }
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(statuses.len() >= 20, "the load ran through the applies: {} requests", statuses.len());
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), statuses.len());
}

/// `cx_total` and `rq_total` of the endpoints of `cluster` on the admin's `/clusters` page.
fn host_counts(admin: std::net::SocketAddr, cluster: &str) -> (u64, u64) {
    let page = get(admin, "localhost", "/clusters").unwrap().body;
    let stat = |name: &str| -> u64 {
        page.lines()
            .filter(|l| l.starts_with(&format!("{cluster}::")) && l.contains(&format!("::{name}::")))
            .filter_map(|l| l.rsplit("::").next()?.parse::<u64>().ok())
            .sum()
    };
    (stat("cx_total"), stat("rq_total"))
}

#[test]
fn a_pod_replaced_elsewhere_leaves_the_gateways_connections_to_httpbin_alone() {
    let mesh = Mesh::up();
    let rules = mesh.work.path().join("rules.yaml");
    let write = |restarted: &str| {
        std::fs::write(
            &rules,
            format!(
                "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: state}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [state.example.com]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: state}}
spec:
  hosts: [state.example.com]
  gateways: [state]
  http: [{{route: [{{destination: {{host: httpbin}}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: other}}
spec:
  selector: {{app: other}}
  ports: [{{name: http, port: 8000, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: other}}
spec:
  selector: {{matchLabels: {{app: other}}}}
  template:
    metadata: {{labels: {{app: other}}, annotations: {{restarted: '{restarted}'}}}}
    spec:
      containers: [{{name: httpbin, image: docker.io/mccutchen/go-httpbin:v2.15.0, ports: [{{containerPort: 8080}}]}}]
"
            ),
        )
        .unwrap();
        mesh.ok(&["apply", "-f", rules.to_str().unwrap(), "--wait"]);
    };
    write("1");
    let gw = mesh.gateway();
    let send = |n: usize| {
        for _ in 0..n {
            assert_eq!(get(gw, "state.example.com", "/status/200").unwrap().status, 200);
        }
    };
    // Each client connection lands on one of the gateway's workers, and each worker keeps its
    // own connections to httpbin (as Envoy's do): 20 connections reach both workers (all on
    // one has a chance of one in half a million), so both have a pooled connection.
    send(20);
    let admin = mesh.admin("istio-ingressgateway");
    let cluster = "outbound|8000||httpbin.default.svc.cluster.local";
    let before = host_counts(admin, cluster);
    assert!(before.1 >= 20, "the gateway counts its requests to httpbin: {before:?}");

    // A rollout replaces the other pod: every proxy gets new endpoints for `other`.
    let old_pod = mesh.pod("other");
    write("2");
    let new_pod = mesh.pod("other");
    assert_ne!(old_pod, new_pod);
    let dump = get(admin, "localhost", "/config_dump").unwrap().body;
    assert!(dump.contains(&new_pod), "the gateway runs the snapshot with the new pod");

    send(5);
    let after = host_counts(admin, cluster);
    assert_eq!(after.0, before.0, "the connection pool to httpbin survived the new snapshot");
    assert_eq!(after.1, before.1 + 5);
}
