//! The kind backend's rendering and injection, checked as data: what each document must hold.

use serde_json::Value;

use super::inject::{inject, Outcome};
use super::render::{self, Plan};
use super::SampleImages;

pub(crate) fn plan() -> Plan {
    Plan {
        env: "lab".into(),
        image: "docker.io/library/meshrig:0.1.0-abcdef012345".into(),
        http_port: 18080,
        https_port: 18443,
        tcp_port: 31401,
        sample_images: SampleImages::Builtin,
    }
}

fn all_documents() -> Vec<Value> {
    render::manifests(&plan()).unwrap().into_iter().flat_map(|r| r.documents).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the manifests"))
}

/// A container's command line with the pod's `$(VAR)`s filled in, as the kubelet does.
pub(crate) fn command_line(container: &Value) -> Vec<String> {
    let args = container["args"].as_array().expect("args");
    let mut line = vec!["meshrig".to_string()];
    line.extend(
        args.iter().map(|a| a.as_str().unwrap().replace("$(POD_NAMESPACE)", "default").replace("$(POD_NAME)", "web-1")),
    );
    line
}

#[test]
fn the_kind_config_publishes_the_gateways_node_ports_on_the_environments_ports() {
    let config = render::cluster_config(&plan()).unwrap();
    assert_eq!(config.documents.len(), 1);
    let c = &config.documents[0];
    assert_eq!((c["kind"].as_str(), c["apiVersion"].as_str()), (Some("Cluster"), Some("kind.x-k8s.io/v1alpha4")));
    assert_eq!(c["name"], "meshrig-lab");
    let node = &c["nodes"][0];
    assert!(node["image"].as_str().unwrap().starts_with("kindest/node:v1.32.2@sha256:"), "pinned by digest");
    let mappings: Vec<(u64, u64, &str)> = node["extraPortMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["containerPort"].as_u64().unwrap(),
                m["hostPort"].as_u64().unwrap(),
                m["listenAddress"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(mappings, [(30080, 18080, "127.0.0.1"), (30443, 18443, "127.0.0.1"), (31400, 31401, "127.0.0.1")]);

    // The gateway Service's NodePorts are the ones published.
    let docs = all_documents();
    let svc = find(&docs, "Service", "istio-ingressgateway");
    assert_eq!(svc["spec"]["type"], "NodePort");
    let node_ports: Vec<(u64, u64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["nodePort"].as_u64()?, p["port"].as_u64()?)))
        .collect();
    assert_eq!(node_ports, [(30080, 80), (30443, 443), (31400, 31400)]);
}

