//! `${VAR}` interpolation into the *parsed* config: the document is parsed first, then each
//! string scalar gets its variables, so an environment value is data, never YAML. A value with
//! quotes, a newline and `key: value` in it (`x"\n  security.protocol: PLAINTEXT`) stays one
//! string; it cannot add keys, close a quote or change a type.
//!
//! `${NAME:-default}` takes `default` when `NAME` is unset or empty (as in Vector and Redpanda
//! Connect); the default is literal text up to the closing brace, interpolated no further.
//! `$${` writes a literal `${`. jq's own `$meta` has no brace, so templates are untouched.
//! Comments are gone after parsing, so a comment may mention `${…}`. Map keys are never
//! interpolated, and neither is the top-level `vars:` (template constants, never secrets).
//!
//! A scalar that is exactly one reference (`max_in_flight: ${N}`) takes the value's YAML scalar
//! type when it is a number or a boolean (`100`, `true`), so numbers and flags can come from the
//! environment; anything else stays a string. A missing variable is an error naming the
//! variable and the paths of the values that reference it: one error per variable, however
//! often it is referenced; every missing variable is reported, not just the first.

use super::ConfigError;
use yaml_serde::Value;

/// Replaces every `${NAME}` in the string scalars of `doc` using `lookup`, in place. A
/// missing variable becomes empty and is reported, so parsing can go on and report more.
pub fn interpolate(doc: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
    let mut found = Found::default();
    walk(doc, String::new(), lookup, &mut found);
    let mut errors = found.errors;
    for (name, paths) in found.missing {
        let also = if paths.len() > 1 {
            format!("; also referenced at {}", paths[1..].join(", "))
        } else {
            String::new()
        };
        let mut error = ConfigError::new(
            paths[0].clone(),
            format!("environment variable {name} is not set (referenced as ${{{name}}}{also}); export it, give a default (${{{name}:-value}}) or remove the reference"),
        );
        error.also = paths[1..].to_vec();
        errors.push(error);
    }
    errors
}

/// What the walk found wrong: malformed references, and each missing variable with the paths
/// that reference it (in document order).
#[derive(Default)]
struct Found {
    errors: Vec<ConfigError>,
    missing: Vec<(String, Vec<String>)>,
}

impl Found {
    fn missing(&mut self, name: &str, path: String) {
        match self.missing.iter_mut().find(|(n, _)| n == name) {
            Some((_, paths)) => paths.push(path),
            None => self.missing.push((name.to_string(), vec![path])),
        }
    }
}

