//! What a template may do, checked when it is compiled: its cost is bounded by its input.
//!
//! jaq has no fuel counter and a thread cannot be killed, so a timer cannot stop `def f: f; f`
//! or `[range(1e9)]` once it runs (on the Kafka consumer thread, or an async worker for NATS:
//! either would stall its source, and an allocation failure aborts the process). Like VRL, the
//! answer is a language that cannot loop: `check` refuses what can run or grow without a bound
//! set by the message itself —
//!
//! - a `def` that calls itself, directly or through other `def`s of the template;
//! - `repeat`, `while`, `until`, `recurse(f)` / `recurse(f; cond)` (plain `recurse` and `..`
//!   walk the input and stay), `combinations`, `input`/`inputs`;
//! - `range` with bounds that are not number literals, or over [`MAX_RANGE`] values;
//! - `*` with neither side a literal (a number up to [`MAX_FACTOR`] or an object): `*` repeats
//!   strings (`"x" * .n`), so two computed operands can build a string of any size.
//!
//! Everything else in jq's standard library stays (paths, `map`, `select`, `reduce`/`foreach`
//! over the input, string and regex functions, `walk`, `paths`, `to_entries`, …). As a backstop
//! for what sharing can still blow up (`[., .]` applied over and over), a template's output is
//! capped at [`MAX_OUTPUT_VALUES`] JSON values; over it the message is dead-lettered with reason
//! `template_budget` and its partition moves on.

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::ops::Math;
use jaq_core::path::Part;
use std::collections::{BTreeMap, BTreeSet};

/// The most values a literal `range` may produce.
pub const MAX_RANGE: f64 = 100_000.0;

/// The largest number literal `*` may multiply by.
pub const MAX_FACTOR: f64 = 1_000_000.0;

/// The most JSON values (scalars, arrays, objects) one template's output may hold.
pub const MAX_OUTPUT_VALUES: usize = 1_000_000;

/// Filters that loop for as long as they are told to, with their arities.
const UNBOUNDED: &[(&str, usize, &str)] = &[
    ("repeat", 0, "repeats for ever"),
    ("repeat", 1, "repeats for ever"),
    ("while", 2, "loops while a condition holds"),
    ("until", 2, "loops until a condition holds"),
    (
        "recurse",
        1,
        "applies its argument for as long as it yields",
    ),
    (
        "recurse",
        2,
        "applies its argument for as long as the condition holds",
    ),
    ("combinations", 0, "grows exponentially"),
    ("combinations", 1, "grows exponentially"),
    ("input", 0, "reads input the bridge does not give"),
    ("inputs", 0, "reads input the bridge does not give"),
];

/// What a template that passed [`check`] reads besides its message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// The lookup tables it calls `lookup(NAME; KEY)` on, by name, sorted.
    pub lookups: Vec<String>,
}

/// Refuses what could run or grow without a bound set by the input; the message says what and
/// what to write instead. Also names the lookup tables the template reads (a `lookup`'s first
/// argument must be a string literal, so `check` can tell an unknown table at start-up).
pub fn check(code: &str) -> Result<Checked, String> {
    // A template that does not parse is reported by the compiler, with its position.
    let Some(term) = jaq_core::load::parse(code, |p| p.term()) else {
        return Ok(Checked::default());
    };
    let mut walk = Walk::default();
    walk.term(&term, None)?;
    walk.recursion()?;
    Ok(Checked {
        lookups: walk.lookups.into_iter().map(str::to_string).collect(),
    })
}

#[derive(Default)]
struct Walk<'s> {
    /// `name/arity` of each `def` → the `def`s its body calls.
    calls: BTreeMap<(&'s str, usize), BTreeSet<(&'s str, usize)>>,
    /// Tables named by `lookup("NAME"; …)`.
    lookups: BTreeSet<&'s str>,
}

