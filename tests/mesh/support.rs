//! An environment under test, and a tiny HTTP/1.1 client that needs nothing from the crate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub struct Mesh {
    pub state: tempfile::TempDir,
    pub work: tempfile::TempDir,
    pub up_output: String,
    /// The network namespace the environment runs in (every command is run there too).
    pub netns: Option<String>,
}

/// Four ports for an environment's gateway and trace collector, none of them handed to another
/// environment of this test run. (`up --http-port 0` picks a free port, but a gateway binds its
/// HTTPS port only once a Gateway asks for it, and meanwhile a concurrent test's `up` could pick
/// the same one.) Below the ephemeral range, so no outgoing connection takes them either.
pub fn ports() -> [u16; 4] {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ =
        NEXT.compare_exchange(0, 20_000 + (std::process::id() % 40) as u16 * 100, Ordering::SeqCst, Ordering::SeqCst);
    let mut out = [0u16; 4];
    for slot in &mut out {
        *slot = loop {
            let p = NEXT.fetch_add(1, Ordering::SeqCst);
            assert!(p < 32_000, "the test run used up its ports");
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                break p;
            }
        };
    }
    out
}

/// `--http-port A --https-port B --tcp-port C --tracing-port D` with `ports()`.
pub fn port_args() -> Vec<String> {
    let flags = ["--http-port", "--https-port", "--tcp-port", "--tracing-port"];
    flags.iter().zip(ports()).flat_map(|(f, p)| [f.to_string(), p.to_string()]).collect()
}

/// Reads `child`'s first stdout line (its readiness line, `READY {...}`) within 30 s; kills it
/// and panics with `log()` when the line does not come.
pub fn ready_line(child: &mut std::process::Child, what: &str, log: impl Fn() -> String) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    if !line.contains("READY") {
        let _ = child.kill();
        panic!("{what} did not get ready: {line:?}\n{}", log());
    }
    line
}

/// One of the project's own samples (`samples/` in the repository), by Istio's path.
pub fn sample(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join(rel)
}

impl Mesh {
    /// `meshrig up` in a fresh environment; panics with the output when it fails.
    pub fn up() -> Mesh {
        Mesh::up_with_env(&[])
    }

    /// `meshrig up` with extra environment variables (the control plane inherits them).
    pub fn up_with_env(vars: &[(&str, &str)]) -> Mesh {
        Mesh::up_in(None, vars)
    }

