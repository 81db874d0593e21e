//! The readiness line: a child process prints `READY {"name": "addr", ...}` on stdout once its
//! listeners are bound, and the runner that started it reads it. Ports are all ephemeral, so
//! this is how the runner learns them — and it is a real readiness signal, not a guess.
//!
//! Listener names are typed ([`Listener`]); on the wire (the READY line, `status -o json`)
//! they are the strings `api`, `admin`, `outbound`, `inbound:<port>` and `<port>` (an app).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;

const PREFIX: &str = "READY ";

/// What a listening socket is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Listener {
    /// The control plane's API.
    Api,
    /// A proxy's admin listener (`/ready`, `/stats/prometheus`, `/config_dump`).
    Admin,
    /// A proxy's outbound listener (the app's HTTP_PROXY).
    Outbound,
    /// A sidecar's inbound listener in front of this container port.
    Inbound(u16),
    /// An app listening for this container port.
    App(u16),
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Api => f.write_str("api"),
            Listener::Admin => f.write_str("admin"),
            Listener::Outbound => f.write_str("outbound"),
            Listener::Inbound(p) => write!(f, "inbound:{p}"),
            Listener::App(p) => write!(f, "{p}"),
        }
    }
}

impl FromStr for Listener {
    type Err = String;
    fn from_str(s: &str) -> Result<Listener, String> {
        let port = |p: &str| p.parse::<u16>().map_err(|_| format!("unknown listener {s:?}"));
        Ok(match s {
            "api" => Listener::Api,
            "admin" => Listener::Admin,
            "outbound" => Listener::Outbound,
            _ => match s.strip_prefix("inbound:") {
                Some(p) => Listener::Inbound(port(p)?),
                None => Listener::App(port(s)?),
            },
        })
    }
}

impl serde::Serialize for Listener {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Listener {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Listener, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub type Addrs = BTreeMap<Listener, SocketAddr>;

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
    use super::Listener;

    #[test]
    fn parses_what_announce_prints() {
        let line = r#"READY {"outbound":"127.0.0.1:4000","inbound:9080":"127.0.0.1:4001","8080":"127.0.0.1:4002"}"#;
        let addrs = super::parse(line).unwrap();
        assert_eq!(addrs[&Listener::Outbound].port(), 4000);
        assert_eq!(addrs[&Listener::Inbound(9080)].port(), 4001);
        assert_eq!(addrs[&Listener::App(8080)].port(), 4002);
        assert!(super::parse("hello").is_none());
        assert!(super::parse(r#"READY {"inbound:x":"127.0.0.1:1"}"#).is_none());
    }

    #[test]
    fn names_round_trip() {
        for l in [Listener::Api, Listener::Admin, Listener::Outbound, Listener::Inbound(80), Listener::App(8080)] {
            assert_eq!(l.to_string().parse::<Listener>(), Ok(l));
        }
    }
}
