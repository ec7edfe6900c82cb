//! # orceum-bridge
//!
//! Consumes domain events from Kafka topics and NATS subjects, maps each to an Orceum event
//! with jq templates, rate-limits per Orceum app, signs each request with HMAC-SHA256 and pushes
//! it to Orceum's "Push an Event" API — committing a Kafka offset (acking a JetStream message)
//! only once every message below it has a final outcome (delivered, dead-lettered or skipped).
//!
//! ## Layout (in the order a message travels)
//! - [`config`] — the YAML contract: structs, `${VAR}` interpolation, durations, secret
//!   references, errors with paths. Imports nothing else of the crate.
//! - [`build`] — parsed config → the runtime [`build::Bridge`], one function per section;
//!   each bus checks its own settings.
//! - [`run`] — wiring and the two-phase shutdown.
//! - [`source`] — one folder per bus, turning it into [`message::Message`] +
//!   [`message::AckHandle`] handed to a [`message::Submit`]: [`source::kafka`] (consumer group,
//!   the partition book and its pure flow-control decision, client settings, dead-letter writer,
//!   probe, replay reader), [`source::nats`] (core, JetStream, the same per-bus pieces).
//! - [`message`] — the neutral ground: `Message`, `Origin`, `AckHandle`, `Final`, `Submit`.
//! - [`route`] — the route table, filter and jq templates (and what a template may do:
//!   [`route::budget`]) → [`orceum::event::OrceumEvent`] (pure, no I/O).
//! - [`lookup`] — the tables templates read with `lookup(NAME; KEY)` ([`lookup::table`]), and
//!   the followers that fill them from a Kafka topic, a KV bucket or a file; sources wait for
//!   their routes' tables to catch up.
//! - [`dispatch`] — `impl Submit`: per-app lanes (rate limit, `Retry-After` pause, per-key
//!   order), the typed [`dispatch::outcome::Outcome`], one retry policy, acknowledgement once
//!   final, the mapping watchdog ([`dispatch::watch`]).
//! - [`orceum`] — the ground floor: the app (id + secret), the event body, its signature, the
//!   HTTP client, what Orceum answers, the scrubbing of secrets out of answers.
//! - [`dead_letter`] — what a dead letter carries and the writer every destination implements.
//! - [`commit`] — the contiguous-offset tracker.
//! - [`telemetry`] — metrics, `/healthz` `/readyz` `/metrics`, logging.
//! - [`tools`] — the commands around the engine: `render`, `replay`, `check --connect`'s probe,
//!   `demo`, `sandbox`.
//! - [`serve`] — the small HTTP servers' bounds (connection cap, header and idle timeouts).
//! - [`sync`] — the one lock helper.

/// The git revision this binary was built from (`unknown` outside a checkout and without
/// `ORCEUM_BRIDGE_REVISION`): in `--version` and `orceum_bridge_build_info`.
pub const REVISION: &str = env!("ORCEUM_BRIDGE_REVISION");

pub mod build;
pub mod commit;
pub mod config;
pub mod dead_letter;
pub mod dispatch;
pub mod format;
pub mod lookup;
pub mod message;
pub mod orceum;
pub mod route;
pub mod run;
pub mod serve;
pub mod source;
pub mod sync;
pub mod telemetry;
pub mod tools;

pub use run::{run, run_with, RunError, Running};
