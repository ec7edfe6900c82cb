//! Test harness for running the real bridge against the sandbox: configs, an in-process
//! bridge, a bridge child process (for SIGKILL tests), and counting what the sandbox saw.

use orceum_bridge::build::{load_str, Bridge};
use orceum_bridge::telemetry::metrics::Metrics;
use orceum_bridge::tools::sandbox::{self, Faults, SandboxConfig, SandboxHandle};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const SECRET_A: &str = "whs_test_app_a_secret";
pub const SECRET_B: &str = "whs_test_app_b_secret";

/// Starts a sandbox knowing app_a and app_b.
pub async fn start_sandbox(faults: Faults) -> (SandboxHandle, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sandbox");
    start_sandbox_on(listener, faults).await
}

/// The same sandbox on a listener the test chose (a restart on the same port, say).
pub async fn start_sandbox_on(
    listener: tokio::net::TcpListener,
    faults: Faults,
) -> (SandboxHandle, CancellationToken) {
    let stop = CancellationToken::new();
    let handle = sandbox::start(
        SandboxConfig {
            apps: HashMap::from([
                ("app_a".to_string(), SECRET_A.to_string()),
                ("app_b".to_string(), SECRET_B.to_string()),
            ]),
            accept_any: false,
            faults,
            answers: Default::default(),
            print: false,
        },
        listener,
        stop.clone(),
    )
    .await
    .expect("start sandbox");
    (handle, stop)
}

/// The environment a test config is interpolated with (also given to child processes).
pub fn env_vars() -> Vec<(&'static str, &'static str)> {
    vec![("SECRET_A", SECRET_A), ("SECRET_B", SECRET_B)]
}

/// Consumer properties that make Tansu's slow group protocol bearable in tests.
pub const TEST_CONSUMER_PROPERTIES: &str =
    "{ session.timeout.ms: 6000, heartbeat.interval.ms: 1000 }";

/// A config with apps a and b, one kafka source, the given routes and delivery sections.
pub fn config(base_url: &str, brokers: &str, group: &str, routes: &str, delivery: &str) -> String {
    format!(
        r#"
orceum: {{ base_url: "{base_url}", timeout: 5s }}
apps:
  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}
  b: {{ app_id: app_b, secret: {{ env: SECRET_B }} }}
sources:
  events:
    kafka:
      bootstrap_servers: "{brokers}"
      group_id: "{group}"
      properties: {TEST_CONSUMER_PROPERTIES}
routes:
{routes}
delivery:
{delivery}
observability: {{ listen: "127.0.0.1:0", log_format: text }}
"#
    )
}

/// A route reading `topic` for app `app` with a standard mapping:
/// `{"inst": …, "seq": …, "app": …}` → installation_id = .inst, event_data = {seq}.
pub fn route(name: &str, topic: &str, app: &str, filter: Option<&str>) -> String {
    let filter = filter
        .map(|f| format!("    filter: '{f}'\n"))
        .unwrap_or_default();
    format!(
        r#"  - name: {name}
    source: events
    topics: [{topic}]
    app: {app}
{filter}    event:
      installation_id: .inst
      event_type: '"test.event"'
      event_data: '{{seq, topic: $meta.topic}}'
      priority: '.priority // "normal"'
"#
    )
}

pub fn load(yaml: &str) -> Bridge {
    let env: HashMap<&str, &str> = env_vars().into_iter().collect();
    load_str(yaml, "test.yaml", |n| env.get(n).map(|v| v.to_string()))
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"))
}

/// A bridge running in this process.
pub struct InProcess {
    pub shutdown: CancellationToken,
    /// Cancels `shutdown` when dropped, so a failing test stops its bridge instead of hanging.
    _stop_on_drop: tokio_util::sync::DropGuard,
    pub task: tokio::task::JoinHandle<Result<(), orceum_bridge::RunError>>,
    pub metrics: Arc<Mutex<Option<Arc<Metrics>>>>,
    pub addr: Arc<Mutex<Option<std::net::SocketAddr>>>,
}

pub fn spawn_bridge(yaml: &str) -> InProcess {
    // Logs go to the test's captured output (shown when it fails); RUST_LOG raises the level.
    orceum_bridge::telemetry::logging::init(orceum_bridge::config::LogFormat::Text);
    let bridge = load(yaml);
    let shutdown = CancellationToken::new();
    let metrics: Arc<Mutex<Option<Arc<Metrics>>>> = Arc::default();
    let addr: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
    let (slot, addr_slot) = (metrics.clone(), addr.clone());
    let task = tokio::spawn(orceum_bridge::run_with(
        bridge,
        shutdown.clone(),
        move |r| {
            *slot.lock().unwrap() = Some(r.metrics.clone());
            *addr_slot.lock().unwrap() = Some(r.local_addr);
        },
    ));
    InProcess {
        _stop_on_drop: shutdown.clone().drop_guard(),
        shutdown,
        task,
        metrics,
        addr,
    }
}