fn walk(v: &mut Value, path: String, lookup: &dyn Fn(&str) -> Option<String>, found: &mut Found) {
    match v {
        Value::String(s) => {
            if let Some(new) = substitute(s, &path, lookup, found) {
                *v = new;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), lookup, found);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let key = match k {
                    Value::String(k) => k.clone(),
                    other => yaml_serde::to_string(other)
                        .map(|s| s.trim_end().to_string())
                        .unwrap_or_default(),
                };
                if path.is_empty() && key == "vars" {
                    // Template constants are never read from the environment: they reach every
                    // template and `render`'s output (build refuses a `${` in them).
                    continue;
                }
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                walk(item, child, lookup, found);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, lookup, found),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The scalar `s` with its references replaced; `None` if it has none (left as it is).
fn substitute(
    s: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    found: &mut Found,
) -> Option<Value> {
    if !s.contains('$') {
        return None;
    }
    let at = || {
        if path.is_empty() {
            "(top level)".to_string()
        } else {
            path.to_string()
        }
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut references = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                found.errors.push(ConfigError::new(
                    at(),
                    "unclosed ${ (write $${ for a literal ${)",
                ));
                out.push_str(tail);
                rest = "";
                continue;
            };
            let reference = &after[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            references += 1;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                found.errors.push(ConfigError::new(
                    at(),
                    format!("${{{reference}}} is not a valid environment variable reference; use ${{NAME}} or ${{NAME:-default}}, NAME with letters, digits and _ (write $${{ for a literal ${{)"),
                ));
            } else {
                match (lookup(name), default) {
                    (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => found.missing(name, at()),
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    let whole_reference = references == 1 && s.starts_with("${") && s.ends_with('}');
    if whole_reference {
        if let Some(typed) = scalar(&out) {
            return Some(typed);
        }
    }
    Some(Value::String(out))
}

/// `text` as a YAML number or boolean, if it is exactly one.
fn scalar(text: &str) -> Option<Value> {
    let t = text.trim();
    if t.is_empty() || t.contains(['\n', '#', ':', '[', '{', '"', '\'', '&', '*', '!', '|', '>']) {
        return None;
    }
    match yaml_serde::from_str::<Value>(t) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka:9092".to_string()),
            "N" => Some("100".to_string()),
            "EVIL" => Some("x\"\n        security.protocol: \"PLAINTEXT".to_string()),
            _ => None,
        }
    }

    fn doc(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn replaces_variables_and_leaves_jq_variables_alone() {
        let mut d = doc("a: ${HOST}\nb: '$meta.key'\nc: $${HOST}\n# ${…}\nn: ${N}\nq: \"${N}x\"\n");
        let errs = interpolate(&mut d, &env);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            d,
            doc("a: kafka:9092\nb: '$meta.key'\nc: \"${HOST}\"\nn: 100\nq: 100x\n")
        );
    }

    #[test]
    fn reports_every_missing_variable_with_its_path() {
        let mut d = doc("a: ${NOPE}\nb: ${HOST}\nlist:\n  - { c: \"${ALSO_NOPE}\" }\n");
        let errs = interpolate(&mut d, &env);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].path, "a");
        assert!(errs[0].message.contains("NOPE"));
        assert_eq!(errs[1].path, "list[0].c");
    }

    #[test]
    fn a_variable_referenced_twice_is_one_error_naming_both_paths() {
        let mut d = doc("a: ${NOPE}\nb: { c: \"x${NOPE}\" }\n");
        let errs = interpolate(&mut d, &env);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "a");
        assert!(
            errs[0].message.contains("also referenced at b.c"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_default_applies_when_the_variable_is_unset_or_empty() {
        let lookup = |n: &str| match n {
            "EMPTY" => Some(String::new()),
            "SET" => Some("given".to_string()),
            _ => None,
        };
        let mut d = doc("a: ${UNSET:-kafka:9092}\nb: ${EMPTY:-fallback}\nc: ${SET:-unused}\nn: ${UNSET:-250}\ne: x${UNSET:-}y\nd: ${UNSET:-${X}\n");
        let errs = interpolate(&mut d, &lookup);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            d,
            doc("a: kafka:9092\nb: fallback\nc: given\nn: 250\ne: xy\nd: ${X\n"),
            "a default is literal text up to the first closing brace"
        );
        let mut bad = doc("a: ${:-x}\n");
        assert_eq!(interpolate(&mut bad, &lookup).len(), 1);
    }

    #[test]
    fn a_value_with_quotes_and_newlines_stays_one_string() {
        let mut d = doc("kafka:\n  properties:\n    sasl.password: \"${EVIL}\"\n    security.protocol: SASL_SSL\n");
        interpolate(&mut d, &env);
        let props = &d["kafka"]["properties"];
        assert_eq!(props["security.protocol"], Value::String("SASL_SSL".into()));
        assert_eq!(
            props["sasl.password"],
            Value::String(env("EVIL").unwrap()),
            "the whole value, as data"
        );
        assert_eq!(props.as_mapping().map(|m| m.len()), Some(2), "no key added");
    }

    proptest! {
        /// Whatever a variable holds, the document keeps its shape: the same keys at the same
        /// places, and the referencing scalar is the value (as a string, or the number or
        /// boolean it spells).
        #[test]
        fn no_value_changes_the_documents_shape(value in "(?s).{0,80}") {
            let mut d = doc("a:\n  b: ${V}\n  c: \"x${V}y\"\n  d: [1, \"${V}\"]\nz: keep\n");
            let before = d.clone();
            let lookup = |n: &str| (n == "V").then(|| value.clone());
            let errs = interpolate(&mut d, &lookup);
            prop_assert!(errs.is_empty());
            let keys = |v: &Value| v.as_mapping().map(|m| m.keys().cloned().collect::<Vec<_>>());
            prop_assert_eq!(keys(&d), keys(&before));
            prop_assert_eq!(keys(&d["a"]), keys(&before["a"]));
            prop_assert_eq!(d["z"].clone(), Value::String("keep".into()));
            prop_assert_eq!(d["a"]["c"].clone(), Value::String(format!("x{value}y")));
            prop_assert_eq!(d["a"]["d"].as_sequence().map(Vec::len), Some(2));
            match &d["a"]["b"] {
                Value::String(s) => prop_assert_eq!(s, &value),
                Value::Number(_) | Value::Bool(_) => prop_assert!(scalar(&value).is_some()),
                other => prop_assert!(false, "became {:?}", other),
            }
        }
    }
}