#[test]
fn the_manifests_hold_istiod_its_mesh_config_the_webhooks_and_the_gateway() {
    let docs = all_documents();
    let istiod = find(&docs, "Deployment", "istiod");
    assert_eq!(istiod["metadata"]["namespace"], "istio-system");
    let labels = &istiod["spec"]["template"]["metadata"]["labels"];
    assert_eq!((labels["app"].as_str(), labels["istio"].as_str()), (Some("istiod"), Some("pilot")));
    let container = &istiod["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], plan().image);
    let env = container["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "CLUSTER_ID" && e["value"] == "Kubernetes"), "{env:?}");
    assert_eq!(find(&docs, "Service", "istiod")["spec"]["selector"]["app"], "istiod");

    // The mesh config is one meshrig's own parser takes.
    let mesh = find(&docs, "ConfigMap", "istio")["data"]["mesh"].as_str().unwrap();
    let (config, _) = crate::resources::mesh_config::parse(mesh).unwrap();
    assert_eq!(config, crate::resources::mesh_config::MeshConfig::default(), "the default mesh, nothing changed");

    // istiod may read what translation reads, and review proxies' tokens.
    let role = find(&docs, "ClusterRole", "istiod-clusterrole-istio-system");
    let rules = role["rules"].as_array().unwrap();
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r["apiGroups"].as_array().unwrap().iter().any(|g| g == group)
                && r["resources"].as_array().unwrap().iter().any(|x| x == resource || x == "*")
                && r["verbs"].as_array().unwrap().iter().any(|v| v == verb)
        })
    };
    assert!(allows("", "pods", "watch") && allows("", "services", "list"));
    assert!(allows("networking.istio.io", "virtualservices", "watch"));
    assert!(allows("authentication.k8s.io", "tokenreviews", "create"));

    let injector = find(&docs, "MutatingWebhookConfiguration", "istio-sidecar-injector");
    let by_namespace = &injector["webhooks"][0];
    assert_eq!(by_namespace["clientConfig"]["service"]["name"], "istiod");
    let e = &by_namespace["namespaceSelector"]["matchExpressions"][0];
    assert_eq!((e["key"].as_str(), e["operator"].as_str()), (Some("istio-injection"), Some("In")));
    assert_eq!(e["values"][0], "enabled");
    let not_off = &by_namespace["objectSelector"]["matchExpressions"][0];
    assert_eq!(not_off["values"][0], "false", "a YAML string, not a boolean");
    let validator = find(&docs, "ValidatingWebhookConfiguration", "istio-validator-istio-system");
    let groups = validator["webhooks"][0]["rules"][0]["apiGroups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g == "security.istio.io"), "{groups:?}");

    let gateway = find(&docs, "Deployment", "istio-ingressgateway");
    let pod = &gateway["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["istio"], "ingressgateway");
}

#[test]
fn every_istio_kind_has_a_crd_serving_each_version_meshrig_accepts() {
    let docs = all_documents();
    let vs = find(&docs, "CustomResourceDefinition", "virtualservices.networking.istio.io");
    assert_eq!(vs["spec"]["scope"], "Namespaced");
    assert_eq!(vs["spec"]["names"]["shortNames"][0], "vs");
    let versions: Vec<(&str, bool)> = vs["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["storage"].as_bool().unwrap()))
        .collect();
    assert_eq!(versions, [("v1", true), ("v1beta1", false), ("v1alpha3", false)]);
    for name in [
        "gateways.networking.istio.io",
        "destinationrules.networking.istio.io",
        "serviceentries.networking.istio.io",
        "peerauthentications.security.istio.io",
        "authorizationpolicies.security.istio.io",
        "requestauthentications.security.istio.io",
        "telemetries.telemetry.istio.io",
        "certificates.cert-manager.io",
    ] {
        find(&docs, "CustomResourceDefinition", name);
    }
    assert_eq!(find(&docs, "CustomResourceDefinition", "clusterissuers.cert-manager.io")["spec"]["scope"], "Cluster");
    assert!(
        !docs.iter().any(|d| d["kind"] == "CustomResourceDefinition" && d["spec"]["group"] == ""),
        "no CRD for core kinds"
    );
}

pub(crate) fn deployment(yaml: &str) -> Value {
    render::parse_stream(yaml).unwrap().remove(0)
}

pub(crate) const RATINGS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1, labels: {app: ratings, version: v1}}
spec:
  selector: {matchLabels: {app: ratings, version: v1}}
  template:
    metadata: {labels: {app: ratings, version: v1}}
    spec:
      serviceAccountName: bookinfo-ratings
      containers:
      - name: ratings
        image: docker.io/istio/examples-bookinfo-ratings-v1:1.20.3
        imagePullPolicy: IfNotPresent
        ports: [{containerPort: 9080}]
";

#[test]
fn injection_adds_the_init_and_proxy_containers_and_runs_sample_images_as_built_in_apps() {
    let mut d = deployment(RATINGS);
    assert_eq!(inject(&mut d, &plan()).unwrap(), Outcome::Injected);
    let pod = &d["spec"]["template"];
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "istio-init");
    let caps = &init["securityContext"]["capabilities"]["add"];
    assert!(caps.as_array().unwrap().iter().any(|c| c == "NET_ADMIN"), "{caps}");
    let args = command_line(init).join(" ");
    assert!(args.contains("--proxy-uid=1337") && args.contains("--exclude-inbound-ports=15090,15021,15020"), "{args}");

    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(), ["ratings", "istio-proxy"]);
    let proxy = &containers[1];
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
    let line = command_line(proxy);
    assert!(line.contains(&"--inbound-port=9080".to_string()) && line.contains(&"--capture".to_string()), "{line:?}");

    // Istio's ratings image runs as meshrig's ratings app, with the version its image sets.
    let app = &containers[0];
    assert_eq!(app["image"], plan().image);
    let line = command_line(app);
    assert_eq!(&line[2..4], ["app", "ratings"]);
    assert!(app["env"].as_array().unwrap().iter().any(|e| e["name"] == "SERVICE_VERSION" && e["value"] == "v1"));

    let meta = &pod["metadata"];
    assert_eq!(meta["labels"]["security.istio.io/tlsMode"], "istio");
    assert_eq!(meta["labels"]["service.istio.io/canonical-name"], "ratings");
    assert_eq!(meta["labels"]["service.istio.io/canonical-revision"], "v1");
    let status: Value = serde_json::from_str(meta["annotations"][super::inject::STATUS].as_str().unwrap()).unwrap();
    assert_eq!(status["containers"][0], "istio-proxy");
    assert_eq!(meta["annotations"]["kubectl.kubernetes.io/default-container"], "ratings");

    // Once is enough.
    assert_eq!(inject(&mut d, &plan()).unwrap(), Outcome::Skipped("already injected".into()));
    assert_eq!(d["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 2);
}

#[test]
fn upstream_images_are_left_to_be_pulled_and_opted_out_pods_are_left_alone() {
    let mut d = deployment(RATINGS);
    inject(&mut d, &Plan { sample_images: SampleImages::Upstream, ..plan() }).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "docker.io/istio/examples-bookinfo-ratings-v1:1.20.3"
    );

    let off = RATINGS.replace(
        "metadata: {labels: {app: ratings, version: v1}}",
        "metadata: {labels: {app: ratings, sidecar.istio.io/inject: \"false\"}}",
    );
    let mut d = deployment(&off);
    let before = d.clone();
    assert!(matches!(inject(&mut d, &plan()).unwrap(), Outcome::Skipped(_)));
    assert_eq!(d, before);

    let mut svc =
        deployment("apiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec: {ports: [{port: 9080}]}\n");
    let before = svc.clone();
    assert_eq!(inject(&mut svc, &plan()).unwrap(), Outcome::NotAWorkload);
    assert_eq!(svc, before);
}

