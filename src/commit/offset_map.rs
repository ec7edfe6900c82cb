//! The offset map a Kafka commit carries in its metadata: the final offsets beyond the
//! committed frontier, so a restarted member skips what was already delivered instead of
//! pushing it again (Confluent's Parallel Consumer does the same).
//!
//! Text, versioned, self-checking: `ob1:<frontier>:<runs>:<check>` where each run is
//! `<gap>+<len>` in base 36 (gap from the end of the previous run, the first from the
//! frontier), joined by `,`, and `<check>` is a 32-bit FNV-1a of everything before it.
//! Encoding stops at a run boundary before `max_bytes`, so a long map is cut, never
//! corrupted: offsets left out are simply delivered again. Metadata cut or changed on the way
//! fails the check and is ignored whole.
//!
//! Decoding trusts nothing: a wrong version, a frontier other than the committed offset (the
//! offsets were reset with the Kafka tools, or the metadata belongs to someone else), or any
//! malformed part ⇒ no map, plain at-least-once from the frontier. Never a skip of an offset
//! that was not final.

/// librdkafka's and Kafka's default `offset.metadata.max.bytes` is 4,096; stay under it.
pub const MAX_METADATA_BYTES: usize = 4000;

const PREFIX: &str = "ob1:";

/// Encodes the final runs `(first, count)` beyond `frontier` (increasing, all ≥ `frontier`).
pub fn encode(frontier: i64, runs: &[(i64, u32)], max_bytes: usize) -> String {
    let mut out = format!("{PREFIX}{}:", radix36(frontier as u64));
    let mut end = frontier;
    let mut first = true;
    for &(start, n) in runs {
        if start < end || n == 0 {
            break; // not what the tracker produces; stop rather than write nonsense
        }
        let part = format!(
            "{}{}+{}",
            if first { "" } else { "," },
            radix36((start - end) as u64),
            radix36(u64::from(n))
        );
        // Room for the check (`:` + at most 7 base-36 digits).
        if out.len() + part.len() + 8 > max_bytes {
            break;
        }
        out.push_str(&part);
        first = false;
        end = start + i64::from(n);
    }
    let check = radix36(u64::from(fnv1a(out.as_bytes())));
    out.push(':');
    out.push_str(&check);
    out
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The final offsets beyond `committed` that `metadata` records, as runs; `None` when the
/// metadata is absent, foreign, stale or malformed.
pub fn decode(metadata: &str, committed: i64) -> Option<Vec<(i64, u32)>> {
    let (body, check) = metadata.rsplit_once(':')?;
    if u64::from_str_radix(check, 36).ok()? != u64::from(fnv1a(body.as_bytes())) {
        return None;
    }
    let rest = body.strip_prefix(PREFIX)?;
    let (frontier, runs) = rest.split_once(':')?;
    let frontier = i64::try_from(u64::from_str_radix(frontier, 36).ok()?).ok()?;
    if frontier != committed {
        return None;
    }
    let mut out = Vec::new();
    let mut end = frontier;
    if runs.is_empty() {
        return Some(out);
    }
    for run in runs.split(',') {
        let (gap, n) = run.split_once('+')?;
        let gap = i64::try_from(u64::from_str_radix(gap, 36).ok()?).ok()?;
        let n = u32::try_from(u64::from_str_radix(n, 36).ok()?).ok()?;
        if n == 0 {
            return None;
        }
        let start = end.checked_add(gap)?;
        end = start.checked_add(i64::from(n))?;
        out.push((start, n));
    }
    Some(out)
}

fn radix36(mut v: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = Vec::new();
    loop {
        buf.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    buf.reverse();
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_map_round_trips_and_a_stale_or_foreign_one_is_refused() {
        let runs = vec![(105, 3), (200, 1), (1_000_000, 40)];
        let m = encode(100, &runs, MAX_METADATA_BYTES);
        assert_eq!(decode(&m, 100), Some(runs));
        assert_eq!(decode(&m, 99), None, "offsets were reset: the map is stale");
        assert_eq!(decode("", 100), None);
        assert_eq!(decode("someone-else's metadata", 100), None);
        assert_eq!(decode("ob1:2s:5+3,zz", 100), None);
        assert_eq!(
            decode(&m.replace("2s:", "2t:"), 100),
            None,
            "fails its check"
        );
        assert_eq!(decode(&encode(7, &[], 100), 7), Some(vec![]));
    }

    #[test]
    fn a_long_map_is_cut_at_a_run_boundary_within_the_limit() {
        let runs: Vec<(i64, u32)> = (0..5000).map(|i| (10 + i * 3, 1)).collect();
        let m = encode(10, &runs, MAX_METADATA_BYTES);
        assert!(m.len() <= MAX_METADATA_BYTES);
        let back = decode(&m, 10).unwrap();
        assert!(back.len() > 500 && back.len() < runs.len());
        assert_eq!(back[..], runs[..back.len()]);
    }

    proptest! {
        /// Whatever the map, cut to any length or with any byte changed, decoding yields
        /// only offsets that were in it (or nothing): never an offset that was not final.
        #[test]
        fn truncated_or_corrupted_metadata_never_names_an_offset_that_was_not_final(
            frontier in 0i64..1_000_000,
            gaps in proptest::collection::vec((0u32..50, 1u32..20), 0..200),
            cut in any::<prop::sample::Index>(),
            flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let mut runs = Vec::new();
            let mut end = frontier;
            for (gap, n) in gaps {
                let start = end + i64::from(gap);
                runs.push((start, n));
                end = start + i64::from(n);
            }
            let finals: std::collections::BTreeSet<i64> = runs
                .iter()
                .flat_map(|(s, n)| *s..*s + i64::from(*n))
                .collect();
            let mut m = encode(frontier, &runs, MAX_METADATA_BYTES).into_bytes();
            prop_assert!(m.len() <= MAX_METADATA_BYTES);
            let len = cut.index(m.len() + 1);
            m.truncate(len);
            if let (Some((at, b)), false) = (flip, m.is_empty()) {
                let i = at.index(m.len());
                m[i] = b;
            }
            let text = String::from_utf8_lossy(&m);
            if let Some(back) = decode(&text, frontier) {
                for (s, n) in back {
                    for o in s..s + i64::from(n) {
                        prop_assert!(finals.contains(&o), "decoded {o}, not final; metadata {text:?}");
                    }
                }
            }
        }
    }
}
