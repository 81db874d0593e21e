//! Finds the line of a field path (`spec.http[0].route[1].weight`) in a YAML document's text,
//! so an error found after parsing (by validation, in the control plane) names the file and the
//! line as the parser's own errors do. Block style is followed exactly; where the path goes into
//! a flow collection (`{...}`, `[...]`) the line of the deepest field found is the answer.

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// A line's raw indent, the column its content starts at once sequence dashes are passed, and
/// that content.
fn shape(line: &str) -> (usize, usize, &str) {
    let raw = line.len() - line.trim_start_matches(' ').len();
    let mut rest = &line[raw..];
    let mut col = raw;
    while let Some(after) = rest.strip_prefix('-').filter(|a| a.is_empty() || a.starts_with(' ')) {
        let trimmed = after.trim_start_matches(' ');
        col += 1 + (after.len() - trimmed.len());
        rest = trimmed;
    }
    (raw, col, rest)
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// Does `content` (a line after its indent and dashes) start with `key:`?
fn has_key(content: &str, key: &str) -> bool {
    let quoted = |q: char| content.strip_prefix(q).and_then(|c| c.strip_prefix(key)).and_then(|c| c.strip_prefix(q));
    let rest = content.strip_prefix(key).or_else(|| quoted('"')).or_else(|| quoted('\''));
    rest.is_some_and(|r| r.starts_with(':') && (r.len() == 1 || r[1..].starts_with(' ')))
}

/// 0-based line of `path` within `text` (the document); the deepest field found when the whole
/// path cannot be followed; 0 when not even the first field is found.
pub fn line_of(text: &str, path: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let (mut start, mut end) = (0, lines.len());
    let mut found = lines.iter().position(|l| is_content(l)).unwrap_or(0);
    for seg in segments(path) {
        let Some(first) = (start..end).find(|&i| is_content(lines[i])) else { break };
        match seg {
            Segment::Key(key) => {
                let block = shape(lines[first]).1;
                let hit = (first..end).find(|&i| {
                    let (_, col, content) = shape(lines[i]);
                    is_content(lines[i]) && col == block && has_key(content, key)
                });
                let Some(at) = hit else { break };
                found = at;
                let (_, col, content) = shape(lines[at]);
                let inline = content.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
                if !inline.is_empty()
                    && !inline.starts_with('#')
                    && !inline.starts_with('|')
                    && !inline.starts_with('>')
                {
                    break; // a scalar or a flow collection: this line is as deep as it goes
                }
                // Children: indented deeper, or a sequence at the key's own indent.
                let stop = (at + 1..end)
                    .find(|&i| {
                        let (raw, _, c) = shape(lines[i]);
                        let dash = lines[i].trim_start().starts_with('-');
                        is_content(lines[i]) && (raw < col || (raw == col && !dash)) && !c.is_empty()
                    })
                    .unwrap_or(end);
                (start, end) = (at + 1, stop);
            }
            Segment::Index(n) => {
                let dash_at = shape(lines[first]).0;
                let items: Vec<usize> = (first..end)
                    .filter(|&i| {
                        let (raw, _, _) = shape(lines[i]);
                        raw == dash_at && lines[i].trim_start().starts_with('-')
                    })
                    .collect();
                let Some(&at) = items.get(n) else { break };
                found = at;
                let stop = items.get(n + 1).copied().unwrap_or(end);
                // An item's first field is on its dash line: search from there.
                let on_dash_line = !shape(lines[at]).2.is_empty();
                (start, end) = (if on_dash_line { at } else { at + 1 }, stop);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 60
  - route:
      - destination:
          host: reviews
";

    fn at(path: &str) -> &'static str {
        VS.lines().nth(line_of(VS, path)).unwrap().trim()
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            segments("spec.http[0].route[1].weight"),
            vec![
                Segment::Key("spec"),
                Segment::Key("http"),
                Segment::Index(0),
                Segment::Key("route"),
                Segment::Index(1),
                Segment::Key("weight")
            ]
        );
    }

    #[test]
    fn block_style_paths_land_on_their_line() {
        assert_eq!(at("metadata.name"), "name: reviews");
        assert_eq!(at("spec.hosts[0]"), "- reviews");
        assert_eq!(at("spec.http[0].route[0].weight"), "weight: 50");
        assert_eq!(at("spec.http[0].route[1].weight"), "weight: 60");
        assert_eq!(at("spec.http[0].route[0].destination.subset"), "subset: v2");
        assert_eq!(at("spec.http[0].match[0].headers.end-user.exact"), "exact: jason");
        assert_eq!(at("spec.http[1].route[0].destination.host"), "host: reviews");
    }

    #[test]
    fn flow_style_and_missing_fields_give_the_deepest_line_found() {
        assert_eq!(at("spec.http[0].route[1].destination.subset"), "- destination: {host: reviews, subset: v3}");
        assert_eq!(at("spec.http[0].timeout"), "- match:");
        assert_eq!(at("spec.http[7].route"), "http:");
        assert_eq!(line_of(VS, "nothing.here"), 0);
    }
}
