//! From config text to a [`Bridge`]: parse, then check everything serde cannot, collecting every
//! error with its path so `check` prints them all at once.

use super::secret::AppSecret;
use super::*;
use crate::route::template::JqTemplate;
use crate::route::{EventTemplate, Route};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Every error found in one config, in file order.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} error{} in the configuration:",
            self.file,
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One app, ready to push to.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub app_id: String,
    pub secret: AppSecret,
    pub rate_limit: Option<RateLimitConfig>,
}

/// A validated configuration: the form the engine is built from.
#[derive(Debug)]
pub struct Bridge {
    pub orceum: OrceumConfig,
    pub apps: BTreeMap<String, App>,
    pub sources: BTreeMap<String, SourceConfig>,
    pub routes: Vec<Arc<Route>>,
    pub delivery: DeliveryConfig,
    pub observability: ObservabilityConfig,
}

impl Bridge {
    /// One line for `check`: what this config will do.
    pub fn summary(&self) -> String {
        let topics: BTreeSet<&str> = self
            .routes
            .iter()
            .flat_map(|r| r.topics.iter().map(String::as_str))
            .collect();
        format!(
            "{} route(s) over {} topic(s) from {} source(s) to {} app(s); dead letter: {}",
            self.routes.len(),
            topics.len(),
            self.sources.len(),
            self.apps.len(),
            match &self.delivery.dead_letter {
                Some(DeadLetterConfig::Kafka(k)) => format!("kafka topic {}", k.topic),
                Some(DeadLetterConfig::Nats(n)) => format!("nats subject {}", n.subject),
                None => "none (log and count)".into(),
            }
        )
    }

    /// The routes a message goes through: the route whose subscription received it (NATS),
    /// or every route reading its topic from its source (Kafka).
    pub fn routes_for<'a>(
        &'a self,
        msg: &'a crate::message::Message,
    ) -> impl Iterator<Item = &'a Arc<Route>> + 'a {
        self.routes.iter().filter(move |r| match &msg.route {
            Some(name) => r.name == **name,
            None => r.source == *msg.source && r.topics.iter().any(|t| t == msg.origin.channel()),
        })
    }
}

/// Reads, interpolates, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Bridge, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError::new("", format!("cannot read the file: {e}"))],
    })?;
    load_str(&text, &file, |name| std::env::var(name).ok())
}

/// [`load_file`] on text, with an explicit environment (tests).
pub fn load_str(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Bridge, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        file: file.to_string(),
        errors,
    };
    // A missing variable is reported, then parsing goes on so later errors show up too.
    let (text, mut errors) = interpolate::interpolate(text, &env);
    let de = yaml_serde::Deserializer::from_str(&text);
    let parsed: ConfigFile = match serde_path_to_error::deserialize(de) {
        Ok(c) => c,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let mut message = e.into_inner().to_string();
            // yaml_serde prefixes its message with (part of) the path; keep the path once.
            if let Some((head, rest)) = message.split_once(": ") {
                if !head.is_empty() && path.starts_with(head) {
                    message = rest.to_string();
                }
            }
            errors.push(ConfigError::new(path, message));
            return Err(fail(errors));
        }
    };
    match validate_with(parsed, &env) {
        Ok(bridge) if errors.is_empty() => Ok(bridge),
        Ok(_) => Err(fail(errors)),
        Err(more) => {
            errors.extend(more);
            Err(fail(errors))
        }
    }
}

fn compile(errors: &mut Vec<ConfigError>, path: String, code: &str) -> Option<JqTemplate> {
    match JqTemplate::compile(code) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(ConfigError::new(path, e));
            None
        }
    }
}

/// Checks a parsed config; every problem is collected.
pub fn validate(file: ConfigFile) -> Result<Bridge, Vec<ConfigError>> {
    validate_with(file, &|name| std::env::var(name).ok())
}

