//! Multi-document YAML → typed `Resource`s, with errors located at the absolute
//! file:line:column, the dotted field path, and a hint saying what to do.
//!
//! Documents are split on `---` lines here (not by serde_yaml) so every document's
//! first line is known; serde_yaml's document-relative marks are then offset by it.
//! serde_yaml 0.9 errors display as `<path>: <serde message> at line L column C`
//! (path omitted at the root) with a 1-based document-relative `location()`: the
//! offending key for unknown fields, the value for type errors. The path prefix is
//! split off by recognising serde's message openings; unknown keys are additionally
//! re-located by scanning for `key:` in case a serde_yaml version marks the mapping.

// `ParseError` is returned by value as the fixed public API says; it is built once per
// failed file (a cold path), so its size does not matter.
#![allow(clippy::result_large_err)]

use std::fmt;

use crate::resources::{supported_kinds, Kind, Resource};

/// One parsed object.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub resource: Resource,
    /// 1-based number of the (non-empty) document in the file.
    pub index: usize,
    /// 1-based line of the document's first content line.
    pub line: usize,
    /// Non-fatal notes, e.g. server-populated fields that are ignored.
    pub warnings: Vec<String>,
    /// The file it came from, and the document's text and first line (to find a field's line).
    pub file: String,
    source: std::sync::Arc<str>,
    source_line: usize,
    /// An item of a `kind: List` (its fields are not at the document's top level).
    in_list: bool,
}

impl Document {
    /// The 1-based line of a field (`spec.http[0].route[0].weight`) in the file: the line of the
    /// deepest part of the path found, or the document's first line.
    pub fn line_of(&self, field: &str) -> usize {
        if self.in_list {
            return self.line;
        }
        (self.source_line + crate::resources::locate::line_of(&self.source, field)).max(self.line)
    }
}