#[test]
fn the_projects_own_bookinfo_gets_a_sidecar_in_every_deployment() {
    let text = include_str!("../../../samples/bookinfo/platform/kube/bookinfo.yaml");
    let mut docs = render::parse_stream(text).unwrap();
    let mut injected = 0;
    for d in &mut docs {
        if inject(d, &plan()).unwrap() == Outcome::Injected {
            injected += 1;
            let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["name"].as_str())
                .collect();
            assert!(names.contains(&"istio-proxy"), "{names:?}");
        }
    }
    assert_eq!(injected, docs.iter().filter(|d| d["kind"] == "Deployment").count());
    assert!(injected >= 6);
}

mod image {
    use super::super::image::{archive, layer, parse_ldd, tar, Entry};
    use std::path::{Path, PathBuf};

    fn untar(bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tar");
        std::fs::write(&file, bytes).unwrap();
        let out = std::process::Command::new("tar").arg("-xf").arg(&file).arg("-C").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "GNU tar reads it: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::remove_file(file).unwrap();
        dir
    }

    fn sha256(p: &Path) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &std::fs::read(p).unwrap());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_tar_stream_is_one_gnu_tar_extracts_with_modes_and_long_paths() {
        use std::os::unix::fs::PermissionsExt;
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let entries = vec![
            Entry::Dir { path: "tmp".into(), mode: 0o1777 },
            Entry::Dir { path: "usr/local/bin".into(), mode: 0o755 },
            Entry::File { path: "usr/local/bin/tool".into(), mode: 0o755, data: b"#!/bin/sh\n".to_vec() },
            Entry::File { path: long.clone(), mode: 0o644, data: vec![7; 1000] },
        ];
        let dir = untar(&tar(&entries).unwrap());
        let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("usr/local/bin/tool"), 0o755);
        assert_eq!(std::fs::read(dir.path().join(&long)).unwrap(), vec![7; 1000]);
        assert!(tar(&[Entry::File { path: "x".repeat(300), mode: 0o644, data: vec![] }]).is_err());
    }

    #[test]
    fn ldds_answer_gives_the_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
                .map(PathBuf::from)
        );
    }

    #[test]
    fn the_archive_is_an_oci_layout_whose_digests_hold_and_a_docker_manifest() {
        let tag = "docker.io/library/meshrig:0.1.0-abc";
        let entries = layer(b"binary".to_vec(), &[], Some(b"roots".to_vec())).unwrap();
        let dir = untar(&archive(tag, tar(&entries).unwrap()).unwrap());
        let json = |p: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.path().join(p)).unwrap()).unwrap()
        };
        assert_eq!(json("oci-layout")["imageLayoutVersion"], "1.0.0");
        // Every blob is named by its digest.
        for e in std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            assert_eq!(sha256(&e.path()), e.file_name().to_string_lossy());
        }
        let index = json("index.json");
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"]["io.containerd.image.name"], tag);
        let manifest = json(&format!("blobs/{}", m["digest"].as_str().unwrap().replace(':', "/")));
        let config = json(&format!("blobs/{}", manifest["config"]["digest"].as_str().unwrap().replace(':', "/")));
        assert_eq!(config["rootfs"]["diff_ids"][0], manifest["layers"][0]["digest"]);
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/meshrig");
        let docker = json("manifest.json");
        assert_eq!(docker[0]["RepoTags"][0], tag);
        assert!(dir.path().join(docker[0]["Layers"][0].as_str().unwrap()).is_file());
        // The layer holds the binary and the roots.
        let layer_path = dir.path().join(docker[0]["Layers"][0].as_str().unwrap());
        let root = untar(&std::fs::read(layer_path).unwrap());
        assert_eq!(std::fs::read(root.path().join("usr/local/bin/meshrig")).unwrap(), b"binary");
        assert_eq!(std::fs::read(root.path().join("etc/ssl/certs/ca-certificates.crt")).unwrap(), b"roots");
        assert!(root.path().join("tmp").is_dir());
    }
}

