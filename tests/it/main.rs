//! The one integration-test binary: every integration test links the crate (and its static
//! librdkafka) once, here. Each module is a former `tests/<name>.rs`; the brokers and the bridge
//! under test are shared helpers in `tests/support/`. Modules:
//!
//! - `bad_input`: every bad input in docs/reliability.md, through `check` and `render`;
//! - `chaos_kafka`: Orceum down or slow, SIGTERM/SIGKILL under load, a replica or broker killed;
//! - `cloudevents`: CloudEvents (binary, structured) over Kafka and JetStream, and `traceparent`;
//! - `cli`: `check`, `render` and `sandbox` as a user meets them (errors with paths, redacted
//!   secrets, the sandbox's answers);
//! - `deploy_metrics`: the dashboard and alert rules only use metrics the binary exports;
//! - `engine`: the dispatcher driven through `Submit` with recording acknowledgements;
//! - `first_hour`: what a new user meets first: `check --connect` on dead-letter streams, the
//!   key of a Kafka dead letter on NATS, `render --ndjson`, exit codes, plain log files;
//! - `kafka_crash`: the bridge SIGKILLed mid-stream and restarted; duplicates within bound;
//! - `kafka_delivery`: end-to-end Kafka delivery, transient faults, poison messages, rate limits;
//! - `kafka_faults`: broker down at start and Orceum unreachable, on the mock cluster;
//! - `kafka_rebalance`: a second replica joins mid-stream; nothing lost, both deliver;
//! - `lookups`: lookup tables on a Kafka topic, a KV bucket and a file, joined from a backlog;
//! - `nats`: core NATS and JetStream sources, replicas, a server restart, SIGKILLs;
//! - `orceum_answers`: every `action_taken` Orceum can answer (and a non-JSON 2xx), counted;
//! - `properties`: property tests on config parsing, templates and request verification;
//! - `replay`: `replay` of dead letters after a fix, and `--dry-run`;
//! - `schema_formats`: Avro, Protobuf, JSON Schema from the serializers and a registry; its outage;
//! - `secrets`: no secret in logs, `/metrics`, `render` output or `check` errors;
//! - `signing`: the request on the wire, its signature checked against openssl;
//! - `templates_cookbook`: the commands in docs/templates.md and docs/configuration.md, run;
//! - `transport_security`: HTTPS through the configured CA, and a file secret rotated live.
//!
//! Shared helpers: `common` (the brokers: Tansu, nats-server, producing and reading back) and
//! `harness` (configs, the bridge in process or as a child, what the sandbox saw).

#[path = "../support/common.rs"]
mod common;
#[path = "../support/harness.rs"]
mod harness;

mod bad_input;
mod chaos_kafka;
mod cli;
mod cloudevents;
mod deploy_metrics;
mod engine;
mod first_hour;
mod hostile;
mod kafka_crash;
mod kafka_delivery;
mod kafka_faults;
mod kafka_rebalance;
mod lookups;
mod nats;
mod orceum_answers;
mod properties;
mod replay;
mod schema_formats;
mod secrets;
mod signing;
mod templates_cookbook;
mod transport_security;
