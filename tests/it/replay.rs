//! `replay` after a fix: dead letters re-run through the current config, keeping their
//! original coordinates; `--dry-run` pushes nothing.

use crate::common::*;
use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_after_a_fix_delivers_dead_letters_with_their_original_coordinates() {
    let topic = unique("replay");
    let dlq = unique("replay-dlq");
    let group = unique("g-replay");
    create_topic(&topic, 1).await;
    create_topic(&dlq, 1).await;
    produce(
        &topic,
        vec![
            (None, br#"{"inst":"i1","seq":0}"#.to_vec(), Some(0)),
            (
                None,
                br#"{"inst":"i1","seq":1,"type":"test.rejected"}"#.to_vec(),
                Some(0),
            ),
            (None, b"not json".to_vec(), Some(0)),
        ],
    )
    .await;
    let (sandbox, _stop) = start_sandbox(Faults {
        reject_event_types: HashSet::from(["test.rejected".to_string()]),
        ..Faults::default()
    })
    .await;
    let routes = format!(
        "  - name: r\n    source: events\n    topics: [{topic}]\n    app: a\n    event:\n      installation_id: .inst\n      event_type: '.type // \"test.event\"'\n      event_data: '{{seq}}'\n"
    );
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &routes,
        &format!("  commit_interval: 200ms\n  dead_letter: {{ kafka: {{ source: events, topic: {dlq} }} }}\n"),
    );
    let bridge = spawn_bridge(&yaml);
    assert!(wait_until(Duration::from_secs(60), || seen(&sandbox).unique() >= 1).await);
    assert_eq!(consume_all(&dlq, 2, Duration::from_secs(30)).await.len(), 2);
    bridge.stop().await;

    // The fix: Orceum accepts the event type now.
    sandbox.set_faults(Faults::default());
    sandbox.clear();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let replay = move |dry: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
        cmd.args(["replay", "-c"])
            .arg(&path)
            .args(["--from", &format!("kafka:{dlq}")]);
        if dry {
            cmd.arg("--dry-run");
        }
        for (k, v) in env_vars() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let r = replay.clone();
    let dry = tokio::task::spawn_blocking(move || r(true)).await.unwrap();
    let out = String::from_utf8_lossy(&dry.stdout).to_string();
    assert_eq!(
        dry.status.code(),
        Some(5),
        "the not-JSON record still fails: {out}"
    );
    assert!(
        out.contains("would send to a (app_a) installation i1 test.rejected"),
        "{out}"
    );
    assert!(
        out.contains(&format!("[source kafka:{topic}/0@1]")),
        "original coordinates kept: {out}"
    );
    assert!(
        out.contains("2 read, 0 delivered, 1 would be sent, 0 skipped, 1 failed"),
        "{out}"
    );
    assert!(sandbox.events().is_empty(), "a dry run pushes nothing");

    let real = tokio::task::spawn_blocking(move || replay(false))
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&real.stdout).to_string();
    assert_eq!(real.status.code(), Some(5), "{out}");
    assert!(out.contains("2 read, 1 delivered"), "{out}");
    let events = sandbox.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].event["metadata"]["source"],
        format!("kafka:{topic}/0@1")
    );
    assert_eq!(events[0].event["event_data"]["seq"], 1);
}