/// [`validate`] with an explicit environment for `{env: …}` secrets.
pub fn validate_with(
    file: ConfigFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Bridge, Vec<ConfigError>> {
    let mut errors = Vec::new();

    check_base_url(&file.orceum, &mut errors);
    if let Some(ca) = &file.orceum.ca_file {
        match std::fs::read(ca) {
            Ok(pem) => {
                if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) {
                    errors.push(ConfigError::new(
                        "orceum.ca_file",
                        format!("{} holds no PEM certificate", ca.display()),
                    ));
                }
            }
            Err(e) => errors.push(ConfigError::new(
                "orceum.ca_file",
                format!("cannot read {}: {e}", ca.display()),
            )),
        }
    }
    if file.orceum.timeout.is_zero() {
        errors.push(ConfigError::new("orceum.timeout", "must be more than 0"));
    }

    let mut apps = BTreeMap::new();
    if file.apps.is_empty() {
        errors.push(ConfigError::new("apps", "at least one app is needed"));
    }
    for (name, app) in &file.apps {
        let path = format!("apps.{name}");
        if app.app_id.trim().is_empty() || app.app_id.contains('/') {
            errors.push(ConfigError::new(
                format!("{path}.app_id"),
                "must be a non-empty id without '/' (e.g. app_123)",
            ));
        }
        if let Some(rl) = app.rate_limit {
            if rl.per_second == 0 {
                errors.push(ConfigError::new(
                    format!("{path}.rate_limit.per_second"),
                    "must be at least 1 (remove rate_limit for no limit)",
                ));
            }
            if rl.burst == Some(0) {
                errors.push(ConfigError::new(
                    format!("{path}.rate_limit.burst"),
                    "must be at least 1",
                ));
            }
        }
        match AppSecret::resolve_with(&app.secret, env) {
            Ok(secret) => {
                apps.insert(
                    name.clone(),
                    App {
                        name: name.clone(),
                        app_id: app.app_id.clone(),
                        secret,
                        rate_limit: app.rate_limit,
                    },
                );
            }
            Err(e) => errors.push(ConfigError::new(format!("{path}.secret"), e.to_string())),
        }
    }

    if file.sources.is_empty() {
        errors.push(ConfigError::new("sources", "at least one source is needed"));
    }
    for (name, source) in &file.sources {
        match source {
            SourceConfig::Kafka(k) => {
                if k.bootstrap_servers.trim().is_empty() {
                    errors.push(ConfigError::new(
                        format!("sources.{name}.kafka.bootstrap_servers"),
                        "must name at least one broker (host:port)",
                    ));
                }
                if k.group_id.trim().is_empty() {
                    errors.push(ConfigError::new(
                        format!("sources.{name}.kafka.group_id"),
                        "must not be empty",
                    ));
                }
                match crate::source::kafka::check_properties(name, k) {
                    Ok(()) => {}
                    Err(e) => errors.push(ConfigError::new(
                        format!("sources.{name}.kafka.properties"),
                        e,
                    )),
                }
                for key in k.properties.keys() {
                    if matches!(
                        key.as_str(),
                        "enable.auto.commit"
                            | "enable.auto.offset.store"
                            | "group.id"
                            | "bootstrap.servers"
                    ) {
                        errors.push(ConfigError::new(
                            format!("sources.{name}.kafka.properties.{key}"),
                            "is set by the bridge (auto-commit stays off for at-least-once; use group_id / bootstrap_servers)",
                        ));
                    }
                }
            }
            SourceConfig::Nats(n) => {
                let path = format!("sources.{name}.nats");
                if n.url.trim().is_empty() {
                    errors.push(ConfigError::new(
                        format!("{path}.url"),
                        "must name at least one server, e.g. nats://localhost:4222",
                    ));
                }
                for (key, secret) in [("token", &n.token), ("password", &n.password)] {
                    if let Some(secret) = secret {
                        if let Err(e) = super::secret::read_plain(secret, env) {
                            errors.push(ConfigError::new(format!("{path}.{key}"), e.to_string()));
                        }
                    }
                }
                if n.password.is_some() != n.user.is_some() {
                    errors.push(ConfigError::new(
                        format!("{path}.user"),
                        "user and password go together",
                    ));
                }
                for (key, file) in [
                    ("credentials_file", &n.credentials_file),
                    ("nkey_seed_file", &n.nkey_seed_file),
                    (
                        "tls.ca_file",
                        &n.tls.as_ref().and_then(|t| t.ca_file.clone()),
                    ),
                    (
                        "tls.cert_file",
                        &n.tls.as_ref().and_then(|t| t.cert_file.clone()),
                    ),
                    (
                        "tls.key_file",
                        &n.tls.as_ref().and_then(|t| t.key_file.clone()),
                    ),
                ] {
                    if let Some(f) = file {
                        if !f.is_file() {
                            errors.push(ConfigError::new(
                                format!("{path}.{key}"),
                                format!("{} is not a readable file", f.display()),
                            ));
                        }
                    }
                }
                if let Some(t) = &n.tls {
                    if t.cert_file.is_some() != t.key_file.is_some() {
                        errors.push(ConfigError::new(
                            format!("{path}.tls"),
                            "cert_file and key_file go together",
                        ));
                    }
                }
            }
        }
    }

    let mut routes = Vec::new();
    let mut names = BTreeSet::new();
    if file.routes.is_empty() {
        errors.push(ConfigError::new("routes", "at least one route is needed"));
    }
    for (i, r) in file.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if r.name.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        } else if !names.insert(r.name.clone()) {
            errors.push(ConfigError::new(
                format!("{path}.name"),
                format!(
                    "{:?} is used by an earlier route; route names must be unique",
                    r.name
                ),
            ));
        }
        match file.sources.get(&r.source) {
            None => errors.push(ConfigError::new(
                format!("{path}.source"),
                format!(
                    "{:?} is not a source; defined: {}",
                    r.source,
                    keys(&file.sources)
                ),
            )),
            Some(SourceConfig::Kafka(_)) => {
                if r.subjects.is_some() || r.jetstream.is_some() {
                    errors.push(ConfigError::new(
                        format!("{path}.source"),
                        "a kafka source takes `topics`, not `subjects`/`jetstream`",
                    ));
                }
                match &r.topics {
                    Some(t) if !t.is_empty() && t.iter().all(|t| !t.trim().is_empty()) => {}
                    _ => errors.push(ConfigError::new(
                        format!("{path}.topics"),
                        "a kafka route needs a non-empty list of topics, e.g. topics: [tasks]",
                    )),
                }
            }
            Some(SourceConfig::Nats(_)) => {
                if r.topics.is_some() {
                    errors.push(ConfigError::new(
                        format!("{path}.topics"),
                        "a nats source takes `subjects` (core NATS) or `jetstream`, not `topics`",
                    ));
                }
                match (&r.subjects, &r.jetstream) {
                    (Some(subjects), None) => {
                        if subjects.is_empty() {
                            errors.push(ConfigError::new(format!("{path}.subjects"), "must list at least one subject, e.g. [\"orders.>\"]"));
                        }
                        for (j, subject) in subjects.iter().enumerate() {
                            if let Err(e) = check_subject(subject, true) {
                                errors.push(ConfigError::new(format!("{path}.subjects[{j}]"), e));
                            }
                        }
                        if let Some(q) = &r.queue_group {
                            if check_name(q).is_err() {
                                errors.push(ConfigError::new(format!("{path}.queue_group"), format!("{q:?} must be a single token without spaces, '.', '*' or '>'")));
                            }
                        }
                    }
                    (None, Some(js)) => {
                        if let Err(e) = check_name(&js.stream) {
                            errors.push(ConfigError::new(format!("{path}.jetstream.stream"), e));
                        }
                        if let Err(e) = check_name(&js.durable) {
                            errors.push(ConfigError::new(format!("{path}.jetstream.durable"), e));
                        }
                        if let Some(f) = &js.filter_subject {
                            if let Err(e) = check_subject(f, true) {
                                errors.push(ConfigError::new(format!("{path}.jetstream.filter_subject"), e));
                            }
                        }
                        if r.queue_group.is_some() {
                            errors.push(ConfigError::new(format!("{path}.queue_group"), "is for core NATS subjects; JetStream replicas share the durable consumer"));
                        }
                    }
                    _ => errors.push(ConfigError::new(
                        path.clone(),
                        "a nats route needs exactly one of `subjects: [...]` (core NATS) or `jetstream: { stream, durable }`",
                    )),
                }
            }
        }
        if !file.apps.contains_key(&r.app) {
            errors.push(ConfigError::new(
                format!("{path}.app"),
                format!("{:?} is not an app; defined: {}", r.app, keys(&file.apps)),
            ));
        }
        let filter = r
            .filter
            .as_deref()
            .and_then(|f| compile(&mut errors, format!("{path}.filter"), f));
        let e = &r.event;
        let ep = format!("{path}.event");
        let installation_id = compile(
            &mut errors,
            format!("{ep}.installation_id"),
            &e.installation_id,
        );
        let event_type = compile(&mut errors, format!("{ep}.event_type"), &e.event_type);
        let event_data = compile(&mut errors, format!("{ep}.event_data"), &e.event_data);
        let mut optional = |field: &str, code: &Option<String>| -> Result<Option<JqTemplate>, ()> {
            match code {
                None => Ok(None),
                Some(c) => compile(&mut errors, format!("{ep}.{field}"), c)
                    .map(Some)
                    .ok_or(()),
            }
        };
        let timestamp = optional("timestamp", &e.timestamp);
        let priority = optional("priority", &e.priority);
        let metadata = optional("metadata", &e.metadata);
        if let (
            Some(installation_id),
            Some(event_type),
            Some(event_data),
            Ok(timestamp),
            Ok(priority),
            Ok(metadata),
        ) = (
            installation_id,
            event_type,
            event_data,
            timestamp,
            priority,
            metadata,
        ) {
            routes.push(Arc::new(Route {
                name: r.name.clone(),
                source: r.source.clone(),
                topics: r.topics.clone().unwrap_or_default(),
                subjects: r.subjects.clone().unwrap_or_default(),
                queue_group: r.queue_group.clone(),
                jetstream: r.jetstream.clone(),
                app: r.app.clone(),
                filter,
                event: EventTemplate {
                    installation_id,
                    event_type,
                    event_data,
                    timestamp,
                    priority,
                    metadata,
                },
                source_metadata: r.source_metadata,
                reads_meta: Default::default(),
            }));
        }
    }

    let d = &file.delivery;
    if d.max_in_flight == 0 {
        errors.push(ConfigError::new(
            "delivery.max_in_flight",
            "must be at least 1",
        ));
    }
    if d.max_in_flight_per_partition == Some(0) {
        errors.push(ConfigError::new(
            "delivery.max_in_flight_per_partition",
            "must be at least 1",
        ));
    }
    if d.retry.initial_backoff.is_zero() || d.retry.initial_backoff > d.retry.max_backoff {
        errors.push(ConfigError::new(
            "delivery.retry.initial_backoff",
            "must be more than 0 and at most delivery.retry.max_backoff",
        ));
    }
    if d.max_message_bytes == 0 {
        errors.push(ConfigError::new(
            "delivery.max_message_bytes",
            "must be at least 1 (every message would be dead-lettered)",
        ));
    }
    if d.commit_interval.is_zero() {
        errors.push(ConfigError::new(
            "delivery.commit_interval",
            "must be more than 0",
        ));
    }
    match &d.dead_letter {
        Some(DeadLetterConfig::Kafka(k)) => {
            if !matches!(file.sources.get(&k.source), Some(SourceConfig::Kafka(_))) {
                errors.push(ConfigError::new(
                    "delivery.dead_letter.kafka.source",
                    format!(
                        "{:?} is not a kafka source; defined: {}",
                        k.source,
                        keys(&file.sources)
                    ),
                ));
            }
            if k.topic.trim().is_empty() {
                errors.push(ConfigError::new(
                    "delivery.dead_letter.kafka.topic",
                    "must not be empty",
                ));
            }
            if file
                .routes
                .iter()
                .any(|r| r.source == k.source && r.topics.iter().flatten().any(|t| *t == k.topic))
            {
                errors.push(ConfigError::new(
                    "delivery.dead_letter.kafka.topic",
                    format!(
                        "{:?} is also read by a route: dead letters would loop",
                        k.topic
                    ),
                ));
            }
        }
        Some(DeadLetterConfig::Nats(n)) => {
            if !matches!(file.sources.get(&n.source), Some(SourceConfig::Nats(_))) {
                errors.push(ConfigError::new(
                    "delivery.dead_letter.nats.source",
                    format!(
                        "{:?} is not a nats source; defined: {}",
                        n.source,
                        keys(&file.sources)
                    ),
                ));
            }
            if let Err(e) = check_subject(&n.subject, false) {
                errors.push(ConfigError::new("delivery.dead_letter.nats.subject", e));
            }
        }
        None => {}
    }
    if file
        .observability
        .listen
        .parse::<std::net::SocketAddr>()
        .is_err()
    {
        errors.push(ConfigError::new(
            "observability.listen",
            format!(
                "{:?} is not an address like 0.0.0.0:9464",
                file.observability.listen
            ),
        ));
    }

    if errors.is_empty() {
        Ok(Bridge {
            orceum: file.orceum,
            apps,
            sources: file.sources,
            routes,
            delivery: file.delivery,
            observability: file.observability,
        })
    } else {
        Err(errors)
    }
}

