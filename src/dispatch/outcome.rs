//! The outcome table of PRODUCT.md, as one enum produced in one place.
//!
//! `classify` is the only code that looks at an HTTP status to decide what happens next; the
//! delivery loop and the commit path only see an [`Outcome`].

use crate::orceum::client::{PushError, PushResponse};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: commit.
    Delivered,
    /// Transient (429, 5xx, 408, timeouts, connection errors) or a bad secret (401): try again.
    Retry {
        /// The server's `Retry-After`, if any (clamped by the caller).
        after: Option<Duration>,
        /// A short label for metrics and logs: `http_503`, `timeout`, `unauthorized`, ….
        reason: String,
        /// 429: the whole app waits, not only this event.
        pause_app: bool,
    },
    /// Orceum rejected the event (404, 422, other 4xx): dead-letter, then commit.
    DeadLetter { kind: String, reason: String },
    /// Nothing to push (filter false, no route): commit.
    Skipped { reason: String },
}

/// Maps one push attempt's result to what happens next.
pub fn classify(result: &Result<PushResponse, PushError>, retryable: &[u16]) -> Outcome {
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                after: None,
                reason: e.kind().to_string(),
                pause_app: false,
            }
        }
    };
    match resp.status {
        200..=299 => Outcome::Delivered,
        // Never followed (the secret would go with it) and never "delivered": like a bad
        // secret, a misconfiguration that is retried until someone fixes base_url.
        300..=399 => Outcome::Retry {
            after: None,
            reason: "redirect".into(),
            pause_app: false,
        },
        401 => Outcome::Retry {
            after: None,
            reason: "unauthorized".into(),
            pause_app: false,
        },
        429 if retryable.contains(&429) => Outcome::Retry {
            after: resp.retry_after,
            reason: "http_429".into(),
            pause_app: true,
        },
        s if retryable.contains(&s) => Outcome::Retry {
            after: resp.retry_after,
            reason: format!("http_{s}"),
            pause_app: false,
        },
        s => Outcome::DeadLetter {
            kind: format!("http_{s}"),
            reason: format!(
                "Orceum answered {s}{}",
                if resp.excerpt.is_empty() {
                    String::new()
                } else {
                    format!(": {}", resp.excerpt.chars().take(200).collect::<String>())
                }
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> Result<PushResponse, PushError> {
        Ok(PushResponse {
            status: s,
            retry_after: Some(Duration::from_secs(3)),
            excerpt: "{\"error\":\"x\"}".into(),
            redirect_host: None,
        })
    }

    #[test]
    fn the_outcome_table() {
        let retryable = [408, 429, 500, 502, 503, 504];
        assert_eq!(classify(&status(200), &retryable), Outcome::Delivered);
        assert_eq!(classify(&status(202), &retryable), Outcome::Delivered);
        assert!(matches!(
            classify(&status(429), &retryable),
            Outcome::Retry {
                pause_app: true,
                after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            classify(&status(503), &retryable),
            Outcome::Retry {
                pause_app: false,
                ..
            }
        ));
        assert!(matches!(
            classify(&status(408), &retryable),
            Outcome::Retry { .. }
        ));
        assert!(
            matches!(classify(&status(401), &retryable), Outcome::Retry { ref reason, .. } if reason == "unauthorized")
        );
        assert!(
            matches!(classify(&status(404), &retryable), Outcome::DeadLetter { ref kind, .. } if kind == "http_404")
        );
        for s in [301, 302, 303, 307, 308] {
            assert!(
                matches!(classify(&status(s), &retryable), Outcome::Retry { ref reason, .. } if reason == "redirect"),
                "{s}"
            );
        }
        assert!(matches!(
            classify(&status(422), &retryable),
            Outcome::DeadLetter { .. }
        ));
        assert!(matches!(
            classify(&status(400), &retryable),
            Outcome::DeadLetter { .. }
        ));
        let timeout = Err(PushError::Timeout { url: "u".into() });
        assert!(
            matches!(classify(&timeout, &retryable), Outcome::Retry { ref reason, .. } if reason == "timeout")
        );
    }
}
