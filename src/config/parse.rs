//! Config text to [`ConfigFile`]: `${VAR}` interpolation, then serde with the path of every
//! error. What serde cannot check (references between sections, secrets, templates) is the
//! next step's: `crate::build`.

use super::{interpolate, ConfigError, ConfigFile};

/// Interpolates and parses config text. Missing variables are collected and parsing goes on,
/// so the caller gets every error at once: `Ok` carries the ones found so far (possibly none).
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(ConfigFile, Vec<ConfigError>), Vec<ConfigError>> {
    // A missing variable is reported, then parsing goes on so later errors show up too.
    let (text, mut errors) = interpolate::interpolate(text, env);
    let de = yaml_serde::Deserializer::from_str(&text);
    let parsed: ConfigFile = match serde_path_to_error::deserialize(de) {
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
            errors.push(ConfigError::new(path, without_values(&message)));
            return Err(errors);
        }
    };
    Ok((parsed, errors))
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
        assert_eq!(
            without_values(r#"invalid type: string "a\"b", expected a map at line 3"#),
            "invalid type: a string, expected a map at line 3"
        );
    }
}
