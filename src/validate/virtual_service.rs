//! VirtualService validation: hosts, gateways, http/tcp/tls routes, as Istio's webhook checks them.

use super::*;

/// True when `a` covers `b` or `b` covers `a` (Istio host-name intersection).
fn hosts_overlap(a: &str, b: &str) -> bool {
    let covers = |w: &str, h: &str| -> bool {
        if w == "*" {
            return true;
        }
        match w.strip_prefix('*') {
            Some(suffix) => h.ends_with(suffix),
            None => w == h,
        }
    };
    covers(a, b) || covers(b, a)
}

fn check_gateway_ref(path: &str, g: &str, rep: &mut Report) {
    if g == "mesh" {
        return;
    }
    match g.split_once('/') {
        Some((ns, name)) => {
            if !is_dns1123_label(ns) || !is_dns1123_subdomain(name) {
                rep.err(path, format!("invalid gateway reference `{g}`: use `<namespace>/<name>` or `<name>`"));
            }
        }
        None => {
            if !is_dns1123_subdomain(g) {
                rep.err(path, format!("invalid gateway reference `{g}`: use `<namespace>/<name>` or `<name>`"));
            } else if g.contains('.') {
                rep.warn(path, format!("`{g}` uses the legacy `name.namespace` format; prefer `<namespace>/<name>`"));
            }
        }
    }
}

/// `allow_empty`: `{}` means presence (headers, withoutHeaders, queryParams).
/// `allow_empty_prefix`: only `uri` accepts `prefix: ""`.
fn check_string_match(path: &str, m: &StringMatch, allow_empty: bool, allow_empty_prefix: bool, rep: &mut Report) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()].iter().filter(|b| **b).count();
    if set > 1 {
        rep.err(path, "set exactly one of exact, prefix or regex");
        return;
    }
    if set == 0 {
        if !allow_empty {
            rep.err(path, "set exactly one of exact, prefix or regex (an empty match is only allowed for headers, withoutHeaders and queryParams)");
        }
        return;
    }
    if let Some(p) = &m.prefix {
        if p.is_empty() && !allow_empty_prefix {
            rep.err(format!("{path}.prefix"), "must not be empty");
        }
    }
    if let Some(re) = &m.regex {
        if re.is_empty() {
            rep.err(format!("{path}.regex"), "must not be empty");
        } else if !(allow_empty && re == "*") {
            check_regex(&format!("{path}.regex"), re, rep);
        }
    }
}

fn valid_header_name(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&b))
}

fn check_headers(path: &str, h: &Headers, rep: &mut Report) {
    for (dir, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        for (what, names) in [
            ("set", ops.set.keys().collect::<Vec<_>>()),
            ("add", ops.add.keys().collect::<Vec<_>>()),
            ("remove", ops.remove.iter().collect::<Vec<_>>()),
        ] {
            for n in names {
                if !valid_header_name(n) {
                    rep.err(format!("{path}.{dir}.{what}"), format!("invalid header name `{n}`"));
                }
            }
        }
    }
}

fn sets_authority(h: &Option<Headers>) -> bool {
    h.as_ref().and_then(|h| h.request.as_ref()).is_some_and(|r| {
        r.set.keys().chain(r.add.keys()).any(|k| {
            let k = k.to_ascii_lowercase();
            k == ":authority" || k == "host"
        })
    })
}

fn check_destination(path: &str, d: &Destination, rep: &mut Report) {
    if d.host.is_empty() {
        rep.err(format!("{path}.host"), "is required");
    } else if d.host == "*" {
        rep.err(format!("{path}.host"), "`*` is not a valid destination host");
    } else if d.host.contains('/') || !is_wildcard_domain(&d.host) {
        rep.err(format!("{path}.host"), format!("`{}` is not a valid host name", d.host));
    }
    if let Some(s) = &d.subset {
        if !is_dns1123_label(s) {
            rep.err(format!("{path}.subset"), format!("`{s}` must be a DNS-1123 label"));
        }
    }
    if let Some(p) = &d.port {
        if let Some(n) = p.number {
            if n == 0 || n > 65535 {
                rep.err(format!("{path}.port.number"), "must be between 1 and 65535");
            }
        }
    }
}

