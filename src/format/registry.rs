//! A Confluent-compatible Schema Registry client (Confluent, Redpanda, Karapace, Apicurio's
//! ccompat API): schemas fetched by id (`GET /schemas/ids/{id}`), their references by subject
//! and version, parsed once and kept in a bounded cache shared by every route and partition.
//!
//! Decoding is synchronous (it runs where the templates run), so the fetch runs on a thread
//! of its own with its own small runtime, and a caller waits for its answer. While the
//! registry cannot answer (down, 5xx, timeout), the caller keeps waiting and retrying, so the
//! message waits like any transient failure and nothing is dead-lettered; an id the registry
//! says it does not have is the only verdict that dead-letters (reason `schema`).

use super::avro::AvroSchema;
use super::protobuf::ProtoSchema;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Schemas kept at once.
const CACHE_SCHEMAS: usize = 1024;
/// References followed for one schema, in all.
const MAX_REFERENCES: usize = 64;

/// Where the registry is and how to talk to it (`schema_registry:`, resolved by `build`).
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub ca_file: Option<std::path::PathBuf>,
    pub timeout: Duration,
}

/// A schema as the registry holds it, parsed.
#[derive(Debug)]
pub enum Registered {
    Avro(Box<AvroSchema>),
    Protobuf(ProtoSchema),
    /// A JSON Schema: the payload is JSON; the schema itself is not needed to read it.
    Json,
}

impl Registered {
    pub fn kind(&self) -> &'static str {
        match self {
            Registered::Avro(_) => "avro",
            Registered::Protobuf(_) => "protobuf",
            Registered::Json => "json_schema",
        }
    }
}

enum Fetched {
    Found(Registered),
    /// The registry answered that it has no such id (or the schema does not parse).
    Unknown(String),
    /// No answer to rely on: retried.
    Unavailable(String),
}

struct Request {
    id: u32,
    reply: mpsc::SyncSender<Fetched>,
}

/// The caller gave up waiting: the bridge is stopping.
#[derive(Debug)]
pub struct Abandoned;

/// The schemas by id, and the ids in the order they came (the oldest go first).
type Cache = (HashMap<u32, Arc<Registered>>, VecDeque<u32>);

pub struct Registry {
    url: String,
    cache: RwLock<Cache>,
    requests: Mutex<mpsc::SyncSender<Request>>,
    /// When the last "registry unavailable" warning was logged (one per 10 s).
    warned: Mutex<Option<Instant>>,
    /// Fetches that failed and were retried: `orceum_bridge_schema_registry_errors_total`.
    pub errors: prometheus::IntCounter,
}

