//! Sources turn a bus into [`crate::message::Message`]s, each paired with an
//! [`crate::message::AckHandle`], and hand them to a [`crate::message::Submit`].
//!
//! The engine never knows which bus a message came from: it reads the message, decides its
//! outcome, and finishes the handle once that outcome is final. Everything about one bus lives
//! in its folder (consumer, client settings, dead-letter writer, `check --connect` probe, replay
//! reader): adding a bus is adding a folder here.

pub mod kafka;
pub mod nats;
