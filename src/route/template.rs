//! One jq expression, compiled once at start-up and run per message.
//!
//! Built on jaq (jaq-core + jaq-std + jaq-json). The message JSON is the input, `$meta` is the
//! message's coordinates. A filter is pure and synchronous: jaq's values are not `Send`, so they
//! never live across an `.await` — the message is parsed into jaq values, run through every
//! expression of its route, and only `serde_json::Value`s come out.
//!
//! Literals (`"task.completed"`) are computed by jaq once, at compile time; paths, objects of
//! paths and comparisons with a literal take a [`Shortcut`]; the rest runs in jaq. A compiled
//! jaq filter carries its own copy of the standard library (~100 KB), so a template that does
//! not need jaq drops it after compiling (which checks it) and compiles it again only if a
//! shortcut ever declines (measured: 100 routes held ~60 MB of filters; docs/performance.md).

use super::shortcut::{self, Shortcut};
use crate::lookup::table::Found;
use crate::lookup::Tables;
use jaq_core::data::{DataT, HasLut};
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::native::{bome, v, Fun};
use jaq_core::{compile, Compiler, Ctx, Cv, Native, ValXs, Vars};
use jaq_json::{Num, Val};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::OnceLock;

/// What templates run on: jaq's JSON values, with the lookup tables beside the filter.
pub struct Data;

impl DataT for Data {
    type V<'a> = Val;
    type Data<'a> = Env<'a>;
}

/// A run's global data: the compiled filter's table of definitions, and the lookup tables
/// `lookup(NAME; KEY)` reads.
#[derive(Clone)]
pub struct Env<'a> {
    lut: &'a jaq_core::Lut<Data>,
    tables: &'a Tables,
}

impl<'a> HasLut<'a, Data> for Env<'a> {
    fn lut(&self) -> &'a jaq_core::Lut<Data> {
        self.lut
    }
}

/// A lookup key as the table holds keys: a string as it is, a number or boolean as its JSON
/// text (`42` finds the key `"42"`); `Ok(None)` for null (no key: the answer is null).
pub(crate) fn key_text(key: &Val) -> Result<Option<Cow<'_, str>>, String> {
    match key {
        Val::Null => Ok(None),
        Val::TStr(b) | Val::BStr(b) => Ok(Some(String::from_utf8_lossy(b))),
        Val::Num(_) | Val::Bool(_) => Ok(Some(Cow::Owned(key.to_string()))),
        Val::Arr(_) => Err("lookup: the key is an array; a key is a string or a number".into()),
        Val::Obj(_) => Err("lookup: the key is an object; a key is a string or a number".into()),
    }
}

/// The value `found`, as jaq's.
pub(crate) fn found_val(found: Option<Found<'_>>) -> Val {
    match found {
        None => Val::Null,
        Some(Found::Text(s)) => Val::from(s.to_string()),
        Some(Found::Json(s)) => parse_val(s.as_bytes()).unwrap_or(Val::Null),
    }
}

/// Global data that holds the lookup tables.
pub trait HasTables<'a> {
    fn tables(&self) -> &'a Tables;
}

impl<'a> HasTables<'a> for Env<'a> {
    fn tables(&self) -> &'a Tables {
        self.tables
    }
}

/// `lookup($name; $key)`: the table's value for the key, or null. Generic over the data kind
/// as jaq's own natives are (a concrete `Data` here does not coerce to jaq's `RunPtr`).
fn run_lookup<'a, D>(mut cv: Cv<'a, D>) -> ValXs<'a, Val>
where
    D: for<'b> DataT<V<'b> = Val>,
    D::Data<'a>: HasTables<'a>,
{
    let key = cv.0.pop_var();
    let name = cv.0.pop_var();
    let tables = cv.0.data().tables();
    let answer = (|| {
        let name = match &name {
            Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b),
            _ => return Err("lookup: the table name is not a string".to_string()),
        };
        let Some(lookup) = tables.get(&name) else {
            return Err(format!("lookup: no table {name:?}"));
        };
        Ok(match key_text(&key)? {
            None => Val::Null,
            Some(k) => lookup.table.with(&k, found_val),
        })
    })();
    bome(answer.map_err(jaq_core::Error::str))
}

