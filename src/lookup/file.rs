//! A table read from a file: a JSON object (`{"user-1": "inst-1", …}`) or, for a path ending
//! in `.csv`, `key,value` lines. Re-read whole when its modification time or size changes
//! (Kubernetes updates a mounted ConfigMap in place), like `{file: …}` secrets; a file that
//! cannot be read or parsed keeps the previous table and is logged.

use super::table::{Bounds, Entries, Refused, Stored};
use super::{pause, Lookup, LookupError, CHECK_EVERY};
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use std::io::Read as _;
use std::path::Path;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// A file read into a table: its entries and how many were refused by the bounds.
pub struct Loaded {
    pub entries: Entries,
    pub refused: Vec<(Refused, usize)>,
}

/// The most bytes of a file read: twice the table's `max_bytes` (JSON quoting and separators),
/// at least 1 MiB.
fn max_file_bytes(bounds: Bounds) -> u64 {
    (bounds.max_bytes as u64).saturating_mul(2).max(1 << 20)
}

/// Reads and parses `path` (blocking: call it off the async threads).
pub fn read(path: &Path, bounds: Bounds) -> Result<Loaded, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if meta.len() > max_file_bytes(bounds) {
        return Err(format!(
            "{shown} is {} bytes, over {} (twice the lookup's max_bytes); raise max_bytes or split the table",
            meta.len(),
            max_file_bytes(bounds)
        ));
    }
    // Streamed, not read whole first: a 1,000,000-entry file is ~85 MB the table does not need
    // twice (measured: docs/lookups.md).
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let reader = std::io::BufReader::with_capacity(1 << 16, file.take(max_file_bytes(bounds)));
    let mut loaded = Loaded {
        entries: Entries::new(bounds),
        refused: Vec::new(),
    };
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if csv {
        parse_csv(reader, &mut loaded).map_err(|e| format!("{shown}: {e}"))?;
    } else {
        let mut de = serde_json::Deserializer::from_reader(reader);
        Into(&mut loaded)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| {
                format!("{shown} is not a JSON object of keys to values ({e}); a .csv file is read as key,value lines")
            })?;
    }
    Ok(loaded)
}

impl Loaded {
    fn put(&mut self, key: &str, value: Stored) {
        if let Err(why) = self.entries.put(key, &value) {
            match self.refused.iter_mut().find(|(w, _)| *w == why) {
                Some((_, n)) => *n += 1,
                None => self.refused.push((why, 1)),
            }
        }
    }
}

/// `key,value` per line; empty lines, `#` comments and a `key,value` header are skipped; the
/// value is everything after the first comma (surrounding double quotes removed), as text.
fn parse_csv(reader: impl std::io::BufRead, into: &mut Loaded) -> Result<(), String> {
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e} (a lookup file is UTF-8)", i + 1))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line == "key,value") {
            continue;
        }
        let Some((key, value)) = line.split_once(',') else {
            return Err(format!(
                "line {}: expected key,value (no comma found)",
                i + 1
            ));
        };
        let unquote = |s: &str| {
            let s = s.trim();
            s.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(s)
                .to_string()
        };
        into.put(&unquote(key), Stored::Text(unquote(value)));
    }
    Ok(())
}

/// Streams a JSON object into the table, without building it as a `serde_json` map first.
struct Into<'a>(&'a mut Loaded);

impl<'de> DeserializeSeed<'de> for Into<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Into<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of keys to values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            self.0.put(&key, Stored::from_json(value));
        }
        Ok(())
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads the file until it loads, then re-reads it whenever it changes, until `stop`.
pub async fn follow(
    lookup: &Lookup,
    path: &Path,
    stop: &CancellationToken,
) -> Result<(), LookupError> {
    let bounds = lookup.table.bounds();
    let mut seen = None;
    loop {
        let p = path.to_path_buf();
        let current = tokio::task::spawn_blocking(move || stamp(&p))
            .await
            .ok()
            .flatten();
        if current.is_some() && current != seen {
            let p = path.to_path_buf();
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || read(&p, bounds)).await {
                Ok(Ok(loaded)) => {
                    for (why, n) in &loaded.refused {
                        tracing::error!(lookup = %lookup.name, refused = n, reason = why.label(), path = %path.display(), "lookup file has entries past the table's bounds: they are left out (raise max_entries / max_bytes)");
                    }
                    let entries = loaded.entries.len();
                    let old = lookup.replace(loaded.entries);
                    tokio::task::spawn_blocking(move || drop(old));
                    seen = current;
                    tracing::info!(lookup = %lookup.name, entries, path = %path.display(), took = ?started.elapsed(), "lookup file read");
                    lookup.mark_ready(&format!("file {}", path.display()));
                }
                Ok(Err(e)) => {
                    tracing::error!(lookup = %lookup.name, error = %e, "cannot load the lookup file; keeping the previous table until the file changes");
                    lookup.set_status(format!("{e} (read again when the file changes)"));
                    // Not parsed again every 2 s: only once the file changes.
                    seen = current;
                }
                Err(_) => {}
            }
        } else if current.is_some() {
            lookup.mark_in_step();
        } else if !lookup.is_ready() {
            lookup.set_status(format!(
                "waiting for file {} (cannot read it; retrying)",
                path.display()
            ));
        }
        if !pause(CHECK_EVERY, stop).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            max_entries: 3,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn reads_a_json_object_and_a_csv_and_counts_what_the_bounds_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("t.json");
        std::fs::write(
            &json,
            r#"{"u1": "i-1", "u2": {"id": 2}, "u3": 3, "u4": "i-4"}"#,
        )
        .unwrap();
        let l = read(&json, bounds()).unwrap();
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.refused, vec![(Refused::Full, 1)]);
        assert_eq!(
            l.entries.get("u2").map(|f| f.to_json()),
            Some(serde_json::json!({"id": 2}))
        );
        let csv = dir.path().join("t.csv");
        std::fs::write(&csv, "key,value\n# a comment\nu1, i-1\n\nu2,\"i,2\"\n").unwrap();
        let l = read(&csv, bounds()).unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries.get("u1").map(|f| f.to_json()), Some("i-1".into()));
        assert_eq!(l.entries.get("u2").map(|f| f.to_json()), Some("i,2".into()));
    }

    #[test]
    fn a_bad_file_says_what_is_wrong_and_where() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        std::fs::write(&p, "[1, 2]").unwrap();
        let e = read(&p, bounds()).err().unwrap();
        assert!(e.contains("t.json") && e.contains("JSON object"), "{e}");
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "u1,i-1\nno comma here\n").unwrap();
        let e = read(&p, bounds()).err().unwrap();
        assert!(e.contains("line 2"), "{e}");
        let e = read(&dir.path().join("missing.json"), bounds())
            .err()
            .unwrap();
        assert!(e.contains("missing.json"), "{e}");
    }
}
