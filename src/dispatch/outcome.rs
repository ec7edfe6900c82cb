//! The outcome table of PRODUCT.md, as one typed enum produced in one place.
//!
//! [`classify`] is the only code that looks at an HTTP status to decide what happens next;
//! the delivery loop, `replay` and the metrics only see an [`Outcome`], and its
//! [`label`](Outcome::label) is the one spelling of it in metrics and logs.

use crate::orceum::client::{PushError, PushResponse};
use std::borrow::Cow;
use std::time::Duration;

/// Why a transient failure happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// 5xx, 408, 425 or another status listed in `delivery.retry.retryable_statuses`.
    Status(u16),
    /// No answer within `orceum.timeout`.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// Any other transport failure (reset, TLS, protocol).
    Transport,
}

/// What happens next with one event after a push attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: final, commit.
    Delivered,
    /// 429: retry after `Retry-After` (clamped by the policy), and the whole app waits.
    Throttled { after: Option<Duration> },
    /// A transient failure: retry with backoff (or after `Retry-After` where given).
    Transient {
        after: Option<Duration>,
        cause: Cause,
    },
    /// 401: the app's secret or signature is wrong; retried (a fixed secret resumes), loudly.
    Unauthorized,
    /// 3xx: never followed (the request carries the secret); retried like a 401, loudly.
    Redirected { host: String },
    /// 404, 422, any other 4xx: Orceum rejected this event; dead-letter, then commit.
    Rejected { status: u16, excerpt: String },
}

impl Outcome {
    /// The label for metrics and logs: `delivered`, `http_429`, `http_503`, `timeout`,
    /// `connect`, `transport`, `unauthorized`, `redirect`, `http_404`, ….
    pub fn label(&self) -> Cow<'static, str> {
        match self {
            Outcome::Delivered => "delivered".into(),
            Outcome::Throttled { .. } => "http_429".into(),
            Outcome::Transient { cause, .. } => match cause {
                Cause::Status(s) => format!("http_{s}").into(),
                Cause::Timeout => "timeout".into(),
                Cause::Connect => "connect".into(),
                Cause::Transport => "transport".into(),
            },
            Outcome::Unauthorized => "unauthorized".into(),
            Outcome::Redirected { .. } => "redirect".into(),
            Outcome::Rejected { status, .. } => format!("http_{status}").into(),
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Outcome::Delivered | Outcome::Rejected { .. })
    }

    /// The server's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Throttled { after } | Outcome::Transient { after, .. } => *after,
            _ => None,
        }
    }

    /// The dead-letter reason of a rejection: the status and a short excerpt of the answer.
    pub fn rejection_reason(status: u16, excerpt: &str) -> String {
        if excerpt.is_empty() {
            format!("Orceum answered {status}")
        } else {
            format!(
                "Orceum answered {status}: {}",
                excerpt.chars().take(200).collect::<String>()
            )
        }
    }
}

/// Maps one push attempt's result to what happens next. 429, every 5xx and every transport
/// error are always transient (docs/configuration.md); `retryable` adds other statuses
/// (408, 425, …) to them.
pub fn classify(result: &Result<PushResponse, PushError>, retryable: &[u16]) -> Outcome {
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            let cause = match e {
                PushError::Timeout { .. } => Cause::Timeout,
                PushError::Connect { .. } => Cause::Connect,
                PushError::Other { .. } => Cause::Transport,
            };
            return Outcome::Transient { after: None, cause };
        }
    };
    match resp.status {
        200..=299 => Outcome::Delivered,
        // Never followed (the secret would go with it) and never "delivered": like a bad
        // secret, a misconfiguration that is retried until someone fixes base_url.
        300..=399 => Outcome::Redirected {
            host: resp
                .redirect_host
                .clone()
                .unwrap_or_else(|| "(no Location)".into()),
        },
        401 => Outcome::Unauthorized,
        429 => Outcome::Throttled {
            after: resp.retry_after,
        },
        s if s >= 500 || retryable.contains(&s) => Outcome::Transient {
            after: resp.retry_after,
            cause: Cause::Status(s),
        },
        s => Outcome::Rejected {
            status: s,
            excerpt: resp.excerpt.clone(),
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
            answer: None,
            redirect_host: (300..400).contains(&s).then(|| "elsewhere.example".into()),
        })
    }

    #[test]
    fn the_outcome_table() {
        let retryable = [408, 429, 500, 502, 503, 504];
        let label = |s: u16| classify(&status(s), &retryable).label().into_owned();
        assert_eq!(classify(&status(200), &retryable), Outcome::Delivered);
        assert_eq!(classify(&status(202), &retryable), Outcome::Delivered);
        assert_eq!(
            classify(&status(429), &retryable),
            Outcome::Throttled {
                after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            classify(&status(503), &retryable),
            Outcome::Transient {
                after: Some(Duration::from_secs(3)),
                cause: Cause::Status(503)
            }
        );
        assert_eq!(label(408), "http_408");
        assert_eq!(classify(&status(401), &retryable), Outcome::Unauthorized);
        for s in [301, 302, 303, 307, 308] {
            assert_eq!(
                classify(&status(s), &retryable),
                Outcome::Redirected {
                    host: "elsewhere.example".into()
                },
                "{s}"
            );
        }
        for s in [400, 404, 422] {
            assert!(
                matches!(classify(&status(s), &retryable), Outcome::Rejected { status, .. } if status == s)
            );
            assert_eq!(label(s), format!("http_{s}"));
        }
        let timeout = Err(PushError::Timeout { url: "u".into() });
        assert_eq!(classify(&timeout, &retryable).label(), "timeout");
        assert!(!classify(&status(422), &retryable).is_retryable());
        assert!(classify(&status(401), &retryable).is_retryable());
    }

    #[test]
    fn throttling_5xx_and_transport_errors_retry_whatever_the_list_says() {
        // The documented example list of extra statuses: 409 only.
        let only = [409];
        assert!(classify(&status(429), &only).is_retryable());
        assert!(classify(&status(503), &only).is_retryable());
        assert!(classify(&status(599), &only).is_retryable());
        assert!(classify(&status(409), &only).is_retryable());
        assert!(!classify(&status(408), &only).is_retryable());
        let refused = Err(PushError::Connect {
            url: "u".into(),
            reason: "refused".into(),
        });
        assert!(classify(&refused, &[]).is_retryable());
    }
}
