//! A local Orceum-compatible receiver for "Push an Event": the `sandbox` CLI command and the
//! endpoint integration tests push to.
//!
//! It answers `POST /v1/apps/{app_id}/events` (and `POST /apps/{app_id}/events`) the way
//! orceum-push-api.txt says Orceum does, and is stricter than Orceum needs to be, because its job
//! is to catch a bridge that drifts from the contract. Checks run in this order and the first
//! failure answers with `{"error": "<reason>"}`:
//!
//! 1. the app id is configured (404);
//! 2. `Content-Type` is exactly `application/json` (422);
//! 3. `X-Orceum-Webhook-Secret` equals the app's secret (401);
//! 4. `X-Hub-Signature-256` is `sha256=` + lowercase hex HMAC-SHA256(secret, exact body bytes) (401);
//! 5. `X-Timestamp` is RFC 3339 UTC ending in `Z` (401);
//! 6. the body is JSON (422), compact — byte-identical to serde_json's own serialisation (422) —
//!    and has exactly the spec's fields, typed as the spec says, in the order
//!    `installation_id, event_type, event_data, timestamp, priority, metadata` (422).
//!
//! Faults (latency, random 500/503/429, rejected installations and event types) are injected only
//! after a request has passed every check, so a broken request is never hidden by a fault. An
//! accepted event is answered `{"event_id", "status", "action_taken"}` as the API document shows;
//! which action (or a non-JSON 200) is set per installation or as shares ([`Answers`]). Accepted
//! events are recorded in arrival order and exposed through [`SandboxHandle`] and, for a sandbox
//! running as a separate process, `GET /_sandbox/events` and `GET /_sandbox/stats`.
//!
//! Secrets are never printed, logged or returned: the recorded `X-Orceum-Webhook-Secret` header is
//! redacted and error messages say *that* a secret is wrong, never what it is.

use crate::sync::{lock, read, write};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod answers;
mod faults;
mod verify;

pub use answers::{Answers, AnswersError, Reply};
pub use faults::Faults;
use verify::*;

/// What the sandbox accepts and how it misbehaves.
#[derive(Clone, Default)]
pub struct SandboxConfig {
    /// `app_id` → its `whs_*` webhook secret.
    pub apps: HashMap<String, String>,
    /// Skip the 401 checks (secret, signature, `X-Timestamp`), for benchmarking a peer that
    /// cannot sign. App ids are still checked when any are configured; with none configured,
    /// every app id is accepted. Body checks always apply.
    pub accept_any: bool,
    /// Faults to inject after verification; replaceable at runtime with
    /// [`SandboxHandle::set_faults`].
    pub faults: Faults,
    /// Which `action_taken` each accepted event is answered with (default: all `NOTIFIED`);
    /// replaceable at runtime with [`SandboxHandle::set_answers`].
    pub answers: Answers,
    /// Print each accepted event as one line to stdout:
    /// `200 app_1 inst_x task.completed normal NOTIFIED {"task_id":…}`.
    pub print: bool,
}

// Hand-written so that `{:?}` of a config can never show a secret.
impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut app_ids: Vec<&str> = self.apps.keys().map(String::as_str).collect();
        app_ids.sort_unstable();
        f.debug_struct("SandboxConfig")
            .field("app_ids", &app_ids)
            .field("accept_any", &self.accept_any)
            .field("faults", &self.faults)
            .field("answers", &self.answers)
            .field("print", &self.print)
            .finish()
    }
}

/// Faults injected into requests that passed verification (chaos tests, retry tests).
///
/// One accepted push, as received.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedEvent {
    /// The `{app_id}` path segment.
    pub app_id: String,
    /// The `event_id` the sandbox answered with (its own id of the event when the answer was
    /// not JSON).
    pub event_id: String,
    /// What the answer said Orceum did (or that it was not JSON).
    pub reply: Reply,
    /// The parsed body.
    pub event: Value,
    /// The exact body bytes (what was signed).
    pub body: Vec<u8>,
    /// Request headers, lowercase names, in arrival order; the secret header's value is redacted.
    pub headers: Vec<(String, String)>,
    /// When the sandbox accepted it.
    pub received_at: DateTime<Utc>,
}