/// A located, actionable parse error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    /// 1-based document number (0 when the file as a whole is unreadable).
    pub document: usize,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path such as `spec.http[0].route[0].destination`.
    pub field: Option<String>,
    pub message: String,
    /// A sentence saying what to do.
    pub hint: String,
    /// `Kind name` of the object when known, e.g. `VirtualService httpbin`.
    pub object: Option<String>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": document {}", self.document)?;
        if let Some(obj) = &self.object {
            write!(f, " ({obj})")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

/// Istio and Kubernetes kinds users commonly apply that meshrig does not model (yet).
const KNOWN_UNSUPPORTED: &[&str] = &[
    "Sidecar",
    "EnvoyFilter",
    "WorkloadEntry",
    "WorkloadGroup",
    "ProxyConfig",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Telemetry",
    "WasmPlugin",
    "Pod",
    "Secret",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Ingress",
    "HTTPRoute",
    "GRPCRoute",
    "TCPRoute",
    "TLSRoute",
    "ReferenceGrant",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// A raw document: its text and the 1-based file line its text starts on.
struct Chunk {
    text: String,
    first_line: usize,
}

fn is_separator(line: &str) -> bool {
    let line = line.trim_end_matches('\r');
    if line == "..." {
        return true;
    }
    match line.strip_prefix("---") {
        Some(rest) => rest.is_empty() || rest.starts_with([' ', '\t', '#']),
        None => false,
    }
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut first_line = 1;
    for (i, line) in text.lines().enumerate() {
        if is_separator(line) {
            chunks.push(Chunk { text: cur.join("\n"), first_line });
            cur.clear();
            first_line = i + 2;
        } else {
            cur.push(line);
        }
    }
    chunks.push(Chunk { text: cur.join("\n"), first_line });
    chunks.into_iter().filter(|c| !c.text.lines().all(is_blank_or_comment)).collect()
}

/// Parse every document of a (possibly multi-document) YAML file.
///
/// Empty and comment-only documents are skipped; a `kind: List` document is expanded
/// into its `items` (all sharing that document's number and line). Stops at the first
/// error.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>, ParseError> {
    check_nesting(file, text)?;
    let mut out = Vec::new();
    for (i, chunk) in split_documents(text).into_iter().enumerate() {
        let ctx = Ctx { file, index: i + 1, chunk: &chunk, source: chunk.text.as_str().into() };
        ctx.parse_into(&mut out)?;
    }
    Ok(out)
}

/// The deepest `[`/`{` nesting accepted; no Kubernetes or Istio object comes near it.
pub const MAX_NESTING: usize = 64;
/// A backstop that reads brackets without any YAML rule (quotes, comments and block scalars
/// count too): whatever the guard below makes of a file, the YAML parser never meets flow
/// collections nested deeper than this, so it cannot be made to spend quadratic time.
const MAX_RAW_NESTING: usize = 256;
/// The largest input `apply` reads from one file or stdin.
pub const MAX_INPUT: u64 = 16 << 20;

fn too_deep(file: &str, line: usize, limit: usize) -> ParseError {
    ParseError {
        file: file.to_string(),
        document: 0,
        line: Some(line),
        column: None,
        field: None,
        message: format!("nested more than {limit} levels deep"),
        hint: "no Kubernetes or Istio object nests this deep; check the file is the one you meant".into(),
        object: None,
    }
}

/// Refuses flow collections nested deeper than [`MAX_NESTING`], in one linear pass, before any
/// YAML parser sees the text. It reads the text as YAML does: a quote opens a quoted scalar only
/// where a scalar starts (after indentation, `- `, `? `, `: `, an anchor or tag, or inside a flow
/// collection after `[`, `{` or `,`), `''` and `\"` do not close one, `#` after a space starts a
/// comment, and the lines of a `|` or `>` block scalar are text. Brackets are counted as flow
/// collections only where one can start, or inside one.
fn check_nesting(file: &str, text: &str) -> Result<(), ParseError> {
    let (mut depth, mut raw) = (0usize, 0usize);
    // The indentation of the line whose value opened a block scalar, while in it.
    let mut block: Option<usize> = None;
    let mut quote: Option<u8> = None;
    for (n, line) in text.split('\n').enumerate() {
        let number = n + 1;
        let bytes = line.as_bytes();
        for &b in bytes {
            match b {
                b'[' | b'{' => {
                    raw += 1;
                    if raw > MAX_RAW_NESTING {
                        return Err(too_deep(file, number, MAX_NESTING));
                    }
                }
                b']' | b'}' => raw = raw.saturating_sub(1),
                _ => {}
            }
        }
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        if let Some(parent) = block {
            if quote.is_none() && (indent > parent || bytes[indent..].iter().all(|b| b.is_ascii_whitespace())) {
                continue;
            }
            block = None;
        }
        // Where a scalar (or a flow collection) may start.
        let mut at_start = true;
        let mut i = if quote.is_some() { 0 } else { indent };
        while i < bytes.len() {
            let b = bytes[i];
            if let Some(q) = quote {
                match b {
                    b'\\' if q == b'"' => i += 1,
                    b'\'' if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                    _ if b == q => {
                        quote = None;
                        at_start = false;
                    }
                    _ => {}
                }
                i += 1;
                continue;
            }
            let next_blank = bytes.get(i + 1).is_none_or(|c| c.is_ascii_whitespace());
            let prev_blank = i == 0 || bytes[i - 1].is_ascii_whitespace();
            match b {
                b' ' | b'\t' | b'\r' => {}
                b'#' if prev_blank => break,
                b'\'' | b'"' if at_start => quote = Some(b),
                b'[' | b'{' if at_start || depth > 0 => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(too_deep(file, number, MAX_NESTING));
                    }
                    at_start = true;
                }
                b']' | b'}' if depth > 0 => {
                    depth -= 1;
                    at_start = false;
                }
                b',' if depth > 0 => at_start = true,
                b'-' | b'?' | b':' if next_blank && (b == b':' || prev_blank) => at_start = true,
                b'|' | b'>' if at_start && depth == 0 => {
                    // A block scalar's header: indicators, then only a comment.
                    let rest = &bytes[i + 1..];
                    let indicators = rest.iter().take_while(|c| matches!(c, b'1'..=b'9' | b'+' | b'-')).count();
                    let tail = &rest[indicators..];
                    let trimmed = tail.iter().position(|c| !c.is_ascii_whitespace());
                    if indicators <= 2 && trimmed.is_none_or(|p| tail[p] == b'#' && p > 0) {
                        block = Some(indent);
                        break;
                    }
                    at_start = false;
                }
                b'&' | b'!' if at_start => {
                    // An anchor or a tag: the scalar starts after it.
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    continue;
                }
                _ => at_start = false,
            }
            i += 1;
        }
    }
    Ok(())
}

