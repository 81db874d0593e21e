//! The readiness line: a child process prints `READY {"name": "addr", ...}` on stdout once its
//! listeners are bound, and the runner that started it reads it. Ports are all ephemeral, so
//! this is how the runner learns them — and it is a real readiness signal, not a guess.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;

const PREFIX: &str = "READY ";

pub type Addrs = BTreeMap<String, SocketAddr>;

pub fn announce(addrs: &Addrs) {
    let line = format!("{PREFIX}{}\n", serde_json::to_string(addrs).expect("addresses serialize"));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

pub fn parse(line: &str) -> Option<Addrs> {
    serde_json::from_str(line.trim_end().strip_prefix(PREFIX)?).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_what_announce_prints() {
        let line = r#"READY {"outbound":"127.0.0.1:4000"}"#;
        let addrs = super::parse(line).unwrap();
        assert_eq!(addrs["outbound"].port(), 4000);
        assert!(super::parse("hello").is_none());
    }
}
