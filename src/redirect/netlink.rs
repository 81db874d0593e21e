//! The redirect rules as nf_tables netlink messages, sent to the kernel in one batch (one
//! transaction: all of it applies or none): the table is created, deleted and created again,
//! so an earlier install is replaced, then its chains and rules are added. Integers in
//! nf_tables attributes are big-endian; what `meta skuid` loads is in host order.

use std::os::fd::AsRawFd;

use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

use super::{Action, Chain, Hook, Match, Rule, TABLE};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_IPV4: u8 = 2;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_SKUID: u32 = 10;
const NFT_META_SKGID: u32 = 11;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;
const NF_ACCEPT: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const IPPROTO_TCP: u8 = 6;

/// A netlink attribute list being written.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn raw(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(4) * 4, 0);
        self
    }

    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.raw(kind, &data)
    }

    fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.raw(kind, &v.to_be_bytes())
    }

    fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.raw(kind | NLA_F_NESTED, &inner.0)
    }
}

fn attrs(f: impl FnOnce(&mut Attrs)) -> Attrs {
    let mut a = Attrs::default();
    f(&mut a);
    a
}

/// One message: the netlink header, nfgenmsg, then `body`.
fn message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, body: &[u8]) {
    let len = 16 + 4 + body.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(body);
}

/// One expression of a rule (`NFTA_LIST_ELEM`).
fn expr(list: &mut Attrs, name: &str, data: Attrs) {
    list.nested(
        1,
        &attrs(|e| {
            e.str(1, name).nested(2, &data);
        }),
    );
}

fn load_meta(list: &mut Attrs, key: u32) {
    expr(
        list,
        "meta",
        attrs(|a| {
            a.be32(1, NFT_REG_1).be32(2, key);
        }),
    );
}

fn load_payload(list: &mut Attrs, base: u32, offset: u32, len: u32) {
    expr(
        list,
        "payload",
        attrs(|a| {
            a.be32(1, NFT_REG_1).be32(2, base).be32(3, offset).be32(4, len);
        }),
    );
}

fn compare(list: &mut Attrs, eq: bool, value: &[u8]) {
    expr(
        list,
        "cmp",
        attrs(|a| {
            a.be32(1, NFT_REG_1).be32(2, if eq { NFT_CMP_EQ } else { NFT_CMP_NEQ }).nested(
                3,
                &attrs(|d| {
                    d.raw(1, value);
                }),
            );
        }),
    );
}

fn verdict(list: &mut Attrs, code: i32, chain: Option<&str>) {
    let v = attrs(|v| {
        v.be32(1, code as u32);
        if let Some(c) = chain {
            v.str(2, c);
        }
    });
    expr(
        list,
        "immediate",
        attrs(|a| {
            a.be32(1, NFT_REG_VERDICT).nested(
                2,
                &attrs(|d| {
                    d.nested(2, &v);
                }),
            );
        }),
    );
}

