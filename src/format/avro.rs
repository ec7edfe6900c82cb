//! Avro: a datum decoded with its writer schema (from the registry, by id, or a local file),
//! resolved against a reader schema when the route names one (schema evolution: a v2 writer
//! with a new optional field read as v1), then mapped to JSON by the Avro specification's JSON
//! encoding:
//!
//! - a union is `null`, or an object with one key, the branch's type name (`{"string": "x"}`,
//!   `{"shop.Coupon": {…}}`);
//! - `bytes` and `fixed` are strings of the code points U+0000–U+00FF, one per byte;
//! - an enum is its symbol; a record an object of its fields in order; a map an object;
//! - logical types are their underlying type (`date` an int of days, `timestamp-millis` a long
//!   of milliseconds, `decimal` its bytes, `uuid` a string);
//! - NaN and the infinities (which JSON has no number for) are the strings `NaN`, `Infinity`,
//!   `-Infinity`.

use apache_avro::schema::{Name, ResolvedSchema, Schema};
use apache_avro::types::Value as Avro;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A parsed schema with the named types it and its references define.
#[derive(Debug)]
pub struct AvroSchema {
    schema: Schema,
    references: Vec<Schema>,
    names: HashMap<Name, Schema>,
}

impl AvroSchema {
    /// `text`, with the schemas it references (`references`, in dependency order).
    pub fn parse(text: &str, references: &[String]) -> Result<Self, String> {
        let (schema, references) = if references.is_empty() {
            (
                Schema::parse_str(text).map_err(|e| format!("not an Avro schema: {e}"))?,
                Vec::new(),
            )
        } else {
            Schema::parse_str_with_list(text, references)
                .map_err(|e| format!("not an Avro schema (with its references): {e}"))?
        };
        let mut all: Vec<&Schema> = references.iter().collect();
        all.push(&schema);
        let names = ResolvedSchema::try_from(all)
            .map_err(|e| format!("the schema's names do not resolve: {e}"))?
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect();
        Ok(Self {
            schema,
            references,
            names,
        })
    }

    /// Decodes one datum written with this schema, read as `reader` when given. No length a
    /// record declares (a string's, or an array's or map's item count, which the decoder
    /// reserves room for) may exceed `max_bytes`, the bound on the whole message: a few hostile
    /// bytes declaring an array of 2^28 items would otherwise reserve gigabytes.
    pub fn decode(
        &self,
        mut bytes: &[u8],
        reader: Option<&AvroSchema>,
        max_bytes: usize,
    ) -> Result<Value, String> {
        // Process-wide and set once (apache-avro's own bound); every route has the same max.
        apache_avro::util::max_allocation_bytes(max_bytes);
        let value = apache_avro::from_avro_datum_reader_schemata(
            &self.schema,
            self.references.iter().collect(),
            &mut bytes,
            reader.map(|r| &r.schema),
            reader
                .map(|r| r.references.iter().collect())
                .unwrap_or_default(),
        )
        .map_err(|e| format!("the payload does not decode with its Avro schema: {e}"))?;
        if !bytes.is_empty() {
            return Err(format!(
                "{} bytes left after the Avro datum: not written with this schema",
                bytes.len()
            ));
        }
        let read_as = reader.unwrap_or(self);
        read_as.to_json(&value, &read_as.schema, 0)
    }

    fn resolve<'s>(&'s self, schema: &'s Schema) -> Result<&'s Schema, String> {
        match schema {
            Schema::Ref { name } => self.names.get(name).ok_or_else(|| {
                format!(
                    "the schema names {} and does not define it",
                    name.fullname(None)
                )
            }),
            s => Ok(s),
        }
    }

