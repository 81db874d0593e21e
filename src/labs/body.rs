//! What a failing check shows of a body (pure): for a page, its title and the visible text
//! nearest to what was expected (not `<!DOCTYPE html>`); for JSON, the fields nearest to it (not
//! `{`); for anything else, its first line.

/// At most this many characters of a body are shown.
const SHOWN: usize = 160;

/// A short view of `body` for "saw", nearest to `expected` where that can be told.
pub fn view(body: &str, expected: Option<&str>) -> String {
    let trimmed = body.trim_start();
    if trimmed.starts_with('<') {
        return html(body, expected);
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
            return json(&v, expected);
        }
    }
    let first = body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    quote(first)
}

fn quote(s: &str) -> String {
    let mut shown: String = s.chars().take(SHOWN).collect();
    if s.chars().count() > SHOWN {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// The words of a text, lowercased, for likeness.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2).map(str::to_lowercase).collect()
}

/// How many of `expected`'s words `line` has.
fn likeness(line: &str, expected: &[String]) -> usize {
    let have = words(line);
    expected.iter().filter(|w| have.contains(w)).count()
}

/// A page's visible text, one line per block: tags, scripts and styles gone, entities read.
pub fn visible_lines(html: &str) -> (Option<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut title = None;
    let mut line = String::new();
    let mut rest = html;
    let mut skip_until: Option<&str> = None;
    let mut in_title = false;
    while !rest.is_empty() {
        if let Some(end) = skip_until {
            match rest.to_ascii_lowercase().find(end) {
                Some(i) => rest = &rest[i..],
                None => break,
            }
            skip_until = None;
        }
        match rest.find('<') {
            Some(0) => {
                let close = rest.find('>').map(|i| i + 1).unwrap_or(rest.len());
                let tag = rest[1..close.saturating_sub(1)].trim().to_ascii_lowercase();
                let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_alphanumeric()).collect();
                if !tag.starts_with('/') && (name == "script" || name == "style") {
                    skip_until = Some(if name == "script" { "</script" } else { "</style" });
                }
                if name == "title" {
                    in_title = !tag.starts_with('/');
                    if !in_title && !line.trim().is_empty() {
                        title = Some(collapse(&line));
                        line.clear();
                    }
                }
                if matches!(
                    name.as_str(),
                    "p" | "div"
                        | "br"
                        | "li"
                        | "tr"
                        | "h1"
                        | "h2"
                        | "h3"
                        | "h4"
                        | "h5"
                        | "h6"
                        | "blockquote"
                        | "dt"
                        | "dd"
                        | "body"
                        | "title"
                        | "table"
                        | "small"
                        | "em"
                ) && !in_title
                {
                    push_line(&mut lines, &mut line);
                }
                rest = &rest[close..];
            }
            Some(i) => {
                line.push_str(&entities(&rest[..i]));
                line.push(' ');
                rest = &rest[i..];
            }
            None => {
                line.push_str(&entities(rest));
                rest = "";
            }
        }
    }
    push_line(&mut lines, &mut line);
    (title, lines)
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn push_line(lines: &mut Vec<String>, line: &mut String) {
    let l = collapse(line);
    if !l.is_empty() {
        lines.push(l);
    }
    line.clear();
}

fn entities(s: &str) -> String {
    s.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn html(body: &str, expected: Option<&str>) -> String {
    let (title, lines) = visible_lines(body);
    let want = expected.map(words).unwrap_or_default();
    let mut best: Vec<(usize, usize)> =
        lines.iter().enumerate().map(|(i, l)| (likeness(l, &want), i)).filter(|(score, _)| *score > 0).collect();
    best.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut picked: Vec<usize> = best.iter().take(2).map(|(_, i)| *i).collect();
    if picked.is_empty() {
        picked = (0..lines.len().min(2)).collect();
    }
    picked.sort();
    let text = picked.iter().map(|i| lines[*i].as_str()).collect::<Vec<_>>().join(" / ");
    match title {
        Some(t) if !text.is_empty() => format!("a page titled {}: {}", quote(&t), quote(&text)),
        Some(t) => format!("a page titled {}", quote(&t)),
        None if text.is_empty() => "a page with no visible text".into(),
        None => format!("a page: {}", quote(&text)),
    }
}

/// Every `path: value` of a JSON document, leaves only.
fn leaves(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                leaves(v, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                leaves(v, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::String(s) => out.push((path.to_string(), s.clone())),
        other => out.push((path.to_string(), other.to_string())),
    }
}

fn json(v: &serde_json::Value, expected: Option<&str>) -> String {
    let mut all = Vec::new();
    leaves(v, "", &mut all);
    let want = expected.map(words).unwrap_or_default();
    let mut scored: Vec<(usize, &(String, String))> =
        all.iter().map(|kv| (likeness(&format!("{} {}", kv.0, kv.1), &want), kv)).filter(|(s, _)| *s > 0).collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    if scored.is_empty() {
        return format!("JSON {}", quote(&v.to_string()));
    }
    let shown: Vec<String> = scored.iter().take(2).map(|(_, (k, v))| format!("{k}: {v}")).collect();
    format!("JSON with {}", quote(&shown.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::view;

    const PAGE: &str = r#"<!DOCTYPE html>
<html><head><title>Simple Bookstore App</title><style>body { color: red }</style>
<script>var x = "<b>not text</b>";</script></head>
<body><h3>The Comedy of Errors</h3>
<p>Summary: Wikipedia Summary: The Comedy of Errors is one of William Shakespeare's early plays.</p>
<h4>Book Reviews</h4>
<blockquote><p>An extremely entertaining play by Shakespeare.</p>
<small>Reviewer1</small>
<font color="red">Ratings service is currently unavailable</font></blockquote>
<p>Reviews served by: reviews-v2-5d8c7b</p></body></html>"#;

    #[test]
    fn a_page_shows_its_title_and_the_text_nearest_the_expected() {
        let v = view(PAGE, Some("Sorry, product reviews are currently unavailable for this book."));
        assert!(v.starts_with("a page titled \"Simple Bookstore App\""), "{v}");
        assert!(v.contains("Ratings service is currently unavailable"), "{v}");
        assert!(!v.contains("DOCTYPE") && !v.contains("not text") && !v.contains("color: red"), "{v}");
        let v = view(PAGE, Some("text-red-500"));
        assert!(v.contains("The Comedy of Errors"), "nothing alike: the page's first lines: {v}");
    }

    #[test]
    fn json_shows_the_fields_the_check_reads() {
        let body = r#"{"headers": {"Accept": "*/*", "Host": "httpbin.foo:8000", "X-Forwarded-Client-Cert": "By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash=ab;Subject=\"\";URI=spiffe://cluster.local/ns/legacy/sa/curl"}}"#;
        let v = view(body, Some("URI=spiffe://cluster.local/ns/foo/sa/curl"));
        assert!(v.starts_with("JSON with \"headers.X-Forwarded-Client-Cert: By=spiffe"), "{v}");
        assert!(view("{\"a\": 1}", Some("zzz")).contains("{\\\"a\\\":1}"), "{}", view("{\"a\": 1}", Some("zzz")));
    }

    #[test]
    fn text_shows_its_first_line() {
        assert_eq!(view("\nRBAC: access denied\nmore", Some("Book Details")), "\"RBAC: access denied\"");
        assert!(view(&"x".repeat(500), None).ends_with("…\""));
    }
}
