//! A pod's traffic redirect, as Istio's `istio-init` installs it, without an `iptables` binary:
//! the rules are nf_tables rules (`redirect/netlink.rs` sends them to the kernel in one
//! transaction). Outbound TCP goes to the proxy's 15001 and inbound TCP to its 15006, except
//! the proxy's own traffic (its UID and GID) and its own ports. `rules` is the plan, pure; the
//! shape follows istio-iptables' chains (`ISTIO_INBOUND`, `ISTIO_IN_REDIRECT`, `ISTIO_OUTPUT`,
//! `ISTIO_REDIRECT`), in one table of meshrig's own (`ip meshrig-capture`).

pub mod netlink;

/// What to redirect, from `meshrig capture-init`'s flags (istio-iptables' `-u -g -p -z -b -d`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The proxy's UID and GID: its connections are never redirected (Istio's 1337).
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// Where outbound (15001) and inbound (15006) connections are sent.
    pub outbound_port: u16,
    pub inbound_port: u16,
    /// Inbound ports to redirect: all (`*`) or these.
    pub include_inbound: Ports,
    /// Inbound ports never redirected (the proxy's own: 15090, 15021, 15020).
    pub exclude_inbound: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    All,
    Only(Vec<u16>),
}

impl Ports {
    /// `*`, or a comma-separated list of ports (empty: none).
    pub fn parse(s: &str) -> Result<Ports, String> {
        if s.trim() == "*" {
            return Ok(Ports::All);
        }
        parse_ports(s).map(Ports::Only)
    }
}

/// A comma-separated list of ports (empty: none).
pub fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port")))
        .collect()
}

/// The table the rules live in (family ip).
pub const TABLE: &str = "meshrig-capture";

/// One condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// The packet is TCP.
    Tcp,
    /// TCP destination port (needs `Tcp` before it).
    DPort(u16),
    SAddr([u8; 4]),
    /// Destination address is (`true`) or is not (`false`) this one.
    DAddr([u8; 4], bool),
    /// Leaves through this interface.
    OifName(&'static str),
    /// The socket's owner UID is (`true`) or is not (`false`) this one.
    SkUid(u32, bool),
    SkGid(u32, bool),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Return,
    Jump(&'static str),
    /// To this port on the local machine.
    Redirect(u16),
}

/// A base chain: hooked into NAT at prerouting or output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Output,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub hook: Option<Hook>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub chain: &'static str,
    pub matches: Vec<Match>,
    pub action: Action,
}

const LOCALHOST: [u8; 4] = [127, 0, 0, 1];
/// The source address Istio's proxy uses to reach the app for inbound passthrough.
const INBOUND_PASSTHROUGH: [u8; 4] = [127, 0, 0, 6];

/// The chains, base chains first.
pub fn chains() -> Vec<Chain> {
    vec![
        Chain { name: "PREROUTING", hook: Some(Hook::Prerouting) },
        Chain { name: "OUTPUT", hook: Some(Hook::Output) },
        Chain { name: "ISTIO_INBOUND", hook: None },
        Chain { name: "ISTIO_IN_REDIRECT", hook: None },
        Chain { name: "ISTIO_OUTPUT", hook: None },
        Chain { name: "ISTIO_REDIRECT", hook: None },
    ]
}

/// The rules of `c`, chain by chain, in order (pure).
pub fn rules(c: &Config) -> Vec<Rule> {
    let rule = |chain, matches: Vec<Match>, action| Rule { chain, matches, action };
    let mut out = vec![
        rule("PREROUTING", vec![Match::Tcp], Action::Jump("ISTIO_INBOUND")),
        rule("OUTPUT", vec![Match::Tcp], Action::Jump("ISTIO_OUTPUT")),
    ];
    // Inbound: the proxy's own ports stay; then every port, or only those included.
    for p in &c.exclude_inbound {
        out.push(rule("ISTIO_INBOUND", vec![Match::Tcp, Match::DPort(*p)], Action::Return));
    }
    match &c.include_inbound {
        Ports::All => out.push(rule("ISTIO_INBOUND", vec![Match::Tcp], Action::Jump("ISTIO_IN_REDIRECT"))),
        Ports::Only(ports) => {
            for p in ports {
                out.push(rule("ISTIO_INBOUND", vec![Match::Tcp, Match::DPort(*p)], Action::Jump("ISTIO_IN_REDIRECT")));
            }
        }
    }
    out.push(rule("ISTIO_IN_REDIRECT", vec![Match::Tcp], Action::Redirect(c.inbound_port)));
    // Outbound, as istio-iptables orders it: passthrough from 127.0.0.6 stays; the proxy
    // calling its own pod by address comes back in; the app's calls to localhost stay; the
    // proxy's own calls leave; everything else goes to the proxy.
    let lo = Match::OifName("lo");
    out.push(rule("ISTIO_OUTPUT", vec![Match::SAddr(INBOUND_PASSTHROUGH), lo.clone()], Action::Return));
    for (is, is_not) in [
        (Match::SkUid(c.proxy_uid, true), Match::SkUid(c.proxy_uid, false)),
        (Match::SkGid(c.proxy_gid, true), Match::SkGid(c.proxy_gid, false)),
    ] {
        out.push(rule(
            "ISTIO_OUTPUT",
            vec![lo.clone(), Match::DAddr(LOCALHOST, false), is.clone()],
            Action::Jump("ISTIO_IN_REDIRECT"),
        ));
        out.push(rule("ISTIO_OUTPUT", vec![lo.clone(), is_not], Action::Return));
        out.push(rule("ISTIO_OUTPUT", vec![is], Action::Return));
    }
    out.push(rule("ISTIO_OUTPUT", vec![Match::DAddr(LOCALHOST, true)], Action::Return));
    out.push(rule("ISTIO_OUTPUT", vec![], Action::Jump("ISTIO_REDIRECT")));
    out.push(rule("ISTIO_REDIRECT", vec![Match::Tcp], Action::Redirect(c.outbound_port)));
    out
}

/// Installs the rules in the current network namespace, replacing an earlier install (an init
/// container run again). Needs CAP_NET_ADMIN.
pub fn install(c: &Config) -> Result<usize, String> {
    let rules = rules(c);
    netlink::apply(&chains(), &rules)?;
    Ok(rules.len())
}

#[cfg(test)]
mod tests;
