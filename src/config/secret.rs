//! Secrets: resolved from `{env: …}` or `{file: …}`, held in a redacting type.
//!
//! `AppSecret` can be cloned and read by every request; a `{file: …}` secret is re-read when
//! the file changes (Kubernetes rotates mounted Secrets in place), so rotation needs no restart.
//! Nothing here implements `Display`, and `Debug` prints `[REDACTED]`.

use super::SecretSource;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

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
    #[error("{origin} does not start with whs_; Orceum webhook secrets look like whs_…")]
    Prefix { origin: String },
}

/// A webhook secret that can be rotated while the bridge runs.
#[derive(Clone)]
pub struct AppSecret {
    source: SecretSource,
    current: Arc<RwLock<(SecretString, Option<SystemTime>)>>,
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecret([REDACTED])")
    }
}

impl AppSecret {
    /// Reads the secret now; errors say where it was looked for.
    pub fn resolve(source: &SecretSource) -> Result<Self, SecretError> {
        Self::resolve_with(source, &|name| std::env::var(name).ok())
    }

    /// [`resolve`](Self::resolve) with an explicit environment (tests, `demo`).
    pub fn resolve_with(
        source: &SecretSource,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SecretError> {
        let (value, modified) = read(source, env)?;
        Ok(Self {
            source: source.clone(),
            current: Arc::new(RwLock::new((value, modified))),
        })
    }

    /// A fixed secret, for tests, the sandbox and `render`.
    pub fn fixed(value: &str) -> Self {
        Self {
            source: SecretSource::Env(String::new()),
            current: Arc::new(RwLock::new((SecretString::from(value.to_string()), None))),
        }
    }

    /// Runs `f` with the secret's bytes; the only way to see them.
    pub fn with_exposed<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self.current.read() {
            Ok(guard) => f(guard.0.expose_secret()),
            Err(poisoned) => f(poisoned.into_inner().0.expose_secret()),
        }
    }

    /// Re-reads a `{file: …}` secret if its modification time changed. Returns true when the
    /// secret was replaced. Blocking file I/O: call from `spawn_blocking` or a plain thread.
    pub fn refresh(&self) -> Result<bool, SecretError> {
        let SecretSource::File(path) = &self.source else {
            return Ok(false);
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let unchanged = match self.current.read() {
            Ok(g) => g.1 == modified,
            Err(_) => false,
        };
        if unchanged {
            return Ok(false);
        }
        let (value, modified) = read(&self.source, &|n| std::env::var(n).ok())?;
        if let Ok(mut g) = self.current.write() {
            *g = (value, modified);
        }
        Ok(true)
    }

    pub fn is_file(&self) -> bool {
        matches!(self.source, SecretSource::File(_))
    }
}

/// Reads a secret that is not an Orceum webhook secret (a NATS token or password): no prefix
/// rule. The value is only exposed to the client library that needs it.
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

fn origin(source: &SecretSource) -> String {
    match source {
        SecretSource::Env(name) => format!("environment variable {name}"),
        SecretSource::File(path) => format!("secret file {}", path.display()),
    }
}

fn read(
    source: &SecretSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(SecretString, Option<SystemTime>), SecretError> {
    let (raw, modified) = match source {
        SecretSource::Env(name) => (
            env(name).ok_or_else(|| SecretError::EnvMissing(name.clone()))?,
            None,
        ),
        SecretSource::File(path) => {
            let raw = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            })?;
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            (raw, modified)
        }
    };
    let value = raw.trim();
    if value.is_empty() {
        return Err(SecretError::Empty {
            origin: origin(source),
        });
    }
    if !value.starts_with("whs_") {
        return Err(SecretError::Prefix {
            origin: origin(source),
        });
    }
    Ok((SecretString::from(value.to_string()), modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = AppSecret::fixed("whs_topsecret");
        assert!(!format!("{s:?}").contains("topsecret"));
    }

    #[test]
    fn file_secret_is_trimmed_checked_and_reread_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "whs_one\n").unwrap();
        let s = AppSecret::resolve(&SecretSource::File(path.clone())).unwrap();
        assert_eq!(s.with_exposed(str::to_string), "whs_one");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "whs_two").unwrap();
        // Force a different mtime even on coarse file systems.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(s.refresh().unwrap());
        assert_eq!(s.with_exposed(str::to_string), "whs_two");
    }

    #[test]
    fn a_secret_without_the_whs_prefix_is_refused_without_echoing_it() {
        let env = |_: &str| Some("sk_live_abc".to_string());
        let err = AppSecret::resolve_with(&SecretSource::Env("ANY".into()), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("whs_"), "{err}");
        assert!(!err.contains("sk_live_abc"), "{err}");
    }
}
