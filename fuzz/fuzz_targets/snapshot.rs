//! The snapshot round trip: resources (those validation accepts) translated for a gateway and a
//! sidecar, written as JSON, read back as a proxy reads it (same content), and compiled into the
//! proxy's route tables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrig::registry::Workload;
use meshrig::snapshot::{ProxyIdentity, Role, Snapshot};

fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], role: Role) -> Workload {
    let mut w = Workload::new(ProxyIdentity {
        namespace: namespace.into(),
        pod: name.into(),
        workload: name.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        service_account: "default".into(),
        role,
    });
    w.serving = true;
    let app = "127.0.0.1:18080".parse().unwrap();
    w.destinations.insert(8080, app);
    w.apps.insert(8080, app);
    w
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(documents) = meshrig::resources::parse::parse_documents("fuzz.yaml", text) else { return };
    let resources: Vec<_> = documents
        .into_iter()
        .map(|d| {
            let mut r = d.resource;
            r.set_default_namespace("default");
            r
        })
        .filter(|r| meshrig::validate::validate(r).is_ok())
        .collect();
    let pods = [
        pod("istio-system", "istio-ingressgateway", &[("istio", "ingressgateway")], Role::Gateway),
        pod("default", "httpbin", &[("app", "httpbin"), ("version", "v1")], Role::Sidecar),
        pod("default", "reviews", &[("app", "reviews"), ("version", "v2")], Role::Sidecar),
    ];
    let world = meshrig::translate::World::new(resources, pods.iter().cloned());
    for me in &pods {
        let snap = meshrig::translate::snapshot(&world, me, Default::default());
        let json = serde_json::to_vec(&snap).expect("a snapshot serializes");
        let back: Snapshot = serde_json::from_slice(&json).expect("a proxy reads every snapshot");
        assert_eq!(back.content_hash(), snap.content_hash(), "the snapshot changed on the way");
        for listener in &back.listeners {
            let _ = meshrig::proxy::route::Table::new(&listener.virtual_hosts);
        }
        for routes in &back.outbound {
            let _ = meshrig::proxy::route::Table::new(&routes.virtual_hosts);
        }
    }
});
