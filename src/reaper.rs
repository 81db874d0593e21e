//! Finding and stopping the processes an environment started, even after a crash.
//!
//! Every process meshrig starts for an environment carries `--state-dir <dir>` in its command
//! line; on Linux `/proc` finds them all whatever happened to the records. Elsewhere the pids
//! recorded in `processes.json` and `control-plane.json` are used.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The subcommands of the processes meshrig starts for an environment (a user's own
/// `meshrig --state-dir DIR up` or `logs -f` is not one of them, and is never reaped).
const STARTED: [&[u8]; 3] = [b"control-plane", b"proxy", b"app"];

/// Is `pid` a process meshrig started for the environment at `dir` (`--state-dir <dir>`
/// followed by one of the internal subcommands)?
pub fn belongs(pid: u32, dir: &Path) -> bool {
    let want = dir.as_os_str().as_encoded_bytes();
    let args = args(pid);
    args.windows(3).any(|w| w[0] == b"--state-dir" && w[1] == want && STARTED.contains(&w[2].as_slice()))
        || args.iter().any(|a| is_addon_config(a, want))
}

/// An addon's `--config.file=` inside the environment's `addons/` directory (Prometheus
/// carries no `--state-dir`; its configuration says whose it is).
fn is_addon_config(arg: &[u8], dir: &[u8]) -> bool {
    arg.strip_prefix(b"--config.file=".as_slice())
        .and_then(|path| path.strip_prefix(dir))
        .is_some_and(|rest| rest.starts_with(b"/addons/"))
}

/// The process listening on TCP `port` (any local address, IPv4 or IPv6), read from `/proc`;
/// None when nothing listens there or it cannot be told (another user's process, not Linux).
pub fn port_holder(port: u16) -> Option<u32> {
    let mut inode = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        inode = text.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && f.get(3) == Some(&"0A")).then(|| f.get(9).map(|s| s.to_string()))?
        });
        if inode.is_some() {
            break;
        }
    }
    let target = format!("socket:[{}]", inode?);
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target)) {
            return Some(pid);
        }
    }
    None
}

/// Who `pid` is, for a message: `python3 -m http.server 8080 (pid 4242)`.
pub fn describe(pid: u32) -> String {
    let args: Vec<String> =
        args(pid).iter().filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let mut line = args.join(" ");
    if line.chars().count() > 80 {
        line = line.chars().take(80).collect::<String>() + "…";
    }
    if line.is_empty() {
        line = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
    }
    format!("{line} (pid {pid})")
}

/// Which of the environment's processes `pid` is: `control-plane`, `proxy` or `app`, when it
/// is one of them.
pub fn role_in(pid: u32, dir: &Path) -> Option<String> {
    let want = dir.as_os_str().as_encoded_bytes();
    let args = args(pid);
    args.windows(3)
        .find(|w| w[0] == b"--state-dir" && w[1] == want && STARTED.contains(&w[2].as_slice()))
        .map(|w| String::from_utf8_lossy(&w[2]).into_owned())
}

/// The command line of `pid` (empty when it cannot be read).
pub fn args(pid: u32) -> Vec<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| raw.split(|b| *b == 0).map(<[u8]>::to_vec).collect())
        .unwrap_or_default()
}

/// Every live process of the environment at `dir` (Linux), besides this one.
pub fn environment_pids(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && belongs(*pid, dir))
        .collect()
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok() && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// SIGTERM, then SIGKILL for what is still alive after `grace`; returns the pids it signalled.
pub fn stop(pids: &[u32], grace: Duration) -> Vec<u32> {
    let mut signalled = Vec::new();
    for &pid in pids {
        if kill(Pid::from_raw(pid as i32), Signal::SIGTERM).is_ok() {
            signalled.push(pid);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && signalled.iter().any(|p| alive(*p)) {
        // Polling for exit: there is no portable way to wait on processes that are not our children.
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &signalled {
        if alive(pid) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && signalled.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    signalled
}