fn lookup_fun<D>() -> Fun<D>
where
    D: for<'b> DataT<V<'b> = Val>,
    for<'a> D::Data<'a>: HasTables<'a>,
{
    ("lookup", v(2), Native::new(|cv| run_lookup(cv)))
}

/// What a config gives its templates besides their code.
#[derive(Clone, Debug, Default)]
pub struct Surroundings {
    /// `vars:`, read as `$vars`.
    pub vars: Option<std::sync::Arc<Value>>,
    /// `observability.log_payloads`: a failing expression's error keeps the values it names
    /// (message data, in dead-letter reasons and logs). Off by default.
    pub values_in_errors: bool,
    /// `lookups:`, read with `lookup(NAME; KEY)`.
    pub lookups: Tables,
}

/// A compiled jq expression with the global variable `$meta`.
pub struct JqTemplate {
    source: String,
    /// The config's `vars:`, as `$vars` (only kept when the expression reads it).
    vars: Option<std::sync::Arc<Value>>,
    /// `observability.log_payloads`: errors keep the values jaq names.
    values_in_errors: bool,
    /// The lookup tables (only kept when the expression calls `lookup`).
    tables: Tables,
    /// The names of the tables it reads.
    lookups: Vec<String>,
    /// Kept from the start for `Shape::Jq`; compiled on first need for the others.
    filter: OnceLock<Result<jaq_core::Filter<Data>, String>>,
    shape: Shape,
}

/// How a template is run: by jaq, or without it where that gives the same output.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// A literal: the same output for every message.
    Literal(Value),
    Short(Shortcut),
    Jq,
}

impl std::fmt::Debug for JqTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JqTemplate({:?})", self.source)
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<JqTemplate>();
};

impl JqTemplate {
    /// Parses and compiles `code`; the error names the position and what was expected.
    pub fn compile(code: &str) -> Result<Self, String> {
        Self::compile_in(code, &Surroundings::default())
    }

    /// [`JqTemplate::compile`] in a config's surroundings: its `vars:` as `$vars` (`{}`
    /// without them), and whether errors may show values (`observability.log_payloads`).
    pub fn compile_in(code: &str, around: &Surroundings) -> Result<Self, String> {
        let filter = compile_filter(code)?;
        let checked = super::budget::check(code)?;
        for name in &checked.lookups {
            if around.lookups.get(name).is_none() {
                return Err(format!(
                    "lookup({name:?}; …): no such table; lookups: {}",
                    around.lookups.names()
                ));
            }
        }
        let mut template = Self {
            source: code.to_string(),
            vars: around.vars.clone().filter(|_| code.contains("$vars")),
            values_in_errors: around.values_in_errors,
            tables: if checked.lookups.is_empty() {
                Tables::default()
            } else {
                around.lookups.clone()
            },
            lookups: checked.lookups,
            filter: OnceLock::from(Ok(filter)),
            shape: Shape::Jq,
        };
        template.shape = template.shape_of(code);
        if template.shape != Shape::Jq {
            template.filter = OnceLock::new();
        }
        Ok(template)
    }

