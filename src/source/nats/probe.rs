//! `check --connect` for a NATS source: the server answers, every JetStream stream a route
//! reads exists, every consumer with `create: false` exists, and a stream captures the
//! dead-letter subject (else every dead letter would wait for ever). Read-only.

use crate::config::{ConfigError, JetStreamRouteConfig, NatsSourceConfig};
use std::time::Duration;

/// Checks the source `name`, the JetStream routes reading it (`(config path, settings)`) and,
/// when dead letters go through it, that a stream captures their subject.
pub async fn check(
    name: &str,
    n: &NatsSourceConfig,
    routes: &[(String, JetStreamRouteConfig)],
    dead_letter_subject: Option<&str>,
    timeout: Duration,
    errors: &mut Vec<ConfigError>,
) {
    let path = format!("sources.{name}.nats");
    let client = match tokio::time::timeout(timeout, super::connect(name, n, None)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            errors.push(ConfigError::new(path, e.to_string()));
            return;
        }
        Err(_) => {
            errors.push(ConfigError::new(
                path,
                format!("no answer from {} within {timeout:?}", n.url),
            ));
            return;
        }
    };
    // With retry_on_initial_connect, connect returns before the connection is up.
    if tokio::time::timeout(timeout, client.flush())
        .await
        .map(|r| r.is_err())
        .unwrap_or(true)
    {
        errors.push(ConfigError::new(
            path,
            format!("cannot reach {} within {timeout:?}", n.url),
        ));
        return;
    }
    let js = async_nats::jetstream::new(client);
    if let Some(subject) = dead_letter_subject {
        use async_nats::jetstream::context::GetStreamByNameErrorKind;
        let found = tokio::time::timeout(timeout, js.stream_by_subject(subject)).await;
        let problem = match found {
            Ok(Ok(_)) => None,
            Ok(Err(e)) if matches!(e.kind(), GetStreamByNameErrorKind::NotFound) => Some(format!(
                "no JetStream stream captures the dead-letter subject {subject:?}: every dead letter would wait for one; create a stream for it (`nats stream add DEAD_LETTERS --subjects '{subject}'`, docs/nats.md)"
            )),
            Ok(Err(e)) => Some(format!("cannot ask which stream captures {subject:?}: {e}")),
            Err(_) => Some(format!(
                "no answer within {timeout:?} to which stream captures {subject:?}"
            )),
        };
        if let Some(problem) = problem {
            errors.push(ConfigError::new(
                "delivery.dead_letter.nats.subject",
                problem,
            ));
        }
    }
    for (path, cfg) in routes {
        let stream = match js.get_stream(&cfg.stream).await {
            Ok(s) => s,
            Err(e) => {
                errors.push(ConfigError::new(
                    format!("{path}.jetstream.stream"),
                    super::stream_error(&cfg.stream, &e),
                ));
                continue;
            }
        };
        if !cfg.create {
            if let Err(e) = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&cfg.durable)
                .await
            {
                errors.push(ConfigError::new(
                    format!("{path}.jetstream.durable"),
                    format!(
                        "consumer {:?} on stream {:?}: {e}; create it or set create: true",
                        cfg.durable, cfg.stream
                    ),
                ));
            }
        }
    }
}