/// Reads at most [`MAX_INPUT`] bytes of text; more is an error naming the source.
pub fn read_limited(reader: impl std::io::Read, name: &str) -> Result<String, ParseError> {
    let mut bytes = Vec::new();
    let too_big = |message: String| ParseError {
        file: name.to_string(),
        document: 0,
        line: None,
        column: None,
        field: None,
        message,
        hint: "split it into smaller files".into(),
        object: None,
    };
    std::io::Read::read_to_end(&mut std::io::Read::take(reader, MAX_INPUT + 1), &mut bytes)
        .map_err(|e| too_big(format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(too_big(format!("is larger than {} MiB", MAX_INPUT >> 20)));
    }
    String::from_utf8(bytes).map_err(|e| too_big(format!("is not UTF-8 text: {e}")))
}

struct Ctx<'a> {
    file: &'a str,
    index: usize,
    chunk: &'a Chunk,
    source: std::sync::Arc<str>,
}

impl Ctx<'_> {
    /// Line of the first content line (skipping leading blanks/comments).
    fn document(&self, resource: Resource, warnings: Vec<String>, in_list: bool) -> Document {
        Document {
            resource,
            index: self.index,
            line: self.start_line(),
            warnings,
            file: self.file.to_string(),
            source: self.source.clone(),
            source_line: self.chunk.first_line,
            in_list,
        }
    }

    fn start_line(&self) -> usize {
        let skip = self.chunk.text.lines().take_while(|l| is_blank_or_comment(l)).count();
        self.chunk.first_line + skip
    }

    fn error(&self, message: String, hint: String) -> ParseError {
        ParseError {
            file: self.file.to_string(),
            document: self.index,
            line: Some(self.start_line()),
            column: None,
            field: None,
            message,
            hint,
            object: None,
        }
    }

    /// Absolute position of a top-level key such as `kind:`.
    fn top_key(&self, key: &str) -> Option<(usize, usize)> {
        let pat = format!("{key}:");
        self.chunk.text.lines().position(|l| l.starts_with(&pat)).map(|i| (self.chunk.first_line + i, 1))
    }

    /// Absolute position of `key:` at or after relative (1-based) line `from`.
    fn find_key_from(&self, key: &str, from: usize) -> Option<(usize, usize)> {
        for (i, line) in self.chunk.text.lines().enumerate().skip(from.saturating_sub(1)) {
            let mut rest = line.trim_start();
            while let Some(r) = rest.strip_prefix("- ") {
                rest = r.trim_start();
            }
            let starts = [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")];
            if starts.iter().any(|s| rest.starts_with(s.as_str())) {
                let col = line.len() - rest.len() + 1;
                return Some((self.chunk.first_line + i, col));
            }
        }
        None
    }

    fn parse_into(&self, out: &mut Vec<Document>) -> Result<(), ParseError> {
        let value: serde_yaml::Value = serde_yaml::from_str(&self.chunk.text).map_err(|e| self.yaml_error(&e, None))?;
        let map = match &value {
            serde_yaml::Value::Null => return Ok(()),
            serde_yaml::Value::Mapping(m) => m,
            _ => {
                return Err(self.error(
                    "expected a mapping with apiVersion, kind, metadata and spec".into(),
                    "each YAML document must be one Kubernetes object; check for a stray list item or scalar".into(),
                ))
            }
        };
        let kind_str = match map.get("kind") {
            Some(serde_yaml::Value::String(s)) => s.clone(),
            Some(_) => {
                let mut e = self
                    .error("`kind` must be a string".into(), format!("set `kind:` to one of: {}", supported_kinds()));
                e.field = Some("kind".into());
                self.locate_top(&mut e, "kind");
                return Err(e);
            }
            None => {
                let mut e = self.error(
                    format!("missing `kind`; supported kinds: {}", supported_kinds()),
                    format!("add a top-level `kind:` line with one of: {}", supported_kinds()),
                );
                e.field = Some("kind".into());
                return Err(e);
            }
        };
        let name = map.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or("").to_string();

        if kind_str == "List" {
            return self.parse_list(map, out);
        }

        let object = if name.is_empty() { kind_str.clone() } else { format!("{kind_str} {name}") };
        let Some(kind) = Kind::from_kind(&kind_str) else {
            let mut e = self.error(
                format!("unsupported kind `{kind_str}`; supported kinds: {}", supported_kinds()),
                unsupported_kind_hint(&kind_str),
            );
            e.field = Some("kind".into());
            e.object = Some(object);
            self.locate_top(&mut e, "kind");
            return Err(e);
        };

        let api_version = map.get("apiVersion").and_then(|a| a.as_str());
        let accepted = kind.api_versions();
        match api_version {
            None => {
                let mut e = self.error(
                    format!("missing `apiVersion`; {kind_str} accepts {}", accepted.join(", ")),
                    format!("add `apiVersion: {}`", accepted[0]),
                );
                e.field = Some("apiVersion".into());
                e.object = Some(object);
                return Err(e);
            }
            Some(v) if !accepted.contains(&v) => {
                let mut hint =
                    format!("change it to `apiVersion: {}` (also accepted: {})", accepted[0], accepted.join(", "));
                if kind == Kind::Gateway && v.starts_with("gateway.networking.k8s.io") {
                    hint = format!(
                        "this is a Kubernetes Gateway API Gateway, which meshrig does not support; \
                         write an Istio Gateway with `apiVersion: {}` instead",
                        accepted[0]
                    );
                }
                let mut e = self.error(
                    format!("unsupported apiVersion `{v}` for {kind_str}; supported: {}", accepted.join(", ")),
                    hint,
                );
                e.field = Some("apiVersion".into());
                e.object = Some(object);
                self.locate_top(&mut e, "apiVersion");
                return Err(e);
            }
            Some(_) => {}
        }

        let mut resource = self.typed(kind).map_err(|e| {
            let mut pe = self.yaml_error(&e, Some(kind));
            pe.object = Some(object.clone());
            pe
        })?;
        if resource.meta().name.is_empty() {
            let mut e = self.error(
                "metadata.name is required".into(),
                if resource.meta().generate_name.is_some() {
                    "`generateName` is not supported by apply; set `metadata.name`".into()
                } else {
                    "add `name: <dns-1123 name>` under `metadata:`".into()
                },
            );
            e.field = Some("metadata.name".into());
            e.object = Some(object);
            self.locate_top(&mut e, "metadata");
            return Err(e);
        }
        if resource.meta().namespace.as_deref() == Some("") {
            resource.meta_mut().namespace = None;
        }
        let warnings = server_field_warnings(&resource);
        out.push(self.document(resource, warnings, false));
        Ok(())
    }

    fn locate_top(&self, e: &mut ParseError, key: &str) {
        if let Some((line, col)) = self.top_key(key) {
            e.line = Some(line);
            e.column = Some(col);
        }
    }

    fn typed(&self, kind: Kind) -> Result<Resource, serde_yaml::Error> {
        Resource::from_yaml(kind, &self.chunk.text)
    }

    /// `kind: List` (what `kubectl get -o yaml` prints for several objects).
    fn parse_list(&self, map: &serde_yaml::Mapping, out: &mut Vec<Document>) -> Result<(), ParseError> {
        let items = match map.get("items") {
            Some(serde_yaml::Value::Sequence(items)) => items,
            None | Some(serde_yaml::Value::Null) => return Ok(()),
            Some(_) => {
                let mut e = self.error(
                    "`items` of a List must be a sequence".into(),
                    "write `items:` followed by `- ` entries, one per object".into(),
                );
                e.field = Some("items".into());
                return Err(e);
            }
        };
        for (i, item) in items.iter().enumerate() {
            let json: serde_json::Value = serde_yaml::from_value(item.clone()).map_err(|e| {
                let mut pe = self.error(e.to_string(), "each list item must be a plain Kubernetes object".into());
                pe.field = Some(format!("items[{i}]"));
                pe
            })?;
            let object = item_object(&json);
            let mut resource = Resource::from_value(json).map_err(|msg| {
                let mut pe = self.error(
                    msg.clone(),
                    hint_for_message(&msg, Kind::from_kind(object.split(' ').next().unwrap_or(""))),
                );
                pe.field = Some(format!("items[{i}]"));
                pe.object = Some(object.clone());
                pe
            })?;
            if resource.meta().name.is_empty() {
                let mut pe = self
                    .error("metadata.name is required".into(), "add `name: <dns-1123 name>` under `metadata:`".into());
                pe.field = Some(format!("items[{i}].metadata.name"));
                return Err(pe);
            }
            if resource.meta().namespace.as_deref() == Some("") {
                resource.meta_mut().namespace = None;
            }
            let warnings = server_field_warnings(&resource);
            out.push(self.document(resource, warnings, true));
        }
        Ok(())
    }

    /// Convert a serde_yaml error from this chunk into an absolute, located `ParseError`.
    fn yaml_error(&self, e: &serde_yaml::Error, kind: Option<Kind>) -> ParseError {
        let (path, message) = split_yaml_message(&e.to_string());
        let mut line = None;
        let mut column = None;
        if let Some(loc) = e.location() {
            line = Some(self.chunk.first_line + loc.line() - 1);
            column = Some(loc.column());
            // Make sure an unknown field points at its key even if the mark is the mapping's.
            if let Some(key) = unknown_field_name(&message) {
                if let Some((l, c)) = self.find_key_from(&key, loc.line()) {
                    line = Some(l);
                    column = Some(c);
                }
            }
        }
        let hint = hint_for_message(&message, kind);
        ParseError {
            file: self.file.to_string(),
            document: self.index,
            line: line.or(Some(self.start_line())),
            column,
            field: path,
            message,
            hint,
            object: None,
        }
    }
}