    fn shape_of(&self, code: &str) -> Shape {
        if let Some(short) = shortcut::recognise(code, &self.tables) {
            return Shape::Short(short);
        }
        // A JSON string, boolean, null or integer is a jq literal with the same meaning; its
        // output is taken from jaq itself, so numbers print exactly as jaq prints them.
        let literal = serde_json::from_str::<Value>(code).is_ok_and(|v| match v {
            Value::String(_) | Value::Bool(_) | Value::Null => true,
            Value::Number(n) => n.is_i64() || n.is_u64(),
            _ => false,
        });
        if literal {
            if let Ok(Some(v)) = self.run_jaq(Val::Null, Val::Null) {
                return Shape::Literal(v);
            }
        }
        Shape::Jq
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The lookup tables the expression reads, by name.
    pub fn lookups(&self) -> &[String] {
        &self.lookups
    }

    /// Runs the expression; the first output is the result (`None` if it yields nothing).
    pub fn run(&self, input: &Value, meta: &Value) -> Result<Option<Value>, String> {
        self.run_vals(&json_to_val(input), &json_to_val(meta))
    }

    /// Runs on jaq values, so every template of a route shares one parse of the message.
    pub fn run_vals(&self, input: &Val, meta: &Val) -> Result<Option<Value>, String> {
        match &self.shape {
            Shape::Literal(v) => return Ok(Some(v.clone())),
            Shape::Short(short) => {
                if let Some(v) = short.eval(input) {
                    return Ok(Some(v));
                }
            }
            Shape::Jq => {}
        }
        self.run_jaq(input.clone(), meta.clone())
    }

    /// The same, always through jaq (tests compare the shortcuts with it).
    #[cfg(test)]
    pub(crate) fn run_jaq_only(&self, input: &Val, meta: &Val) -> Result<Option<Value>, String> {
        self.run_jaq(input.clone(), meta.clone())
    }

    fn run_jaq(&self, input: Val, meta: Val) -> Result<Option<Value>, String> {
        let filter = self
            .filter
            .get_or_init(|| compile_filter(&self.source))
            .as_ref()
            .map_err(Clone::clone)?;
        let vars = match &self.vars {
            Some(v) => json_to_val(v),
            None => Val::obj(Default::default()),
        };
        let env = Env {
            lut: &filter.lut,
            tables: &self.tables,
        };
        let ctx = Ctx::<Data>::new(env, Vars::new([meta, vars]));
        let mut outputs = filter.id.run((ctx, input));
        match outputs.next() {
            None => Ok(None),
            Some(Ok(v)) => {
                let mut left = super::budget::MAX_OUTPUT_VALUES;
                bounded_json(&v, &mut left).map(Some).ok_or_else(|| {
                    format!(
                        "{OVER_BUDGET}the output has more than {} values",
                        super::budget::MAX_OUTPUT_VALUES
                    )
                })
            }
            // Not `jaq_core::unwrap_valr`: it exits the process on `halt`.
            Some(Err(exn)) => match exn.get_err() {
                Ok(err) if self.values_in_errors => Err(err.to_string()),
                Ok(err) => Err(without_payload(&err.to_string())),
                Err(exn) => match exn.get_halt() {
                    Ok(code) => Err(format!("the expression called halt (exit code {code})")),
                    Err(exn) => Err(format!("the expression failed: {exn:?}")),
                },
            },
        }
    }
}

/// The longest text of a jq error kept as written (a template's own `error("…")` message).
const MAX_ERROR_TEXT: usize = 160;

/// A jq error without the message data in it: jaq writes the values it failed on into its
/// messages (`cannot index {…the whole input…} with "user"`), which would put payloads (48 KB
/// of them, seen) into dead-letter reasons and ERROR logs. Values become their JSON type; an
/// index key or a type name short enough to be the template's own is kept; anything else is
/// cut to [`MAX_ERROR_TEXT`].
fn without_payload(message: &str) -> String {
    fn kind(v: &str) -> &'static str {
        match v.trim_start().chars().next() {
            Some('{') => "an object",
            Some('[') => "an array",
            Some('"') => "a string",
            Some('t' | 'f') => "a boolean",
            Some('n') => "null",
            Some(_) => "a number",
            None => "a value",
        }
    }
    let short = |v: &str| v.len() <= 40 && !v.contains(['{', '[']);
    if let Some(rest) = message.strip_prefix("cannot index ") {
        if let Some((value, key)) = rest.rsplit_once(" with ") {
            let key = if short(key) { key } else { kind(key) };
            return format!("cannot index {} with {key}", kind(value));
        }
    }
    if let Some(rest) = message.strip_prefix("cannot use ") {
        if let Some((value, typ)) = rest.rsplit_once(" as ") {
            let typ = if short(typ) { typ } else { "that" };
            return format!("cannot use {} as {typ}", kind(value));
        }
    }
    if let Some(rest) = message.strip_prefix("cannot calculate ") {
        for op in [" + ", " - ", " * ", " / ", " % "] {
            if let Some((l, r)) = rest.split_once(op) {
                return format!("cannot calculate {}{op}{}", kind(l), kind(r));
            }
        }
    }
    if message.starts_with("invalid path expression") {
        return "invalid path expression".to_string();
    }
    if message.len() <= MAX_ERROR_TEXT {
        return message.to_string();
    }
    // A long `error(…)` value, or a message we do not know: its start, bounded.
    let mut end = MAX_ERROR_TEXT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &message[..end], message.len())
}