/// Weights: non-negative; with several destinations the total must be > 0.
fn check_weights(path: &str, weights: &[Option<i32>], rep: &mut Report) {
    let mut total: i64 = 0;
    for (i, w) in weights.iter().enumerate() {
        let w = w.unwrap_or(0);
        if w < 0 {
            rep.err(format!("{path}[{i}].weight"), "weight must not be negative");
        }
        total += i64::from(w.max(0));
    }
    if weights.len() > 1 && total == 0 {
        rep.err(path, "total destination weight = 0");
    }
}

pub(super) fn validate_virtual_service(vs: &VirtualService, rep: &mut Report) {
    let spec = &vs.spec;
    let mesh_bound = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    let delegate = spec.hosts.is_empty();
    if delegate {
        if !spec.gateways.is_empty() {
            rep.err("spec.gateways", "a delegate VirtualService (no hosts) must not set gateways");
        }
        if !spec.tls.is_empty() {
            rep.err("spec.tls", "a delegate VirtualService (no hosts) must not set tls routes");
        }
        if !spec.tcp.is_empty() {
            rep.err("spec.tcp", "a delegate VirtualService (no hosts) must not set tcp routes");
        }
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        let path = format!("spec.hosts[{i}]");
        if h == "*" && mesh_bound {
            rep.err(&path, "wildcard host * is not allowed for virtual services bound to the mesh gateway");
        } else if h.contains('/') || !(is_wildcard_domain(h) || h.parse::<std::net::IpAddr>().is_ok()) {
            rep.err(&path, format!("`{h}` must be a host name, `*.suffix`, `*` or an IP address"));
        }
        for (j, other) in spec.hosts.iter().enumerate().take(i) {
            if hosts_overlap(h, other) {
                rep.err(&path, format!("host `{h}` overlaps with spec.hosts[{j}] `{other}`"));
            }
        }
    }
    for (i, g) in spec.gateways.iter().enumerate() {
        check_gateway_ref(&format!("spec.gateways[{i}]"), g, rep);
    }
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        rep.err("spec", "http, tcp or tls must be provided in a virtual service");
    }
    check_export_to("spec.exportTo", &spec.export_to, rep);
    for (i, r) in spec.http.iter().enumerate() {
        validate_http_route(&format!("spec.http[{i}]"), r, mesh_bound, rep);
    }
    for (i, r) in spec.tls.iter().enumerate() {
        let path = format!("spec.tls[{i}]");
        if r.r#match.is_empty() {
            rep.err(format!("{path}.match"), "at least one match is required for TLS routes");
        }
        for (j, m) in r.r#match.iter().enumerate() {
            let mpath = format!("{path}.match[{j}]");
            if m.sni_hosts.is_empty() {
                rep.err(format!("{mpath}.sniHosts"), "at least one SNI host is required");
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let covered = spec
                    .hosts
                    .iter()
                    .any(|h| h == "*" || h == sni || h.strip_prefix('*').is_some_and(|suf| sni.ends_with(suf)));
                if !is_wildcard_domain(sni) {
                    rep.err(format!("{mpath}.sniHosts[{k}]"), format!("`{sni}` is not a valid host name"));
                } else if !covered {
                    rep.err(
                        format!("{mpath}.sniHosts[{k}]"),
                        format!("SNI host `{sni}` is not a subset of any VirtualService host"),
                    );
                }
            }
            check_l4(&mpath, m.port, &m.destination_subnets, &m.gateways, rep);
        }
        check_l4_routes(&path, &r.route, rep);
    }
    for (i, r) in spec.tcp.iter().enumerate() {
        let path = format!("spec.tcp[{i}]");
        for (j, m) in r.r#match.iter().enumerate() {
            check_l4(&format!("{path}.match[{j}]"), m.port, &m.destination_subnets, &m.gateways, rep);
        }
        check_l4_routes(&path, &r.route, rep);
    }
}

fn check_l4(path: &str, port: Option<u32>, subnets: &[String], gateways: &[String], rep: &mut Report) {
    if let Some(p) = port {
        if p == 0 || p > 65535 {
            rep.err(format!("{path}.port"), "must be between 1 and 65535");
        }
    }
    for (i, s) in subnets.iter().enumerate() {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (s.as_str(), None),
        };
        let ok = match ip.parse::<std::net::IpAddr>() {
            Ok(addr) => bits.is_none_or(|b| b.parse::<u8>().is_ok_and(|n| n <= if addr.is_ipv4() { 32 } else { 128 })),
            Err(_) => false,
        };
        if !ok {
            rep.err(format!("{path}.destinationSubnets[{i}]"), format!("`{s}` is not an IP address or CIDR"));
        }
    }
    for (i, g) in gateways.iter().enumerate() {
        check_gateway_ref(&format!("{path}.gateways[{i}]"), g, rep);
    }
}

