//! Parsed config → the running [`Bridge`]: everything serde cannot check (references between
//! sections, secrets, templates, each bus's own settings), one function per section, every
//! error collected with its path so `check` prints them all at once.
//!
//! This is where the stages meet the contract: `config` knows nothing of the engine, and each
//! bus checks its own settings (`source::kafka::check_config`, `source::nats::check_config`).

mod proxy;

use crate::config::secret::{self, SecretError};
use crate::config::*;
use crate::dispatch::lane::AppLimits;
use crate::orceum::app::{App, AppSecret, Reload};
use crate::route::template::{JqTemplate, Surroundings};
use crate::route::{EventTemplate, Route};
use crate::source;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// A validated configuration: the form the engine is built from.
#[derive(Debug)]
pub struct Bridge {
    pub orceum: OrceumConfig,
    /// `schema_registry:`, resolved (its password read).
    pub schema_registry: Option<crate::format::registry::RegistrySettings>,
    /// `orceum.proxy`, resolved (credentials read, `from_env` looked up).
    pub proxy: Option<crate::orceum::proxy::Proxy>,
    pub apps: BTreeMap<String, App>,
    /// Each app's rate limit and held budgets, by app name.
    pub app_limits: BTreeMap<String, AppLimits>,
    pub sources: BTreeMap<String, SourceConfig>,
    pub routes: Vec<Arc<Route>>,
    pub delivery: DeliveryConfig,
    pub observability: ObservabilityConfig,
    /// `lookups:`: the tables templates read, empty until their followers fill them.
    pub lookups: crate::lookup::Tables,
}

