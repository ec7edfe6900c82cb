//! The Confluent wire format: magic byte `0`, the schema id (4 bytes, big-endian), then — for
//! Protobuf — the message indexes (a zigzag-varint count and that many zigzag-varint indexes,
//! `0` alone meaning `[0]`), then the encoded value.

/// A framed record: the schema id and what follows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    pub schema_id: u32,
    pub rest: &'a [u8],
}

/// Splits the frame off a record.
pub fn unframe(payload: &[u8]) -> Result<Framed<'_>, String> {
    match payload {
        [0, a, b, c, d, rest @ ..] => Ok(Framed {
            schema_id: u32::from_be_bytes([*a, *b, *c, *d]),
            rest,
        }),
        [0, ..] => Err(format!(
            "a Confluent-framed record has at least 5 bytes, this one {}",
            payload.len()
        )),
        [] => Err("the record is empty".into()),
        [magic, ..] => Err(format!(
            "magic byte {magic}, not 0: not in the Confluent wire format (a producer without the registry serializer?)"
        )),
    }
}

/// A zigzag varint (Protobuf's `sint32`) from the front of `bytes`.
fn zigzag(bytes: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = bytes.split_first() else {
            return Err("the message indexes end early".into());
        };
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err("a message index is longer than a varint".into())
}

/// The Protobuf message indexes after the schema id, and the message bytes after them.
pub fn message_indexes(mut rest: &[u8]) -> Result<(Vec<usize>, &[u8]), String> {
    let count = zigzag(&mut rest)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    if !(1..=32).contains(&count) {
        return Err(format!("{count} message indexes: not a Protobuf frame"));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = zigzag(&mut rest)?;
        indexes.push(usize::try_from(i).map_err(|_| format!("message index {i}"))?);
    }
    Ok((indexes, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_gives_the_id_and_the_rest() {
        assert_eq!(
            unframe(&[0, 0, 0, 1, 2, 9, 9]).unwrap(),
            Framed {
                schema_id: 258,
                rest: &[9, 9]
            }
        );
        assert!(unframe(&[1, 0, 0, 0, 1])
            .unwrap_err()
            .contains("magic byte 1"));
        assert!(unframe(&[0, 0, 1]).is_err());
        assert!(unframe(b"").is_err());
    }

    #[test]
    fn message_indexes_are_zigzag_varints_with_a_shortcut_for_the_first() {
        assert_eq!(message_indexes(&[0, 7]).unwrap(), (vec![0], &[7u8][..]));
        // count 2 (zigzag 4), indexes 1 (2) and 0 (0)
        assert_eq!(
            message_indexes(&[4, 2, 0, 7]).unwrap(),
            (vec![1, 0], &[7u8][..])
        );
        assert!(message_indexes(&[4, 2]).is_err());
        assert!(message_indexes(&[0x80]).is_err());
    }
}
