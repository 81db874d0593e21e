//! One environment's state directory: where its resources, token, logs and pids live.
//!
//! Layout of `$XDG_STATE_HOME/meshrig/ENV/` (default `~/.local/state/meshrig/default/`):
//! `settings.json` (ports chosen at first `up`), `token` (0600, the API token),
//! `control-plane.json` (address and pid of the running control plane), `store.json`
//! (applied resources), `processes.json` (pids the runner started), `logs/`, `labs/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug)]
pub struct Env {
    pub name: String,
    pub dir: PathBuf,
}

/// Settings fixed when the environment is first brought up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Localhost port of the ingress gateway's HTTP listener (Gateway servers on 80 or 8080).
    pub http_port: u16,
    /// Localhost port of the ingress gateway's HTTPS listener (Gateway servers on 443 or 8443).
    pub https_port: u16,
    /// Localhost port of the ingress gateway's TCP listener (Gateway servers on 31400).
    #[serde(default = "default_tcp_port")]
    pub tcp_port: u16,
    /// Localhost port of the trace collector's Jaeger query API (16686, Jaeger's own).
    #[serde(default = "default_tracing_port")]
    pub tracing_port: u16,
    /// The sample apps `up` runs (`up --apps` changes them); environments from before Bookinfo
    /// was built in keep httpbin only.
    #[serde(default = "httpbin_only")]
    pub apps: Vec<String>,
    /// The addons the control plane runs (`up --addons`, `meshrig addons enable`).
    #[serde(default)]
    pub addons: Vec<String>,
    /// Localhost port of the Prometheus addon (9090, Prometheus's own).
    #[serde(default = "default_prometheus_port")]
    pub prometheus_port: u16,
    /// The most connections each proxy listener holds at once (`up --max-connections`); past
    /// it a new connection is closed as it arrives, as Envoy's connection limit does.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Where the environment runs; the commands and the control plane pick their backend by it.
    #[serde(default)]
    pub backend: BackendKind,
    /// On the kind backend: what sample images run as (`up --sample-images`).
    #[serde(default)]
    pub sample_images: SampleImages,
}

/// The backends meshrig has: `local`, processes on this machine's loopback; `kind`, a kind
/// cluster named `meshrig-ENV`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Local,
    Kind,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Kind => "kind",
        }
    }
}

/// On the kind backend, what sample images run as: meshrig's built-in apps from meshrig's image
/// (the default: a cluster without internet works), or the images the manifests name, pulled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SampleImages {
    #[default]
    Builtin,
    Upstream,
}

impl SampleImages {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleImages::Builtin => "builtin",
            SampleImages::Upstream => "upstream",
        }
    }
}

/// Per proxy listener: room for a 1024-connection load test through the gateway, and a bound
/// on what a storm of idle connections can hold.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// Prometheus's own port (Istio's addon Service uses it too): where the addon listens unless
/// the settings say otherwise.
pub const PROMETHEUS_PORT: u16 = 9090;

fn default_prometheus_port() -> u16 {
    PROMETHEUS_PORT
}

fn default_tcp_port() -> u16 {
    31400
}

fn default_tracing_port() -> u16 {
    16686
}

fn httpbin_only() -> Vec<String> {
    vec!["httpbin".to_string()]
}

impl Settings {
    /// Where the ingress gateway publishes a listener on container `port`: 8080, 8443 and 31400
    /// on the ports `up` chose; any other port on the same number, or, below 1024 (which needs
    /// root), on the number plus 10000 (a Gateway server on port 81 is on 127.0.0.1:10081).
    pub fn gateway_address(&self, port: u16) -> std::net::SocketAddr {
        let host = match port {
            8080 => self.http_port,
            8443 => self.https_port,
            31400 => self.tcp_port,
            p => extra_gateway_port(p),
        };
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, host))
    }
}

/// The localhost port of an ingress gateway listener on container `port` other than 8080, 8443
/// and 31400.
pub fn extra_gateway_port(port: u16) -> u16 {
    if port >= 1024 {
        port
    } else {
        port + 10000
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http_port: 8080,
            https_port: 8443,
            tcp_port: default_tcp_port(),
            tracing_port: default_tracing_port(),
            apps: vec!["httpbin".to_string(), "bookinfo".to_string()],
            addons: Vec::new(),
            prometheus_port: default_prometheus_port(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            backend: BackendKind::Local,
            sample_images: SampleImages::Builtin,
        }
    }
}

/// Where the running control plane listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlPlaneInfo {
    pub address: std::net::SocketAddr,
    pub pid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find a home directory: set HOME, XDG_STATE_HOME or MESHRIG_STATE_DIR")]
    NoHome,
    #[error("environment name {0:?} is not valid: use letters, digits and '-'")]
    BadName(String),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid JSON: {source}; remove it or run `meshrig down --purge`")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