/// Natives a template never gets: `env` reads the process environment (every app's secret is
/// in it), `debug_empty` / `stderr_empty` write the value (message data) to the logs.
const WITHHELD: &[&str] = &["env", "debug_empty", "stderr_empty"];

/// What the standard library's `debug`, `stderr` and `halt_error` build on, without the
/// side effect: they pass their input through and log nothing.
const QUIET: &str = "def debug_empty: empty; def stderr_empty: empty;";

fn compile_filter(code: &str) -> Result<jaq_core::Filter<Data>, String> {
    // A constant that parses; `unwrap_or_default` only to keep a fallible path out.
    let quiet = load::parse(QUIET, |p| p.defs()).unwrap_or_default();
    let defs = jaq_core::defs()
        .chain(quiet)
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|f| !WITHHELD.contains(&f.0))
        .chain([lookup_fun()]);
    let arena = Arena::default();
    let loader = Loader::new(defs);
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errs| load_errors(code, errs))?;
    Compiler::default()
        .with_funs(funs)
        .with_global_vars(["$meta", "$vars"])
        .compile(modules)
        .map_err(|errs| compile_errors(code, errs))
}

/// Parses strict JSON (serde_json's grammar) straight into jaq's values.
pub fn parse_val(bytes: &[u8]) -> Result<Val, serde_json::Error> {
    serde_json::from_slice(bytes)
}

pub fn json_to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Num(Num::from_integral(i))
            } else if let Some(u) = n.as_u64() {
                Val::Num(Num::from_integral(u))
            } else {
                Val::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Val::from(s.clone()),
        Value::Array(a) => a.iter().map(json_to_val).collect(),
        Value::Object(o) => Val::obj(
            o.iter()
                .map(|(k, v)| (Val::from(k.clone()), json_to_val(v)))
                .collect(),
        ),
    }
}

/// How a template error over the budget starts (its dead-letter reason is `template_budget`).
pub const OVER_BUDGET: &str = "over the template budget: ";

/// [`val_to_json`], counting values down from `left`; `None` past zero. jaq shares values, so
/// a small template can describe a huge output (`[., .]` applied 40 times): it is never
/// materialised past the budget.
fn bounded_json(v: &Val, left: &mut usize) -> Option<Value> {
    *left = left.checked_sub(1)?;
    Some(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(
            a.iter()
                .map(|x| bounded_json(x, left))
                .collect::<Option<_>>()?,
        ),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let k = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    Some((k, bounded_json(x, left)?))
                })
                .collect::<Option<_>>()?,
        ),
    })
}

/// A jaq value as JSON, whole (values the bridge built itself; template outputs go through
/// [`bounded_json`]).
pub(crate) fn val_to_json(v: &Val) -> Value {
    bounded_json(v, &mut usize::MAX.clone()).unwrap_or(Value::Null)
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        // A whole float prints as an integer, as jq does (`250000 / 100` is `2500`).
        Num::Float(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
            Value::from(*f as i64)
        }
        // NaN and ±Infinity have no JSON form: null, as jq prints them.
        Num::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        other => {
            let s = other.to_string();
            serde_json::from_str::<Value>(&s)
                .ok()
                .filter(Value::is_number)
                .or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                })
                .unwrap_or(Value::Null)
        }
    }
}

