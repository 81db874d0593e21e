//! Conformance: Istio's own sample manifests, unmodified, from the folder named by
//! `MESHRIG_ISTIO_SAMPLES`. Plain `cargo test` needs nothing outside the repository, so these
//! tests are ignored there (the reason is printed beside each); `.ci/run` runs them with
//! `MESHRIG_ISTIO_SAMPLES` set and `--include-ignored`.

#[path = "../mesh/scenarios.rs"]
mod scenarios;
#[path = "../mesh/support.rs"]
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};

use meshrig::resources::{parse_documents, Kind, Resource};
use meshrig::validate::{unenforced, validate};

const NEEDS: &str = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)";

/// Istio's samples. A conformance test asked to run without them fails and says why.
fn istio_samples() -> PathBuf {
    let dir = std::env::var_os("MESHRIG_ISTIO_SAMPLES").map(PathBuf::from).unwrap_or_else(|| panic!("{NEEDS}"));
    assert!(dir.is_dir(), "MESHRIG_ISTIO_SAMPLES={} is not a directory", dir.display());
    dir
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn every_istio_sample_parses_validates_and_round_trips() {
    let dir = istio_samples();
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    let mut docs_seen = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.display().to_string();
        let docs = parse_documents(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!docs.is_empty(), "{name}: no documents");
        for d in &docs {
            docs_seen += 1;
            if let Err(errs) = validate(&d.resource) {
                panic!("{name}: {}: {errs:?}", d.resource.key());
            }
            let back = Resource::from_value(d.resource.to_value()).unwrap();
            assert!(back.same_content(&d.resource), "{name}: round trip changed content");
            assert_eq!(back, d.resource, "{name}");
            let json = serde_json::to_string(&d.resource).unwrap();
            assert_eq!(serde_json::from_str::<Resource>(&json).unwrap(), d.resource);
        }
    }
    assert!(docs_seen >= 40, "only {docs_seen} documents");
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn bookinfo_has_its_shape_and_documents_start_on_their_lines() {
    let dir = istio_samples();
    let text = std::fs::read_to_string(dir.join("bookinfo/platform/kube/bookinfo.yaml")).unwrap();
    let docs = parse_documents("bookinfo.yaml", &text).unwrap();
    let kinds: Vec<Kind> = docs.iter().map(|d| d.resource.kind()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == Kind::Deployment).count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == Kind::Service).count(), 4);
    assert_eq!(docs[0].index, 1);
    for d in &docs {
        assert!(text.lines().nth(d.line - 1).unwrap().starts_with("apiVersion"));
    }
    let Resource::Deployment(reviews) = &docs.iter().find(|d| d.resource.name() == "reviews-v1").unwrap().resource
    else {
        panic!("reviews-v1 is a Deployment")
    };
    assert_eq!(reviews.replicas(), 1);
    assert_eq!(reviews.spec.template.spec.containers[0].ports[0].container_port, 9080);
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn what_istios_tasks_use_is_enforced() {
    let dir = istio_samples();
    for f in [
        "httpbin/httpbin-gateway.yaml",
        "httpbin/httpbin.yaml",
        "bookinfo/platform/kube/bookinfo.yaml",
        "curl/curl.yaml",
        "bookinfo/networking/virtual-service-ratings-test-delay.yaml",
        "bookinfo/networking/virtual-service-reviews-80-20.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        for d in parse_documents(f, &text).unwrap() {
            assert!(unenforced(&d.resource).is_empty(), "{f}: {:?}", unenforced(&d.resource));
        }
    }
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn istios_httpbin_curl_and_gateway_samples_work() {
    let dir = istio_samples();
    scenarios::httpbin_scenario(&support::Mesh::up(), &dir);
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn istios_sleep_sample_without_sidecar_reaches_services() {
    let dir = istio_samples();
    scenarios::sleep_scenario(&support::Mesh::up(), &dir.join("sleep/sleep.yaml"));
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn istios_bookinfo_follows_the_traffic_management_tasks() {
    let dir = istio_samples();
    scenarios::bookinfo_scenario(&support::Mesh::up(), &dir);
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn istios_bookinfo_follows_the_http_authorization_task() {
    let dir = istio_samples();
    scenarios::authorization_scenario(&support::Mesh::up(), &dir);
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn istios_httpbin_follows_the_secure_ingress_task() {
    let dir = istio_samples();
    scenarios::secure_ingress_scenario(&support::Mesh::up(), &dir);
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn istios_httpbin_and_curl_follow_the_authentication_policy_task() {
    let dir = istio_samples();
    scenarios::authentication_policy_scenario(&support::Mesh::up(), &dir);
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn istios_httpbin_and_curl_follow_the_mtls_migration_task() {
    let dir = istio_samples();
    scenarios::mtls_migration_scenario(&support::Mesh::up(), &dir);
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn istios_fortio_and_httpbin_follow_the_circuit_breaking_task() {
    let dir = istio_samples();
    scenarios::circuit_breaking_scenario(&support::Mesh::up(), &dir);
}

#[test]
#[ignore = "conformance: needs MESHRIG_ISTIO_SAMPLES=<Istio's samples folder> (.ci/run sets it)"]
fn kube_inject_of_istios_bookinfo_adds_the_proxy_and_a_net_admin_init_to_every_deployment() {
    let file = istio_samples().join("bookinfo/platform/kube/bookinfo.yaml");
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshrig"))
        .args(["--state-dir", state.path().to_str().unwrap(), "kube-inject", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let input = std::fs::read_to_string(&file).unwrap();
    let count = |text: &str| {
        serde_yaml::Deserializer::from_str(text)
            .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
            .filter(|d| !d.is_null())
            .collect::<Vec<_>>()
    };
    let (before, after) = (count(&input), count(&text));
    assert_eq!(before.len(), after.len(), "every document comes out, in order");
    let deployments: Vec<&serde_json::Value> = after.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 6, "details, ratings, reviews v1-v3, productpage");
    for d in deployments {
        let spec = &d["spec"]["template"]["spec"];
        let name = d["metadata"]["name"].as_str().unwrap();
        let containers = spec["containers"].as_array().unwrap();
        assert!(containers.iter().any(|c| c["name"] == "istio-proxy"), "{name}: {containers:?}");
        let init = spec["initContainers"].as_array().unwrap().iter().find(|c| c["name"] == "istio-init").unwrap();
        let added = init["securityContext"]["capabilities"]["add"].as_array().unwrap();
        assert!(added.iter().any(|c| c == "NET_ADMIN"), "{name}: {added:?}");
    }
    for (b, a) in before.iter().zip(&after) {
        if b["kind"] != "Deployment" {
            assert_eq!(b, a, "{} {} is left as it is", b["kind"], b["metadata"]["name"]);
        }
    }
}
