//! Config text to [`ConfigFile`]: YAML parsed into a document (syntax errors and duplicate keys
//! with their line), `${VAR}` interpolated into its string scalars, then serde with the path of
//! every error. What serde cannot check (references between sections, secrets, templates) is
//! the next step's: `crate::build`.

use super::{interpolate, ConfigError, ConfigFile};

/// Parses and interpolates config text. Missing variables are collected and parsing goes on,
/// so the caller gets every error at once: `Ok` carries the ones found so far (possibly none).
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(ConfigFile, Vec<ConfigError>), Vec<ConfigError>> {
    // Duplicate keys are refused here (`duplicate entry with key "tasks" at line …`): with a
    // struct, the last one would silently win.
    let mut doc: yaml_serde::Value = match yaml_serde::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.to_string();
            let message = duplicate_key_lines(text, &message).unwrap_or(message);
            let hint = if text.contains("${") && !message.contains("duplicate") {
                " (a ${VAR} inside { … } or [ … ] must be quoted: \"${VAR}\")"
            } else {
                ""
            };
            return Err(vec![ConfigError::new(
                "",
                format!("{}{hint}", without_values(&message)),
            )]);
        }
    };
    // A missing variable is reported, then parsing goes on so later errors show up too.
    let mut errors = interpolate::interpolate(&mut doc, env);
    let parsed: ConfigFile = match serde_path_to_error::deserialize(doc) {
        Ok(c) => c,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let mut message = e.into_inner().to_string();
            // yaml_serde prefixes its message with (part of) the path; keep the path once.
            if let Some((head, rest)) = message.split_once(": ") {
                if !head.is_empty() && path.starts_with(head) {
                    message = rest.to_string();
                }
            }
            if let Some(at) = location_of(text, &path) {
                message.push_str(&at);
            }
            errors.push(ConfigError::new(path, without_values(&message)));
            return Err(errors);
        }
    };
    Ok((parsed, errors))
}

/// ` at line L column C` for an error at `path`: the document lost its positions, so read
/// the raw text once more (only on error) and take the position if it fails at the same path
/// (it may fail earlier, on a `${VAR}` not yet replaced: then no position).
fn location_of(text: &str, path: &str) -> Option<String> {
    let de = yaml_serde::Deserializer::from_str(text);
    let e = serde_path_to_error::deserialize::<_, ConfigFile>(de).err()?;
    let raw_path = e.path().to_string();
    let raw_path = if raw_path == "." {
        String::new()
    } else {
        raw_path
    };
    if raw_path != path {
        return None;
    }
    let message = e.into_inner().to_string();
    let at = message.rfind(" at line ")?;
    Some(message[at..].to_string())
}

/// yaml's `duplicate entry with key "K" at line L column C` names the first occurrence; find
/// the second (the next line with `K:` at the same column) and say both.
fn duplicate_key_lines(text: &str, message: &str) -> Option<String> {
    let rest = message.split_once("duplicate entry with key \"")?.1;
    let (key, rest) = rest.split_once('"')?;
    let rest = rest.split_once("at line ")?.1;
    let (line, rest) = rest.split_once(" column ")?;
    let line: usize = line.trim().parse().ok()?;
    let column: usize = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    let prefix = message.split_once("duplicate entry")?.0;
    let indent = column.checked_sub(1)?;
    let second = text.lines().enumerate().skip(line).find_map(|(i, l)| {
        let body = l.get(indent..)?;
        let same_indent = l[..indent].chars().all(|c| c == ' ' || c == '-');
        let named = body
            .strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with(':'));
        (same_indent && named).then_some(i + 1)
    });
    Some(match second {
        Some(second) => format!(
            "{prefix}duplicate key \"{key}\" at line {line} and line {second}; keep one (YAML would silently use the last)"
        ),
        None => format!("{prefix}duplicate key \"{key}\" (first at line {line}); keep one"),
    })
}

/// serde's message without the offending string value (`invalid type: string "whs_…",
/// expected …` → `invalid type: a string, expected …`): the value may be a secret, pasted
/// inline or through `${VAR}`. The path and the expected type say what to fix.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let quoted = &rest[at + "string \"".len()..];
        // The value is Debug-quoted: skip to its closing quote, past escaped ones.
        let mut escaped = false;
        let mut end = quoted.len();
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &quoted[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_in_the_wrong_place_is_not_echoed_in_the_error() {
        let yaml = "orceum: { base_url: \"http://127.0.0.1:1/v1\" }\napps:\n  t: { app_id: a, secret: whs_inline_secret }\nsources: {}\nroutes: []\n";
        let Err(errs) = parse(yaml, &|_| None) else {
            panic!("an inline secret was accepted")
        };
        let text: String = errs.iter().map(|e| e.to_string()).collect();
        assert!(!text.contains("whs_inline_secret"), "{text}");
        assert!(text.contains("apps.t.secret"), "{text}");
        // Through ${VAR} too, and with quotes and escapes inside the value.
        let yaml = "orceum: { base_url: \"http://127.0.0.1:1/v1\" }\napps:\n  t: { app_id: a, secret: \"${S}\" }\nsources: {}\nroutes: []\n";
        let Err(errs) = parse(yaml, &|_| Some(r#"whs_q\"uo\te"#.to_string())) else {
            panic!("a secret through an interpolated variable was accepted")
        };
        let text: String = errs.iter().map(|e| e.to_string()).collect();
        assert!(!text.contains("whs_q"), "{text}");
        // A duplicate key is an error with its line, not "the last one wins".
        let yaml = "orceum: { base_url: \"http://127.0.0.1:1/v1\" }\napps:\n  t: { app_id: a, secret: { env: S } }\n  t: { app_id: b, secret: { env: S } }\nsources: {}\nroutes: []\n";
        let Err(errs) = parse(yaml, &|_| None) else {
            panic!("a duplicate key was accepted")
        };
        let text: String = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.contains("duplicate") && text.contains("line 4"),
            "{text}"
        );
        assert_eq!(
            without_values(r#"invalid type: string "a\"b", expected a map at line 3"#),
            "invalid type: a string, expected a map at line 3"
        );
    }
}
