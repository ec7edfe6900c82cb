//! Durations in the config are human strings (`250ms`, `10s`, `5m`), parsed by `humantime`.
//! An optional duration also accepts `none` (no limit), as in `max_elapsed: none`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// `serde(with = "crate::config::duration")` for a required duration.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Parses `250ms`, `10s`, `1m 30s`; a bare `0` means zero.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write it like 250ms, 10s or 5m"))
}

/// An optional duration: `none` (or an absent key) means "no limit".
pub mod optional {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        super::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_docs_show() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert!(parse("ten seconds").unwrap_err().contains("250ms"));
    }
}
