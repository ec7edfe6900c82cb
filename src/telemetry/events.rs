//! One struct per thing worth telling an operator: `emit` writes its log line and moves its
//! counter together, so the two never drift and every label is named where it is set (as
//! Vector's `InternalEvent`s do). Label values are bounded (apps, routes, sources, reason
//! labels); coordinates and errors go to the log line only.

use super::metrics::Metrics;

/// A push attempt failed and will be retried.
pub struct PushRetried<'a> {
    pub app: &'a str,
    pub app_id: &'a str,
    pub route: &'a str,
    pub coordinates: &'a str,
    /// `Outcome::label()`: `http_503`, `timeout`, `unauthorized`, `redirect`, ….
    pub reason: &'a str,
    /// Failed attempts of this event so far.
    pub attempts: u32,
    /// For a redirect: the host it pointed at.
    pub location_host: Option<&'a str>,
    /// For a transport failure: what went wrong.
    pub error: Option<&'a dyn std::fmt::Display>,
    /// The message's W3C trace id, when it carries one.
    pub trace_id: Option<&'a str>,
}

impl PushRetried<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics
            .retries
            .with_label_values(&[self.app, self.reason])
            .inc();
        // The first failure and every 20th: an outage must not flood the logs.
        let loud = self.attempts == 1 || self.attempts % 20 == 0;
        let (app, route, coordinates, attempts, trace_id) = (
            self.app,
            self.route,
            self.coordinates,
            self.attempts,
            self.trace_id,
        );
        match (self.reason, self.location_host, self.error) {
            ("unauthorized", _, _) if loud => tracing::error!(app, app_id = self.app_id, route, coordinates, attempts, trace_id,
                "Orceum answered 401: the app's secret or signature is wrong; retrying until the secret is fixed"),
            ("redirect", Some(location_host), _) if loud => tracing::error!(app, route, coordinates, attempts, trace_id, location_host,
                "Orceum answered a redirect, which is never followed (the request carries the secret); fix orceum.base_url; retrying"),
            (_, _, Some(error)) if loud => tracing::warn!(app, coordinates, attempts, trace_id, error = %error, "push failed; will retry"),
            (reason, _, _) => tracing::debug!(app, coordinates, attempts, trace_id, reason, "push will be retried"),
        }
    }
}

/// A message's dead letter was stored (or, without a destination, logged by the writer).
pub struct DeadLettered<'a> {
    pub route: &'a str,
    pub coordinates: &'a str,
    pub kind: &'a str,
    pub reason: &'a str,
    pub status: Option<u16>,
    pub attempts: u32,
    /// `None` when the log-only writer already wrote the line.
    pub destination: Option<&'a str>,
    /// The message's W3C trace id, when it carries one.
    pub trace_id: Option<&'a str>,
}

impl DeadLettered<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics
            .dead_letters
            .with_label_values(&[self.route, self.kind])
            .inc();
        if let Some(destination) = self.destination {
            tracing::warn!(
                route = self.route,
                coordinates = self.coordinates,
                kind = self.kind,
                reason = self.reason,
                http_status = self.status,
                attempts = self.attempts,
                trace_id = self.trace_id,
                destination,
                "dead-lettered"
            );
        }
    }
}

/// A dead letter could not be written; the write is retried and the message stays
/// uncommitted.
pub struct DeadLetterWriteFailed<'a> {
    pub route: &'a str,
    pub coordinates: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl DeadLetterWriteFailed<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics
            .dead_letter_write_failures
            .with_label_values(&[self.route])
            .inc();
        tracing::error!(route = self.route, coordinates = self.coordinates, error = %self.error,
            "cannot write the dead letter; the source message stays uncommitted and the write is retried");
    }
}

/// A message was committed without a push.
pub struct Skipped<'a> {
    /// Empty when no route reads the message.
    pub route: &'a str,
    /// `filter` or `no_route`.
    pub reason: &'static str,
}

impl Skipped<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics
            .skipped
            .with_label_values(&[self.route, self.reason])
            .inc();
        tracing::trace!(route = self.route, reason = self.reason, "skipped");
    }
}

/// An offset commit failed; it is retried with the next one.
pub struct CommitFailed<'a> {
    pub source: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl CommitFailed<'_> {
    pub fn emit(self, metrics: &Metrics) {
        metrics
            .commit_failures
            .with_label_values(&[self.source])
            .inc();
        tracing::warn!(source = self.source, error = %self.error,
            "offset commit failed; it is retried with the next commit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log lines written while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    /// A 503 retried and a 422 dead-lettered, for message `trace_id`.
    fn retry_and_dead_letter(m: &Metrics, trace_id: Option<&str>) {
        PushRetried {
            app: "tasks",
            app_id: "app_1",
            route: "r",
            coordinates: "kafka:t/0@1",
            reason: "http_503",
            attempts: 1,
            location_host: None,
            error: Some(&"connection refused"),
            trace_id,
        }
        .emit(m);
        DeadLettered {
            route: "r",
            coordinates: "kafka:t/0@1",
            kind: "http_422",
            reason: "Orceum answered 422",
            status: Some(422),
            attempts: 1,
            destination: Some("kafka topic dlq"),
            trace_id,
        }
        .emit(m);
    }

    #[test]
    fn a_messages_log_lines_carry_its_trace_id() {
        let m = Metrics::new();
        let text = logged(|| retry_and_dead_letter(&m, Some("4bf92f3577b34da6a3ce929d0e0e4736")));
        assert_eq!(
            text.matches("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"")
                .count(),
            2,
            "{text}"
        );
        assert!(
            text.contains("http_status=422"),
            "a number, not Some(422): {text}"
        );
    }

    #[test]
    fn each_event_moves_its_counter_with_named_labels() {
        let m = Metrics::new();
        retry_and_dead_letter(&m, None);
        Skipped {
            route: "r",
            reason: "filter",
        }
        .emit(&m);
        CommitFailed {
            source: "events",
            error: &"coordinator moved",
        }
        .emit(&m);
        assert_eq!(m.retries.with_label_values(&["tasks", "http_503"]).get(), 1);
        assert_eq!(
            m.dead_letters.with_label_values(&["r", "http_422"]).get(),
            1
        );
        assert_eq!(m.skipped.with_label_values(&["r", "filter"]).get(), 1);
        assert_eq!(m.commit_failures.with_label_values(&["events"]).get(), 1);
    }
}
