//! An Orceum app as the client sees it: its id and its webhook secret, nothing else.
//!
//! [`AppSecret`] is the redacting, rotatable holder of a `whs_…` secret: it can be cloned and
//! read by every request; a secret that came from a file is re-read when the file changes
//! (Kubernetes rotates mounted Secrets in place), so rotation needs no restart. Nothing here
//! implements `Display`, and `Debug` prints `[REDACTED]`. Where a secret comes from (`{env}`,
//! `{file}`) is the config's business: this module is handed the value and, for files, a way
//! to read it again.

use crate::sync::{read, write};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// One app, ready to push to.
#[derive(Debug, Clone)]
pub struct App {
    /// The local name routes use (`apps.<name>`).
    pub name: String,
    pub app_id: String,
    pub secret: AppSecret,
}

/// Reads the secret file again; the error says why it could not (never the secret).
pub type Reload = Arc<dyn Fn() -> Result<SecretString, String> + Send + Sync>;

/// Why a secret cannot be used. Never contains the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{origin} does not start with whs_; Orceum webhook secrets look like whs_…")]
    Prefix { origin: String },
    #[error("{origin} holds a character that cannot go into an HTTP header (space, control or non-ASCII); a webhook secret is whs_ followed by visible ASCII")]
    NotHeaderSafe { origin: String },
    #[error("{0}")]
    Reload(String),
}

/// A webhook secret that can be rotated while the bridge runs.
#[derive(Clone)]
pub struct AppSecret {
    file: Option<(PathBuf, Reload)>,
    current: Arc<RwLock<(SecretString, Option<SystemTime>)>>,
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecret([REDACTED])")
    }
}

/// `whs_` and visible ASCII only: the secret goes into a header as it is, so a space, CR/LF or
/// anything else would fail every push (or split the header).
fn checked(value: SecretString, origin: &str) -> Result<SecretString, SecretError> {
    let v = value.expose_secret();
    if !v.starts_with("whs_") {
        return Err(SecretError::Prefix {
            origin: origin.to_string(),
        });
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SecretError::NotHeaderSafe {
            origin: origin.to_string(),
        });
    }
    Ok(value)
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl AppSecret {
    /// A secret that never changes (an environment variable); `origin` names where it came
    /// from in the error.
    pub fn new(value: SecretString, origin: &str) -> Result<Self, SecretError> {
        Ok(Self {
            file: None,
            current: Arc::new(RwLock::new((checked(value, origin)?, None))),
        })
    }

    /// A secret read from `path`, re-read with `reload` when the file's modification time
    /// changes ([`refresh`](Self::refresh)).
    pub fn rotating(
        value: SecretString,
        path: PathBuf,
        reload: Reload,
    ) -> Result<Self, SecretError> {
        let origin = format!("secret file {}", path.display());
        let stamp = modified(&path);
        Ok(Self {
            current: Arc::new(RwLock::new((checked(value, &origin)?, stamp))),
            file: Some((path, reload)),
        })
    }

    /// A fixed secret, for tests, the sandbox and `render`.
    pub fn fixed(value: &str) -> Self {
        Self {
            file: None,
            current: Arc::new(RwLock::new((SecretString::from(value.to_string()), None))),
        }
    }

    /// Runs `f` with the secret's bytes; the only way to see them.
    pub fn with_exposed<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(read(&self.current).0.expose_secret())
    }

    /// Re-reads a file secret if its modification time changed. Returns true when the
    /// secret was replaced. Blocking file I/O: call from `spawn_blocking` or a plain thread.
    pub fn refresh(&self) -> Result<bool, SecretError> {
        let Some((path, reload)) = &self.file else {
            return Ok(false);
        };
        let stamp = modified(path);
        let unchanged = read(&self.current).1 == stamp;
        if unchanged {
            return Ok(false);
        }
        let origin = format!("secret file {}", path.display());
        let value = checked(reload().map_err(SecretError::Reload)?, &origin)?;
        *write(&self.current) = (value, stamp);
        Ok(true)
    }

    pub fn is_file(&self) -> bool {
        self.file.is_some()
    }
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
    fn a_file_secret_is_reread_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "whs_one").unwrap();
        let p = path.clone();
        let reload: Reload = Arc::new(move || {
            std::fs::read_to_string(&p)
                .map(|s| SecretString::from(s.trim().to_string()))
                .map_err(|e| e.to_string())
        });
        let s = AppSecret::rotating("whs_one".to_string().into(), path.clone(), reload).unwrap();
        assert!(!s.refresh().unwrap(), "unchanged file: nothing to do");
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
    fn a_secret_that_cannot_go_into_a_header_is_refused_without_echoing_it() {
        for bad in ["whs_a\r\nX-Evil: 1", "whs_a b", "whs_é"] {
            let err = AppSecret::new(bad.to_string().into(), "environment variable X")
                .unwrap_err()
                .to_string();
            assert!(err.contains("HTTP header"), "{err}");
            assert!(!err.contains("whs_a"), "{err}");
        }
    }

    #[test]
    fn a_secret_without_the_whs_prefix_is_refused_without_echoing_it() {
        let err = AppSecret::new("sk_live_abc".to_string().into(), "environment variable X")
            .unwrap_err()
            .to_string();
        assert!(err.contains("whs_"), "{err}");
        assert!(!err.contains("sk_live_abc"), "{err}");
    }

    #[test]
    fn a_file_swapped_while_it_is_read_is_picked_up_on_the_next_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "whs_one").unwrap();
        let set_mtime = |p: &PathBuf, secs: u64| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap()
        };
        set_mtime(&path, 1_000);
        let s = AppSecret::rotating(
            "whs_one".to_string().into(),
            path.clone(),
            Arc::new(|| Err("unused".into())),
        )
        .unwrap();
        // The rotation: the reader returns the content it saw (whs_two), and right after it
        // read, the file is swapped again (whs_three, a newer mtime). The refresh must not
        // store whs_two under whs_three's mtime, or whs_three would never be read.
        let p = path.clone();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let reload: Reload = Arc::new(move || {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = std::fs::read_to_string(&p).unwrap();
            if n == 0 {
                std::fs::write(&p, "whs_three").unwrap();
                set_mtime(&p, 3_000);
            }
            Ok(SecretString::from(seen.trim().to_string()))
        });
        let s = AppSecret {
            file: Some((path.clone(), reload)),
            ..s
        };
        std::fs::write(&path, "whs_two").unwrap();
        set_mtime(&path, 2_000);
        assert!(s.refresh().unwrap());
        assert_eq!(s.with_exposed(str::to_string), "whs_two");
        assert!(s.refresh().unwrap(), "the second swap went unnoticed");
        assert_eq!(s.with_exposed(str::to_string), "whs_three");
    }
}