/// A rule's expressions: its matches, then its action.
pub fn expressions(rule: &Rule) -> Vec<u8> {
    let mut list = Attrs::default();
    for m in &rule.matches {
        match m {
            Match::Tcp => {
                load_meta(&mut list, NFT_META_L4PROTO);
                compare(&mut list, true, &[IPPROTO_TCP]);
            }
            Match::DPort(p) => {
                load_payload(&mut list, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                compare(&mut list, true, &p.to_be_bytes());
            }
            Match::SAddr(a) => {
                load_payload(&mut list, NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
                compare(&mut list, true, a);
            }
            Match::DAddr(a, eq) => {
                load_payload(&mut list, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
                compare(&mut list, *eq, a);
            }
            Match::OifName(name) => {
                load_meta(&mut list, NFT_META_OIFNAME);
                let mut padded = [0u8; 16];
                padded[..name.len()].copy_from_slice(name.as_bytes());
                compare(&mut list, true, &padded);
            }
            Match::SkUid(id, eq) => {
                load_meta(&mut list, NFT_META_SKUID);
                compare(&mut list, *eq, &id.to_ne_bytes());
            }
            Match::SkGid(id, eq) => {
                load_meta(&mut list, NFT_META_SKGID);
                compare(&mut list, *eq, &id.to_ne_bytes());
            }
        }
    }
    match &rule.action {
        Action::Return => verdict(&mut list, NFT_RETURN, None),
        Action::Jump(chain) => verdict(&mut list, NFT_JUMP, Some(chain)),
        Action::Redirect(port) => {
            expr(
                &mut list,
                "immediate",
                attrs(|a| {
                    a.be32(1, NFT_REG_1).nested(
                        2,
                        &attrs(|d| {
                            d.raw(1, &port.to_be_bytes());
                        }),
                    );
                }),
            );
            expr(
                &mut list,
                "redir",
                attrs(|a| {
                    a.be32(1, NFT_REG_1).be32(2, NFT_REG_1).be32(3, NF_NAT_RANGE_PROTO_SPECIFIED);
                }),
            );
        }
    }
    list.0
}

/// The whole transaction, sequence numbers from `first_seq`; with what each acknowledged
/// message was (to name the one the kernel refuses).
pub fn batch(chains: &[Chain], rules: &[Rule], first_seq: u32) -> (Vec<u8>, Vec<(u32, String)>) {
    let mut out = Vec::new();
    let mut what = Vec::new();
    let mut seq = first_seq;
    let nft = |kind: u16| (NFNL_SUBSYS_NFTABLES << 8) | kind;
    message(&mut out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    seq += 1;
    let table = attrs(|a| {
        a.str(1, TABLE);
    });
    // Create (if missing), delete, create: whatever an earlier run left is replaced.
    for (kind, label) in [
        (NFT_MSG_NEWTABLE, "create the table"),
        (NFT_MSG_DELTABLE, "replace the table"),
        (NFT_MSG_NEWTABLE, "create the table"),
    ] {
        message(&mut out, nft(kind), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq, NFPROTO_IPV4, 0, &table.0);
        what.push((seq, format!("{label} ip {TABLE}")));
        seq += 1;
    }
    for c in chains {
        let body = attrs(|a| {
            a.str(1, TABLE).str(3, c.name);
            if let Some(hook) = c.hook {
                let num = match hook {
                    Hook::Prerouting => 0,
                    Hook::Output => 3,
                };
                a.nested(
                    4,
                    &attrs(|h| {
                        h.be32(1, num).be32(2, (-100i32) as u32);
                    }),
                )
                .be32(5, NF_ACCEPT)
                .str(7, "nat");
            }
        });
        message(
            &mut out,
            nft(NFT_MSG_NEWCHAIN),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            seq,
            NFPROTO_IPV4,
            0,
            &body.0,
        );
        what.push((seq, format!("chain {}", c.name)));
        seq += 1;
    }
    for (i, r) in rules.iter().enumerate() {
        let exprs = Attrs(expressions(r));
        let body = attrs(|a| {
            a.str(1, TABLE).str(2, r.chain).nested(4, &exprs);
        });
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        message(&mut out, nft(NFT_MSG_NEWRULE), flags, seq, NFPROTO_IPV4, 0, &body.0);
        what.push((seq, format!("rule {} ({} in {})", i + 1, describe(r), r.chain)));
        seq += 1;
    }
    message(&mut out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    (out, what)
}

/// A rule as nft would write it, for messages.
pub fn describe(r: &Rule) -> String {
    let ip = |a: &[u8; 4]| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
    let mut parts: Vec<String> = r
        .matches
        .iter()
        .map(|m| match m {
            Match::Tcp => "meta l4proto tcp".to_string(),
            Match::DPort(p) => format!("tcp dport {p}"),
            Match::SAddr(a) => format!("ip saddr {}", ip(a)),
            Match::DAddr(a, eq) => format!("ip daddr {}{}", if *eq { "" } else { "!= " }, ip(a)),
            Match::OifName(n) => format!("oifname \"{n}\""),
            Match::SkUid(id, eq) => format!("meta skuid {}{id}", if *eq { "" } else { "!= " }),
            Match::SkGid(id, eq) => format!("meta skgid {}{id}", if *eq { "" } else { "!= " }),
        })
        .collect();
    parts.push(match &r.action {
        Action::Return => "return".into(),
        Action::Jump(c) => format!("jump {c}"),
        Action::Redirect(p) => format!("redirect to :{p}"),
    });
    parts.join(" ")
}

/// Sends the transaction and reads the kernel's answer to every message: all applied, or the
/// first refusal, named.
pub fn apply(chains: &[Chain], rules: &[Rule]) -> Result<(), String> {
    let fd =
        socket::socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)
            .map_err(|e| format!("open a netfilter netlink socket: {e}"))?;
    let kernel = NetlinkAddr::new(0, 0);
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| format!("bind the netlink socket: {e}"))?;
    let (bytes, what) = batch(chains, rules, 1);
    socket::sendto(fd.as_raw_fd(), &bytes, &kernel, MsgFlags::empty())
        .map_err(|e| format!("send the rules to the kernel: {e}"))?;
    let mut waiting: std::collections::BTreeMap<u32, String> = what.into_iter().collect();
    let mut buf = vec![0u8; 1 << 16];
    while !waiting.is_empty() {
        let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|e| format!("read the kernel's answer: {e}"))?;
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
            if len < 16 || at + len > n {
                return Err("the kernel's answer is malformed".into());
            }
            if kind == NLMSG_ERROR && len >= 20 {
                let code = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                let label = waiting.remove(&seq).unwrap_or_else(|| format!("message {seq}"));
                if code != 0 {
                    let errno = nix::errno::Errno::from_raw(-code);
                    return Err(format!("the kernel refused to {label}: {}{}", errno.desc(), hint(errno)));
                }
            }
            at += len.div_ceil(4) * 4;
        }
    }
    Ok(())
}

fn hint(e: nix::errno::Errno) -> &'static str {
    use nix::errno::Errno;
    match e {
        Errno::EPERM => " (run it with CAP_NET_ADMIN: as root, or an init container with NET_ADMIN)",
        Errno::ENOENT | Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT => {
            " (the kernel lacks nf_tables' NAT or redirect support: modprobe nf_tables nft_chain_nat nft_redir)"
        }
        _ => "",
    }
}
