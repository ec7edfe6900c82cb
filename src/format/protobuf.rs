//! Protobuf: a message decoded with its descriptor (from the registry, by id and message
//! indexes, or a local descriptor set and message name) and mapped to JSON by the canonical
//! proto3 JSON mapping (lowerCamelCase field names, 64-bit integers as strings, enums by name,
//! `google.protobuf` well-known types in their JSON forms, default values left out).
//!
//! A registered schema is either `.proto` text (what the Java and Go serializers register),
//! compiled with `protox` against its references (by their import names) and the
//! `google/protobuf` well-known types, or a serialized `FileDescriptorProto` in base64 (what
//! confluent-kafka's Python serializers register), whose references are added first.

use base64::Engine;
use prost_reflect::{DescriptorPool, DynamicMessage, FileDescriptor, MessageDescriptor};

/// One registered (or local) file's descriptors, with its dependencies.
#[derive(Debug, Clone)]
pub struct ProtoSchema {
    file: FileDescriptor,
}

impl ProtoSchema {
    /// A registered schema: `text` is `.proto` source or a base64 `FileDescriptorProto`;
    /// `references` its imports as `(import name, schema)`, in dependency order.
    pub fn parse(text: &str, references: &[(String, String)]) -> Result<Self, String> {
        let base64 = |t: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(t.trim())
                .ok()
        };
        let Some(main) = base64(text) else {
            return Self::compile(text, references);
        };
        let mut pool = DescriptorPool::new();
        for (name, r) in references {
            let bytes = base64(r).ok_or_else(|| {
                format!("the referenced {name:?} is .proto text while the schema is a descriptor")
            })?;
            pool.decode_file_descriptor_proto(bytes.as_slice())
                .map_err(|e| format!("the referenced {name:?} does not load: {e}"))?;
        }
        pool.decode_file_descriptor_proto(main.as_slice())
            .map_err(|e| format!("not a Protobuf file descriptor: {e}"))?;
        let file = pool
            .files()
            .last()
            .ok_or_else(|| "an empty Protobuf schema".to_string())?;
        Ok(Self { file })
    }

    /// `.proto` source compiled with its references (by import name) and the well-known types.
    fn compile(text: &str, references: &[(String, String)]) -> Result<Self, String> {
        use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
        const MAIN: &str = "registered.proto";
        struct Sources(std::collections::HashMap<String, String>);
        impl FileResolver for Sources {
            fn open_file(&self, name: &str) -> Result<File, protox::Error> {
                match self.0.get(name) {
                    Some(source) => File::from_source(name, source),
                    None => Err(protox::Error::file_not_found(name)),
                }
            }
        }
        let mut sources: std::collections::HashMap<String, String> =
            references.iter().cloned().collect();
        sources.insert(MAIN.to_string(), text.to_string());
        let mut resolver = ChainFileResolver::new();
        resolver.add(Sources(sources));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler
            .open_file(MAIN)
            .map_err(|e| format!("the .proto does not compile: {e}"))?;
        let file = compiler
            .descriptor_pool()
            .get_file_by_name(MAIN)
            .ok_or_else(|| "the compiled .proto is not in its pool".to_string())?;
        Ok(Self { file })
    }

    /// The message the indexes point at: the first into the file's messages, each next one
    /// into the nested messages of the one before.
    pub fn message(&self, indexes: &[usize]) -> Result<MessageDescriptor, String> {
        let mut current: Option<MessageDescriptor> = None;
        for &i in indexes {
            let next = match &current {
                None => self.file.messages().nth(i),
                Some(m) => m.child_messages().nth(i),
            };
            current = Some(next.ok_or_else(|| {
                format!("message index {indexes:?} is not in {}", self.file.name())
            })?);
        }
        current.ok_or_else(|| "no message index".to_string())
    }
}

/// A message from a local descriptor set (`protoc --descriptor_set_out`, with
/// `--include_imports`) by its full name.
pub fn local_message(descriptor_set: &[u8], name: &str) -> Result<MessageDescriptor, String> {
    let pool = DescriptorPool::decode(descriptor_set)
        .map_err(|e| format!("not a FileDescriptorSet: {e}"))?;
    pool.get_message_by_name(name).ok_or_else(|| {
        let known: Vec<String> = pool
            .all_messages()
            .map(|m| m.full_name().to_string())
            .take(20)
            .collect();
        format!(
            "no message {name:?} in the descriptor set; it has {}",
            known.join(", ")
        )
    })
}

/// Decodes `bytes` as `message` into its canonical proto3 JSON.
pub fn decode(message: &MessageDescriptor, bytes: &[u8]) -> Result<serde_json::Value, String> {
    let m = DynamicMessage::decode(message.clone(), bytes).map_err(|e| {
        format!(
            "the payload does not decode as {}: {e}",
            message.full_name()
        )
    })?;
    serde_json::to_value(&m).map_err(|e| format!("{} has no JSON form: {e}", message.full_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_proto_text_compiles_with_its_references_and_the_well_known_types() {
        let coupon = "syntax = \"proto3\";\npackage shop;\nmessage Coupon { string code = 1; }\n";
        let order = "syntax = \"proto3\";\npackage shop;\nimport \"shop/coupon.proto\";\nimport \"google/protobuf/timestamp.proto\";\nmessage Order {\n  string installation_id = 1;\n  int64 total_cents = 2;\n  shop.Coupon coupon = 3;\n  google.protobuf.Timestamp at = 4;\n  message Line { string sku = 1; }\n}\n";
        let schema =
            ProtoSchema::parse(order, &[("shop/coupon.proto".into(), coupon.into())]).unwrap();
        let message = schema.message(&[0]).unwrap();
        assert_eq!(message.full_name(), "shop.Order");
        assert_eq!(
            schema.message(&[0, 0]).unwrap().full_name(),
            "shop.Order.Line"
        );
        assert!(schema.message(&[1]).is_err());
        let mut m = DynamicMessage::new(message.clone());
        m.set_field_by_name(
            "installation_id",
            prost_reflect::Value::String("inst_1".into()),
        );
        m.set_field_by_name("total_cents", prost_reflect::Value::I64(1250));
        use prost_reflect::prost::Message as _;
        let json = decode(&message, &m.encode_to_vec()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"installationId": "inst_1", "totalCents": "1250"}),
            "the canonical mapping: camelCase names, int64 as a string, defaults left out"
        );
        assert!(ProtoSchema::parse("syntax = \"proto3\"; message {", &[]).is_err());
    }
}