impl ReceivedEvent {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn to_json(&self) -> Value {
        json!({
            "app_id": self.app_id,
            "event_id": self.event_id,
            "action": self.reply.name(),
            "event": self.event,
            // The body parsed as JSON, so it is UTF-8; lossy only to avoid a fallible path.
            "body": String::from_utf8_lossy(&self.body),
            "headers": self.headers,
            "received_at": self.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }
}

/// Counters since start (or the last [`SandboxHandle::clear`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SandboxStats {
    /// Events answered 200 and recorded.
    pub accepted: u64,
    /// Accepted events by the answer they got: `NOTIFIED`, `CONVERSATION_STARTED`, `QUEUED`,
    /// `IGNORED`, `non-json`.
    pub by_action: BTreeMap<&'static str, u64>,
    /// Every status answered to a push (or unknown path), injected faults included.
    pub by_status: BTreeMap<u16, u64>,
    /// Pushes that passed verification, per app id, whatever the answer (injected faults
    /// included): the requests Orceum would have seen from each app.
    pub pushes_by_app: BTreeMap<String, u64>,
    /// Accepted events no longer kept (the ring's oldest, past its count or byte bound).
    pub events_dropped: u64,
}

/// A running sandbox. Cheap to clone; every clone sees the same server.
#[derive(Clone)]
pub struct SandboxHandle {
    addr: SocketAddr,
    sandbox: Arc<Sandbox>,
    stopped: CancellationToken,
}

impl fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SandboxHandle {
    /// The address the sandbox listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure as `orceum.base_url`, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        // A wildcard bind address is not something a client should connect to.
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/v1", SocketAddr::new(ip, self.addr.port()))
    }

    /// Accepted events, in arrival order.
    pub fn events(&self) -> Vec<ReceivedEvent> {
        self.sandbox.recorded().events.iter().cloned().collect()
    }

    /// Keep at most `n` accepted events (the oldest go first); default [`DEFAULT_KEEP_EVENTS`].
    pub fn set_keep_events(&self, n: usize) {
        self.sandbox.recorded().keep = n.max(1);
    }

    /// Counters of accepted events and of every status answered.
    pub fn stats(&self) -> SandboxStats {
        self.sandbox.recorded().stats.clone()
    }

    /// Replace the faults; applies to requests that arrive from now on.
    pub fn set_faults(&self, faults: Faults) {
        *write(&self.sandbox.faults) = Arc::new(faults);
    }

    /// Replace how accepted events are answered; applies to requests that arrive from now on,
    /// and the shares start over.
    pub fn set_answers(&self, answers: Answers) {
        *write(&self.sandbox.answers) = Arc::new(answers);
        self.sandbox.drawn.store(0, Ordering::Relaxed);
    }

    /// Replace (or add) an app's secret, as Orceum does when a secret is rotated.
    pub fn set_secret(&self, app_id: &str, secret: &str) {
        write(&self.sandbox.apps).insert(app_id.to_string(), secret.to_string());
    }

    /// Forget recorded events and reset the stats.
    pub fn clear(&self) {
        let mut recorded = self.sandbox.recorded();
        recorded.events.clear();
        recorded.bytes = 0;
        recorded.dropped = 0;
        recorded.stats = SandboxStats::default();
        self.sandbox.drawn.store(0, Ordering::Relaxed);
    }

    /// Resolves once the server has shut down (after the shutdown token is cancelled and
    /// in-flight requests have been answered).
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }
}

/// Start serving on `listener` and return at once. The server stops gracefully when `shutdown`
/// is cancelled; [`SandboxHandle::stopped`] tells when it has.
pub async fn start(
    cfg: SandboxConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<SandboxHandle> {
    let addr = listener.local_addr()?;
    let sandbox = Arc::new(Sandbox {
        apps: RwLock::new(cfg.apps),
        accept_any: cfg.accept_any,
        print: cfg.print,
        faults: RwLock::new(Arc::new(cfg.faults)),
        answers: RwLock::new(Arc::new(cfg.answers)),
        drawn: AtomicU64::new(0),
        recorded: Mutex::new(Recorded::default()),
        shutdown: shutdown.clone(),
    });
    let app = router(sandbox.clone());
    let stopped = CancellationToken::new();
    let done = stopped.clone();
    tokio::spawn(async move {
        // A stand-in for Orceum: a bridge keeps up to `max_in_flight` (2,048 by default)
        // connections to it, so its cap is well above that; over HTTP/2 (a bridge with
        // `orceum.http2_prior_knowledge`) they share one connection, as many streams.
        let limits = crate::serve::Limits {
            max_connections: 8192,
            http2_streams: Some(8192),
            ..crate::serve::Limits::default()
        };
        let serve = crate::serve::serve(listener, app, shutdown, limits);
        if let Err(e) = serve.await {
            tracing::error!(%addr, error = %e, "sandbox server stopped with an error");
        }
        done.cancel();
    });
    tracing::info!(%addr, "Orceum sandbox listening");
    Ok(SandboxHandle {
        addr,
        sandbox,
        stopped,
    })
}

fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/v1/apps/{app_id}/events", post(push).fallback(not_found))
        .route("/apps/{app_id}/events", post(push).fallback(not_found))
        .route("/_sandbox/events", get(list_events).fallback(not_found))
        .route("/_sandbox/stats", get(show_stats).fallback(not_found))
        .fallback(not_found)
        .with_state(sandbox)
}