#[test]
fn the_preflight_says_what_the_daemon_lacks_and_that_the_containerd_store_does_not_matter() {
    use super::preflight::{judge_daemon, Daemon};
    let d = Daemon {
        version: "26.1.5".into(),
        api_version: "1.45".into(),
        mem_total: Some(2 << 30),
        driver: "overlayfs".into(),
        driver_type: Some("io.containerd.snapshotter.v1".into()),
    };
    let findings = judge_daemon(&d);
    assert!(findings[0].ok && findings[0].detail.contains("26.1.5"));
    let memory = findings.iter().find(|f| f.check == "docker memory").unwrap();
    assert!(!memory.ok && !memory.blocking && memory.fix.is_some(), "{memory:?}");
    let store = findings.iter().find(|f| f.check == "docker image store").unwrap();
    assert!(store.ok && store.detail.contains("kind load image-archive"), "{store:?}");
    let roomy = judge_daemon(&Daemon { mem_total: Some(16 << 30), driver_type: None, ..d });
    assert!(roomy.iter().all(|f| f.ok));
}

#[test]
fn the_crd_schemas_are_the_api_types_own_and_structural() {
    let docs = all_documents();
    let crds: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "CustomResourceDefinition").collect();
    for crd in &crds {
        for v in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &v["schema"]["openAPIV3Schema"];
            let problems = super::schema::not_structural(schema, crd["metadata"]["name"].as_str().unwrap());
            assert!(problems.is_empty(), "{problems:#?}");
        }
    }
    let spec = |name: &str| {
        let crd = crds.iter().find(|c| c["metadata"]["name"] == name).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    };
    let vs = spec("virtualservices.networking.istio.io");
    let http = &vs["properties"]["http"]["items"]["properties"];
    assert_eq!(http["route"]["items"]["properties"]["destination"]["properties"]["host"]["type"], "string");
    assert_eq!(http["route"]["items"]["properties"]["weight"]["type"], "integer");
    assert_eq!(http["match"]["items"]["properties"]["uri"]["properties"]["prefix"]["type"], "string");
    assert_eq!(http["timeout"]["type"], "string", "a Go duration, as Istio's CRD has it");
    assert_eq!(vs["properties"]["hosts"]["items"]["type"], "string");
    let gw = spec("gateways.networking.istio.io");
    assert_eq!(gw["properties"]["servers"]["items"]["properties"]["port"]["properties"]["number"]["type"], "integer");
    assert_eq!(gw["properties"]["selector"]["additionalProperties"]["type"], "string", "a map of labels");
    let pa = spec("peerauthentications.security.istio.io");
    let modes = pa["properties"]["mtls"]["properties"]["mode"]["enum"].as_array().unwrap();
    assert!(modes.iter().any(|m| m == "STRICT"), "{modes:?}");
    let ap = spec("authorizationpolicies.security.istio.io");
    assert_eq!(ap["properties"]["targetRef"]["x-kubernetes-preserve-unknown-fields"], true);
}

