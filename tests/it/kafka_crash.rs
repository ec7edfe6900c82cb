//! The bridge process SIGKILLed mid-stream and restarted, three times: nothing is lost, and
//! the duplicates a crash causes stay within the in-flight bound (messages read but not yet
//! committed). Then a SIGTERM: the process drains and exits 0.

use crate::common::*;
use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use std::process::Command;
use std::time::Duration;

const MAX_IN_FLIGHT: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_three_times_loses_nothing_and_duplicates_stay_within_the_in_flight_bound() {
    let topic = unique("crash");
    let group = unique("g-crash");
    create_topic(&topic, 3).await;
    let n = 3000;
    produce(&topic, keyed_records(n, 30, 3)).await;
    // A little latency keeps the stream going long enough to be killed in the middle of it.
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(3),
        ..Faults::default()
    })
    .await;
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route("all", &topic, "a", None),
        &format!(
            "  max_in_flight: {MAX_IN_FLIGHT}\n  max_uncommitted_per_partition: {}\n  commit_interval: 1s\n  shutdown_timeout: 10s\n",
            MAX_IN_FLIGHT / 3
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, yaml).unwrap();
    let log = dir.path().join("bridge.log");

    let mut kills = Vec::new();
    for stage in [0.2, 0.45, 0.7] {
        let mut child = start_process(&config_path, &log);
        let target = (n as f64 * stage) as usize;
        let reached = wait_until(Duration::from_secs(120), || {
            seen(&sandbox).unique() >= target
        })
        .await;
        assert!(
            reached,
            "stage {stage}: only {} delivered; log:\n{}",
            seen(&sandbox).unique(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
        child.wait().unwrap();
        kills.push(seen(&sandbox).unique());
    }
    let mut child = start_process(&config_path, &log);
    let all = wait_until(Duration::from_secs(180), || seen(&sandbox).unique() >= n).await;
    let s = seen(&sandbox);
    assert!(all, "only {} of {n} delivered after 3 kills", s.unique());

    // A graceful stop: SIGTERM, drain, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "SIGTERM must drain and exit 0, got {exit:?}"
    );

    let s = seen(&sandbox);
    eprintln!(
        "killed at {kills:?} unique deliveries; delivered {} unique, {} duplicates (bound {})",
        s.unique(),
        s.duplicates(),
        3 * MAX_IN_FLIGHT
    );
    assert_eq!(s.unique(), n, "every event delivered at least once");
    assert!(
        s.duplicates() <= 3 * MAX_IN_FLIGHT,
        "{} duplicates exceed 3 kills × max_in_flight {MAX_IN_FLIGHT}",
        s.duplicates()
    );
    let ends = end_offsets(&topic, 3);
    assert_eq!(
        committed_offsets(&group, &topic, 3),
        ends.iter().map(|e| Some(*e)).collect::<Vec<_>>(),
        "after the clean stop everything is committed"
    );
}
