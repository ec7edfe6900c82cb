//! Shortcuts for the template shapes most routes are made of, run without jaq's evaluator.
//!
//! jaq costs ~0.6 µs per run before it does any work, and an object construction ~2.5 µs; the
//! event templates of a typical route are plain paths, literals, small objects of paths and a
//! filter comparing a path with a literal. Those shapes are recognised at compile time and
//! evaluated here as lookups. Same output as jq by construction, checked against jaq in the
//! tests below (also on random inputs): whenever a path meets something other than an object
//! or null (jq's error case), the shortcut declines and jaq runs the expression, so errors read
//! exactly as jq's.

use super::template::{found_val, key_text, val_to_json};
use crate::lookup::table::Found;
use crate::lookup::{Lookup, Tables};
use jaq_json::Val;
use serde_json::{Map, Value};
use std::sync::Arc;

/// An expression that can be answered by lookups.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shortcut {
    /// `.a.b.c` (`.` alone: no keys).
    Path(Vec<String>),
    /// `{a, b: .x.y}`: keys in order, each with its path.
    Object(Vec<(String, Vec<String>)>),
    /// `.a.b == "x"` / `.a.b != null`: a path against a string, boolean or null literal.
    Compare {
        path: Vec<String>,
        literal: Value,
        equal: bool,
    },
    /// `lookup("table"; .a.b)`: a table's value for a path's key.
    Lookup(TableKey),
    /// `lookup("table"; .a.b) != null` (or `==` a string, boolean or null literal).
    CompareLookup {
        lookup: TableKey,
        literal: Value,
        equal: bool,
    },
}

/// A table and the path of the key looked up in it.
#[derive(Clone)]
pub(crate) struct TableKey {
    table: Arc<Lookup>,
    key: Vec<String>,
}

impl std::fmt::Debug for TableKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lookup({:?}; .{})", self.table.name, self.key.join("."))
    }
}

impl PartialEq for TableKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.table, &other.table) && self.key == other.key
    }
}

impl TableKey {
    /// Runs `f` on what the table holds for the key at the path; `None` where jaq must run
    /// (the path meets a non-object, or the key is an array or object: jaq's errors).
    fn with<R>(&self, input: &Val, f: impl FnOnce(Option<Found<'_>>) -> R) -> Option<R> {
        let key = lookup(input, &self.key)?.unwrap_or(&Val::Null);
        match key_text(key).ok()? {
            None => Some(f(None)),
            Some(k) => Some(self.table.table.with(&k, f)),
        }
    }
}

/// `lookup("name"; .path)`, with a table of `tables`.
fn table_lookup(code: &str, tables: &Tables) -> Option<TableKey> {
    let inner = code.trim().strip_prefix("lookup")?.trim_start();
    let inner = inner.strip_prefix('(')?.strip_suffix(')')?;
    let (name, key) = inner.split_once(';')?;
    let name = name.trim();
    if name.contains('\\') {
        return None;
    }
    let name: String = serde_json::from_str(name).ok()?;
    Some(TableKey {
        table: tables.get(&name)?.clone(),
        key: path(key)?,
    })
}

/// jq's keywords: after a dot or as an object key they parse differently, so leave them to jaq.
const KEYWORDS: &[&str] = &[
    "and", "or", "not", "if", "then", "elif", "else", "end", "as", "def", "reduce", "foreach",
    "try", "catch", "label", "import", "include", "__loc__",
];

fn ident(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&k)
}

/// `.a.b.c` as its keys, if `code` is nothing but such a path.
fn path(code: &str) -> Option<Vec<String>> {
    let code = code.trim();
    if code == "." {
        return Some(Vec::new());
    }
    let keys: Vec<String> = code
        .strip_prefix('.')?
        .split('.')
        .map(str::to_string)
        .collect();
    keys.iter().all(|k| ident(k)).then_some(keys)
}

/// A JSON string, boolean or null: the literals a comparison shortcut accepts.
fn scalar_literal(code: &str) -> Option<Value> {
    serde_json::from_str::<Value>(code.trim())
        .ok()
        .filter(|v| matches!(v, Value::String(_) | Value::Bool(_) | Value::Null))
}