    /// The Avro JSON encoding of `value`, read by `schema`.
    fn to_json(&self, value: &Avro, schema: &Schema, depth: usize) -> Result<Value, String> {
        if depth > 64 {
            return Err("the Avro value nests over 64 levels".into());
        }
        let schema = self.resolve(schema)?;
        Ok(match (value, schema) {
            (Avro::Null, _) => Value::Null,
            (Avro::Boolean(b), _) => Value::Bool(*b),
            (Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i), _) => Value::from(*i),
            (
                Avro::Long(i)
                | Avro::TimeMicros(i)
                | Avro::TimestampMillis(i)
                | Avro::TimestampMicros(i)
                | Avro::TimestampNanos(i)
                | Avro::LocalTimestampMillis(i)
                | Avro::LocalTimestampMicros(i)
                | Avro::LocalTimestampNanos(i),
                _,
            ) => Value::from(*i),
            (Avro::Float(f), _) => float(f64::from(*f)),
            (Avro::Double(f), _) => float(*f),
            (Avro::String(s), _) | (Avro::Enum(_, s), _) => Value::String(s.clone()),
            (Avro::Uuid(u), _) => Value::String(u.to_string()),
            (Avro::Bytes(b), _) | (Avro::Fixed(_, b), _) => latin1(b),
            (Avro::Decimal(d), _) => {
                let bytes: Vec<u8> = d
                    .try_into()
                    .map_err(|e| format!("a decimal that does not encode: {e}"))?;
                latin1(&bytes)
            }
            (Avro::BigDecimal(d), _) => Value::String(d.to_string()),
            (Avro::Duration(d), _) => {
                let mut b = Vec::with_capacity(12);
                b.extend_from_slice(&u32::from(d.months()).to_le_bytes());
                b.extend_from_slice(&u32::from(d.days()).to_le_bytes());
                b.extend_from_slice(&u32::from(d.millis()).to_le_bytes());
                latin1(&b)
            }
            (Avro::Union(i, inner), Schema::Union(u)) => {
                let branch = u
                    .variants()
                    .get(*i as usize)
                    .ok_or_else(|| format!("union branch {i} is not in the schema"))?;
                if matches!(**inner, Avro::Null) {
                    Value::Null
                } else {
                    let mut m = Map::new();
                    m.insert(
                        self.type_name(branch)?,
                        self.to_json(inner, branch, depth + 1)?,
                    );
                    Value::Object(m)
                }
            }
            (Avro::Array(items), Schema::Array(a)) => Value::Array(
                items
                    .iter()
                    .map(|v| self.to_json(v, &a.items, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            (Avro::Map(entries), Schema::Map(m)) => {
                let mut keys: Vec<&String> = entries.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), self.to_json(&entries[k], &m.types, depth + 1)?);
                }
                Value::Object(out)
            }
            (Avro::Record(fields), Schema::Record(r)) => {
                let mut out = Map::new();
                for ((name, v), field) in fields.iter().zip(&r.fields) {
                    out.insert(name.clone(), self.to_json(v, &field.schema, depth + 1)?);
                }
                Value::Object(out)
            }
            (v, s) => {
                return Err(format!(
                    "an Avro value {:?} where the schema says {:?}",
                    std::mem::discriminant(v),
                    std::mem::discriminant(s)
                ))
            }
        })
    }

    /// A union branch's name in the JSON encoding: a named type's full name, else its type.
    fn type_name(&self, schema: &Schema) -> Result<String, String> {
        Ok(match schema {
            Schema::Ref { name } => name.fullname(None),
            Schema::Record(r) => r.name.fullname(None),
            Schema::Enum(e) => e.name.fullname(None),
            Schema::Fixed(f) => f.name.fullname(None),
            Schema::Null => "null".into(),
            Schema::Boolean => "boolean".into(),
            Schema::Int | Schema::Date | Schema::TimeMillis => "int".into(),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => "long".into(),
            Schema::Float => "float".into(),
            Schema::Double => "double".into(),
            Schema::Bytes | Schema::BigDecimal => "bytes".into(),
            Schema::String | Schema::Uuid => "string".into(),
            Schema::Array(_) => "array".into(),
            Schema::Map(_) => "map".into(),
            Schema::Decimal(d) => match &*d.inner {
                Schema::Fixed(f) => f.name.fullname(None),
                _ => "bytes".into(),
            },
            Schema::Duration => "fixed".into(),
            Schema::Union(_) => return Err("a union directly inside a union".into()),
        })
    }
}

