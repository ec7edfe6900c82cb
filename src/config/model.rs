//! The config file's shape, one struct per section, exactly as PRODUCT.md documents it.
//!
//! These are plain data: defaults live here (one `fn default_…` each, so docs and code agree),
//! cross-references and templates are checked in [`super::validate`].

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub orceum: OrceumConfig,
    pub apps: BTreeMap<String, AppConfig>,
    pub sources: BTreeMap<String, SourceConfig>,
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub observability: ObservabilityConfig,
    /// Constants every template reads as `$vars` (written here, never from the environment).
    #[serde(default)]
    pub vars: BTreeMap<String, yaml_serde::Value>,
    /// Tables templates read with `lookup(NAME; KEY)`, by name.
    #[serde(default)]
    pub lookups: BTreeMap<String, LookupConfig>,
    /// A Confluent-compatible Schema Registry, for routes with `format: avro | protobuf |
    /// json_schema`.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
}

/// `schema_registry:`: where schemas are fetched by id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    pub url: String,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// Extra CA certificates (PEM) trusted for the registry.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_registry_timeout", with = "super::duration")]
    pub timeout: Duration,
}

fn default_registry_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password: SecretSource,
}

/// How a route's messages are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// JSON (and CloudEvents in JSON), the default.
    #[default]
    Json,
    /// Avro in the Confluent wire format.
    Avro,
    /// Protobuf in the Confluent wire format.
    Protobuf,
    /// JSON in the Confluent wire format (a JSON Schema registered).
    JsonSchema,
}

/// A route's local Protobuf schema (without a registry).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtobufRouteConfig {
    /// A `FileDescriptorSet` (`protoc --include_imports --descriptor_set_out=FILE`).
    pub descriptor_set: PathBuf,
    /// The message's full name (`shop.Order`).
    pub message: String,
}

/// One lookup table: where its entries come from (exactly one of `kafka`, `nats_kv`, `file`)
/// and how big it may grow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupConfig {
    #[serde(default)]
    pub kafka: Option<KafkaLookupConfig>,
    #[serde(default)]
    pub nats_kv: Option<NatsKvLookupConfig>,
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The most keys the table holds; a new key past it is refused (counted, logged).
    #[serde(default = "default_lookup_max_entries")]
    pub max_entries: usize,
    /// The most bytes of keys and values the table holds; past it, the same.
    #[serde(default = "default_lookup_max_bytes")]
    pub max_bytes: usize,
}

/// The table's source, resolved from [`LookupConfig`]'s three optional keys.
#[derive(Debug, Clone)]
pub enum LookupSource {
    Kafka(KafkaLookupConfig),
    NatsKv(NatsKvLookupConfig),
    File(PathBuf),
}

impl LookupConfig {
    /// The one source given, or what is wrong.
    pub fn source(&self) -> Result<LookupSource, &'static str> {
        match (&self.kafka, &self.nats_kv, &self.file) {
            (Some(k), None, None) => Ok(LookupSource::Kafka(k.clone())),
            (None, Some(n), None) => Ok(LookupSource::NatsKv(n.clone())),
            (None, None, Some(f)) => Ok(LookupSource::File(f.clone())),
            (None, None, None) => Err("needs a source: kafka: { source, topic }, nats_kv: { source, bucket } or file: PATH"),
            _ => Err("has more than one source: give exactly one of kafka, nats_kv, file"),
        }
    }
}

/// A (compacted) topic read whole from the beginning, then followed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaLookupConfig {
    /// A `sources:` entry of kind kafka: its brokers and properties (TLS, SASL) are used.
    pub source: String,
    pub topic: String,
}

/// A JetStream key-value bucket, watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsKvLookupConfig {
    /// A `sources:` entry of kind nats.
    pub source: String,
    pub bucket: String,
}

fn default_lookup_max_entries() -> usize {
    1_000_000
}

fn default_lookup_max_bytes() -> usize {
    256 * 1024 * 1024
}