struct Sandbox {
    // A lock so a test can rotate a secret while the sandbox runs.
    apps: RwLock<HashMap<String, String>>,
    accept_any: bool,
    print: bool,
    // An `Arc` so a request takes a snapshot without cloning the sets.
    faults: RwLock<Arc<Faults>>,
    answers: RwLock<Arc<Answers>>,
    /// Events answered by share so far: the next one's place in the share sequence.
    drawn: AtomicU64,
    // Events and stats under one lock so a reader never sees one without the other.
    recorded: Mutex<Recorded>,
    shutdown: CancellationToken,
}

/// How many accepted events a sandbox keeps by default (the oldest go first).
pub const DEFAULT_KEEP_EVENTS: usize = 100_000;

/// The most body bytes the kept events may hold together, whatever their count.
pub const MAX_KEPT_BYTES: usize = 256 * 1024 * 1024;

/// The most events one `GET /_sandbox/events` returns (page on with `?since=`).
const MAX_LISTED: usize = 10_000;

/// The accepted events, a bounded ring: an unauthenticated sender (`--accept-any`) cannot
/// grow the sandbox past [`MAX_KEPT_BYTES`] or `keep` events.
struct Recorded {
    events: VecDeque<ReceivedEvent>,
    /// Body bytes of `events`.
    bytes: usize,
    /// Events dropped from the front since the last clear: `?since=` counts from the first
    /// event ever accepted.
    dropped: usize,
    keep: usize,
    stats: SandboxStats,
}

impl Default for Recorded {
    fn default() -> Self {
        Recorded {
            events: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            keep: DEFAULT_KEEP_EVENTS,
            stats: SandboxStats::default(),
        }
    }
}

impl Recorded {
    fn push(&mut self, e: ReceivedEvent) {
        while !self.events.is_empty()
            && (self.events.len() >= self.keep.max(1) || self.bytes + e.body.len() > MAX_KEPT_BYTES)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.body.len();
                self.dropped += 1;
                self.stats.events_dropped += 1;
            }
        }
        self.bytes += e.body.len();
        self.events.push_back(e);
    }
}

/// A refusal: the status and the reason sent as `{"error": reason}`.
struct Rejection {
    status: StatusCode,
    reason: String,
    retry_after: Option<u64>,
}

fn reject(status: StatusCode, reason: impl Into<String>) -> Rejection {
    Rejection {
        status,
        reason: reason.into(),
        retry_after: None,
    }
}

impl Sandbox {
    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        // A panic while holding the lock cannot leave the counters inconsistent enough to matter
        // for a test receiver; keep serving rather than poisoning every later request.
        lock(&self.recorded)
    }

    fn count(&self, status: StatusCode) {
        *self
            .recorded()
            .stats
            .by_status
            .entry(status.as_u16())
            .or_default() += 1;
    }

    fn refuse(&self, app_id: &str, r: Rejection) -> Response {
        self.count(r.status);
        tracing::info!(app_id, http_status = r.status.as_u16(), reason = %r.reason, "sandbox refused push");
        let mut response = (r.status, Json(json!({ "error": r.reason }))).into_response();
        if let Some(secs) = r.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }

    /// Steps 1–6 of the module doc. Returns the parsed body.
    fn verify(&self, app_id: &str, headers: &HeaderMap, body: &[u8]) -> Result<Value, Rejection> {
        let (known, no_apps) = {
            let apps = read(&self.apps);
            (apps.get(app_id).cloned(), apps.is_empty())
        };
        let secret = match known.as_deref() {
            Some(secret) => Some(secret.as_bytes()),
            None if self.accept_any && no_apps => None,
            None => {
                return Err(reject(
                    StatusCode::NOT_FOUND,
                    format!(
                        "app {app_id:?} not found; this sandbox knows {}",
                        self.known_apps()
                    ),
                ))
            }
        };

        match header_str(headers, CONTENT_TYPE.as_str()) {
            Some(ct) if ct.trim().eq_ignore_ascii_case("application/json") => {}
            Some(ct) => {
                return Err(reject(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("Content-Type is {ct:?}; it must be \"application/json\""),
                ))
            }
            None => {
                return Err(reject(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing Content-Type header; it must be \"application/json\"",
                ))
            }
        }

        if !self.accept_any {
            // `secret` is `None` only under accept_any.
            let secret = secret.unwrap_or_default();
            check_auth_headers(app_id, secret, headers, body)?;
        }

        let value: Value = serde_json::from_slice(body).map_err(|e| {
            reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("body is not JSON: {e}"),
            )
        })?;
        check_compact(&value, body)?;
        check_fields(&value).map_err(|reason| reject(StatusCode::UNPROCESSABLE_ENTITY, reason))?;
        Ok(value)
    }

    fn accept(&self, app_id: String, headers: &HeaderMap, body: Bytes, event: Value) -> Response {
        let event_id = format!("evt_{:016x}", rand::random::<u64>());
        // A string: `verify` checked the field.
        let installation = event["installation_id"].as_str().unwrap_or_default();
        let reply =
            read(&self.answers).pick(installation, || self.drawn.fetch_add(1, Ordering::Relaxed));
        if self.print {
            let priority = event["priority"].as_str().unwrap_or("normal");
            // `writeln!` rather than `println!`: a closed stdout (`| head`) must not panic.
            let _ = writeln!(
                std::io::stdout().lock(),
                "200 {app_id} {installation} {} {priority} {} {}",
                event["event_type"].as_str().unwrap_or_default(),
                reply.name(),
                event["event_data"],
            );
        }
        let received = ReceivedEvent {
            app_id,
            event_id: event_id.clone(),
            reply,
            event,
            body: body.to_vec(),
            headers: recorded_headers(headers),
            received_at: Utc::now(),
        };
        {
            let mut recorded = self.recorded();
            recorded.stats.accepted += 1;
            *recorded.stats.by_status.entry(200).or_default() += 1;
            *recorded.stats.by_action.entry(reply.name()).or_default() += 1;
            recorded.push(received);
        }
        match (reply.status(), reply.action().and_then(|a| a.api_name())) {
            (Some(status), Some(action)) => Json(json!({
                "event_id": event_id,
                "status": status.api_name(),
                "action_taken": action,
            }))
            .into_response(),
            // A proxy or an older API answering plain text.
            _ => ([(CONTENT_TYPE, "text/plain")], "OK").into_response(),
        }
    }

    fn known_apps(&self) -> String {
        let apps = read(&self.apps);
        if apps.is_empty() {
            return "no apps (configure one with --app APP_ID=SECRET)".to_string();
        }
        let mut ids: Vec<&str> = apps.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids.join(", ")
    }
}

