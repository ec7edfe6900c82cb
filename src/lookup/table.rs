//! One lookup table: keys to values, shared by every worker that maps messages, bounded.
//!
//! The data structure is chosen for a table of a million ~40-byte keys and values read on every
//! message: each entry is **one allocation** holding its key and its value
//! (`[kind][key length][key][value]`), and the table is a `hashbrown::HashTable` of those boxes
//! hashed with foldhash. A `HashMap<String, String>` spends three words per string plus two
//! allocations per entry; this spends two words and one allocation (measured for 1,000,000
//! entries in docs/lookups.md). Values are kept as text: a JSON string value is stored as its
//! decoded text, any other JSON value as its compact JSON, parsed when looked up (rare:
//! installation ids are strings).
//!
//! Readers take a read lock for one probe (tens of nanoseconds); the follower takes the write
//! lock once per update, and a whole-table reload (a file) builds the new table outside the
//! lock and swaps it in. Over `max_entries` or `max_bytes`, a new key is refused, never grown
//! into: the caller counts and logs it.

use crate::sync::{read, write};
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::RwLock;

/// The longest key a table keeps (a user id is tens of bytes).
pub const MAX_KEY_BYTES: usize = 1024;

/// The largest value a table keeps.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Bytes an entry costs besides its key and value: the kind and the key's length.
const HEADER: usize = 5;

const TEXT: u8 = 0;
const JSON: u8 = 1;

/// A value as it is stored: decoded text, or compact JSON for anything but a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Text(String),
    Json(String),
}

impl Stored {
    /// A record's value: JSON if it parses (a JSON string is kept as its text), else the UTF-8
    /// text itself. `None` for bytes that are neither.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => Some(Self::from_json(v)),
            Err(_) => std::str::from_utf8(bytes)
                .ok()
                .map(|s| Self::Text(s.to_string())),
        }
    }

    /// A JSON value (a file table's entry).
    pub fn from_json(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::String(s) => Self::Text(s),
            other => Self::Json(other.to_string()),
        }
    }

    fn parts(&self) -> (u8, &str) {
        match self {
            Self::Text(s) => (TEXT, s),
            Self::Json(s) => (JSON, s),
        }
    }
}

/// A value found in a table, borrowed while the read lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    Text(&'a str),
    /// Compact JSON of a number, boolean, array or object.
    Json(&'a str),
}

impl Found<'_> {
    /// As a JSON value.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Found::Text(s) => serde_json::Value::String(s.to_string()),
            Found::Json(s) => serde_json::from_str(s).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Why an update was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A new key past `max_entries`.
    Full,
    /// A new or bigger entry past `max_bytes`.
    OverBytes,
    KeyTooLong,
    ValueTooLarge,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Full => "max_entries",
            Refused::OverBytes => "max_bytes",
            Refused::KeyTooLong => "key_too_long",
            Refused::ValueTooLarge => "value_too_large",
        }
    }
}

/// How big a table may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// The entries, without the lock: what a reload builds before it swaps.
pub struct Entries {
    set: HashTable<Box<[u8]>>,
    hasher: foldhash::fast::RandomState,
    /// Bytes of keys and values held.
    bytes: usize,
    bounds: Bounds,
}

/// An entry's kind, key and value (entries are only ever built by [`Entries::put`]).
fn parts(entry: &[u8]) -> (u8, &[u8], &[u8]) {
    let len = u32::from_le_bytes([entry[1], entry[2], entry[3], entry[4]]) as usize;
    let (key, value) = entry[HEADER..].split_at(len);
    (entry[0], key, value)
}

fn key_of(entry: &[u8]) -> &[u8] {
    parts(entry).1
}

fn found_of(entry: &[u8]) -> Found<'_> {
    let (kind, _, value) = parts(entry);
    // Written from a `str`: valid UTF-8 by construction.
    let value = std::str::from_utf8(value).unwrap_or_default();
    if kind == JSON {
        Found::Json(value)
    } else {
        Found::Text(value)
    }
}

fn cost(entry: &[u8]) -> usize {
    entry.len() - HEADER
}

impl Entries {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            set: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            bytes: 0,
            bounds,
        }
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn get(&self, key: &str) -> Option<Found<'_>> {
        let key = key.as_bytes();
        self.set
            .find(self.hash(key), |e| key_of(e) == key)
            .map(|e| found_of(e))
    }

    /// Sets `key` to `value`; an existing key is replaced, a new one must fit the bounds.
    pub fn put(&mut self, key: &str, value: &Stored) -> Result<(), Refused> {
        let (kind, text) = value.parts();
        if key.len() > MAX_KEY_BYTES {
            return Err(Refused::KeyTooLong);
        }
        if text.len() > MAX_VALUE_BYTES {
            return Err(Refused::ValueTooLarge);
        }
        let mut entry = Vec::with_capacity(HEADER + key.len() + text.len());
        entry.push(kind);
        entry.extend_from_slice(&(key.len() as u32).to_le_bytes());
        entry.extend_from_slice(key.as_bytes());
        entry.extend_from_slice(text.as_bytes());
        let entry = entry.into_boxed_slice();
        let hash = self.hash(key.as_bytes());
        let hasher = &self.hasher;
        let held = self.set.len();
        match self.set.entry(
            hash,
            |e| key_of(e) == key.as_bytes(),
            |e| hasher.hash_one(key_of(e)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut old) => {
                let grown = self.bytes - cost(old.get()) + cost(&entry);
                if grown > self.bounds.max_bytes && cost(&entry) > cost(old.get()) {
                    return Err(Refused::OverBytes);
                }
                self.bytes = grown;
                *old.get_mut() = entry;
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                if held >= self.bounds.max_entries {
                    return Err(Refused::Full);
                }
                if self.bytes + cost(&entry) > self.bounds.max_bytes {
                    return Err(Refused::OverBytes);
                }
                self.bytes += cost(&entry);
                slot.insert(entry);
            }
        }
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let hash = self.hash(key.as_bytes());
        match self.set.find_entry(hash, |e| key_of(e) == key.as_bytes()) {
            Ok(found) => {
                let (entry, _) = found.remove();
                self.bytes -= cost(&entry);
                true
            }
            Err(_) => false,
        }
    }
}

