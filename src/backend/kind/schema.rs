//! A CRD's OpenAPI v3 schema, from a kind's JSON schema (schemars, from the API types' own
//! serde shape), made structural as Kubernetes requires: references inlined, `Option`'s null
//! folded into `nullable`, an any-value field kept whole (`x-kubernetes-preserve-unknown-fields`),
//! int-or-string marked, and what Kubernetes does not take (`$schema`, titles, serde defaults,
//! `additionalProperties: false`, unknown formats) left out. Pure.

use serde_json::{json, Map, Value};

/// Formats the API server knows; others (`uint32`, ...) are left out.
const FORMATS: [&str; 7] = ["int32", "int64", "float", "double", "byte", "date", "date-time"];

/// How deep references are followed before a field is kept whole (no API type nests deeper).
const MAX_DEPTH: usize = 48;

/// The `spec` of an object's schema, structural.
pub fn spec(object_schema: &Value) -> Value {
    let defs = object_schema.get("$defs").cloned().unwrap_or_else(|| json!({}));
    match object_schema.pointer("/properties/spec") {
        Some(s) => convert(s, &defs, 0),
        None => preserve(),
    }
}

fn preserve() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn with_description(mut v: Value, from: &Map<String, Value>) -> Value {
    if let (Some(d), Some(o)) = (from.get("description"), v.as_object_mut()) {
        o.insert("description".into(), d.clone());
    }
    v
}

fn convert(s: &Value, defs: &Value, depth: usize) -> Value {
    let Some(m) = s.as_object() else {
        // `true`: any value (a `serde_json::Value` field).
        return json!({"x-kubernetes-preserve-unknown-fields": true});
    };
    if depth > MAX_DEPTH {
        return preserve();
    }
    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
        let target = r.strip_prefix("#/$defs/").and_then(|name| defs.get(name));
        return match target {
            Some(t) => with_description(convert(t, defs, depth + 1), m),
            None => preserve(),
        };
    }
    if let Some(any) = m.get("anyOf").or_else(|| m.get("oneOf")).and_then(Value::as_array) {
        let is_null = |v: &&Value| v.get("type").and_then(Value::as_str) == Some("null");
        let others: Vec<&Value> = any.iter().filter(|v| !is_null(v)).collect();
        let nullable = others.len() < any.len();
        let types: Vec<&str> = others.iter().filter_map(|v| v.get("type")?.as_str()).collect();
        let out = if others.len() == 1 {
            let mut inner = convert(others[0], defs, depth + 1);
            if nullable {
                inner["nullable"] = json!(true);
            }
            inner
        } else if let Some(values) = string_values(&others) {
            // A unit enum whose variants have docs: one string const (or enum) per variant.
            let mut e = json!({"type": "string", "enum": values});
            if nullable {
                e["nullable"] = json!(true);
            }
            e
        } else if types.len() == 2 && types.contains(&"integer") && types.contains(&"string") {
            json!({"x-kubernetes-int-or-string": true})
        } else {
            preserve()
        };
        return with_description(out, m);
    }
    let mut out = Map::new();
    for (k, v) in m {
        match k.as_str() {
            "type" => match v {
                Value::Array(ts) => {
                    let real: Vec<&Value> = ts.iter().filter(|t| t.as_str() != Some("null")).collect();
                    if real.len() < ts.len() {
                        out.insert("nullable".into(), json!(true));
                    }
                    if let [one] = real.as_slice() {
                        out.insert("type".into(), (*one).clone());
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, p)| (name.clone(), convert(p, defs, depth + 1)))
                    .collect();
                out.insert("properties".into(), Value::Object(props));
            }
            "items" => {
                out.insert("items".into(), convert(v, defs, depth + 1));
            }
            // A map's values; `false` (deny unknown fields) is what pruning already does.
            "additionalProperties" if v.is_object() || v == &json!(true) => {
                out.insert("additionalProperties".into(), convert(v, defs, depth + 1));
            }
            "format" if v.as_str().is_some_and(|f| FORMATS.contains(&f)) => {
                out.insert("format".into(), v.clone());
            }
            "const" => {
                out.insert("enum".into(), json!([v]));
            }
            "description" | "enum" | "required" | "minimum" | "maximum" | "minItems" | "maxItems" | "minLength"
            | "maxLength" | "pattern" => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    let marked = out.contains_key("x-kubernetes-preserve-unknown-fields");
    if !out.contains_key("type") && !marked {
        if out.contains_key("properties") {
            out.insert("type".into(), json!("object"));
        } else {
            return with_description(json!({"x-kubernetes-preserve-unknown-fields": true}), m);
        }
    }
    Value::Object(out)
}

/// The values of alternatives that are all strings given by `const` or `enum`.
fn string_values(alternatives: &[&Value]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for a in alternatives {
        if a.get("type").and_then(Value::as_str) != Some("string") {
            return None;
        }
        match (a.get("const"), a.get("enum").and_then(Value::as_array)) {
            (Some(c), _) => out.push(c.clone()),
            (None, Some(e)) => out.extend(e.iter().cloned()),
            _ => return None,
        }
    }
    Some(out)
}

/// Where `schema` is not structural, as Kubernetes' API server would say it: every node has a
/// type (or keeps unknown fields, or is int-or-string), and no reference or combinator is left.
pub fn not_structural(schema: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(m) = schema.as_object() else {
        return vec![format!("{path}: not an object")];
    };
    for k in ["$ref", "anyOf", "oneOf", "allOf", "$defs", "const"] {
        if m.contains_key(k) {
            out.push(format!("{path}: {k}"));
        }
    }
    let loose = m.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || m.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if !m.get("type").is_some_and(Value::is_string) && !loose {
        out.push(format!("{path}: no type"));
    }
    if m.contains_key("properties") && m.contains_key("additionalProperties") {
        out.push(format!("{path}: properties and additionalProperties together"));
    }
    for (name, p) in m.get("properties").and_then(Value::as_object).into_iter().flatten() {
        out.extend(not_structural(p, &format!("{path}.{name}")));
    }
    if let Some(items) = m.get("items") {
        out.extend(not_structural(items, &format!("{path}[]")));
    }
    if let Some(values) = m.get("additionalProperties").filter(|v| v.is_object()) {
        out.extend(not_structural(values, &format!("{path}{{}}")));
    }
    out
}