fn addon_documents() -> Vec<Value> {
    let names: Vec<String> = super::render::ADDONS.iter().map(|(n, _)| n.to_string()).collect();
    render::addons(&plan(), &names).unwrap().into_iter().flat_map(|r| r.documents).collect()
}

#[test]
fn prometheus_scrapes_the_pods_that_ask_at_their_path_and_port() {
    let docs = addon_documents();
    let config: serde_yaml::Value =
        serde_yaml::from_str(find(&docs, "ConfigMap", "prometheus")["data"]["prometheus.yml"].as_str().unwrap())
            .unwrap();
    let jobs = config["scrape_configs"].as_sequence().unwrap();
    let pods = jobs.iter().find(|j| j["job_name"] == "kubernetes-pods").unwrap();
    let rules = pods["relabel_configs"].as_sequence().unwrap();
    let rule = |action: &str, source: &str| {
        rules.iter().find(|r| {
            r["action"] == action
                && r["source_labels"].as_sequence().is_some_and(|s| s.iter().any(|l| l.as_str() == Some(source)))
        })
    };
    let keep = rule("keep", "__meta_kubernetes_pod_annotation_prometheus_io_scrape").expect("a keep rule");
    assert_eq!(keep["regex"], "true");
    assert_eq!(
        rule("replace", "__meta_kubernetes_pod_annotation_prometheus_io_path").unwrap()["target_label"],
        "__metrics_path__"
    );
    assert_eq!(
        rule("replace", "__meta_kubernetes_pod_annotation_prometheus_io_port").unwrap()["target_label"],
        "__address__"
    );
    assert_eq!(rule("replace", "__meta_kubernetes_namespace").unwrap()["target_label"], "namespace");
    // The annotations the scrape reads are the ones injection and the gateway put on their pods.
    let gateway = find(&all_documents(), "Deployment", "istio-ingressgateway").clone();
    let annotations = &gateway["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        (annotations["prometheus.io/scrape"].as_str(), annotations["prometheus.io/path"].as_str()),
        (Some("true"), Some("/stats/prometheus"))
    );
}

