//! Which routes a message goes through.

use super::Route;
use crate::message::Message;
use std::sync::Arc;

/// The routes a message goes through: the route whose subscription received it (NATS),
/// or every route reading its topic from its source (Kafka).
pub fn routes_for<'a>(
    routes: &'a [Arc<Route>],
    msg: &'a Message,
) -> impl Iterator<Item = &'a Arc<Route>> + 'a {
    routes.iter().filter(move |r| match &msg.route {
        Some(name) => r.name == **name,
        None => r.source == *msg.source && r.topics.iter().any(|t| t == msg.origin.channel()),
    })
}
