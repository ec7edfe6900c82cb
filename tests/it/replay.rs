//! `replay` after a fix: dead letters re-run through the current config, keeping their
//! original coordinates; `--dry-run` pushes nothing; big ranges stream through in bounded
//! memory; `--app` and `--since` select.

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

/// 200 dead letters of ~900 KB on a JetStream stream (180 MB): a `--dry-run` replays them all
/// in the memory of a few (the records stream through), and `--app` with `--since` picks the
/// ones a team asks for after an incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_streams_big_dead_letters_and_selects_by_app_and_time() {
    let url = nats_url();
    let stream = unique("BIG_DLQ").replace('-', "_");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.dead")],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let pad = "x".repeat(900 * 1024);
    let n = 200;
    for i in 0..n {
        let mut headers = async_nats::HeaderMap::new();
        let (route, day) = if i % 2 == 0 {
            ("to-a", "30")
        } else {
            ("to-b", "30")
        };
        let day = if i >= n / 2 { "01" } else { day };
        let month = if i >= n / 2 { "12" } else { "11" };
        headers.insert("orceum.route", route);
        headers.insert("orceum.reason_kind", "http_503");
        headers.insert("orceum.source", format!("kafka:t/0@{i}").as_str());
        headers.insert(
            "orceum.failed_at",
            format!("2026-{month}-{day}T10:00:00.000Z").as_str(),
        );
        let payload = format!(r#"{{"inst":"i{i}","seq":{i},"pad":"{pad}"}}"#);
        js.publish_with_headers(format!("{stream}.dead"), headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let route = |name: &str, app: &str| {
        format!("  - name: {name}\n    source: bus\n    subjects: [\"{stream}.{name}\"]\n    app: {app}\n    event: {{ installation_id: .inst, event_type: '\"test.event\"', event_data: '{{seq}}' }}\n")
    };
    std::fs::write(
        &path,
        format!(
            "orceum: {{ base_url: \"http://127.0.0.1:9/v1\" }}\napps:\n  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}\n  b: {{ app_id: app_b, secret: {{ env: SECRET_B }} }}\nsources:\n  bus:\n    nats: {{ url: \"{url}\" }}\nroutes:\n{}{}",
            route("to-a", "a"),
            route("to-b", "b")
        ),
    )
    .unwrap();
    let from = format!("jetstream:{stream}");
    let run = move |extra: &'static [&'static str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
        cmd.args(["replay", "--dry-run", "--from", &from, "-c"])
            .arg(&path)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env_vars() {
            cmd.env(k, v);
        }
        cmd
    };
    let child = run.clone()(&[]).spawn().unwrap();
    let pid = child.id();
    let watch = tokio::task::spawn_blocking(move || {
        // VmHWM is the peak so far: the last reading before the exit is the run's peak.
        let mut peak = 0;
        while let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let peak_mib = watch.await.unwrap() / 1024;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let last = stdout.lines().last().unwrap_or_default().to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{last}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("200 read, 0 delivered, 200 would be sent, 0 skipped, 0 failed"),
        "{last}"
    );
    eprintln!("replay --dry-run of {n} × 900 KB dead letters: peak RSS {peak_mib} MiB");
    assert!(
        peak_mib < 100,
        "{n} records of 900 KB (180 MB) are streamed, not held: peak RSS {peak_mib} MiB"
    );

    let out = tokio::task::spawn_blocking(move || {
        run(&["--app", "a", "--since", "2026-12-01T00:00:00Z"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let sent: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("would send"))
        .collect();
    assert_eq!(sent.len(), 50, "app a's half of the last day: {stdout}");
    assert!(sent.iter().all(|l| l.contains("to a (app_a)")), "{stdout}");
    assert!(
        stdout.contains(
            "200 read, 0 delivered, 50 would be sent, 0 skipped, 0 failed, 150 not selected"
        ),
        "{}",
        stdout.lines().last().unwrap_or_default()
    );
}
