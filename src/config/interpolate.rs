//! `${VAR}` interpolation of the raw config text, before it is parsed.
//!
//! `$${` writes a literal `${`. jq's own `$meta` has no brace, so templates are untouched.
//! Whole-line comments are left as they are, so a comment may mention `${…}`.
//! A missing variable is an error naming the variable and its line; every missing variable is
//! reported, not just the first.

use super::ConfigError;

/// Replaces every `${NAME}` in `text` using `lookup`. Returns the new text (a missing variable
/// becomes empty) and every error found, so parsing can go on and report more.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> (String, Vec<ConfigError>) {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = tail.strip_prefix("${") {
                match after.find('}') {
                    Some(end) => {
                        let name = &after[..end];
                        if name.is_empty()
                            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            errors.push(ConfigError::new(
                                format!("line {}", line_no + 1),
                                format!("${{{name}}} is not a valid environment variable reference; use ${{NAME}} with letters, digits and _ (write $${{ for a literal ${{)"),
                            ));
                        } else {
                            match lookup(name) {
                                Some(value) => out.push_str(&value),
                                None => errors.push(ConfigError::new(
                                    format!("line {}", line_no + 1),
                                    format!("environment variable {name} is not set (referenced as ${{{name}}}); export it or remove the reference"),
                                )),
                            }
                        }
                        rest = &after[end + 1..];
                    }
                    None => {
                        errors.push(ConfigError::new(
                            format!("line {}", line_no + 1),
                            "unclosed ${ (write $${ for a literal ${)",
                        ));
                        out.push_str(tail);
                        rest = "";
                    }
                }
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOST").then(|| "kafka:9092".to_string())
    }

    #[test]
    fn replaces_variables_and_leaves_jq_variables_alone() {
        let (out, errs) = interpolate("a: ${HOST}\nb: '$meta.key'\nc: $${HOST}\n# ${…}\n", env);
        assert!(errs.is_empty());
        assert_eq!(out, "a: kafka:9092\nb: '$meta.key'\nc: ${HOST}\n# ${…}\n");
    }

    #[test]
    fn reports_every_missing_variable_with_its_line() {
        let (_, errs) = interpolate("a: ${NOPE}\nb: ${HOST}\nc: ${ALSO_NOPE}\n", env);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].path, "line 1");
        assert!(errs[0].message.contains("NOPE"));
        assert_eq!(errs[1].path, "line 3");
    }
}