impl<'s> Walk<'s> {
    fn term(&mut self, t: &Term<&'s str>, inside: Option<(&'s str, usize)>) -> Result<(), String> {
        match t {
            Term::Id | Term::Recurse | Term::Num(_) | Term::Var(_) | Term::Break(_) => Ok(()),
            Term::Str(_, parts) => {
                for p in parts {
                    if let StrPart::Term(t) = p {
                        self.term(t, inside)?;
                    }
                }
                Ok(())
            }
            Term::Arr(a) => a.as_deref().map_or(Ok(()), |t| self.term(t, inside)),
            Term::Obj(kvs) => {
                for (k, v) in kvs {
                    self.term(k, inside)?;
                    if let Some(v) = v {
                        self.term(v, inside)?;
                    }
                }
                Ok(())
            }
            Term::Neg(t) | Term::Label(_, t) => self.term(t, inside),
            Term::BinOp(l, op, r) => {
                if matches!(
                    op,
                    BinaryOp::Math(Math::Mul) | BinaryOp::UpdateMath(Math::Mul)
                ) && !is_factor(l)
                    && !is_factor(r)
                {
                    return Err("`*` needs a literal on one side (a number up to 1000000, or an object to merge): it also repeats strings, so two computed operands could build a string of any size".into());
                }
                if let BinaryOp::Pipe(Some(p)) = op {
                    self.pattern(p, inside)?;
                }
                self.term(l, inside)?;
                self.term(r, inside)
            }
            Term::Fold(_, xs, p, args) => {
                self.term(xs, inside)?;
                self.pattern(p, inside)?;
                args.iter().try_for_each(|a| self.term(a, inside))
            }
            Term::TryCatch(t, c) => {
                self.term(t, inside)?;
                c.as_deref().map_or(Ok(()), |c| self.term(c, inside))
            }
            Term::IfThenElse(branches, otherwise) => {
                for (cond, then) in branches {
                    self.term(cond, inside)?;
                    self.term(then, inside)?;
                }
                otherwise
                    .as_deref()
                    .map_or(Ok(()), |t| self.term(t, inside))
            }
            Term::Def(defs, body) => {
                for d in defs {
                    let me = (d.name, d.args.len());
                    self.calls.entry(me).or_default();
                    self.term(&d.body, Some(me))?;
                }
                self.term(body, inside)
            }
            Term::Call(name, args) => {
                let arity = args.len();
                if let Some((_, _, why)) =
                    UNBOUNDED.iter().find(|(n, a, _)| n == name && *a == arity)
                {
                    return Err(format!(
                        "`{name}/{arity}` {why}: a template must finish in time bounded by its message (use `limit`, `first`, paths or `.[]` over the input instead)"
                    ));
                }
                if *name == "range" && !args.iter().all(is_literal_number) {
                    return Err("`range` needs number literals as bounds (e.g. `range(0; 10)`): a bound taken from the message could be 1e9".into());
                }
                if *name == "range" {
                    let nums: Vec<f64> = args.iter().filter_map(literal_number).collect();
                    let span = match nums.as_slice() {
                        [n] => *n,
                        [from, upto] => upto - from,
                        [from, upto, by] if *by != 0.0 => (upto - from) / by,
                        _ => 0.0,
                    };
                    if span > MAX_RANGE {
                        return Err(format!(
                            "`range` over {span} values: at most {MAX_RANGE} in a template"
                        ));
                    }
                }
                if *name == "lookup" && arity == 2 {
                    match &args[0] {
                        Term::Str(None, parts) => match &parts[..] {
                            [StrPart::Str(table)] => {
                                self.lookups.insert(table);
                            }
                            _ => return Err("`lookup`'s first argument is the table's name as a plain string literal (`lookup(\"installations\"; .user_id)`)".into()),
                        },
                        _ => return Err("`lookup`'s first argument is the table's name as a string literal (`lookup(\"installations\"; .user_id)`), so an unknown table is found at start-up".into()),
                    }
                }
                if let Some(caller) = inside {
                    self.calls.entry(caller).or_default().insert((name, arity));
                }
                args.iter().try_for_each(|a| self.term(a, inside))
            }
            Term::Path(t, path) => {
                self.term(t, inside)?;
                for (part, _) in &path.0 {
                    match part {
                        Part::Index(i) => self.term(i, inside)?,
                        Part::Range(from, upto) => {
                            if let Some(f) = from {
                                self.term(f, inside)?;
                            }
                            if let Some(u) = upto {
                                self.term(u, inside)?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn pattern(
        &mut self,
        p: &Pattern<&'s str>,
        inside: Option<(&'s str, usize)>,
    ) -> Result<(), String> {
        match p {
            Pattern::Var(_) => Ok(()),
            Pattern::Arr(ps) => ps.iter().try_for_each(|p| self.pattern(p, inside)),
            Pattern::Obj(kvs) => {
                for (k, p) in kvs {
                    self.term(k, inside)?;
                    self.pattern(p, inside)?;
                }
                Ok(())
            }
        }
    }

    /// A `def` that reaches itself through the calls between the template's `def`s.
    fn recursion(&self) -> Result<(), String> {
        for &start in self.calls.keys() {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<(&str, usize)> = self.calls[&start].iter().copied().collect();
            while let Some(f) = todo.pop() {
                if f == start {
                    return Err(format!(
                        "`def {}` calls itself: recursion can run without end; walk the input with paths, `..`, `map` or `reduce` instead",
                        start.0
                    ));
                }
                if seen.insert(f) {
                    if let Some(next) = self.calls.get(&f) {
                        todo.extend(next.iter().copied());
                    }
                }
            }
        }
        Ok(())
    }
}

fn literal_number(t: &Term<&str>) -> Option<f64> {
    match t {
        Term::Num(n) => n.parse().ok(),
        Term::Neg(t) => literal_number(t).map(|n| -n),
        _ => None,
    }
}

fn is_literal_number(t: &Term<&str>) -> bool {
    literal_number(t).is_some()
}

/// A side of `*` that cannot repeat a string past a known size.
fn is_factor(t: &Term<&str>) -> bool {
    match t {
        Term::Obj(_) => true,
        _ => literal_number(t).is_some_and(|n| n.abs() <= MAX_FACTOR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_can_run_without_end_is_refused_and_says_why() {
        for (code, says) in [
            ("def f: f; f", "calls itself"),
            ("def f: g; def g: f; f", "calls itself"),
            ("{items: [range(.count)]}", "number literals"),
            ("[range(0; 1e9)]", "at most"),
            ("[limit(5; repeat(1))]", "repeat/1"),
            ("[1 | while(. < 10; . + 1)]", "while/2"),
            ("[1 | until(. > 10; . + 1)]", "until/2"),
            ("[recurse(. + 1)]", "recurse/1"),
            ("[.a | combinations]", "combinations/0"),
            (r#""x" * .n"#, "`*` needs a literal"),
            (".a * .b", "`*` needs a literal"),
            (r#""x" * 1e9"#, "`*` needs a literal"),
            ("{a: input}", "input/0"),
        ] {
            let err = check(code)
                .err()
                .unwrap_or_else(|| panic!("{code:?} was allowed"));
            assert!(err.contains(says), "{code:?}: {err}");
        }
    }

    #[test]
    fn templates_bounded_by_their_input_are_allowed() {
        for code in [
            ".user.id",
            "{id, n: (.items | length)}",
            "[.items[] | select(.ok) | .id]",
            ".price * 100",
            "100 * .price",
            ". * {extra: 1}",
            "[range(5)]",
            "[range(0; 10; 2)]",
            "reduce .items[] as $i (0; . + $i.n)",
            "[.. | numbers]",
            "[recurse | strings]",
            "walk(if type == \"string\" then ascii_downcase else . end)",
            "def twice(f): f | f; .n | twice(. + 1)",
            "def a: .x; def b: a + 1; b",
            "[limit(3; .[])]",
            r#""\(.a) and \(.b)""#,
            "if .x then .y else .z end",
            "try .a catch \"none\"",
        ] {
            check(code).unwrap_or_else(|e| panic!("{code:?} was refused: {e}"));
        }
    }
}