fn item_object(v: &serde_json::Value) -> String {
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("object");
    match v.pointer("/metadata/name").and_then(|n| n.as_str()) {
        Some(name) => format!("{kind} {name}"),
        None => kind.to_string(),
    }
}

fn server_field_warnings(r: &Resource) -> Vec<String> {
    let m = r.meta();
    let mut present = Vec::new();
    if m.uid.is_some() {
        present.push("metadata.uid");
    }
    if m.resource_version.is_some() {
        present.push("metadata.resourceVersion");
    }
    if m.generation.is_some() {
        present.push("metadata.generation");
    }
    if m.creation_timestamp.is_some() {
        present.push("metadata.creationTimestamp");
    }
    if m.managed_fields.is_some() {
        present.push("metadata.managedFields");
    }
    let status = match r {
        Resource::Namespace(x) => x.status.is_some(),
        Resource::ServiceAccount(_) | Resource::ConfigMap(_) | Resource::Secret(_) => false,
        Resource::Service(x) => x.status.is_some(),
        Resource::Deployment(x) => x.status.is_some(),
        Resource::Gateway(x) => x.status.is_some(),
        Resource::VirtualService(x) => x.status.is_some(),
        Resource::DestinationRule(x) => x.status.is_some(),
        Resource::ServiceEntry(x) => x.status.is_some(),
        Resource::PeerAuthentication(x) => x.status.is_some(),
        Resource::AuthorizationPolicy(x) => x.status.is_some(),
        Resource::RequestAuthentication(x) => x.status.is_some(),
        Resource::Telemetry(x) => x.status.is_some(),
        Resource::Issuer(x) | Resource::ClusterIssuer(x) => x.status.is_some(),
        Resource::Certificate(x) => x.status.is_some(),
    };
    if status {
        present.push("status");
    }
    if present.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{} {} set by the server and ignored by meshrig",
            present.join(", "),
            if present.len() == 1 { "is" } else { "are" }
        )]
    }
}