#[test]
fn the_dashboard_reads_only_metrics_the_proxies_export() {
    let docs = addon_documents();
    let text =
        find(&docs, "ConfigMap", "istio-grafana-dashboards")["data"]["istio-mesh.json"].as_str().unwrap().to_string();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let exported: Vec<&str> = crate::proxy::stats::METRICS.iter().map(|(_, name, _)| *name).collect();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries += 1;
            for (at, _) in expr.match_indices("istio_") {
                let name: String = expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let base = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(exported.contains(&base), "{} reads {name}, which no proxy exports", panel["title"]);
            }
        }
    }
    assert!(queries >= 8, "{queries}");
    let datasources = find(&docs, "ConfigMap", "grafana")["data"]["datasources.yaml"].as_str().unwrap().to_string();
    assert!(datasources.contains("url: http://prometheus.istio-system:9090"), "{datasources}");
}

#[test]
fn kiali_and_grafana_point_at_what_the_manifests_create() {
    let mut docs = all_documents();
    docs.extend(addon_documents());
    let kiali: serde_yaml::Value =
        serde_yaml::from_str(find(&docs, "ConfigMap", "kiali")["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let istio = &kiali["external_services"]["istio"];
    find(&docs, "ConfigMap", istio["config_map_name"].as_str().unwrap());
    find(&docs, "Deployment", istio["istiod_deployment_name"].as_str().unwrap());
    // Every in-cluster URL names a Service of istio-system and one of its ports.
    for url in [
        kiali["external_services"]["prometheus"]["url"].as_str().unwrap(),
        kiali["external_services"]["grafana"]["internal_url"].as_str().unwrap(),
        kiali["external_services"]["tracing"]["internal_url"].as_str().unwrap(),
        istio["url_service_version"].as_str().unwrap(),
    ] {
        let authority = url.trim_start_matches("http://").split('/').next().unwrap();
        let (host, port) = authority.split_once(':').unwrap();
        let (service, namespace) = host.split_once('.').unwrap();
        assert_eq!(namespace, "istio-system", "{url}");
        let svc = find(&docs, "Service", service);
        let ports: Vec<u64> =
            svc["spec"]["ports"].as_array().unwrap().iter().map(|p| p["port"].as_u64().unwrap()).collect();
        assert!(ports.contains(&port.parse().unwrap()), "{url}: {service} has ports {ports:?}");
    }
    for (name, image) in super::render::ADDONS {
        let d = find(&docs, "Deployment", if name == "jaeger" { "jaeger" } else { name });
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], image);
    }
}

mod webhook {
    use base64::Engine as _;
    use serde_json::{json, Value};

    use super::super::webhook::{review, serve, server_config};
    use super::plan;

