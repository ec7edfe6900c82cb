//! The `orceum-bridge` command line: parses arguments, calls the library, maps errors to exit
//! codes. Nothing else lives here.

use anyhow::Context;
use clap::{Parser, Subcommand};
use orceum_bridge::tools::sandbox::{self, Answers, Faults, SandboxConfig};
use orceum_bridge::{build, config};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's malloc: every event allocates on one thread and frees on
/// another (consumer thread → tokio workers), and glibc's allocator was ~12% of the CPU of a
/// drain (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits its arenas eagerly on Linux by default, and memory it frees in an eagerly
/// committed arena stays resident: ~8 MB more RSS than glibc at idle (measured,
/// docs/performance.md). Commit on demand instead. The option is read when the first arena is
/// reserved, at the process's first allocation, before `main`; so it is set from an
/// `.init_array` entry, which the C runtime calls before any Rust code allocates.
/// (`MIMALLOC_ARENA_EAGER_COMMIT` in the environment is therefore not honoured.)
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static COMMIT_MEMORY_ON_DEMAND: extern "C" fn() = commit_memory_on_demand;

#[cfg(target_os = "linux")]
extern "C" fn commit_memory_on_demand() {
    /// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (the same in its v2 and v3;
    /// the crate version is pinned in Cargo.toml). libmimalloc-sys names no constant for it.
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: writes one entry of mimalloc's static option table; allocates nothing and runs
    // before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

/// `--version`: the crate version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("ORCEUM_BRIDGE_REVISION"),
    ")"
);

/// The exit codes, one per outcome (README, "Exit codes").
mod exit {
    /// Done: the command did what it was asked.
    pub const OK: u8 = 0;
    /// The config is invalid (`check` lists every error), `check --connect` found a problem,
    /// or the command failed (cannot connect, listen or read; a fatal error while running).
    pub const ERROR: u8 = 1;
    // 2: the command line itself is wrong (clap's usage error, with the usage on stderr).
    /// `render`: the sample message would be skipped (a filter, no route).
    pub const SKIPPED: u8 = 3;
    /// `render`: the sample message would be dead-lettered.
    pub const DEAD_LETTER: u8 = 4;
    /// `replay`: it ran to the end, and some records still fail (listed on stdout).
    pub const REPLAY_INCOMPLETE: u8 = 5;
    /// `run`: a second SIGTERM/SIGINT arrived during the drain; stopped without finishing it
    /// (what was not committed is read again at the next start).
    pub const INTERRUPTED: u8 = 6;
}

