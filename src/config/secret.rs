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
    #[error("secret file {path} is not a regular file (a FIFO, a device or a directory would hang or never end); point it at the mounted Secret's file")]
    NotAFile { path: String },
    #[error("secret file {path} is over {MAX_SECRET_FILE_BYTES} bytes; a secret is a short token")]
    TooLarge { path: String },
    #[error("reading secret file {path} took over {}s (a hung network mount?); check the volume", READ_TIMEOUT.as_secs())]
    TimedOut { path: String },
}

/// How long reading one secret file may take.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads that timed out and may still be blocked: past a few, no new thread is started.
static STUCK_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const MAX_STUCK_READS: usize = 4;

/// Runs `read` on a thread of its own and waits at most `timeout`: a read that blocks (a hung
/// network mount) costs that thread, not the caller, and at most [`MAX_STUCK_READS`] threads.
fn within<T: Send + 'static>(
    timeout: std::time::Duration,
    path: &std::path::Path,
    read: impl FnOnce() -> Result<T, SecretError> + Send + 'static,
) -> Result<T, SecretError> {
    use std::sync::atomic::Ordering;
    let timed_out = || SecretError::TimedOut {
        path: path.display().to_string(),
    };
    if STUCK_READS.load(Ordering::SeqCst) >= MAX_STUCK_READS {
        return Err(timed_out());
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("secret-read".into())
        .spawn(move || {
            let _ = tx.send(read());
        });
    if spawned.is_err() {
        return Err(timed_out());
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => {
            STUCK_READS.fetch_add(1, Ordering::SeqCst);
            Err(timed_out())
        }
    }
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
            let owned = path.clone();
            within(READ_TIMEOUT, path, move || read_file(&owned))?
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

/// The most a secret file may hold.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads a secret file: a regular file (symlinks followed, as Kubernetes mounts them) of at
/// most [`MAX_SECRET_FILE_BYTES`], never a FIFO or device that would block or never end.
fn read_file(path: &std::path::Path) -> Result<String, SecretError> {
    use std::io::Read;
    let shown = || path.display().to_string();
    let io = |source| SecretError::File {
        path: shown(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile { path: shown() });
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(SecretError::TooLarge { path: shown() });
    }
    let mut raw = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut raw)
        .map_err(io)?;
    if raw.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretError::TooLarge { path: shown() });
    }
    Ok(raw)
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
    fn a_read_that_blocks_is_given_up_after_the_timeout() {
        let path = std::path::Path::new("/mnt/hung/secret");
        let started = std::time::Instant::now();
        let r: Result<(), _> = within(std::time::Duration::from_millis(100), path, || {
            std::thread::sleep(std::time::Duration::from_secs(3));
            Ok(())
        });
        assert!(matches!(r, Err(SecretError::TimedOut { .. })), "{r:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let ok = within(std::time::Duration::from_secs(2), path, || Ok(7));
        assert_eq!(ok.unwrap(), 7);
    }

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
    fn a_fifo_a_device_or_a_huge_file_is_refused_without_reading_it() {
        let none = |_: &str| None;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = read_plain(&SecretSource::File(fifo), &none).unwrap_err();
            assert!(matches!(err, SecretError::NotAFile { .. }), "{err}");
        }
        for dev in ["/dev/zero", "/dev/urandom"] {
            let err = read_plain(&SecretSource::File(dev.into()), &none).unwrap_err();
            assert!(matches!(err, SecretError::NotAFile { .. }), "{dev}: {err}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 70_000]).unwrap();
        let err = read_plain(&SecretSource::File(big), &none).unwrap_err();
        assert!(matches!(err, SecretError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = read_plain(&SecretSource::Env("NOPE".into()), &|_| None).unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
    }
}