/// Messages serde and serde_yaml produce; used to find where the path prefix ends.
const MESSAGE_STARTS: &[&str] = &[
    "unknown field",
    "missing field",
    "invalid type",
    "invalid value",
    "invalid length",
    "unknown variant",
    "duplicate field",
    "duplicate entry",
    "data did not match",
    "recursion limit",
    "repetition limit",
    "unknown anchor",
    "failed to parse",
    "EOF while parsing",
];

/// Split serde_yaml's `path: message at line L column C` into (path, message).
fn split_yaml_message(full: &str) -> (Option<String>, String) {
    let re = regex::Regex::new(r" at (line \d+ column \d+|position \d+)").expect("static regex");
    let msg = re.replace_all(full, "").into_owned();
    let mut best: Option<usize> = None;
    for start in MESSAGE_STARTS {
        for (i, _) in msg.match_indices(start) {
            if (i == 0 || msg[..i].ends_with(": ")) && best.is_none_or(|b| i < b) {
                best = Some(i);
                break;
            }
        }
    }
    match best {
        Some(0) | None => (None, msg),
        Some(i) => (Some(msg[..i - 2].to_string()), msg[i..].to_string()),
    }
}

/// The backticked names in a serde message, in order.
fn backticked(msg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = msg;
    while let Some(a) = rest.find('`') {
        let after = &rest[a + 1..];
        let Some(b) = after.find('`') else { break };
        out.push(after[..b].to_string());
        rest = &after[b + 1..];
    }
    out
}

