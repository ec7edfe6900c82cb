//! `check --connect` for a NATS source: the server answers, every JetStream stream a route
//! reads exists, and every consumer with `create: false` exists. Read-only.

use crate::config::{ConfigError, JetStreamRouteConfig, NatsSourceConfig};
use std::time::Duration;

/// Checks the source `name` and the JetStream routes reading it (`(config path, settings)`).
pub async fn check(
    name: &str,
    n: &NatsSourceConfig,
    routes: &[(String, JetStreamRouteConfig)],
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
    for (path, cfg) in routes {
        let stream = match js.get_stream(&cfg.stream).await {
            Ok(s) => s,
            Err(e) => {
                errors.push(ConfigError::new(
                    format!("{path}.jetstream.stream"),
                    format!("stream {:?}: {e}", cfg.stream),
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