    /// `meshrig up` run inside the network namespace `netns` (as `ip netns exec` runs it), or
    /// here.
    pub fn up_in(netns: Option<&str>, vars: &[(&str, &str)]) -> Mesh {
        let mut mesh = Mesh {
            state: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
            up_output: String::new(),
            netns: netns.map(str::to_string),
        };
        let args = [vec!["up".to_string()], port_args(), vec!["--apps".into(), "httpbin".into()]].concat();
        let mut up = mesh.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
        up.envs(vars.iter().copied());
        let out = up.output().expect("run meshrig");
        assert!(out.status.success(), "meshrig up failed:\n{}", text(&out));
        mesh.up_output = text(&out);
        mesh
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_meshrig")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_meshrig")),
        };
        c.args(args).env("MESHRIG_STATE_DIR", self.state.path()).env("NO_COLOR", "1").current_dir(self.work.path());
        c.env_remove("MESHRIG_ENV");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run meshrig")
    }

    /// Runs and asserts success; returns stdout + stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "meshrig {} failed:\n{}", args.join(" "), text(&out));
        text(&out)
    }

    /// `curl -s` from the `curl` pod (through its sidecar) with these request headers; the body.
    pub fn curl(&self, headers: &[&str], url: &str) -> String {
        let mut args = vec!["exec", "curl", "--", "curl", "-s"];
        for h in headers {
            args.extend(["-H", h]);
        }
        args.push(url);
        self.ok(&args)
    }

    /// Writes `yaml` to a file in the work dir, applies it and asserts it is refused; returns
    /// what apply said on stderr.
    pub fn apply_refused(&self, name: &str, yaml: &str) -> String {
        let file = self.work.path().join(name);
        std::fs::write(&file, yaml).unwrap();
        let out = self.run(&["apply", "-f", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{name} was applied:\n{}", text(&out));
        err
    }

    /// Writes `yaml` to a file in the work dir and applies it, waiting until it is in force.
    pub fn apply_yaml(&self, name: &str, yaml: &str) -> String {
        let file = self.work.path().join(name);
        std::fs::write(&file, yaml).unwrap();
        self.ok(&["apply", "-f", file.to_str().unwrap(), "--wait"])
    }

    /// Applies the project's Bookinfo, its gateway, every DestinationRule and one of its
    /// `networking/` VirtualServices, and waits until they are in force.
    pub fn bookinfo_with(&self, virtual_service: &str) {
        let samples = sample("bookinfo");
        let file = |f: &str| samples.join(f).display().to_string();
        self.ok(&[
            "apply",
            "--wait",
            "-f",
            &file("platform/kube/bookinfo.yaml"),
            "-f",
            &file("networking/bookinfo-gateway.yaml"),
            "-f",
            &file("networking/destination-rule-all.yaml"),
            "-f",
            &file(&format!("networking/{virtual_service}")),
        ]);
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status -o json: {e}\n{}", text(&out)))
    }

    pub fn gateway(&self) -> SocketAddr {
        self.status()["gateway"]["http"].as_str().unwrap().parse().unwrap()
    }

    /// Every address any process of the environment listens on.
    pub fn listening_addrs(&self) -> Vec<SocketAddr> {
        let s = self.status();
        let mut out = vec![s["control_plane"]["address"].as_str().unwrap().parse().unwrap(), self.gateway()];
        for p in s["pods"].as_array().unwrap() {
            for key in ["proxy_addrs", "app_addrs"] {
                for a in p[key].as_object().unwrap().values() {
                    out.push(a.as_str().unwrap().parse().unwrap());
                }
            }
        }
        out
    }

    /// `meshrig exec WORKLOAD -n NS -- curl URL`: the HTTP code curl printed (`000` for no answer).
    pub fn http_code(&self, workload: &str, namespace: &str, url: &str) -> String {
        self.http_code_with(workload, namespace, url, &[])
    }

    /// As `http_code`, with extra curl arguments (`-H`, ...) before the URL.
    pub fn http_code_with(&self, workload: &str, namespace: &str, url: &str, extra: &[&str]) -> String {
        let mut args =
            vec!["exec", workload, "-n", namespace, "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.run(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The admin address of the (first) pod of `workload`.
    pub fn admin(&self, workload: &str) -> SocketAddr {
        let status = self.status();
        let pod =
            status["pods"].as_array().unwrap().iter().find(|p| p["workload"] == workload).expect("workload has a pod");
        pod["proxy_addrs"]["admin"].as_str().unwrap().parse().unwrap()
    }

    /// The admin address of the (first) pod of `workload` in `namespace`.
    pub fn admin_in(&self, namespace: &str, workload: &str) -> SocketAddr {
        let status = self.status();
        let pod = status["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["workload"] == workload && p["namespace"] == namespace)
            .expect("workload has a pod");
        pod["proxy_addrs"]["admin"].as_str().unwrap().parse().unwrap()
    }

    pub fn pids(&self) -> Vec<u32> {
        let s = self.status();
        let mut pids = vec![s["control_plane"]["pid"].as_u64().unwrap() as u32];
        for p in s["pods"].as_array().unwrap() {
            pids.extend(p["pids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32));
        }
        pids
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 GET with `Connection: close`; Err when there is no HTTP answer.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<Reply> {
    request(addr, "GET", host, path, &[])
}

/// One HTTP/1.1 request without a body, with extra headers; Err when there is no HTTP answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    request_with_body(addr, method, host, path, headers, "")
}

/// Signs in on Bookinfo's product page through the gateway, as a browser's form does.
pub fn sign_in(gw: SocketAddr, user: &str) -> Reply {
    request_with_body(
        gw,
        "POST",
        "bookinfo.local",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Referer", "http://bookinfo.local/productpage")],
        &format!("username={user}&passwd={user}"),
    )
    .unwrap()
}

/// The `session=...` cookie a sign-in set.
pub fn session_cookie(login: &Reply) -> String {
    login
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no cookie: {}", login.body))
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// One HTTP/1.1 request with a body (a form, say), with extra headers.
pub fn request_with_body(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    if !body.is_empty() {
        extra.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\nUser-Agent: meshrig-test\r\n\r\n{body}"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    Ok(Reply { status, headers, body: body.to_string() })
}

/// Nothing accepts connections on `addr` any more.
pub fn closed(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

/// Is `pid` a live process (not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Does `pid` run with `--state-dir <state>`? (Read independently of the crate's own reaper.)
fn runs_in(pid: u32, state: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    args.windows(2).any(|w| w[0] == b"--state-dir" && w[1] == state.as_os_str().as_encoded_bytes())
}

/// Processes whose command line carries this environment's `--state-dir`.
pub fn env_processes(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if alive(pid) && runs_in(pid, state) {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push(format!("{pid}: {}", String::from_utf8_lossy(&raw).replace('\0', " ")));
        }
    }
    out
}

/// The `istio_requests_total` series a proxy's admin listener reports, as (labels, value).
pub fn requests_total(admin: SocketAddr) -> Vec<(String, f64)> {
    series(admin, "istio_requests_total")
}

/// The series of `metric` (a full sample name: `istio_request_bytes_count`) a proxy's admin
/// listener reports, as (labels, value).
pub fn series(admin: SocketAddr, metric: &str) -> Vec<(String, f64)> {
    let body = get(admin, "localhost", "/stats/prometheus").unwrap().body;
    let prefix = format!("{metric}{{");
    body.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(labels, v)| (labels.to_string(), v.parse().unwrap()))
        .collect()
}

/// The sum of `metric` over the series whose labels contain all of `want`.
pub fn sum(admin: SocketAddr, metric: &str, want: &[&str]) -> f64 {
    series(admin, metric).iter().filter(|(l, _)| want.iter().all(|w| l.contains(w))).map(|(_, v)| v).sum()
}

/// The pid listening on 127.0.0.1:`port`, from /proc/net/tcp and the processes' socket fds.
pub fn listener_pid(port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        (local_port == port && f.get(3) == Some(&"0A")).then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let target = format!("socket:[{inode}]");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target)) {
            return Some(pid);
        }
    }
    None
}

/// Does a process of the environment at `state` listen on `addr`? (Ports are ephemeral and
/// tests run in parallel, so a port may be another environment's a moment after ours closed.)
pub fn ours_listening(addr: SocketAddr, state: &Path) -> bool {
    if closed(addr) {
        return false;
    }
    // A listener we cannot attribute counts as ours: the check errs on the side of failing.
    listener_pid(addr.port()).is_none_or(|pid| runs_in(pid, state))
}

impl Mesh {
    /// The control plane's API address and token, as a proxy gets them.
    pub fn api(&self) -> (SocketAddr, String) {
        let address = self.status()["control_plane"]["address"].as_str().unwrap().parse().unwrap();
        let token = find_file(self.state.path(), "token").expect("the environment has a token");
        (address, std::fs::read_to_string(token).unwrap().trim().to_string())
    }

    /// The name of the (first) pod of `workload`.
    pub fn pod(&self, workload: &str) -> String {
        let status = self.status();
        let pod =
            status["pods"].as_array().unwrap().iter().find(|p| p["workload"] == workload).expect("workload has a pod");
        pod["name"].as_str().unwrap().to_string()
    }
}

pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if e.file_name() == name {
            return Some(path);
        }
    }
    None
}

/// Polls `f` every `every` until it gives a value, failing after `limit` with `what` and the
/// last state `f` reported: for what has no signal of its own to wait on (a span on its way to
/// the collector, a scrape, a process going away).
pub fn within<T>(limit: Duration, every: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                assert!(std::time::Instant::now() < deadline, "not within {limit:?}: {what}; last seen: {last}")
            }
        }
        std::thread::sleep(every);
    }
}

/// An outside tool a test needs (`MESHRIG_PROMETHEUS`, `MESHRIG_CHROMIUM`, `MESHRIG_PROMTOOL`):
/// its path, or None when it is not named, which plain `cargo test` allows (it needs nothing
/// outside the repository) and CI (`CI` set) does not: there a missing tool fails the test
/// rather than letting it pass without doing its work.
pub fn tool(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => Some(path),
        _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") => {
            panic!("{var} is not set under CI: {what} cannot be left out (.ci/run sets it)")
        }
        _ => {
            eprintln!("{var} is not set: {what} is left out (.ci/run sets it)");
            None
        }
    }
}