impl Registry {
    /// Starts the fetching thread.
    pub fn start(
        settings: RegistrySettings,
        errors: prometheus::IntCounter,
    ) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("schema_registry.ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("schema_registry.ca_file {}: {e}", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("schema_registry: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("schema_registry: cannot start its runtime: {e}"))?;
        let (tx, rx) = mpsc::sync_channel::<Request>(64);
        let url = settings.url.trim_end_matches('/').to_string();
        let client = Client {
            http,
            url: url.clone(),
            settings,
        };
        std::thread::Builder::new()
            .name("schema-registry".into())
            .spawn(move || {
                while let Ok(req) = rx.recv() {
                    let fetched = runtime.block_on(client.fetch(req.id));
                    let _ = req.reply.send(fetched);
                }
            })
            .map_err(|e| format!("schema_registry: cannot start its thread: {e}"))?;
        Ok(Self {
            url,
            cache: RwLock::new((HashMap::new(), VecDeque::new())),
            requests: Mutex::new(tx),
            warned: Mutex::new(None),
            errors,
        })
    }

    /// For a command around the engine (`render`, `replay`): the registry when one is
    /// configured, its failed fetches counted nowhere.
    pub fn for_tool(settings: Option<&RegistrySettings>) -> Result<Option<Self>, String> {
        let Some(settings) = settings else {
            return Ok(None);
        };
        let errors = prometheus::IntCounter::new("schema_registry_errors", "-")
            .unwrap_or_else(|e| unreachable!("static metric: {e}"));
        Self::start(settings.clone(), errors).map(Some)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn cached(&self, id: u32) -> Option<Arc<Registered>> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.0.get(&id).cloned()
    }

    /// Schema `id`: from the cache, or fetched (waiting, and retrying while the registry
    /// cannot answer, until `stop`). `Ok(Err(why))`: the registry has no such schema.
    pub fn schema(
        &self,
        id: u32,
        stop: &CancellationToken,
    ) -> Result<Result<Arc<Registered>, String>, Abandoned> {
        if let Some(s) = self.cached(id) {
            return Ok(Ok(s));
        }
        // Waiting blocks this thread: off the async workers when on one.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.fetch_waiting(id, stop))
            }
            _ => self.fetch_waiting(id, stop),
        }
    }

    fn fetch_waiting(
        &self,
        id: u32,
        stop: &CancellationToken,
    ) -> Result<Result<Arc<Registered>, String>, Abandoned> {
        let mut delay = Duration::from_millis(200);
        loop {
            if stop.is_cancelled() {
                return Err(Abandoned);
            }
            let (reply, answer) = mpsc::sync_channel(1);
            let sent = {
                let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
                requests.send(Request { id, reply })
            };
            let fetched = match sent {
                Ok(()) => answer
                    .recv()
                    .unwrap_or_else(|_| Fetched::Unavailable("the registry client stopped".into())),
                Err(_) => Fetched::Unavailable("the registry client stopped".into()),
            };
            match fetched {
                Fetched::Found(schema) => {
                    let schema = Arc::new(schema);
                    let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                    if cache.0.insert(id, schema.clone()).is_none() {
                        cache.1.push_back(id);
                    }
                    while cache.1.len() > CACHE_SCHEMAS {
                        if let Some(old) = cache.1.pop_front() {
                            cache.0.remove(&old);
                        }
                    }
                    return Ok(Ok(schema));
                }
                Fetched::Unknown(why) => return Ok(Err(why)),
                Fetched::Unavailable(why) => {
                    self.errors.inc();
                    let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
                    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        *warned = Some(Instant::now());
                        tracing::warn!(registry = %self.url, schema_id = id, error = %why,
                            "cannot fetch the schema; its message waits and the fetch is retried");
                    }
                }
            }
            // Sleep in short steps, to notice `stop`.
            let until = Instant::now() + delay;
            while Instant::now() < until && !stop.is_cancelled() {
                std::thread::sleep(Duration::from_millis(50));
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// The HTTP side, on the registry thread.
struct Client {
    http: reqwest::Client,
    url: String,
    settings: RegistrySettings,
}

/// One schema document: `GET /schemas/ids/{id}` or `GET /subjects/{s}/versions/{v}`.
#[derive(serde::Deserialize)]
struct Document {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(serde::Deserialize)]
struct Reference {
    /// The import name (`shop/coupon.proto`, or an Avro type's full name).
    #[serde(default)]
    name: String,
    subject: String,
    version: i64,
}

enum Got {
    Doc(Document),
    NotFound(String),
}

impl Client {
    /// `GET` of the registry's URL with `segments` appended (each percent-encoded).
    async fn get(&self, segments: &[&str]) -> Result<Got, String> {
        let path = format!("/{}", segments.join("/"));
        let mut url =
            reqwest::Url::parse(&self.url).map_err(|e| format!("schema_registry.url: {e}"))?;
        url.path_segments_mut()
            .map_err(|()| "schema_registry.url cannot take a path".to_string())?
            .pop_if_empty()
            .extend(segments);
        let mut req = self.http.get(url).header(
            "Accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some(user) = &self.settings.username {
            req = req.basic_auth(
                user,
                self.settings.password.as_ref().map(|p| p.expose_secret()),
            );
        }
        let resp = req.send().await.map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status();
        // A schema is small; 4 MiB bounds a hostile answer (a longer one is cut, and then is
        // not a schema document).
        let body = crate::orceum::client::read_bounded(resp, 4 << 20).await;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Got::NotFound(format!(
                "the registry has no {path} ({})",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        if !status.is_success() {
            return Err(format!("GET {path}: HTTP {status}"));
        }
        serde_json::from_slice(&body)
            .map(Got::Doc)
            .map_err(|e| format!("GET {path}: not a schema document: {e}"))
    }

    async fn fetch(&self, id: u32) -> Fetched {
        let id_text = id.to_string();
        let doc = match self.get(&["schemas", "ids", &id_text]).await {
            Ok(Got::Doc(d)) => d,
            Ok(Got::NotFound(why)) => return Fetched::Unknown(why),
            Err(why) => return Fetched::Unavailable(why),
        };
        // References, depth first: dependencies before what uses them.
        let mut pending: Vec<(Reference, usize)> =
            doc.references.into_iter().rev().map(|r| (r, 0)).collect();
        let mut seen = std::collections::HashSet::new();
        let mut ordered: Vec<(usize, String, String)> = Vec::new();
        while let Some((r, depth)) = pending.pop() {
            if !seen.insert((r.subject.clone(), r.version)) {
                continue;
            }
            if seen.len() > MAX_REFERENCES || depth > 16 {
                return Fetched::Unknown(format!(
                    "schema {id} has over {MAX_REFERENCES} references or nests them over 16 deep"
                ));
            }
            let version = if r.version < 0 {
                "latest".to_string()
            } else {
                r.version.to_string()
            };
            match self
                .get(&["subjects", &r.subject, "versions", &version])
                .await
            {
                Ok(Got::Doc(d)) => {
                    pending.extend(d.references.into_iter().map(|r| (r, depth + 1)));
                    ordered.push((depth, r.name, d.schema));
                }
                Ok(Got::NotFound(why)) => return Fetched::Unknown(why),
                Err(why) => return Fetched::Unavailable(why),
            }
        }
        // Deepest first: what a schema references is defined before it.
        ordered.sort_by_key(|(depth, _, _)| std::cmp::Reverse(*depth));
        let named: Vec<(String, String)> = ordered.into_iter().map(|(_, n, s)| (n, s)).collect();
        let references: Vec<String> = named.iter().map(|(_, s)| s.clone()).collect();
        let parsed = match doc.schema_type.as_deref().unwrap_or("AVRO") {
            "AVRO" => {
                AvroSchema::parse(&doc.schema, &references).map(|s| Registered::Avro(Box::new(s)))
            }
            "PROTOBUF" => ProtoSchema::parse(&doc.schema, &named).map(Registered::Protobuf),
            "JSON" => Ok(Registered::Json),
            other => Err(format!(
                "schema type {other:?} is not one this bridge reads"
            )),
        };
        match parsed {
            Ok(s) => Fetched::Found(s),
            Err(why) => Fetched::Unknown(why),
        }
    }
}
