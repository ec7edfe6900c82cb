//! When a message may be forgotten by its bus.
//!
//! [`offsets::OffsetTracker`] decides the Kafka commit point per partition: only the highest
//! contiguous *final* offset + 1, never past a message that is still retrying.

pub mod offset_map;
pub mod offsets;