async fn push(
    State(sandbox): State<Arc<Sandbox>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let app_id = match path {
        Ok(Path(app_id)) => app_id,
        Err(e) => return sandbox.refuse("?", reject(e.status(), e.body_text())),
    };
    // Over axum's default body limit (2 MiB) or a broken connection.
    let body = match body {
        Ok(body) => body,
        Err(e) => return sandbox.refuse(&app_id, reject(e.status(), e.body_text())),
    };
    let event = match sandbox.verify(&app_id, &headers, &body) {
        Ok(event) => event,
        Err(r) => return sandbox.refuse(&app_id, r),
    };
    // Verified, so `app_id` is a configured app (or any id under accept_any): bounded in
    // practice; cap it anyway so a hostile client cannot grow the map.
    {
        let mut recorded = sandbox.recorded();
        let by_app = &mut recorded.stats.pushes_by_app;
        if by_app.len() < 1024 || by_app.contains_key(&app_id) {
            *by_app.entry(app_id.clone()).or_default() += 1;
        }
    }
    if let Err(r) = sandbox.inject_faults(&app_id, &event).await {
        return sandbox.refuse(&app_id, r);
    }
    sandbox.accept(app_id, &headers, body, event)
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Skip the first `since` events ever accepted (dropped ones count), so a poller fetches
    /// only what is new; at most 10,000 a page.
    #[serde(default)]
    since: usize,
}