impl Bridge {
    /// One line for `check`: what this config will do.
    pub fn summary(&self) -> String {
        let topics: BTreeSet<&str> = self
            .routes
            .iter()
            .flat_map(|r| r.topics.iter().map(String::as_str))
            .collect();
        let streams: BTreeSet<&str> = self
            .routes
            .iter()
            .filter_map(|r| r.jetstream.as_ref().map(|j| j.stream.as_str()))
            .collect();
        let subjects: BTreeSet<&str> = self
            .routes
            .iter()
            .filter(|r| r.jetstream.is_none())
            .flat_map(|r| r.subjects.iter().map(String::as_str))
            .collect();
        let mut read = Vec::new();
        for (n, what) in [
            (topics.len(), "Kafka topic(s)"),
            (streams.len(), "JetStream stream(s)"),
            (subjects.len(), "NATS subject(s)"),
        ] {
            if n > 0 {
                read.push(format!("{n} {what}"));
            }
        }
        let via = match &self.proxy {
            Some(p) => format!("; Orceum through proxy {}", p.describe()),
            None => String::new(),
        };
        format!(
            "{} route(s) over {} from {} source(s) to {} app(s); dead letter: {}{via}",
            self.routes.len(),
            if read.is_empty() {
                "nothing".into()
            } else {
                read.join(", ")
            },
            self.sources.len(),
            self.apps.len(),
            match &self.delivery.dead_letter {
                Some(DeadLetterConfig::Kafka(k)) => format!("kafka topic {}", k.topic),
                Some(DeadLetterConfig::Nats(n)) => format!("nats subject {}", n.subject),
                None => "none (log and count)".into(),
            }
        )
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
    let (parsed, mut errors) = parse(text, &env).map_err(fail)?;
    match validate_with(parsed, &env) {
        Ok(bridge) if errors.is_empty() => Ok(bridge),
        Ok(_) => Err(fail(errors)),
        Err(more) => {
            // A value whose variable is missing was interpolated as empty: what validation
            // says of it (`"" is not a URL`) follows from the missing variable, already
            // reported at that path.
            let interpolated: Vec<String> = errors
                .iter()
                .flat_map(|e| std::iter::once(&e.path).chain(&e.also))
                .cloned()
                .collect();
            errors.extend(
                more.into_iter()
                    .filter(|e| !interpolated.iter().any(|p| follows_from(&e.path, p))),
            );
            Err(fail(errors))
        }
    }
}

/// Whether an error at `path` concerns the value at `reported` or something inside it.
fn follows_from(path: &str, reported: &str) -> bool {
    match path.strip_prefix(reported) {
        Some(rest) => rest.is_empty() || rest.starts_with(['.', '[']),
        None => false,
    }
}

fn compile(
    errors: &mut Vec<ConfigError>,
    around: &Surroundings,
    path: String,
    code: &str,
) -> Option<JqTemplate> {
    match JqTemplate::compile_in(code, around) {
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
    orceum(&file.orceum, &mut errors);
    let schema_registry = file
        .schema_registry
        .as_ref()
        .and_then(|r| registry_settings(r, file.orceum.allow_insecure_http, env, &mut errors));
    let proxy = file.orceum.proxy.as_ref().and_then(|p| {
        proxy::resolve(
            p,
            &file.orceum.base_url,
            file.orceum.allow_insecure_http,
            env,
            &mut errors,
        )
    });
    let apps = apps(&file, env, &mut errors);
    sources(&file, env, &mut errors);
    let lookups = lookups(&file, &mut errors);
    let routes = routes(&file, &lookups, &mut errors);
    delivery(&file, &mut errors);
    dead_letter(&file, &mut errors);
    observability(&file, &mut errors);
    let app_limits = app_limits(&file);
    if errors.is_empty() {
        Ok(Bridge {
            schema_registry,
            orceum: file.orceum,
            proxy,
            app_limits,
            apps,
            sources: file.sources,
            routes,
            delivery: file.delivery,
            observability: file.observability,
            lookups,
        })
    } else {
        Err(errors)
    }
}

/// `orceum:`: the base URL (https, or http to loopback), the CA file, the timeout.
fn orceum(o: &OrceumConfig, errors: &mut Vec<ConfigError>) {
    check_base_url(o, errors);
    if let Some(ca) = &o.ca_file {
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
    if o.timeout.is_zero() {
        errors.push(ConfigError::new("orceum.timeout", "must be more than 0"));
    }
}

/// `apps:`: ids, rate limits, and each secret resolved now.
fn apps(
    file: &ConfigFile,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, App> {
    let mut apps = BTreeMap::new();
    if file.apps.is_empty() {
        errors.push(ConfigError::new("apps", "at least one app is needed"));
    }
    for (name, app) in &file.apps {
        let path = format!("apps.{name}");
        if let Err(e) = check_app_id(&app.app_id) {
            errors.push(ConfigError::new(format!("{path}.app_id"), e));
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
            if rl.replicas == Some(0) {
                errors.push(ConfigError::new(
                    format!("{path}.rate_limit.replicas"),
                    "must be at least 1 (the replicas running this config)",
                ));
            }
        }
        match app_secret(&app.secret, env) {
            Ok(secret) => {
                apps.insert(
                    name.clone(),
                    App {
                        name: name.clone(),
                        app_id: app.app_id.clone(),
                        secret,
                    },
                );
            }
            Err(e) => errors.push(ConfigError::new(format!("{path}.secret"), e)),
        }
    }
    apps
}

/// Each app's rate limit and budgets. An app's default share is half of the bridge's bounds
/// when there are several apps (one stuck app never holds more than half, so the others
/// always have room), all of them for a single app.
fn app_limits(file: &ConfigFile) -> BTreeMap<String, AppLimits> {
    let d = &file.delivery;
    let share = |total: usize| {
        if file.apps.len() > 1 {
            (total / 2).max(1)
        } else {
            total
        }
    };
    file.apps
        .iter()
        .map(|(name, a)| {
            let limits = AppLimits {
                rate_limit: a.rate_limit,
                max_in_flight: a.max_in_flight.unwrap_or_else(|| share(d.max_in_flight)),
                max_in_flight_bytes: a
                    .max_in_flight_bytes
                    .unwrap_or_else(|| share(d.max_in_flight_bytes)),
            };
            (name.clone(), limits)
        })
        .collect()
}

/// An app's webhook secret: read from its variable or file, `whs_`-checked; a file secret is
/// re-read on change.
fn app_secret(
    source: &SecretSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AppSecret, String> {
    let value = secret::read_plain(source, env).map_err(|e| e.to_string())?;
    let checked = match source {
        SecretSource::Env(_) => AppSecret::new(value, &secret::origin(source)),
        SecretSource::File(path) => {
            let again = source.clone();
            let reload: Reload = Arc::new(move || {
                secret::read_plain(&again, &|_| None).map_err(|e: SecretError| e.to_string())
            });
            AppSecret::rotating(value, path.clone(), reload)
        }
    };
    checked.map_err(|e| e.to_string())
}

/// `sources:`: at least one; each bus checks its own settings.
fn sources(file: &ConfigFile, env: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<ConfigError>) {
    if file.sources.is_empty() {
        errors.push(ConfigError::new("sources", "at least one source is needed"));
    }
    for (name, source) in &file.sources {
        match source {
            SourceConfig::Kafka(k) => source::kafka::check_config(name, k, errors),
            SourceConfig::Nats(n) => source::nats::check_config(name, n, env, errors),
        }
    }
}

/// `routes:`: names, references, what each bus needs of a route, and every template compiled.
/// `vars:`: constants for the templates, as `$vars`. Never from the environment: a `${` in
/// them is refused (they reach every template, and `render` prints what templates make).
fn template_vars(
    file: &ConfigFile,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<serde_json::Value>> {
    fn find_reference(v: &yaml_serde::Value, path: String, errors: &mut Vec<ConfigError>) {
        match v {
            yaml_serde::Value::String(s) if s.contains("${") => errors.push(ConfigError::new(
                path,
                "vars are constants written in the config: ${…} is not read here (the environment holds secrets, and vars reach every template and render's output)",
            )),
            yaml_serde::Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    find_reference(item, format!("{path}[{i}]"), errors);
                }
            }
            yaml_serde::Value::Mapping(m) => {
                for (k, item) in m {
                    let k = k.as_str().unwrap_or("?");
                    find_reference(item, format!("{path}.{k}"), errors);
                }
            }
            yaml_serde::Value::Tagged(t) => find_reference(&t.value, path, errors),
            _ => {}
        }
    }
    if file.vars.is_empty() {
        return None;
    }
    for (k, v) in &file.vars {
        find_reference(v, format!("vars.{k}"), errors);
    }
    match serde_json::to_value(&file.vars) {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            errors.push(ConfigError::new(
                "vars",
                format!("cannot be used as JSON: {e}"),
            ));
            None
        }
    }
}

/// `lookups:`: each table's one source, referring to a source of the right kind, and bounds.
fn lookups(file: &ConfigFile, errors: &mut Vec<ConfigError>) -> crate::lookup::Tables {
    let mut tables = BTreeMap::new();
    for (name, l) in &file.lookups {
        let path = format!("lookups.{name}");
        let named_well = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !named_well {
            errors.push(ConfigError::new(
                &path,
                "a lookup's name is letters, digits, `_` and `-` (templates write lookup(\"NAME\"; KEY), metrics label it)",
            ));
        }
        let source = match l.source() {
            Ok(s) => s,
            Err(e) => {
                errors.push(ConfigError::new(&path, e));
                continue;
            }
        };
        let mut refers = |key: &str, source: &str, want_kafka: bool| {
            let kind = if want_kafka { "kafka" } else { "nats" };
            match file.sources.get(source) {
                Some(SourceConfig::Kafka(_)) if want_kafka => {}
                Some(SourceConfig::Nats(_)) if !want_kafka => {}
                Some(_) => errors.push(ConfigError::new(
                    format!("{path}.{key}.source"),
                    format!("{source:?} is not a {kind} source"),
                )),
                None => errors.push(ConfigError::new(
                    format!("{path}.{key}.source"),
                    format!(
                        "{source:?} is not a source; defined: {}",
                        keys(&file.sources)
                    ),
                )),
            }
        };
        match &source {
            LookupSource::Kafka(k) => {
                refers("kafka", &k.source, true);
                if k.topic.trim().is_empty() {
                    errors.push(ConfigError::new(
                        format!("{path}.kafka.topic"),
                        "must not be empty",
                    ));
                }
            }
            LookupSource::NatsKv(n) => {
                refers("nats_kv", &n.source, false);
                let valid = !n.bucket.is_empty()
                    && n.bucket
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    errors.push(ConfigError::new(
                        format!("{path}.nats_kv.bucket"),
                        "a bucket name is letters, digits, `_` and `-`",
                    ));
                }
            }
            LookupSource::File(f) => {
                if f.as_os_str().is_empty() {
                    errors.push(ConfigError::new(
                        format!("{path}.file"),
                        "must not be empty",
                    ));
                }
            }
        }
        for (key, v) in [("max_entries", l.max_entries), ("max_bytes", l.max_bytes)] {
            if v == 0 {
                errors.push(ConfigError::new(
                    format!("{path}.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(lookup) = crate::lookup::Lookup::from_config(name, l) {
            tables.insert(name.clone(), Arc::new(lookup));
        }
    }
    crate::lookup::Tables::new(tables)
}

fn routes(
    file: &ConfigFile,
    lookups: &crate::lookup::Tables,
    errors: &mut Vec<ConfigError>,
) -> Vec<Arc<Route>> {
    let around = Surroundings {
        vars: template_vars(file, errors),
        values_in_errors: file.observability.log_payloads,
        lookups: lookups.clone(),
    };
    let vars = &around;
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
            Some(SourceConfig::Kafka(_)) => source::kafka::check_route(&path, r, errors),
            Some(SourceConfig::Nats(_)) => source::nats::check_route(&path, r, errors),
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
            .and_then(|f| compile(errors, vars, format!("{path}.filter"), f));
        let e = &r.event;
        let ep = format!("{path}.event");
        let installation_id = compile(
            errors,
            vars,
            format!("{ep}.installation_id"),
            &e.installation_id,
        );
        let event_type = compile(errors, vars, format!("{ep}.event_type"), &e.event_type);
        let event_data = compile(errors, vars, format!("{ep}.event_data"), &e.event_data);
        let mut optional = |field: &str, code: &Option<String>| -> Result<Option<JqTemplate>, ()> {
            match code {
                None => Ok(None),
                Some(c) => compile(errors, vars, format!("{ep}.{field}"), c)
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
                trace_metadata: r.trace_metadata,
                format: route_format(r, &path, file.schema_registry.is_some(), errors),
                reads_meta: Default::default(),
            }));
        }
    }
    routes
}

/// `delivery:`: bounds, backoff, intervals.
fn delivery(file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    let d = &file.delivery;
    if d.max_in_flight == 0 {
        errors.push(ConfigError::new(
            "delivery.max_in_flight",
            "must be at least 1",
        ));
    }
    if d.max_uncommitted_per_partition == 0 || d.max_in_flight_bytes == 0 {
        errors.push(ConfigError::new(
            "delivery.max_uncommitted_per_partition",
            "max_uncommitted_per_partition and max_in_flight_bytes must be at least 1",
        ));
    }
    for (name, a) in &file.apps {
        if a.max_in_flight == Some(0) || a.max_in_flight_bytes == Some(0) {
            errors.push(ConfigError::new(
                format!("apps.{name}.max_in_flight"),
                "an app's max_in_flight and max_in_flight_bytes must be at least 1",
            ));
        }
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
}

/// `delivery.dead_letter`: on a source of the right bus, never a topic a route reads.
fn dead_letter(file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    let d = &file.delivery;
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
            if let Err(e) = source::nats::check_subject(&n.subject, false) {
                errors.push(ConfigError::new("delivery.dead_letter.nats.subject", e));
            }
        }
        None => {}
    }
}

/// `observability:`: the listen address.
fn observability(file: &ConfigFile, errors: &mut Vec<ConfigError>) {
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
}

/// An Orceum app id goes into the request path as one segment: letters, digits, `_` and `-`
/// only (what Orceum ids look like), 1 to 128 of them. Anything else (`..`, `/`, `?`, `#`,
/// spaces, CR/LF) would change the URL that is requested.
pub fn check_app_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not an app id: use 1 to 128 letters, digits, '_' or '-' (e.g. app_123)",
            id.chars().take(40).collect::<String>()
        ))
    }
}

