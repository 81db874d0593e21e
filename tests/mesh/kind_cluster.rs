//! The kind backend on a real cluster: `up --backend kind`, Bookinfo injected, its gateway from
//! the host. Needs `kind`, a Docker daemon with 4 GiB for containers and the internet (kind's
//! node image and the addons' images are pulled); run it with
//! `cargo test --test mesh kind_cluster -- --ignored --nocapture`. It creates the cluster
//! `meshrig-kindsuite` and deletes it at the end. Not run by CI (these machines have no node
//! image to pull).

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{get, ports, sample, text, within};

struct Suite {
    state: tempfile::TempDir,
}

impl Suite {
    fn meshrig(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_meshrig"))
            .arg("--state-dir")
            .arg(self.state.path())
            .args(["--env", "kindsuite"])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.meshrig(args);
        assert!(out.status.success(), "meshrig {}: {}", args.join(" "), text(&out));
        text(&out)
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        let _ = self.meshrig(&["down", "--purge"]);
    }
}

#[test]
#[ignore = "needs kind"]
fn bookinfo_runs_on_a_real_kind_cluster_and_its_gateway_answers_from_the_host() {
    let suite = Suite { state: tempfile::tempdir().unwrap() };
    let [http, https, tcp, _] = ports();
    let up = suite.ok(&[
        "up",
        "--backend",
        "kind",
        "--http-port",
        &http.to_string(),
        "--https-port",
        &https.to_string(),
        "--tcp-port",
        &tcp.to_string(),
    ]);
    eprintln!("{up}");
    let status = suite.ok(&["status"]);
    assert!(status.contains("istiod: ready"), "{status}");

    suite.ok(&["label", "namespace", "default", "istio-injection=enabled"]);
    suite.ok(&["apply", "-f", sample("bookinfo/platform/kube/bookinfo.yaml").to_str().unwrap()]);
    suite.ok(&["apply", "-f", sample("bookinfo/networking/bookinfo-gateway.yaml").to_str().unwrap()]);
    within(Duration::from_secs(300), Duration::from_secs(2), "every Bookinfo pod runs with its sidecar", || {
        let pods: serde_json::Value =
            serde_json::from_str(&suite.ok(&["get", "pods", "-o", "json"])).map_err(|e| e.to_string())?;
        let rows = pods.as_array().cloned().unwrap_or_default();
        let ready = rows.iter().filter(|p| p["status"] == "Running" && p["ready"] == "2/2").count();
        if rows.len() >= 6 && ready == rows.len() {
            Ok(())
        } else {
            Err(format!("{ready} of {} ready: {pods}", rows.len()))
        }
    });
    let gateway = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    within(Duration::from_secs(60), Duration::from_secs(1), "productpage through the gateway", || {
        let page = get(gateway, "localhost", "/productpage").map_err(|e| e.to_string())?;
        if page.status == 200 && page.body.contains("Book Reviews") {
            Ok(())
        } else {
            Err(format!("{} {}", page.status, page.body.chars().take(200).collect::<String>()))
        }
    });
}