/// Where Orceum is and how long one push may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrceumConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_timeout", with = "super::duration")]
    pub timeout: Duration,
    /// Plain `http://` is refused for hosts other than loopback unless this is true.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Extra CA certificates (PEM) trusted for Orceum, on top of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Speak HTTP/2 from the first byte, without negotiating it (h2c on `http://`): for an
    /// endpoint known to take it, such as `sandbox`. Over `https://` HTTP/2 is negotiated
    /// anyway (ALPN) when the server offers it.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// A forward proxy for the pushes (`CONNECT` for https). None: straight to `base_url`
    /// (`HTTPS_PROXY` in the environment is ignored unless `from_env: true`).
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    /// Sends a message's W3C `traceparent` / `tracestate` headers on its push requests.
    #[serde(default = "default_true")]
    pub forward_trace_context: bool,
}

/// `orceum.proxy`: the proxy URL (with optional credentials), or `from_env: true` to take
/// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` on purpose.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `http://HOST:PORT` (CONNECT over plain TCP to the proxy) or `https://HOST:PORT`.
    #[serde(default)]
    pub url: Option<String>,
    /// Take the proxy from `HTTPS_PROXY` (`HTTP_PROXY` for an `http://` base_url) and
    /// `NO_PROXY`, lowercase names too.
    #[serde(default)]
    pub from_env: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// Hosts reached without the proxy (`NO_PROXY` syntax: names, `.domain`, IPs, CIDRs).
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

fn default_base_url() -> String {
    "https://api.orceum.com/v1".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for OrceumConfig {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            timeout: default_timeout(),
            allow_insecure_http: false,
            proxy: None,
            forward_trace_context: true,
            ca_file: None,
            http2_prior_knowledge: false,
        }
    }
}

/// One Orceum app: its id, its `whs_` secret and its rate limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub app_id: String,
    pub secret: SecretSource,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Events of this app the bridge may hold at once (queued, rate-limited, retrying);
    /// default: half of `delivery.max_in_flight` when there are several apps, all of it
    /// otherwise. At the budget, a partition whose next message is this app's pauses; other
    /// apps' messages keep flowing until then.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// The same budget in payload bytes; default: half of `delivery.max_in_flight_bytes` when
    /// there are several apps, all of it otherwise.
    #[serde(default)]
    pub max_in_flight_bytes: Option<usize>,
}

/// Where a secret comes from. Never inline: a config file is not a secret store.
/// Written `{ env: NAME }` or `{ file: PATH }`.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// The name of an environment variable.
    Env(String),
    /// A file (e.g. a mounted Kubernetes Secret); re-read when it changes.
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_second: u32,
    /// Requests allowed at once above the steady rate; defaults to `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// For an app only NATS routes feed: the replicas running this config, each taking
    /// `1/replicas` of the limit (apps fed by Kafka share it by partitions instead).
    #[serde(default)]
    pub replicas: Option<u32>,
}

/// A bus to read from. Exactly one key: `kafka` or `nats`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SourceRepr")]
pub enum SourceConfig {
    Kafka(KafkaSourceConfig),
    Nats(NatsSourceConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    pub bootstrap_servers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Any librdkafka property (TLS, SASL, timeouts); they override the bridge's defaults.
    #[serde(default)]
    pub properties: BTreeMap<String, yaml_serde::Value>,
}

fn default_group_id() -> String {
    "orceum-bridge".into()
}

/// A NATS server (core subjects and JetStream).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// One or more servers, comma-separated: `nats://host:4222,nats://other:4222`.
    pub url: String,
    /// The connection name shown by the server (`nats server report connections`).
    #[serde(default = "default_nats_name")]
    pub name: String,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    #[serde(default)]
    pub token: Option<SecretSource>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<SecretSource>,
    #[serde(default)]
    pub tls: Option<NatsTlsConfig>,
    /// Messages each subscription buffers in the client before the bridge takes them
    /// (async-nats's own default is 65,536). Memory: up to this × the message size per
    /// subscription; core NATS past it: the server drops messages for the slow consumer.
    #[serde(default = "default_subscription_capacity")]
    pub subscription_capacity: usize,
}

fn default_nats_name() -> String {
    "orceum-bridge".into()
}

