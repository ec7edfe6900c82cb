//! Protobuf: a message decoded with its descriptor (from the registry, by id and message
//! indexes, or a local descriptor set and message name) and mapped to JSON by the canonical
//! proto3 JSON mapping (lowerCamelCase field names, 64-bit integers as strings, enums by name,
//! `google.protobuf` well-known types in their JSON forms, default values left out).
//!
//! A registered schema is read as the serialized `FileDescriptorProto` (base64), which is what
//! confluent-kafka's serializers register; its references are added to the pool first.

use base64::Engine;
use prost_reflect::{DescriptorPool, DynamicMessage, FileDescriptor, MessageDescriptor};

/// One registered (or local) file's descriptors, with its dependencies.
#[derive(Debug, Clone)]
pub struct ProtoSchema {
    file: FileDescriptor,
}

impl ProtoSchema {
    /// A registered schema: `text` is a base64 `FileDescriptorProto`; `references` the same
    /// for its imports, in dependency order.
    pub fn parse(text: &str, references: &[String]) -> Result<Self, String> {
        let decode = |t: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(t.trim())
                .map_err(|_| {
                    "the registered Protobuf schema is .proto text; this bridge reads schemas registered as serialized descriptors (base64), as confluent-kafka's serializers register them".to_string()
                })
        };
        let mut pool = DescriptorPool::new();
        for r in references {
            pool.decode_file_descriptor_proto(decode(r)?.as_slice())
                .map_err(|e| format!("a referenced Protobuf file does not load: {e}"))?;
        }
        pool.decode_file_descriptor_proto(decode(text)?.as_slice())
            .map_err(|e| format!("not a Protobuf file descriptor: {e}"))?;
        let file = pool
            .files()
            .last()
            .ok_or_else(|| "an empty Protobuf schema".to_string())?;
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