    fn admission(kind: &str, namespace: &str, object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "namespace": namespace,
                "operation": "CREATE",
                "object": object,
                "dryRun": false,
            },
        })
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "ratings-v1-5f9c-", "namespace": "default", "labels": {"app": "ratings", "version": "v1"}},
            "spec": {"containers": [{"name": "ratings", "image": "docker.io/istio/examples-bookinfo-ratings-v1:1.20.3", "ports": [{"containerPort": 9080}]}]},
        })
    }

    /// Applies a JSONPatch of `replace` operations at top-level paths, as the API server does.
    fn apply(mut object: Value, response: &Value) -> Value {
        let patch = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
        for op in serde_json::from_slice::<Vec<Value>>(&patch).unwrap() {
            assert_eq!(op["op"], "replace");
            let key = op["path"].as_str().unwrap().trim_start_matches('/').to_string();
            object[key] = op["value"].clone();
        }
        object
    }

    #[test]
    fn a_pod_being_created_is_injected_by_a_json_patch() {
        let answer = review("/inject", &admission("Pod", "default", pod()), &plan());
        assert_eq!(
            (answer["apiVersion"].as_str(), answer["kind"].as_str()),
            (Some("admission.k8s.io/v1"), Some("AdmissionReview"))
        );
        let r = &answer["response"];
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002", "the request's uid comes back");
        assert_eq!((r["allowed"].as_bool(), r["patchType"].as_str()), (Some(true), Some("JSONPatch")));
        let injected = apply(pod(), r);
        let names: Vec<&str> =
            injected["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["ratings", "istio-proxy"]);
        assert_eq!(injected["spec"]["initContainers"][0]["name"], "istio-init");
        assert_eq!(injected["metadata"]["generateName"], "ratings-v1-5f9c-", "the rest of the pod is kept");

        // A pod that opts out is let through untouched.
        let mut off = pod();
        off["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
        let r = &review("/inject", &admission("Pod", "default", off), &plan())["response"];
        assert_eq!((r["allowed"].as_bool(), r.get("patch")), (Some(true), None));
    }

    #[test]
    fn a_misspelt_or_invalid_istio_object_is_refused_with_meshrigs_message() {
        let vs = |spec: Value| json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"}, "spec": spec});
        let ok = review(
            "/validate",
            &admission(
                "VirtualService",
                "default",
                vs(json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})),
            ),
            &plan(),
        );
        assert_eq!(ok["response"]["allowed"], true, "{ok}");

        let typo = review(
            "/validate",
            &admission("VirtualService", "default", vs(json!({"hosts": ["reviews"], "htpp": []}))),
            &plan(),
        );
        let r = &typo["response"];
        assert_eq!((r["allowed"].as_bool(), r["status"]["code"].as_u64()), (Some(false), Some(400)));
        let message = r["status"]["message"].as_str().unwrap();
        assert!(message.starts_with("configuration is invalid: ") && message.contains("htpp"), "{message}");

        let weights = review(
            "/validate",
            &admission(
                "VirtualService",
                "default",
                vs(json!({"hosts": ["reviews"], "http": [{"route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 0},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0},
                ]}]})),
            ),
            &plan(),
        );
        assert_eq!(weights["response"]["allowed"], false, "{weights}");
        assert!(
            weights["response"]["status"]["message"].as_str().unwrap().contains("total destination weight = 0"),
            "{weights}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_webhooks_answer_over_tls_with_a_certificate_for_istiods_service() {
        let ca = crate::ca::Ca::generate().unwrap();
        let (chain, key) = ca.sign_server(&["istiod.istio-system.svc"], std::time::Duration::from_secs(3600)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, server_config(&chain, &key).unwrap(), plan()));

        // A client that trusts only the mesh's root, as the API server does through caBundle.
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::tls::certs_from_pem(ca.root_pem()).unwrap() {
            roots.add(c).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = crate::net::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls)
            .resolve("istiod.istio-system.svc", addr)
            .build()
            .unwrap();
        let url = format!("https://istiod.istio-system.svc:{}/inject", addr.port());
        let body = admission("Pod", "default", pod()).to_string();
        let resp = client.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        let answer: Value = serde_json::from_slice(&crate::net::read_all(resp, 1 << 20).await.unwrap()).unwrap();
        assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
        // Another name is not the certificate's.
        let wrong = crate::net::builder().no_proxy().resolve("istiod.other.svc", addr).build().unwrap();
        assert!(wrong.post(format!("https://istiod.other.svc:{}/inject", addr.port())).send().await.is_err());
        server.abort();
    }
}

mod pods {
    use serde_json::{json, Value};

    use super::super::pods::workload;
    use super::{deployment, inject, plan, RATINGS};
    use crate::snapshot::Role;

    /// The pod the ratings Deployment makes, injected, as the API server has it once it runs.
    fn running_ratings() -> Value {
        let mut d = deployment(RATINGS);
        inject(&mut d, &plan()).unwrap();
        let mut pod = d["spec"]["template"].clone();
        pod["metadata"]["name"] = json!("ratings-v1-7d8f9c5b6-x2x9q");
        pod["metadata"]["namespace"] = json!("bookinfo");
        pod["metadata"]["labels"]["pod-template-hash"] = json!("7d8f9c5b6");
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ratings-v1-7d8f9c5b6", "controller": true}]);
        pod["status"] = json!({
            "phase": "Running",
            "podIP": "10.244.0.17",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        });
        pod
    }