/// A NATS subject: dot-separated non-empty tokens without spaces; `*` as a whole token and
/// `>` as the last token only where wildcards are allowed.
pub fn check_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!(
                "{subject:?} has an empty token; subjects look like orders.created or orders.>"
            ));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(format!("{subject:?} contains whitespace"));
        }
        let wild = *t == "*" || *t == ">";
        if wild && !wildcards {
            return Err(format!("{subject:?}: wildcards are not allowed here"));
        }
        if *t == ">" && i != tokens.len() - 1 {
            return Err(format!("{subject:?}: '>' must be the last token"));
        }
        if !wild && (t.contains('*') || t.contains('>')) {
            return Err(format!("{subject:?}: '*' and '>' must be whole tokens"));
        }
    }
    Ok(())
}

/// A stream, consumer or queue name: one token, no spaces, dots, wildcards or slashes.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        Err(format!(
            "{name:?} must be non-empty, without spaces, '.', '*', '>', '/' or '\\'"
        ))
    } else {
        Ok(())
    }
}

fn keys<V>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        "none".into()
    } else {
        map.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn check_base_url(o: &OrceumConfig, errors: &mut Vec<ConfigError>) {
    let url = match reqwest::Url::parse(&o.base_url) {
        Ok(u) => u,
        Err(e) => {
            errors.push(ConfigError::new(
                "orceum.base_url",
                format!("{:?} is not a URL: {e}", o.base_url),
            ));
            return;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback && !o.allow_insecure_http {
                errors.push(ConfigError::new(
                    "orceum.base_url",
                    "plain http:// to a non-loopback host would send the secret in clear; use https:// or set orceum.allow_insecure_http: true",
                ));
            }
        }
        other => errors.push(ConfigError::new(
            "orceum.base_url",
            format!("scheme {other:?} is not supported; use https://"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
orceum: { base_url: "http://127.0.0.1:8080/v1", timeout: 2s }
apps:
  tasks: { app_id: app_1, secret: { env: SECRET_A }, rate_limit: { per_second: 5 } }
sources:
  events: { kafka: { bootstrap_servers: "${BROKERS}", group_id: g } }
routes:
  - name: done
    source: events
    topics: [tasks]
    app: tasks
    event: { installation_id: .inst, event_type: '"task.completed"', event_data: '{id}' }
delivery: { retry: { max_elapsed: none } }
"#;

    fn env(n: &str) -> Option<String> {
        match n {
            "SECRET_A" => Some("whs_a".into()),
            "BROKERS" => Some("localhost:9092".into()),
            _ => None,
        }
    }

    #[test]
    fn a_good_config_loads_with_defaults() {
        let b = load_str(GOOD, "t.yaml", env).unwrap();
        assert_eq!(b.routes.len(), 1);
        assert_eq!(b.delivery.max_in_flight, 256);
        assert_eq!(b.delivery.retry.max_elapsed, None);
        assert!(b.summary().contains("1 route(s)"));
    }

    #[test]
    fn three_mistakes_give_three_errors_with_paths() {
        let bad = GOOD
            .replace("SECRET_A", "SECRET_MISSING")
            .replace("'{id}'", "'{id'")
            .replace("app: tasks", "app: nope");
        let errs = load_str(&bad, "t.yaml", env).unwrap_err().errors;
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "apps.tasks.secret",
                "routes[0].app",
                "routes[0].event.event_data"
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let bad = GOOD.replace("timeout: 2s", "timeout: 2s, timout: 3s");
        let errs = load_str(&bad, "t.yaml", env).unwrap_err().errors;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].path.starts_with("orceum"), "{errs:?}");
        assert!(errs[0].message.contains("timout"), "{errs:?}");
    }

    #[test]
    fn nats_subjects_and_names_are_checked() {
        assert!(check_subject("orders.>", true).is_ok());
        assert!(check_subject("tasks.*.done", true).is_ok());
        assert!(check_subject("orders.>.x", true).is_err());
        assert!(check_subject("orders..x", true).is_err());
        assert!(check_subject("orders.*", false).is_err());
        assert!(check_subject("ord*ers", true).is_err());
        assert!(check_name("TASKS").is_ok());
        assert!(check_name("my.durable").is_err());
    }

    #[test]
    fn plain_http_to_a_remote_host_is_refused() {
        let bad = GOOD.replace("127.0.0.1", "orceum.example.com");
        let errs = load_str(&bad, "t.yaml", env).unwrap_err().errors;
        assert_eq!(errs[0].path, "orceum.base_url");
    }
}
