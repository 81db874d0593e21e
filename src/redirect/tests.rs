//! The redirect plan and its encoding. Installing it for real is `tests/mesh/capture.rs`, in a
//! network namespace, where clients that know nothing of the proxy reach it.

use super::netlink::{batch, describe, expressions};
use super::*;

fn config(include: Ports) -> Config {
    Config {
        proxy_uid: 1337,
        proxy_gid: 1337,
        outbound_port: 15001,
        inbound_port: 15006,
        include_inbound: include,
        exclude_inbound: vec![15090, 15021, 15020],
    }
}

fn lines(c: &Config, chain: &str) -> Vec<String> {
    rules(c).iter().filter(|r| r.chain == chain).map(describe).collect()
}

#[test]
fn inbound_leaves_the_proxys_ports_and_takes_all_others_or_only_those_included() {
    assert_eq!(
        lines(&config(Ports::All), "ISTIO_INBOUND"),
        [
            "meta l4proto tcp tcp dport 15090 return",
            "meta l4proto tcp tcp dport 15021 return",
            "meta l4proto tcp tcp dport 15020 return",
            "meta l4proto tcp jump ISTIO_IN_REDIRECT",
        ]
    );
    let only = lines(&config(Ports::parse("9080, 8080").unwrap()), "ISTIO_INBOUND");
    assert_eq!(
        &only[3..],
        [
            "meta l4proto tcp tcp dport 9080 jump ISTIO_IN_REDIRECT",
            "meta l4proto tcp tcp dport 8080 jump ISTIO_IN_REDIRECT"
        ]
    );
    assert_eq!(lines(&config(Ports::All), "ISTIO_IN_REDIRECT"), ["meta l4proto tcp redirect to :15006"]);
    assert_eq!(Ports::parse("*"), Ok(Ports::All));
    assert!(Ports::parse("80,http").unwrap_err().contains("\"http\""));
}

#[test]
fn outbound_leaves_the_proxys_own_traffic_and_localhost_in_istios_order() {
    assert_eq!(
        lines(&config(Ports::All), "ISTIO_OUTPUT"),
        [
            "ip saddr 127.0.0.6 oifname \"lo\" return",
            "oifname \"lo\" ip daddr != 127.0.0.1 meta skuid 1337 jump ISTIO_IN_REDIRECT",
            "oifname \"lo\" meta skuid != 1337 return",
            "meta skuid 1337 return",
            "oifname \"lo\" ip daddr != 127.0.0.1 meta skgid 1337 jump ISTIO_IN_REDIRECT",
            "oifname \"lo\" meta skgid != 1337 return",
            "meta skgid 1337 return",
            "ip daddr 127.0.0.1 return",
            "jump ISTIO_REDIRECT",
        ]
    );
    assert_eq!(lines(&config(Ports::All), "ISTIO_REDIRECT"), ["meta l4proto tcp redirect to :15001"]);
}

/// Walks a netlink attribute list: (type without flags, payload) of each.
fn walk(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        assert!(len >= 4 && len <= b.len(), "attribute length {len} of {}", b.len());
        out.push((kind, b[4..len].to_vec()));
        b = &b[(len.div_ceil(4) * 4).min(b.len())..];
    }
    out
}

#[test]
fn a_redirect_rule_encodes_as_nft_writes_it() {
    let rule = Rule { chain: "ISTIO_REDIRECT", matches: vec![Match::Tcp], action: Action::Redirect(15001) };
    let exprs = walk(&expressions(&rule));
    let names: Vec<String> = exprs
        .iter()
        .map(|(_, e)| {
            let fields = walk(e);
            String::from_utf8(fields[0].1.clone()).unwrap().trim_end_matches('\0').to_string()
        })
        .collect();
    assert_eq!(names, ["meta", "cmp", "immediate", "redir"], "as `nft --debug=netlink` shows it");
    // The port is loaded big-endian, as nft_redir reads it.
    let immediate = walk(&exprs[2].1);
    let data = walk(&immediate[1].1);
    let value = walk(&data[1].1);
    assert_eq!(value[0].1, 15001u16.to_be_bytes());
}

#[test]
fn the_batch_is_framed_and_every_acknowledged_message_is_named() {
    let c = config(Ports::All);
    let (bytes, what) = batch(&chains(), &rules(&c), 1);
    // Netlink messages back to back, each length a multiple of 4, begin and end of batch around.
    let mut at = 0;
    let mut kinds = Vec::new();
    while at < bytes.len() {
        let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        kinds.push(u16::from_ne_bytes(bytes[at + 4..at + 6].try_into().unwrap()));
        assert_eq!(len % 4, 0);
        at += len;
    }
    assert_eq!(at, bytes.len());
    assert_eq!((kinds[0], *kinds.last().unwrap()), (16, 17));
    assert_eq!(what.len(), kinds.len() - 2);
    assert!(what.iter().any(|(_, w)| w.contains("redirect to :15006")), "{what:?}");
}