fn default_subscription_capacity() -> usize {
    4096
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTlsConfig {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub require_tls: bool,
}

/// A JetStream durable pull consumer with explicit acks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamRouteConfig {
    pub stream: String,
    pub durable: String,
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Create the consumer if it does not exist (otherwise bind to an existing one).
    #[serde(default)]
    pub create: bool,
    /// How long the server waits for an ack before redelivering (when `create: true`).
    #[serde(default = "default_ack_wait", with = "super::duration")]
    pub ack_wait: Duration,
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

/// One mapping: messages from `source` (on `topics`) become events for `app`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub source: String,
    /// How the messages are encoded: json (default), avro, protobuf, json_schema.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Avro: with a registry, the reader schema (records are read as this version); without
    /// one, the schema every record was written with.
    #[serde(default)]
    pub avro_schema_file: Option<PathBuf>,
    /// Protobuf without a registry: the descriptor set and the message.
    #[serde(default)]
    pub protobuf: Option<ProtobufRouteConfig>,
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// Core NATS: several replicas with the same queue group share the subjects' messages.
    #[serde(default)]
    pub queue_group: Option<String>,
    #[serde(default)]
    pub jetstream: Option<JetStreamRouteConfig>,
    pub app: String,
    #[serde(default)]
    pub filter: Option<String>,
    pub event: EventTemplateConfig,
    /// Adds `{"source": "kafka:topic/partition@offset"}` to every event's metadata.
    #[serde(default = "default_true")]
    pub source_metadata: bool,
    /// Adds `{"traceparent": …}` to the metadata of an event whose message carries a W3C
    /// `traceparent` header.
    #[serde(default = "default_true")]
    pub trace_metadata: bool,
}

fn default_true() -> bool {
    true
}

/// Each field is a jq expression over the message JSON, with `$meta` bound to its coordinates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTemplateConfig {
    pub installation_id: String,
    pub event_type: String,
    pub event_data: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// One installation's events are pushed in source order.
    Key,
    /// No ordering: every event is pushed as soon as its lane allows.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Messages the bridge holds at once (read and not final: queued, rate-limited,
    /// retrying), over all sources' partitions. Final messages cost only their offset's bits.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The same bound in payload bytes.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// The held bound for one partition; defaults to `max_in_flight`.
    #[serde(default)]
    pub max_in_flight_per_partition: Option<usize>,
    /// Kafka: messages read and not yet committed on one partition (the commit waits for the
    /// oldest unfinished one). Past it the partition pauses. Without commit metadata on the
    /// broker it also bounds what a crash delivers again.
    #[serde(default = "default_max_uncommitted_per_partition")]
    pub max_uncommitted_per_partition: usize,
    #[serde(default = "default_ordering")]
    pub ordering: Ordering,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default = "default_shutdown_timeout", with = "super::duration")]
    pub shutdown_timeout: Duration,
    /// How often final offsets are committed when nothing else asks for a commit.
    #[serde(default = "default_commit_interval", with = "super::duration")]
    pub commit_interval: Duration,
    /// Larger messages are dead-lettered without being parsed.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
}

fn default_max_in_flight() -> usize {
    2048
}
fn default_max_in_flight_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_uncommitted_per_partition() -> usize {
    100_000
}
fn default_ordering() -> Ordering {
    Ordering::Key
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_message_bytes() -> usize {
    1024 * 1024
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            max_in_flight_per_partition: None,
            max_uncommitted_per_partition: default_max_uncommitted_per_partition(),
            ordering: default_ordering(),
            retry: RetryConfig::default(),
            shutdown_timeout: default_shutdown_timeout(),
            commit_interval: default_commit_interval(),
            max_message_bytes: default_max_message_bytes(),
            dead_letter: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_initial_backoff", with = "super::duration")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "super::duration")]
    pub max_backoff: Duration,
    /// After this long an event still failing transiently is dead-lettered; `none` = never.
    #[serde(default, with = "super::duration::optional")]
    pub max_elapsed: Option<Duration>,
    /// The longest `Retry-After` honoured; longer values are clamped to it.
    #[serde(default = "default_max_retry_after", with = "super::duration")]
    pub max_retry_after: Duration,
    /// HTTP statuses retried with backoff; any other non-2xx is final (dead-lettered).
    /// 401 is always retried: a fixed secret resumes the flow.
    #[serde(default = "default_retryable_statuses")]
    pub retryable_statuses: Vec<u16>,
}

fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(300)
}
fn default_retryable_statuses() -> Vec<u16> {
    vec![408, 425, 429, 500, 502, 503, 504]
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_elapsed: None,
            max_retry_after: default_max_retry_after(),
            retryable_statuses: default_retryable_statuses(),
        }
    }
}