fn unknown_field_name(msg: &str) -> Option<String> {
    msg.strip_prefix("unknown field ").and_then(|_| backticked(msg).into_iter().next())
}

/// Levenshtein distance (ASCII-case-insensitive).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_ascii_lowercase().chars().collect();
    let b: Vec<char> = b.to_ascii_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within edit distance 2, if any.
pub(crate) fn closest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn hint_for_message(msg: &str, kind: Option<Kind>) -> String {
    if msg.starts_with("unknown field") {
        let names = backticked(msg);
        let Some((bad, expected)) = names.split_first() else {
            return "remove the field or check its spelling".into();
        };
        if expected.is_empty() {
            return format!("remove `{bad}`: this object takes no fields");
        }
        if let Some(best) = closest(bad, expected) {
            return format!(
                "did you mean `{best}`? Rename `{bad}` to `{best}` (field names are case-sensitive camelCase)"
            );
        }
        let doc = match kind {
            Some(Kind::Gateway) => " (see istio.io/latest/docs/reference/config/networking/gateway/)",
            Some(Kind::VirtualService) => " (see istio.io/latest/docs/reference/config/networking/virtual-service/)",
            Some(Kind::DestinationRule) => " (see istio.io/latest/docs/reference/config/networking/destination-rule/)",
            _ => "",
        };
        return format!(
            "remove `{bad}` or move it to the right level (check the indentation); fields allowed here: {}{doc}",
            expected.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        );
    }
    if msg.starts_with("missing field") {
        let field = backticked(msg).into_iter().next().unwrap_or_default();
        return format!("add the required field `{field}` at this level");
    }
    if msg.starts_with("invalid type") {
        return "the value has the wrong type here; check the indentation (a nested block vs a \
                single value) and quote strings such as \"10s\" or \"*\""
            .into();
    }
    if msg.starts_with("invalid value") {
        return "the value is out of range for this field (ports are 1-65535, counts are non-negative)".into();
    }
    if msg.starts_with("data did not match") {
        return "use a number (e.g. 8080) or a port name string".into();
    }
    if msg.starts_with("duplicate") {
        return "a key appears twice in the same mapping; remove or merge one of them".into();
    }
    if msg.starts_with("unsupported apiVersion") || msg.starts_with("unsupported kind") {
        return "use one of the supported kinds and apiVersions listed".into();
    }
    "fix the YAML near this line: indent with spaces (not tabs), keep `key: value` pairs of one \
     mapping aligned, and quote values containing `: ` or starting with `*`"
        .into()
}