impl InProcess {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("bridge did not stop within 60 s")
            .expect("bridge task panicked")
            .expect("bridge returned an error");
    }

    /// `http://127.0.0.1:PORT` of the health/metrics server, once it listens.
    pub async fn health_url(&self) -> String {
        for _ in 0..100 {
            if let Some(a) = *self.addr.lock().unwrap() {
                return format!("http://{a}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the bridge's health server did not start");
    }

    /// The running bridge's metrics, once it has started.
    pub async fn metrics(&self) -> Arc<Metrics> {
        for _ in 0..100 {
            if let Some(m) = self.metrics.lock().unwrap().clone() {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the bridge did not start");
    }

    pub fn metrics_text(&self) -> String {
        self.metrics
            .lock()
            .unwrap()
            .as_ref()
            .map(|m| m.render())
            .unwrap_or_default()
    }
}

/// Sums a counter family in a Prometheus text dump, optionally only series containing `filter`.
pub fn counter(text: &str, name: &str, filter: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What the sandbox saw, per source coordinate (`kafka:topic/p@o`).
pub struct Seen {
    pub total: usize,
    pub per_source: BTreeMap<String, usize>,
}

impl Seen {
    pub fn unique(&self) -> usize {
        self.per_source.len()
    }
    pub fn duplicates(&self) -> usize {
        self.total - self.unique()
    }
}

pub fn seen(sandbox: &SandboxHandle) -> Seen {
    let mut per_source = BTreeMap::new();
    let events = sandbox.events();
    for e in &events {
        let source = e.event["metadata"]["source"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        *per_source.entry(source).or_insert(0) += 1;
    }
    Seen {
        total: events.len(),
        per_source,
    }
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The records of [`payloads`]`(n, keys)`, keyed by installation, with the partition fixed by the
/// installation (`k % partitions`): one installation's events share a partition and have a
/// source order. `(key, payload, partition)`, as `common::produce` takes them.
pub fn keyed_records(
    n: usize,
    keys: usize,
    partitions: usize,
) -> Vec<(Option<String>, Vec<u8>, Option<i32>)> {
    payloads(n, keys)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let k = i % keys;
            (Some(format!("inst_{k}")), p, Some((k % partitions) as i32))
        })
        .collect()
}

/// `n` JSON payloads `{"inst": "inst_<i % keys>", "seq": i}`.
pub fn payloads(n: usize, keys: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!(r#"{{"inst":"inst_{}","seq":{i}}}"#, i % keys).into_bytes())
        .collect()
}

/// Starts `orceum-bridge run -c config` as a child process, logging to `log` (appended), at
/// `RUST_LOG=info` or `ORCEUM_TEST_CHILD_LOG` (e.g. `info,orceum_bridge::source::kafka=debug`).
pub fn start_process(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
    cmd.args(["run", "-c"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("ORCEUM_TEST_CHILD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, v) in env_vars() {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start orceum-bridge")
}

/// Sends SIGTERM.
pub fn sigterm(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -TERM failed");
}

/// Peak resident memory of a process (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident memory of a process (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Apps a and b interleaved 1:9 over `n` events (`{"app", "inst", "seq"}` payloads): every
/// tenth is a's, over 20 installations; the rest b's, over 90.
pub fn interleaved_a_b(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    interleaved(n, 10, 20, 90)
}

/// Apps a and b interleaved over `n` events: every `a_every`-th is a's (over `a_insts`
/// installations), the rest b's (over `b_insts`).
pub fn interleaved(
    n: usize,
    a_every: usize,
    a_insts: usize,
    b_insts: usize,
) -> Vec<(&'static str, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let (app, inst) = if i % a_every == 0 {
                ("a", format!("inst_a{}", i % a_insts))
            } else {
                ("b", format!("inst_b{}", i % b_insts))
            };
            (
                app,
                format!(r#"{{"app":"{app}","inst":"{inst}","seq":{i}}}"#).into_bytes(),
            )
        })
        .collect()
}

/// Routes `to-a` (topic `topic_a`, app a) and `to-b` (topic `topic_b`, app b), each taking only
/// its app's events (`.app`).
pub fn a_b_routes(topic_a: &str, topic_b: &str) -> String {
    format!(
        "{}{}",
        route("to-a", topic_a, "a", Some(r#".app == "a""#)),
        route("to-b", topic_b, "b", Some(r#".app == "b""#))
    )
}

/// Fetches a gauge's summed value from a bridge's `/metrics` over HTTP.
pub async fn scrape(url: &str, name: &str) -> Option<u64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(counter(&text, name, ""))
}
