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
            errors.push(ConfigError::new(path, message));
            return Err(errors);
        }
    };
    Ok((parsed, errors))
}
