//! The bridge process SIGKILLed mid-stream and restarted, three times, with the default
//! uncommitted window (`max_uncommitted_per_partition: 100000`): nothing is lost, then a SIGTERM
//! drains and exits 0 with everything committed.
//!
//! On librdkafka's mock cluster, which keeps commit metadata, the offset map in each commit lets
//! a restart skip what was already final, so the duplicates a kill causes are only what was held
//! (at most `max_in_flight`) plus what finished within the last commit interval. Tansu (memory
//! storage) drops commit metadata: there the restart falls back to plain at-least-once from the
//! committed frontier, never skipping unfinished work.

use crate::common::*;
use crate::harness::*;
use chrono::{DateTime, Utc};
use orceum_bridge::tools::sandbox::{Faults, SandboxHandle};
use rdkafka::mocking::MockCluster;
use std::time::Duration;

const MAX_IN_FLIGHT: usize = 100;
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
const EVENTS: usize = 3000;

/// What three kills and a clean stop left behind.
struct Crashes {
    /// When each kill happened and the unique deliveries seen by then.
    kills: Vec<(DateTime<Utc>, usize)>,
    unique: usize,
    duplicates: usize,
    committed: Vec<Option<i64>>,
    ends: Vec<i64>,
    /// Messages the restarts skipped as already final (the `already_final=N` log lines).
    skipped: u64,
}

/// `topic` exists with 3 partitions.
async fn kill_three_times_then_stop(
    kafka: &Kafka,
    topic: &str,
    sandbox: &SandboxHandle,
) -> Crashes {
    let group = unique("g-crash");
    kafka.produce(topic, keyed_records(EVENTS, 30, 3)).await;
    let yaml = config(
        &sandbox.base_url(),
        &kafka.brokers,
        &group,
        &route("all", topic, "a", None),
        &format!(
            "  max_in_flight: {MAX_IN_FLIGHT}\n  max_uncommitted_per_partition: 100000\n  commit_interval: {}ms\n  shutdown_timeout: 10s\n",
            COMMIT_INTERVAL.as_millis()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, yaml).unwrap();
    let log = dir.path().join("bridge.log");

    let mut kills = Vec::new();
    for stage in [0.2, 0.45, 0.7] {
        let mut child = start_process(&config_path, &log);
        let target = (EVENTS as f64 * stage) as usize;
        let reached = wait_until(Duration::from_secs(120), || {
            seen(sandbox).unique() >= target
        })
        .await;
        assert!(
            reached,
            "stage {stage}: only {} delivered; log:\n{}",
            seen(sandbox).unique(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let at = Utc::now();
        child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
        child.wait().unwrap();
        kills.push((at, seen(sandbox).unique()));
    }
    let child = start_process(&config_path, &log);
    let all = wait_until(Duration::from_secs(180), || {
        seen(sandbox).unique() >= EVENTS
    })
    .await;
    assert!(
        all,
        "only {} of {EVENTS} delivered after 3 kills; log:\n{}",
        seen(sandbox).unique(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // A graceful stop: SIGTERM, drain, exit 0.
    sigterm(&child);
    let mut child = child;
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "SIGTERM must drain and exit 0, got {exit:?}"
    );
    let s = seen(sandbox);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let skipped = log
        .split("already_final=")
        .skip(1)
        .filter_map(|rest| {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            n.parse::<u64>().ok()
        })
        .sum();
    Crashes {
        skipped,
        kills,
        unique: s.unique(),
        duplicates: s.duplicates(),
        committed: kafka.committed_offsets(&group, topic, 3),
        ends: kafka.end_offsets(topic, 3),
    }
}

/// Events the sandbox accepted in the `window` before `at`: what finished but may not have been
/// committed yet when the process died.
fn accepted_within(sandbox: &SandboxHandle, at: DateTime<Utc>, window: Duration) -> usize {
    let from = at - chrono::Duration::from_std(window).unwrap();
    sandbox
        .events()
        .iter()
        .filter(|e| e.received_at >= from && e.received_at <= at)
        .count()
}

fn latency_sandbox() -> Faults {
    // A little latency keeps the stream going long enough to be killed in the middle of it.
    Faults {
        latency: Duration::from_millis(3),
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_three_times_with_offset_maps_loses_nothing_and_duplicates_stay_within_what_was_held(
) {
    let cluster = MockCluster::new(1).unwrap();
    let kafka = Kafka::new(cluster.bootstrap_servers());
    let topic = unique("crash");
    cluster.create_topic(&topic, 3, 1).unwrap();
    let (sandbox, _stop) = start_sandbox(latency_sandbox()).await;
    let c = kill_three_times_then_stop(&kafka, &topic, &sandbox).await;

    // Per kill: what was held (≤ max_in_flight) plus what finished within the last commit
    // interval (twice it, for the commit's own round trip).
    let bounds: Vec<usize> = c
        .kills
        .iter()
        .map(|(at, _)| MAX_IN_FLIGHT + accepted_within(&sandbox, *at, 2 * COMMIT_INTERVAL))
        .collect();
    let bound: usize = bounds.iter().sum();
    eprintln!(
        "mock cluster, window 100000: killed at {:?} unique deliveries; {} unique, {} duplicates \
         (bound {bound}: per kill {bounds:?} = max_in_flight {MAX_IN_FLIGHT} + accepted in the \
         last 2 × commit_interval); {} skipped on restart as already final",
        c.kills.iter().map(|k| k.1).collect::<Vec<_>>(),
        c.unique,
        c.duplicates,
        c.skipped,
    );
    assert_eq!(c.unique, EVENTS, "every event delivered at least once");
    assert!(
        c.duplicates <= bound,
        "{} duplicates exceed what was held or finished since the last commit ({bound})",
        c.duplicates
    );
    assert!(
        c.skipped > 0,
        "no restart skipped a final offset: the offset maps were not read back"
    );
    assert_eq!(
        c.committed,
        c.ends.iter().map(|e| Some(*e)).collect::<Vec<_>>(),
        "after the clean stop everything is committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_three_times_on_a_broker_that_drops_commit_metadata_falls_back_to_the_frontier_and_loses_nothing(
) {
    let kafka = Kafka::shared();
    let topic = unique("crash");
    kafka.create_topic(&topic, 3).await;
    let (sandbox, _stop) = start_sandbox(latency_sandbox()).await;
    let c = kill_three_times_then_stop(&kafka, &topic, &sandbox).await;
    eprintln!(
        "Tansu (no commit metadata), window 100000: killed at {:?} unique deliveries; {} unique, \
         {} duplicates, {} skipped",
        c.kills.iter().map(|k| k.1).collect::<Vec<_>>(),
        c.unique,
        c.duplicates,
        c.skipped,
    );
    assert_eq!(
        c.skipped, 0,
        "without commit metadata nothing can be skipped"
    );
    assert_eq!(c.unique, EVENTS, "every event delivered at least once");
    assert_eq!(
        c.committed,
        c.ends.iter().map(|e| Some(*e)).collect::<Vec<_>>(),
        "after the clean stop everything is committed"
    );
}