fn unsupported_kind_hint(kind: &str) -> String {
    if let Some(k) = Kind::ALL.iter().copied().find(|k| k.as_str().eq_ignore_ascii_case(kind)) {
        return format!("kinds are case-sensitive: write `kind: {}`", k.as_str());
    }
    if KNOWN_UNSUPPORTED.contains(&kind) {
        return format!(
            "meshrig does not support {kind} yet; remove this document from the file (or apply it to a real cluster)"
        );
    }
    let names: Vec<String> = Kind::ALL.iter().map(|k| k.as_str().to_string()).collect();
    if let Some(best) = closest(kind, &names) {
        return format!("did you mean `kind: {best}`?");
    }
    format!("set `kind:` to one of: {}", supported_kinds())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const THREE_DOCS: &str = "\
# leading comment
apiVersion: v1
kind: Service
metadata:
  name: httpbin
spec:
  ports:
  - name: http
    port: 8000
---
---
# comment-only document above is skipped
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - httpbin
  http:
  - route:
    - destination:
        hots: httpbin
        port:
          number: 8000
";

    #[test]
    fn deep_nesting_is_refused_in_linear_time_and_ordinary_text_is_not() {
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let e = parse_documents("deep.yaml", &deep).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "linear, not quadratic");
        assert!(e.message.contains("nested more than 64"), "{e}");
        // Brackets inside quotes, comments and block scalars, and apostrophes in plain text,
        // do not count.
        let fine = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n  annotations: {{note: \"{}\", who: don't, it: 'a''{}'}} # {}\ndata:\n  mesh: |\n    {}\n",
            "[".repeat(60),
            "[".repeat(60),
            "{".repeat(60),
            "[".repeat(60),
        );
        parse_documents("fine.yaml", &fine).unwrap();
    }

    #[test]
    fn a_stray_quote_does_not_switch_the_guard_off() {
        let deep = |prefix: &str| format!("{prefix}b: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        for prefix in [
            "a: x '\n",
            "a: x \"\n",
            "a: &x \": \"\n",
            "a: x,'y\n",
            "a: 'it''s'\n",
            "a: \"q\\\"\"\n",
            "# a comment with a ' quote\n",
            "a: |x\n",
            "a: b # '\n",
            "a: don't\nc: \"\n",
        ] {
            let started = std::time::Instant::now();
            let e = parse_documents("quote.yaml", &deep(prefix)).unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_millis(500), "{prefix:?}: {:?}", started.elapsed());
            assert!(e.message.contains("nested more than 64"), "{prefix:?}: {e}");
        }
        // In a block scalar the brackets are text, until the indentation ends it.
        let block = format!("a: |\n  {}\nb: {}\n", "[".repeat(100), "[".repeat(100));
        assert!(parse_documents("block.yaml", &block).unwrap_err().message.contains("nested more than 64"));
    }

    #[test]
    fn input_beyond_the_limit_is_refused_without_reading_it_all() {
        let endless = std::io::repeat(b'a');
        let e = read_limited(endless, "/dev/zero").unwrap_err();
        assert!(e.message.contains("larger than 16 MiB") && e.file == "/dev/zero", "{e}");
        assert_eq!(read_limited(&b"kind: x\n"[..], "small.yaml").unwrap(), "kind: x\n");
    }

    #[test]
    fn misspelt_field_is_located_absolutely_with_a_suggestion() {
        let err = parse_documents("httpbin.yaml", THREE_DOCS).unwrap_err();
        let line = THREE_DOCS.lines().position(|l| l.contains("hots:")).unwrap() + 1;
        assert_eq!(err.document, 3);
        assert_eq!(err.line, Some(line));
        assert_eq!(err.column, Some(9));
        assert_eq!(err.field.as_deref(), Some("spec.http[0].route[0].destination"));
        assert!(err.message.starts_with("unknown field `hots`"), "{}", err.message);
        assert!(err.hint.contains("did you mean `host`"), "{}", err.hint);
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!(
                "httpbin.yaml:{line}:9: document 3 (VirtualService httpbin): spec.http[0].route[0].destination: unknown field `hots`, expected one of `host`, `subset`, `port`\n  hint: did you mean `host`?"
            )),
            "{shown}"
        );
    }

    #[test]
    fn documents_are_numbered_and_located() {
        let fixed = THREE_DOCS.replace("hots:", "host:");
        let docs = parse_documents("f.yaml", &fixed).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs.iter().map(|d| (d.index, d.line)).collect::<Vec<_>>(), vec![(1, 2), (2, 13), (3, 20)]);
        assert!(docs.iter().all(|d| d.warnings.is_empty()));
    }

    #[test]
    fn type_errors_carry_the_value_path() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 70000\n";
        let err = parse_documents("s.yaml", text).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("spec.ports[0].port"));
        assert_eq!(err.line, Some(7));
        assert!(err.message.starts_with("invalid value"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_are_absolute() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n   bad: [\n";
        let err = parse_documents("ns.yaml", text).unwrap_err();
        assert_eq!(err.document, 2);
        assert!(err.line.unwrap() >= 9, "{err}");
        assert!(!err.message.contains(" at line "), "{}", err.message);
        assert!(err.hint.contains("indent"), "{}", err.hint);
    }

    #[test]
    fn wrong_api_version() {
        let text = "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata:\n  name: x\nspec: {}\n";
        let err = parse_documents("vs.yaml", text).unwrap_err();
        assert_eq!(err.line, Some(1));
        assert_eq!(err.field.as_deref(), Some("apiVersion"));
        assert!(err.message.contains("networking.istio.io/v1beta1"), "{}", err.message);
        assert!(err.hint.contains("apiVersion: networking.istio.io/v1"), "{}", err.hint);

        let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: x\n";
        let err = parse_documents("gw.yaml", text).unwrap_err();
        assert!(err.hint.contains("Gateway API"), "{}", err.hint);

        let text = "apiVersion: apps/v1\nkind: Service\nmetadata:\n  name: x\n";
        let err = parse_documents("svc.yaml", text).unwrap_err();
        assert!(err.message.contains("supported: v1"), "{}", err.message);
    }

    #[test]
    fn missing_or_unknown_kind_and_missing_name() {
        let err = parse_documents("a.yaml", "apiVersion: v1\nmetadata:\n  name: x\n").unwrap_err();
        assert!(err.message.contains("missing `kind`"), "{err}");
        assert!(err.message.contains("VirtualService"), "{err}");

        let err =
            parse_documents("a.yaml", "apiVersion: v1\nkind: virtualservice\nmetadata:\n  name: x\n").unwrap_err();
        assert!(err.hint.contains("kind: VirtualService"), "{err}");
        assert_eq!(err.line, Some(2));

        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  namespace: default\nspec:\n  host: x\n";
        let err = parse_documents("dr.yaml", text).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("metadata.name"));
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("metadata.name is required"));
        assert!(err.hint.contains("name:"));
    }

    #[test]
    fn unknown_field_without_close_match_lists_fields() {
        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n  host: d\n  banana: 1\n";
        let err = parse_documents("dr.yaml", text).unwrap_err();
        assert_eq!(err.line, Some(7));
        assert_eq!(err.column, Some(3));
        assert_eq!(err.field.as_deref(), Some("spec"));
        assert!(err.hint.contains("`trafficPolicy`"), "{}", err.hint);
        assert!(!err.hint.contains("did you mean"), "{}", err.hint);
    }

    #[test]
    fn kubectl_output_is_accepted_with_a_warning() {
        let text = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  creationTimestamp: \"2024-05-01T10:00:00Z\"
  generation: 1
  name: g
  namespace: default
  resourceVersion: \"1234\"
  uid: 0b6b1f7c-0000-0000-0000-000000000000
  managedFields:
  - apiVersion: networking.istio.io/v1
    manager: kubectl
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
status: {}
";
        let docs = parse_documents("g.yaml", text).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].warnings.len(), 1, "{:?}", docs[0].warnings);
        assert!(docs[0].warnings[0].contains("metadata.uid"));
        assert!(docs[0].warnings[0].contains("status"));
    }

    #[test]
    fn list_is_expanded() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: demo
