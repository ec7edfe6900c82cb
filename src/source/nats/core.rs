//! Core NATS subscriptions: one (queue) subscription per subject of a route. At-most-once
//! across a crash (core NATS cannot redeliver); the in-flight slot frees once the message is
//! final or abandoned.

use super::Slot;
use super::{headers, RouteLoop};
use crate::message::{AckHandle, Acknowledge, Final, Message, Origin};
use futures::StreamExt;
use std::sync::Arc;

/// A core NATS message has nothing to ack; its slot frees when it is final or abandoned.
struct CoreAck {
    _permit: Slot,
}

impl Acknowledge for CoreAck {
    fn finish(self: Box<Self>, _outcome: Final) {}
}

impl RouteLoop {
    /// Core NATS: one (queue) subscription per subject.
    pub(super) async fn core(self) {
        let mut subs = futures::stream::SelectAll::new();
        for subject in &self.route.subjects {
            let sub = match &self.route.queue_group {
                Some(q) => {
                    self.client
                        .queue_subscribe(subject.clone(), q.clone())
                        .await
                }
                None => self.client.subscribe(subject.clone()).await,
            };
            match sub {
                Ok(s) => {
                    let pattern: Arc<str> = Arc::from(subject.as_str());
                    subs.push(s.map(move |m| (pattern.clone(), m)).boxed());
                }
                Err(e) => {
                    tracing::error!(source = %self.source, route = %self.route.name, subject, error = %e, "cannot subscribe")
                }
            }
        }
        tracing::info!(source = %self.source, route = %self.route.name, subjects = ?self.route.subjects,
            queue_group = ?self.route.queue_group, "subscribed (core NATS: at-most-once across a crash)");
        loop {
            // The slot is taken once a message is here: an idle subscription holds none. Until
            // then messages wait in the client's subscription buffer (`subscription_capacity`
            // messages; past it they are dropped for a slow consumer, logged).
            let next = tokio::select! {
                m = subs.next() => m,
                _ = self.stop.cancelled() => None,
            };
            let Some((pattern, m)) = next else { break };
            let Some(permit) = self.slot().await else {
                break;
            };
            let msg = Message {
                source: self.source.clone(),
                origin: Origin::Nats {
                    subject: m.subject.to_string(),
                    pattern,
                },
                route: Some(Arc::from(self.route.name.as_str())),
                payload: m.payload.to_vec(),
                key: None,
                headers: headers(m.headers.as_ref()),
                timestamp: Some(chrono::Utc::now()),
            };
            if !self
                .hand_over(msg, AckHandle::new(CoreAck { _permit: permit }))
                .await
            {
                break;
            }
        }
        // Unsubscribing happens when the subscribers drop.
    }
}