impl Env {
    /// `state_dir` (flag or MESHRIG_STATE_DIR) wins; otherwise `$XDG_STATE_HOME/meshrig/NAME`
    /// or `~/.local/state/meshrig/NAME`.
    pub fn resolve(name: &str, state_dir: Option<PathBuf>) -> Result<Env, Error> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::BadName(name.to_string()));
        }
        let dir = match state_dir {
            Some(d) => absolute(d),
            None => {
                let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
                    Some(x) => PathBuf::from(x),
                    None => PathBuf::from(std::env::var_os("HOME").ok_or(Error::NoHome)?).join(".local/state"),
                };
                base.join("meshrig").join(name)
            }
        };
        Ok(Env { name: name.to_string(), dir })
    }

    pub fn ensure_dirs(&self) -> Result<(), Error> {
        for d in [self.dir.clone(), self.logs_dir(), self.dir.join("labs")] {
            std::fs::create_dir_all(&d).map_err(|source| Error::Io { op: "create", path: d.clone(), source })?;
            set_mode(&d, 0o700);
        }
        Ok(())
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn store_file(&self) -> PathBuf {
        self.dir.join("store.json")
    }
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }
    pub fn control_plane_file(&self) -> PathBuf {
        self.dir.join("control-plane.json")
    }
    pub fn settings_file(&self) -> PathBuf {
        self.dir.join("settings.json")
    }
    pub fn processes_file(&self) -> PathBuf {
        self.dir.join("processes.json")
    }
    pub fn labs_file(&self) -> PathBuf {
        self.dir.join("labs").join("progress.json")
    }

    pub fn exists(&self) -> bool {
        self.settings_file().exists()
    }

    /// Reads the token, creating a random one (mode 0600) on first use.
    pub fn token(&self) -> Result<String, Error> {
        let path = self.token_file();
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            _ => {
                let token =
                    random_hex(32).map_err(|source| Error::Io { op: "read", path: "/dev/urandom".into(), source })?;
                write_atomic(&path, token.as_bytes(), 0o600)?;
                Ok(token)
            }
        }
    }

    pub fn read_token(&self) -> Result<String, Error> {
        let path = self.token_file();
        std::fs::read_to_string(&path).map(|t| t.trim().to_string()).map_err(|source| Error::Io {
            op: "read",
            path,
            source,
        })
    }

    pub fn settings(&self) -> Result<Option<Settings>, Error> {
        read_json(&self.settings_file())
    }

    pub fn save_settings(&self, s: &Settings) -> Result<(), Error> {
        write_json(&self.settings_file(), s)
    }

    pub fn control_plane(&self) -> Result<Option<ControlPlaneInfo>, Error> {
        read_json(&self.control_plane_file())
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|source| Error::Corrupt { path: path.into(), source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { op: "read", path: path.into(), source }),
    }
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value).expect("state types serialize");
    write_atomic(path, &bytes, 0o600)
}

/// Write-then-rename with fsync, so a crash leaves either the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    // Unique per call: two threads of one process writing the same file must not share a tmp.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let io = |op, source| Error::Io { op, path: path.into(), source };
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
    set_mode(&tmp, mode);
    f.write_all(bytes).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
    Ok(())
}

pub fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
}

/// `n` random bytes from the OS, hex encoded.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Seconds since the epoch with milliseconds, for log lines.
/// Now as RFC 3339 UTC with milliseconds, for log lines (`2026-11-22T15:57:21.123Z`).
pub fn timestamp() -> String {
    rfc3339_millis(std::time::SystemTime::now())
}

/// `2026-11-23T09:30:00.123Z`.
pub fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = rfc3339(d.as_secs() as i64);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), d.subsec_millis())
}

/// A log file bigger than this is moved to `<name>.1` (replacing the older one) when its
/// process starts again, so logs stay bounded at about twice this per container.
pub const LOG_ROTATE_BYTES: u64 = 4 << 20;

/// Opens `path` for appending, after rotating it if it has grown past [`LOG_ROTATE_BYTES`].
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, old)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Now as RFC 3339 UTC (Kubernetes' creationTimestamp format), without a date library.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    rfc3339(secs)
}

pub fn rfc3339(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses what `rfc3339` writes (`2026-11-23T09:30:00Z`, any fraction ignored) back into
/// seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    if s.len() < 20 || s.as_bytes()[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u16>().ok();
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::from(num(0..4)?), month, u8::try_from(num(8..10)?).ok()?).ok()?;
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let t = time::Time::from_hms(u8::try_from(hh).ok()?, u8::try_from(mm).ok()?, u8::try_from(ss).ok()?).ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc().unix_timestamp())
}

/// Kubernetes-style age: `5s`, `3m`, `2h`, `4d`.
pub fn age(created: &str) -> String {
    let Some(then) = parse_rfc3339(created) else { return "<unknown>".into() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let s = (now - then).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_from_before_backends_runs_locally_and_an_unknown_backend_is_refused() {
        let old: Settings = serde_json::from_str(r#"{"http_port": 8080, "https_port": 8443}"#).unwrap();
        assert_eq!(old.backend, BackendKind::Local);
        let written = serde_json::to_string(&Settings::default()).unwrap();
        assert!(written.contains(r#""backend":"local""#), "{written}");
        let kind = serde_json::from_str::<Settings>(r#"{"http_port": 1, "https_port": 2, "backend": "kind"}"#).unwrap();
        assert_eq!((kind.backend, kind.sample_images), (BackendKind::Kind, SampleImages::Builtin));
        let err = serde_json::from_str::<Settings>(r#"{"http_port": 1, "https_port": 2, "backend": "minikube"}"#);
        assert!(err.unwrap_err().to_string().contains("unknown variant `minikube`"));
    }

    #[test]
    fn rfc3339_round_trips() {
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn state_dir_flag_wins_and_names_are_checked() {
        let e = Env::resolve("lab", Some("/tmp/x".into())).unwrap();
        assert_eq!(e.dir, PathBuf::from("/tmp/x"));
        assert!(Env::resolve("../x", None).is_err());
    }
}