    #[test]
    fn an_injected_running_pod_is_a_serving_sidecar_at_its_ip() {
        let w = workload(&running_ratings()).unwrap();
        let id = &w.identity;
        assert_eq!(
            (id.namespace.as_str(), id.pod.as_str(), id.workload.as_str()),
            ("bookinfo", "ratings-v1-7d8f9c5b6-x2x9q", "ratings-v1")
        );
        assert_eq!((id.role, id.service_account.as_str()), (Role::Sidecar, "bookinfo-ratings"));
        assert_eq!(id.labels["version"], "v1");
        assert_eq!(w.endpoint(9080), Some("10.244.0.17:9080".parse().unwrap()));
        assert_eq!(w.apps[&9080], "127.0.0.1:9080".parse().unwrap());
        assert_eq!(
            w.intercepted.iter().copied().collect::<Vec<_>>(),
            [9080],
            "the proxy's own 15090 is not an app port"
        );
        assert!(w.serving);

        // Not ready, or on its way out: not an endpoint.
        let mut p = running_ratings();
        p["status"]["conditions"][1]["status"] = json!("False");
        assert!(!workload(&p).unwrap().serving);
        let mut p = running_ratings();
        p["metadata"]["deletionTimestamp"] = json!("2026-12-07T23:00:00Z");
        assert!(!workload(&p).unwrap().serving);
        // Ports left alone by annotation are not the sidecar's.
        let mut p = running_ratings();
        p["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] = json!("9080");
        assert!(workload(&p).unwrap().intercepted.is_empty());
    }

    #[test]
    fn the_gateway_and_a_pod_without_a_sidecar_have_their_roles() {
        let docs = super::all_documents();
        let gw = super::find(&docs, "Deployment", "istio-ingressgateway");
        let mut pod = gw["spec"]["template"].clone();
        pod["metadata"]["name"] = json!("istio-ingressgateway-6c8f-abcde");
        pod["metadata"]["namespace"] = json!("istio-system");
        assert_eq!(workload(&pod).unwrap().identity.role, Role::Gateway);
        assert_eq!(
            workload(&pod).unwrap().identity.workload,
            "istio-ingressgateway-6c8f-abcde",
            "no owner: its own name"
        );

        let plain = json!({"metadata": {"name": "sleep", "namespace": "default"}, "spec": {"containers": [{"name": "sleep", "image": "curlimages/curl"}]}});
        let w = workload(&plain).unwrap();
        assert_eq!((w.identity.role, w.identity.service_account.as_str(), w.serving), (Role::Plain, "default", false));
        assert!(workload(&json!({"metadata": {}})).is_err());
    }
}

#[test]
fn istios_gateway_injection_template_makes_the_auto_container_the_gateway() {
    let text = include_str!("../../../manifests/istio-system.yaml");
    let mut docs = render::parse_stream(text).unwrap();
    let gw = docs.iter_mut().find(|d| d["kind"] == "Deployment").expect("the gateway Deployment");
    assert_eq!(inject(gw, &plan()).unwrap(), Outcome::Injected);
    let spec = &gw["spec"]["template"]["spec"];
    assert!(
        spec.get("initContainers").is_none_or(|v| v.as_array().is_none_or(|a| a.is_empty())),
        "a gateway redirects nothing"
    );
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let proxy = &containers[0];
    assert_eq!((proxy["name"].as_str(), proxy["image"].as_str()), (Some("istio-proxy"), Some(plan().image.as_str())));
    let line = command_line(proxy);
    assert!(line.contains(&"--role=gateway".to_string()), "{line:?}");
    assert!(
        line.contains(&"--inbound-port=8443".to_string()) && !line.contains(&"--inbound-port=15021".to_string()),
        "{line:?}"
    );
    assert_eq!(proxy["ports"][0]["containerPort"], 8080, "the Deployment's own ports are kept");
    let pod = {
        let mut p = gw["spec"]["template"].clone();
        p["metadata"]["name"] = serde_json::json!("istio-ingressgateway-abc");
        p
    };
    assert_eq!(super::pods::workload(&pod).unwrap().identity.role, crate::snapshot::Role::Gateway);
}