#[derive(Parser)]
#[command(
    name = "orceum-bridge",
    version = VERSION,
    about = "Kafka topics and NATS subjects (core, JetStream) → Orceum's \"Push an Event\" API: mapped, rate-limited, signed; an offset is committed (a JetStream message acked) once its outcome is final"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge until SIGTERM/SIGINT, then drain and exit 0.
    Run {
        /// The config file (YAML; docs/configuration.md).
        #[arg(short, long, env = "ORCEUM_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config: secrets, templates, references. Lists every error with its path.
    Check {
        /// The config file (YAML; docs/configuration.md).
        #[arg(short, long, env = "ORCEUM_BRIDGE_CONFIG")]
        config: PathBuf,
        /// Also connect: the brokers answer; the topics, streams and consumers the routes read
        /// exist, and so does every dead-letter destination (the Kafka topic, a stream that
        /// captures the NATS subject).
        #[arg(long)]
        connect: bool,
    },
    /// Show the request one sample message would produce (stdin by default).
    Render {
        /// The config file (YAML; docs/configuration.md).
        #[arg(short, long, env = "ORCEUM_BRIDGE_CONFIG")]
        config: PathBuf,
        /// The route (its `name:`) to put the sample through.
        #[arg(long)]
        route: String,
        /// A file with the sample message; `-` or absent: stdin.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Sample coordinates (repeatable): Kafka topic=…, partition=…, offset=…, key=…; NATS
        /// subject=…, sequence=… (JetStream); any bus timestamp=… (RFC 3339), header.NAME=…
        #[arg(long = "meta")]
        meta: Vec<String>,
        /// Read the sample as json, avro, protobuf or json_schema (a Confluent-framed record
        /// from --input) instead of the route's own format.
        #[arg(long, value_parser = ["json", "avro", "protobuf", "json_schema"])]
        format: Option<String>,
        /// The input holds one sample message per line (NDJSON): print one JSON verdict per
        /// line (send with the body, skipped, dead_letter with its kind) and the counts on
        /// stderr; exit 4 if any line would be dead-lettered, else 3 if any is skipped.
        #[arg(long)]
        ndjson: bool,
        /// NAME=FILE: a sample table for `lookup("NAME"; …)`, a JSON object of keys to values
        /// or a .csv of key,value lines (repeatable). Tables not given answer null.
        #[arg(long = "lookup")]
        lookups: Vec<String>,
    },
    /// For local testing: an Orceum-compatible endpoint that verifies every request as the
    /// spec says. Not a server to expose: keep it on a loopback address.
    Sandbox {
        /// The address to listen on (keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// APP_ID=SECRET, APP_ID=file:PATH or APP_ID=env:NAME (repeatable). Prefer file: or
        /// env:, a secret on the command line is visible in `ps`.
        #[arg(long = "app")]
        apps: Vec<String>,
        /// Accept requests without checking secret and signature (benchmarking peers).
        #[arg(long)]
        accept_any: bool,
        /// Fraction of requests answered 500.
        #[arg(long, default_value_t = 0.0)]
        fail_500: f64,
        /// Fraction of requests answered 503.
        #[arg(long, default_value_t = 0.0)]
        fail_503: f64,
        /// Fraction of requests answered 429 with Retry-After.
        #[arg(long, default_value_t = 0.0)]
        rate_429: f64,
        /// The Retry-After seconds sent with 429.
        #[arg(long)]
        retry_after: Option<u64>,
        /// Added latency per request, e.g. 50ms.
        #[arg(long, value_parser = parse_duration)]
        latency: Option<Duration>,
        /// Installation ids answered 404 (repeatable).
        #[arg(long = "reject-installation")]
        reject_installations: Vec<String>,
        /// Event types answered 422 (repeatable).
        #[arg(long = "reject-event-type")]
        reject_event_types: Vec<String>,
        /// App ids whose every push is answered 429 with --retry-after (repeatable).
        #[arg(long = "throttle-app")]
        throttle_apps: Vec<String>,
        /// Accepted events kept for /_sandbox/events (the oldest go first; 256 MiB of bodies
        /// at most).
        #[arg(long, default_value_t = orceum_bridge::tools::sandbox::DEFAULT_KEEP_EVENTS)]
        keep_events: usize,
        /// App ids whose every push is answered 503, Orceum down for that app (repeatable).
        #[arg(long = "down-app")]
        down_apps: Vec<String>,
        /// ACTION=SHARE: answer this share of accepted events with this action_taken
        /// (NOTIFIED, CONVERSATION_STARTED, QUEUED, IGNORED, or non-json for a plain-text 200),
        /// e.g. --action IGNORED=0.3 --action QUEUED=0.2; the rest NOTIFIED (repeatable).
        #[arg(long = "action")]
        actions: Vec<String>,
        /// INSTALLATION=ACTION: this installation's events always get this answer (repeatable).
        #[arg(long = "action-for")]
        actions_for: Vec<String>,
        /// Do not print each event.
        #[arg(long)]
        quiet: bool,
    },
    /// Re-run dead letters through the current config (after a fix). Exit 5 if some still fail.
    Replay {
        /// The config file (YAML; docs/configuration.md).
        #[arg(short, long, env = "ORCEUM_BRIDGE_CONFIG")]
        config: PathBuf,
        /// kafka:TOPIC or jetstream:STREAM
        #[arg(long)]
        from: orceum_bridge::tools::replay::ReplayFrom,
        /// The `sources:` entry to read with (default: the only one of that bus).
        #[arg(long)]
        source: Option<String>,
        /// First offset / stream sequence (inclusive).
        #[arg(long)]
        start: Option<i64>,
        /// Last offset / stream sequence (inclusive).
        #[arg(long)]
        end: Option<i64>,
        /// Use this route instead of the one recorded in the dead letter.
        #[arg(long)]
        route: Option<String>,
        /// Show what would happen; push nothing.
        #[arg(long)]
        dry_run: bool,
        /// Give up on a record still failing transiently after this long.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        max_elapsed: Duration,
        /// Only the dead letters of this kind (e.g. lookup_miss once the mappings exist).
        #[arg(long)]
        reason: Option<String>,
        /// Only the dead letters of routes to this app (its `apps:` name).
        #[arg(long)]
        app: Option<String>,
        /// Only the dead letters written at or after this time: RFC 3339
        /// (2026-12-01T09:30:00Z) or a duration back from now (90m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// Only the dead letters written at or before this time (as --since).
        #[arg(long)]
        until: Option<String>,
    },
    /// Zero-dependency quickstart: embedded Kafka, the sandbox, the example config, sample events.
    Demo {
        /// How many domain events to produce.
        #[arg(long, default_value_t = 300)]
        events: usize,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::duration::parse(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

/// Loads the config, or prints every error in it (with paths) and returns `None`.
fn load_or_report(path: &std::path::Path) -> Option<build::Bridge> {
    match build::load_file(path) {
        Ok(b) => Some(b),
        Err(errors) => {
            eprint!("{errors}");
            None
        }
    }
}

/// The async runtime. Its worker threads push requests; a Kafka source's consumer thread
/// (parse, templates) is outside it, so by default the runtime takes one core fewer than the
/// process may use (at least one): on 2 cores, one worker measured ~13% less CPU per event
/// than two (fewer wake-ups and context switches between them; docs/performance.md).
/// `TOKIO_WORKER_THREADS` overrides it.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads(cores.saturating_sub(1).max(1));
    }
    builder.build().context("cannot start the async runtime")
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config, connect } => match build::load_file(&config) {
            Ok(bridge) => {
                if connect {
                    let errors = runtime()?.block_on(orceum_bridge::tools::probe::probe(&bridge));
                    if !errors.is_empty() {
                        eprint!(
                            "{}",
                            config::ConfigErrors {
                                file: config.display().to_string(),
                                errors
                            }
                        );
                        return Ok(ExitCode::from(exit::ERROR));
                    }
                }
                println!(
                    "{}: OK — {}{}",
                    config.display(),
                    bridge.summary(),
                    if connect {
                        " (brokers reached, topics/streams/consumers exist)"
                    } else {
                        ""
                    }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprint!("{errors}");
                Ok(ExitCode::from(exit::ERROR))
            }
        },
        Command::Run { config } => {
            let Some(bridge) = load_or_report(&config) else {
                return Ok(ExitCode::from(exit::ERROR));
            };
            let json = matches!(bridge.observability.log_format, config::LogFormat::Json);
            orceum_bridge::telemetry::logging::init(bridge.observability.log_format);
            let rt = runtime()?;
            let result = rt.block_on(async {
                let shutdown = CancellationToken::new();
                let signal = shutdown.clone();
                let mut signals = Signals::new()?;
                tokio::spawn(async move {
                    let first = signals.next().await;
                    tracing::info!(signal = first, "stopping: draining what is in flight (a second SIGTERM/SIGINT stops at once)");
                    signal.cancel();
                    let second = signals.next().await;
                    tracing::warn!(signal = second, "second signal during the drain: exiting now, without finishing it; what was not committed is read again at the next start");
                    std::process::exit(i32::from(exit::INTERRUPTED));
                });
                orceum_bridge::run(bridge, shutdown).await.map_err(anyhow::Error::from)
            });
            match result {
                Ok(()) => Ok(ExitCode::SUCCESS),
                // With JSON logs the fatal error is a log line too, for the log pipeline.
                Err(e) if json => {
                    tracing::error!(error = format!("{e:#}"), "fatal: the bridge stopped");
                    Ok(ExitCode::from(exit::ERROR))
                }
                Err(e) => Err(e),
            }
        }
        Command::Render {
            config,
            route,
            input,
            meta,
            lookups,
            format,
            ndjson,
        } => {
            use orceum_bridge::config::PayloadFormat;
            let format = format.as_deref().map(|f| match f {
                "avro" => PayloadFormat::Avro,
                "protobuf" => PayloadFormat::Protobuf,
                "json_schema" => PayloadFormat::JsonSchema,
                _ => PayloadFormat::Json,
            });
            let Some(bridge) = load_or_report(&config) else {
                return Ok(ExitCode::from(exit::ERROR));
            };
            for note in orceum_bridge::tools::render::load_lookups(&bridge, &lookups)? {
                eprintln!("{note}");
            }
            if ndjson {
                return render_ndjson(&bridge, &route, input.as_deref(), &meta);
            }
            // Read no more than a message may hold (+1, so an oversized one is reported as
            // the engine would: too_large), whatever stdin or the file holds.
            let limit = bridge.delivery.max_message_bytes as u64 + 1;
            let mut bytes = Vec::new();
            match input {
                Some(p) if p.as_os_str() != "-" => {
                    std::fs::File::open(&p)
                        .and_then(|f| f.take(limit).read_to_end(&mut bytes))
                        .with_context(|| format!("cannot read {}", p.display()))?;
                }
                _ => {
                    std::io::stdin()
                        .lock()
                        .take(limit)
                        .read_to_end(&mut bytes)
                        .context("cannot read the sample message from stdin")?;
                }
            }
            let max = bridge.delivery.max_message_bytes;
            let (verdict, code) = if bytes.len() > max {
                // The rest was not read: say so rather than a made-up size.
                (
                    format!("DEAD-LETTER (too_large): message is more than {max} bytes, over delivery.max_message_bytes ({max})\n"),
                    exit::DEAD_LETTER,
                )
            } else {
                use orceum_bridge::tools::render::Rendered;
                let rendered = orceum_bridge::tools::render::render_as(
                    &bridge, &route, &bytes, &meta, format,
                )?;
                let code = match rendered {
                    Rendered::Send(_) => exit::OK,
                    Rendered::Skipped(_) => exit::SKIPPED,
                    Rendered::DeadLetter { .. } => exit::DEAD_LETTER,
                };
                (rendered.to_string(), code)
            };
            let mut out = std::io::stdout().lock();
            match write!(out, "{verdict}").and_then(|()| out.flush()) {
                Ok(()) => {}
                // `render … | head -1`: the reader has what it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS)
                }
                Err(e) => return Err(e).context("cannot write the rendered request"),
            }
            Ok(ExitCode::from(code))
        }
        Command::Sandbox {
            listen,
            apps,
            accept_any,
            fail_500,
            fail_503,
            rate_429,
            retry_after,
            latency,
            reject_installations,
            reject_event_types,
            throttle_apps,
            down_apps,
            actions,
            actions_for,
            keep_events,
            quiet,
        } => {
            let mut app_map = HashMap::new();
            for a in &apps {
                let (id, secret) = a.split_once('=').with_context(|| {
                    "--app takes APP_ID=SECRET, APP_ID=file:PATH or APP_ID=env:NAME".to_string()
                })?;
                app_map.insert(id.to_string(), sandbox_secret(id, secret)?);
            }
            if app_map.is_empty() && !accept_any {
                anyhow::bail!("give at least one --app APP_ID=SECRET, or --accept-any");
            }
            let answers = Answers::new(
                actions
                    .iter()
                    .map(|a| Answers::parse_share(a))
                    .collect::<Result<_, _>>()?,
                actions_for
                    .iter()
                    .map(|a| Answers::parse_installation(a))
                    .collect::<Result<_, _>>()?,
            )?;
            let cfg = SandboxConfig {
                apps: app_map,
                accept_any,
                faults: Faults {
                    rate_500: fail_500,
                    rate_503: fail_503,
                    rate_429,
                    retry_after_secs: retry_after,
                    latency: latency.unwrap_or_default(),
                    reject_installations: reject_installations.into_iter().collect::<HashSet<_>>(),
                    reject_event_types: reject_event_types.into_iter().collect::<HashSet<_>>(),
                    throttle_apps: throttle_apps.into_iter().collect::<HashSet<_>>(),
                    down_apps: down_apps.into_iter().collect::<HashSet<_>>(),
                },
                answers,
                print: !quiet,
            };
            let rt = runtime()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("--listen {listen}: cannot listen there"))?;
                let shutdown = CancellationToken::new();
                let handle = sandbox::start(cfg, listener, shutdown.clone()).await?;
                handle.set_keep_events(keep_events);
                if !handle.addr().ip().is_loopback() {
                    eprintln!(
                        "WARNING: the sandbox listens on {}, reachable from other machines; it is for local testing (use --listen 127.0.0.1:PORT)",
                        handle.addr()
                    );
                }
                eprintln!(
                    "sandbox listening on {}: base_url {}",
                    handle.addr(),
                    handle.base_url()
                );
                wait_for_signal().await;
                shutdown.cancel();
                handle.stopped().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config,
            from,
            source,
            start,
            end,
            route,
            dry_run,
            max_elapsed,
            reason,
            app,
            since,
            until,
        } => {
            let Some(bridge) = load_or_report(&config) else {
                return Ok(ExitCode::from(exit::ERROR));
            };
            let now = chrono::Utc::now();
            let when = |flag: &str, v: Option<String>| {
                v.map(|v| orceum_bridge::tools::replay::parse_when(&v, now))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{flag} {e}"))
            };
            let (since, until) = (when("--since", since)?, when("--until", until)?);
            let opts = orceum_bridge::tools::replay::ReplayOptions {
                from,
                source,
                start,
                end,
                route,
                dry_run,
                max_elapsed,
                reason,
                app,
                since,
                until,
            };
            let summary =
                runtime()?.block_on(orceum_bridge::tools::replay::replay(&bridge, &opts))?;
            println!("replay: {summary}");
            Ok(ExitCode::from(if summary.failed.is_empty() {
                exit::OK
            } else {
                exit::REPLAY_INCOMPLETE
            }))
        }
        Command::Demo { events } => {
            let ok = orceum_bridge::tools::demo::run(events)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::ERROR)
            })
        }
    }
}

