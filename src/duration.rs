//! Go's durations, once for the whole crate (pure): `time.ParseDuration` (`1h2m3.5s`, `250ms`,
//! `-1.5us`) with Go's exact arithmetic and error texts, and `Duration.String`. Istio's config,
//! fortio's flags and httpbin's parameters all read this syntax.

const MAX: u64 = 1 << 63;

/// Go's `time.ParseDuration`, in nanoseconds, or Go's error text.
pub fn parse(input: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {input:?}");
    let (neg, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part: an overflow is an invalid duration.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut v: u64 = 0;
        for c in s[..int_len].bytes() {
            if v > MAX / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(c - b'0');
            if v > MAX {
                return Err(invalid());
            }
        }
        s = &s[int_len..];
        let pre = int_len > 0;
        // The fraction: digits past what fits are ignored, as Go's leadingFraction does.
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for c in rest[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                if f > (MAX - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + u64::from(c - b'0');
                if y > MAX {
                    overflow = true;
                    continue;
                }
                f = y;
                scale *= 10.0;
            }
            post = frac_len > 0;
            s = &rest[frac_len..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_len = s.bytes().take_while(|b| *b != b'.' && !b.is_ascii_digit()).count();
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {input:?}"));
        }
        let unit_text = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_text {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit_text:?} in duration {input:?}")),
        };
        if v > MAX / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > MAX {
                return Err(invalid());
            }
        }
        d += v;
        if d > MAX {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((d as i64).wrapping_neg());
    }
    i64::try_from(d).map_err(|_| invalid())
}

/// A non-negative Go duration as a `std::time::Duration` (`None` when it does not parse or is
/// negative).
pub fn parse_std(input: &str) -> Option<std::time::Duration> {
    parse(input).ok().and_then(|ns| u64::try_from(ns).ok()).map(std::time::Duration::from_nanos)
}

/// Go's `time.Duration.String`: `1h2m3.5s`, `59.852ms`, `1.5µs`, `0s`.
pub fn string(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    let frac = |v: u64, digits: u32| -> String {
        let p = 10u64.pow(digits);
        let (int, rem) = (v / p, v % p);
        if rem == 0 {
            int.to_string()
        } else {
            let f = format!("{rem:0width$}", width = digits as usize);
            format!("{int}.{}", f.trim_end_matches('0'))
        }
    };
    if u < 1_000_000_000 {
        let (v, unit) = if u < 1_000 {
            (frac(u, 0), "ns")
        } else if u < 1_000_000 {
            (frac(u, 3), "\u{b5}s")
        } else {
            (frac(u, 6), "ms")
        };
        return format!("{sign}{v}{unit}");
    }
    let secs = u / 1_000_000_000;
    let sub = u % 1_000_000_000;
    let mut out = format!("{}s", frac((secs % 60) * 1_000_000_000 + sub, 9));
    let mins = secs / 60;
    if mins > 0 {
        out = format!("{}m{out}", mins % 60);
        let hours = mins / 60;
        if hours > 0 {
            out = format!("{hours}h{out}");
        }
    }
    format!("{sign}{out}")
}

/// `string` for a `std::time::Duration` (saturating at Go's largest duration).
pub fn string_std(d: std::time::Duration) -> String {
    string(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;

    /// Go's own table (`time_test.go`, parseDurationTests).
    #[test]
    fn go_parse_duration_table() {
        let ok: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * SECOND),
            ("30s", 30 * SECOND),
            ("1478s", 1478 * SECOND),
            ("-5s", -5 * SECOND),
            ("+5s", 5 * SECOND),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * SECOND),
            ("5.6s", 5 * SECOND + 600_000_000),
            ("5.s", 5 * SECOND),
            (".5s", 500_000_000),
            ("1.0s", SECOND),
            ("1.00s", SECOND),
            ("1.004s", SECOND + 4_000_000),
            ("1.0040s", SECOND + 4_000_000),
            ("100.00100s", 100 * SECOND + 1_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * SECOND),
            ("15m", 15 * MINUTE),
            ("16h", 16 * HOUR),
            ("3h30m", 3 * HOUR + 30 * MINUTE),
            ("10.5s4m", 4 * MINUTE + 10 * SECOND + 500_000_000),
            ("-2m3.4s", -(2 * MINUTE + 3 * SECOND + 400_000_000)),
            ("1h2m3s4ms5us6ns", HOUR + 2 * MINUTE + 3 * SECOND + 4_000_000 + 5_000 + 6),
            ("39h9m14.425s", 39 * HOUR + 9 * MINUTE + 14 * SECOND + 425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * MINUTE),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * MINUTE),
            ("0.830103483285477580700h", 49 * MINUTE + 48 * SECOND + 372_539_827),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text), Ok(*want), "{text}");
        }
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "9223372036s854ms775us808ns",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must not parse");
        }
        assert_eq!(parse("3").unwrap_err(), "time: missing unit in duration \"3\"");
        assert_eq!(parse("1d").unwrap_err(), "time: unknown unit \"d\" in duration \"1d\"");
        assert_eq!(parse("").unwrap_err(), "time: invalid duration \"\"");
    }

    #[test]
    fn go_duration_string_table() {
        for (d, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (4 * MINUTE + 5 * SECOND, "4m5s"),
            (4 * MINUTE + 5_001_000_000, "4m5.001s"),
            (5 * HOUR + 6 * MINUTE + 7_001_000_000, "5h6m7.001s"),
            (8 * MINUTE + 1, "8m0.000000001s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(string(d), want);
        }
        assert_eq!(string_std(std::time::Duration::from_micros(59_852)), "59.852ms");
        assert_eq!(parse_std("-1s"), None);
        assert_eq!(parse_std("250ms"), Some(std::time::Duration::from_millis(250)));
    }
}