fn float(f: f64) -> Value {
    if f.is_nan() {
        Value::String("NaN".into())
    } else if f.is_infinite() {
        Value::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

fn latin1(bytes: &[u8]) -> Value {
    Value::String(bytes.iter().map(|b| char::from(*b)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// delivery.max_message_bytes's default.
    const MAX: usize = 1 << 20;

    #[test]
    fn a_declared_length_over_the_message_bound_is_an_error_not_an_allocation() {
        let s = AvroSchema::parse(r#"{"type":"array","items":"int"}"#, &[]).unwrap();
        // A block count of 2^28 (zigzag varint), then nothing: reserving it would take GiBs.
        let hostile = [0x80, 0x80, 0x80, 0x80, 0x02];
        let err = s.decode(&hostile, None, MAX).unwrap_err();
        assert!(err.contains("does not decode"), "{err}");
        let long_string = AvroSchema::parse(r#""string""#, &[]).unwrap();
        assert!(long_string
            .decode(&[0x80, 0x80, 0x80, 0x80, 0x02], None, MAX)
            .is_err());
    }

    const V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"installation_id","type":"string"},{"name":"total","type":"double"},
        {"name":"tag","type":["null","string"],"default":null},
        {"name":"raw","type":"bytes","default":""}]}"#;
    const V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"installation_id","type":"string"},{"name":"total","type":"double"},
        {"name":"tag","type":["null","string"],"default":null},
        {"name":"raw","type":"bytes","default":""},
        {"name":"coupon","type":["null","string"],"default":null}]}"#;

    fn encode(schema: &str, value: Avro) -> Vec<u8> {
        let s = Schema::parse_str(schema).unwrap();
        apache_avro::to_avro_datum(&s, value).unwrap()
    }

    fn order(coupon: Option<&str>) -> Avro {
        let mut fields = vec![
            ("installation_id".to_string(), Avro::String("inst_1".into())),
            ("total".to_string(), Avro::Double(12.5)),
            (
                "tag".to_string(),
                Avro::Union(1, Box::new(Avro::String("vip".into()))),
            ),
            ("raw".to_string(), Avro::Bytes(vec![0, 0xff])),
        ];
        if let Some(c) = coupon {
            fields.push((
                "coupon".into(),
                Avro::Union(1, Box::new(Avro::String(c.into()))),
            ));
        }
        Avro::Record(fields)
    }

    #[test]
    fn a_datum_is_the_avro_json_encoding_of_its_value() {
        let s = AvroSchema::parse(V1, &[]).unwrap();
        let json = s.decode(&encode(V1, order(None)), None, MAX).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"installation_id": "inst_1", "total": 12.5,
                "tag": {"string": "vip"}, "raw": "\u{0}\u{ff}"})
        );
        assert!(
            s.decode(&[0x02], None, MAX).is_err(),
            "a truncated datum is an error"
        );
    }

    #[test]
    fn a_newer_writer_is_read_by_an_older_reader() {
        let (v1, v2) = (
            AvroSchema::parse(V1, &[]).unwrap(),
            AvroSchema::parse(V2, &[]).unwrap(),
        );
        let bytes = encode(V2, order(Some("C1")));
        let as_written = v2.decode(&bytes, None, MAX).unwrap();
        assert_eq!(as_written["coupon"], serde_json::json!({"string": "C1"}));
        let as_v1 = v2.decode(&bytes, Some(&v1), MAX).unwrap();
        assert!(
            as_v1.get("coupon").is_none(),
            "the old reader does not know it: {as_v1}"
        );
        assert_eq!(as_v1["installation_id"], "inst_1");
        // And an old writer read by the new reader takes the default.
        let old = v1.decode(&encode(V1, order(None)), Some(&v2), MAX).unwrap();
        assert_eq!(old["coupon"], Value::Null);
    }

    #[test]
    fn a_referenced_type_resolves() {
        let coupon = r#"{"type":"record","name":"Coupon","namespace":"shop","fields":[{"name":"code","type":"string"}]}"#;
        let main = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"c","type":["null","shop.Coupon"]}]}"#;
        let s = AvroSchema::parse(main, &[coupon.to_string()]).unwrap();
        let value = Avro::Record(vec![(
            "c".into(),
            Avro::Union(
                1,
                Box::new(Avro::Record(vec![(
                    "code".into(),
                    Avro::String("X".into()),
                )])),
            ),
        )]);
        let writer = Schema::parse_str_with_list(main, [coupon]).unwrap();
        let bytes =
            apache_avro::to_avro_datum_schemata(&writer.0, writer.1.iter().collect(), value)
                .unwrap();
        assert_eq!(
            s.decode(&bytes, None, MAX).unwrap(),
            serde_json::json!({"c": {"shop.Coupon": {"code": "X"}}})
        );
    }
}