async fn list_events(
    State(sandbox): State<Arc<Sandbox>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let since = match query {
        Ok(Query(q)) => q.since,
        Err(e) => {
            return (
                e.status(),
                Json(json!({ "error": format!("{}; use ?since=N", e.body_text()) })),
            )
                .into_response()
        }
    };
    // Streamed in chunks, each serialised under a short lock: the listing never holds more
    // than a chunk in memory, whatever the ring keeps.
    const CHUNK: usize = 100;
    struct Cursor {
        next: usize,
        listed: usize,
        started: bool,
        done: bool,
    }
    let cursor = Cursor {
        next: since,
        listed: 0,
        started: false,
        done: false,
    };
    let chunks = futures::stream::unfold(cursor, move |mut c| {
        let sandbox = sandbox.clone();
        async move {
            if c.done {
                return None;
            }
            let mut out = Vec::new();
            if !c.started {
                out.push(b'[');
            }
            let mut taken = 0;
            {
                let recorded = sandbox.recorded();
                let skip = c.next.saturating_sub(recorded.dropped);
                let room = CHUNK.min(MAX_LISTED - c.listed);
                for e in recorded.events.iter().skip(skip).take(room) {
                    if c.started || taken > 0 {
                        out.push(b',');
                    }
                    // A `Value` always serialises.
                    let _ = serde_json::to_writer(&mut out, &e.to_json());
                    taken += 1;
                }
                c.next = recorded.dropped + skip + taken;
            }
            c.started = true;
            c.listed += taken;
            if taken == 0 || c.listed >= MAX_LISTED {
                out.push(b']');
                c.done = true;
            }
            Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), c))
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

async fn show_stats(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let stats = sandbox.recorded().stats.clone();
    Json(stats).into_response()
}

async fn not_found(State(sandbox): State<Arc<Sandbox>>, method: Method, uri: Uri) -> Response {
    sandbox.count(StatusCode::NOT_FOUND);
    let reason = format!(
        "no route for {method} {}; push events with POST /v1/apps/{{app_id}}/events",
        uri.path()
    );
    (StatusCode::NOT_FOUND, Json(json!({ "error": reason }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orceum::event::OrceumEvent;
    use crate::orceum::event::Priority;
    use crate::orceum::sign::signature_header;
    use std::collections::HashSet;
    use std::time::Duration;

    const APP: &str = "app_1";
    const SECRET: &str = "whs_test_secret";
    const BODY: &str = r#"{"installation_id":"inst_x","event_type":"task.completed","event_data":{"task_id":"task_789"},"timestamp":"2024-01-15T12:00:00Z","priority":"normal"}"#;

    struct Running {
        handle: SandboxHandle,
        shutdown: CancellationToken,
        client: reqwest::Client,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn sandbox_with(cfg: SandboxConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let handle = start(cfg, listener, shutdown.clone()).await.unwrap();
        Running {
            handle,
            shutdown,
            client: reqwest::Client::new(),
        }
    }

    async fn sandbox() -> Running {
        sandbox_with(SandboxConfig {
            apps: HashMap::from([(APP.to_string(), SECRET.to_string())]),
            ..SandboxConfig::default()
        })
        .await
    }

    impl Running {
        fn url(&self, app: &str) -> String {
            format!("{}/apps/{app}/events", self.handle.base_url())
        }

        /// POST `body` to `app` with the headers `secret` and `signature` would produce.
        async fn push_as(
            &self,
            app: &str,
            secret: &str,
            signature: &str,
            body: &str,
        ) -> (u16, HeaderMap, Value) {
            let (status, headers, bytes) = self.push_raw(app, secret, signature, body).await;
            (status, headers, serde_json::from_slice(&bytes).unwrap())
        }

        /// [`Running::push_as`], the answer's body as it came.
        async fn push_raw(
            &self,
            app: &str,
            secret: &str,
            signature: &str,
            body: &str,
        ) -> (u16, HeaderMap, Bytes) {
            let resp = self
                .client
                .post(self.url(app))
                .header("Content-Type", "application/json")
                .header("X-Orceum-Webhook-Secret", secret)
                .header("X-Hub-Signature-256", signature)
                .header("X-Timestamp", "2024-01-15T12:00:01Z")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            (status, headers, resp.bytes().await.unwrap())
        }

        async fn push(&self, body: &str) -> (u16, HeaderMap, Value) {
            let sig = signature_header(SECRET.as_bytes(), body.as_bytes());
            self.push_as(APP, SECRET, &sig, body).await
        }
    }

    fn error_of(v: &Value) -> &str {
        v["error"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn correctly_signed_compact_request_gets_200_and_is_recorded() {
        let s = sandbox().await;
        let (status, _, answer) = s.push(BODY).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "PROCESSED");
        assert_eq!(answer["action_taken"], "NOTIFIED");
        assert!(answer["event_id"].as_str().unwrap().starts_with("evt_"));

        let events = s.handle.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].app_id, APP);
        assert_eq!(events[0].body, BODY.as_bytes());
        assert_eq!(events[0].event["event_data"]["task_id"], "task_789");
        assert_eq!(events[0].event_id, answer["event_id"].as_str().unwrap());
        assert_eq!(events[0].header("x-orceum-webhook-secret"), Some(REDACTED));
        assert_eq!(s.handle.stats().accepted, 1);
        assert_eq!(s.handle.stats().by_status, BTreeMap::from([(200, 1)]));
    }

    #[tokio::test]
    async fn each_installation_gets_its_answer_with_the_status_the_api_pairs_with_it() {
        let s = sandbox_with(SandboxConfig {
            apps: HashMap::from([(APP.to_string(), SECRET.to_string())]),
            answers: Answers {
                for_installation: HashMap::from([
                    ("inst_c".to_string(), Reply::ConversationStarted),
                    ("inst_q".to_string(), Reply::Queued),
                    ("inst_i".to_string(), Reply::Ignored),
                    ("inst_t".to_string(), Reply::NonJson),
                ]),
                shares: Vec::new(),
            },
            ..SandboxConfig::default()
        })
        .await;
        for (inst, action, status) in [
            ("inst_n", "NOTIFIED", "PROCESSED"),
            ("inst_c", "CONVERSATION_STARTED", "PROCESSED"),
            ("inst_q", "QUEUED", "QUEUED"),
            ("inst_i", "IGNORED", "IGNORED"),
        ] {
            let (code, _, answer) = s.push(&BODY.replace("inst_x", inst)).await;
            assert_eq!(code, 200, "{answer}");
            assert_eq!(answer["action_taken"], action, "{inst}");
            assert_eq!(answer["status"], status, "{inst}");
            assert!(answer["event_id"].as_str().unwrap().starts_with("evt_"));
        }
        let body = BODY.replace("inst_x", "inst_t");
        let sig = signature_header(SECRET.as_bytes(), body.as_bytes());
        let (code, headers, answer) = s.push_raw(APP, SECRET, &sig, &body).await;
        assert_eq!((code, answer.as_ref()), (200, b"OK".as_slice()));
        assert_eq!(headers.get(CONTENT_TYPE).unwrap(), "text/plain");

        let replies: Vec<Reply> = s.handle.events().iter().map(|e| e.reply).collect();
        assert_eq!(
            replies,
            [
                Reply::Notified,
                Reply::ConversationStarted,
                Reply::Queued,
                Reply::Ignored,
                Reply::NonJson
            ]
        );
        let stats = s
            .client
            .get(format!("http://{}/_sandbox/stats", s.handle.addr()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let stats: Value = serde_json::from_slice(&stats).unwrap();
        assert_eq!(
            stats["by_action"],
            json!({"CONVERSATION_STARTED": 1, "IGNORED": 1, "NOTIFIED": 1, "QUEUED": 1, "non-json": 1})
        );
    }

    #[tokio::test]
    async fn shares_of_answers_are_exact_over_a_run_and_start_over_when_replaced() {
        let s = sandbox().await;
        let shares = Answers::new(vec![(Reply::Ignored, 0.5)], HashMap::new()).unwrap();
        s.handle.set_answers(shares.clone());
        for _ in 0..10 {
            assert_eq!(s.push(BODY).await.0, 200);
        }
        let by_action = s.handle.stats().by_action;
        assert_eq!(by_action, BTreeMap::from([("IGNORED", 5), ("NOTIFIED", 5)]));
        s.handle.clear();
        s.handle.set_answers(Answers::default());
        assert_eq!(s.push(BODY).await.2["action_taken"], "NOTIFIED");
        assert_eq!(s.handle.events()[0].reply, Reply::Notified);
    }

    #[tokio::test]
    async fn the_bridges_own_event_body_is_accepted_on_both_paths() {
        let s = sandbox().await;
        let ev = OrceumEvent {
            installation_id: "inst_abc123".into(),
            event_type: "task.completed".into(),
            event_data: serde_json::from_str(r#"{"title":"Send Q4 report","n":1.5}"#).unwrap(),
            timestamp: "2024-01-15T12:00:00Z".into(),
            priority: Priority::High,
            metadata: Some(serde_json::from_str(r#"{"source":"kafka:tasks/2@1834"}"#).unwrap()),
        };
        let body = String::from_utf8(ev.to_body()).unwrap();
        let sig = signature_header(SECRET.as_bytes(), body.as_bytes());
        let (status, _, answer) = s.push_as(APP, SECRET, &sig, &body).await;
        assert_eq!(status, 200, "{answer}");
        let v1_less = format!("http://{}/apps/{APP}/events", s.handle.addr());
        let resp = s
            .client
            .post(v1_less)
            .header("Content-Type", "application/json")
            .header("X-Orceum-Webhook-Secret", SECRET)
            .header("X-Hub-Signature-256", sig)
            .header("X-Timestamp", "2024-01-15T12:00:01Z")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(s.handle.events().len(), 2);
    }

    #[tokio::test]
    async fn wrong_secret_is_401_and_never_echoed() {
        let s = sandbox().await;
        let wrong = "whs_wrong_one";
        let sig = signature_header(wrong.as_bytes(), BODY.as_bytes());
        let (status, _, answer) = s.push_as(APP, wrong, &sig, BODY).await;
        assert_eq!(status, 401);
        assert!(
            error_of(&answer).contains("X-Orceum-Webhook-Secret"),
            "{answer}"
        );
        let text = answer.to_string();
        assert!(!text.contains(wrong) && !text.contains(SECRET), "{text}");
        assert!(s.handle.events().is_empty());
    }

    #[tokio::test]
    async fn bad_signature_is_401() {
        let s = sandbox().await;
        let other_body = BODY.replace("inst_x", "inst_y");
        let sig = signature_header(SECRET.as_bytes(), other_body.as_bytes());
        let (status, _, answer) = s.push_as(APP, SECRET, &sig, BODY).await;
        assert_eq!(status, 401);
        assert!(
            error_of(&answer).contains("X-Hub-Signature-256"),
            "{answer}"
        );

        let upper = signature_header(SECRET.as_bytes(), BODY.as_bytes()).to_uppercase();
        let (status, _, _) = s.push_as(APP, SECRET, &upper, BODY).await;
        assert_eq!(status, 401, "upper-case hex is not the spec's format");
        assert_eq!(s.handle.stats().by_status, BTreeMap::from([(401, 2)]));
    }

    #[tokio::test]
    async fn missing_or_offset_x_timestamp_is_401() {
        let s = sandbox().await;
        let sig = signature_header(SECRET.as_bytes(), BODY.as_bytes());
        for ts in [None, Some("2024-01-15T14:00:01+02:00"), Some("yesterday")] {
            let mut req = s
                .client
                .post(s.url(APP))
                .header("Content-Type", "application/json")
                .header("X-Orceum-Webhook-Secret", SECRET)
                .header("X-Hub-Signature-256", &sig)
                .body(BODY);
            if let Some(ts) = ts {
                req = req.header("X-Timestamp", ts);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{ts:?}");
        }
    }

    #[tokio::test]
    async fn non_compact_body_is_422() {
        let s = sandbox().await;
        let spaced = BODY.replacen(r#""installation_id":"#, r#""installation_id": "#, 1);
        let (status, _, answer) = s.push(&spaced).await;
        assert_eq!(status, 422);
        assert!(error_of(&answer).contains("not compact"), "{answer}");
    }

    #[tokio::test]
    async fn bad_priority_is_422() {
        let s = sandbox().await;
        let body = BODY.replace(r#""priority":"normal""#, r#""priority":"urgent""#);
        let (status, _, answer) = s.push(&body).await;
        assert_eq!(status, 422);
        assert!(
            error_of(&answer).contains("low|normal|high|critical"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn wrong_field_order_is_422() {
        let s = sandbox().await;
        let body = r#"{"event_type":"task.completed","installation_id":"inst_x","event_data":{},"timestamp":"2024-01-15T12:00:00Z"}"#;
        let (status, _, answer) = s.push(body).await;
        assert_eq!(status, 422);
        assert!(error_of(&answer).contains("order"), "{answer}");
    }

    #[tokio::test]
    async fn missing_and_unknown_fields_are_422_all_at_once() {
        let s = sandbox().await;
        let body = r#"{"installation_id":"","event_type":"t","event_data":[],"extra":1}"#;
        let (status, _, answer) = s.push(body).await;
        assert_eq!(status, 422);
        let e = error_of(&answer);
        for part in [
            "\"extra\"",
            "installation_id is empty",
            "event_data must be an object",
            "\"timestamp\"",
        ] {
            assert!(e.contains(part), "{part} missing from {e}");
        }
    }

    #[tokio::test]
    async fn unknown_app_is_404() {
        let s = sandbox().await;
        let sig = signature_header(SECRET.as_bytes(), BODY.as_bytes());
        let (status, _, answer) = s.push_as("app_nope", SECRET, &sig, BODY).await;
        assert_eq!(status, 404);
        assert!(
            error_of(&answer).contains("app \"app_nope\" not found"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn unknown_path_is_404_with_a_json_error() {
        let s = sandbox().await;
        let resp = s
            .client
            .get(format!("http://{}/v1/apps/{APP}/events", s.handle.addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert!(error_of(&v).contains("no route for GET"), "{v}");
    }

    #[tokio::test]
    async fn reject_installations_answers_404() {
        let s = sandbox_with(SandboxConfig {
            apps: HashMap::from([(APP.to_string(), SECRET.to_string())]),
            faults: Faults {
                reject_installations: HashSet::from(["inst_x".to_string()]),
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let (status, _, answer) = s.push(BODY).await;
        assert_eq!(status, 404);
        assert!(error_of(&answer).contains("inst_x"), "{answer}");
        assert!(s.handle.events().is_empty());
    }

    #[tokio::test]
    async fn rate_429_of_one_answers_429_with_retry_after_and_faults_change_at_runtime() {
        let s = sandbox().await;
        s.handle.set_faults(Faults {
            rate_429: 1.0,
            retry_after_secs: Some(7),
            ..Faults::default()
        });
        let (status, headers, _) = s.push(BODY).await;
        assert_eq!(status, 429);
        assert_eq!(headers.get("retry-after").unwrap(), "7");

        s.handle.set_faults(Faults {
            rate_429: 1.0,
            ..Faults::default()
        });
        let (_, headers, _) = s.push(BODY).await;
        assert_eq!(headers.get("retry-after").unwrap(), "1");

        s.handle.set_faults(Faults::default());
        assert_eq!(s.push(BODY).await.0, 200);
        let stats = s.handle.stats();
        assert_eq!(stats.by_status, BTreeMap::from([(200, 1), (429, 2)]));
        assert_eq!(stats.accepted, 1);
    }

    #[tokio::test]
    async fn a_fault_never_hides_a_broken_request() {
        let s = sandbox_with(SandboxConfig {
            apps: HashMap::from([(APP.to_string(), SECRET.to_string())]),
            faults: Faults {
                rate_500: 1.0,
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        assert_eq!(s.push(&format!("{BODY} ")).await.0, 422);
        assert_eq!(s.push(BODY).await.0, 500);
    }

    #[tokio::test]
    async fn accept_any_accepts_an_unsigned_request() {
        let s = sandbox_with(SandboxConfig {
            accept_any: true,
            ..SandboxConfig::default()
        })
        .await;
        let resp = s
            .client
            .post(s.url("any_app"))
            .header("Content-Type", "application/json")
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(s.handle.events()[0].app_id, "any_app");
    }

    #[tokio::test]
    async fn inspection_endpoints_and_clear_report_the_run() {
        let s = sandbox().await;
        assert_eq!(s.push(BODY).await.0, 200);
        assert_eq!(s.push(BODY).await.0, 200);
        let base = format!("http://{}", s.handle.addr());
        let get = |path: &str| {
            let req = s.client.get(format!("{base}{path}"));
            async move {
                serde_json::from_slice::<Value>(&req.send().await.unwrap().bytes().await.unwrap())
                    .unwrap()
            }
        };
        let stats = get("/_sandbox/stats").await;
        assert_eq!(stats["accepted"], 2);
        assert_eq!(stats["by_status"]["200"], 2);
        let events = get("/_sandbox/events?since=1").await;
        assert_eq!(events.as_array().unwrap().len(), 1);
        assert_eq!(events[0]["body"], BODY);
        assert!(!events.to_string().contains(SECRET));

        s.handle.clear();
        assert!(s.handle.events().is_empty());
        assert_eq!(s.handle.stats(), SandboxStats::default());
    }

    #[tokio::test]
    async fn the_listing_streams_every_kept_event_across_chunks_and_since_counts_dropped_ones() {
        let s = sandbox().await;
        s.handle.set_keep_events(240);
        for _ in 0..250 {
            assert_eq!(s.push(BODY).await.0, 200);
        }
        let base = format!("http://{}", s.handle.addr());
        let list = |since: usize| {
            let req = s
                .client
                .get(format!("{base}/_sandbox/events?since={since}"));
            async move {
                serde_json::from_slice::<Value>(&req.send().await.unwrap().bytes().await.unwrap())
                    .unwrap()
            }
        };
        // 250 accepted, the first 10 dropped: 240 kept, over three chunks of the stream.
        assert_eq!(list(0).await.as_array().map(Vec::len), Some(240));
        assert_eq!(list(105).await.as_array().map(Vec::len), Some(145));
        assert_eq!(list(250).await, json!([]));
        assert_eq!(s.handle.stats().events_dropped, 10);
    }

    #[tokio::test]
    async fn cancelling_the_token_stops_the_server() {
        let s = sandbox().await;
        s.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), s.handle.stopped())
            .await
            .unwrap();
        assert!(tokio::net::TcpStream::connect(s.handle.addr())
            .await
            .is_err());
    }

    #[test]
    fn the_ring_keeps_the_newest_events_within_its_bounds_and_since_counts_every_event() {
        let ev = |n: usize, bytes: usize| ReceivedEvent {
            app_id: format!("app_{n}"),
            event_id: String::new(),
            reply: Reply::Notified,
            event: Value::Null,
            body: vec![b'x'; bytes],
            headers: Default::default(),
            received_at: Utc::now(),
        };
        let mut r = Recorded {
            keep: 3,
            ..Recorded::default()
        };
        for n in 0..5 {
            r.push(ev(n, 10));
        }
        let kept: Vec<&str> = r.events.iter().map(|e| e.app_id.as_str()).collect();
        assert_eq!(kept, ["app_2", "app_3", "app_4"]);
        assert_eq!((r.dropped, r.bytes, r.stats.events_dropped), (2, 30, 2));
        // Bytes bound: one huge body pushes every older one out, and is itself kept.
        r.push(ev(5, MAX_KEPT_BYTES));
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.bytes, MAX_KEPT_BYTES);
        assert_eq!(r.dropped, 5);
    }
}
