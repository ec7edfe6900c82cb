//! Secret references (`{env: …}`, `{file: …}`) resolved to their value, held in a redacting
//! `SecretString`. What a secret must look like (Orceum's `whs_` prefix) is checked by whoever
//! uses it; this module only reads, trims and refuses empty values. Errors never contain a
//! secret.

use super::SecretSource;
use secrecy::SecretString;

/// Why a secret could not be read. Never contains the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set; export it with the secret")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}; mount the Secret there or fix the path")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin} is empty")]
    Empty { origin: String },
}

/// Reads a secret: the environment variable's or the file's content, trimmed, not empty.
pub fn read_plain(
    source: &SecretSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, SecretError> {
    let raw = match source {
        SecretSource::Env(name) => {
            env(name).ok_or_else(|| SecretError::EnvMissing(name.clone()))?
        }
        SecretSource::File(path) => {
            std::fs::read_to_string(path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            })?
        }
    };
    let value = raw.trim();
    if value.is_empty() {
        return Err(SecretError::Empty {
            origin: origin(source),
        });
    }
    Ok(SecretString::from(value.to_string()))
}

/// Where a secret comes from, for errors: `environment variable X` / `secret file /p`.
pub fn origin(source: &SecretSource) -> String {
    match source {
        SecretSource::Env(name) => format!("environment variable {name}"),
        SecretSource::File(path) => format!("secret file {}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_file_secret_is_trimmed_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "whs_one\n").unwrap();
        let none = |_: &str| None;
        let s = read_plain(&SecretSource::File(path.clone()), &none).unwrap();
        assert_eq!(s.expose_secret(), "whs_one");
        std::fs::write(&path, " \n").unwrap();
        let err = read_plain(&SecretSource::File(path), &none).unwrap_err();
        assert!(matches!(err, SecretError::Empty { .. }), "{err}");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = read_plain(&SecretSource::Env("NOPE".into()), &|_| None).unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
    }
}