fn object(code: &str) -> Option<Vec<(String, Vec<String>)>> {
    let inner = code.trim().strip_prefix('{')?.strip_suffix('}')?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    for entry in inner.split(',') {
        let (key, keys) = match entry.split_once(':') {
            Some((key, value)) => (key.trim(), path(value)?),
            None => (entry.trim(), vec![entry.trim().to_string()]),
        };
        if !ident(key) || entries.iter().any(|(k, _)| k == key) {
            return None;
        }
        entries.push((key.to_string(), keys));
    }
    Some(entries)
}

fn compare(code: &str, tables: &Tables) -> Option<Shortcut> {
    let (op, equal) = if code.contains("==") {
        ("==", true)
    } else {
        ("!=", false)
    };
    let (left, right) = code.split_once(op)?;
    let literal = scalar_literal(right)?;
    if let Some(lookup) = table_lookup(left, tables) {
        return Some(Shortcut::CompareLookup {
            lookup,
            literal,
            equal,
        });
    }
    Some(Shortcut::Compare {
        path: path(left)?,
        literal,
        equal,
    })
}

/// The shortcut for `code`, if it has one of the shapes above (`tables`: the lookup tables a
/// `lookup(…)` may name).
pub(crate) fn recognise(code: &str, tables: &Tables) -> Option<Shortcut> {
    if let Some(keys) = path(code) {
        return Some(Shortcut::Path(keys));
    }
    if let Some(entries) = object(code) {
        return Some(Shortcut::Object(entries));
    }
    if let Some(lookup) = table_lookup(code, tables) {
        return Some(Shortcut::Lookup(lookup));
    }
    compare(code, tables)
}

/// Follows `keys` as jq's `.a.b` does: a missing key or a null gives null (`Some(None)`);
/// `None` when the path meets a value that is neither an object nor null (jq's error case).
fn lookup<'a>(mut v: &'a Val, keys: &[String]) -> Option<Option<&'a Val>> {
    for key in keys {
        match v {
            Val::Obj(map) => {
                let found = if map.len() <= 16 {
                    map.iter()
                        .find(|(k, _)| {
                            matches!(k, Val::TStr(b) | Val::BStr(b) if b.as_ref() == key.as_bytes())
                        })
                        .map(|(_, v)| v)
                } else {
                    map.get(&Val::utf8_str(key.clone().into_bytes()))
                };
                match found {
                    Some(next) => v = next,
                    None => return Some(None),
                }
            }
            Val::Null => return Some(None),
            _ => return None,
        }
    }
    Some(Some(v))
}

/// Whether a table's value equals a string, boolean or null literal, as jq's `==` says.
fn found_equals(found: Option<Found<'_>>, literal: &Value) -> bool {
    match (found, literal) {
        (None, Value::Null) => true,
        (Some(Found::Text(s)), Value::String(b)) => s == b,
        (Some(Found::Json(j)), Value::Bool(b)) => j == if *b { "true" } else { "false" },
        (Some(Found::Json("null")), Value::Null) => true,
        _ => false,
    }
}

fn equals(v: Option<&Val>, literal: &Value) -> bool {
    match (v.unwrap_or(&Val::Null), literal) {
        (Val::Null, Value::Null) => true,
        (Val::Bool(a), Value::Bool(b)) => a == b,
        (Val::TStr(a), Value::String(b)) => a.as_ref() == b.as_bytes(),
        _ => false,
    }
}