pub(crate) fn keys<V>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        "none".into()
    } else {
        map.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// `schema_registry:`: an http(s) URL, the password read, the CA file a PEM bundle.
fn registry_settings(
    r: &SchemaRegistryConfig,
    allow_insecure_http: bool,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::format::registry::RegistrySettings> {
    match reqwest::Url::parse(&r.url) {
        // The URL is shown (logs, the metric's label): credentials go in basic_auth.
        Ok(u) if !u.username().is_empty() || u.password().is_some() => errors.push(ConfigError::new(
            "schema_registry.url",
            "credentials in the URL would be shown in logs and metrics; give them as basic_auth: { username, password: {env: …} }",
        )),
        Ok(u) if u.scheme() == "http"
            && r.basic_auth.is_some()
            && !crate::orceum::proxy::is_loopback(&u)
            && !allow_insecure_http =>
        {
            errors.push(ConfigError::new(
                "schema_registry.url",
                "basic_auth over plain http:// to a non-loopback host would send the password in clear; use https:// or set orceum.allow_insecure_http: true",
            ))
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(u) => errors.push(ConfigError::new(
            "schema_registry.url",
            format!("scheme {:?}: use http:// or https://", u.scheme()),
        )),
        // Not echoed: it may hold a password.
        Err(e) => errors.push(ConfigError::new(
            "schema_registry.url",
            format!("not a URL ({e}); use http(s)://HOST:PORT"),
        )),
    }
    let password = r.basic_auth.as_ref().and_then(|a| {
        secret::read_plain(&a.password, env)
            .map_err(|e| {
                errors.push(ConfigError::new(
                    "schema_registry.basic_auth.password",
                    e.to_string(),
                ))
            })
            .ok()
    });
    if let Some(ca) = &r.ca_file {
        let ok = std::fs::read(ca)
            .ok()
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok())
            .is_some_and(|c| !c.is_empty());
        if !ok {
            errors.push(ConfigError::new(
                "schema_registry.ca_file",
                format!("{} is not a readable PEM bundle", ca.display()),
            ));
        }
    }
    if r.timeout.is_zero() {
        errors.push(ConfigError::new(
            "schema_registry.timeout",
            "must be more than 0",
        ));
    }
    Some(crate::format::registry::RegistrySettings {
        url: r.url.clone(),
        username: r.basic_auth.as_ref().map(|a| a.username.clone()),
        password,
        ca_file: r.ca_file.clone(),
        timeout: r.timeout,
    })
}

/// A route's `format:` with its local schema files, read and parsed now.
fn route_format(
    r: &RouteConfig,
    path: &str,
    registry: bool,
    errors: &mut Vec<ConfigError>,
) -> crate::format::Format {
    use crate::format::Format;
    let mut read = |key: &str, file: &std::path::Path| match std::fs::read(file) {
        Ok(b) => Some(b),
        Err(e) => {
            errors.push(ConfigError::new(
                format!("{path}.{key}"),
                format!("cannot read {}: {e}", file.display()),
            ));
            None
        }
    };
    let avro_file = r
        .avro_schema_file
        .as_ref()
        .and_then(|f| read("avro_schema_file", f));
    let proto_file = r
        .protobuf
        .as_ref()
        .and_then(|p| read("protobuf.descriptor_set", &p.descriptor_set));
    // Each local-schema key belongs to one format.
    for (given, key, owner, name) in [
        (
            r.avro_schema_file.is_some(),
            "avro_schema_file",
            PayloadFormat::Avro,
            "avro",
        ),
        (
            r.protobuf.is_some(),
            "protobuf",
            PayloadFormat::Protobuf,
            "protobuf",
        ),
    ] {
        if given && r.format != owner {
            errors.push(ConfigError::new(
                format!("{path}.{key}"),
                format!("only read with format: {name}"),
            ));
        }
    }
    let mut no_schema = |name: &str, local: &str| {
        errors.push(ConfigError::new(
            format!("{path}.format"),
            format!("format: {name} needs a schema: configure schema_registry (top level) or give this route {local}"),
        ))
    };
    match r.format {
        PayloadFormat::Json => Format::Json,
        PayloadFormat::JsonSchema => Format::JsonSchema,
        PayloadFormat::Avro => {
            if !registry && r.avro_schema_file.is_none() {
                no_schema("avro", "avro_schema_file");
            }
            let local = avro_file.and_then(|bytes| {
                crate::format::avro::AvroSchema::parse(&String::from_utf8_lossy(&bytes), &[])
                    .map_err(|e| {
                        errors.push(ConfigError::new(format!("{path}.avro_schema_file"), e))
                    })
                    .ok()
                    .map(Arc::new)
            });
            Format::Avro { local }
        }
        PayloadFormat::Protobuf => {
            if !registry && r.protobuf.is_none() {
                no_schema("protobuf", "protobuf: { descriptor_set, message }");
            }
            let local = r.protobuf.as_ref().zip(proto_file).and_then(|(p, bytes)| {
                crate::format::protobuf::local_message(&bytes, &p.message)
                    .map_err(|e| errors.push(ConfigError::new(format!("{path}.protobuf"), e)))
                    .ok()
            });
            Format::Protobuf { local }
        }
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
            if !crate::orceum::proxy::is_loopback(&url) && !o.allow_insecure_http {
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
    fn an_unset_variable_is_reported_once_without_follow_on_errors() {
        let text = GOOD.replace("http://127.0.0.1:8080/v1", "${ORCEUM_URL}");
        let errs = load_str(&text, "t.yaml", |n| match n {
            "BROKERS" => None,
            other => env(other),
        })
        .unwrap_err()
        .errors;
        let said: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        assert_eq!(said.len(), 2, "one error per missing variable: {said:#?}");
        assert!(
            said[0].starts_with("orceum.base_url: environment variable ORCEUM_URL is not set"),
            "{said:#?}"
        );
        assert!(
            said[1].starts_with(
                "sources.events.kafka.bootstrap_servers: environment variable BROKERS"
            ),
            "{said:#?}"
        );
    }

    #[test]
    fn a_binary_format_needs_a_schema_and_its_keys_belong_to_their_format() {
        let text = GOOD.replace(
            "    app: tasks\n",
            "    app: tasks\n    format: avro\n    protobuf: { descriptor_set: /nonexistent.binpb, message: shop.Order }\n",
        );
        let errs = load_str(&text, "t.yaml", env).unwrap_err().errors;
        let said: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        assert!(
            said.iter().any(|e| e.starts_with(
                "routes[0].format: format: avro needs a schema: configure schema_registry"
            )),
            "{said:#?}"
        );
        assert!(
            said.iter()
                .any(|e| e.starts_with("routes[0].protobuf: only read with format: protobuf")),
            "{said:#?}"
        );
        assert!(
            said.iter().any(|e| e
                .starts_with("routes[0].protobuf.descriptor_set: cannot read /nonexistent.binpb")),
            "{said:#?}"
        );
        let leaky =
            GOOD.to_string() + "schema_registry: { url: \"https://u:hunter2@registry:8081\" }\n";
        let errs = load_str(&leaky, "t.yaml", env).unwrap_err().errors;
        assert_eq!(errs[0].path, "schema_registry.url");
        assert!(
            errs.iter().all(|e| !e.message.contains("hunter2")),
            "{errs:?}"
        );
        // With a registry, avro needs nothing more.
        let text = GOOD.replace("    app: tasks\n", "    app: tasks\n    format: avro\n")
            + "schema_registry: { url: \"http://127.0.0.1:8081\", basic_auth: { username: u, password: { env: SR_PASSWORD } } }\n";
        let errs = load_str(&text, "t.yaml", env).unwrap_err().errors;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "schema_registry.basic_auth.password");
        let b = load_str(&text, "t.yaml", |n| {
            if n == "SR_PASSWORD" {
                Some("pw".into())
            } else {
                env(n)
            }
        })
        .unwrap();
        assert_eq!(b.routes[0].format.name(), "avro");
        assert!(b.schema_registry.is_some());
    }

    #[test]
    fn a_default_fills_an_unset_variable() {
        let text = GOOD.replace(
            "http://127.0.0.1:8080/v1",
            "${ORCEUM_URL:-http://127.0.0.1:9/v1}",
        );
        let b = load_str(&text, "t.yaml", env).unwrap();
        assert_eq!(b.orceum.base_url.as_str(), "http://127.0.0.1:9/v1");
    }

    #[test]
    fn the_summary_counts_topics_streams_and_subjects() {
        let b = load_str(GOOD, "t.yaml", env).unwrap();
        assert!(
            b.summary()
                .contains("over 1 Kafka topic(s) from 1 source(s)"),
            "{}",
            b.summary()
        );
    }

    #[test]
    fn a_good_config_loads_with_defaults() {
        let b = load_str(GOOD, "t.yaml", env).unwrap();
        assert_eq!(b.routes.len(), 1);
        assert_eq!(b.delivery.max_in_flight, 2048);
        assert_eq!(b.delivery.max_uncommitted_per_partition, 100_000);
        assert_eq!(
            b.app_limits["tasks"].max_in_flight, 2048,
            "a single app gets it all"
        );
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
    fn app_ids_that_would_change_the_url_are_refused() {
        for bad in [
            "",
            "..",
            "a/b",
            "a?q=1",
            "a#x",
            "a b",
            "a\r\nX-Injected: 1",
            "a%20b",
            "a\\b",
        ] {
            assert!(check_app_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["app_123", "APP-1", "a"] {
            assert!(check_app_id(good).is_ok(), "{good:?} refused");
        }
        let bad = GOOD.replace("app_id: app_1", "app_id: \"../events\"");
        let errs = load_str(&bad, "t.yaml", env).unwrap_err().errors;
        assert_eq!(errs[0].path, "apps.tasks.app_id", "{errs:?}");
    }

    #[test]
    fn plain_http_to_a_remote_host_is_refused() {
        let bad = GOOD.replace("127.0.0.1", "orceum.example.com");
        let errs = load_str(&bad, "t.yaml", env).unwrap_err().errors;
        assert_eq!(errs[0].path, "orceum.base_url");
    }
}