- apiVersion: v1
  kind: ServiceAccount
  metadata:
    name: sa
    namespace: demo
";
        let docs = parse_documents("l.yaml", text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].resource.key().to_string(), "ServiceAccount demo/sa");
        let bad = text.replace("    name: sa", "    nam: sa");
        assert!(parse_documents("l.yaml", &bad).is_err());
    }

    #[test]
    fn empty_input_yields_nothing() {
        assert!(parse_documents("e.yaml", "").unwrap().is_empty());
        assert!(parse_documents("e.yaml", "---\n# c\n---\n\n...\n").unwrap().is_empty());
    }

    #[test]
    fn message_splitting() {
        assert_eq!(
            split_yaml_message("spec.http[0]: unknown field `x`, expected `y` at line 3 column 5"),
            (Some("spec.http[0]".into()), "unknown field `x`, expected `y`".into())
        );
        assert_eq!(
            split_yaml_message("missing field `spec` at line 1 column 1"),
            (None, "missing field `spec`".into())
        );
        assert_eq!(
            split_yaml_message("metadata.labels.a: b: invalid type: map, expected a string"),
            (Some("metadata.labels.a: b".into()), "invalid type: map, expected a string".into())
        );
        assert_eq!(edit_distance("hots", "host"), 2);
        assert_eq!(edit_distance("Host", "host"), 0);
    }

    /// Pins down what serde_yaml 0.9 errors contain, which `yaml_error` relies on.
    #[test]
    fn serde_yaml_error_shape() {
        let text = "apiVersion: a\nkind: b\nmetadata: {name: x}\nspec:\n  http:\n  - route:\n    - destination:\n        port:\n          number: 8000\n        hots: httpbin\n";
        let e = serde_yaml::from_str::<crate::resources::networking::VirtualService>(text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.http[0].route[0].destination: unknown field `hots`, expected one of `host`, `subset`, `port` at line 10 column 9"
        );
        let loc = e.location().unwrap();
        assert_eq!((loc.line(), loc.column()), (10, 9)); // 1-based, at the offending key

        let e = serde_yaml::from_str::<crate::resources::core::Service>(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "spec.ports[0].port: invalid type: string \"x\", expected u16 at line 7 column 11");

        let e = serde_yaml::from_str::<serde_yaml::Value>("a: b\n c: [\n").unwrap_err();
        assert_eq!(e.to_string(), "mapping values are not allowed in this context at line 2 column 3");
        assert_eq!(e.location().map(|l| (l.line(), l.column())), Some((2, 3)));
    }
}