fn check_l4_routes(path: &str, route: &[RouteDestination], rep: &mut Report) {
    if route.is_empty() {
        rep.err(format!("{path}.route"), "at least one route destination is required");
    }
    for (i, d) in route.iter().enumerate() {
        check_destination(&format!("{path}.route[{i}].destination"), &d.destination, rep);
    }
    let weights: Vec<Option<i32>> = route.iter().map(|d| d.weight).collect();
    check_weights(&format!("{path}.route"), &weights, rep);
}

pub(super) fn validate_http_route(path: &str, r: &HttpRoute, mesh_bound: bool, rep: &mut Report) {
    // Exclusivity of the route action.
    let actions = [
        ("route", !r.route.is_empty()),
        ("redirect", r.redirect.is_some()),
        ("directResponse", r.direct_response.is_some()),
        ("delegate", r.delegate.is_some()),
    ];
    let present: Vec<&str> = actions.iter().filter(|(_, p)| *p).map(|(n, _)| *n).collect();
    if present.is_empty() {
        rep.err(path, "one of route, redirect, directResponse or delegate is required");
    } else if present.len() > 1 {
        rep.err(path, format!("HTTP route cannot contain both {} and {}", present[0], present[1]));
    }
    if r.redirect.is_some() || r.direct_response.is_some() {
        let what = if r.redirect.is_some() { "redirect" } else { "directResponse" };
        if r.fault.is_some() {
            rep.err(format!("{path}.fault"), format!("fault cannot be combined with {what}"));
        }
        if r.rewrite.is_some() {
            rep.err(format!("{path}.rewrite"), format!("rewrite cannot be combined with {what}"));
        }
    }

    for (j, m) in r.r#match.iter().enumerate() {
        let mpath = format!("{path}.match[{j}]");
        if let Some(u) = &m.uri {
            check_string_match(&format!("{mpath}.uri"), u, false, true, rep);
        }
        for (name, sm) in [("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
            if let Some(sm) = sm {
                check_string_match(&format!("{mpath}.{name}"), sm, false, false, rep);
            }
        }
        for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
            for (k, sm) in map {
                let hpath = format!("{mpath}.{field}.{k}");
                if !valid_header_name(k) {
                    rep.err(&hpath, format!("invalid header name `{k}`"));
                } else if k.bytes().any(|b| b.is_ascii_uppercase()) {
                    rep.err(&hpath, format!("header names must be lowercase: use `{}`", k.to_ascii_lowercase()));
                }
                check_string_match(&hpath, sm, true, false, rep);
            }
        }
        for (k, sm) in &m.query_params {
            let qpath = format!("{mpath}.queryParams.{k}");
            check_string_match(&qpath, sm, true, false, rep);
            if sm.prefix.is_some() {
                rep.warn(&qpath, "prefix matching of query parameters is not supported by Istio");
            }
        }
        if let Some(p) = m.port {
            if p == 0 || p > 65535 {
                rep.err(format!("{mpath}.port"), "must be between 1 and 65535");
            }
        }
        for (k, g) in m.gateways.iter().enumerate() {
            check_gateway_ref(&format!("{mpath}.gateways[{k}]"), g, rep);
        }
        if !mesh_bound && (!m.source_labels.is_empty() || m.source_namespace.is_some()) {
            rep.warn(&mpath, "sourceLabels/sourceNamespace only apply when gateways include `mesh`");
        }
        check_labels(&format!("{mpath}.sourceLabels"), &m.source_labels, rep);
    }

    for (k, d) in r.route.iter().enumerate() {
        let dpath = format!("{path}.route[{k}]");
        check_destination(&format!("{dpath}.destination"), &d.destination, rep);
        if let Some(h) = &d.headers {
            check_headers(&format!("{dpath}.headers"), h, rep);
        }
    }
    let weights: Vec<Option<i32>> = r.route.iter().map(|d| d.weight).collect();
    check_weights(&format!("{path}.route"), &weights, rep);

    if let Some(red) = &r.redirect {
        let rpath = format!("{path}.redirect");
        if red.uri.is_none()
            && red.prefix_rewrite.is_none()
            && red.authority.is_none()
            && red.scheme.is_none()
            && red.port.is_none()
            && red.derive_port.is_none()
        {
            rep.err(&rpath, "set at least one of uri, prefixRewrite, authority, scheme, port or derivePort");
        }
        if red.uri.is_some() && red.prefix_rewrite.is_some() {
            rep.err(&rpath, "uri and prefixRewrite are mutually exclusive");
        }
        if red.port.is_some() && red.derive_port.is_some() {
            rep.err(&rpath, "port and derivePort are mutually exclusive");
        }
        if let Some(dp) = &red.derive_port {
            if dp != "FROM_PROTOCOL_DEFAULT" && dp != "FROM_REQUEST_PORT" {
                rep.err(
                    format!("{rpath}.derivePort"),
                    format!("unsupported value `{dp}`: use FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
                );
            }
        }
        if let Some(c) = red.redirect_code {
            if !(300..=399).contains(&c) {
                rep.err(format!("{rpath}.redirectCode"), format!("{c} is not a 3xx redirect code"));
            } else if ![301, 302, 303, 307, 308].contains(&c) {
                rep.warn(
                    format!("{rpath}.redirectCode"),
                    format!("{c} is not supported by Envoy; use 301, 302, 303, 307 or 308"),
                );
            }
        }
        if let Some(p) = red.port {
            if p == 0 || p > 65535 {
                rep.err(format!("{rpath}.port"), "must be between 1 and 65535");
            }
        }
    }

    if let Some(dr) = &r.direct_response {
        let dpath = format!("{path}.directResponse");
        if !(200..=599).contains(&dr.status) {
            rep.err(format!("{dpath}.status"), format!("{} must be between 200 and 599", dr.status));
        }
        if let Some(b) = &dr.body {
            if b.string.is_some() && b.bytes.is_some() {
                rep.err(format!("{dpath}.body"), "set only one of string or bytes");
            }
            let len = b.string.as_ref().or(b.bytes.as_ref()).map_or(0, String::len);
            if len > 1024 * 1024 {
                rep.err(format!("{dpath}.body"), "body is larger than 1 MB");
            } else if len > 100 * 1024 {
                rep.warn(format!("{dpath}.body"), "body is larger than 100 KB");
            }
        }
    }

    if let Some(d) = &r.delegate {
        if d.name.is_empty() {
            rep.err(format!("{path}.delegate.name"), "is required");
        } else if !is_dns1123_subdomain(&d.name) {
            rep.err(format!("{path}.delegate.name"), format!("`{}` must be a DNS-1123 subdomain", d.name));
        }
        if let Some(ns) = &d.namespace {
            if !is_dns1123_label(ns) {
                rep.err(format!("{path}.delegate.namespace"), format!("`{ns}` must be a DNS-1123 label"));
            }
        }
    }

    if let Some(rw) = &r.rewrite {
        let wpath = format!("{path}.rewrite");
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            rep.err(&wpath, "uri and uriRegexRewrite are mutually exclusive");
        }
        if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
            rep.err(&wpath, "set at least one of uri, uriRegexRewrite or authority");
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            if rr.r#match.is_empty() {
                rep.err(format!("{wpath}.uriRegexRewrite.match"), "is required");
            } else {
                check_regex(&format!("{wpath}.uriRegexRewrite.match"), &rr.r#match, rep);
            }
        }
        if rw.authority.is_some() && sets_authority(&r.headers) {
            rep.err(&wpath, "authority is set both in rewrite.authority and in headers.request; set it once");
        }
    }

    if let Some(t) = &r.timeout {
        check_duration(&format!("{path}.timeout"), t, rep);
    }

    if let Some(rt) = &r.retries {
        let rpath = format!("{path}.retries");
        if rt.attempts < 0 {
            rep.err(format!("{rpath}.attempts"), "must not be negative");
        }
        if rt.attempts == 0 && (rt.per_try_timeout.is_some() || rt.retry_on.is_some()) {
            rep.err(&rpath, "perTryTimeout and retryOn cannot be set when attempts is 0 (retries disabled)");
        }
        if let Some(t) = &rt.per_try_timeout {
            check_duration(&format!("{rpath}.perTryTimeout"), t, rep);
        }
        if let Some(b) = &rt.backoff {
            check_duration(&format!("{rpath}.backoff"), b, rep);
        }
        if let Some(on) = &rt.retry_on {
            for tok in on.split(',').map(str::trim) {
                let numeric = tok.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
                if !numeric && !RETRY_ON.contains(&tok) {
                    rep.err(format!("{rpath}.retryOn"), format!("unknown retry policy `{tok}`"));
                }
            }
        }
    }

    if let Some(f) = &r.fault {
        let fpath = format!("{path}.fault");
        if f.delay.is_none() && f.abort.is_none() {
            rep.err(&fpath, "fault must have a delay, an abort, or both");
        }
        if let Some(d) = &f.delay {
            let dpath = format!("{fpath}.delay");
            if d.exponential_delay.is_some() {
                rep.err(format!("{dpath}.exponentialDelay"), "exponentialDelay is not supported yet");
            }
            match &d.fixed_delay {
                Some(fd) => check_duration(&format!("{dpath}.fixedDelay"), fd, rep),
                None if d.exponential_delay.is_none() => rep.err(format!("{dpath}.fixedDelay"), "is required"),
                None => {}
            }
            if let Some(p) = d.percent {
                if !(0..=100).contains(&p) {
                    rep.err(format!("{dpath}.percent"), "must be between 0 and 100");
                }
            }
            if let Some(p) = &d.percentage {
                check_percent(&format!("{dpath}.percentage"), p, rep);
            }
        }
        if let Some(a) = &f.abort {
            let apath = format!("{fpath}.abort");
            if a.http2_error.is_some() {
                rep.err(format!("{apath}.http2Error"), "http2Error is not supported yet");
            }
            match (a.http_status, &a.grpc_status) {
                (Some(_), Some(_)) => rep.err(&apath, "set only one of httpStatus or grpcStatus"),
                (Some(s), None) if !(200..=600).contains(&s) => {
                    rep.err(format!("{apath}.httpStatus"), format!("{s} must be between 200 and 599"))
                }
                (None, None) if a.http2_error.is_none() => rep.err(&apath, "httpStatus (or grpcStatus) is required"),
                _ => {}
            }
            if let Some(p) = &a.percentage {
                check_percent(&format!("{apath}.percentage"), p, rep);
            }
        }
    }

    if r.mirror.is_some() && !r.mirrors.is_empty() {
        rep.err(path, "mirror and mirrors are mutually exclusive");
    }
    if let Some(m) = &r.mirror {
        check_destination(&format!("{path}.mirror"), m, rep);
    }
    for (k, m) in r.mirrors.iter().enumerate() {
        check_destination(&format!("{path}.mirrors[{k}].destination"), &m.destination, rep);
        if let Some(p) = &m.percentage {
            check_percent(&format!("{path}.mirrors[{k}].percentage"), p, rep);
        }
    }
    if let Some(p) = &r.mirror_percentage {
        check_percent(&format!("{path}.mirrorPercentage"), p, rep);
    }
    if let Some(p) = r.mirror_percent {
        if p > 100 {
            rep.err(format!("{path}.mirrorPercent"), "must be between 0 and 100");
        }
        rep.warn(format!("{path}.mirrorPercent"), "is deprecated; use mirrorPercentage");
    }

    if let Some(c) = &r.cors_policy {
        let cpath = format!("{path}.corsPolicy");
        for (k, o) in c.allow_origins.iter().enumerate() {
            check_string_match(&format!("{cpath}.allowOrigins[{k}]"), o, false, false, rep);
        }
        if !c.allow_origin.is_empty() {
            rep.warn(format!("{cpath}.allowOrigin"), "is deprecated; use allowOrigins");
        }
        if let Some(age) = &c.max_age {
            check_duration(&format!("{cpath}.maxAge"), age, rep);
        }
        for (k, m) in c.allow_methods.iter().enumerate() {
            if !valid_header_name(m) {
                rep.err(format!("{cpath}.allowMethods[{k}]"), format!("invalid method `{m}`"));
            }
        }
        if let Some(u) = &c.unmatched_preflights {
            if !["UNSPECIFIED", "FORWARD", "IGNORE"].contains(&u.as_str()) {
                rep.err(
                    format!("{cpath}.unmatchedPreflights"),
                    format!("unsupported value `{u}`: use FORWARD or IGNORE"),
                );
            }
        }
    }

    if let Some(h) = &r.headers {
        check_headers(&format!("{path}.headers"), h, rep);
    }
}
