//! Istio's request normalisation (`meshConfig.pathNormalization`), applied by every proxy
//! before authorization, routing and forwarding, as Envoy's connection manager does: the path's
//! percent-encoded unreserved characters decoded, backslashes made slashes and dot segments
//! resolved (BASE, the default), slashes merged (MERGE_SLASHES), `%2F` and `%5C` decoded first
//! (DECODE_AND_MERGE_SLASHES); a `%00` anywhere refused. Pure.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// `meshConfig.pathNormalization.normalization`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// The path as the client sent it.
    None,
    /// RFC 3986: unreserved `%HH` decoded, `\` → `/`, `.` and `..` segments resolved.
    #[default]
    Base,
    /// BASE, then runs of slashes merged.
    MergeSlashes,
    /// `%2F` and `%5C` decoded, then MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    /// The mesh config's spelling of each option.
    pub const NAMES: [&'static str; 4] = ["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"];

    pub fn parse(name: &str) -> Option<PathNormalization> {
        Some(match name {
            "NONE" => PathNormalization::None,
            "BASE" => PathNormalization::Base,
            "MERGE_SLASHES" => PathNormalization::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => PathNormalization::DecodeAndMergeSlashes,
            _ => return None,
        })
    }
}

/// Why a request cannot be normalised: Envoy answers 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// `%00` in the path (refused whatever the option, as Istio documents).
    NulByte,
}

/// An HTTP method Istio lets through: upper case only (Istio answers 400 otherwise, so a DENY on
/// `DELETE` cannot be passed with `delete`).
pub fn method_ok(method: &str) -> bool {
    !method.bytes().any(|b| b.is_ascii_lowercase())
}

/// The path (without its query) after normalisation; borrowed when nothing changes, which is
/// every path without `%`, `\`, a dot segment or (when merging) a double slash.
pub fn path(path: &str, mode: PathNormalization) -> Result<Cow<'_, str>, Invalid> {
    let bytes = path.as_bytes();
    if bytes.windows(3).any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0') {
        return Err(Invalid::NulByte);
    }
    let merge = matches!(mode, PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes);
    let special = bytes.iter().any(|b| matches!(b, b'%' | b'\\'));
    let plain = !(special || has_dot_segment(bytes) || (merge && path.contains("//")));
    if mode == PathNormalization::None || plain {
        return Ok(Cow::Borrowed(path));
    }
    let slashes = mode == PathNormalization::DecodeAndMergeSlashes;
    let decoded = decode(bytes, slashes);
    let mut out = remove_dot_segments(&decoded);
    if merge {
        out.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    // One pass of decoding can make a `%00` (`%%300` → `%00`): refused as the original would be,
    // so nothing downstream decodes a NUL the check did not see.
    if out.windows(3).any(|w| w == b"%00") {
        return Err(Invalid::NulByte);
    }
    // Only ASCII was decoded, and only whole `%HH` triples: the bytes stay valid UTF-8.
    Ok(Cow::Owned(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())))
}

fn has_dot_segment(bytes: &[u8]) -> bool {
    bytes.split(|b| *b == b'/').any(|seg| seg == b"." || seg == b"..")
}

/// One pass of decoding (never twice): unreserved characters, and with `slashes` `%2F`/`%5C`;
/// `\` becomes `/`; other escapes are kept with upper-case hex.
fn decode(bytes: &[u8], slashes: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = h * 16 + l;
                let unreserved = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
                if unreserved || (slashes && matches!(c, b'/' | b'\\')) {
                    out.push(if c == b'\\' { b'/' } else { c });
                } else {
                    out.push(b'%');
                    out.push(bytes[i + 1].to_ascii_uppercase());
                    out.push(bytes[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(if b == b'\\' { b'/' } else { b });
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path: `.` segments dropped, `..` removes the one before (never
/// above the root); a trailing `.` or `..` leaves a trailing slash.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    // parts[0] is what precedes the first slash (empty for an absolute path).
    let last = parts.len() - 1;
    for (i, seg) in parts.iter().enumerate().skip(1) {
        match *seg {
            b"." | b".." => {
                if *seg == b".." {
                    segments.pop();
                }
                if i == last {
                    segments.push(b"");
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = parts[0].to_vec();
    for s in segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathNormalization::*;

    fn norm(p: &str, mode: PathNormalization) -> String {
        path(p, mode).unwrap().into_owned()
    }

    #[test]
    fn istios_normalization_table() {
        // Istio's "Authorization Policy Normalization" page, case by case.
        assert_eq!(norm("/some%2fdata/%61%62%63", Base), "/some%2Fdata/abc");
        assert_eq!(norm("/some%2fdata/%61%62%63", DecodeAndMergeSlashes), "/some/data/abc");
        assert_eq!(norm("/%2d%2e%30%39%41%5a%5f%61%7a%7e", Base), "/-.09AZ_az~");
        assert_eq!(norm("/a%5cb", Base), "/a%5Cb");
        assert_eq!(norm("/a%5cb", DecodeAndMergeSlashes), "/a/b");
        assert_eq!(norm("/some\\data", Base), "/some/data");
        assert_eq!(norm("/some//data///abc", Base), "/some//data///abc");
        assert_eq!(norm("/some//data///abc", MergeSlashes), "/some/data/abc");
        assert_eq!(norm("/public/./data/abc/../xyz", Base), "/public/data/xyz");
        assert_eq!(path("/a%00b", Base), Err(Invalid::NulByte));
        assert_eq!(path("/a%00b", None), Err(Invalid::NulByte), "always refused");
        assert_eq!(norm("/x/../admin", None), "/x/../admin");
        // Found by the fuzzer: decoding `%30` after a lone `%` makes a `%00`.
        assert_eq!(path("1%%300/a/b/gt'", Base), Err(Invalid::NulByte));
    }

    #[test]
    fn the_bypasses_of_a_deny_on_admin_all_become_admin() {
        for p in
            ["/x/../admin", "/./admin", "/%2e/admin", "/%61dmin", "/x/%2e%2e/admin", "/../admin", "/admin/.", "\\admin"]
        {
            let n = norm(p, Base);
            assert!(n == "/admin" || n == "/admin/", "{p} → {n}");
        }
        assert_eq!(norm("//admin", MergeSlashes), "/admin");
        assert_eq!(norm("/x%2f..%2fadmin", DecodeAndMergeSlashes), "/admin");
    }

    #[test]
    fn ordinary_paths_are_borrowed_and_odd_ones_survive() {
        assert!(matches!(path("/productpage", Base).unwrap(), Cow::Borrowed(_)));
        assert!(matches!(path("/a//b", Base).unwrap(), Cow::Borrowed(_)));
        assert!(matches!(path("/file.tar.gz/..x", Base).unwrap(), Cow::Borrowed(_)));
        assert_eq!(norm("/%zz/%4", Base), "/%zz/%4");
        assert_eq!(norm("/caf%C3%A9", Base), "/caf%C3%A9");
        assert_eq!(norm("/a/b/..", Base), "/a/");
        assert_eq!(norm("/..", Base), "/");
        assert!(method_ok("GET") && method_ok("PURGE") && !method_ok("delete") && !method_ok("Get"));
    }
}