/// Where messages that cannot be delivered go. Exactly one key: `kafka` or `nats`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "DeadLetterRepr")]
pub enum DeadLetterConfig {
    Kafka(KafkaDeadLetterConfig),
    Nats(NatsDeadLetterConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaDeadLetterConfig {
    pub source: String,
    pub topic: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsDeadLetterConfig {
    pub source: String,
    pub subject: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_log_format")]
    pub log_format: LogFormat,
    /// Log message payloads in dead-letter lines. Off: payloads may hold personal data.
    #[serde(default)]
    pub log_payloads: bool,
}

fn default_listen() -> String {
    "0.0.0.0:9464".into()
}
fn default_log_format() -> LogFormat {
    LogFormat::Json
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            log_format: default_log_format(),
            log_payloads: false,
        }
    }
}

// YAML maps with exactly one key stand for an enum variant (`{ env: X }`, `kafka: {…}`).
// yaml_serde spells externally tagged enums as YAML tags (`!env X`), so each of these enums is
// read through a struct of options and converted, with an error naming the allowed keys.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneOf<A, B> {
    #[serde(default)]
    env: Option<A>,
    #[serde(default)]
    file: Option<B>,
}

/// A map goes through [`OneOf`]; anything else (an inline `whs_…`, a number) is refused with
/// what to write instead, never echoing the value.
impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        const INLINE: &str = "a secret is never written inline (the value is not shown): write { env: VAR_NAME } or { file: /path/to/secret }";
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = SecretSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{ env: VAR_NAME } or { file: /path/to/secret }")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                m: M,
            ) -> Result<SecretSource, M::Error> {
                let v = OneOf::<String, PathBuf>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(m),
                )?;
                SecretSource::try_from(v).map_err(serde::de::Error::custom)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretSource, E> {
                Err(E::custom(INLINE))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretSource, E> {
                Err(E::custom(INLINE))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretSource, E> {
                Err(E::custom(INLINE))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretSource, E> {
                Err(E::custom(INLINE))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretSource, E> {
                Err(E::custom(INLINE))
            }
        }
        d.deserialize_any(Visit)
    }
}

impl TryFrom<OneOf<String, PathBuf>> for SecretSource {
    type Error = String;
    fn try_from(v: OneOf<String, PathBuf>) -> Result<Self, String> {
        match (v.env, v.file) {
            (Some(e), None) => Ok(Self::Env(e)),
            (None, Some(f)) => Ok(Self::File(f)),
            _ => Err("write exactly one of { env: VAR_NAME } or { file: /path/to/secret }".into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRepr {
    #[serde(default)]
    kafka: Option<KafkaSourceConfig>,
    #[serde(default)]
    nats: Option<NatsSourceConfig>,
}

impl TryFrom<SourceRepr> for SourceConfig {
    type Error = String;
    fn try_from(v: SourceRepr) -> Result<Self, String> {
        match (v.kafka, v.nats) {
            (Some(k), None) => Ok(Self::Kafka(k)),
            (None, Some(n)) => Ok(Self::Nats(n)),
            _ => Err("a source has exactly one key: kafka: {…} or nats: {…}".into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRepr {
    #[serde(default)]
    kafka: Option<KafkaDeadLetterConfig>,
    #[serde(default)]
    nats: Option<NatsDeadLetterConfig>,
}

impl TryFrom<DeadLetterRepr> for DeadLetterConfig {
    type Error = String;
    fn try_from(v: DeadLetterRepr) -> Result<Self, String> {
        match (v.kafka, v.nats) {
            (Some(k), None) => Ok(Self::Kafka(k)),
            (None, Some(n)) => Ok(Self::Nats(n)),
            _ => Err("dead_letter has exactly one key: kafka: { source, topic } or nats: { source, subject }".into()),
        }
    }
}