/// A table behind its lock.
pub struct Table {
    entries: RwLock<Entries>,
}

impl Table {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            entries: RwLock::new(Entries::new(bounds)),
        }
    }

    pub fn bounds(&self) -> Bounds {
        read(&self.entries).bounds
    }

    /// Runs `f` on the value of `key` (or `None`) under the read lock.
    pub fn with<R>(&self, key: &str, f: impl FnOnce(Option<Found<'_>>) -> R) -> R {
        f(read(&self.entries).get(key))
    }

    pub fn get_json(&self, key: &str) -> Option<serde_json::Value> {
        self.with(key, |found| found.map(Found::to_json))
    }

    pub fn put(&self, key: &str, value: &Stored) -> Result<(), Refused> {
        write(&self.entries).put(key, value)
    }

    pub fn remove(&self, key: &str) -> bool {
        write(&self.entries).remove(key)
    }

    /// Swaps in a table built elsewhere (a file read whole); the old one is returned, so
    /// that it is freed after the lock is released (and off the async workers).
    pub fn replace(&self, entries: Entries) -> Entries {
        std::mem::replace(&mut *write(&self.entries), entries)
    }

    /// Entries and bytes held.
    pub fn size(&self) -> (usize, usize) {
        let e = read(&self.entries);
        (e.len(), e.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max_entries: usize, max_bytes: usize) -> Bounds {
        Bounds {
            max_entries,
            max_bytes,
        }
    }

    #[test]
    fn values_are_json_when_they_parse_and_text_otherwise() {
        assert_eq!(
            Stored::from_bytes(b"\"inst-1\""),
            Some(Stored::Text("inst-1".into()))
        );
        assert_eq!(
            Stored::from_bytes(b"inst-1"),
            Some(Stored::Text("inst-1".into()))
        );
        assert_eq!(
            Stored::from_bytes(b" {\"id\": 7} "),
            Some(Stored::Json("{\"id\":7}".into()))
        );
        assert_eq!(Stored::from_bytes(b"42"), Some(Stored::Json("42".into())));
        assert_eq!(Stored::from_bytes(&[0xff, 0xfe]), None);
    }

    #[test]
    fn put_get_replace_remove_and_the_byte_count() {
        let t = Table::new(bounds(10, 1000));
        t.put("u1", &Stored::Text("i-1".into())).unwrap();
        t.put("u2", &Stored::Json("{\"a\":1}".into())).unwrap();
        assert_eq!(t.with("u1", |f| f.map(|f| f.to_json())), Some("i-1".into()));
        assert_eq!(t.get_json("u2"), Some(serde_json::json!({"a": 1})));
        assert_eq!(t.get_json("u3"), None);
        assert_eq!(t.size(), (2, 2 + 3 + 2 + 7));
        t.put("u1", &Stored::Text("i-100".into())).unwrap();
        assert_eq!(t.get_json("u1"), Some("i-100".into()));
        assert_eq!(t.size(), (2, 2 + 5 + 2 + 7));
        assert!(t.remove("u1"));
        assert!(!t.remove("u1"));
        assert_eq!(t.size(), (1, 9));
        assert_eq!(t.get_json("u1"), None);
    }

    #[test]
    fn bounds_refuse_new_keys_but_let_existing_ones_change_and_go() {
        let t = Table::new(bounds(2, 30));
        t.put("a", &Stored::Text("1".into())).unwrap();
        t.put("b", &Stored::Text("2".into())).unwrap();
        assert_eq!(t.put("c", &Stored::Text("3".into())), Err(Refused::Full));
        t.put("a", &Stored::Text("11".into())).unwrap();
        assert!(t.remove("b"));
        t.put("c", &Stored::Text("3".into())).unwrap();
        assert_eq!(
            t.put("c", &Stored::Text("x".repeat(40))),
            Err(Refused::OverBytes)
        );
        assert_eq!(
            t.get_json("c"),
            Some("3".into()),
            "a refused update keeps the old value"
        );
        let key = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            Table::new(bounds(9, usize::MAX)).put(&key, &Stored::Text("v".into())),
            Err(Refused::KeyTooLong)
        );
        assert_eq!(
            Table::new(bounds(9, usize::MAX))
                .put("k", &Stored::Text("v".repeat(MAX_VALUE_BYTES + 1))),
            Err(Refused::ValueTooLarge)
        );
    }

    #[test]
    fn many_entries_survive_growth_and_removal() {
        let mut e = Entries::new(bounds(usize::MAX, usize::MAX));
        for i in 0..20_000 {
            e.put(&format!("user-{i}"), &Stored::Text(format!("inst-{i}")))
                .unwrap();
        }
        for i in (0..20_000).step_by(2) {
            assert!(e.remove(&format!("user-{i}")));
        }
        assert_eq!(e.len(), 10_000);
        for i in 0..20_000 {
            let want = (i % 2 == 1).then(|| format!("inst-{i}"));
            let got = e.get(&format!("user-{i}")).map(|f| match f {
                Found::Text(s) => s.to_string(),
                Found::Json(s) => s.to_string(),
            });
            assert_eq!(got, want);
        }
    }
}