impl Shortcut {
    /// The expression's one output, or `None` to let jaq run it.
    pub(crate) fn eval(&self, input: &Val) -> Option<Value> {
        match self {
            Shortcut::Path(keys) => Some(lookup(input, keys)?.map_or(Value::Null, val_to_json)),
            Shortcut::Object(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (key, keys) in entries {
                    let v = lookup(input, keys)?.map_or(Value::Null, val_to_json);
                    map.insert(key.clone(), v);
                }
                Some(Value::Object(map))
            }
            Shortcut::Compare {
                path,
                literal,
                equal,
            } => Some(Value::Bool(equals(lookup(input, path)?, literal) == *equal)),
            // Text (an installation id) as it is; any other JSON through jaq's value, so
            // numbers print as jaq prints them (`2.0` is `2`).
            Shortcut::Lookup(lookup) => lookup.with(input, |found| match found {
                Some(Found::Text(s)) => Value::String(s.to_string()),
                other => val_to_json(&found_val(other)),
            }),
            Shortcut::CompareLookup {
                lookup,
                literal,
                equal,
            } => lookup.with(input, |found| {
                Value::Bool(found_equals(found, literal) == *equal)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::template::{json_to_val, JqTemplate};
    use proptest::prelude::*;
    use serde_json::json;

    /// Codes with a shortcut, and codes that must go to jaq.
    const SHORT: &[&str] = &[
        ".",
        ".a",
        ".a.b",
        ".a.c",
        ".a.c.d",
        ".missing.deeper",
        ".a.s",
        ".n",
        ".big",
        "{a}",
        "{x: .a.b, a, n: .n}",
        "{}",
        "{ id: .a.s , n }",
        "{k: .}",
        ".a.s == \"x\"",
        ".a.s != \"x\"",
        ".missing == null",
        ".a.c != null",
        ".t == true",
        ".n == \"2.5\"",
        ".a == \"x\"",
        ".a.s==\"a==b\"",
    ];
    const JAQ: &[&str] = &[
        ".a | .b",
        "1.5",
        ".a[0]",
        ".\"a\"",
        "$meta.key",
        "{a: 1}",
        "{a, a}",
        "{\"a\": .a}",
        "{a: .b | .c}",
        ".n == 2.5",
        ".a == .b",
        ".if",
        "{if}",
        "{(.k): 1}",
        ".a == \"x\" | not",
    ];

    fn both(
        code: &str,
        input: &Value,
    ) -> (Result<Option<Value>, String>, Result<Option<Value>, String>) {
        let t = JqTemplate::compile(code).unwrap();
        let v = json_to_val(input);
        (t.run_vals(&v, &Val::Null), t.run_jaq_only(&v, &Val::Null))
    }

    #[test]
    fn recognises_the_common_shapes_and_nothing_else() {
        for code in SHORT {
            assert!(
                recognise(code, &Tables::default()).is_some(),
                "{code} should have a shortcut"
            );
        }
        for code in JAQ {
            assert!(
                recognise(code, &Tables::default()).is_none(),
                "{code} must go to jaq"
            );
        }
    }

    #[test]
    fn shortcuts_give_what_jaq_gives() {
        let input = json!({"a": {"b": [1, 2], "c": null, "s": "x"}, "n": 2.5, "t": true,
                           "big": 12345678901234567890u64});
        for code in SHORT {
            let (short, jaq) = both(code, &input);
            assert_eq!(short, jaq, "{code}");
        }
        // Through a string: jaq's own error, not the shortcut's.
        let (short, jaq) = both(".a.s.deeper", &input);
        assert!(short.is_err() && short == jaq, "{short:?}");
        let (short, _) = both("{x: .a.s.deeper}", &input);
        assert!(short.is_err(), "{short:?}");
    }

    /// Objects with more than 16 keys take the hashed lookup; keys with escapes and non-ASCII
    /// text must match too.
    #[test]
    fn big_objects_and_escaped_keys_match_jaq() {
        let mut big: serde_json::Map<String, Value> =
            (0..40).map(|i| (format!("k{i}"), json!(i))).collect();
        big.insert("caf\u{e9}".into(), json!("e"));
        big.insert("q\"uote".into(), json!("q"));
        big.insert("n".into(), json!({"k39": true}));
        let input = Value::Object(big);
        for code in [
            ".k0",
            ".k39",
            ".k40",
            ".n.k39",
            "{k7, k38, n}",
            ".k12 == null",
            ".n.k39 == true",
        ] {
            let (short, jaq) = both(code, &input);
            assert!(recognise(code, &Tables::default()).is_some(), "{code}");
            assert_eq!(short, jaq, "{code}");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(Value::from),
            "[abcx]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec(("[abc]", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// On any input, every shortcut's output (or error) is jaq's.
        #[test]
        fn shortcuts_agree_with_jaq_on_any_input(input in json_value()) {
            for code in [".a", ".a.b", ".a.b.c", "{a, b: .c.a}", ".a == \"x\"", ".b.a != null",
                         ".c == true", "."] {
                let (short, jaq) = both(code, &input);
                prop_assert_eq!(short.is_ok(), jaq.is_ok(), "{}", code);
                if short.is_ok() {
                    prop_assert_eq!(short, jaq, "{}", code);
                }
            }
        }
    }
}
