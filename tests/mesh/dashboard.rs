//! `meshrig dashboard`: the web page and its API against a running Bookinfo, and, when CI names
//! Chromium (MESHRIG_CHROMIUM), the page as a browser renders it: the graph's edges and a
//! trace's waterfall, with screenshots kept under target/.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::support::{get, Mesh};

/// The dashboard process, stopped on drop.
struct Dashboard {
    child: Child,
    address: SocketAddr,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dashboard(mesh: &Mesh) -> Dashboard {
    let mut child = mesh.cmd(&["dashboard", "--port", "0", "--no-browser"]).stdout(Stdio::piped()).spawn().unwrap();
    // Its first line is the address, printed once it listens.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("http://").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
    Dashboard { child, address }
}

/// The page as headless Chromium has it after its scripts ran (`--dump-dom`).
fn rendered(chromium: &str, url: &str) -> String {
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", url])
        .output()
        .unwrap_or_else(|e| panic!("{chromium}: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshot(chromium: &str, url: &str, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,600"])
        .args(["--virtual-time-budget=5000", &format!("--screenshot={}", file.display()), url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&file).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} is not a picture", file.display());
}

#[test]
fn the_dashboard_draws_bookinfos_graph_and_a_traces_waterfall() {
    let mesh = Mesh::up();
    mesh.bookinfo_with("virtual-service-reviews-v3.yaml");
    for _ in 0..10 {
        assert_eq!(get(mesh.gateway(), "bookinfo.local", "/productpage").unwrap().status, 200);
    }
    let d = dashboard(&mesh);

    // The API: totals since the proxies started (window 0), every hop of the page, mTLS.
    let graph: serde_json::Value =
        serde_json::from_str(&get(d.address, "localhost", "/api/graph?window=0").unwrap().body).unwrap();
    let edge = |src: &str, dst: &str| {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"]["workload"] == src && e["destination"]["workload"] == dst)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {src} → {dst} in {graph:#}"))
    };
    assert_eq!(edge("istio-ingressgateway", "productpage-v1")["requests"].as_f64(), Some(10.0));
    for (src, dst) in [("productpage-v1", "details-v1"), ("productpage-v1", "reviews-v3"), ("reviews-v3", "ratings-v1")]
    {
        let e = edge(src, dst);
        assert_eq!(
            (e["requests"].as_f64(), e["errors"].as_f64(), &e["mtls"]),
            (Some(10.0), Some(0.0), &serde_json::json!(true))
        );
    }
    let reviews =
        graph["services"].as_array().unwrap().iter().find(|s| s["service"] == "reviews.default.svc.cluster.local");
    assert_eq!(reviews.map(|s| s["requests"].as_f64()), Some(Some(10.0)), "{graph:#}");
    // Traces come through from the collector.
    let traces = get(d.address, "localhost", "/api/traces?service=productpage.default&limit=1&lookback=1h").unwrap();
    assert_eq!(traces.status, 200, "{}", traces.body);
    assert!(get(d.address, "localhost", "/").unwrap().body.starts_with("<!doctype html>"));

    let Some(chromium) = crate::support::tool("MESHRIG_CHROMIUM", "rendering the page in a browser") else { return };
    let url = format!("http://{}/", d.address);
    let dom = rendered(&chromium, &url);
    for (src, dst) in
        [("istio-ingressgateway", "productpage-v1"), ("productpage-v1", "reviews-v3"), ("reviews-v3", "ratings-v1")]
    {
        let drawn = format!("<g class=\"edge\" data-source=\"{src}\" data-destination=\"{dst}\"");
        assert!(dom.contains(&drawn), "the page does not draw {src} → {dst}:\n{dom}");
    }
    assert_eq!(
        dom.matches("<g class=\"node\"").count(),
        5,
        "gateway, productpage, details, reviews v3, ratings:\n{dom}"
    );
    assert!(dom.contains("data-mtls=\"true\""), "{dom}");
    // The golden signals: a row per service called.
    assert!(dom.contains("<tr class=\"service\" data-service=\"reviews.default.svc.cluster.local\">"), "{dom}");
    screenshot(&chromium, &url, "dashboard-graph.png");

    // The traces tab opens the newest productpage trace as a waterfall: a row per span.
    let traces_url = format!("{url}#traces?service=productpage.default");
    let dom = rendered(&chromium, &traces_url);
    let rows = dom.matches("<div class=\"span-row\"").count();
    assert_eq!(rows, 8, "gateway, productpage, details and reviews twice, ratings twice:\n{dom}");
    for service in ["istio-ingressgateway.istio-system", "details.default", "reviews.default", "ratings.default"] {
        assert!(dom.contains(&format!("data-service=\"{service}\"")), "no span of {service}:\n{dom}");
    }
    screenshot(&chromium, &traces_url, "dashboard-trace.png");
}