/// `render --ndjson`: a verdict per line of the file (or stdin), the counts on stderr.
fn render_ndjson(
    bridge: &build::Bridge,
    route: &str,
    input: Option<&std::path::Path>,
    meta: &[String],
) -> anyhow::Result<ExitCode> {
    use orceum_bridge::tools::render::{render_lines, NdjsonError};
    let mut reader: Box<dyn std::io::BufRead> = match input {
        Some(p) if p.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let counts = match render_lines(bridge, route, &mut reader, meta, &mut out) {
        Ok(c) => c,
        // `render --ndjson … | head`: the reader has what it wanted.
        Err(NdjsonError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(ExitCode::SUCCESS)
        }
        Err(e) => return Err(e.into()),
    };
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("cannot write the verdicts")
        }
        _ => {}
    }
    eprintln!("{counts}");
    Ok(ExitCode::from(match counts.worst() {
        Some("dead_letter") => exit::DEAD_LETTER,
        Some(_) => exit::SKIPPED,
        None => exit::OK,
    }))
}

async fn wait_for_signal() {
    match Signals::new() {
        Ok(mut signals) => {
            signals.next().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGTERM and SIGINT, listened to from creation on: one set for the whole run, so a second
/// signal is not missed between two waits.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}

/// A sandbox app's secret: given inline, `file:PATH` or `env:NAME` (read like a config secret:
/// a regular file under 64 KiB, trimmed, not empty).
fn sandbox_secret(id: &str, given: &str) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let source = if let Some(path) = given.strip_prefix("file:") {
        config::SecretSource::File(PathBuf::from(path))
    } else if let Some(name) = given.strip_prefix("env:") {
        config::SecretSource::Env(name.to_string())
    } else {
        return Ok(given.to_string());
    };
    let secret = config::secret::read_plain(&source, &|n| std::env::var(n).ok())
        .with_context(|| format!("--app {id}: cannot read its secret"))?;
    Ok(secret.expose_secret().to_string())
}