/// jaq's errors carry slices of the source; their offset gives line and column.
fn position(code: &str, part: &str) -> String {
    let start = code.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    if p < start || p > start + code.len() {
        return String::new();
    }
    let off = p - start;
    let before = &code[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = code[line_start..off].chars().count() + 1;
    format!(" (line {line}, column {col})")
}

fn found(part: &str) -> String {
    if part.is_empty() {
        "end of input".to_string()
    } else {
        format!("{:?}", part.chars().take(20).collect::<String>())
    }
}

fn syntax_error(code: &str, expected: &str, at: &str) -> String {
    format!(
        "jq syntax error: expected {expected}, found {}{}",
        found(at),
        position(code, at)
    )
}

fn load_errors(code: &str, errs: load::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
    for (_file, err) in errs {
        match err {
            load::Error::Io(es) => {
                for (path, msg) in es {
                    msgs.push(format!("cannot load module {path:?}: {msg}"))
                }
            }
            load::Error::Lex(es) => {
                for (expect, at) in es {
                    msgs.push(syntax_error(code, expect.as_str(), at))
                }
            }
            load::Error::Parse(es) => {
                for (expect, at) in es {
                    msgs.push(syntax_error(code, expect.as_str(), at))
                }
            }
        }
    }
    msgs.join("; ")
}

fn compile_errors(code: &str, errs: compile::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
    for (_file, es) in errs {
        for (name, undef) in es {
            let what = match undef {
                compile::Undefined::Filter(arity) => format!("function {name}/{arity}"),
                other => format!("{} {name}", other.as_str()),
            };
            let hint = if name.starts_with('$') {
                " (only $meta is defined)"
            } else {
                ""
            };
            msgs.push(format!(
                "jq error: undefined {what}{}{hint}",
                position(code, name)
            ));
        }
    }
    msgs.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_output_over_the_budget_is_an_error_not_a_materialised_value() {
        // 2^25 = 33 million values through sharing, from a 10-byte input.
        let code = format!("{}.", "[., .] | ".repeat(25));
        let t = JqTemplate::compile(&code).unwrap();
        let err = t.run(&json!(1), &json!({})).unwrap_err();
        assert!(err.starts_with(OVER_BUDGET), "{err}");
        // Just under it is fine.
        let t = JqTemplate::compile(&format!("{}.", "[., .] | ".repeat(10))).unwrap();
        assert!(t.run(&json!(1), &json!({})).unwrap().is_some());
    }

    #[test]
    fn errors_name_the_types_not_the_values() {
        let secretish = json!({"user": {"ssn": "123-45-6789", "card": "4111111111111111"}});
        let fails = |code: &str, input: &Value| {
            JqTemplate::compile(code)
                .unwrap()
                .run_jaq_only(&json_to_val(input), &Val::Null)
                .err()
                .unwrap_or_else(|| panic!("{code} did not fail"))
        };
        let e = fails(".user.ssn.x", &secretish);
        assert_eq!(e, "cannot index a string with \"x\"");
        let e = fails(".user | .[]  | .[0]", &secretish);
        assert_eq!(e, "cannot index a string with 0");
        let e = fails("[.user] | .x", &secretish);
        assert!(e.starts_with("cannot index an array with"), "{e}");
        assert!(!e.contains("4111"), "{e}");
        let e = fails(".user + 1", &secretish);
        assert_eq!(e, "cannot calculate an object + a number");
        let e = fails(".user | tonumber", &secretish);
        assert!(!e.contains("123-45"), "{e}");
        // A template's own message is kept when short, cut when long.
        assert_eq!(fails(r#"error("no user")"#, &json!({})), "\"no user\"");
        let big = json!({"blob": "x".repeat(50_000)});
        let e = fails("error(.blob)", &big);
        assert!(e.len() < 200, "{} bytes", e.len());
        // observability.log_payloads: true keeps jaq's own message, values included.
        let around = Surroundings {
            values_in_errors: true,
            ..Surroundings::default()
        };
        let e = JqTemplate::compile_in(".user + 1", &around)
            .unwrap()
            .run(&secretish, &json!({}))
            .unwrap_err();
        assert!(e.contains("123-45-6789"), "{e}");
    }

    #[test]
    fn vars_are_read_as_dollar_vars_and_default_to_an_empty_object() {
        let vars = std::sync::Arc::new(json!({"team": "ops", "levels": {"gold": "high"}}));
        let around = Surroundings {
            vars: Some(vars),
            ..Surroundings::default()
        };
        let t =
            JqTemplate::compile_in("{team: $vars.team, p: $vars.levels[.tier]}", &around).unwrap();
        assert_eq!(
            t.run(&json!({"tier": "gold"}), &json!({})).unwrap(),
            Some(json!({"team": "ops", "p": "high"}))
        );
        let t = JqTemplate::compile("$vars").unwrap();
        assert_eq!(t.run(&json!({}), &json!({})).unwrap(), Some(json!({})));
    }

    fn with_tables() -> Surroundings {
        use crate::lookup::table::{Bounds, Stored};
        use crate::lookup::Lookup;
        let bounds = Bounds {
            max_entries: 10,
            max_bytes: 1000,
        };
        let inst = Lookup::new(
            "inst",
            crate::config::LookupSource::File("t.json".into()),
            bounds,
        );
        for (k, v) in [
            ("u1", Stored::Text("i-1".into())),
            ("u2", Stored::Json("{\"x\":1}".into())),
            ("42", Stored::Text("i-42".into())),
            ("t", Stored::Json("true".into())),
            ("f", Stored::Json("{\"n\":2.0,\"m\":[1.50]}".into())),
        ] {
            inst.table.put(k, &v).unwrap();
        }
        let tables = [("inst".to_string(), std::sync::Arc::new(inst))];
        Surroundings {
            lookups: Tables::new(tables.into_iter().collect()),
            ..Surroundings::default()
        }
    }

    #[test]
    fn lookup_answers_the_value_or_null_the_same_with_and_without_jaq() {
        let around = with_tables();
        let inputs = [
            json!({"user": "u1"}),
            json!({"user": "u2"}),
            json!({"user": "nobody"}),
            json!({"user": 42}),
            json!({"user": "t"}),
            json!({"user": "f"}),
            json!({}),
            json!({"user": null}),
            json!({"user": [1]}),
            json!({"user": {"a": 1}}),
            json!("text"),
        ];
        for (code, short) in [
            (r#"lookup("inst"; .user)"#, true),
            (r#"lookup( "inst" ; .user )"#, true),
            (r#"lookup("inst"; .user) != null"#, true),
            (r#"lookup("inst"; .user) == "i-1""#, true),
            (r#"lookup("inst"; .user) == true"#, true),
            (r#"lookup("inst"; .user) == null"#, true),
            (r#"{id: lookup("inst"; .user)}"#, false),
            (r#".user | lookup("inst"; .)"#, false),
        ] {
            let t = JqTemplate::compile_in(code, &around).unwrap();
            assert_eq!(matches!(t.shape, Shape::Short(_)), short, "{code}");
            assert_eq!(t.lookups(), ["inst".to_string()], "{code}");
            for input in &inputs {
                let v = json_to_val(input);
                let fast = t.run_vals(&v, &Val::Null);
                let jaq = t.run_jaq_only(&v, &Val::Null);
                assert_eq!(fast, jaq, "{code} on {input}");
            }
        }
        let t = JqTemplate::compile_in(r#"lookup("inst"; .user)"#, &around).unwrap();
        let run = |input: Value| t.run(&input, &json!({}));
        assert_eq!(run(json!({"user": "u1"})), Ok(Some(json!("i-1"))));
        assert_eq!(run(json!({"user": "u2"})), Ok(Some(json!({"x": 1}))));
        assert_eq!(run(json!({"user": 42})), Ok(Some(json!("i-42"))));
        assert_eq!(run(json!({"user": "nobody"})), Ok(Some(Value::Null)));
        let e = run(json!({"user": [1]})).unwrap_err();
        assert!(e.contains("array"), "{e}");
    }

    #[test]
    fn an_unknown_table_or_a_computed_name_is_refused_when_compiled() {
        let around = with_tables();
        let e = JqTemplate::compile_in(r#"lookup("instalations"; .user)"#, &around).unwrap_err();
        assert!(e.contains("\"instalations\"") && e.contains("inst"), "{e}");
        let e = JqTemplate::compile_in(r#"lookup(.table; .user)"#, &around).unwrap_err();
        assert!(e.contains("string literal"), "{e}");
        let e = JqTemplate::compile(r#"lookup("inst"; .user)"#).unwrap_err();
        assert!(e.contains("lookups:"), "{e}");
        // A template without lookups keeps no tables.
        let t = JqTemplate::compile_in(".user", &around).unwrap();
        assert!(t.tables.is_empty() && t.lookups().is_empty());
    }

    #[test]
    fn a_template_cannot_read_the_environment_or_write_to_the_logs() {
        for code in ["env", "env.SECRET_A", "{s: env}", "$ENV"] {
            let err = JqTemplate::compile(code)
                .err()
                .unwrap_or_else(|| panic!("{code:?} compiled"));
            assert!(err.contains("undefined"), "{code:?}: {err}");
        }
        // debug and stderr still work as identities, and log nothing.
        let t = JqTemplate::compile("{a: (.a | debug), b: (.b | stderr), c: (.c | debug(\"m\"))}")
            .unwrap();
        assert_eq!(
            t.run(&json!({"a": 1, "b": 2, "c": 3}), &json!({})).unwrap(),
            Some(json!({"a": 1, "b": 2, "c": 3}))
        );
    }

    #[test]
    fn runs_with_meta_and_std_functions() {
        let t = JqTemplate::compile("{id, k: $meta.key, up: (.t | ascii_upcase)}").unwrap();
        let out = t
            .run(&json!({"id": 1, "t": "ab"}), &json!({"key": "x"}))
            .unwrap()
            .unwrap();
        assert_eq!(out, json!({"id": 1, "k": "x", "up": "AB"}));
    }

    #[test]
    fn literals_are_computed_once_by_jaq() {
        for (code, want) in [
            ("\"task.done\"", json!("task.done")),
            ("true", json!(true)),
            ("null", json!(null)),
            ("42", json!(42)),
            ("\"caf\\u00e9\"", json!("café")),
        ] {
            let t = JqTemplate::compile(code).unwrap();
            assert_eq!(t.shape, Shape::Literal(want.clone()), "{code}");
            assert_eq!(t.run(&json!({"a": 1}), &Value::Null).unwrap(), Some(want));
        }
        assert_eq!(JqTemplate::compile("1.5").unwrap().shape, Shape::Jq);
    }

    /// Only templates that need jaq keep a compiled filter; the others compile it on demand,
    /// when a shortcut declines, and then answer exactly as jaq does.
    #[test]
    fn filters_are_kept_only_where_jaq_runs() {
        assert!(JqTemplate::compile("{a: (.b | length)}")
            .unwrap()
            .filter
            .get()
            .is_some());
        let path = JqTemplate::compile(".a.b").unwrap();
        assert!(path.filter.get().is_none());
        assert_eq!(
            path.run(&json!({"a": {"b": 1}}), &Value::Null),
            Ok(Some(json!(1)))
        );
        assert!(path.filter.get().is_none(), "a lookup needs no filter");
        let err = path.run(&json!({"a": "text"}), &Value::Null).unwrap_err();
        assert!(err.contains("b"), "jaq's own error: {err}");
        assert!(
            path.filter.get().is_some(),
            "compiled when the shortcut declined"
        );
    }

    #[test]
    fn parses_strict_json_into_jaq_values() {
        let v = parse_val(br#"{"a": [1, 2.5, "x", null, true]}"#).unwrap();
        assert_eq!(val_to_json(&v), json!({"a": [1, 2.5, "x", null, true]}));
        // jq's reader accepts these; a message must be JSON.
        assert!(parse_val(b"NaN").is_err());
        assert!(parse_val(b"{\"a\": 1} # comment").is_err());
    }

    #[test]
    fn whole_numbers_print_like_jq() {
        let t = JqTemplate::compile("[250000 / 100, 1 / 4]").unwrap();
        assert_eq!(
            t.run(&Value::Null, &Value::Null).unwrap().unwrap(),
            json!([2500, 0.25])
        );
    }

    #[test]
    fn syntax_and_name_errors_say_where() {
        let e = JqTemplate::compile("{a: ").unwrap_err();
        assert!(e.contains("syntax error") && e.contains("column 5"), "{e}");
        let e = JqTemplate::compile(".x | $nope").unwrap_err();
        assert!(e.contains("$nope") && e.contains("only $meta"), "{e}");
    }

    #[test]
    fn runtime_errors_and_halt_are_values_not_exits() {
        let t = JqTemplate::compile(".a + 1").unwrap();
        assert!(t.run(&json!({"a": "x"}), &Value::Null).is_err());
        let t = JqTemplate::compile("halt_error").unwrap();
        assert!(t.run(&json!("bye"), &Value::Null).is_err());
        let t = JqTemplate::compile("empty").unwrap();
        assert_eq!(t.run(&json!(1), &Value::Null).unwrap(), None);
    }
}
